"""Vector tiles over HTTP: every tile fetched is decoded with mapbox_vector_tile."""

from __future__ import annotations

import gzip
import math
import os
import time

import mapbox_vector_tile
import pytest

from layers import registry
from tests.fixtures.layers import (
    CATEGORIES,
    CELL,
    CORE,
    LEGEND,
    REPORT_COUNT,
    RESTRICTED_DEPARTMENT,
    SOUTH,
    WEST,
    set_fault,
)
from tests.polling import wait_until
from tiles.render import TileService
from tiles.settings import TileSettings

MVT = "application/vnd.mapbox-vector-tile"
EXTENT = 4096
R = 6378137.0


@pytest.fixture(autouse=True)
def debug_headers(monkeypatch):
    """Tests here read X-Tile-Cache, which ioc sends only with IOC_TILE_DEBUG_HEADERS on (the
    tile services of these tests are built from the environment)."""
    monkeypatch.setenv("IOC_TILE_DEBUG_HEADERS", "true")


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    """The XYZ tile containing a WGS 84 point."""
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


def tile_xy(lon: float, lat: float, z: int, x: int, y: int) -> tuple[float, float]:
    """A WGS 84 point in the tile's MVT coordinates (y down, extent 4096)."""
    mx, my = R * math.radians(lon), R * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    size = 2 * math.pi * R / (1 << z)
    return (mx + math.pi * R - x * size) / size * EXTENT, (
        math.pi * R - my - y * size
    ) / size * EXTENT


def decode(response) -> dict:
    """The MVT of a 200 response (TestClient already undid the gzip encoding)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MVT
    return mapbox_vector_tile.decode(response.content, default_options={"y_coord_down": True})


def get(client, path: str, key: str | None = None, **headers):
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return client.get(path, headers=headers)


# --- single layers, geometry and attributes -----------------------------------------------


def test_polygon_tile_4326_coordinates_and_attributes(tiles_client):
    z, x, y = tile_of(WEST + 5.5 * CELL, SOUTH + 5.5 * CELL, 16)
    tile = decode(tiles_client.get(f"/tiles/fx_parcels/{z}/{x}/{y}.pbf"))
    assert list(tile) == ["fx_parcels"]
    layer = tile["fx_parcels"]
    assert layer["extent"] == EXTENT and layer["features"]
    feature = next(f for f in layer["features"] if f["properties"]["name"] == "Thửa 5-5")
    # Only what the style needs: the label and style.by (not area_m2); the fid is the MVT id.
    assert set(feature["properties"]) == {"name", "kind"} and isinstance(feature["id"], int)
    assert feature["properties"]["kind"] == "cong_vien"  # (5 + 5) % 3 = 1
    ring = feature["geometry"]["coordinates"][0]
    corner = tile_xy(WEST + 5 * CELL, SOUTH + 5 * CELL, z, x, y)
    assert min(math.dist(p, corner) for p in ring) <= 1.5


def test_vn2000_layer_lines_up_with_the_same_shapes_in_4326(tiles_client):
    """fx_blocks (EPSG:9210) holds the parcels' squares: both tiles must agree to a unit."""
    z, x, y = tile_of(WEST + 5 * CELL, SOUTH + 5 * CELL, 17)
    tile = decode(tiles_client.get(f"/tiles/fx_parcels,fx_blocks/{z}/{x}/{y}.pbf"))
    assert list(tile) == ["fx_parcels", "fx_blocks"]
    parcels = {f["properties"]["name"]: f for f in tile["fx_parcels"]["features"]}
    blocks = {f["properties"]["name"]: f for f in tile["fx_blocks"]["features"]}
    assert set(parcels) == set(blocks) and parcels
    corner = tile_xy(WEST + 5 * CELL, SOUTH + 5 * CELL, z, x, y)
    assert 0 <= corner[0] <= EXTENT and 0 <= corner[1] <= EXTENT
    for layer in (parcels, blocks):
        ring = layer["Thửa 4-4"]["geometry"]["coordinates"][0]
        assert min(math.dist(p, corner) for p in ring) <= 2.0


