"""Which cached tiles a change makes stale: each process's view of the change-event stream.

Every event records (ioc/events/log.py) the layer's *tile base* — the version its tiles are keyed
by, moved only by a whole-layer change — its *floor*, and the change boxes of item writes since.
A cached tile records the newest event id it is current *as of* (read before it was rendered);
it is stale when its layer's floor is above that id, or when a newer change box intersects its
envelope (EPSG:3857, widened by the render's buffer). So one sensor reading re-renders the few
tiles around it at each zoom (aggregated low zooms included: their cells lie inside the tile),
and the rest of the city stays cached — in every process, since all read the same stream.

Checking a cached tile is memory work only: a binary search for the events newer than the
tile, then a box test for each (usually none: a checked tile moves its as-of forward).
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_right
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from ioc.catalog.layers import Layer
from ioc.db.connection import Pool
from ioc.events.log import ChangeEvent, events_since, tile_states

EARTH_RADIUS = 6378137.0
HALF_WORLD = math.pi * EARTH_RADIUS
MAX_LAT = 85.0511287798066
BATCH = 1000

Box = tuple[float, float, float, float]


def mercator_box(values: Sequence[float]) -> Box:
    """A CRS84 box (west, south, east, north) in EPSG:3857 metres."""
    west, south, east, north = values

    def y(lat: float) -> float:
        lat = max(-MAX_LAT, min(MAX_LAT, lat))
        return EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    return EARTH_RADIUS * math.radians(west), y(south), EARTH_RADIUS * math.radians(east), y(north)


def tile_envelope(z: int, x: int, y: int, margin: float) -> Box:
    """The tile's EPSG:3857 envelope widened by ``margin`` (a share of its width)."""
    size = 2 * HALF_WORLD / (1 << z)
    pad = size * margin
    west, north = -HALF_WORLD + x * size, HALF_WORLD - y * size
    return west - pad, north - size - pad, west + size + pad, north + pad


@dataclass
class LayerChanges:
    """One layer's tile base, floor and the change boxes kept after the floor."""

    base: int | None
    version: int | None  # of its newest event
    floor: int
    ids: list[int] = field(default_factory=list)  # event ids, ascending
    boxes: list[tuple[Box, ...]] = field(default_factory=list)  # EPSG:3857, one tuple per id


def _id(event: ChangeEvent) -> int:
    return event.id


class ChangeTracker:
    """The process's tile view of the change events; fed by :meth:`catch_up` (the app calls it
    on every event batch and catalog reload), read without awaiting by the tile service."""

    def __init__(
        self, margin: float, merged_margin: float = 0.0, merged_max_zoom: int = -1
    ) -> None:
        self.margin = margin  # the render's buffer, as a share of the tile width
        # Up to merged_max_zoom a change to a layer that merges small polygons (sql/0022) also
        # reaches as far as its block (a 16-pixel cell and its members' overhang): that block
        # is drawn in every tile it touches, not only where the change is.
        self.merged_margin, self.merged_max_zoom = merged_margin, merged_max_zoom
        self.ready = False  # until the first catch_up, tiles key on the layer version alone
        self.last_id = 0
        self.layers: dict[str, LayerChanges] = {}
        self._lock = asyncio.Lock()

    async def catch_up(self, pool: Pool) -> None:
        """Read the events this process has not seen (on first use, each layer's state)."""
        async with self._lock:
            if not self.ready:
                last, newest, tracked = await tile_states(pool)
                # In id order: each layer's state ends as its newest event left it.
                for event in sorted({e.id: e for e in newest + tracked}.values(), key=_id):
                    self.apply(event)
                self.last_id, self.ready = last, True
            while True:
                batch = await events_since(pool, self.last_id, None, BATCH)
                for event in batch:
                    self.apply(event)
                    self.last_id = event.id
                if len(batch) < BATCH:
                    return

    def apply(self, event: ChangeEvent) -> None:
        """Take one event into the layer's state (events arrive in id order)."""
        floor = event.tile_floor if event.tile_floor is not None else event.id
        state = self.layers.get(event.layer)
        if state is None:
            state = self.layers[event.layer] = LayerChanges(event.tile_base, event.version, floor)
        if floor > state.floor:
            cut = bisect_right(state.ids, floor)
            del state.ids[:cut], state.boxes[:cut]
            state.floor = floor
        state.base, state.version = event.tile_base, event.version
        if event.boxes is not None and event.id > state.floor:
            flat = event.boxes
            boxes = tuple(mercator_box(flat[i : i + 4]) for i in range(0, len(flat), 4))
            state.ids.append(event.id)
            state.boxes.append(boxes)

    def key_version(self, layer: Layer) -> int:
        """The version a layer's tiles are keyed by: its tile base while every version since is
        an item change this process knows the place of; else the catalog's version."""
        state = self.layers.get(layer.id) if self.ready else None
        if state is None or state.base is None or state.version is None:
            return layer.version
        if state.base <= layer.version <= state.version:
            return state.base
        if layer.version > state.version and self._lock.locked():
            # The app reloads the catalog, then catches up: a catalog ahead of the events
            # while they are being read is the change they carry, keyed as before until its
            # event says it is a whole-layer one (else the URLs' digest would flicker).
            return state.base
        return layer.version

    def fresh(
        self,
        layer_ids: Iterable[str],
        as_of: int,
        z: int,
        x: int,
        y: int,
        merged: Collection[str] = (),
    ) -> bool:
        """True when no change this process knows of after ``as_of`` touches the tile (for the
        ``merged`` layers, its blocks' reach)."""
        envelopes: dict[bool, Box] = {}
        for layer_id in layer_ids:
            state = self.layers.get(layer_id)
            if state is None:
                continue
            if as_of < state.floor:
                return False
            start = bisect_right(state.ids, as_of)
            if start == len(state.ids):
                continue
            wide = z <= self.merged_max_zoom and layer_id in merged
            if wide not in envelopes:
                margin = self.margin + (self.merged_margin if wide else 0.0)
                envelopes[wide] = tile_envelope(z, x, y, margin)
            west, south, east, north = envelopes[wide]
            for boxes in state.boxes[start:]:
                for bw, bs, be, bn in boxes:
                    if bw <= east and be >= west and bs <= north and bn >= south:
                        return False
        return True
