"""HEAD is answered like GET, without the body: styles, TileJSON, tiles (fast path and app
path), features, map pages and health."""

from __future__ import annotations

import pytest

TILE = "/tiles/fx_reports/14/13048/7698.pbf"  # in the packed core of reports


@pytest.mark.parametrize(
    "path",
    [
        TILE,
        "/collections/fx_reports/tiles/WebMercatorQuad/14/7698/13048",
        "/styles/fx_parcels,fx_reports.json",
        "/tiles/fx_parcels/tilejson.json",
        "/collections/fx_parcels/items?limit=3",
        "/collections",
        "/maps/portal",
        "/healthz",
        "/collections/fx_nope",
    ],
)
def test_head_has_the_get_headers_and_no_body(tiles_client, path):
    got = tiles_client.get(path, headers={"Accept-Encoding": "gzip"})
    head = tiles_client.head(path, headers={"Accept-Encoding": "gzip"})
    assert head.status_code == got.status_code and head.content == b""
    # Folium names a map page's elements afresh (random ids): its length may differ.
    same = (
        ("content-type", "cache-control")
        if path.startswith("/maps/")
        else ("content-type", "content-length", "etag", "cache-control", "content-encoding")
    )
    for name in same:
        assert head.headers.get(name) == got.headers.get(name), name


def test_head_with_a_key_goes_through_the_app(tiles_client, make_key):
    key = {"Authorization": f"Bearer {make_key('operator')}"}
    got = tiles_client.get("/tiles/fx_roads,fx_reports/14/13048/7698.pbf", headers=key)
    head = tiles_client.head("/tiles/fx_roads,fx_reports/14/13048/7698.pbf", headers=key)
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["cache-control"] == got.headers["cache-control"] == "private, no-store"
