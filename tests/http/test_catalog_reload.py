"""A publish through the API reloads the catalog through AppState.reload_catalog, whose
listeners (the tile service's caches) hear which layer changed: a tile rendered before the
publish is neither kept in memory nor served after it."""

from __future__ import annotations

import gzip

import mapbox_vector_tile
import pytest

from tests.fixtures import uploads
from tests.http.test_publish import SENSORS, _clean
from tests.http.test_tiles import tile_of
from tiles.render import TileService
from tiles.settings import TileSettings

LAYER = {**SENSORS, "id": "pt_reload"}
LON, LAT, Z = 106.70, 10.78, 14


@pytest.fixture
def publisher(client, make_key, db_settings):
    _clean(db_settings)
    headers = {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}
    assert client.post("/layers", json=LAYER, headers=headers).status_code == 201
    yield headers
    _clean(db_settings)


def _names(response) -> list[str]:
    data = response.content
    if response.headers.get("content-encoding") != "gzip" and data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    layers = mapbox_vector_tile.decode(data)
    return sorted(
        f["properties"]["sensor_id"] for f in layers.get("pt_reload", {"features": []})["features"]
    )


def test_publish_drops_the_layers_tiles_from_memory(client, publisher, tmp_path):
    state = client.app.state
    own, interval = state.tiles, state.catalog_watcher.interval
    service = state.tiles = TileService(TileSettings(cache_dir=tmp_path, debug_headers=True))
    # Only the publish's own reload may tell the service: the watcher stays quiet.
    state.catalog_watcher.interval = 3600
    try:
        url = "/tiles/pt_reload/{}/{}/{}.pbf".format(*tile_of(LON, LAT, Z))
        body = uploads.sensors_geojson([("R-1", LON, LAT, 5)])
        params = {"filename": "r.geojson"}
        first = client.put("/layers/pt_reload/data", content=body, headers=publisher, params=params)
        assert first.status_code == 200, first.text
        assert client.get(url).headers["x-tile-cache"] == "database"
        before = client.get(url)
        assert before.headers["x-tile-cache"] == "memory" and _names(before) == ["R-1"]
        assert len(service.memory) == 1

        extra = uploads.sensors_geojson([("R-2", LON + 0.0005, LAT, 7)])
        appended = client.post(
            "/layers/pt_reload/data", content=extra, headers=publisher, params=params
        )
        assert appended.status_code == 200, appended.text

        assert len(service.memory) == 0  # the listener dropped the old version's tile
        after = client.get(url)
        assert after.headers["x-tile-cache"] != "memory"
        assert after.headers["etag"] != before.headers["etag"]
        assert _names(after) == ["R-1", "R-2"]
    finally:
        state.tiles, state.catalog_watcher.interval = own, interval
