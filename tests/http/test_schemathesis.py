"""Schemathesis over the whole ``/openapi.json``, with every role's key (issue 16).

Every operation of the OpenAPI description is called with generated requests — valid ones
(positive mode, including the description's own examples) and invalid ones (negative mode) —
once per role: anonymous, operator, analyst, a publisher of the ``health`` department (which
owns the restricted fixture layer) and admin. Each answer must not be a 5xx and must conform to
the description: a documented status code, a documented content type, a body valid against the
documented schema, documented headers present; redirects are judged as answered (not
followed) and must stay on this server.

Bounded and repeatable: :data:`MAX_EXAMPLES` generated examples per operation and role, plus
schemathesis' deterministic coverage cases (boundary values, missing required parameters,
unexpected methods), derandomized (Hypothesis' fixed seed per test), no example database, no
deadline. Parameters are drawn two times in three from :data:`REALISTIC` (layers of every
access level, tiles over the city, formats, CRSs, filters, dates, an address), so the requests
meet real data and not only 400s and 404s.

The app runs in-process (schemathesis' ASGI transport) as its own instance with its own
lifespan, so its pool and job runner never touch the session's ``client``. (Schemathesis'
``from_fixture`` loader is not used: with pytest 9 it fails on ``Function._nodeid``.)

Destructive operations never reach the shared test database's layers:

* ``/layers/{collectionId}…`` (PUT and POST data, versions, restore, DELETE): the path's
  ``collectionId`` is always :data:`SCRATCH`, a throwaway layer this module creates first and
  drops afterwards, and for ``DELETE`` one throwaway layer per role (:func:`doomed`). The
  upload bodies are empty: the description documents no body (the file is the raw stream).
* ``POST``/``PUT``/``PATCH``/``DELETE`` of ``/collections/{collectionId}/items…`` (OGC API –
  Features Part 4): the ``collectionId`` is :data:`SCRATCH` too. The items POST is also sent
  as feed batches (NDJSON, GeoJSON text sequences; :func:`feed_lines`).
* ``POST /layers``: generated manifests; any layer they did create is recorded from its 201
  and dropped afterwards.
* ``POST /query/saved`` (derived layers) and ``POST /query/jobs``: recorded from their answers,
  deleted or cancelled through the API afterwards.

Nothing is excluded for being destructive. :data:`KNOWN_FAILURES` lists checks skipped for an
operation while the fix is owned elsewhere, one comment per entry; it should shrink to empty.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

import psycopg2
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from ioc.config import Settings

# A deeper local run: IOC_SCHEMATHESIS_EXAMPLES=200 (still derandomized).
MAX_EXAMPLES = int(os.environ.get("IOC_SCHEMATHESIS_EXAMPLES", "15"))
PREFIX = "sf_"  # ids of what this module creates (tables, layers, saved queries)
SCRATCH = "sf_scratch"
DEPARTMENT = "health"
ROLES = ("anonymous", "operator", "analyst", "publisher", "admin")
LAYERS = (
    "fx_landmarks",
    "fx_points",
    "fx_vn2000",
    "fx_odd_names",
    "fx_empty",
    "fx_internal",
    "fx_restricted",
    "wards",
    "reports_1022",
    "parcels",
    "flood_sensors",
    SCRATCH,
)
CRS = "http://www.opengis.net/def/crs/"
# Real values of parameters (by name), drawn twice as often as generated ones, the first (the
# typical value) most often: layers of every access level, tiles over the city, formats, CRSs,
# filters, dates, an address of the seeded city.
REALISTIC: dict[str, list[str]] = {
    "collectionId": list(LAYERS),
    "layer_id": list(LAYERS),
    "layer": list(LAYERS),
    "savedId": list(LAYERS),
    "layers": [*LAYERS, "wards,fx_points", "fx_landmarks,fx_restricted", "wards,wards"],
    "featureId": ["1", "2", "a/1", "c'3", "0"],
    "tileMatrix": ["0", "12", "15", "22", "23"],
    "z": ["0", "12", "15", "22"],
    "tileCol": ["0", "3262", "26099"],
    "x": ["0", "3262", "26099"],
    "tileRow": ["0", "1925", "15401"],
    "y": ["0", "1925", "15401"],
    "view_id": ["wall", "portal"],
    "code": ["5104938939", "0000"],
    "version": ["1", "2", "0"],
    "jobId": ["00000000-0000-0000-0000-000000000000"],
    "f": ["json", "html", "geojson", "csv", "geojsonseq", "jsonld", "mvt", "gpkg"],
    "bbox": [
        "106.6,10.7,106.8,10.9",
        "10.7,106.6,10.9,106.8",
        "106.7,10.8,106.6,10.7",
        "-180,-90,180,90",
        "0,0,0,0",
        "106.6,10.7,0,106.8,10.9,100",
    ],
    "bbox-crs": [
        f"{CRS}OGC/1.3/CRS84",
        f"{CRS}EPSG/0/4326",
        f"{CRS}EPSG/0/9210",
        f"{CRS}EPSG/0/3857",
    ],
    "crs": [f"{CRS}OGC/1.3/CRS84", f"{CRS}EPSG/0/4326", f"{CRS}EPSG/0/9210", "EPSG:9210"],
    "filter-crs": [f"{CRS}OGC/1.3/CRS84", f"{CRS}EPSG/0/4326"],
    "datetime": [
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00Z/..",
        "../2024-01-02T00:00:00Z",
        "2024-01-01/2024-01-03",
        "2024-02-30",
        "../..",
    ],
    "from": ["2024-01-01T00:00:00Z", "2024-01-01"],
    "to": ["2024-02-01T00:00:00Z", "2023-01-01"],
    "filter": [
        "label = 'secret'",
        "n > 5 AND category = 'alpha'",
        "name LIKE 'Ch%'",
        "S_INTERSECTS(geometry, POINT(106.7 10.8))",
        "missing = 1",
        "n > 'x'",
        '{"op": "=", "args": [{"property": "n"}, 5]}',
    ],
    "filter-lang": ["cql2-text", "cql2-json"],
    "sortby": ["-n", "name", "+fid", "geometry", "nonexistent"],
    "properties": ["name", "label,n", "", "nonexistent"],
    "limit": ["1", "10000"],
    "offset": ["0", "19999", "9007199254740991"],
    "lon": ["106.7", "0", "-181"],
    "lat": ["10.78", "0", "91"],
    "radius": ["50", "0", "100000"],
    "q": ["Bến Thành", "le loi", "%", "'"],
    "near": ["106.7,10.78", "x"],
    "address": ["5104938939", "0000"],
    "wards": ["current", "2019"],
    "attribute": ["n", "category"],
    "measure": ["count", "sum", "avg"],
    "lang": ["vi", "en", "fr"],
    "embed": ["true", "false"],
    "level": ["12", "16", "4", "25"],
    "domain": ["admin", "fixtures"],
    "next": ["/maps/wall", "https://evil.example/", "//evil.example"],
    "filename": ["a.geojson", "a.zip", "a.gpkg", "a.csv", "a.kml", "a.exe"],
}


@schemathesis.check
def no_open_redirect(ctx, response, case) -> None:
    """A redirect stays on this server (``next`` of the sign-in form, for one)."""
    location = response.headers.get("location", [""])[0]
    if 300 <= response.status_code < 400 and location:
        target = urlsplit(location)
        assert target.scheme in ("", "http", "https") and target.netloc in ("", "testserver"), (
            f"redirect off this server: {location}"
        )


FEED_POINT = {"type": "Point", "coordinates": [106.70, 10.78]}


def feed_lines(value) -> list[bytes]:
    """The lines of a feed batch made of a generated body: the value itself (the line parser is
    fuzzed: not JSON, not a Feature, bad UTF-8, blank lines) and a Feature of :data:`SCRATCH`
    whose id is that value (the upsert and the database's refusals are fuzzed)."""
    raw = value if isinstance(value, str) else json.dumps(value)
    feature = {"type": "Feature", "properties": {"code": raw}, "geometry": FEED_POINT}
    return [raw.encode("utf-8", "surrogatepass"), json.dumps(feature).encode()]


# Feed batches (layers/feed.py) are raw lines: without these the feed media types of the items
# POST would never be sent.
@schemathesis.serializer("application/x-ndjson")
def ndjson_body(ctx, value) -> bytes:
    return b"".join(line + b"\n" for line in feed_lines(value))


@schemathesis.serializer("application/geo+json-seq")
def geojson_seq_body(ctx, value) -> bytes:
    return b"".join(b"\x1e" + line + b"\n" for line in feed_lines(value))  # RFC 8142


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    no_open_redirect,
]

