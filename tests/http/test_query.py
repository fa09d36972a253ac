"""POST /query, query jobs and saved queries over HTTP: every field of the document refuses
injection with 400, unreadable layers are 404 like unknown ones, formats are readable by real
clients (GeoPackage through GDAL), jobs belong to their owner, saved queries become layers."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pyogrio
import pytest

from tests.http.conftest import RESTRICTED_DEPARTMENT
from tests.polling import wait_until

BASE = {
    "source": "schools",
    "spatial": [{"op": "dwithin", "distance": 500, "layer": "flood_points"}],
    "properties": ["name"],
    "limit": 5,
}
GROUPED = {
    "source": "flood_points",
    "group_by": [{"ward": "current"}],
    "aggregates": [{"op": "count"}, {"op": "avg", "attribute": "depth_cm"}],
    "order_by": [{"key": "count", "desc": True}],
    "limit": 5,
}
SQLI = "x'); DROP TABLE data.schools; --"


@pytest.fixture(scope="module")
def analyst(make_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('analyst')}"}


@pytest.fixture(scope="module")
def other_analyst(make_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('analyst')}"}


def _with(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the document with ``value`` at a dotted path (list indexes as numbers)."""
    doc = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


# (document, path, malicious value): every field a caller can write.
INJECTIONS = [
    (BASE, "source", "schools; DROP TABLE data.schools"),
    (BASE, "source", 'schools" --'),
    (BASE, "filter", "name = 'a'; DROP TABLE data.schools; --"),
    (BASE, "filter", "name = '' OR 1=1 --'"),
    (BASE, "filter", {"op": "=", "args": [{"property": 'name" = name; --'}, "x"]}),
    (BASE, "filter", {"op": "; DROP TABLE x", "args": [{"property": "name"}, "x"]}),
    (BASE, "filter_lang", "sql"),
    (BASE, "properties", ['name" FROM data.schools; --']),
    (BASE, "properties", "name; DROP"),
    (BASE, "limit", "5; DROP TABLE data.schools"),
    (BASE, "limit", -1),
    (BASE, "limit", 10**12),
    (BASE, "limit", True),
    (BASE, "offset", "0; DROP TABLE data.schools"),
    (BASE, "format", "geojson; DROP TABLE data.schools"),
    (BASE, "format", "shapefile"),
    (BASE, "geometry", "true; DROP"),
    (BASE, "simplify", "0.001); DROP TABLE data.schools; --"),
    (BASE, "from", "2025-01-01'; DROP TABLE data.schools; --"),
    (BASE, "to", "now()"),
    (BASE, "spatial.0.op", "dwithin; DROP TABLE data.schools"),
    (BASE, "spatial.0.layer", "flood_points; DROP TABLE data.schools"),
    (BASE, "spatial.0.distance", "500); DROP TABLE data.schools; --"),
    (BASE, "spatial.0.distance", -5),
    (BASE, "spatial.0.distance", 1e12),
    (BASE, "spatial.0.filter", "depth_cm > 1); DROP TABLE data.schools; --"),
    (BASE, "spatial.0.filter", '"depth_cm; DROP" > 1'),
    (BASE, "spatial.0", {"op": "nearest", "k": "3; DROP TABLE data.schools", "layer": "hospitals"}),
    (BASE, "spatial.0", {"op": "nearest", "k": 0, "layer": "hospitals"}),
    (BASE, "spatial.0", {"op": "intersects", "address": SQLI}),
    (BASE, "spatial.0", {"op": "intersects", "address": "1' OR '1'='1"}),
    (BASE, "spatial.0", {"op": "intersects", "ward": "26734' OR 1=1 --"}),
    (BASE, "spatial.0", {"op": "intersects", "ward": "26734", "ward_edition": "2019'; --"}),
    (
        BASE,
        "spatial.0",
        {
            "op": "intersects",
            "geometry": {"type": "Point; DROP TABLE x", "coordinates": [106.7, 10.8]},
        },
    ),
    (
        BASE,
        "spatial.0",
        {
            "op": "intersects",
            "geometry": {
                "type": "Point",
                "coordinates": ["106.7); DROP TABLE data.schools; --", 10.8],
            },
        },
    ),
    (
        BASE,
        "spatial.0",
        {"op": "intersects", "geometry": {"type": "Point", "coordinates": [1000, 10.8]}},
    ),
    (
        BASE,
        "spatial.0",
        {
            "op": "intersects",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[106, 10], [107, 11], [106, 11], [107, 10], [106, 10]]],
            },
        },
    ),  # self-intersecting
    (BASE, "spatial.0", {"op": "intersects", "layer": "flood_points", "sql": "DROP TABLE x"}),
    (GROUPED, "group_by.0", {"ward": "current'); DROP TABLE data.schools; --"}),
    (GROUPED, "group_by.0", {"district": "2019 OR 1=1"}),
    (GROUPED, "group_by.0", {"time": "month'); DROP TABLE data.schools; --"}),
    (GROUPED, "group_by.0", {"attribute": 'cause"); DROP TABLE data.schools; --'}),
    (GROUPED, "group_by.0", {"expression": "1; DROP TABLE data.schools"}),
    (GROUPED, "aggregates.0.op", "count(*)); DROP TABLE data.schools; --"),
    (GROUPED, "aggregates.1.attribute", "depth_cm); DROP TABLE data.schools; --"),
    (GROUPED, "aggregates.1.attribute", "street"),  # a text attribute cannot be averaged
    (GROUPED, "aggregates.0", {"op": "count", "as": 'n"; DROP TABLE data.schools; --'}),
    (GROUPED, "order_by.0.key", "count; DROP TABLE data.schools"),
    (GROUPED, "order_by.0.desc", "DESC; DROP TABLE data.schools"),
    (GROUPED, "order_by.0", {"key": "count", "desc": True, "nulls": "; DROP"}),
]


