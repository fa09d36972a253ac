"""Departments publish layers over HTTP: formats, VN-2000, validation reports, versions,
restore, audit, access, and a corpus of bad uploads that never touch the live layer."""

from __future__ import annotations

import psycopg2
import pytest

from ioc.features.crs import transformer
from tests.fixtures import uploads

SENSORS = {
    "id": "pt_sensors",
    "title": {"vi": "Cảm biến ngập (thử)", "en": "Flood sensors (test)"},
    "description": {"vi": "Lớp thử nghiệm", "en": "Test layer"},
    "domain": "flooding",
    "department": "construction",
    "geometry": {"type": "Point", "srid": 4326},
    "access": "public",
    "cadence": "realtime",
    "source": {"name": "pytest", "licence": "CC0"},
    "id_attribute": "sensor_id",
    "zoom": {"min": 10, "max": 22},
    "attributes": [
        {"name": "sensor_id", "type": "text", "label": {"vi": "Mã", "en": "Id"}, "required": True},
        {
            "name": "depth_cm",
            "type": "integer",
            "label": {"vi": "Độ sâu", "en": "Depth"},
            "unit": "cm",
        },
        {"name": "installed", "type": "date", "label": {"vi": "Lắp đặt", "en": "Installed"}},
    ],
    "style": {
        "color": "#1f78b4",
        "legend": [{"label": {"vi": "Cảm biến", "en": "Sensor"}, "color": "#1f78b4"}],
    },
    "demo": {"count": 1, "weight": "uniform"},
}
ZONES = {
    **SENSORS,
    "id": "pt_zones",
    "geometry": {"type": "MultiPolygon", "srid": 4326},
    "id_attribute": "zone_code",
    "attributes": [
        {
            "name": "zone_code",
            "type": "text",
            "label": {"vi": "Mã", "en": "Code"},
            "required": True,
        },
        {"name": "risk", "type": "text", "label": {"vi": "Mức", "en": "Risk"}},
    ],
}


def _clean(db_settings, prefix: str = "pt") -> None:
    """Drop the test layers whose id starts with ``prefix_`` (tables with their history,
    registry, audit, events)."""
    like = prefix + "\\_%"
    conn = psycopg2.connect(db_settings.dsn())
    with conn.cursor() as cur:
        cur.execute(
            "SELECT tablename, schemaname FROM pg_tables WHERE tablename LIKE %s"
            " AND schemaname IN ('data', 'versions', 'staging', 'history')",
            (like,),
        )
        for table, schema in cur.fetchall():
            cur.execute(f'DROP TABLE "{schema}"."{table}"')
        cur.execute("DELETE FROM ioc.layers WHERE id LIKE %s", (like,))
        cur.execute("DELETE FROM ioc.layer_history WHERE layer_id LIKE %s", (like,))
        cur.execute("DELETE FROM ioc.audit WHERE layer_id LIKE %s", (like,))
        cur.execute("DELETE FROM ioc.events WHERE layer_id LIKE %s", (like,))
    conn.commit()
    conn.close()


@pytest.fixture(scope="module")
def keys(make_key):
    return {
        role: {"Authorization": f"Bearer {make_key(role, dept)}"}
        for role, dept in (
            ("publisher", "construction"),
            ("admin", None),
            ("analyst", None),
            ("operator", None),
        )
    } | {"other": {"Authorization": f"Bearer {make_key('publisher', 'health')}"}}


@pytest.fixture(scope="module")
def layers(client, keys, db_settings):
    _clean(db_settings)
    for manifest in (SENSORS, ZONES):
        response = client.post("/layers", json=manifest, headers=keys["publisher"])
        assert response.status_code == 201, response.text
    yield
    _clean(db_settings)


def checksum(db, layer: str) -> str:
    with db.cursor() as cur:
        cur.execute(
            f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY fid), '')) FROM data.\"{layer}\" t"
        )
        value = cur.fetchone()[0]
    db.rollback()
    return value


def put(client, layer, body, headers, **params):
    return client.put(f"/layers/{layer}/data", content=body, headers=headers, params=params)


