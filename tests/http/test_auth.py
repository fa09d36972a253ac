"""Request authentication: the API key as a Bearer token or as the password of HTTP Basic
(QGIS 3.22 and GDAL send only Basic), over real HTTP and with GDAL's OAPIF client; the map
session, a token of its own that expires, dies with its key and at logout."""

from __future__ import annotations

import base64
import math
import shutil
import sqlite3
import subprocess

import httpx
import pytest

from ioc.catalog import keys
from tests.http.conftest import RESTRICTED_DEPARTMENT

INTERNAL, RESTRICTED, PUBLIC = "fx_internal", "fx_restricted", "fx_landmarks"
CHALLENGES = {'Basic realm="ioc", charset="UTF-8"', 'Bearer realm="ioc"'}


def tile_path(layer: str, lon: float = 106.7, lat: float = 10.8, z: int = 12) -> str:
    """The XYZ path of the tile holding a point (every fixture layer has one at 106.7, 10.8)."""
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return f"/tiles/{layer}/{z}/{x}/{y}.pbf"


def basic(user: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def operator(make_key) -> str:
    return make_key("operator")


@pytest.fixture(scope="module")
def health(make_key) -> str:
    """A publisher of the department that owns the restricted fixture layer."""
    return make_key("publisher", RESTRICTED_DEPARTMENT)


# --- HTTP Basic over real HTTP (a live `ioc serve`) ------------------------------------------


@pytest.mark.parametrize(
    "layer, role, readable",
    [
        (PUBLIC, None, True),
        (PUBLIC, "operator", True),
        (PUBLIC, "health", True),
        (INTERNAL, None, False),
        (INTERNAL, "operator", True),
        (INTERNAL, "health", True),
        (RESTRICTED, None, False),
        (RESTRICTED, "operator", False),
        (RESTRICTED, "health", True),
    ],
)
def test_basic_auth_reads_what_the_key_may_read(live_server, request, layer, role, readable):
    """httpx sends the key as the Basic password (user name: anything); items and tiles answer
    exactly as they do for the same key as a Bearer token."""
    auth = None if role is None else ("qgis-user", request.getfixturevalue(role))
    items = httpx.get(f"{live_server}/collections/{layer}/items", auth=auth, timeout=30)
    tile = httpx.get(live_server + tile_path(layer), auth=auth, timeout=30)
    if not readable:
        assert items.status_code == tile.status_code == 404
        return
    assert items.status_code == 200, items.text
    assert items.json()["numberReturned"] >= 1
    assert tile.status_code == 200 and tile.content
    if auth is not None:
        same = httpx.get(
            f"{live_server}/collections/{layer}/items", headers=bearer(auth[1]), timeout=30
        )
        assert same.json()["features"] == items.json()["features"]


def test_unknown_or_revoked_key_in_basic_is_401_with_both_challenges(live_server, make_key, db):
    key = make_key("operator")
    with db.cursor() as cur:
        cur.execute(
            "UPDATE ioc.api_keys SET revoked_at = now() WHERE key_hash = %s", (keys.hash_key(key),)
        )
    db.commit()
    for secret in (key, "ioc_unknown"):
        # A public tile too: a Basic header goes to the app, never to the anonymous fast path.
        for path in (f"/collections/{PUBLIC}/items", tile_path(PUBLIC)):
            response = httpx.get(live_server + path, auth=("anyone", secret), timeout=30)
            assert response.status_code == 401, (path, response.status_code)
            assert response.json()["description"] == "The API key is unknown or revoked."
            assert set(response.headers.get_list("www-authenticate")) == CHALLENGES


@pytest.mark.parametrize(
    "header, says",
    [
        ("Basic !!!not-base64", "not base64"),
        ("Basic " + base64.b64encode(b"no-colon-here").decode(), "no password"),
        ("Basic " + base64.b64encode(b"user:").decode(), "no password"),
        ("Basic " + base64.b64encode(b"user:\xff\xfe").decode(), "not base64"),
        ("Basic", "Bearer KEY"),
        ("Digest username=x", "Bearer KEY"),
        ("Bearer", "Bearer KEY"),
    ],
)
def test_malformed_authorization_is_401_with_a_sentence(client, header, says):
    response = client.get(tile_path(PUBLIC), headers={"Authorization": header})
    assert response.status_code == 401
    description = response.json()["description"]
    assert says in description and description.endswith(".")


def test_basic_key_reads_styles_tilejson_and_map_pages_of_an_internal_layer(client, operator):
    paths = [
        f"/styles/{INTERNAL}.json",
        f"/tiles/{INTERNAL}/tilejson.json",
        f"/collections/{INTERNAL}/tiles/WebMercatorQuad/tilejson.json",
        f"/collections/{INTERNAL}",
        f"/maps/preview/{INTERNAL}",
        "/catalog/layers",
    ]
    for path in paths[:-1]:
        assert client.get(path).status_code == 404, path
        assert client.get(path, auth=("x", operator)).status_code == 200, path
    listed = client.get("/catalog/layers", auth=("gis", operator)).text
    assert INTERNAL in listed and INTERNAL not in client.get("/catalog/layers").text


# --- GDAL's OAPIF client with a key ----------------------------------------------------------


@pytest.mark.skipif(shutil.which("ogr2ogr") is None, reason="GDAL (gdal-bin) is not installed")
@pytest.mark.parametrize(
    "config",
    [
        lambda key: {"GDAL_HTTP_USERPWD": f"anything:{key}"},
        lambda key: {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {key}"},
    ],
    ids=["userpwd", "headers"],
)
def test_ogr2ogr_copies_an_internal_layer_with_a_key(live_server, db, operator, tmp_path, config):
    def copy(target, *options: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ogr2ogr", *options, "-f", "GPKG", str(target), f"OAPIF:{live_server}", INTERNAL],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    without = copy(tmp_path / "anonymous.gpkg")
    assert without.returncode != 0 and "fx_internal" in without.stderr  # not there for them
    # GDAL's network settings as configuration options, as in a QGIS or shell environment.
    target = tmp_path / "internal.gpkg"
    done = copy(
        target,
        *[arg for name, value in config(operator).items() for arg in ("--config", name, value)],
    )
    assert done.returncode == 0, done.stderr
    with db.cursor() as cur:
        cur.execute("SELECT count(*), min(label) FROM fixtures.internal_layer")
        expected, label = cur.fetchone()
    with sqlite3.connect(target) as gpkg:
        copied = gpkg.execute(f'SELECT count(*), min(label) FROM "{INTERNAL}"').fetchone()
    assert copied == (expected, label) and expected >= 1


# --- the map session ---------------------------------------------------------------------------


def _open(client, key: str) -> str:
    """Open a map session with a key; return the session token (the cookie's value)."""
    client.cookies.clear()
    response = client.post("/maps/session", headers=bearer(key))
    assert response.status_code == 200
    client.cookies.clear()
    return response.cookies["ioc_session"]


def _reads_internal(client, token: str) -> bool:
    status = client.get(f"/collections/{INTERNAL}/items", cookies={"ioc_session": token})
    client.cookies.clear()
    assert status.status_code in (200, 404)
    return status.status_code == 200


def _set_session(db, token: str, sql: str) -> None:
    with db.cursor() as cur:
        cur.execute(
            f"UPDATE ioc.map_sessions SET {sql} WHERE token_hash = %s",  # noqa: S608
            (keys.hash_key(token),),
        )
        assert cur.rowcount == 1
    db.commit()


def test_the_cookie_is_a_session_token_not_the_key(client, make_key, db):
    key = make_key("operator")
    client.cookies.clear()
    response = client.post("/maps/session", headers=basic("wall-screen", key))
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    token = response.cookies["ioc_session"]
    assert key not in cookie and token != key and len(token) >= 40
    hours = client.app.state.settings.maps.session_hours  # IOC_MAPS_SESSION_HOURS
    assert f"Max-Age={hours * 3600}" in cookie and response.json()["expires_in"] == hours * 3600
    with db.cursor() as cur:  # only the hash is stored, with the key and the expiry
        cur.execute(
            "SELECT k.key_hash, s.expires_at - s.created_at FROM ioc.map_sessions s"
            " JOIN ioc.api_keys k ON k.id = s.key_id WHERE s.token_hash = %s",
            (keys.hash_key(token),),
        )
        key_hash, lifetime = cur.fetchone()
    assert key_hash == keys.hash_key(key) and lifetime.total_seconds() == hours * 3600
    assert _reads_internal(client, token)
    assert not _reads_internal(client, key)  # the key itself is no session


def test_an_expired_session_is_anonymous(client, operator, db):
    token = _open(client, operator)
    _set_session(
        db,
        token,
        "created_at = now() - interval '13 hours', expires_at = now() - interval '1 hour'",
    )
    assert not _reads_internal(client, token)
    assert _reads_internal(client, _open(client, operator))  # a fresh one works


def test_revoking_the_key_ends_its_sessions(client, make_key, db):
    key = make_key("operator")
    token = _open(client, key)
    with db.cursor() as cur:
        cur.execute(
            "UPDATE ioc.api_keys SET revoked_at = now() WHERE key_hash = %s", (keys.hash_key(key),)
        )
    db.commit()
    assert not _reads_internal(client, token)


def test_logout_ends_the_session_on_the_server(client, operator, db):
    token = _open(client, operator)
    assert _reads_internal(client, token)  # now also in the process's session cache
    closed = client.delete("/maps/session", cookies={"ioc_session": token})
    assert closed.status_code == 204 and 'ioc_session=""' in closed.headers["set-cookie"]
    client.cookies.clear()
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM ioc.map_sessions WHERE token_hash = %s", (keys.hash_key(token),)
        )
        assert cur.fetchone()[0] == 0
    assert not _reads_internal(client, token)


def test_the_cookie_is_secure_when_the_public_url_is_https(client, operator):
    server = client.app.state.settings.server
    client.cookies.clear()
    plain = client.post("/maps/session", headers=bearer(operator))
    assert "secure" not in plain.headers["set-cookie"].lower()
    over_https = client.post("https://testserver/maps/session", headers=bearer(operator))
    assert "; secure" in over_https.headers["set-cookie"].lower()
    saved, server.public_url = server.public_url, "https://bando.example.vn/ioc"
    try:
        # Plain HTTP behind a TLS proxy that forwards nothing: Secure all the same, and the
        # public origin may open sessions.
        behind = client.post(
            "/maps/session", headers={**bearer(operator), "Origin": "https://bando.example.vn"}
        )
        assert behind.status_code == 200
        assert "; secure" in behind.headers["set-cookie"].lower()
        closed = client.delete("/maps/session")
        assert "; secure" in closed.headers["set-cookie"].lower()
    finally:
        server.public_url = saved
        client.cookies.clear()
