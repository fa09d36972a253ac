"""Hostile uploads through the real HTTP API with a real publisher key: every file of the corpus
is refused with a 4xx that quotes nothing of the server's files, the live layer is untouched,
and nothing connects to "the network" (a local listener every URL points at)."""

from __future__ import annotations

import pytest

from tests.fixtures import hostile_uploads as hostile
from tests.fixtures import uploads
from tests.http.conftest import RESTRICTED_DEPARTMENT
from tests.http.test_publish import SENSORS, _clean, checksum, put

LAYER = "pt_hostile"  # pt_: cleaned like the other publishing tests' layers


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture(scope="module")
def layer(client, publisher, db_settings):
    _clean(db_settings)
    response = client.post("/layers", json={**SENSORS, "id": LAYER}, headers=publisher)
    assert response.status_code == 201, response.text
    first = put(client, LAYER, uploads.sensors_geojson(), publisher, filename="ok.geojson")
    assert first.status_code == 200, first.text
    yield LAYER
    _clean(db_settings)


@pytest.fixture
def listener():
    net = hostile.Listener()
    yield net
    net.close()


def _state(client, db) -> tuple[str, int, int]:
    doc = client.get(f"/catalog/layers/{LAYER}").json()
    return checksum(db, LAYER), doc["version"], doc["feature_count"]


def _assert_no_leak(text: str) -> None:
    for marker in hostile.PASSWD_MARKERS:
        assert marker not in text, f"{marker!r} leaked: {text[:300]}"
    assert "/tmp/" not in text and "ioc-upload-" not in text, text[:300]


@pytest.mark.parametrize("case", hostile.CORPUS)
def test_hostile_upload_is_refused_and_changes_nothing(
    client, layer, publisher, db, listener, tmp_path, case
):
    entry = hostile.CORPUS[case]
    body = entry.build(tmp_path, listener)
    before = _state(client, db)
    for method in (client.put, client.post):  # replace and append
        response = method(
            f"/layers/{LAYER}/data",
            content=body,
            headers=publisher,
            params={"filename": entry.filename, "crs": "EPSG:4326"},
        )
        assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
        doc = response.json()
        assert doc["description"] and doc["code"], response.text
        _assert_no_leak(response.text)
    assert _state(client, db) == before
    assert listener.connections == [], f"{case} made the server connect to {listener.url}"


def test_shapefile_missing_parts_are_named(client, layer, publisher, tmp_path):
    for part in (".dbf", ".shx"):
        folder = tmp_path / part.strip(".")
        folder.mkdir()
        response = put(
            client, LAYER, hostile.shapefile_without(folder, part), publisher, filename="s.zip"
        )
        assert response.status_code == 400, response.text
        assert f"sensors{part}" in response.json()["description"], response.text


def test_csv_cells_naming_files_are_plain_text(client, layer, publisher, db):
    response = put(client, LAYER, hostile.passwd_cells_csv(), publisher, filename="s.csv")
    assert response.status_code == 200, response.text
    with db.cursor() as cur:
        cur.execute(f"SELECT sensor_id FROM data.{LAYER} ORDER BY sensor_id")
        got = [r[0] for r in cur.fetchall()]
    db.rollback()
    assert got == ["/etc/passwd", "/vsicurl/http://127.0.0.1:9/x", "CSV:/etc/passwd"]
    put(client, LAYER, uploads.sensors_geojson(), publisher, filename="ok.geojson")


@pytest.mark.parametrize("kind", ["gpkg", "kml", "zipped geojson", "kmz", "shapefile"])
def test_genuine_files_of_every_format_still_publish(
    client, layer, publisher, tmp_path, listener, kind
):
    if kind == "gpkg":
        body, name = hostile.sensors_gpkg(tmp_path / "s.gpkg").read_bytes(), "s.gpkg"
    elif kind == "kml":
        body, name = hostile.sensors_kml(), "s.kml"
    elif kind == "zipped geojson":
        body, name = hostile.zipped({"s.geojson": uploads.sensors_geojson()}), "s.zip"
    elif kind == "kmz":
        body, name = hostile.zipped({"doc.kml": hostile.sensors_kml()}), "s.kmz"
    else:
        body, name = uploads.sensors_vn2000_shapefile_zip(tmp_path), "s.zip"
    # KML drivers add their own fields (Name, description, …): ignored on request.
    response = put(client, LAYER, body, publisher, filename=name, ignore_unknown="true")
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(uploads.SENSORS)
    assert listener.connections == []


def test_rejection_report_quotes_only_short_excerpts(client, layer, publisher):
    long_value = "x" * 5000
    body = uploads.sensors_geojson(extra_props={"depth_cm": long_value})
    response = put(client, LAYER, body, publisher, filename="s.geojson")
    assert response.status_code == 422, response.text
    reason = response.json()["report"]["reasons"][0]["reason"]
    assert "depth_cm" in reason and len(reason) < 200, reason


def test_taken_ids_answer_one_sentence_whoever_holds_them(client, make_key, db):
    """A hidden (restricted) layer id, a visible layer id and a bare table name are
    indistinguishable to a publisher who may take none of them."""
    other = "construction" if RESTRICTED_DEPARTMENT != "construction" else "health"
    headers = {"Authorization": f"Bearer {make_key('publisher', other)}"}
    with db.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS data.pt_bare_table (x integer)")
    db.commit()
    try:
        answers = {}
        for taken in ("fx_restricted", "fx_landmarks", "pt_bare_table"):
            manifest = {**SENSORS, "id": taken, "department": other}
            response = client.post("/layers", json=manifest, headers=headers)
            answers[taken] = (response.status_code, response.text.replace(taken, "ID"))
        assert client.get("/catalog/layers/fx_restricted", headers=headers).status_code == 404
        assert len(set(answers.values())) == 1, answers
        status, text = answers["fx_restricted"]
        assert status == 409 and "not available" in text
    finally:
        with db.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS data.pt_bare_table")
        db.commit()
