"""Digital-address endpoints: look-up, search, reverse, linked features, what is here, batch
geocoding, and their 4xx answers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import pytest

from ioc.addresses.index import build_address_index
from ioc.addresses.registry import AddressSettings
from ioc.catalog.layers import load_catalog, load_catalog_sync

NOTRE_DAME = {"lon": 106.6990, "lat": 10.7798}
GEOJSON = "application/geo+json"


@pytest.fixture(scope="module")
def index(db_settings) -> Any:
    conn = psycopg2.connect(db_settings.dsn())
    try:
        catalog = load_catalog_sync(conn)
        layer = next((la for la in catalog if la.id == "digital_addresses"), None)
        if layer is None or layer.feature_count == 0:
            pytest.skip("the demo city (digital_addresses) is not seeded")
        return build_address_index(conn, catalog, settings=AddressSettings())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def known(db_settings, index) -> dict[str, Any]:
    """Addresses to ask about: one in Bến Thành, one in Sài Gòn, one linked to a report."""
    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn.cursor() as cur:
            found = {}
            for ward in ("26743", "26740"):
                cur.execute(
                    "SELECT code, house_number, street, ST_X(geom), ST_Y(geom) FROM"
                    " ioc.addresses WHERE ward_code = %s AND house_number IS NOT NULL"
                    " ORDER BY code LIMIT 1",
                    (ward,),
                )
                found[ward] = dict(
                    zip(("code", "house", "street", "lon", "lat"), cur.fetchone(), strict=True)
                )
            cur.execute(
                "SELECT code FROM ioc.address_links l WHERE layer_id = 'reports_1022'"
                " AND EXISTS (SELECT 1 FROM ioc.address_links p WHERE p.code = l.code"
                " AND p.layer_id <> 'reports_1022' AND p.layer_id IN (SELECT id FROM"
                " ioc.layers WHERE access = 'public')) ORDER BY code LIMIT 1"
            )
            row = cur.fetchone()
            found["linked"] = row[0] if row else None
    finally:
        conn.close()
    return found


def assert_error(response, status: int, code: str, parameter: str | None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["description"]
    assert body.get("parameter") == parameter


# --- look-up -------------------------------------------------------------------------------


def test_address_by_code(client, known, data_dir):
    a = known["26743"]
    r = client.get(f"/addresses/{a['code']}")
    assert r.status_code == 200 and r.headers["content-type"].startswith(GEOJSON)
    doc = r.json()
    assert doc["type"] == "Feature" and doc["id"] == a["code"]
    assert doc["geometry"]["coordinates"] == pytest.approx([a["lon"], a["lat"]], abs=1e-6)
    props = doc["properties"]
    assert (
        props["address"] == f"{a['house']} {a['street']}, Phường Bến Thành, Thành phố Hồ Chí Minh"
    )
    assert props["ward"]["code"] == "26743" and props["ward_2019"]["code"]
    assert props["address_before_2025"].endswith(", Thành phố Hồ Chí Minh")
    if data_dir is not None:  # the real pre-2025 wards (synthetic ones without IOC_DATA_DIR)
        assert props["address_before_2025"].endswith("Quận 1, Thành phố Hồ Chí Minh")
    hrefs = {link["rel"]: link["href"] for link in doc["links"]}
    assert hrefs["related"].endswith(f"/addresses/{a['code']}/features")
    assert client.get(hrefs["describedby"].replace("http://testserver", "")).status_code == 200


@pytest.mark.parametrize("code", ["12ab", "123", "12345678901", "%20"])
def test_malformed_code_is_400(client, index, code):
    assert_error(client.get(f"/addresses/{code}"), 400, "InvalidParameter", "code")


def test_unknown_code_is_404(client, index):
    assert_error(client.get("/addresses/0000000000"), 404, "AddressNotFound", "code")
    assert_error(client.get("/addresses/0000000000/features"), 404, "AddressNotFound", "code")


# --- search --------------------------------------------------------------------------------


def test_three_spellings_of_tan_dinh(client, index):
    firsts = []
    for q in ("tan dinh", "Tân Định", "Tan Dinh"):
        r = client.get("/addresses", params={"q": q})
        assert r.status_code == 200 and r.headers["content-type"].startswith(GEOJSON)
        features = r.json()["features"]
        assert features, q
        top = features[0]["properties"]
        assert top["ward"]["code"] == "26737" and top["ward"]["full_name"] == "Phường Tân Định"
        firsts.append(features[0]["id"])
    assert len(set(firsts)) == 1


def test_ben_thanh_first(client, index):
    features = client.get("/addresses", params={"q": "ben thanh", "limit": 15}).json()["features"]
    wards = [f["properties"]["ward"]["code"] for f in features]
    assert wards[0] == "26743"
    cut = next((i for i, w in enumerate(wards) if w != "26743"), len(wards))
    assert "26743" not in wards[cut:]
    scores = [f["properties"]["score"] for f in features]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1


def test_search_near_and_bbox(client, known):
    a = known["26743"]
    r = client.get("/addresses", params={"q": "Bến Thành", "near": f"{a['lon']},{a['lat']}"})
    assert r.json()["features"][0]["id"] == a["code"]
    bbox = f"{a['lon'] - 0.003},{a['lat'] - 0.003},{a['lon'] + 0.003},{a['lat'] + 0.003}"
    for f in client.get("/addresses", params={"q": "ben thanh", "bbox": bbox}).json()["features"]:
        lon, lat = f["geometry"]["coordinates"]
        assert abs(lon - a["lon"]) <= 0.003 and abs(lat - a["lat"]) <= 0.003


@pytest.mark.parametrize(
    "params,parameter",
    [
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({}, "q"),
        ({"q": "x" * 301}, "q"),
        ({"q": "ben thanh", "near": "abc"}, "near"),
        ({"q": "ben thanh", "near": "200,10"}, "near"),
        ({"q": "ben thanh", "bbox": "1,2,3"}, "bbox"),
        ({"q": "ben thanh", "limit": 0}, "limit"),
    ],
)
def test_bad_search_parameters_are_400(client, index, params, parameter):
    assert_error(client.get("/addresses", params=params), 400, "InvalidParameter", parameter)


# --- reverse -------------------------------------------------------------------------------


def test_reverse(client, known):
    a = known["26740"]
    r = client.get("/addresses/reverse", params={"lon": a["lon"] + 0.00002, "lat": a["lat"]})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == a["code"] and doc["properties"]["distance_m"] < 3
    assert doc["properties"]["ward_at_position"]["ward_code"] == "26740"


@pytest.mark.parametrize(
    "params,code,parameter",
    [
        ({"lon": 105.85, "lat": 21.03}, "OutsideCity", "lon,lat"),  # Hà Nội
        ({"lon": 107.4, "lat": 9.3}, "OutsideCity", "lon,lat"),  # the sea, inside the bbox
        ({"lon": 106.7, "lat": 100}, "InvalidParameter", "lat"),
        ({"lon": 106.7}, "InvalidParameter", "lat"),
    ],
)
def test_reverse_outside_the_city(client, index, params, code, parameter):
    assert_error(client.get("/addresses/reverse", params=params), 400, code, parameter)


# --- what is here --------------------------------------------------------------------------


def test_whats_here_at_notre_dame(client, index, data_dir):
    if data_dir is None:
        pytest.skip("needs the real ward polygons (IOC_DATA_DIR)")
    r = client.get("/whats-here", params=NOTRE_DAME)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["ward"]["properties"]["ward_code"] == "26740"
    assert doc["ward"]["properties"]["name"] == "Sài Gòn"
    assert {"hospital", "school", "pumping_station", "bus_stop"} <= set(doc["nearest"])
    assert doc["address"]["properties"]["ward"]["code"] == "26740"


def test_whats_here_respects_access(client, make_key, index):
    anonymous = client.get("/whats-here", params=NOTRE_DAME).json()
    key = make_key("operator")
    operator = client.get(
        "/whats-here", params=NOTRE_DAME, headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert "reports" not in anonymous and "reports_1022" not in anonymous["layers"]
    assert "ward_2019" not in anonymous  # wards_2019 is internal too
    assert "reports_1022" in operator["layers"] and "recent" in operator["reports"]
    assert set(anonymous["layers"]) < set(operator["layers"])


def test_whats_here_by_address_and_errors(client, known):
    a = known["26743"]
    doc = client.get("/whats-here", params={"address": a["code"]}).json()
    assert doc["address"]["id"] == a["code"] and doc["ward"]["properties"]["ward_code"] == "26743"
    assert_error(client.get("/whats-here"), 400, "InvalidParameter", "lon,lat")
    assert_error(
        client.get("/whats-here", params={"address": "bad"}), 400, "InvalidParameter", "address"
    )
    assert_error(
        client.get("/whats-here", params={"address": "0000000000"}), 404, "AddressNotFound", "code"
    )
    assert_error(
        client.get("/whats-here", params={"lon": 105.85, "lat": 21.03}),
        400,
        "OutsideCity",
        "lon,lat",
    )


# --- linked features -----------------------------------------------------------------------


def test_linked_features_follow_access(client, make_key, known):
    code = known["linked"]
    if code is None:
        pytest.skip("no address is linked to both a report and a public feature")
    anonymous = client.get(f"/addresses/{code}/features").json()
    admin = client.get(
        f"/addresses/{code}/features", headers={"Authorization": f"Bearer {make_key('admin')}"}
    ).json()
    anon_layers = {f["properties"]["layer"] for f in anonymous["features"]}
    admin_layers = {f["properties"]["layer"] for f in admin["features"]}
    assert "reports_1022" in admin_layers and "reports_1022" not in anon_layers
    assert anon_layers and anon_layers < admin_layers
    for f in admin["features"]:
        assert f["properties"]["distance_m"] <= AddressSettings().link_distance_m
        assert f["links"][0]["href"].endswith(
            f"/collections/{f['properties']['layer']}/items/{f['id'].split('.')[-1]}"
        )


# --- batch geocoding -----------------------------------------------------------------------


def upload(client, text: str, **params: str):
    return client.post(
        "/addresses/geocode",
        params=params,
        files={"file": ("addresses.csv", text.encode("utf-8"), "text/csv")},
    )


def test_batch_geocode_round_trip(client, known):
    a, b = known["26743"], known["26740"]
    text = (
        "id,address\n"
        f'A1,"{a["house"]} {a["street"]}, Phường Bến Thành"\n'
        f'B2,"{b["house"]} {b["street"]}, Sài Gòn, TP.HCM"\n'
        "C3,không tìm thấy xyz\n"
    )
    r = upload(client, text)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == ["A1", "B2", "C3"]
    assert rows[0]["ward_code"] == "26743" and float(rows[0]["score"]) == 1.0
    assert rows[1]["ward_code"] == "26740" and rows[1]["match_level"] == "address"
    assert rows[2]["code"] == "" and rows[2]["match_level"] == "none"
    # the returned code leads back to the same address
    detail = client.get(f"/addresses/{rows[0]['code']}").json()["properties"]
    assert (detail["house_number"], detail["street"]) == (a["house"], a["street"])
    # JSON, and a raw text/csv body instead of a multipart upload
    doc = client.post(
        "/addresses/geocode?f=json", content=text.encode(), headers={"Content-Type": "text/csv"}
    ).json()
    assert doc["numberOfRows"] == 3 and doc["rows"][0]["code"] == rows[0]["code"]
    assert isinstance(doc["rows"][0]["lon"], float)


def test_batch_geocode_limits_and_errors(client, index):
    settings = client.app.state.settings
    saved = getattr(settings, "addresses", None)
    settings.addresses = AddressSettings(geocode_max_rows=3)
    try:
        r = upload(client, "address\n" + "Bến Thành\n" * 4)
        assert r.status_code in (400, 413) and r.json()["code"] == "TooManyRows"
        assert r.json()["parameter"] == "file"
        assert upload(client, "address\n" + "Bến Thành\n" * 3).status_code == 200
        huge = upload(client, "address\n" + "x" * 4000 + "\n")  # 3 rows allow 3 kB
        assert huge.status_code in (400, 413) and huge.json()["code"] == "TooManyRows"
    finally:
        settings.addresses = saved
    assert_error(upload(client, "id,street\n1,Lê Lợi\n"), 400, "InvalidParameter", "file")
    assert_error(upload(client, "address\n"), 400, "InvalidParameter", "file")
    bad = client.post(
        "/addresses/geocode", files={"file": ("x.csv", b"address\n\xff\xfe", "text/csv")}
    )
    assert_error(bad, 400, "InvalidParameter", "file")


def test_items_filtered_by_address_code(client, db):
    """`/collections/{id}/items?address=CODE` keeps exactly the features linked to that code."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT l.layer_id, l.code FROM ioc.address_links l JOIN ioc.layers y"
            " ON y.id = l.layer_id WHERE y.access = 'public' AND y.id_column = 'fid'"
            " GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 1"
        )
        layer_id, code = cur.fetchone()
        cur.execute(
            "SELECT array_agg(fid ORDER BY fid) FROM ioc.address_links"
            " WHERE layer_id = %s AND code = %s",
            (layer_id, code),
        )
        expected = cur.fetchone()[0]
    db.rollback()
    doc = client.get(
        f"/collections/{layer_id}/items", params={"address": code, "limit": 10000}
    ).json()
    assert sorted(f["id"] for f in doc["features"]) == expected
    response = client.get(f"/collections/{layer_id}/items", params={"address": "12"})
    assert response.status_code == 400 and response.json()["parameter"] == "address"


