"""The judgement of a versioned tile URL (tiles/versions.py, docs/scaling.md), from the change
events a process has taken in: current (immutable), changed (short max-age), unknown (ask
again)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ioc.errors import InvalidParameter
from ioc.events.log import ChangeEvent
from tests.http.test_tiles import tile_of
from tests.unit.test_tile_sql import make_layer
from tiles.render import Tile, TileService
from tiles.settings import TileSettings
from tiles.versions import TileVersion, current_version, judge, parse_version

NEAR, FAR = (106.70, 10.78), (106.50, 11.00)


def event(n: int, version: int, box=None, base: int = 1, floor: int = 1) -> ChangeEvent:
    boxes = [box[0] - 1e-4, box[1] - 1e-4, box[0] + 1e-4, box[1] + 1e-4] if box else None
    op = "item.update" if box else "layer.publish"
    at = datetime.now(UTC)
    return ChangeEvent(n, at, "roads", op, version, None, 1, None, boxes, base, floor)


@pytest.fixture
def service() -> TileService:
    service = TileService(TileSettings(cache="off"))
    service.changes.apply(event(1, 1))  # the publish: base 1, floor 1
    service.changes.ready = service.changes.last_id = 1
    return service


def tile(as_of: int) -> Tile:
    return Tile(b"", "etag", as_of=as_of)


def test_the_decision_table(service):
    layer = make_layer("roads", version=1)
    first = current_version(service, [layer])
    assert first.event == 1
    z = 14
    for place in (NEAR, FAR):
        assert judge(service, [layer], first, tile(1), *tile_of(*place, z)) == "current"
    # A write near: the template moves to its event, the old version stays current far away.
    service.changes.apply(event(2, 2, NEAR))
    service.changes.last_id = 2
    layer = make_layer("roads", version=2)
    second = current_version(service, [layer])
    assert second == TileVersion(2, first.digest)
    assert judge(service, [layer], first, tile(2), *tile_of(*NEAR, z)) == "changed"
    assert judge(service, [layer], first, tile(2), *tile_of(*FAR, z)) == "current"
    assert judge(service, [layer], second, tile(2), *tile_of(*NEAR, z)) == "current"
    # A copy from before the write (served while it renders again), or a version ahead of
    # what this process has taken in: ask again.
    assert judge(service, [layer], second, tile(1), *tile_of(*NEAR, z)) == "unknown"
    ahead = TileVersion(3, first.digest)
    assert judge(service, [layer], ahead, tile(2), *tile_of(*FAR, z)) == "unknown"
    # A publish: new base and digest; no old URL stays current.
    service.changes.apply(event(3, 3, base=3, floor=3))
    service.changes.last_id = 3
    layer = make_layer("roads", version=3)
    third = current_version(service, [layer])
    assert third.event == 3 and third.digest != first.digest
    for version in (first, second):
        assert judge(service, [layer], version, tile(3), *tile_of(*FAR, z)) == "changed"
    assert judge(service, [layer], third, tile(3), *tile_of(*FAR, z)) == "current"


def test_not_ready_is_never_current():
    service = TileService(TileSettings(cache="off"))
    layer = make_layer("roads")
    version = current_version(service, [layer])
    assert judge(service, [layer], version, tile(0), *tile_of(*FAR, 14)) == "unknown"


@pytest.mark.parametrize("values", [["1"], ["x.0a1b2c3d"], ["1.0A1B2C3D"], ["1.0a", "2.0b"], [""]])
def test_malformed_versions(values):
    with pytest.raises(InvalidParameter, match="'v' must be one tile version"):
        parse_version(values)


def test_well_formed_versions():
    assert parse_version([]) is None
    assert parse_version(["12.0a1b2c3d"]) == TileVersion(12, "0a1b2c3d")
    assert str(TileVersion(12, "0a1b2c3d")) == "12.0a1b2c3d"


def test_a_catalog_ahead_of_the_events_being_read_keeps_the_digest(service):
    """The app reloads its catalog, then reads the events: meanwhile an item write's version
    is in the catalog only; the digest stays until the event is read, then still (its base)."""
    before = current_version(service, [make_layer("roads", version=1)])
    ahead = make_layer("roads", version=2)

    async def while_catching_up() -> TileVersion:
        async with service.changes._lock:  # as during ChangeTracker.catch_up
            return current_version(service, [ahead])

    assert asyncio.run(while_catching_up()) == before
    service.changes.apply(event(2, 2, NEAR))
    service.changes.last_id = 2
    assert current_version(service, [ahead]) == TileVersion(2, before.digest)
    # Ahead with no catch-up under way: a change made without an event moves the digest.
    assert current_version(service, [make_layer("roads", version=3)]).digest != before.digest