def test_publish_geojson_then_append_and_versions(client, layers, keys, db):
    first = put(
        client,
        "pt_sensors",
        uploads.sensors_geojson(),
        keys["publisher"],
        filename="sensors.geojson",
    )
    assert first.status_code == 200, first.text
    report = first.json()
    assert report["accepted"] == 4 and report["rejected"] == 0 and report["source_srid"] == 4326
    items = client.get("/catalog/layers/pt_sensors").json()
    assert items["feature_count"] == 4 and items["version"] == report["version"]

    extra = uploads.sensors_geojson([("S-010", 106.70, 10.78, 3)])
    appended = client.post(
        "/layers/pt_sensors/data",
        content=extra,
        headers=keys["publisher"],
        params={"filename": "more.geojson"},
    )
    assert appended.status_code == 200 and appended.json()["feature_count"] == 5
    versions = client.get("/layers/pt_sensors/versions", headers=keys["publisher"]).json()
    ops = [v["operation"] for v in versions["versions"]]
    assert ops[:2] == ["append", "replace"]
    with db.cursor() as cur:
        cur.execute(
            "SELECT action, principal, counts->>'accepted', checksum FROM ioc.audit"
            " WHERE layer_id = 'pt_sensors' ORDER BY id"
        )
        audit = cur.fetchall()
    assert [a[0] for a in audit] == ["layer.create", "layer.replace", "layer.append"]
    assert audit[1][1] == "publisher:construction" and audit[1][2] == "4" and len(audit[1][3]) == 64


def test_restore_earlier_version(client, layers, keys, db):
    put(client, "pt_sensors", uploads.sensors_geojson(), keys["publisher"], filename="a.geojson")
    before = checksum(db, "pt_sensors")
    version = client.get("/catalog/layers/pt_sensors").json()["version"]
    smaller = uploads.sensors_geojson(uploads.SENSORS[:1])
    assert (
        put(client, "pt_sensors", smaller, keys["publisher"], filename="b.geojson").json()[
            "feature_count"
        ]
        == 1
    )
    restored = client.post(
        f"/layers/pt_sensors/versions/{version}/restore", headers=keys["publisher"]
    )
    assert restored.status_code == 200 and restored.json()["feature_count"] == 4
    assert checksum(db, "pt_sensors") == before
    assert (
        client.post(
            "/layers/pt_sensors/versions/9999/restore", headers=keys["publisher"]
        ).status_code
        == 404
    )


def test_vn2000_shapefile_without_towgs84_lands_within_a_metre(client, layers, keys, db, tmp_path):
    body = uploads.sensors_vn2000_shapefile_zip(tmp_path)
    response = put(client, "pt_sensors", body, keys["publisher"], filename="sensors.zip")
    assert response.status_code == 200, response.text
    assert response.json()["source_srid"] == 9210
    with db.cursor() as cur:
        cur.execute(
            "SELECT sensor_id, ST_X(geom), ST_Y(geom) FROM data.pt_sensors ORDER BY sensor_id"
        )
        got = {row[0]: row[1:] for row in cur.fetchall()}
        for sid, lon, lat, _ in uploads.SENSORS:
            cur.execute(
                "SELECT ST_Distance(ST_MakePoint(%s, %s)::geography,"
                " ST_MakePoint(%s, %s)::geography)",
                (lon, lat, *got[sid]),
            )
            assert cur.fetchone()[0] < 1.0, sid
    db.rollback()


def test_csv_with_vn2000_xy_columns(client, layers, keys):
    to_vn = transformer(4326, 9210)
    lines = ["sensor_id,depth_cm,X,Y"]
    for sid, lon, lat, depth in uploads.SENSORS:
        easting, northing = to_vn.transform(lon, lat)
        lines.append(f"{sid},{depth},{northing:.3f},{easting:.3f}")  # X = northing (VN survey)
    body = "\n".join(lines).encode()
    assert put(client, "pt_sensors", body, keys["publisher"], filename="s.csv").status_code == 400
    ok = put(client, "pt_sensors", body, keys["publisher"], filename="s.csv", crs="EPSG:9210")
    assert ok.status_code == 200 and ok.json()["accepted"] == 4


