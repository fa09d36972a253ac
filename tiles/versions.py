"""Versioned tile URLs: ``…/{z}/{x}/{y}.pbf?v=<event>.<digest>`` (docs/scaling.md).

ioc invalidates tiles one by one (tiles.changes), so the version in a URL is not a promise that
the whole layer is unchanged: ``event`` is the newest change event of the URL's layers when the
template was handed out, ``digest`` hashes what a change without a box moves (the tile settings'
fingerprint, each layer's tile key version). A request is judged per tile:

- ``current``: this process knows every event up to ``event``, the digest matches and no change
  after ``event`` touches the tile — the tile is what it was as of ``event`` and will stay so for
  this URL (HTTP: immutable);
- ``changed``: a change after ``event`` touches the tile, or the digest moved — the answer is the
  current tile, which later answers to the same URL may not repeat (a short max-age);
- ``unknown``: ``event`` is newer than what this process has taken in (an event on its way, a
  template from a process ahead of this one, a made-up number), or the tile is being rendered
  again — caches must ask again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ioc.catalog.layers import Layer
from ioc.errors import InvalidParameter
from tiles.changes import ChangeTracker
from tiles.render import Tile, TileService

Freshness = Literal["current", "changed", "unknown"]
PATTERN = re.compile(r"(\d{1,18})\.([0-9a-f]{8})")


@dataclass(frozen=True)
class TileVersion:
    """The ``v`` of a tile URL."""

    event: int
    digest: str

    def __str__(self) -> str:
        return f"{self.event}.{self.digest}"


def parse_version(values: Sequence[str]) -> TileVersion | None:
    """The tile version of a request's ``v`` values (None without one); InvalidParameter for a
    malformed one."""
    if not values:
        return None
    match = PATTERN.fullmatch(values[0]) if len(values) == 1 else None
    if match is None:
        raise InvalidParameter(
            "'v' must be one tile version as TileJSON hands it out (an event id, a dot and "
            "8 hex digits, e.g. 1234.0a1b2c3d).",
            parameter="v",
        )
    return TileVersion(int(match[1]), match[2])


def newest_event(changes: ChangeTracker, layers: Sequence[Layer]) -> int:
    """The newest change event of these layers this process knows of (0: none)."""
    newest = 0
    for layer in layers:
        state = changes.layers.get(layer.id)
        if state is not None:
            # A slice, not a test then an index: map pages read this from a worker thread.
            newest = max(newest, state.floor, *state.ids[-1:])
    return newest


def digest(service: TileService, layers: Sequence[Layer]) -> str:
    """What moves without a change box: the settings' fingerprint, the layers' key versions."""
    text = (
        service.fingerprint
        + "/"
        + "+".join(f"{la.id}@{service.changes.key_version(la)}" for la in layers)
    )
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def current_version(service: TileService, layers: Sequence[Layer]) -> TileVersion:
    """The version handed out in tile URL templates of these layers (in URL order)."""
    return TileVersion(newest_event(service.changes, layers), digest(service, layers))


def judge(
    service: TileService,
    layers: Sequence[Layer],
    version: TileVersion,
    tile: Tile,
    z: int,
    x: int,
    y: int,
) -> Freshness:
    """Whether the answer to a versioned tile URL may be kept for ever (see the module)."""
    changes = service.changes
    # tile.as_of: the newest event its content is known current as of (a copy being rendered
    # again is older): immutable only for a version it covers.
    if not changes.ready or version.event > tile.as_of:
        return "unknown"
    if version.digest != digest(service, layers):
        return "changed"
    if not service.fresh(layers, version.event, z, x, y):
        return "changed"
    return "current"
