"""Content coding: gzip when the client takes it, never when its Accept-Encoding refuses it
(``gzip;q=0``), for tiles and for the app's other answers."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path", ["/collections/fx_parcels/items?limit=50", "/tiles/fx_reports/14/13048/7698.pbf"]
)
@pytest.mark.parametrize(
    "accept, gzipped",
    [("gzip, deflate, br", True), ("br;q=1, gzip;q=0", False), ("identity", False), ("*", None)],
)
def test_gzip_only_when_accepted(tiles_client, path, accept, gzipped):
    response = tiles_client.get(path, headers={"Accept-Encoding": accept})
    assert response.status_code == 200 and len(response.content) > 1024
    coding = response.headers.get("content-encoding")
    if gzipped is None:  # "*": either is right
        assert coding in (None, "gzip")
    else:
        assert (coding == "gzip") is gzipped