def test_bowtie_rejected_by_default_repaired_on_request(client, layers, keys, db):
    body = uploads.zones_geojson([uploads.SQUARE, uploads.BOWTIE])
    rejected = put(client, "pt_zones", body, keys["publisher"], filename="z.geojson")
    assert rejected.status_code == 422
    assert "invalid geometry" in rejected.json()["report"]["reasons"][0]["reason"]
    repaired = put(
        client, "pt_zones", body, keys["publisher"], filename="z.geojson", invalid="repair"
    )
    assert repaired.status_code == 200 and repaired.json()["repaired"] == 1
    with db.cursor() as cur:
        cur.execute("SELECT bool_and(ST_IsValid(geom)), count(*) FROM data.pt_zones")
        assert cur.fetchone() == (True, 2)
    db.rollback()


BAD_UPLOADS = {
    "truncated json": (lambda tmp: uploads.sensors_geojson()[:-40], "x.geojson", 400),
    "wrong crs": (lambda tmp: uploads.sensors_geojson(crs_member="EPSG:3857"), "x.geojson", 422),
    "lat/lon swapped": (lambda tmp: uploads.sensors_geojson(swap=True), "x.geojson", 422),
    "unknown fields": (
        lambda tmp: uploads.sensors_geojson(extra_props={"colour": "red"}),
        "x.geojson",
        422,
    ),
    "empty file": (lambda tmp: b"", "x.geojson", 400),
    "zip escaping the archive": (lambda tmp: uploads.zip_with_escape(), "x.zip", 400),
    "zip bomb": (lambda tmp: uploads.zip_bomb(), "x.zip", 413),
    "not a geo file": (lambda tmp: b"hello", "x.txt", 400),
    "bad attribute type": (
        lambda tmp: uploads.sensors_geojson(extra_props={"depth_cm": "deep"}),
        "x.geojson",
        422,
    ),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_bad_uploads_get_a_clear_4xx_and_leave_the_layer_alone(
    client, layers, keys, db, tmp_path, case
):
    put(client, "pt_sensors", uploads.sensors_geojson(), keys["publisher"], filename="ok.geojson")
    before = checksum(db, "pt_sensors")
    version = client.get("/catalog/layers/pt_sensors").json()["version"]
    make, filename, status = BAD_UPLOADS[case]
    response = put(client, "pt_sensors", make(tmp_path), keys["publisher"], filename=filename)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["description"] and body["code"]
    if case == "lat/lon swapped":
        assert "swapped" in body["report"]["reasons"][0]["reason"]
    assert checksum(db, "pt_sensors") == before
    assert client.get("/catalog/layers/pt_sensors").json()["version"] == version


def test_only_the_owning_department_or_admin_may_publish(client, layers, keys):
    body = uploads.sensors_geojson()
    assert put(client, "pt_sensors", body, {}, filename="x.geojson").status_code == 401
    for who in ("other", "analyst", "operator"):
        assert (
            put(client, "pt_sensors", body, keys[who], filename="x.geojson").status_code == 403
        ), who
        assert (
            client.post("/layers/pt_sensors/versions/1/restore", headers=keys[who]).status_code
            == 403
        )
    assert put(client, "pt_sensors", body, keys["admin"], filename="x.geojson").status_code == 200
    other_dept = {**SENSORS, "id": "pt_other", "department": "health"}
    assert client.post("/layers", json=other_dept, headers=keys["publisher"]).status_code == 403
    assert (
        client.post(
            "/layers", json={**SENSORS, "id": "Bad Id"}, headers=keys["publisher"]
        ).status_code
        == 400
    )
    assert client.post("/layers", json=SENSORS, headers=keys["publisher"]).status_code == 409


def test_restricted_layer_invisible_to_other_department_publishers(client, keys):
    restricted = next((la for la in client.app.state.catalog if la.access == "restricted"), None)
    if restricted is None:
        pytest.skip("no restricted layer")
    body = uploads.sensors_geojson()
    response = put(
        client,
        restricted.id,
        body,
        keys["other"] if restricted.department != "health" else keys["publisher"],
        filename="x.geojson",
    )
    assert response.status_code == 404


def test_soft_delete_hides_the_layer(client, layers, keys):
    doc = {**SENSORS, "id": "pt_temporary"}
    assert client.post("/layers", json=doc, headers=keys["publisher"]).status_code == 201
    assert client.delete("/layers/pt_temporary", headers=keys["other"]).status_code == 403
    assert client.delete("/layers/pt_temporary", headers=keys["publisher"]).status_code == 204
    assert client.get("/catalog/layers/pt_temporary").status_code == 404
