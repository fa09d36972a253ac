"""Low-zoom tiles (sql/0012): stored point aggregates and generalised shapes, over HTTP.

Two layers of our own, created and filled through the publishing API and changed through
item writes: their tiles are decoded and held against the rules of docs/tiles.md ("Low
zooms") computed here from the data we sent.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import psycopg2
import pytest

from tests.http.test_publish import _clean
from tests.http.test_tiles import EXTENT, R, decode, tile_of, tile_xy
from tiles.render import TileService
from tiles.settings import TileSettings

POINTS, SHAPES = "lz_points", "lz_shapes"
KINDS = ("ngap", "rac", "den")
CENTRE = (106.70, 10.78)
WORLD = 2 * math.pi * R


def _manifest(layer_id: str, geometry: str, **extra) -> dict:
    return {
        "id": layer_id,
        "title": {"vi": "Lớp thử (low zoom)", "en": "Test layer (low zoom)"},
        "description": {"vi": "Lớp thử", "en": "Test layer"},
        "domain": "citizen_reports",
        "department": "construction",
        "geometry": {"type": geometry, "srid": 4326},
        "access": "public",
        "cadence": "realtime",
        "source": {"name": "pytest", "licence": "CC0"},
        "zoom": {"min": 8, "max": 22},
        "demo": {"count": 1, "weight": "uniform"},
        "attributes": [
            {"name": "name", "type": "text", "label": {"vi": "Tên", "en": "Name"}},
            {"name": "kind", "type": "text", "label": {"vi": "Loại", "en": "Kind"}},
        ],
        "style": {
            "color": "#1f78b4",
            "by": "kind",
            "legend": [
                {"label": {"vi": k, "en": k}, "color": "#1f78b4", "value": k} for k in KINDS
            ],
        },
        **extra,
    }


def _square(lon: float, lat: float, side_m: float) -> list:
    half = side_m / 2 / 111_320
    dx = half / math.cos(math.radians(lat))
    return [[[lon - dx, lat - half], [lon + dx, lat - half], [lon + dx, lat + half],
             [lon - dx, lat + half], [lon - dx, lat - half]]]  # fmt: skip


def _circle(lon: float, lat: float, radius_m: float, vertices: int = 720) -> list:
    ry = radius_m / 111_320
    rx = ry / math.cos(math.radians(lat))
    ring = [
        [
            lon + rx * math.cos(2 * math.pi * k / vertices),
            lat + ry * math.sin(2 * math.pi * k / vertices),
        ]
        for k in range(vertices)
    ]
    return [[*ring, ring[0]]]


def _collection(features: list[dict]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def _upload(client, method: str, layer: str, features: list[dict], headers: dict):
    """Publish features through the upload API ('put' replaces, 'post' appends)."""
    response = getattr(client, method)(
        f"/layers/{layer}/data",
        content=_collection(features),
        headers=headers,
        params={"filename": "upload.geojson"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _point(name: str, kind: str, lon: float, lat: float) -> dict:
    return {
        "type": "Feature",
        "properties": {"name": name, "kind": kind},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def _polygon(name: str, rings: list) -> dict:
    return {
        "type": "Feature",
        "properties": {"name": name, "kind": KINDS[0]},
        "geometry": {"type": "Polygon", "coordinates": rings},
    }


def _random_points(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    return [
        _point(
            f"P{seed}-{k}",
            rnd.choices(KINDS, weights=(5, 3, 1))[0],
            CENTRE[0] + rnd.gauss(0, 0.06),
            CENTRE[1] + rnd.gauss(0, 0.06),
        )
        for k in range(n)
    ]


# Side (m) of each test square; "circle" is a 3 km-radius, 720-vertex ring.
SQUARES = {"s10": 10, "s60": 60, "s400": 400, "s3000": 3000, "far20": 20}
SQUARE_AT = {"s10": (106.69, 10.77), "s60": (106.70, 10.772), "s400": (106.68, 10.79),
             "s3000": (106.72, 10.80), "far20": (106.45, 11.05)}  # fmt: skip
CIRCLE = (106.66, 10.76, 3000.0)


def _clean_lowzoom(db_settings) -> None:
    _clean(db_settings, "lz")
    conn = psycopg2.connect(db_settings.dsn())
    with conn.cursor() as cur:
        cur.execute("DELETE FROM ioc.tile_cells WHERE layer_id LIKE 'lz\\_%'")
        cur.execute("DELETE FROM ioc.tile_shapes WHERE layer_id LIKE 'lz\\_%'")
    conn.commit()
    conn.close()


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture(scope="module")
def layers(client, publisher, db_settings):
    """Both layers, published: 3,000 points in three kinds and the squares plus the circle."""
    _clean_lowzoom(db_settings)
    for manifest in (
        _manifest(POINTS, "Point", tiles={"cluster": True, "cluster_max_zoom": 13}),
        _manifest(SHAPES, "Polygon"),
    ):
        response = client.post("/layers", json=manifest, headers=publisher)
        assert response.status_code == 201, response.text
    _upload(client, "put", POINTS, _random_points(3000, 1), publisher)
    shapes = [_polygon(name, _square(*SQUARE_AT[name], side)) for name, side in SQUARES.items()]
    shapes.append(_polygon("circle", _circle(*CIRCLE)))
    _upload(client, "put", SHAPES, shapes, publisher)
    yield
    _clean_lowzoom(db_settings)


@pytest.fixture
def uncached(tiles_client):
    """The app with tile caching off: every request renders."""
    tiles_client.app.state.tiles = TileService(TileSettings(cache="off"))
    return tiles_client


def _rows(db, sql: str, *args) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall()
    db.rollback()
    return rows


def _live_points(db) -> list[tuple[float, float, str]]:
    return _rows(db, f"SELECT ST_X(geom), ST_Y(geom), kind FROM data.{POINTS}")


def _cluster_tiles(client, z: int, points) -> dict[tuple[int, int, int], list[dict]]:
    """Every tile at zoom z holding one of the points: its decoded cluster features."""
    tiles = {}
    for tile in sorted({tile_of(lon, lat, z) for lon, lat, _ in points}):
        response = client.get(f"/tiles/{POINTS}/{tile[0]}/{tile[1]}/{tile[2]}.pbf")
        tiles[tile] = decode(response)[POINTS]["features"]
    return tiles


def _assert_counts_follow(client, db) -> None:
    """At each aggregated zoom, each tile's counts sum to the points in its area, and the
    dominant kind of a one-kind cell is that kind."""
    points = _live_points(db)
    for z in range(8, 14):
        expected = Counter(tile_of(lon, lat, z) for lon, lat, _ in points)
        tiles = _cluster_tiles(client, z, points)
        got = {
            tile: sum(f["properties"]["count"] for f in features)
            for tile, features in tiles.items()
        }
        assert got == dict(expected), z
        assert sum(got.values()) == len(points)


def test_stored_aggregates_are_built_and_used(layers, db):
    kind, zmin, zmax = _rows(
        db, "SELECT kind, min_zoom, max_zoom FROM ioc.tile_lowzoom WHERE layer_id = %s", POINTS
    )[0]
    assert (kind, zmin, zmax) == ("points", 8, 13)
    per_zoom = _rows(
        db,
        "SELECT z, sum(n) FROM ioc.tile_cells WHERE layer_id = %s GROUP BY z ORDER BY z",
        POINTS,
    )
    assert per_zoom == [(z, 3000) for z in range(8, 14)]


def test_aggregate_counts_sum_to_the_features_in_each_tile(layers, uncached, db):
    _assert_counts_follow(uncached, db)


def test_aggregated_tile_equals_the_tile_computed_from_the_rows(layers, uncached, db):
    """The stored cells give the tile the rows give (counts, kinds, positions to a unit)."""
    z, x, y = tile_of(*CENTRE, 11)
    path = f"/tiles/{POINTS}/{z}/{x}/{y}.pbf"
    stored = decode(uncached.get(path))[POINTS]["features"]
    with db.cursor() as cur:  # the build no longer matches the settings: the rows are read
        cur.execute("UPDATE ioc.tile_lowzoom SET grid = -grid WHERE layer_id = %s", (POINTS,))
    db.commit()
    try:
        scanned = decode(uncached.get(path))[POINTS]["features"]
    finally:
        with db.cursor() as cur:
            cur.execute("UPDATE ioc.tile_lowzoom SET grid = -grid WHERE layer_id = %s", (POINTS,))
        db.commit()

    def cells(features):
        return sorted(
            (f["geometry"]["coordinates"], f["properties"]["count"], f["properties"]["kind"])
            for f in features
        )

    assert len(stored) == len(scanned) > 50
    for (a_xy, a_n, a_kind), (b_xy, b_n, b_kind) in zip(cells(stored), cells(scanned), strict=True):
        assert (a_n, a_kind) == (b_n, b_kind) and math.dist(a_xy, b_xy) <= 1


def test_counts_follow_item_writes_and_publishes(layers, uncached, db, publisher):
    items = f"/collections/{POINTS}/items"
    created = uncached.post(
        items,
        json={"type": "FeatureCollection", "features": _random_points(40, 2)},
        headers=publisher,
    )
    assert created.status_code == 201, created.text
    fids = [fid for (fid,) in _rows(db, f"SELECT fid FROM data.{POINTS} ORDER BY fid LIMIT 3")]
    moved = _point("moved", "den", 106.95, 10.95)  # to another z10 tile
    replaced = uncached.put(f"{items}/{fids[0]}", json=moved, headers=publisher)
    assert replaced.status_code in (200, 204), replaced.text
    for fid in fids[1:]:
        assert uncached.delete(f"{items}/{fid}", headers=publisher).status_code == 204
    assert len(_live_points(db)) == 3000 + 40 - 2
    _assert_counts_follow(uncached, db)

    _upload(uncached, "post", POINTS, _random_points(500, 3), publisher)
    _assert_counts_follow(uncached, db)
    assert (
        _upload(uncached, "put", POINTS, _random_points(700, 4), publisher)["feature_count"] == 700
    )
    _assert_counts_follow(uncached, db)


# --- lines and polygons -------------------------------------------------------------------------


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    return R * math.radians(lon), R * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def visibility_zoom(rings: list, visible_px: float = 1.0) -> int:
    """docs/tiles.md: the first zoom at which the bounding box (EPSG:3857) is visible_px
    pixels of a 256-pixel tile wide or tall."""
    xs, ys = zip(*(_mercator(lon, lat) for lon, lat in rings[0]), strict=True)
    size = max(max(xs) - min(xs), max(ys) - min(ys))
    return max(0, math.ceil(math.log2(WORLD * visible_px / (256 * size))))


def _shape_names(client, z, x, y) -> set[str]:
    response = client.get(f"/tiles/{SHAPES}/{z}/{x}/{y}.pbf")
    if response.status_code == 204:
        return set()
    return {f["properties"]["name"] for f in decode(response)[SHAPES]["features"]}


def _live_shapes(db) -> dict[str, list]:
    rows = _rows(db, f"SELECT name, ST_AsGeoJSON(geom) FROM data.{SHAPES}")
    return {name: json.loads(doc)["coordinates"] for name, doc in rows}


def _assert_shapes_follow(client, db) -> None:
    """At zooms 8-13, the tile around each shape holds exactly the shapes of that tile whose
    visibility zoom has come."""
    shapes = _live_shapes(db)
    for z in range(8, 14):
        tiles = {tile_of(*rings[0][0], z) for rings in shapes.values()}
        for tile in tiles:
            expected = {
                name
                for name, rings in shapes.items()
                if visibility_zoom(rings) <= z and tile in _tiles_touched(rings, z)
            }
            assert _shape_names(client, *tile) == expected, (z, tile)


def _tiles_touched(rings: list, z: int) -> set[tuple[int, int, int]]:
    """Tiles whose buffered area the shape's bounding box meets (the MVT buffer is 1/64)."""
    lons = [p[0] for p in rings[0]]
    lats = [p[1] for p in rings[0]]
    margin = 360 / (1 << z) / 64 * 1.01
    _, x0, y0 = tile_of(min(lons) - margin, max(lats) + margin, z)
    _, x1, y1 = tile_of(max(lons) + margin, min(lats) - margin, z)
    return {(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}


def test_visibility_zoom_of_the_squares_is_what_the_rules_say(layers):
    zooms = {
        name: visibility_zoom(_square(*SQUARE_AT[name], side)) for name, side in SQUARES.items()
    }
    # 1 px at z10 is 153 m of Web Mercator (~150 m on the ground here).
    assert zooms == {"s10": 14, "s60": 12, "s400": 9, "s3000": 6, "far20": 13}


def test_polygon_tiles_hold_the_visible_shapes(layers, uncached, db):
    _assert_shapes_follow(uncached, db)
    kind, zmin, zmax = _rows(
        db, "SELECT kind, min_zoom, max_zoom FROM ioc.tile_lowzoom WHERE layer_id = %s", SHAPES
    )[0]
    assert (kind, zmin, zmax) == ("shapes", 8, 13)


def test_a_z10_tile_with_nothing_visible_is_empty(layers, uncached):
    """far20 is alone in its z10 tile and visible from z13: 204 at z10, drawn at z13."""
    z, x, y = tile_of(*SQUARE_AT["far20"], 10)
    assert uncached.get(f"/tiles/{SHAPES}/{z}/{x}/{y}.pbf").status_code == 204
    assert _shape_names(uncached, *tile_of(*SQUARE_AT["far20"], 13)) == {"far20"}


def test_shapes_are_simplified_within_the_tolerance(layers, uncached):
    """The 720-vertex circle at z10: far fewer vertices, each within simplify_px (0.25 px =
    4 units of a 4096 extent) plus one unit of rounding of the true circle."""
    lon, lat, radius = CIRCLE
    z, x, y = tile_of(lon, lat, 10)
    features = decode(uncached.get(f"/tiles/{SHAPES}/{z}/{x}/{y}.pbf"))[SHAPES]["features"]
    circle = next(f for f in features if f["properties"]["name"] == "circle")
    ring = circle["geometry"]["coordinates"][0]
    assert 8 <= len(ring) < 200
    centre = tile_xy(lon, lat, z, x, y)
    edge = tile_xy(lon, lat + radius / 111_320, z, x, y)
    r_units = abs(edge[1] - centre[1])
    tolerance = 0.25 * EXTENT / 256 + 1
    for point in ring:
        assert abs(math.dist(point, centre) - r_units) <= tolerance + 0.02 * r_units


def test_shapes_follow_item_writes(layers, uncached, db, publisher):
    items = f"/collections/{SHAPES}/items"
    big = _polygon("s2000", _square(106.64, 10.82, 2000))
    assert uncached.post(items, json=big, headers=publisher).status_code == 201
    (fid,) = _rows(db, f"SELECT fid FROM data.{SHAPES} WHERE name = 's400'")[0]
    grown = _polygon("s400", _square(*SQUARE_AT["s400"], 40))  # shrinks below z12's pixel
    assert uncached.put(f"{items}/{fid}", json=grown, headers=publisher).status_code in (200, 204)
    (fid,) = _rows(db, f"SELECT fid FROM data.{SHAPES} WHERE name = 's3000'")[0]
    assert uncached.delete(f"{items}/{fid}", headers=publisher).status_code == 204
    _assert_shapes_follow(uncached, db)


def test_capped_generalised_tile_says_so(layers, tiles_client):
    tiles_client.app.state.tiles = TileService(TileSettings(cache="off", max_features=1))
    z, x, y = tile_of(*CENTRE, 8)
    response = tiles_client.get(f"/tiles/{SHAPES}/{z}/{x}/{y}.pbf")
    assert len(decode(response)[SHAPES]["features"]) == 1
    assert response.headers["x-tile-truncated"] == SHAPES


def test_sql_defaults_are_the_tile_settings_defaults(db):
    (arguments,) = _rows(
        db,
        "SELECT pg_get_function_arguments('ioc.tile_lowzoom_build(text, int, int, int,"
        " float8, float8, float8)'::regprocedure)",
    )[0]
    defaults = [part.split("DEFAULT ")[1] for part in arguments.split(", ") if "DEFAULT" in part]
    settings = TileSettings()
    expected = (
        settings.cluster_grid,
        settings.cluster_max_zoom,
        settings.generalise_max_zoom,
        settings.visible_px,
        settings.simplify_px,
        settings.merge_px,
    )
    assert [float(d) for d in defaults] == [float(e) for e in expected]
