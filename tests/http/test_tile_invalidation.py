"""Per-tile invalidation (issue 20, item 2): one feature written through the API makes stale only
the tiles it touches, at every zoom, in this process, on the shared disk cache and in another
`ioc serve` process that hears the change event; every other tile stays cached with its ETag."""

from __future__ import annotations

import gzip

import httpx
import mapbox_vector_tile
import pytest

from ioc.catalog.access import ADMIN
from tests.conftest import free_port
from tests.fixtures import uploads
from tests.http.test_events import DEADLINE, serve, stop
from tests.http.test_publish import SENSORS, _clean
from tests.http.test_tiles import tile_of
from tests.http.test_transactions import feature
from tests.polling import wait_until
from tiles.render import TileService
from tiles.settings import TileSettings

LAYER = "tinv_sensors"
ZOOMS = range(10, 17)
# Three sensors far apart (centre, Củ Chi, Cần Giờ): different tiles from z10 on.
SENSORS_AT = [
    ("C-1", 106.7000, 10.7800, 5),
    ("F-1", 106.5000, 11.0000, 6),
    ("F-2", 106.95, 10.41, 7),
]
NEW = (106.7003, 10.7803)  # the written feature: in C-1's tile at every zoom
FAR = SENSORS_AT[1][1:3]


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


def _publish(base_or_client, publisher, layer: str = LAYER, sensors=SENSORS_AT) -> None:
    """Create the public sensor layer ``layer`` and upload ``sensors`` (id, lon, lat, depth)."""
    post = base_or_client.post
    made = post("/layers", json={**SENSORS, "id": layer}, headers=publisher)
    assert made.status_code == 201, made.text
    data = base_or_client.put(
        f"/layers/{layer}/data",
        content=uploads.sensors_geojson(sensors),
        headers=publisher,
        params={"filename": "s.geojson"},
    )
    assert data.status_code == 200, data.text


@pytest.fixture
def layer(client, publisher, db_settings):
    _clean(db_settings, "tinv")
    _publish(client, publisher)
    yield LAYER
    _clean(db_settings, "tinv")


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    data = response.content
    if data[:2] == b"\x1f\x8b":  # httpx without decoding, or a gzip body
        data = gzip.decompress(data)
    tile = mapbox_vector_tile.decode(data)
    return sorted(f["properties"]["sensor_id"] for f in tile[LAYER]["features"])


def url(lon: float, lat: float, z: int) -> str:
    return "/tiles/{}/{}/{}/{}.pbf".format(LAYER, *tile_of(lon, lat, z))


