"""OGC API – Features Part 4 through the real HTTP API with a real publisher key: create,
replace, patch and delete single features; If-Match; the upload's validation; VN-2000."""

from __future__ import annotations

import math

import pytest

from ioc.catalog.access import ADMIN
from ioc.features import items
from ioc.features.crs import transformer
from tests.http.test_publish import SENSORS, _clean

LAYER = "pt_items"  # pt_: cleaned like the other publishing tests' layers
ITEMS = f"/collections/{LAYER}/items"
# A timestamp and a number besides the sensors' text, integer and date: their text forms follow
# session settings, which an item's ETag must not.
MORE = [
    {"name": "read_at", "type": "timestamp", "label": {"vi": "Lúc đọc", "en": "Read at"}},
    {"name": "level_m", "type": "number", "label": {"vi": "Mực nước", "en": "Level"}},
]


def feature(sid="W-1", lon=106.6990, lat=10.7798, **props):
    return {
        "type": "Feature",
        "properties": {"sensor_id": sid, "depth_cm": 7, **props},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture(scope="module")
def layer(client, publisher, db_settings):
    _clean(db_settings)
    doc = {**SENSORS, "id": LAYER, "attributes": SENSORS["attributes"] + MORE}
    response = client.post("/layers", json=doc, headers=publisher)
    assert response.status_code == 201, response.text
    yield LAYER
    _clean(db_settings)


def create(client, headers, body, **extra):
    return client.post(ITEMS, json=body, headers={**headers, **extra})


def row(db, fid):
    with db.cursor() as cur:
        cur.execute(
            f"SELECT sensor_id, depth_cm, installed, ST_X(geom), ST_Y(geom) FROM data.{LAYER}"
            " WHERE fid = %s",
            (int(fid),),
        )
        found = cur.fetchone()
    db.rollback()
    return found


def test_create_replace_patch_delete(client, layer, publisher, db):
    created = create(client, publisher, feature(installed="2025-03-01"))
    assert created.status_code == 201, created.text
    fid = created.json()["ids"][0]
    assert created.headers["location"].endswith(f"{ITEMS}/{fid}")
    assert row(db, fid)[:3] == ("W-1", 7, __import__("datetime").date(2025, 3, 1))

    got = client.get(f"{ITEMS}/{fid}", headers=publisher)
    assert got.status_code == 200
    tag = got.headers["etag"]
    replaced = client.put(
        f"{ITEMS}/{fid}",
        json=feature("W-1b", 106.70, 10.78, depth_cm="12"),
        headers={**publisher, "If-Match": tag},
    )
    assert replaced.status_code == 204, replaced.text
    assert row(db, fid) == ("W-1b", 12, None, pytest.approx(106.70), pytest.approx(10.78))

    stale = client.patch(
        f"{ITEMS}/{fid}",
        json={"properties": {"depth_cm": 1}},
        headers={**publisher, "If-Match": tag},
    )
    assert stale.status_code == 412, stale.text

    patched = client.patch(
        f"{ITEMS}/{fid}", json={"properties": {"depth_cm": None}}, headers=publisher
    )
    assert patched.status_code == 204, patched.text
    assert row(db, fid)[:2] == ("W-1b", None)

    deleted = client.delete(f"{ITEMS}/{fid}", headers=publisher)
    assert deleted.status_code == 204
    assert row(db, fid) is None
    assert client.delete(f"{ITEMS}/{fid}", headers=publisher).status_code == 404
    assert client.get(f"{ITEMS}/{fid}", headers=publisher).status_code == 404
    with db.cursor() as cur:
        cur.execute(
            "SELECT action FROM ioc.audit WHERE layer_id = %s AND action LIKE 'item.%%'"
            " ORDER BY id",
            (LAYER,),
        )
        actions = [a for (a,) in cur.fetchall()]
    db.rollback()
    assert actions == ["item.create", "item.replace", "item.update", "item.delete"]


def test_item_etags_follow_the_feature_not_the_layer(client, layer, publisher):
    a, b = (create(client, publisher, feature(s)).json()["ids"][0] for s in ("E-A", "E-B"))
    tag_a = client.get(f"{ITEMS}/{a}", headers=publisher).headers["etag"]
    tag_b = client.get(f"{ITEMS}/{b}", headers=publisher).headers["etag"]
    assert tag_a != tag_b
    changed_a = client.patch(
        f"{ITEMS}/{a}",
        json={"properties": {"depth_cm": 8}},
        headers={**publisher, "If-Match": tag_a},
    )
    assert changed_a.status_code == 204, changed_a.text
    # B did not change: same ETag, 304, and its old ETag still writes.
    cached = client.get(f"{ITEMS}/{b}", headers={**publisher, "If-None-Match": tag_b})
    assert (cached.status_code, cached.headers["etag"]) == (304, tag_b)
    assert client.head(f"{ITEMS}/{b}", headers=publisher).headers["etag"] == tag_b
    fresh = client.get(f"{ITEMS}/{a}", headers={**publisher, "If-None-Match": tag_a})
    assert fresh.status_code == 200 and fresh.headers["etag"] != tag_a
    changed_b = client.patch(
        f"{ITEMS}/{b}",
        json={"properties": {"depth_cm": 9}},
        headers={**publisher, "If-Match": tag_b},
    )
    assert changed_b.status_code == 204, changed_b.text
    # Now B changed: its old ETag is stale for every write, which changes nothing.
    stale = {**publisher, "If-Match": tag_b}
    for answer in (
        client.put(f"{ITEMS}/{b}", json=feature("E-B2"), headers=stale),
        client.patch(f"{ITEMS}/{b}", json={"properties": {"depth_cm": 1}}, headers=stale),
        client.delete(f"{ITEMS}/{b}", headers=stale),
    ):
        assert answer.status_code == 412, answer.text
        assert "changed since that ETag" in answer.json()["description"]
    assert client.get(f"{ITEMS}/{b}", headers=publisher).json()["properties"]["depth_cm"] == 9
    # The ETag of another representation of the same state (a CRS) names that state too.
    in_3857 = client.get(
        f"{ITEMS}/{b}?crs=http://www.opengis.net/def/crs/EPSG/0/3857", headers=publisher
    ).headers["etag"]
    current = client.get(f"{ITEMS}/{b}", headers=publisher).headers["etag"]
    assert in_3857 != current
    deleted = client.delete(f"{ITEMS}/{b}", headers={**publisher, "If-Match": in_3857})
    assert deleted.status_code == 204, deleted.text
    gone = client.delete(f"{ITEMS}/{b}", headers={**publisher, "If-Match": "*"})
    assert gone.status_code == 404, gone.text


def test_an_item_etag_does_not_follow_session_settings(client, layer, publisher, db):
    """The API reads with asyncpg and checks If-Match with psycopg2: the digest must not
    depend on either session's TimeZone, DateStyle, float or bytea output."""
    body = feature("E-S", installed="2025-03-01", read_at="2025-03-01T08:30:00+07:00")
    body["properties"]["level_m"] = 0.1 + 0.2
    fid = create(client, publisher, body).json()["ids"][0]
    tag = client.get(f"{ITEMS}/{fid}", headers=publisher).headers["etag"]
    with db.cursor() as cur:
        for setting, value in [
            ("TimeZone", "America/New_York"),
            ("DateStyle", "SQL, DMY"),
            ("extra_float_digits", "-3"),
            ("bytea_output", "escape"),
        ]:
            cur.execute("SELECT set_config(%s, %s, true)", (setting, value))
        cur.execute(
            f"SELECT {items.digest_sql(catalog_layer(client))} FROM data.{LAYER} t WHERE fid = %s",
            (int(fid),),
        )
        (digest,) = cur.fetchone()
    db.rollback()
    assert tag.strip('"').split(".")[0] == digest


def catalog_layer(client):
    return client.app.state.catalog.get(LAYER, ADMIN)


def test_collection_is_all_or_nothing(client, layer, publisher, db):
    with db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM data.{LAYER}")
        before = cur.fetchone()[0]
    db.rollback()
    bad = {"type": "FeatureCollection", "features": [feature("A"), feature("B", 100.0, 20.0)]}
    refused = create(client, publisher, bad)
    assert refused.status_code == 422, refused.text
    assert "feature 1" in refused.json()["description"]
    assert "outside the city" in refused.json()["description"]
    good = {"type": "FeatureCollection", "features": [feature("A"), feature("B")]}
    made = create(client, publisher, good)
    assert made.status_code == 201, made.text
    assert len(made.json()["ids"]) == 2
    with db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM data.{LAYER}")
        assert cur.fetchone()[0] == before + 2
    db.rollback()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (feature(colour="red"), "colour"),
        (feature(depth_cm="deep"), "depth_cm"),
        (feature(lon=10.7798, lat=106.6990), "swapped"),
        (
            {
                "type": "Feature",
                "properties": {"sensor_id": "L"},
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[106.7, 10.78], [106.71, 10.79]],
                },
            },
            "expected Point",
        ),
        ({"type": "Feature", "properties": {"sensor_id": "N"}, "geometry": None}, "no geometry"),
    ],
)
def test_refused_features_name_the_reason(client, layer, publisher, body, words):
    response = create(client, publisher, body)
    assert response.status_code == 422, response.text
    assert words in response.json()["description"]


