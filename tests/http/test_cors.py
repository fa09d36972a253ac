"""CORS: web maps on other origins (a MapLibre or OpenLayers page of another department) read
ioc's styles, TileJSON, tiles and features; cookies never cross origins."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ioc.config import Settings
from ioc.settings import ServerSettings

PORTAL = "https://bando.example.vn"
TILE = "/tiles/fx_reports/14/13048/7698.pbf"  # in the packed core of reports


def test_a_page_on_another_origin_reads_tiles_and_their_headers(tiles_client):
    plain = tiles_client.get(TILE)
    response = tiles_client.get(TILE, headers={"Origin": PORTAL})
    assert response.status_code == plain.status_code == 200
    assert response.content == plain.content
    assert response.headers["access-control-allow-origin"] == "*"
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    # Paging of capped exports (Link rel=next, OGC-NumberMatched) is readable by web maps too.
    assert {"etag", "x-tile-truncated", "x-request-id", "link", "ogc-numbermatched"} <= exposed
    assert "access-control-allow-credentials" not in response.headers
    # Any origin may read: every answer says so, whoever asks, so caches need no Vary: Origin.
    assert plain.headers["access-control-allow-origin"] == "*"
    assert "origin" not in response.headers["vary"].lower()


@pytest.mark.parametrize(
    "path",
    [
        "/styles/fx_parcels,fx_reports.json",
        "/tiles/fx_parcels/tilejson.json",
        "/collections/fx_parcels/items?limit=2",
        "/collections/fx_nope",
    ],
)
def test_styles_tilejson_features_and_errors_carry_cors(tiles_client, path):
    response = tiles_client.get(path, headers={"Origin": PORTAL})
    assert response.headers["access-control-allow-origin"] == "*"


def test_preflight_allows_an_api_key_but_no_cookie(tiles_client):
    response = tiles_client.options(
        "/collections/fx_roads/items",
        headers={
            "Origin": PORTAL,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, if-none-match",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "if-none-match" in allowed
    assert "GET" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers
    # A header ioc does not use is not in the list: the browser will not send it.
    assert "x-forwarded-user" not in allowed


def test_a_list_of_origins_and_cors_off(settings):
    listed = Settings(
        database=settings.database,
        data=settings.data,
        publish=settings.publish,
        server=ServerSettings(cors_origins=PORTAL + ", http://localhost:3000"),
    )
    with TestClient(create_app(listed)) as client:
        allowed = client.get("/collections", headers={"Origin": PORTAL})
        assert allowed.headers["access-control-allow-origin"] == PORTAL
        other = client.get("/collections", headers={"Origin": "https://elsewhere.example"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        assert "origin" in allowed.headers["vary"].lower()  # each origin its own answer
        refused = client.options(
            "/collections",
            headers={
                "Origin": PORTAL,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-forwarded-user",
            },
        )
        assert refused.status_code == 400 and "headers" in refused.text.lower()
    off = Settings(
        database=settings.database,
        data=settings.data,
        publish=settings.publish,
        server=ServerSettings(cors_origins=""),
    )
    with TestClient(create_app(off)) as client:
        response = client.get(TILE, headers={"Origin": PORTAL})
        assert response.status_code in (200, 204)
        assert "access-control-allow-origin" not in response.headers


def test_an_origin_with_a_path_is_refused_at_start():
    with pytest.raises(ValueError, match="not a web origin"):
        ServerSettings(cors_origins="https://bando.example.vn/map")
