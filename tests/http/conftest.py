"""HTTP fixtures: the test database plus deliberately awkward layers of our own.

``db_settings`` is overridden here so that the app (``client``) and the ``live_server`` process
start with the fixture layers (tests/fixtures/layers.py: schema ``fixtures``, layer ids ``fx_*``)
already in the registry. ``tiles_client`` is the app with a fresh tile service per test. The demo
city is seeded too when its generator is present; the suite stays green while it is not.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from ioc.settings import DatabaseSettings
from tests.fixtures.layers import (  # noqa: F401 (the tests' names for the fixture data)
    LANDMARKS,
    POINTS,
    RESTRICTED_DEPARTMENT,
    build_fixture_layers,
    reset_changed_layers,
)
from tiles.render import TileService
from tiles.settings import TileSettings


@pytest.fixture(scope="session")
def db_settings(db_settings: DatabaseSettings) -> DatabaseSettings:
    """The seeded test database (tests/conftest.py) plus our awkward fixture layers."""
    conn = psycopg2.connect(db_settings.dsn())
    try:
        build_fixture_layers(conn)
    finally:
        conn.close()
    return db_settings


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tile-cache")


@pytest.fixture
def tiles_client(client, db, cache_dir) -> Iterator:
    """The app with a fresh tile service per test (its own disk cache folder, versions checked
    on every request), and the fixture layers tests change put back as they were built."""
    reset_changed_layers(db)
    app = client.app
    own = app.state.tiles
    app.state.tiles = TileService(TileSettings(cache_dir=cache_dir))
    client.portal.call(app.state.reload_catalog, set())
    interval, app.state.catalog_watcher.interval = app.state.catalog_watcher.interval, 0
    yield client
    app.state.tiles = own
    app.state.catalog_watcher.interval = interval