# (method, path template) -> checks skipped there, each with the reason and the fix's owner.
KNOWN_FAILURES: dict[tuple[str, str], list] = {}


def doomed(role: str) -> str:
    """The throwaway layer a role's ``DELETE /layers/{id}`` aims at (one per role, so that a
    delete never hides :data:`SCRATCH` from the roles tested after it)."""
    return f"{PREFIX}doomed_{role}"


SCRATCH_MANIFEST = {
    "id": SCRATCH,
    "title": {"vi": "Lớp thử (schemathesis)", "en": "Scratch layer (schemathesis)"},
    "description": {"vi": "Lớp thử nghiệm", "en": "Test layer"},
    "domain": "health",
    "department": DEPARTMENT,
    "geometry": {"type": "Point", "srid": 4326},
    "access": "restricted",
    "cadence": "realtime",
    "source": {"name": "pytest", "licence": "CC0"},
    "id_attribute": "code",
    "zoom": {"min": 10, "max": 22},
    "attributes": [
        {"name": "code", "type": "text", "label": {"vi": "Mã", "en": "Code"}, "required": True}
    ],
    "style": {
        "color": "#1f78b4",
        "legend": [{"label": {"vi": "Điểm", "en": "Point"}, "color": "#1f78b4"}],
    },
    "demo": {"count": 1, "weight": "uniform"},
}