def test_other_roles(client, layer, make_key):
    body = feature("X")
    other = {"Authorization": f"Bearer {make_key('publisher', 'health')}"}
    assert create(client, other, body).status_code == 403
    viewer = {"Authorization": f"Bearer {make_key('analyst')}"}
    assert create(client, viewer, body).status_code == 403
    assert create(client, {}, body).status_code == 401
    hidden = client.post("/collections/fx_restricted/items", json=body, headers=viewer)
    assert hidden.status_code == 404


def test_content_crs_vn2000_lands_where_postgis_puts_it(client, layer, publisher, db):
    x, y = transformer(4326, 9210).transform(106.6990, 10.7798)
    body = {**feature("VN"), "geometry": {"type": "Point", "coordinates": [x, y]}}
    made = create(
        client, publisher, body, **{"Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/9210>"}
    )
    assert made.status_code == 201, made.text
    with db.cursor() as cur:
        cur.execute(
            "SELECT ST_X(g), ST_Y(g) FROM (SELECT ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s),"
            " 9210), 4326) AS g) t",
            (x, y),
        )
        expected = cur.fetchone()
    db.rollback()
    assert row(db, made.json()["ids"][0])[3:] == pytest.approx(expected, abs=1e-9)
    lat_lon = create(
        client, publisher, feature("LL", 10.7798, 106.6990), **{"Content-Crs": "EPSG:4326"}
    )
    assert lat_lon.status_code == 201, lat_lon.text
    assert row(db, lat_lon.json()["ids"][0])[3:] == pytest.approx((106.6990, 10.7798))


