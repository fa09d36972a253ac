"""A layer from a file (inference), dry runs and previews, over HTTP against the real PostGIS.

The files are made here with ogr2ogr from the city's bus stops (a VN-2000 Shapefile with a
Vietnamese field name) or written as GeoJSON; a dry run is checked to leave the live layer's
rows (checksum) and version as they were.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import psycopg2
import pytest

from ioc.settings import PROJECT_ROOT
from layers.inference import attribute_name, infer_file
from tests.conftest import VENV_BIN, server_env

PREFIX = "pi"
BUS_STOPS = Path("/work/shared/data/hcmc/bus_stops.geojson")


def clean_layers(db_settings, prefix: str = PREFIX) -> None:
    """Drop the layers whose id starts with ``prefix_``: tables and history, registry, audit,
    events."""
    like = prefix + "\\_%"
    conn = psycopg2.connect(db_settings.dsn())
    with conn.cursor() as cur:
        cur.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE tablename LIKE %s"
            " AND schemaname IN ('data', 'versions', 'staging', 'history')",
            (like,),
        )
        for schema, table in cur.fetchall():
            cur.execute(f'DROP TABLE "{schema}"."{table}"')
        for table in ("layers", "audit", "events", "layer_history"):
            column = "id" if table == "layers" else "layer_id"
            cur.execute(f"DELETE FROM ioc.{table} WHERE {column} LIKE %s", (like,))
    conn.commit()
    conn.close()


def bus_stops_shapefile(folder: Path, limit: int = 200, name: str = "tram_xe_buyt") -> Path:
    """A zipped VN-2000 / TM-3 105°45' Shapefile of the first bus stops, with a Vietnamese
    field name ('Tên': a .dbf name is 10 bytes), as a survey office would send it."""
    source = BUS_STOPS if BUS_STOPS.exists() else PROJECT_ROOT / "missing-bus-stops.geojson"
    shp = folder / f"{name}.shp"
    subprocess.run(
        [
            "ogr2ogr", "-f", "ESRI Shapefile", "-t_srs", "EPSG:9210", "-lco", "ENCODING=UTF-8",
            "-dialect", "SQLite", "-sql",
            f'SELECT stop_id, name AS "Tên", district, geometry FROM bus_stops'
            f" ORDER BY stop_id LIMIT {limit}",
            str(shp), str(source),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    archive = folder / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for part in folder.glob(f"{name}.*"):
            if part.suffix != ".zip":
                zf.write(part, part.name)
    return archive


def geojson(features: list[tuple[str, float, float, str | None]]) -> bytes:
    """Points with a code, a level and a survey date (None: empty)."""
    return json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"code": code, "level": level, "surveyed": day},
                    "geometry": {"type": "Point", "coordinates": [lon, lat]},
                }
                for code, lon, lat, day in features
                for level in ["cao" if lon > 106.7 else "thấp"]
            ],
        }
    ).encode()


POINTS = [
    ("A1", 106.70, 10.77, "2024-01-02"),
    ("A2", 106.71, 10.78, "2024-01-03"),
    ("A3", 106.72, 10.79, None),
    ("A4", 106.66, 10.76, "2024-02-01"),
]


@pytest.fixture(scope="module")
def keys(make_key):
    return {
        name: {"Authorization": f"Bearer {make_key(role, dept)}"}
        for name, role, dept in (
            ("planning", "publisher", "planning"),
            ("planning2", "publisher", "planning"),
            ("health", "publisher", "health"),
            ("admin", "admin", None),
        )
    }


@pytest.fixture(scope="module", autouse=True)
def clean(db_settings):
    clean_layers(db_settings)
    yield
    clean_layers(db_settings)


def checksum(db, layer: str) -> tuple[str, int]:
    """The live rows' digest and the layer's version."""
    with db.cursor() as cur:
        cur.execute(
            f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY fid), '')) FROM data.\"{layer}\" t"
        )
        digest = cur.fetchone()[0]
        cur.execute("SELECT version FROM ioc.layers WHERE id = %s", (layer,))
        version = cur.fetchone()[0]
    db.rollback()
    return digest, version


def create(client, body: bytes, headers, **params):
    return client.post("/layers", content=body, headers=headers, params=params)


def test_attribute_names_fold_vietnamese():
    assert attribute_name("Tên trạm") == "ten_tram"
    assert attribute_name("2024 Dân số") == "f_2024_dan_so"
    assert attribute_name("Đường/Phố") == "duong_pho"


def test_inference_reads_a_vn2000_shapefile(tmp_path):
    inference = infer_file(bus_stops_shapefile(tmp_path), "tram_xe_buyt.zip")
    assert inference.source_srid == 9210 and inference.layer_srid == 9210
    assert inference.geometry_type == "Point" and inference.count == 200
    names = {a.name: a for a in inference.attributes}
    assert names["stop_id"].type == "integer" and names["stop_id"].unique
    assert names["ten"].field == "Tên" and names["ten"].type == "text"
    assert inference.id_candidates == ["stop_id"]
    west, south, east, north = inference.extent
    assert 106.3 < west < east < 107.1 and 10.5 < south < north < 11.2
    assert inference.style["radius"] and inference.zoom == {"min": 8, "max": 22}


def test_create_from_a_vn2000_shapefile(client, keys, tmp_path):
    archive = bus_stops_shapefile(tmp_path)
    response = create(
        client,
        archive.read_bytes(),
        keys["planning"],
        filename="tram_xe_buyt.zip",
        title_vi="Trạm xe buýt (thử)",
        title_en="PI bus stops",
        domain="transport",
        access="restricted",
        id_attribute="stop_id",
    )
    assert response.status_code == 201, response.text
    doc = response.json()
    assert doc["id"] == "pi_bus_stops" and doc["report"]["accepted"] == 200
    assert doc["report"]["created"] is True
    layer = client.get("/catalog/layers/pi_bus_stops", headers=keys["planning"]).json()
    assert layer["feature_count"] == 200 and layer["access"] == "restricted"
    # The datum shift was applied: the stop lies where the city's WGS 84 file has it.
    stop = client.get(
        "/collections/pi_bus_stops/items", params={"limit": 1, "sortby": "stop_id"},
        headers=keys["planning"],
    ).json()["features"][0]  # fmt: skip
    original = json.loads(BUS_STOPS.read_text())["features"][0]
    assert stop["properties"]["stop_id"] == original["properties"]["stop_id"] == 1
    assert stop["properties"]["ten"] == original["properties"]["name"]
    lon, lat = stop["geometry"]["coordinates"]
    olon, olat = original["geometry"]["coordinates"]
    assert abs(lon - olon) < 2e-5 and abs(lat - olat) < 2e-5  # ~2 m
    # Restricted: another department's publisher does not see it at all.
    assert client.get("/catalog/layers/pi_bus_stops", headers=keys["health"]).status_code == 404
    audit = client.get("/layers/pi_bus_stops/audit", headers=keys["planning"]).json()["audit"]
    assert [a["action"] for a in audit] == ["layer.replace", "layer.create"]
    assert client.get("/layers/pi_bus_stops/audit", headers=keys["health"]).status_code == 404
    listed = client.get("/layers", headers=keys["planning"]).json()
    mine = {la["id"]: la for la in listed["layers"]}
    assert mine["pi_bus_stops"]["version"] == layer["version"]
    assert mine["pi_bus_stops"]["last_update"]
    assert all(
        la["id"] != "pi_bus_stops"
        for la in client.get("/layers", headers=keys["health"]).json()["layers"]
    )


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"domain": "nowhere"}, 400, "'domain' must be one of"),
        ({"domain": "transport", "id_attribute": "colour"}, 400, "not an attribute of the file"),
        ({"domain": "transport", "time_attribute": "code"}, 400, "must be a date or timestamp"),
        ({"domain": "transport", "id_attribute": "level"}, 422, "features are invalid"),
        ({"domain": "transport", "department": "health"}, 403, "'health' department"),
    ],
)
def test_refusals_are_one_sentence(client, keys, params, status, words):
    response = create(
        client, geojson(POINTS), keys["planning"], filename="p.geojson", title_en="PI refused",
        **params,
    )  # fmt: skip
    assert response.status_code == status, response.text
    assert words in response.json()["description"]
    assert client.get("/catalog/layers/pi_refused", headers=keys["admin"]).status_code == 404


def test_dry_run_never_changes_the_live_layer(client, keys, db):
    created = create(
        client, geojson(POINTS), keys["planning"], filename="points.geojson",
        title_en="PI points", domain="environment", access="public",
        id_attribute="code", time_attribute="surveyed",
    )  # fmt: skip
    assert created.status_code == 201, created.text
    before = checksum(db, "pi_points")
    # A2 moves, A3 is gone, A5 is new; A1 and A4 as they were.
    new = [POINTS[0], ("A2", 106.715, 10.785, "2024-01-03"), POINTS[3], ("A5", 106.6, 10.8, None)]
    response = client.put(
        "/layers/pi_points/data", content=geojson(new), headers=keys["planning"],
        params={"filename": "v2.geojson", "dry_run": "true"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["dry_run"] is True and report["version"] is None
    assert report["changes"] == {"added": 1, "removed": 1, "modified": 1, "unchanged": 2}
    assert report["live_version"] == before[1] and report["source_srid"] == 4326
    assert report["extent"] == [106.6, 10.76, 106.715, 10.8]
    assert checksum(db, "pi_points") == before
    token = report["preview"]["token"]
    items = client.get(f"/layers/previews/{token}/items", headers=keys["planning"]).json()
    assert sorted(f["properties"]["code"] for f in items["features"]) == ["A1", "A2", "A4", "A5"]
    # Only its key (or an admin) sees or publishes it, even in the same department.
    assert client.get(f"/layers/previews/{token}", headers=keys["planning2"]).status_code == 404
    assert client.get(f"/layers/previews/{token}", headers=keys["health"]).status_code == 404
    assert checksum(db, "pi_points") == before
    published = client.post(f"/layers/previews/{token}/publish", headers=keys["planning"])
    assert published.status_code == 200, published.text
    assert published.json()["version"] == before[1] + 1
    codes = client.get("/collections/pi_points/items").json()["features"]
    assert sorted(f["properties"]["code"] for f in codes) == ["A1", "A2", "A4", "A5"]
    again = client.post(f"/layers/previews/{token}/publish", headers=keys["planning"])
    assert again.status_code == 404 and "no preview" in again.json()["description"]


def test_rejected_rows_are_reported_with_row_numbers(client, keys, db):
    before = checksum(db, "pi_points")
    bad = [*POINTS, ("A9", 2.35, 48.85, None)]  # Paris: outside the city
    response = client.post(
        "/layers/pi_points/data", content=geojson(bad), headers=keys["planning"],
        params={"filename": "bad.geojson", "dry_run": "true"},
    )  # fmt: skip
    report = response.json()
    assert report["rejected"] == 1 and report["reasons"][0]["row"] == 5
    assert "outside the city" in report["reasons"][0]["reason"]
    publish = client.post(
        f"/layers/previews/{report['preview']['token']}/publish", headers=keys["planning"]
    )
    assert publish.status_code == 422 and "partial=true" in publish.json()["description"]
    assert checksum(db, "pi_points") == before


def test_a_stale_or_expired_preview_is_refused(client, keys, db):
    def dry(body: bytes) -> str:
        response = client.put(
            "/layers/pi_points/data", content=body, headers=keys["planning"],
            params={"filename": "p.geojson", "dry_run": "true"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()["preview"]["token"]

    stale = dry(geojson(POINTS))
    direct = client.put(
        "/layers/pi_points/data", content=geojson(POINTS[:2]), headers=keys["planning"],
        params={"filename": "p.geojson"},
    )  # fmt: skip
    assert direct.status_code == 200
    refused = client.post(f"/layers/previews/{stale}/publish", headers=keys["planning"])
    assert refused.status_code == 409 and "changed since this preview" in refused.text
    expired = dry(geojson(POINTS))
    with db.cursor() as cur:  # as if its time had passed: the comment says when it expires
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'staging'"
            " AND obj_description(format('staging.%%I', tablename)::regclass, 'pg_class')"
            " LIKE %s",
            ('%"layer": "pi_points"%',),
        )
        for (name,) in cur.fetchall():
            cur.execute(f"SELECT obj_description('staging.\"{name}\"'::regclass, 'pg_class')")
            meta = json.loads(cur.fetchone()[0])
            meta["expires_at"] = "2000-01-01T00:00:00+00:00"
            cur.execute(f'COMMENT ON TABLE staging."{name}" IS %s', (json.dumps(meta),))
    db.commit()
    gone = client.post(f"/layers/previews/{expired}/publish", headers=keys["planning"])
    assert gone.status_code == 404 and "expired" in gone.json()["description"]


def test_new_layer_preview_then_confirm_fields(client, keys, tmp_path):
    archive = bus_stops_shapefile(tmp_path, limit=50, name="stops50")
    dry = create(client, archive.read_bytes(), keys["planning"], filename="stops50.zip",
                 dry_run="true")  # fmt: skip
    assert dry.status_code == 200, dry.text
    doc = dry.json()
    assert doc["inference"]["source_srid"] == 9210 and doc["accepted"] == 50
    assert doc["changes"]["added"] == 50 and doc["manifest"]["geometry"]["srid"] == 9210
    token = doc["preview"]["token"]
    missing = client.post(f"/layers/previews/{token}/publish", headers=keys["planning"], json={})
    assert missing.status_code == 400 and "'domain' must be one of" in missing.text
    done = client.post(
        f"/layers/previews/{token}/publish", headers=keys["planning"],
        json={"title_vi": "Trạm 50", "title_en": "PI stops 50", "domain": "transport",
              "access": "internal", "id_attribute": "stop_id"},
    )  # fmt: skip
    assert done.status_code == 200, done.text
    assert done.json()["layer"] == "pi_stops_50" and done.json()["created"] is True
    layer = client.get("/catalog/layers/pi_stops_50", headers=keys["planning"]).json()
    assert layer["feature_count"] == 50 and layer["id_attribute"] == "stop_id"


def test_the_page_session_writes_only_with_its_header(client, keys):
    signed = client.post("/maps/session", headers=keys["planning"])
    assert signed.status_code == 200
    try:
        url = "/layers/pi_points/data"
        params = {"filename": "p.geojson", "dry_run": "true"}
        bare = client.put(url, content=geojson(POINTS), params=params)
        assert bare.status_code == 401  # anonymous: writes need a key or the page session
        forged = client.put(
            url, content=geojson(POINTS), params=params,
            headers={"X-IOC-Session": "1", "Origin": "http://evil.example"},
        )  # fmt: skip
        assert forged.status_code in (401, 404)
        own = client.put(
            url, content=geojson(POINTS), params=params,
            headers={"X-IOC-Session": "1", "Origin": "http://testserver"},
        )  # fmt: skip
        assert own.status_code == 200, own.text
    finally:
        client.delete("/maps/session")


def test_the_command_line_creates_a_layer_from_a_file(client, keys, db_settings, tmp_path):
    archive = bus_stops_shapefile(tmp_path, limit=20, name="cli20")
    args = [str(VENV_BIN / "ioc"), "layers", "create", str(archive), "--title-vi", "Trạm 20",
            "--title-en", "PI cli stops", "--domain", "transport", "--department", "planning",
            "--id-attribute", "stop_id"]  # fmt: skip
    env = server_env(db_settings)
    dry = subprocess.run([*args, "--dry-run"], env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "EPSG:9210" in dry.stdout and "nothing was created" in dry.stdout
    assert client.get("/catalog/layers/pi_cli_stops", headers=keys["admin"]).status_code == 404
    made = subprocess.run(args, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "Created layer 'pi_cli_stops'" in made.stdout
    client.portal.call(client.app.state.reload_catalog, {"pi_cli_stops"})
    layer = client.get("/catalog/layers/pi_cli_stops", headers=keys["planning"]).json()
    assert layer["feature_count"] == 20 and layer["department"] == "planning"
    again = subprocess.run(args, env=env, capture_output=True, text=True)
    assert again.returncode != 0 and "not available" in again.stderr


REFUSE_SQL = """
CREATE OR REPLACE FUNCTION public.pi_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
DROP TRIGGER IF EXISTS pi_refuse ON ioc.layer_versions;
CREATE TRIGGER pi_refuse BEFORE INSERT ON ioc.layer_versions FOR EACH ROW
WHEN (NEW.layer_id LIKE 'pi\\_doomed%' AND NEW.operation = 'replace')
EXECUTE FUNCTION public.pi_refuse();
"""


@pytest.fixture
def refusing_swap(db):
    """The database refuses the version row of a 'pi_doomed…' layer's first data: a real
    failure in the middle of the swap, after the table was made and filled."""
    with db.cursor() as cur:
        cur.execute(REFUSE_SQL)
    db.commit()
    yield
    with db.cursor() as cur:
        cur.execute("DROP TRIGGER IF EXISTS pi_refuse ON ioc.layer_versions")
        cur.execute("DROP FUNCTION IF EXISTS public.pi_refuse()")
    db.commit()


def nowhere(client, db, layer: str, headers) -> None:
    """The layer exists nowhere: registry, catalog, collections, tables, audit, events."""
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM ioc.layers WHERE id = %s", (layer,))
        assert cur.fetchone()[0] == 0
        cur.execute(
            "SELECT schemaname FROM pg_tables WHERE tablename LIKE %s"
            " AND schemaname IN ('data', 'versions', 'history')",
            (layer + "%",),
        )
        assert cur.fetchall() == []
        for table in ("audit", "events", "layer_versions"):
            cur.execute(f"SELECT count(*) FROM ioc.{table} WHERE layer_id = %s", (layer,))
            assert cur.fetchone()[0] == 0, table
    db.rollback()
    assert client.get(f"/catalog/layers/{layer}", headers=headers).status_code == 404
    assert client.get(f"/collections/{layer}", headers=headers).status_code == 404
    listed = client.get("/collections", headers=headers, params={"limit": 1000}).json()
    assert layer not in {c["id"] for c in listed["collections"]}


def staged(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'")
        count = cur.fetchone()[0]
    db.rollback()
    return count


def test_a_failed_create_leaves_no_layer(client, keys, db, refusing_swap):
    params = {"filename": "d.geojson", "title_en": "PI doomed", "domain": "environment"}
    before = staged(db)
    with pytest.raises(psycopg2.Error, match="refused by the test"):
        create(client, geojson(POINTS), keys["planning"], **params)
    nowhere(client, db, "pi_doomed", keys["admin"])
    assert staged(db) == before  # nor its preview, kept for that call only
    # The id is free: once the database accepts the rows, the same call creates the layer.
    with db.cursor() as cur:
        cur.execute("DROP TRIGGER pi_refuse ON ioc.layer_versions")
    db.commit()
    made = create(client, geojson(POINTS), keys["planning"], **params)
    assert made.status_code == 201, made.text
    assert made.json()["feature_count"] == len(POINTS)


def test_a_failed_preview_publish_keeps_the_preview(client, keys, db, refusing_swap):
    dry = create(client, geojson(POINTS), keys["planning"], filename="d.geojson",
                 dry_run="true")  # fmt: skip
    assert dry.status_code == 200, dry.text
    token = dry.json()["preview"]["token"]
    fields = {"title_en": "PI doomed preview", "domain": "environment", "id_attribute": "code"}
    with pytest.raises(psycopg2.Error, match="refused by the test"):
        client.post(f"/layers/previews/{token}/publish", headers=keys["planning"], json=fields)
    nowhere(client, db, "pi_doomed_preview", keys["admin"])
    kept = client.get(f"/layers/previews/{token}", headers=keys["planning"])
    assert kept.status_code == 200 and kept.json()["accepted"] == len(POINTS)
    with db.cursor() as cur:
        cur.execute("DROP TRIGGER pi_refuse ON ioc.layer_versions")
    db.commit()
    done = client.post(f"/layers/previews/{token}/publish", headers=keys["planning"], json=fields)
    assert done.status_code == 200, done.text
    assert done.json()["created"] is True and done.json()["layer"] == "pi_doomed_preview"
    codes = client.get("/collections/pi_doomed_preview/items", headers=keys["planning"]).json()
    assert sorted(f["properties"]["code"] for f in codes["features"]) == ["A1", "A2", "A3", "A4"]
