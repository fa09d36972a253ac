"""What answers tell caches and onlookers: every answer that depends on the caller says who may
keep it (``private, no-store`` with a key or a session, ``public`` for anonymous callers, and
``Vary: Authorization, Cookie`` both ways); X-Tile-Cache only when debugging; the anonymous
tile fast path refuses what the app refuses."""

from __future__ import annotations

import pytest

from tests.http.test_auth import basic, bearer, tile_path
from tiles.render import TileService
from tiles.settings import TileSettings

PUBLIC, INTERNAL = "fx_landmarks", "fx_internal"
LANDMARK = {"lon": 106.698056, "lat": 10.7725}  # Chợ Bến Thành, a feature of fx_landmarks
WHATS_HERE = "/whats-here?lon=106.6990&lat=10.7798"

# Routes whose answer depends on who asks, readable anonymously ...
OPEN_ROUTES = [
    "/",
    "/catalog/layers",
    f"/catalog/layers/{PUBLIC}",
    "/collections",
    f"/collections/{PUBLIC}",
    f"/collections/{PUBLIC}/items",
    f"/collections/{PUBLIC}/items/1",
    "/maps",
    f"/maps/preview/{PUBLIC}",
    f"/tiles/{PUBLIC}/tilejson.json",
    f"/styles/{PUBLIC}.json",
    f"/collections/{PUBLIC}/tiles/WebMercatorQuad/tilejson.json",
    "/query/saved",
    f"/layers/{PUBLIC}/versions",
    WHATS_HERE,
    tile_path(PUBLIC, **LANDMARK),
]
# ... and with a key only (404 or 401 for anonymous callers).
KEYED_ROUTES = [
    f"/tiles/{INTERNAL}/tilejson.json",
    f"/styles/{INTERNAL}.json",
    f"/collections/{INTERNAL}/tiles/WebMercatorQuad/tilejson.json",
    f"/collections/{INTERNAL}/items",
    f"/maps/preview/{INTERNAL}",
    tile_path(INTERNAL),
    "/query/jobs",
]


@pytest.fixture
def address(db) -> str:
    """A digital address with linked features."""
    with db.cursor() as cur:
        cur.execute("SELECT code FROM ioc.address_links ORDER BY code LIMIT 1")
        row = cur.fetchone()
    if row is None:
        pytest.skip("no address is linked to a feature in this database")
    return f"/addresses/{row[0]}/features"


@pytest.fixture(scope="module")
def callers(client, make_key) -> dict[str, dict]:
    """Request options of a caller with credentials: Bearer, Basic, the map-session cookie."""
    key = make_key("admin")
    client.cookies.clear()
    token = client.post("/maps/session", headers=bearer(key)).cookies["ioc_session"]
    client.cookies.clear()
    return {
        "bearer": {"headers": bearer(key)},
        "basic": {"headers": basic("qgis", key)},
        "session": {"cookies": {"ioc_session": token}},
    }


def vary(response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("vary", "").split(",")}


def get(client, path: str, **options):
    try:
        return client.get(path, **options)
    finally:
        client.cookies.clear()


def test_anonymous_answers_say_public_and_vary_on_credentials(client, address):
    for path in [*OPEN_ROUTES, address]:
        response = get(client, path)
        assert response.status_code == 200, path
        cache = response.headers.get("cache-control", "")
        assert cache.startswith("public") and "max-age=" in cache, (path, cache)
        if path.endswith(".pbf"):  # a tile of public layers is the same for every caller:
            assert not {"authorization", "cookie"} & vary(response)  # one copy in a CDN
        else:
            assert {"authorization", "cookie"} <= vary(response), path


@pytest.mark.parametrize("who", ["bearer", "basic", "session"])
def test_answers_to_a_caller_with_credentials_are_private(client, callers, address, who):
    for path in [*OPEN_ROUTES, *KEYED_ROUTES, address]:
        response = get(client, path, **callers[who])
        assert response.status_code in (200, 204), (path, response.status_code)
        assert response.headers["cache-control"] == "private, no-store", path
        assert {"authorization", "cookie"} <= vary(response), path


def test_keyed_only_routes_are_never_public_to_anonymous_callers(client):
    for path in KEYED_ROUTES:
        response = get(client, path)
        assert response.status_code in (401, 404), path
        assert "public" not in response.headers.get("cache-control", ""), path
        assert {"authorization", "cookie"} <= vary(response), path


def test_an_anonymous_answer_that_is_private_stays_private(client):
    """A composite tile of a public and an internal layer: anonymous callers get the public
    part, which the app marks private (the answer depends on who asks)."""
    path = tile_path(f"{PUBLIC},{INTERNAL}", **LANDMARK)
    response = get(client, path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-store"


def test_a_stale_session_cookie_is_still_private(client):
    response = get(client, "/catalog/layers", cookies={"ioc_session": "stale-or-forged"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-store"


def test_caller_independent_routes_are_left_alone(client):
    response = get(client, "/healthz")
    assert "cache-control" not in response.headers and "cookie" not in vary(response)


# --- tiles: debug header, fast path ------------------------------------------------------------


@pytest.fixture
def tile_settings(client):
    """Install a tile service with given settings (cache off: every tile comes from the
    database); the app's own service comes back afterwards."""
    own = client.app.state.tiles

    def install(**settings) -> None:
        client.app.state.tiles = TileService(TileSettings(_env_file=None, cache="off", **settings))

    yield install
    client.app.state.tiles = own


@pytest.mark.parametrize("debug", [False, True])
def test_x_tile_cache_only_with_debug_headers(client, callers, tile_settings, debug):
    tile_settings(debug_headers=debug)
    for options in ({}, callers["bearer"]):  # the fast path and the app
        response = get(client, tile_path(PUBLIC, **LANDMARK), **options)
        assert response.status_code == 200
        assert response.headers.get("x-tile-cache") == ("database" if debug else None)


def test_comma_ids_on_the_single_layer_ogc_path_are_404_as_in_the_app(client, callers):
    xyz = tile_path(f"{PUBLIC},fx_vn2000", **LANDMARK)
    z, x, y = xyz.removesuffix(".pbf").split("/")[-3:]
    ogc = f"/collections/{PUBLIC},fx_vn2000/tiles/WebMercatorQuad/{z}/{y}/{x}"
    anonymous, keyed = get(client, ogc), get(client, ogc, **callers["bearer"])
    assert anonymous.status_code == keyed.status_code == 404
    assert anonymous.json() == keyed.json()
    single = get(client, f"/collections/{PUBLIC}/tiles/WebMercatorQuad/{z}/{y}/{x}")
    assert single.status_code == 200
    assert get(client, xyz).status_code == 200  # composite tiles belong to the XYZ path