@pytest.mark.parametrize(
    ("document", "path", "value"), INJECTIONS, ids=[f"{p}={str(v)[:30]}" for _, p, v in INJECTIONS]
)
def test_injection_in_every_field_is_400(client, analyst, document, path, value):
    response = client.post("/query", json=_with(document, path, value), headers=analyst)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] in ("InvalidParameter",) and body["description"]


def test_documents_used_for_injection_are_valid(client, analyst, db):
    """The templates themselves succeed, so each 400 above is due to the injected field; and
    the tables the injections name are intact."""
    for document in (BASE, GROUPED):
        response = client.post("/query", json=document, headers=analyst)
        assert response.status_code == 200, response.text
        assert response.json()["features"]
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM data.schools")
        assert cur.fetchone()[0] > 0


def test_malformed_json_body_is_400(client, analyst):
    response = client.post(
        "/query",
        content=b"{'source': schools",
        headers={**analyst, "Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_unreadable_layers_answer_exactly_like_unknown_ones(client):
    for field, document in (
        ("source", {"source": "{}"}),
        (
            "spatial.0.layer",
            {"source": "schools", "spatial": [{"op": "intersects", "layer": "{}"}]},
        ),
    ):
        hidden = client.post(
            "/query", json=json.loads(json.dumps(document).replace("{}", "reports_1022"))
        )
        unknown = client.post(
            "/query", json=json.loads(json.dumps(document).replace("{}", "no_such_layer"))
        )
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["parameter"] == unknown.json()["parameter"] == field
        assert hidden.json()["description"].replace("reports_1022", "X") == unknown.json()[
            "description"
        ].replace("no_such_layer", "X")


def test_internal_layer_for_an_analyst(client, analyst):
    response = client.post("/query", json={"source": "reports_1022", "limit": 2}, headers=analyst)
    assert response.status_code == 200
    assert len(response.json()["features"]) == 2


def test_anonymous_callers_get_tight_limits(client):
    response = client.post("/query", json={"source": "digital_addresses", "geometry": False})
    doc = response.json()
    assert response.status_code == 200
    assert doc["truncated"] is True and doc["numberReturned"] == doc["limit"] == 1000
    too_many = client.post("/query", json={"source": "digital_addresses", "limit": 5000})
    assert too_many.status_code == 400 and too_many.json()["parameter"] == "limit"


def test_geojson_features_and_group_geometries(client, analyst):
    features = client.post("/query", json=BASE, headers=analyst).json()["features"]
    for feature in features:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Point"
        assert set(feature["properties"]) == {"name"}
    groups = client.post("/query", json={**GROUPED, "simplify": 0.001}, headers=analyst).json()
    assert [c["name"] for c in groups["columns"]] == [
        "ward_code",
        "ward_name",
        "count",
        "avg_depth_cm",
    ]
    first = groups["features"][0]
    assert (
        first["geometry"]["type"] == "MultiPolygon"
        and first["id"] == first["properties"]["ward_code"]
    )
    counts = [f["properties"]["count"] for f in groups["features"]]
    assert counts == sorted(counts, reverse=True)


def test_csv_answer(client, analyst):
    response = client.post("/query", json={**BASE, "format": "csv"}, headers=analyst)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    lines = response.text.strip().split("\r\n")
    assert lines[0] == "id,name,geometry"
    assert len(lines) == 6 and lines[1].endswith(')"') and "POINT(" in lines[1]


def test_geopackage_answer_is_read_by_gdal(client, analyst, tmp_path):
    response = client.post(
        "/query", json={**GROUPED, "format": "gpkg", "limit": 50}, headers=analyst
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geopackage+sqlite3"
    path = tmp_path / "answer.gpkg"
    path.write_bytes(response.content)
    frame = pyogrio.read_dataframe(path)
    assert len(frame) == 50 and frame.crs.to_epsg() == 4326
    assert {"ward_code", "count", "avg_depth_cm"} <= set(frame.columns)
    assert frame.geometry.geom_type.eq("MultiPolygon").all()
    json_rows = client.post("/query", json={**GROUPED, "limit": 50}, headers=analyst).json()[
        "features"
    ]
    assert list(frame["ward_code"]) == [f["properties"]["ward_code"] for f in json_rows]


def test_openapi_documents_the_query_with_examples(client):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/query"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert "schools_near_floods" in content["examples"]
    assert "QueryDoc" in json.dumps(spec["components"]["schemas"])
    assert "/stats/{layer}/by-ward" in spec["paths"]
    assert "/query/jobs/{jobId}" in spec["paths"]


# --- jobs ----------------------------------------------------------------------------------------


def _wait(client, url: str, headers: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    """The job once it has finished (succeeded, failed or cancelled)."""

    def finished() -> dict[str, Any] | None:
        job = client.get(url, headers=headers).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(finished, timeout=timeout, interval=0.2, message=f"job {url} to finish")


def test_job_runs_and_only_its_owner_sees_it(client, analyst, other_analyst):
    document = {
        "source": "reports_1022",
        "group_by": [{"attribute": "category"}],
        "aggregates": [{"op": "count"}],
        "format": "csv",
    }
    response = client.post("/query/jobs", json=document, headers=analyst)
    assert response.status_code == 202, response.text
    url = response.headers["location"]
    assert url.endswith(f"/query/jobs/{response.json()['id']}")
    job = _wait(client, url, analyst)
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1 and job["rows_written"] == 12 and job["phase"] == "done"
    result = client.get(url + "/result", headers=analyst)
    assert result.status_code == 200
    lines = result.text.strip().split("\r\n")
    assert lines[0] == "category,count" and len(lines) == 13
    for headers in (other_analyst, {}):
        assert client.get(url, headers=headers).status_code == (404 if headers else 401)
        assert client.get(url + "/result", headers=headers).status_code == (404 if headers else 401)
    listed = client.get("/query/jobs", headers=other_analyst).json()
    assert job["id"] not in {j["id"] for j in listed}


def test_job_checks_the_query_at_once(client, analyst):
    assert (
        client.post("/query/jobs", json={"source": "no_such_layer"}, headers=analyst).status_code
        == 404
    )
    assert (
        client.post("/query/jobs", json={**BASE, "limit": "x"}, headers=analyst).status_code == 400
    )
    assert client.post("/query/jobs", json=BASE).status_code == 401
    assert client.get("/query/jobs/not-a-uuid", headers=analyst).status_code == 404


def test_failed_job_reports_its_error(client, analyst):
    document = {"source": "schools", "spatial": [{"op": "intersects", "address": "0000000001"}]}
    url = client.post("/query/jobs", json=document, headers=analyst).headers["location"]
    job = _wait(client, url, analyst)
    assert job["status"] == "failed" and "0000000001" in job["error"]
    assert client.get(url + "/result", headers=analyst).status_code == 409


def test_geopackage_job(client, analyst, tmp_path):
    url = client.post(
        "/query/jobs", json={**BASE, "limit": None, "format": "gpkg"}, headers=analyst
    ).headers["location"]
    job = _wait(client, url, analyst)
    assert job["status"] == "succeeded", job
    path = tmp_path / "job.gpkg"
    path.write_bytes(client.get(url + "/result", headers=analyst).content)
    assert len(pyogrio.read_dataframe(path)) == job["rows_written"] > 5


# --- saved queries -------------------------------------------------------------------------------

SAVED = "qtest_saved_floods"


@pytest.fixture
def saved_clean(db):
    def drop():
        with db.cursor() as cur:
            cur.execute("DELETE FROM ioc.layers WHERE id = %s", (SAVED,))
            cur.execute(f"DROP TABLE IF EXISTS data.{SAVED}")
        db.commit()

    drop()
    yield SAVED
    drop()


def test_saved_query_becomes_a_layer(client, analyst, other_analyst, saved_clean, make_key):
    request = {
        "id": SAVED,
        "access": "internal",
        "every": "2h",
        "title": {"vi": "Điểm ngập theo phường", "en": "Flood points by ward"},
        "query": {
            "source": "flood_points",
            "group_by": [{"ward": "current"}],
            "aggregates": [{"op": "count"}],
            "simplify": 0.0005,
        },
    }
    response = client.post("/query/saved", json=request, headers=analyst)
    assert response.status_code == 201, response.text
    assert response.json()["every"] == 7200
    # It is a layer: catalog, features, tiles — for those who may read it.
    listed = client.get("/collections?limit=1000", headers=analyst).json()
    assert SAVED in {c["id"] for c in listed["collections"]}
    assert SAVED not in {
        c["id"] for c in client.get("/collections?limit=1000").json()["collections"]
    }
    items = client.get(f"/collections/{SAVED}/items?limit=200", headers=analyst).json()
    assert len(items["features"]) == 168
    assert client.get(f"/collections/{SAVED}/items").status_code == 404
    tile = client.get(f"/tiles/{SAVED}/10/814/480.pbf", headers=analyst)
    assert tile.status_code in (200, 204), tile.text
    # Refresh on demand bumps the version; only the owner may.
    assert client.get(f"/collections/{SAVED}", headers=analyst).status_code == 200
    refreshed = client.post(f"/query/saved/{SAVED}/refresh", headers=analyst)
    assert refreshed.status_code == 200 and refreshed.json()["version"] == 2, refreshed.text
    assert client.post(f"/query/saved/{SAVED}/refresh", headers=other_analyst).status_code == 403
    assert client.post(f"/query/saved/{SAVED}/refresh").status_code == 404
    assert client.post("/query/saved", json=request, headers=analyst).status_code == 409
    deleted = client.delete(f"/query/saved/{SAVED}", headers=analyst)
    assert deleted.status_code == 204
    assert client.get(f"/collections/{SAVED}", headers=analyst).status_code == 404


def test_scheduled_refresh_by_the_runner(client, analyst, saved_clean, db):
    request = {
        "id": SAVED,
        "access": "public",
        "every": 3600,
        "title": {"vi": "Trường gần điểm ngập", "en": "Schools near flood points"},
        "query": BASE | {"limit": None},
    }
    assert client.post("/query/saved", json=request, headers=analyst).status_code == 201
    with db.cursor() as cur:
        cur.execute(
            "UPDATE ioc.saved_queries SET next_refresh_at = now() - interval '1 s'"
            " WHERE layer_id = %s",
            (SAVED,),
        )
    db.commit()
    runner = client.app.state.query_runner
    client.portal.call(runner.housekeeping)
    # Another runner may have claimed the due query first (this app's own loop, or the live
    # server's process on the same database): then this call found nothing due and the refresh
    # is still running elsewhere. Wait for its outcome, whoever runs it.
    wait_until(lambda: _layer_version(db, SAVED) == 2, message=f"{SAVED} at version 2")
    assert client.get(f"/collections/{SAVED}").json()  # public: anyone sees it
    saved = client.get(f"/query/saved/{SAVED}").json()
    assert saved["last_error"] is None


def _layer_version(db, layer_id: str) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT version FROM ioc.layers WHERE id = %s", (layer_id,))
        version = cur.fetchone()[0]
    db.rollback()  # the next call sees what has been committed since
    return version


def test_saving_is_refused_when_it_would_leak_or_is_not_allowed(
    client, analyst, make_key, saved_clean
):
    leak = {
        "id": SAVED,
        "access": "public",
        "title": {"vi": "x", "en": "x"},
        "query": {"source": "reports_1022"},
    }
    response = client.post("/query/saved", json=leak, headers=analyst)
    assert response.status_code == 400 and response.json()["parameter"] == "access"
    operator = {"Authorization": f"Bearer {make_key('operator')}"}
    assert (
        client.post(
            "/query/saved", json={**leak, "access": "internal"}, headers=operator
        ).status_code
        == 403
    )
    assert client.post("/query/saved", json={**leak, "access": "internal"}).status_code == 401
    no_geometry = {
        **leak,
        "access": "internal",
        "query": {"source": "reports_1022", "group_by": [{"attribute": "category"}]},
    }
    assert client.post("/query/saved", json=no_geometry, headers=analyst).status_code == 400
    too_often = {**leak, "access": "internal", "every": "1m"}
    assert client.post("/query/saved", json=too_often, headers=analyst).status_code == 400
    bad_id = {**leak, "access": "internal", "id": 'x"; DROP TABLE data.schools; --'}
    assert client.post("/query/saved", json=bad_id, headers=analyst).status_code == 400


def test_a_hidden_id_is_refused_like_any_taken_id(client, analyst, make_key, db):
    """No existence oracle: an analyst cannot tell the restricted layer fx_restricted (hidden
    from them: 404) from a layer they see or a bare table of the data schema — one answer for
    every id that cannot be taken, for every caller."""
    with db.cursor() as cur:  # a table with no layer: taken too
        cur.execute("CREATE TABLE IF NOT EXISTS data.qtest_bare_table (fid integer)")
    db.commit()
    publisher = {"Authorization": f"Bearer {make_key('publisher', RESTRICTED_DEPARTMENT)}"}
    assert client.get("/collections/fx_restricted", headers=analyst).status_code == 404
    assert client.get("/collections/fx_restricted", headers=publisher).status_code == 200
    answers = set()
    try:
        for key in (analyst, publisher):
            for taken in ("fx_restricted", "fx_points", "qtest_bare_table"):
                request = {
                    "id": taken,
                    "access": "internal",
                    "title": {"vi": "x", "en": "x"},
                    "query": {"source": "flood_points"},
                }
                response = client.post("/query/saved", json=request, headers=key)
                answers.add((response.status_code, response.text.replace(taken, "ID")))
    finally:
        with db.cursor() as cur:
            cur.execute("DROP TABLE data.qtest_bare_table")
        db.commit()
    assert len(answers) == 1, answers
    status, text = answers.pop()
    assert status == 409 and json.loads(text)["parameter"] == "id"
    assert "exist" not in text and "table" not in text


def test_stream_is_valid_json_for_large_answers(client, analyst):
    response = client.post(
        "/query",
        json={"source": "reports_1022", "limit": 5000, "properties": ["category", "reported_at"]},
        headers=analyst,
    )
    doc = json.load(io.BytesIO(response.content))
    assert len(doc["features"]) == 5000 and doc["truncated"] is True
    assert doc["features"][0]["properties"]["reported_at"].endswith("+07:00")


def test_anonymous_queries_can_be_refused(client):
    from ioc.query.model import QuerySettings

    settings = client.app.state.settings
    saved = settings.query
    settings.query = QuerySettings(anonymous=False)
    try:
        response = client.post("/query", json=BASE)
        assert response.status_code == 401
        assert 'Bearer realm="ioc"' in response.headers.get_list("www-authenticate")
    finally:
        settings.query = saved
    assert client.post("/query", json=BASE).status_code == 200


def test_cancelled_job_stays_cancelled(client, analyst):
    heavy = {
        "source": "digital_addresses",
        "aggregates": [{"op": "count"}],
        "spatial": [{"op": "dwithin", "distance": 30000, "layer": "reports_1022"}],
    }
    submitted = client.post("/query/jobs", json=heavy, headers=analyst)
    url, job_id = submitted.headers["location"], submitted.json()["id"]
    cancelled = client.delete(url, headers=analyst)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # A job no longer 'queued' is never claimed again; one the runner had already claimed runs
    # until the runner's next heartbeat sees the cancellation and stops its task. Wait for that
    # (the runner's table of running tasks, read only), then nothing can write to the job.
    runner = client.app.state.query_runner
    wait_until(
        lambda: all(t.done() for i, t in list(runner._running.items()) if str(i) == job_id),
        message="the runner to stop the cancelled job",
    )
    job = client.get(url, headers=analyst).json()
    assert job["status"] == "cancelled" and job["phase"] == "done"
    assert client.get(url + "/result", headers=analyst).status_code == 409