def test_a_tile_changes_after_a_write(client, layer, publisher):
    z, lon, lat = 14, 106.6990, 10.7798
    x = int((lon + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
    url = f"/tiles/{LAYER}/{z}/{x}/{y}.pbf"
    before = client.get(url, headers=publisher)
    assert before.status_code in (200, 204), before.text
    assert create(client, publisher, feature("T", lon, lat)).status_code == 201
    after = client.get(url, headers=publisher)
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers.get("etag")
    assert after.content != before.content


def test_owslib_creates_updates_and_deletes(live_server, make_key, db):
    """OWSLib's Part 4 calls, unchanged, against a real server (its DELETE sends no headers:
    the key goes through OWSLib's ``auth_delegate``)."""
    import requests
    from owslib.ogcapi.features import Features
    from owslib.util import Authentication

    key = make_key("publisher", "construction")
    layer_id = f"{LAYER}_owslib"
    headers = {"Authorization": f"Bearer {key}"}
    made = requests.post(
        f"{live_server}/layers", json={**SENSORS, "id": layer_id}, headers=headers, timeout=30
    )
    assert made.status_code == 201, made.text

    class Bearer(requests.auth.AuthBase):
        def __call__(self, request):
            request.headers["Authorization"] = f"Bearer {key}"
            return request

    api = Features(live_server, headers=dict(headers), auth=Authentication(auth_delegate=Bearer()))
    assert api.collection_item_create(layer_id, feature("OWS-1")) is True
    with db.cursor() as cur:
        cur.execute(f"SELECT fid FROM data.{layer_id} WHERE sensor_id = 'OWS-1'")
        (fid,) = cur.fetchone()
    db.rollback()
    assert api.collection_item_update(layer_id, str(fid), feature("OWS-2", depth_cm=99)) is True
    with db.cursor() as cur:
        cur.execute(f"SELECT sensor_id, depth_cm FROM data.{layer_id} WHERE fid = %s", (fid,))
        assert cur.fetchone() == ("OWS-2", 99)
    db.rollback()
    assert api.collection_item_delete(layer_id, str(fid)) is True
    with db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM data.{layer_id}")
        assert cur.fetchone()[0] == 0
    db.rollback()


def test_part4_conformance_is_declared(client):
    classes = client.get("/conformance").json()["conformsTo"]
    part4 = "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/"
    assert {f"{part4}create-replace-delete", f"{part4}update", f"{part4}features"} <= set(classes)