def test_multipart_without_a_file_part_is_400(client, index):
    """A form with other fields but no `file` part: 400 naming the part (was a 500, "Stream
    consumed")."""
    response = client.post(
        "/addresses/geocode",
        data={"address": "Bến Thành"},
        files={"other": ("a.csv", b"address\nx\n", "text/csv")},
    )
    assert_error(response, 400, "InvalidParameter", "file")
    assert "'file'" in response.json()["description"]
    fields_only = client.post(
        "/addresses/geocode",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        content=b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n',
    )
    assert_error(fields_only, 400, "InvalidParameter", "file")


# --- read checks on the layers an answer is made from ---------------------------------------


@contextmanager
def layer_access(client, db, layer_id: str, access: str) -> Iterator[None]:
    """The layer at another access level in this test database's registry, the app's catalog
    reloaded; restored (and reloaded) whatever happens."""
    with db.cursor() as cur:
        cur.execute("SELECT access FROM ioc.layers WHERE id = %s", (layer_id,))
        before = cur.fetchone()[0]
        cur.execute("UPDATE ioc.layers SET access = %s WHERE id = %s", (access, layer_id))
    db.commit()
    state = client.app.state
    try:
        state.catalog = client.portal.call(load_catalog, state.pool)
        yield
    finally:
        with db.cursor() as cur:
            cur.execute("UPDATE ioc.layers SET access = %s WHERE id = %s", (before, layer_id))
        db.commit()
        state.catalog = client.portal.call(load_catalog, state.pool)