def drop_created(dsn: str, layer_ids: set[str]) -> None:
    """Remove the layers this module created: tables, registry rows, audit rows."""
    ids, like = sorted(layer_ids), PREFIX.replace("_", "\\_") + "%"
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN "
            "('data', 'versions', 'staging') AND (tablename LIKE %s "
            "OR tablename = ANY(%s))",
            (like, ids),
        )
        for schema_name, table in cur.fetchall():
            cur.execute(f'DROP TABLE "{schema_name}"."{table}"')
        cur.execute("DELETE FROM ioc.layers WHERE id LIKE %s OR id = ANY(%s)", (like, ids))
        cur.execute(
            "DELETE FROM ioc.audit WHERE layer_id LIKE %s OR layer_id = ANY(%s)", (like, ids)
        )
    conn.commit()
    conn.close()


@pytest.fixture(scope="module")
def role_headers(make_key) -> dict[str, dict[str, str]]:
    """``Authorization`` headers of each role (anonymous: none)."""
    headers = {"anonymous": {}}
    for role in ROLES[1:]:
        key = make_key(role, DEPARTMENT if role == "publisher" else None)
        headers[role] = {"Authorization": f"Bearer {key}"}
    return headers


@pytest.fixture(scope="module")
def created(db_settings, client, role_headers):
    """The scratch layer, and a record of what the generated requests create; all of it is
    removed afterwards (saved queries and jobs through the API, layers in the database)."""
    drop_created(db_settings.dsn(), set())
    for layer_id in (SCRATCH, *(doomed(role) for role in ROLES)):
        answer = client.post(
            "/layers", json={**SCRATCH_MANIFEST, "id": layer_id}, headers=role_headers["admin"]
        )
        assert answer.status_code == 201, answer.text
    record: dict[str, set] = {"layers": set(), "saved": set(), "jobs": set()}
    yield record
    for headers in role_headers.values():
        for job in record["jobs"]:
            client.delete(f"/query/jobs/{job}", headers=headers)
    for saved in record["saved"]:
        client.delete(f"/query/saved/{saved}", headers=role_headers["admin"])
    drop_created(db_settings.dsn(), record["layers"] | record["saved"])


@pytest.fixture(scope="module")
def app(settings, created):
    """A fresh app instance on the test database; schemathesis' ASGI client runs its
    lifespan (pool, catalog, job runner) on first use, stopped at the end of the module."""
    yield create_app(settings)
    asgi.shutdown_lifespans()


