"""OGC API – Features Parts 1–3 over HTTP, against the awkward fixture layers (``fx_*``)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from urllib.parse import quote

import pytest

from ioc.features.crs import transformer
from tests.http.conftest import LANDMARKS, POINTS

EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
ITEMS = "/collections/fx_points/items"


def items(client, collection="fx_points", **params):
    response = client.get(f"/collections/{collection}/items", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(doc) -> list:
    return [f["id"] for f in doc["features"]]


def db_count(db, where: str = "TRUE") -> int:
    """The expected count, straight from the table (trusted test SQL)."""
    with db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM fixtures.points WHERE {where}")  # noqa: S608
        return cur.fetchone()[0]


def assert_400(response, parameter: str):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "InvalidParameter" and body["description"]
    assert body["parameter"] == parameter, body


# --- Part 1: landing, conformance, collections -------------------------------------------------


def test_landing_links_conformance_and_collections(client):
    links = {
        (x["rel"], x["href"].rsplit("/", 1)[-1]) for x in client.get("/?f=json").json()["links"]
    }
    assert ("conformance", "conformance") in links and ("data", "collections") in links


def test_conformance_declares_parts_1_2_3(client):
    classes = client.get("/conformance").json()["conformsTo"]
    for name in (
        "ogcapi-features-1/1.0/conf/core",
        "ogcapi-features-1/1.0/conf/geojson",
        "ogcapi-features-2/1.0/conf/crs",
        "ogcapi-features-3/1.0/conf/filter",
        "cql2/1.0/conf/cql2-text",
        "cql2/1.0/conf/cql2-json",
    ):
        assert f"http://www.opengis.net/spec/{name}" in classes
    assert not any("temporal-functions" in c or "arithmetic" in c for c in classes)


def test_collections_hide_internal_and_restricted_from_anonymous(client):
    listed = {c["id"] for c in client.get("/collections").json()["collections"]}
    assert {"fx_points", "fx_vn2000", "fx_odd_names", "fx_empty", "fx_huge_polygon"} <= listed
    assert "fx_internal" not in listed and "fx_restricted" not in listed
    for path in ("", "/items", "/items/1", "/queryables"):
        for layer in ("fx_internal", "fx_restricted", "no_such_layer"):
            response = client.get(f"/collections/{layer}{path}")
            assert response.status_code == 404, (layer, path)
            assert response.json()["code"] == "LayerNotFound"


def test_keys_reveal_internal_and_own_restricted_layers(client, make_key):
    operator = {"Authorization": f"Bearer {make_key('operator')}"}
    listed = {c["id"] for c in client.get("/collections", headers=operator).json()["collections"]}
    assert "fx_internal" in listed and "fx_restricted" not in listed
    response = client.get("/collections/fx_internal/items", headers=operator)
    assert response.status_code == 200
    # Internal data is never cached publicly.
    assert response.headers["cache-control"] == "private, no-store"
    assert "Authorization" in response.headers["vary"]
    owner = {"Authorization": f"Bearer {make_key('publisher', 'health')}"}
    assert client.get("/collections/fx_restricted/items/1", headers=owner).status_code == 200
    assert client.get("/collections/fx_restricted", headers=operator).status_code == 404


def test_collection_describes_crs_and_extent(client):
    doc = client.get("/collections/fx_vn2000").json()
    assert doc["storageCrs"] == EPSG + "9210"
    assert doc["crs"][:2] == [CRS84, EPSG + "4326"] and EPSG + "3857" in doc["crs"]
    west, south, east, north = doc["extent"]["spatial"]["bbox"][0]
    assert 106.5 < west < east < 107 and 10.6 < south < north < 11
    rels = {x["rel"] for x in doc["links"]}
    assert {
        "self",
        "alternate",
        "items",
        "http://www.opengis.net/def/rel/ogc/1.0/queryables",
    } <= rels
    assert client.get("/collections/fx_points").json()["storageCrs"] == CRS84


def test_queryables_is_a_json_schema_of_the_catalog_attributes(client):
    response = client.get("/collections/fx_points/queryables")
    assert response.headers["content-type"].startswith("application/schema+json")
    doc = response.json()
    assert doc["type"] == "object" and doc["additionalProperties"] is False
    props = doc["properties"]
    assert props["geometry"]["x-ogc-role"] == "primary-geometry"
    assert props["observed_at"]["format"] == "date-time"
    assert props["n"]["type"] == "integer" and props["category"]["type"] == "string"


# --- Part 1: items -----------------------------------------------------------------------------


def test_items_default_page_and_counts(client):
    response = client.get(ITEMS)
    assert response.headers["content-type"] == "application/geo+json"
    assert response.headers["content-crs"] == f"<{CRS84}>"
    doc = response.json()
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 10
    assert doc["numberReturned"] == 10 and doc["numberMatched"] == POINTS
    feature = doc["features"][0]
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Point"
    assert set(feature["properties"]) == {"category", "n", "value", "ok", "day", "observed_at"}


def test_paging_follows_next_and_prev_links(client):
    seen, url, pages = [], f"{ITEMS}?limit=3000", 0
    while url:
        doc = client.get(url).json()
        pages += 1
        seen += ids(doc)
        links = {x["rel"]: x["href"] for x in doc["links"]}
        assert ("prev" in links) == (pages > 1)
        url = links.get("next")
    assert pages == 7 and len(seen) == POINTS == len(set(seen))
    last = client.get(f"{ITEMS}?limit=3000&offset=18000").json()
    assert last["numberReturned"] == 2000 and "next" not in {x["rel"] for x in last["links"]}


def test_bbox_matches_the_database(client, db):
    doc = items(client, bbox="106.6,10.7,106.65,10.75", limit=10000)
    expected = db_count(db, "ST_Intersects(geom, ST_MakeEnvelope(106.6,10.7,106.65,10.75,4326))")
    assert doc["numberReturned"] == doc["numberMatched"] == expected > 0


def test_bbox_crs_epsg4326_is_latitude_first(client):
    a = items(client, bbox="106.6,10.7,106.65,10.75", limit=10000)
    b = items(client, bbox="10.7,106.6,10.75,106.65", limit=10000, **{"bbox-crs": EPSG + "4326"})
    assert ids(a) == ids(b)


def test_bbox_on_a_vn2000_layer_in_any_crs(client):
    # Parcels i = 1..20 sit at (106.60 + 0.01 i, 10.70 + 0.01 i): the box holds i = 1..5.
    a = items(client, "fx_vn2000", bbox="106.6,10.7,106.655,10.755")
    assert ids(a) == [1, 2, 3, 4, 5]
    t = transformer(4326, 9210)
    x0, y0 = t.transform(106.6, 10.7)
    x1, y1 = t.transform(106.655, 10.755)
    b = items(client, "fx_vn2000", bbox=f"{x0},{y0},{x1},{y1}", **{"bbox-crs": EPSG + "9210"})
    assert ids(b) == [1, 2, 3, 4, 5]
    world = items(client, "fx_vn2000", bbox="-180,-90,180,90", limit=100)
    assert world["numberReturned"] == 20


def test_datetime_instants_and_intervals(client, db):
    # A point every hour from 2024-01-01T00:00Z.
    assert ids(items(client, datetime="2024-01-01T05:00:00Z")) == [5]
    assert items(client, datetime="2024-01-02")["numberMatched"] == 24
    doc = items(client, datetime="2024-01-01T00:00:00Z/2024-01-01T10:00:00Z")
    assert doc["numberMatched"] == 11  # closed interval
    assert items(client, datetime="../2024-01-01T02:00:00Z")["numberMatched"] == 3
    assert items(client, datetime="2024-01-01T00:00:00Z/..")["numberMatched"] == POINTS
    expected = db_count(db, "observed_at >= '2024-02-01' AND observed_at < '2024-03-01'")
    assert items(client, datetime="2024-02-01/2024-02-29")["numberMatched"] == expected


def test_sortby_and_properties(client):
    doc = items(client, sortby="-n,+value", properties="n,value", limit=5)
    assert [f["properties"]["n"] for f in doc["features"]] == [99] * 5
    values = [f["properties"]["value"] for f in doc["features"]]
    assert values == sorted(values) and set(doc["features"][0]["properties"]) == {"n", "value"}
    assert items(client, properties="", limit=1)["features"][0]["properties"] == {}


def test_odd_names(client):
    doc = items(client, "fx_odd_names", sortby="-Mixed Case", properties='Mixed Case,quote"d')
    assert ids(doc) == ["c'3", "b 2", "a/1"]  # NULLs first when descending
    assert doc["features"][2]["properties"] == {"Mixed Case": 1, 'quote"d': 'it\'s "q"'}
    assert doc["features"][0]["geometry"] is None
    for fid in ("a/1", "b 2", "c'3"):
        response = client.get(f"/collections/fx_odd_names/items/{quote(fid, safe='')}")
        assert response.status_code == 200 and response.json()["id"] == fid
    doc = items(client, "fx_odd_names", filter='"has space" = \'x y\' OR "Mixed Case" = 2')
    assert ids(doc) == ["a/1", "b 2"]


def test_single_feature_and_unknown_ids(client):
    response = client.get("/collections/fx_points/items/42")
    feature = response.json()
    assert response.status_code == 200 and feature["id"] == 42
    assert {x["rel"] for x in feature["links"]} == {"self", "collection"}
    for fid in ("999999", "abc", "1.5", "-0x1", "99999999999999999999999", "1_0", "%00"):
        response = client.get(f"/collections/fx_points/items/{fid}")
        assert response.status_code == 404, fid
        assert response.json()["code"] == "FeatureNotFound"


def test_empty_layer_and_huge_polygon(client):
    doc = items(client, "fx_empty")
    assert doc["features"] == [] and doc["numberMatched"] == 0
    assert "next" not in {x["rel"] for x in doc["links"]}
    polygon = items(client, "fx_huge_polygon")["features"][0]["geometry"]
    assert polygon["type"] == "Polygon" and len(polygon["coordinates"][0]) == 20_001


# --- Part 2: CRS -------------------------------------------------------------------------------


def test_output_in_vn2000_matches_pyproj(client):
    name, lon, lat, _ = LANDMARKS[0]
    response = client.get("/collections/fx_landmarks/items/1", params={"crs": EPSG + "9210"})
    assert response.headers["content-crs"] == f"<{EPSG}9210>"
    x, y = response.json()["geometry"]["coordinates"]
    ex, ey = transformer(4326, 9210).transform(lon, lat)
    assert abs(x - ex) < 0.05 and abs(y - ey) < 0.05, (x, y, ex, ey)


def test_vn2000_storage_read_back_in_crs84_matches_pyproj(client, db):
    with db.cursor() as cur:
        cur.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM fixtures.vn2000_parcels WHERE parcel_id = 3"
        )
        x, y = cur.fetchone()
    lon, lat = items(client, "fx_vn2000", limit=3)["features"][2]["geometry"]["coordinates"]
    elon, elat = transformer(9210, 4326).transform(x, y)
    assert abs(lon - elon) < 1e-6 and abs(lat - elat) < 1e-6


def test_epsg4326_output_is_lat_lon_and_3857_is_metres(client):
    _, lon, lat, _ = LANDMARKS[1]
    doc = client.get("/collections/fx_landmarks/items/2", params={"crs": EPSG + "4326"}).json()
    assert doc["geometry"]["coordinates"] == pytest.approx([lat, lon], abs=1e-7)
    doc = items(client, "fx_landmarks", crs=EPSG + "3857", limit=2)
    ex, ey = transformer(4326, 3857).transform(lon, lat)
    assert doc["features"][1]["geometry"]["coordinates"] == pytest.approx([ex, ey], abs=0.01)


# --- Part 3: filters ---------------------------------------------------------------------------


FILTERS = [  # (CQL2 text, SQL on fixtures.points for the expected count)
    ("category = 'alpha' AND n > 50", "category = 'alpha' AND n > 50"),
    ("category LIKE 'g%' OR category LIKE '_et_'", "category LIKE 'g%' OR category LIKE '_et_'"),
    ("n IN (1, 2, 3) AND NOT (ok = TRUE)", "n IN (1, 2, 3) AND NOT ok"),
    ("n NOT IN (1, 2) AND value BETWEEN 10 AND 20", "n NOT IN (1, 2) AND value BETWEEN 10 AND 20"),
    ("category IS NULL", "category IS NULL"),
    ("CASEI(category) = casei('ALPHA')", "category = 'alpha'"),
    ("ACCENTI(CASEI(category)) = ACCENTI(CASEI('duong'))", "category = 'Đường'"),
    ("day = DATE('2024-01-05') AND n < value", "day = '2024-01-05' AND n < value"),
    ("T_AFTER(observed_at, TIMESTAMP('2024-03-01T00:00:00Z'))", "observed_at > '2024-03-01Z'"),
    (
        "T_BEFORE(observed_at, TIMESTAMP('2024-01-01T05:00:00Z'))",
        "observed_at < '2024-01-01T05:00Z'",
    ),
    (
        "T_DURING(observed_at, INTERVAL('2024-01-01T00:00:00Z', '2024-01-02T00:00:00Z'))",
        "observed_at > '2024-01-01Z' AND observed_at < '2024-01-02Z'",
    ),
    (
        "S_INTERSECTS(geometry, POLYGON((106.6 10.7, 106.7 10.7, 106.7 10.8, 106.6 10.8, 106.6 10.7)))",
        "ST_Intersects(geom, ST_MakeEnvelope(106.6, 10.7, 106.7, 10.8, 4326))",
    ),
    (
        "S_WITHIN(geometry, BBOX(106.6, 10.7, 106.7, 10.8))",
        "ST_Within(geom, ST_MakeEnvelope(106.6, 10.7, 106.7, 10.8, 4326))",
    ),
    (
        "S_DWITHIN(geometry, POINT(106.7 10.8), 500, meters)",
        "ST_DWithin(geom::geography, ST_SetSRID(ST_MakePoint(106.7, 10.8), 4326)::geography, 500)",
    ),
]


@pytest.mark.parametrize("cql, where", FILTERS)
def test_filters_match_the_database(client, db, cql, where):
    doc = items(client, filter=cql, limit=1)
    assert doc["numberMatched"] == db_count(db, where), cql


def test_cql2_json_equals_text(client):
    text = items(client, filter="category = 'beta' AND n BETWEEN 10 AND 30", limit=100)
    doc = {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "category"}, "beta"]},
            {"op": "between", "args": [{"property": "n"}, 10, 30]},
        ],
    }
    as_json = items(client, filter=json.dumps(doc), limit=100, **{"filter-lang": "cql2-json"})
    assert ids(text) == ids(as_json) and text["numberMatched"] > 0


def test_filter_crs(client):
    cql84 = "S_INTERSECTS(geometry, BBOX(106.6, 10.7, 106.65, 10.75))"
    cql4326 = "S_INTERSECTS(geometry, BBOX(10.7, 106.6, 10.75, 106.65))"
    a = items(client, filter=cql84, limit=1000)
    b = items(client, filter=cql4326, limit=1000, **{"filter-crs": EPSG + "4326"})
    assert ids(a) == ids(b) and a["numberMatched"] > 0
    # Parcel i stands at (106.60 + 0.01 i, 10.70 + 0.01 i): a box that stops between 4 and 5
    # (parcel 5 would sit exactly on the corner of cql84, where rounding decides).
    vn = items(
        client, "fx_vn2000", filter="S_INTERSECTS(geometry, BBOX(106.6, 10.7, 106.645, 10.745))"
    )
    assert ids(vn) == [1, 2, 3, 4]


def test_injection_attempts_are_harmless(client, db):
    doc = items(client, filter="category = 'x''; DROP TABLE fixtures.points; --'")
    assert doc["numberMatched"] == 0 and db_count(db) == POINTS
    assert_400(client.get(ITEMS, params={"filter": '"n; DROP TABLE x" = 1'}), "filter")
    assert_400(client.get(ITEMS, params={"sortby": 'n"; DROP TABLE x; --'}), "sortby")
    assert_400(client.get(ITEMS, params={"properties": "n,geom) FROM x; --"}), "properties")
    assert db_count(db) == POINTS


# --- errors, caching, formats ------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"bbox": "1,2,3"}, "bbox"),
        ({"bbox": "106,11,107,10"}, "bbox"),
        ({"bbox": "0,-91,1,0"}, "bbox"),
        ({"bbox": "a,b,c,d"}, "bbox"),
        ({"bbox": "1,2,3,4", "bbox-crs": "EPSG:1"}, "bbox-crs"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"crs": "EPSG:27700"}, "crs"),
        ({"datetime": "yesterday"}, "datetime"),
        ({"datetime": "2024-02-01/2024-01-01"}, "datetime"),
        ({"datetime": "2024-01-01/2024-01-02/2024-01-03"}, "datetime"),
        ({"filter": "n = "}, "filter"),
        ({"filter": "nope = 1"}, "filter"),
        (
            {
                "filter": "T_MEETS(observed_at, INTERVAL('2024-01-01T00:00:00Z','2024-01-02T00:00:00Z'))"
            },
            "filter",
        ),
        ({"filter": "{", "filter-lang": "cql2-json"}, "filter"),
        ({"filter": "n = 1", "filter-lang": "sql"}, "filter-lang"),
        ({"filter": "n = 1", "filter-crs": "EPSG:2"}, "filter-crs"),
        ({"sortby": "-nope"}, "sortby"),
        ({"properties": "n,nope"}, "properties"),
        ({"f": "shapefile"}, "f"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(client, params, parameter):
    assert_400(client.get(ITEMS, params=params), parameter)


def test_datetime_on_a_layer_without_time_is_400(client):
    assert_400(
        client.get("/collections/fx_landmarks/items", params={"datetime": "2024-01-01"}), "datetime"
    )


def test_etag_and_304(client):
    first = client.get(ITEMS, params={"limit": 5, "bbox": "106.6,10.7,106.7,10.8"})
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=60"
    again = client.get(
        ITEMS, params={"bbox": "106.6,10.7,106.7,10.8", "limit": 5}, headers={"If-None-Match": tag}
    )
    assert again.status_code == 304 and again.headers["etag"] == tag and not again.content
    other = client.get(ITEMS, params={"limit": 6}, headers={"If-None-Match": tag})
    assert other.status_code == 200 and other.headers["etag"] != tag
    feature = client.get("/collections/fx_points/items/7")
    assert (
        client.get(
            "/collections/fx_points/items/7", headers={"If-None-Match": feature.headers["etag"]}
        ).status_code
        == 304
    )


def test_csv_export_streams_every_row(client, db):
    response = client.get(ITEMS, params={"f": "csv", "bbox": "106.5,10.6,106.7,10.8"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["fid", "category", "n", "value", "ok", "day", "observed_at", "geometry"]
    expected = db_count(db, "ST_Intersects(geom, ST_MakeEnvelope(106.5,10.6,106.7,10.8,4326))")
    assert len(rows) - 1 == expected > FETCH_LIMIT_HINT
    assert rows[1][-1].startswith("POINT(")
    odd = list(csv.reader(io.StringIO(client.get("/collections/fx_odd_names/items?f=csv").text)))
    assert odd[0][3] == 'quote"d' and odd[1][3] == 'it\'s "q"' and odd[3][-1] == ""


FETCH_LIMIT_HINT = 2000  # more rows than one fetch: the export went through the cursor


def test_geojson_seq_export(client):
    response = client.get(ITEMS, params={"f": "geojsonseq", "limit": 25})
    assert response.headers["content-type"] == "application/geo+json-seq"
    records = [r for r in response.content.split(b"\x1e") if r]
    assert len(records) == 25 and all(r.endswith(b"\n") for r in records)
    assert all(json.loads(r)["type"] == "Feature" for r in records)
    accept = client.get(ITEMS, params={"limit": 2}, headers={"Accept": "application/geo+json-seq"})
    assert accept.content.count(b"\x1e") == 2


def test_a_limit_above_the_maximum_is_capped(client, make_key):
    """Issue 17 §3 (ogcapi-features#640): the server caps `limit`, and pages on from there."""
    for headers in ({}, {"Authorization": f"Bearer {make_key('analyst')}"}):
        doc = client.get(ITEMS, params={"limit": 10**30}, headers=headers).json()
        assert doc["numberReturned"] == len(doc["features"]) == 10_000
        after = {x["rel"]: x["href"] for x in doc["links"]}["next"]
        assert "limit=10000" in after and "offset=10000" in after


def test_anonymous_exports_stop_at_the_bound_and_link_the_rest(client, make_key):
    """Anonymous CSV/GeoJSON-seq exports end at IOC_FEATURES_ANONYMOUS_MAX_FEATURES (10,000)
    and say where the rest is; a key exports everything."""
    response = client.get(ITEMS, params={"f": "geojsonseq"})
    assert response.status_code == 200
    assert response.content.count(b"\x1e") == 10_000
    assert response.headers["ogc-numbermatched"] == str(POINTS)
    link = response.headers["link"]
    assert 'rel="next"' in link and "offset=10000" in link and "f=geojsonseq" in link
    rest = client.get(link[1 : link.index(">")].replace("http://testserver", ""))
    assert rest.content.count(b"\x1e") == POINTS - 10_000 and "link" not in rest.headers
    rows = client.get(ITEMS, params={"f": "csv", "limit": 50_000}).text.count("\r\n")
    assert rows == 1 + 10_000
    keyed = client.get(
        ITEMS, params={"f": "csv"}, headers={"Authorization": f"Bearer {make_key('operator')}"}
    )
    assert keyed.text.count("\r\n") == 1 + POINTS and "link" not in keyed.headers
    anonymous = client.get(ITEMS, params={"f": "csv"})
    assert anonymous.headers["etag"] != keyed.headers["etag"]  # a bounded answer is another one


def test_html_pages(client):
    for path in (
        "/collections",
        "/collections/fx_points",
        "/collections/fx_points/items",
        "/collections/fx_points/items/3",
        "/conformance",
        "/collections/fx_points/queryables",
        "/collections/fx_odd_names/items",
    ):
        response = client.get(path, params={"f": "html"})
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert "<html" in response.text
    page = client.get("/collections/fx_points/items", headers={"Accept": "text/html"}).text
    assert "Đối tượng" in page and "Trang sau / Next" in page


def test_openapi_documents_limits_and_number_matched(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/collections/{collectionId}/items"]["get"]
    limit = next(p for p in op["parameters"] if p["name"] == "limit")
    assert "maximum" not in limit["schema"]["anyOf"][0]  # capped, not refused
    assert "at most 10,000" in limit["description"] and "capped" in limit["description"]
    assert "numberMatched" in op["description"]
    names = {p["name"] for p in op["parameters"]}
    assert {
        "bbox",
        "bbox-crs",
        "datetime",
        "filter",
        "filter-lang",
        "filter-crs",
        "crs",
        "sortby",
        "properties",
    } <= names


def test_a_10000_feature_page_is_streamed_in_chunks(db_settings):
    """The domain never holds a big page whole: chunks of a few hundred features."""
    from ioc.catalog.layers import load_catalog
    from ioc.db.connection import create_pool
    from ioc.features import items as features

    async def run():
        pool = await create_pool(db_settings)
        try:
            layer = (await load_catalog(pool)).get("fx_points", _admin())
            page, chunks = await features.stream_items(
                pool, layer, features.ItemsQuery(limit=10000)
            )
            sizes = [len(chunk) async for chunk in chunks]
            return page, sizes
        finally:
            await pool.close()

    page, sizes = asyncio.run(run())
    assert page.returned == 10000 and page.has_next
    assert len(sizes) >= 10000 // features.CURSOR_BATCH
    assert max(sizes) < sum(sizes) / 10


def _admin():
    from ioc.catalog.access import ADMIN

    return ADMIN


# --- the demo city (seeded by the session fixtures) -------------------------------------------


@pytest.mark.parametrize(
    "layer_id, role", [("wards", None), ("hospitals", None), ("reports_1022", "operator")]
)
def test_demo_layers(client, make_key, layer_id, role):
    """Real demo layers round-trip: items, one item, VN-2000 output; the internal 1022 reports
    exist only for a caller with a key."""
    headers = {"Authorization": f"Bearer {make_key(role)}"} if role else {}
    if role:
        assert client.get(f"/collections/{layer_id}").status_code == 404
    page = client.get(f"/collections/{layer_id}/items", params={"limit": 5}, headers=headers)
    assert page.status_code == 200
    doc = page.json()
    assert len(doc["features"]) == 5
    first = doc["features"][0]
    again = client.get(
        f"/collections/{layer_id}/items/{quote(str(first['id']), safe='')}", headers=headers
    )
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    vn = client.get(
        f"/collections/{layer_id}/items", headers=headers, params={"limit": 5, "crs": EPSG + "9210"}
    ).json()
    assert [f["id"] for f in vn["features"]] == [f["id"] for f in doc["features"]]


def test_unknown_query_parameter_is_a_400_naming_it(client):
    """/req/core/query-param-unknown: a misspelt parameter never returns the whole layer."""
    response = client.get(ITEMS, params={"filtr": "n = 1"})
    assert response.status_code == 400 and response.json()["parameter"] == "filtr"
    assert client.get(ITEMS, params={"limit": 1, "f": "json"}).status_code == 200
