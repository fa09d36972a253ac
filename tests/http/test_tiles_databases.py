"""Tiles of a layer created from a file on fresh databases that share one tile disk cache.

Two freshly migrated, unseeded databases (made and dropped here) each get a layer with the same
id from a file through ``POST /layers``, with points in different places; both apps use the
same cache folder, as every ioc process on a machine does by default (tiles/cache). The same
id and version must not share cached tiles: each database's tiles show its own points.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from fastapi.testclient import TestClient

from ioc.catalog import keys
from ioc.config import Settings, get_settings
from ioc.db.connection import create_migrated
from ioc.settings import DatabaseSettings
from tests.conftest import TEST_DB
from tests.http.test_tiles import decode, tile_of
from tiles.settings import TileSettings

LAYER = "test_points"  # from the English title
HERE = [(106.700, 10.770), (106.703, 10.772), (106.706, 10.775)]  # Quận 1
THERE = [(106.800, 10.870), (106.803, 10.872)]  # Thủ Đức, tiles apart at z >= 10
ZOOMS = (10, 12, 13, 14, 16)


def _server(statement: str) -> None:
    """Run a statement on the server's maintenance database (outside a transaction)."""
    # The superuser: copying a database (TEMPLATE) needs CREATEDB, which ioc's role has not.
    admin = psycopg2.connect(get_settings().database.superuser_dsn("postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(statement)
    finally:
        admin.close()


def _drop(name: str) -> None:
    _server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_db() -> Iterator:
    """Make a freshly migrated, unseeded database (dropped afterwards)."""
    made: list[str] = []

    def make(suffix: str, template: str | None = None) -> DatabaseSettings:
        name = f"{TEST_DB}_{suffix}"
        _drop(name)
        made.append(name)
        if template is None:
            return create_migrated(name, get_settings().database)
        _server(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return create_migrated(name, get_settings().database)

    yield make
    for name in made:
        _drop(name)


@contextmanager
def app_on(database: DatabaseSettings, cache_dir: Path) -> Iterator[tuple[TestClient, dict]]:
    """The app on this database with the shared cache folder, and a planning publisher's key."""
    from api.app import create_app

    conn = psycopg2.connect(database.dsn())
    try:
        key = keys.create_key(conn, "publisher", "planning", label="pytest")
    finally:
        conn.close()
    settings = Settings(database=database, tiles=TileSettings(cache_dir=cache_dir))
    with TestClient(create_app(settings)) as client:
        yield client, {"Authorization": f"Bearer {key}"}


def _create(client: TestClient, headers: dict, points: list[tuple[float, float]]) -> None:
    body = json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"ma": f"D{i}"},
                    "geometry": {"type": "Point", "coordinates": [lon, lat]},
                }
                for i, (lon, lat) in enumerate(points)
            ],
        }
    ).encode()
    response = client.post(
        "/layers",
        content=body,
        headers=headers,
        params={
            "filename": f"{LAYER}.geojson",
            "title_vi": "Điểm thử",
            "title_en": "Test points",
            "domain": "transport",
            "access": "public",
            "id_attribute": "ma",
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["id"] == LAYER


def _count(client: TestClient, lon: float, lat: float, z: int) -> int:
    """Points (or clustered points) of the layer in the tile over (lon, lat); 0 for a 204."""
    z, x, y = tile_of(lon, lat, z)
    response = client.get(f"/collections/{LAYER}/tiles/WebMercatorQuad/{z}/{y}/{x}")
    assert response.status_code in (200, 204), response.text
    if response.status_code == 204:
        return 0
    features = decode(response)[LAYER]["features"]
    return sum(f["properties"].get("count", 1) for f in features)


def test_a_new_layer_has_its_own_tiles_on_each_database(fresh_db, tmp_path):
    cache_dir = tmp_path / "shared-cache"
    first = fresh_db("tiles_a")
    with app_on(first, cache_dir) as (client, headers):
        _create(client, headers, THERE)
        # The same tiles over Quận 1: empty on this database, and cached as such.
        assert [_count(client, *HERE[0], z) for z in ZOOMS] == [0] * len(ZOOMS)
        assert _count(client, *THERE[0], 16) == 1
    second = fresh_db("tiles_b")
    with app_on(second, cache_dir) as (client, headers):
        _create(client, headers, HERE)
        extent = client.get(f"/collections/{LAYER}").json()["extent"]["spatial"]["bbox"][0]
        assert extent == pytest.approx([106.700, 10.770, 106.706, 10.775])
        # All three points at city zooms, each one on its own at street zoom.
        assert [_count(client, *HERE[0], z) for z in ZOOMS[:3]] == [3, 3, 3]
        assert _count(client, *HERE[0], 16) >= 1
        assert _count(client, *THERE[0], 16) == 0
    # Both databases' tiles stay in the folder, each under its own database's name.
    assert len([p for p in cache_dir.iterdir() if p.is_dir()]) == 2


def test_a_copied_database_is_another_database(fresh_db, tmp_path):
    """A database made from another (a template copy, as a restored dump would be) keys its
    tiles apart, and the same database keeps its key from one process to the next."""
    from tiles.render import TileService

    first = fresh_db("tiles_c")
    copy = fresh_db("tiles_d", template=f"{TEST_DB}_tiles_c")
    identities = []
    for database in (first, copy, first):
        with app_on(database, tmp_path) as (client, _):
            service: TileService = client.app.state.tiles
            assert service.disk is not None and service.disk.scope
            identities.append(service.disk.scope)
    assert identities[0] != identities[1] and identities[0] == identities[2]