def test_a_write_makes_only_its_tiles_stale(client, layer, publisher, tmp_path):
    """In this process (memory) and in another one on the same disk cache (started before the
    write, memory off): at every zoom the far tile stays cached with its ETag (304), the tile of
    the new feature is rendered again with a new ETag, the same in both processes."""
    state = client.app.state
    own = state.tiles
    service = state.tiles = TileService(TileSettings(cache_dir=tmp_path, debug_headers=True))
    other = TileService(TileSettings(cache_dir=tmp_path, memory_mb=0))
    try:
        client.portal.call(state.reload_catalog, set())  # the service reads the events' state
        client.portal.call(other.start, state.pool, state.catalog)
        before = {}
        for z in ZOOMS:
            for lon, lat in (NEW, FAR):
                assert client.get(url(lon, lat, z)).headers["x-tile-cache"] == "database"
                before[z, lon] = client.get(url(lon, lat, z))
                assert before[z, lon].headers["x-tile-cache"] == "memory"
        assert names(before[10, NEW[0]]) == ["C-1"] and names(before[10, FAR[0]]) == ["F-1"]

        written = client.post(
            f"/collections/{LAYER}/items", json=feature("N-1", *NEW), headers=publisher
        )
        assert written.status_code == 201, written.text
        client.portal.call(other.catch_up, state.pool)  # as its event hub would on the NOTIFY
        layers = [state.catalog.get(LAYER, ADMIN)]

        def other_tile(lon, lat, z):
            return client.portal.call(other.get_tile, state.pool, layers, *tile_of(lon, lat, z))

        for z in ZOOMS:
            far, near = before[z, FAR[0]], before[z, NEW[0]]
            # The other process: its disk copy of the touched tile is stale, the far one is not.
            theirs = other_tile(*NEW, z)
            assert theirs.source == "database", z
            assert theirs.etag != near.headers["etag"]
            kept = other_tile(*FAR, z)
            assert (kept.source, kept.etag) == ("disk", far.headers["etag"]), z
            # Untouched here: still in memory, same ETag, 304 for it.
            again = client.get(url(*FAR, z))
            assert again.headers["x-tile-cache"] == "memory", z
            assert again.headers["etag"] == far.headers["etag"] and names(again) == names(far)
            cond = client.get(url(*FAR, z), headers={"If-None-Match": far.headers["etag"]})
            assert cond.status_code == 304
            # Touched: not the old copy (the other process's new one, from disk), a new ETag
            # (the same as the other process's), no 304 for the old one.
            fresh = client.get(url(*NEW, z))
            assert fresh.headers["x-tile-cache"] == "disk", z
            assert names(fresh) == ["C-1", "N-1"] and fresh.headers["etag"] == theirs.etag
            cond = client.get(url(*NEW, z), headers={"If-None-Match": near.headers["etag"]})
            assert cond.status_code == 200
        assert service.memory is not None and len(service.memory) == 2 * len(ZOOMS)
    finally:
        state.tiles = own


def test_another_process_drops_only_the_touched_tiles(
    db_settings, live_server, publisher, server_tmp
):
    """Two real `ioc serve` processes on one database, each with its own disk cache, catalog
    checks an hour away: a write through A makes B's cached tile of that place fresh as soon as
    B hears the change event; B's other tiles stay in its memory with their ETags."""
    _clean(db_settings, "tinv")
    port = free_port()
    b = f"http://127.0.0.1:{port}"
    proc = serve(
        db_settings,
        port,
        IOC_CATALOG_CHECK_SECONDS="3600",
        IOC_TILE_DEBUG_HEADERS="true",
        IOC_TILE_CACHE_DIR=str(server_tmp("tinv-b-cache")),
    )
    try:
        with httpx.Client(base_url=live_server, timeout=30) as a:
            _publish(a, publisher)
        with httpx.Client(base_url=b, timeout=30) as client:
            wait_until(
                lambda: client.get(url(*FAR, 10)).status_code == 200,
                timeout=DEADLINE,
                message="B to know the published layer",
            )
            before = {}
            for z in ZOOMS:
                for lon, lat in (NEW, FAR):
                    client.get(url(lon, lat, z))
                    before[z, lon] = client.get(url(lon, lat, z))
                    assert before[z, lon].headers["x-tile-cache"] == "memory"

            written = httpx.post(
                f"{live_server}/collections/{LAYER}/items",
                json=feature("N-2", *NEW),
                headers=publisher,
                timeout=30,
            )
            assert written.status_code == 201, written.text
            top = max(ZOOMS)
            wait_until(
                lambda: "N-2" in names(client.get(url(*NEW, top))),
                timeout=DEADLINE,  # a bound on waiting, not on speed (the figure is reported)
                message="B's tile of the written place to show the new feature",
            )
            for z in ZOOMS:
                far = client.get(url(*FAR, z))
                assert far.headers["x-tile-cache"] == "memory", z
                assert far.headers["etag"] == before[z, FAR[0]].headers["etag"]
                near = client.get(url(*NEW, z))
                assert names(near) == ["C-1", "N-2"], z
                assert near.headers["etag"] != before[z, NEW[0]].headers["etag"]
    finally:
        stop(proc)
        _clean(db_settings, "tinv")