def test_ogc_path_is_tilematrix_row_col(tiles_client):
    z, x, y = tile_of(WEST + 5.5 * CELL, SOUTH + 5.5 * CELL, 15)
    ogc = tiles_client.get(f"/collections/fx_parcels/tiles/WebMercatorQuad/{z}/{y}/{x}")
    xyz = tiles_client.get(f"/tiles/fx_parcels/{z}/{x}/{y}.pbf")
    assert decode(ogc) == decode(xyz)
    assert ogc.headers["etag"] == xyz.headers["etag"]


def test_time_attribute_is_iso_8601(tiles_client):
    z, x, y = tile_of(106.55, 10.65, 16)
    response = tiles_client.get(f"/tiles/fx_reports/{z}/{x}/{y}.pbf")
    if response.status_code == 204:  # the spread points may miss this tile
        pytest.skip("no spread report in the sampled tile")
    feature = decode(response)["fx_reports"]["features"][0]
    assert set(feature["properties"]) == {"category", "created_at"}
    assert feature["properties"]["category"] in CATEGORIES
    assert (
        feature["properties"]["created_at"].startswith("2025-")
        and "T" in feature["properties"]["created_at"]
    )


def test_quoted_names_and_text_ids(tiles_client):
    """fx_odd_names: table ``Odd "Table" Name``, geometry column ``Geom Col``, style by the
    column ``has space``, text primary key ``Feature ID``."""
    z, x, y = tile_of(106.70, 10.77, 16)  # feature 'a/1' alone
    tile = decode(tiles_client.get(f"/tiles/fx_odd_names/{z}/{x}/{y}.pbf"))
    (feature,) = tile["fx_odd_names"]["features"]
    assert feature["properties"] == {"Feature ID": "a/1", "has space": "x y"}
    # A text primary key cannot be an MVT id (unsigned integer): it is carried as a property.
    assert feature.get("id") in (None, 0)  # protobuf default: no id