def test_items_by_address_need_the_address_layer(client, db, make_key, index):
    """`?address=` reads the address links, the address layer's data: a caller who may not
    read that layer gets the same 404 as the address endpoints, not the linked features."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT l.layer_id, l.code FROM ioc.address_links l JOIN ioc.layers y"
            " ON y.id = l.layer_id WHERE y.access = 'public' ORDER BY 1, 2 LIMIT 1"
        )
        layer_id, code = cur.fetchone()
    db.rollback()
    url, params = f"/collections/{layer_id}/items", {"address": code}
    assert client.get(url, params=params).json()["numberReturned"] > 0
    operator = {"Authorization": f"Bearer {make_key('operator')}"}
    with layer_access(client, db, AddressSettings().layer_id, "internal"):
        hidden = client.get(url, params=params)
        assert_error(hidden, 404, "LayerNotFound", None)
        assert code not in hidden.text
        assert client.get(url, params={"limit": 1}).status_code == 200  # the layer itself: public
        assert client.get(url, params=params, headers=operator).json()["numberReturned"] > 0
    assert client.get(url, params=params).json()["numberReturned"] > 0


def test_reverse_gives_the_ward_only_to_who_may_read_the_ward_layer(client, db, make_key, known):
    a = known["26740"]
    params = {"lon": a["lon"] + 0.00002, "lat": a["lat"]}
    operator = {"Authorization": f"Bearer {make_key('operator')}"}
    with layer_access(client, db, "wards", "internal"):
        anonymous = client.get("/addresses/reverse", params=params)
        assert anonymous.status_code == 200, anonymous.text
        assert anonymous.json()["id"] == a["code"]
        assert anonymous.json()["properties"]["ward_at_position"] is None
        keyed = client.get("/addresses/reverse", params=params, headers=operator).json()
        assert keyed["properties"]["ward_at_position"]["ward_code"] == "26740"
    restored = client.get("/addresses/reverse", params=params).json()
    assert restored["properties"]["ward_at_position"]["ward_code"] == "26740"