# The description is static (no database needed to build it), so the operations are known at
# collection: one test per operation and role.
DESCRIPTION = create_app(Settings()).openapi()
# GET /events is a Server-Sent Events stream that never ends by itself (a generated call
# would wait forever): tests/http/test_events.py drives it with a real streaming client.
schema = schemathesis.openapi.from_dict(DESCRIPTION).exclude(path="/events")
KEEP = object()  # "keep the generated value"


def parameter_names(method: str, path: str, where: str) -> set[str]:
    operation = DESCRIPTION["paths"][path][method.lower()]
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == where}


def realistic(generated: dict | None, names: set[str]) -> st.SearchStrategy:
    """The generated parameters, each known one often replaced by a realistic value (those
    left out stay out), so that requests reach real data and not only 400s and 404s."""
    generated = dict(generated or {})
    choices = {
        name: st.one_of(
            st.just(KEEP), st.just(REALISTIC[name][0]), st.sampled_from(REALISTIC[name])
        )
        for name in names & set(generated)
        if name in REALISTIC
    }
    if not choices:
        return st.just(generated)
    return st.fixed_dictionaries(choices).map(
        lambda drawn: {**generated, **{k: v for k, v in drawn.items() if v is not KEEP}}
    )


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    return realistic(path_parameters, set(path_parameters or ()))


@schema.hook
def flatmap_query(context, query):
    operation = context.operation
    return realistic(query, parameter_names(operation.method, operation.path, "query"))


def record_created(case, response, record: dict[str, set]) -> None:
    """Remember what a successful create made, for the teardown."""
    operation = (case.method.upper(), case.path)
    if response.status_code == 201 and operation == ("POST", "/layers"):
        record["layers"].add(response.json()["id"])
    elif response.status_code == 201 and operation == ("POST", "/query/saved"):
        record["saved"].add(response.json()["id"])
    elif response.status_code == 202 and operation == ("POST", "/query/jobs"):
        record["jobs"].add(response.json()["id"])


def role_test(role: str):
    """The test of every operation as one role."""

    @schema.parametrize()
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def test(case, app, role_headers, created):
        # Part 4 item writes (POST/PUT/PATCH/DELETE under /collections) hit SCRATCH too.
        writes_items = case.method.upper() != "GET" and case.path.startswith("/collections/")
        if case.path.startswith("/layers/") or writes_items:
            deletes_layer = case.method.upper() == "DELETE" and not writes_items
            target = doomed(role) if deletes_layer else SCRATCH
            case.path_parameters = {**(case.path_parameters or {}), "collectionId": target}
        skipped = KNOWN_FAILURES.get((case.method.upper(), case.path), [])
        if role != "anonymous":  # the role's key, not a generated one (any spelling)
            case.headers = {
                name: value
                for name, value in (case.headers or {}).items()
                if name.lower() != "authorization"
            } | role_headers[role]
        response = case.call(app=app, allow_redirects=False)  # judge the answer itself
        record_created(case, response, created)
        case.validate_response(response, checks=[c for c in CHECKS if c not in skipped])

    return test


test_as_anonymous = role_test("anonymous")
test_as_operator = role_test("operator")
test_as_analyst = role_test("analyst")
test_as_publisher = role_test("publisher")
test_as_admin = role_test("admin")


def test_description_documents_the_error_answers(client):
    """400 with the OGC exception body instead of FastAPI's 422, and 401/404/503 where they
    can happen; explicit error answers (an upload's 422 report) are kept."""
    spec = client.get("/openapi.json").json()
    items = spec["paths"]["/collections/{collectionId}/items"]["get"]["responses"]
    assert "422" not in items and {"400", "401", "404", "503"} <= set(items)
    assert items["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert set(spec["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    upload = spec["paths"]["/layers/{collectionId}/data"]["put"]["responses"]
    assert {"403", "413", "422"} <= set(upload)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    answer = client.get("/collections/wards/items", params={"limit": "many"})
    assert answer.status_code == 400 and set(answer.json()) >= {"code", "description"}