def test_huge_polygon_is_clipped_at_high_zoom(tiles_client):
    z, x, y = tile_of(106.7, 10.8, 16)
    (feature,) = decode(tiles_client.get(f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf"))[
        "fx_huge_polygon"
    ]["features"]
    ring = feature["geometry"]["coordinates"][0]
    # Inside the buffered tile: the 20,000-vertex circle is cut to (about) the tile square.
    assert len(ring) <= 6
    assert all(-64 <= c <= EXTENT + 64 for point in ring for c in point)


def test_low_zoom_polygon_is_simplified(tiles_client):
    z, x, y = tile_of(106.7, 10.8, 8)
    (feature,) = decode(tiles_client.get(f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf"))[
        "fx_huge_polygon"
    ]["features"]
    assert 8 <= len(feature["geometry"]["coordinates"][0]) < 2000  # from 20,000 vertices


# --- zoom ranges, empty tiles, errors --------------------------------------------------------


def test_outside_the_zoom_range_is_204(tiles_client):
    z, x, y = tile_of(WEST, SOUTH, 9)  # fx_parcels is drawn from zoom 10
    response = tiles_client.get(f"/tiles/fx_parcels/{z}/{x}/{y}.pbf")
    assert response.status_code == 204 and response.content == b""
    both = decode(tiles_client.get(f"/tiles/fx_parcels,fx_huge_polygon/{z}/{x}/{y}.pbf"))
    assert list(both) == ["fx_huge_polygon"]


def test_empty_tile_is_204(tiles_client):
    response = tiles_client.get("/tiles/fx_parcels/14/0/0.pbf")
    assert response.status_code == 204
    assert response.headers["etag"]


def test_tile_outside_the_matrix_is_404_and_bad_zoom_400(tiles_client):
    response = tiles_client.get("/tiles/fx_parcels/3/8/0.pbf")
    assert response.status_code == 404 and response.json()["code"] == "TileOutOfRange"
    assert tiles_client.get("/tiles/fx_parcels/25/0/0.pbf").status_code == 400
    assert (
        tiles_client.get("/collections/fx_parcels/tiles/WebMercatorQuad/2/0/4").status_code == 404
    )


# --- feature cap and aggregation ---------------------------------------------------------------


def test_feature_cap_is_reported_never_silent(tiles_client, db):
    z, x, y = tile_of((CORE[0] + CORE[2]) / 2, (CORE[1] + CORE[3]) / 2, 14)
    response = tiles_client.get(f"/tiles/fx_reports,fx_parcels/{z}/{x}/{y}.pbf")
    tile = decode(response)
    assert response.headers["x-tile-truncated"] == "fx_reports"
    assert len(tile["fx_reports"]["features"]) == TileSettings().max_features
    assert "fx_parcels" in tile  # the other layer is complete
    # A tile under the cap carries no header.
    z, x, y = tile_of(106.55, 10.65, 14)
    small = tiles_client.get(f"/tiles/fx_reports/{z}/{x}/{y}.pbf")
    assert "x-tile-truncated" not in small.headers


def test_aggregation_at_low_zoom_counts_every_report(tiles_client):
    z = 10
    _, x0, y1 = tile_of(106.5, 10.6, z)
    _, x1, y0 = tile_of(106.9, 11.0, z)
    total, biggest = 0, None
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            response = tiles_client.get(f"/tiles/fx_reports/{z}/{x}/{y}.pbf")
            if response.status_code == 204:
                continue
            for feature in decode(response)["fx_reports"]["features"]:
                assert feature["geometry"]["type"] == "Point"
                assert set(feature["properties"]) == {"count", "category"}
                total += feature["properties"]["count"]
                if (
                    biggest is None
                    or feature["properties"]["count"] > biggest["properties"]["count"]
                ):
                    biggest = feature
    assert total == REPORT_COUNT
    # The core's cell is dominated by flooding reports (70 % of the core by construction).
    assert biggest["properties"]["category"] == "ngap_nuoc"
    assert biggest["properties"]["count"] > 10_000


def test_points_are_features_above_the_cluster_zoom(tiles_client):
    z, x, y = tile_of(106.55, 10.65, 14)
    response = tiles_client.get(f"/tiles/fx_reports/{z}/{x}/{y}.pbf")
    if response.status_code == 200:
        assert all(
            "count" not in f["properties"] for f in decode(response)["fx_reports"]["features"]
        )


# --- access ------------------------------------------------------------------------------------


def test_access_single_layers(tiles_client, make_key):
    z, x, y = tile_of(106.69, 10.77, 12)
    assert tiles_client.get(f"/tiles/fx_roads/{z}/{x}/{y}.pbf").status_code == 404
    assert (
        tiles_client.get(f"/collections/fx_roads/tiles/WebMercatorQuad/{z}/{y}/{x}").status_code
        == 404
    )
    operator = make_key("operator")
    response = get(tiles_client, f"/tiles/fx_roads/{z}/{x}/{y}.pbf", operator)
    assert list(decode(response)) == ["fx_roads"]
    assert response.headers["cache-control"] == "private, no-store"
    assert "Authorization" in response.headers["vary"]
    z, x, y = tile_of(106.7, 10.8, 12)  # fx_restricted's point
    assert get(tiles_client, f"/tiles/fx_restricted/{z}/{x}/{y}.pbf", operator).status_code == 404
    owner = make_key("publisher", RESTRICTED_DEPARTMENT)
    assert list(decode(get(tiles_client, f"/tiles/fx_restricted/{z}/{x}/{y}.pbf", owner))) == [
        "fx_restricted"
    ]


def test_composite_omits_what_the_caller_may_not_read(tiles_client, make_key):
    z, x, y = tile_of(106.7, 10.8, 12)  # fx_restricted's point; the road and the ring cross it
    path = f"/tiles/fx_huge_polygon,fx_roads,fx_restricted,no_such_layer/{z}/{x}/{y}.pbf"
    anonymous = tiles_client.get(path)
    assert list(decode(anonymous)) == ["fx_huge_polygon"]
    assert (
        anonymous.headers["cache-control"] == "private, no-store"
    )  # the answer depends on the caller
    assert list(decode(get(tiles_client, path, make_key("operator")))) == [
        "fx_huge_polygon",
        "fx_roads",
    ]
    assert list(decode(get(tiles_client, path, make_key("admin")))) == [
        "fx_huge_polygon",
        "fx_roads",
        "fx_restricted",
    ]
    hidden = tiles_client.get(f"/tiles/fx_roads,fx_restricted/{z}/{x}/{y}.pbf")
    assert hidden.status_code == 404 and hidden.json()["code"] == "LayerNotFound"


def test_public_tiles_are_publicly_cacheable(tiles_client):
    z, x, y = tile_of(106.7, 10.8, 12)
    response = tiles_client.get(f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf")
    decode(response)
    assert response.headers["cache-control"].startswith("public, max-age=")
    assert "Authorization" not in response.headers.get("vary", "")


# --- cache, ETag, versions ---------------------------------------------------------------------


def test_etag_304_and_gzip_passthrough(tiles_client):
    z, x, y = tile_of(106.7, 10.8, 13)
    path = f"/tiles/fx_huge_polygon,fx_parcels/{z}/{x}/{y}.pbf"
    first = tiles_client.get(path)
    decode(first)
    assert first.headers["x-tile-cache"] == "database"
    assert first.headers["content-encoding"] == "gzip"
    second = tiles_client.get(path)
    assert second.headers["x-tile-cache"] == "memory" and decode(second) == decode(first)
    again = tiles_client.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    plain = tiles_client.get(path, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert mapbox_vector_tile.decode(plain.content) == mapbox_vector_tile.decode(second.content)
    refused = tiles_client.get(path, headers={"Accept-Encoding": "br;q=1, gzip;q=0"})
    assert "content-encoding" not in refused.headers and refused.content == plain.content


def _mutable_names(client, z, x, y) -> list[str]:
    response = client.get(f"/tiles/fx_mutable/{z}/{x}/{y}.pbf")
    return sorted(f["properties"]["name"] for f in decode(response)["fx_mutable"]["features"])


def test_publish_bumps_version_and_no_cache_serves_stale_tiles(tiles_client, db, cache_dir):
    z, x, y = tile_of(106.692, 10.77, 14)
    app = tiles_client.app
    before = _mutable_names(tiles_client, z, x, y)
    assert (
        tiles_client.get(f"/tiles/fx_mutable/{z}/{x}/{y}.pbf").headers["x-tile-cache"] == "memory"
    )
    # A second process (a fresh service on the same disk cache) finds it on disk.
    other = app.state.tiles = TileService(TileSettings(cache_dir=cache_dir))
    # Started as a process starts it: the events' state decides the tiles' key (an unstarted
    # service keyed by the catalog version missed the disk whenever an earlier test had
    # written items of fx_mutable).
    tiles_client.portal.call(other.start, app.state.pool, app.state.catalog)
    app.state.catalog_watcher.interval = 0  # notice the other process's publish at once
    assert tiles_client.get(f"/tiles/fx_mutable/{z}/{x}/{y}.pbf").headers["x-tile-cache"] == "disk"

    with db.cursor() as cur:  # another process publishes: new data, then refresh_stats
        cur.execute(
            "INSERT INTO fixtures.mutable (name, geom) VALUES"
            " ('new', ST_SetSRID(ST_MakePoint(106.6925, 10.7701), 4326))"
        )
    db.commit()
    registry.refresh_stats(db, "fx_mutable")

    after = tiles_client.get(f"/tiles/fx_mutable/{z}/{x}/{y}.pbf")
    assert after.headers["x-tile-cache"] == "database"
    assert _mutable_names(tiles_client, z, x, y) == sorted([*before, "new"])
    # A process started now (empty memory) must not find the old tile on disk either.
    app.state.tiles = TileService(TileSettings(cache_dir=cache_dir))
    fresh = tiles_client.get(f"/tiles/fx_mutable/{z}/{x}/{y}.pbf")
    assert fresh.headers["x-tile-cache"] == "disk"  # the new version, written just above
    assert "new" in [f["properties"]["name"] for f in decode(fresh)["fx_mutable"]["features"]]


def test_cache_off_always_renders(tiles_client):
    tiles_client.app.state.tiles = TileService(TileSettings(cache="off"))
    z, x, y = tile_of(106.7, 10.8, 12)
    for _ in range(2):
        response = tiles_client.get(f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf")
        decode(response)
        assert response.headers["x-tile-cache"] == "database"


def test_versions_changed_elsewhere_are_seen_within_the_interval(tiles_client, db):
    tiles_client.app.state.tiles = TileService(TileSettings(cache="off"))
    watcher = tiles_client.app.state.catalog_watcher
    watcher.interval = 0
    z, x, y = tile_of(106.7, 10.8, 12)
    tiles_client.get(f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf")  # a check happens now
    watcher.interval = 3600
    version = tiles_client.app.state.catalog.get("fx_huge_polygon", registry_admin()).version
    registry.refresh_stats(db, "fx_huge_polygon")
    tiles_client.get(f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf")
    assert (
        tiles_client.app.state.catalog.get("fx_huge_polygon", registry_admin()).version == version
    )
    watcher.interval = 0
    tiles_client.get(f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf")
    assert (
        tiles_client.app.state.catalog.get("fx_huge_polygon", registry_admin()).version
        == version + 1
    )


def registry_admin():
    from ioc.catalog.access import ADMIN

    return ADMIN


# --- TileJSON, OGC metadata, styles ------------------------------------------------------------


def test_tilejson_of_a_collection(tiles_client):
    doc = tiles_client.get("/collections/fx_reports/tiles/WebMercatorQuad/tilejson.json").json()
    assert doc["tilejson"] == "3.0.0" and doc["scheme"] == "xyz"
    assert doc["minzoom"] == 8 and doc["maxzoom"] == 22
    west, south, east, north = doc["bounds"]
    assert 106.49 < west < east < 106.91 and 10.59 < south < north < 11.01
    (vector_layer,) = doc["vector_layers"]
    assert vector_layer["id"] == "fx_reports"
    assert vector_layer["fields"] == {
        "category": "String",
        "created_at": "String",
        "count": "Number",
    }
    template = doc["tiles"][0]
    assert "/collections/fx_reports/tiles/WebMercatorQuad/{z}/{y}/{x}" in template
    z, x, y = tile_of(106.55, 10.65, 10)
    url = (
        template.split("?")[0].replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
    )
    assert tiles_client.get(url.replace("http://testserver", "")).status_code in (200, 204)


def test_tilejson_of_a_composite_and_access(tiles_client, make_key):
    doc = tiles_client.get("/tiles/fx_parcels,fx_roads,fx_blocks/tilejson.json").json()
    assert [v["id"] for v in doc["vector_layers"]] == ["fx_parcels", "fx_blocks"]
    assert doc["tiles"][0].split("?")[0].endswith("/tiles/fx_parcels,fx_blocks/{z}/{x}/{y}.pbf")
    assert doc["minzoom"] == 8 and doc["maxzoom"] == 20
    assert tiles_client.get("/tiles/fx_roads/tilejson.json").status_code == 404
    with_key = get(tiles_client, "/tiles/fx_roads/tilejson.json", make_key("analyst")).json()
    assert with_key["vector_layers"][0]["fields"] == {"name": "String"}


def test_ogc_tilesets_and_tile_matrix_set(tiles_client):
    tilesets = tiles_client.get("/collections/fx_parcels/tiles").json()
    (tileset,) = tilesets["tilesets"]
    assert tileset["dataType"] == "vector" and tileset["tileMatrixSetURI"].endswith(
        "WebMercatorQuad"
    )
    item = next(link for link in tileset["links"] if link["rel"] == "item")
    assert item["href"].endswith("{tileMatrix}/{tileRow}/{tileCol}") and item["templated"]
    meta = tiles_client.get("/collections/fx_parcels/tiles/WebMercatorQuad").json()
    assert meta["tileMatrixSetLimits"][0]["tileMatrix"] == "10"
    tms = tiles_client.get("/tileMatrixSets/WebMercatorQuad").json()
    assert tms["id"] == "WebMercatorQuad" and len(tms["tileMatrices"]) == 25
    assert tms["tileMatrices"][0]["scaleDenominator"] == pytest.approx(559082264.0287178)
    assert (
        tiles_client.get("/tileMatrixSets").json()["tileMatrixSets"][0]["id"] == "WebMercatorQuad"
    )
    assert tiles_client.get("/collections/fx_restricted/tiles").status_code == 404


def test_a_client_finds_the_tiles_from_the_landing_page(tiles_client):
    """OGC API – Tiles discovery: landing page → tile matrix sets; collection → its vector
    tilesets → a tileset → its tiling scheme and tile template; conformance says so."""
    landing = tiles_client.get("/", headers={"Accept": "application/json"}).json()
    schemes = next(
        link["href"]
        for link in landing["links"]
        if link["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"
    )
    assert tiles_client.get(schemes).json()["tileMatrixSets"][0]["id"] == "WebMercatorQuad"
    collection = tiles_client.get("/collections/fx_parcels").json()
    href = next(
        link["href"]
        for link in collection["links"]
        if link["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
    )
    (tileset,) = tiles_client.get(href).json()["tilesets"]
    meta = tiles_client.get(
        next(link["href"] for link in tileset["links"] if link["rel"] == "self")
    ).json()
    links = {link["rel"]: link["href"] for link in meta["links"]}
    assert (
        tiles_client.get(links["http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"]).json()["id"]
        == "WebMercatorQuad"
    )
    z, x, y = tile_of(WEST + 0.02, SOUTH + 0.02, 14)
    tile = tiles_client.get(
        links["item"]
        .replace("{tileMatrix}", str(z))
        .replace("{tileRow}", str(y))
        .replace("{tileCol}", str(x))
    )
    assert decode(tile)["fx_parcels"]["features"]
    conforms = tiles_client.get("/conformance").json()["conformsTo"]
    tiles_classes = {c.rsplit("/", 1)[1] for c in conforms if "ogcapi-tiles-1" in c}
    assert {"core", "tileset", "tilesets-list", "geodata-tilesets", "mvt"} <= tiles_classes


def test_maplibre_style(tiles_client):
    style = tiles_client.get("/styles/fx_parcels,fx_reports,fx_roads.json").json()
    assert style["version"] == 8 and "glyphs" not in style and "sprite" not in style
    (source,) = style["sources"].values()
    assert source["type"] == "vector" and source["url"].endswith(
        "/tiles/fx_parcels,fx_reports/tilejson.json"
    )
    layers = {layer["id"]: layer for layer in style["layers"]}
    # Circles: one layer per legend value (QGIS drops a data-driven circle-color) over one for
    # the other values, the first legend entry on top.
    numbers = [f"-{n}" for n in range(len(LEGEND), 0, -1)]
    assert list(layers) == [
        "fx_parcels-fill",
        "fx_parcels-outline",
        *(f"fx_reports{n}" for n in ["", *numbers]),
        *(f"fx_reports-cluster{n}" for n in ["", *numbers]),
    ]
    # Match labels as arrays: QGIS reads only those.
    fill = layers["fx_parcels-fill"]["paint"]["fill-color"]
    assert fill == [
        "match",
        ["get", "kind"],
        ["dat_o"],
        "#f4a261",
        ["cong_vien"],
        "#2a9d8f",
        "#cccccc",
    ]
    first = layers["fx_reports-1"]
    assert first["paint"]["circle-color"] == LEGEND[0]["color"] and first["filter"] == [
        "all",
        ["!", ["has", "count"]],
        ["==", ["get", "category"], LEGEND[0]["value"]],
    ]
    other = layers["fx_reports-cluster"]
    assert other["filter"] == [
        "all",
        ["has", "count"],
        ["all", *(["!=", ["get", "category"], c] for c in CATEGORIES)],
    ]
    assert other["paint"]["circle-color"] == "#d62728"
    assert layers["fx_reports-cluster-1"]["maxzoom"] == 14 and layers["fx_reports"]["minzoom"] == 8
    for layer in style["layers"]:
        assert layer["source-layer"] in ("fx_parcels", "fx_reports")
    tilejson = tiles_client.get(source["url"].replace("http://testserver", "")).json()
    assert {v["id"] for v in tilejson["vector_layers"]} == {"fx_parcels", "fx_reports"}


def test_openapi_lists_tile_paths(tiles_client):
    paths = tiles_client.get("/openapi.json").json()["paths"]
    assert "/tiles/{layers}/{z}/{x}/{y}.pbf" in paths
    assert (
        "/collections/{collectionId}/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}"
        in paths
    )


# --- the demo city, when it is there -------------------------------------------------------------


@pytest.mark.parametrize("layer_id", ["wards", "reports_1022"])
def test_demo_city_layers(tiles_client, make_key, db, layer_id):
    catalog = tiles_client.app.state.catalog
    try:
        layer = catalog.get(layer_id, registry_admin())
    except Exception:
        pytest.skip(f"the demo city has no layer {layer_id} yet")
    if not layer.feature_count:
        pytest.skip(f"{layer_id} is empty")
    with db.cursor() as cur:  # a point on the first feature, to pick a tile that has data
        cur.execute(
            f"SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(ST_PointOnSurface(geom),"  # noqa: S608 (catalog identifier)
            f" 4326) AS p FROM {layer.table_sql} LIMIT 1) s"
        )
        lon, lat = cur.fetchone()
    z, x, y = tile_of(lon, lat, max(layer.zoom_min, 12))
    response = get(tiles_client, f"/tiles/{layer_id}/{z}/{x}/{y}.pbf", make_key("admin"))
    tile = decode(response)
    assert list(tile) == [layer_id] and tile[layer_id]["features"]
    by = layer.style.get("by")
    if by:
        assert all(by in f["properties"] for f in tile[layer_id]["features"])


def test_gzip_bytes_are_a_valid_mvt(tiles_client):
    """What the disk cache and PMTiles hold: gzip of a decodable MVT."""
    service = tiles_client.app.state.tiles
    z, x, y = tile_of(106.7, 10.8, 12)
    tiles_client.get(f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf")
    key = next(k for k in service.memory._items if k[1:] == (z, x, y))
    data = service.memory.get(key).data
    assert "fx_huge_polygon" in mapbox_vector_tile.decode(gzip.decompress(data))


def test_empty_layer_tiles(tiles_client):
    """fx_empty has no rows: its tiles are 204 and its TileJSON bounds the whole world."""
    assert tiles_client.get("/tiles/fx_empty/12/3262/1924.pbf").status_code == 204
    assert tiles_client.get("/tiles/fx_empty/tilejson.json").json()["bounds"][0] == -180


def test_public_tiles_bypass_the_framework_with_the_same_answer(
    tiles_client, monkeypatch, make_key
):
    """Anonymous requests for public tiles are answered by the ASGI fast path (the router is
    not reached), from memory or rendered, with the same bytes and headers as the app's."""
    from api.routers import tiles as tiles_router

    z, x, y = tile_of(106.7, 10.8, 12)
    path = f"/tiles/fx_huge_polygon/{z}/{x}/{y}.pbf"
    # A key makes the app render it: the reference answer.
    reference = get(tiles_client, path, make_key("admin"))
    assert reference.status_code == 200

    def unreachable(*args, **kwargs):
        raise AssertionError("the router should not be reached for a public tile")

    monkeypatch.setattr(tiles_router, "serve_tile", unreachable)
    tiles_client.app.state.catalog_watcher.interval = 3600  # the catalog is fresh
    neighbour = f"/tiles/fx_huge_polygon/{z}/{x + 1}/{y}.pbf"
    rendered = tiles_client.get(neighbour)  # not in any cache yet: rendered by the fast path
    assert rendered.status_code == 200 and rendered.headers["x-tile-cache"] == "database"
    assert decode(rendered)["fx_huge_polygon"]["features"]
    ogc = tiles_client.get(f"/collections/fx_huge_polygon/tiles/WebMercatorQuad/{z}/{y}/{x}")
    second = tiles_client.get(path)
    for answer in (ogc, second):
        assert answer.headers["x-tile-cache"] == "memory"
        assert answer.content == reference.content
        assert answer.headers["etag"] == reference.headers["etag"]
        assert answer.headers["cache-control"] == "public, max-age=60"  # whoever asked first
        assert "x-request-id" in answer.headers
    assert (
        tiles_client.get(path, headers={"If-None-Match": second.headers["etag"]}).status_code == 304
    )
    plain = tiles_client.get(path, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and decode(plain)["fx_huge_polygon"]["features"]

    # A key goes to the app (which refuses this unknown one); so does a non-public layer.
    assert tiles_client.get(path, headers={"Authorization": "Bearer ioc_x"}).status_code == 401
    with pytest.raises(AssertionError, match="should not be reached"):
        tiles_client.get(f"/tiles/fx_huge_polygon,fx_roads/{z}/{x}/{y}.pbf")


def test_database_failures_under_a_tile_are_503_and_the_pool_recovers(
    tiles_client, db_settings, make_key
):
    """PostgreSQL cancelling a tile's statement is a 503 QueryTimeout, losing the connection a
    503 DatabaseUnavailable — by the fast path and by the app alike — and the next request is
    served on a fresh connection."""
    admin = make_key("admin")
    zooms = iter(range(12, 16))  # a tile not yet cached each time
    try:
        for mode, code in (("cancel", "QueryTimeout"), ("terminate", "DatabaseUnavailable")):
            set_fault(db_settings.dsn(), mode)
            for key in (None, admin):  # fast path, then the app's handler
                z, x, y = tile_of(106.692, 10.78, next(zooms))
                answer = get(tiles_client, f"/tiles/fx_faulty/{z}/{x}/{y}.pbf", key)
                assert answer.status_code == 503, answer.text
                assert answer.json()["code"] == code
    finally:
        set_fault(db_settings.dsn(), "none")
    z, x, y = tile_of(106.692, 10.78, 16)
    tile = decode(tiles_client.get(f"/tiles/fx_faulty/{z}/{x}/{y}.pbf"))
    assert len(tile["fx_faulty"]["features"]) == 3


def test_the_disk_cache_keeps_to_its_budget(tiles_client, tmp_path):
    """A layer set's zoom level written long ago is deleted when the cache is over budget; the
    tile just rendered stays."""
    app = tiles_client.app
    service = app.state.tiles = TileService(
        TileSettings(cache_dir=tmp_path, disk_max_mb=1, memory_mb=0)
    )
    # Another database's tiles (the budget is the folder's).
    stale = tmp_path / "db-other" / service.fingerprint / "fx_gone@1" / "12" / "3263"
    stale.mkdir(parents=True)
    for y in range(24):  # 2.4 MB written a day ago
        (stale / f"{y}.mvt.gz").write_bytes(bytes(100_000))
    for path in stale.parent.rglob("*"):
        os.utime(path, (time.time() - 86_400,) * 2)
    z, x, y = tile_of(106.70, 10.78, 12)
    response = tiles_client.get(f"/tiles/fx_parcels/{z}/{x}/{y}.pbf")
    assert response.headers["x-tile-cache"] == "database"
    # The eviction runs in the background after the answer: wait for it.
    wait_until(lambda: not stale.parent.exists(), message="the stale zoom level to be evicted")
    assert list(tmp_path.rglob(f"fx_parcels@*/{z}/{x}/{y}.mvt.gz"))
    assert tiles_client.get(f"/tiles/fx_parcels/{z}/{x}/{y}.pbf").headers["x-tile-cache"] == "disk"
