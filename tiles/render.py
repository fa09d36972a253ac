"""Fetching and composing tiles: plan → cache → one SQL round trip → gzip → cache.

:class:`TileService` is created once per process (app state, or a command) and holds the SQL
texts, the caches and the change tracker (tiles.changes: which cached tiles a change event made
stale). It never sees HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import asyncpg
from isal import igzip

from ioc.catalog.access import ANONYMOUS, Principal
from ioc.catalog.layers import Catalog, Layer
from ioc.db.connection import Pool
from ioc.errors import InvalidParameter, LayerNotFound, QueryTimeout
from tiles.cache import CachedTile, DiskCache, MemoryCache, database_scope, layers_key
from tiles.changes import ChangeTracker
from tiles.settings import TileSettings
from tiles.sql import (
    BLOCK_PX,
    ID_TYPE_SQL,
    TILE_PX,
    Plan,
    TileSQL,
    id_type_args,
    merge_px,
    plan_tile,
)

log = logging.getLogger("ioc.tiles")
MAX_ZOOM = 24
# Above this, gzip runs in a worker thread. ISA-L compresses ~450 MB/s here, so a 1 MiB tile
# holds the event loop ~2 ms; below that a thread hand-off (the GIL passed back and forth)
# costs more CPU than it saves (measured: 0.02 ms per tile of the benchmark's mix at 64 KiB).
BIG_TILE = 1 << 20
IDENTITY_SQL = "SELECT ioc.database_identity()"  # sql/0015


class TileOutOfRange(LayerNotFound):
    """The tile is outside the WebMercatorQuad matrix (OGC API - Tiles answers 404)."""


@dataclass(frozen=True)
class Tile:
    """A tile as served: gzip-compressed MVT (b"" when empty), its ETag, the layers that hit
    the feature cap, and where it came from (memory, disk, database or none)."""

    data: bytes
    etag: str
    truncated: tuple[str, ...] = ()
    source: str = "database"
    as_of: int = 0  # the newest change event its content is known current as of

    @property
    def empty(self) -> bool:
        return not self.data

    def raw(self) -> bytes:
        """The uncompressed MVT."""
        return igzip.decompress(self.data) if self.data else b""


def merged_reach(settings: TileSettings) -> tuple[float, int]:
    """How far beyond its own box a change can alter a tile at the merged zooms (a share of
    the tile's width: its block's cell, 16 pixels, and members' overhang of up to merge_px + 1
    pixels), and up to which zoom; none when nothing merges."""
    if settings.merge_px <= 0:
        return 0.0, -1
    return (BLOCK_PX + math.ceil(settings.merge_px) + 1) / TILE_PX, settings.generalise_max_zoom


def check_tile(z: int, x: int, y: int) -> None:
    """Raise TileOutOfRange unless (z, x, y) is a tile of WebMercatorQuad."""
    if not 0 <= z <= MAX_ZOOM or not (0 <= x < 1 << z and 0 <= y < 1 << z):
        raise TileOutOfRange(
            f"Tile {z}/{x}/{y} is outside the WebMercatorQuad tile matrix set.", parameter="tile"
        )


class TileService:
    """Renders and caches tiles of catalog layers."""

    def __init__(self, settings: TileSettings) -> None:
        self.settings = settings
        self.fingerprint = settings.fingerprint()
        self.sql = TileSQL(settings)
        on = settings.enabled
        self.memory = MemoryCache(settings.memory_mb << 20) if on and settings.memory_mb else None
        self.disk = (
            DiskCache(settings.cache_dir, settings.disk_max_mb << 20)
            if on and settings.disk_cache
            else None
        )
        self.sweeping: asyncio.Task | None = None
        self.changes = ChangeTracker(settings.buffer / settings.extent, *merged_reach(settings))
        self._inflight: dict[tuple, asyncio.Future[CachedTile]] = {}
        self._integer_ids: dict[tuple[str, int], bool] = {}
        self._keys: dict[str, int] = {}  # each layer's key version when the catalog last changed

    async def start(self, pool: Pool, catalog: Catalog) -> None:
        """Read the database's identity (the disk cache's folder) and the change events' state
        (each layer's tile base, the kept change boxes)."""
        await self.identify(pool)
        await self.changes.catch_up(pool)
        self._keys = self.key_versions(catalog)

    async def identify(self, pool: Pool) -> None:
        """Point the disk cache at this database's folder (read once per process)."""
        if self.disk is not None and self.disk.scope is None:
            self.disk.scope = database_scope(await pool.fetchval(IDENTITY_SQL))

    def key_versions(self, catalog: Catalog) -> dict[str, int]:
        """The version each layer's cached tiles are keyed by (see ChangeTracker.key_version)."""
        return {layer.id: self.changes.key_version(layer) for layer in catalog}

    def plan(self, layers: Sequence[Layer], z: int) -> list[Plan]:
        """The layers that contribute at zoom z (others are outside their zoom range)."""
        return plan_tile(layers, z, self.settings)

    def cache_key(self, plans: Sequence[Plan]) -> str:
        """``<settings fingerprint>/<id@base+...>``: a whole-layer change changes the key."""
        parts = ((p.layer.id, self.changes.key_version(p.layer), p.mode) for p in plans)
        return f"{self.fingerprint}/{layers_key(parts)}"

    def etag(self, tile: CachedTile) -> str:
        """A weak ETag (the bytes are gzip-encoded) of what the tile says: it stays while the
        tile's content does (an untouched tile keeps it across writes to its layer), is the
        same in every process, and costs no database work on a cache hit."""
        return f'W/"{self.fingerprint}-{tile.digest}"'

    async def catch_up(self, pool: Pool) -> None:
        """Take in the change events this process has not seen yet (the app calls it before
        every catalog reload)."""
        await self.changes.catch_up(pool)

    def forget(self, fresh: Catalog, changed: set[str]) -> None:
        """Listener of the app's catalog reloads: tiles of changed layers whose key version
        moved (a whole-layer change) are dropped from memory and, in a worker thread, from
        disk. An item write leaves the key alone: the change tracker makes just the tiles it
        touches stale."""
        keys = self.key_versions(fresh)
        first, self._keys, before = not self._keys, keys, self._keys
        moved = {i for i in changed if first or before.get(i) != keys.get(i)}
        if not moved:
            return
        log.info("layer versions changed", extra={"layers": sorted(moved)[:20]})
        if self.memory is not None:
            self.memory.drop_layers(moved)
        if self.disk is not None:
            task = asyncio.create_task(asyncio.to_thread(self.disk.prune, keys, self.fingerprint))
            task.add_done_callback(lambda t: t.exception())  # pruning is best effort

    async def get_tile(self, pool: Pool, layers: Sequence[Layer], z: int, x: int, y: int) -> Tile:
        """The tile of these layers (already access-checked), from cache or rendered."""
        check_tile(z, x, y)
        plans = self.plan(layers, z)
        if not plans:
            return Tile(b"", self.etag(CachedTile(b"")), source="none", as_of=self.changes.last_id)
        key = self.cache_key(plans)
        mkey = (key, z, x, y)
        layers = [p.layer for p in plans]
        changes = self.changes
        if self.memory is not None and (hit := self.memory.get(mkey)) is not None:
            if self.fresh(layers, hit.as_of, z, x, y):
                if hit.as_of < changes.last_id:  # checked up to here: the next check is shorter
                    self.memory.put(mkey, replace(hit, as_of=changes.last_id))
                return Tile(hit.data, self.etag(hit), hit.truncated, "memory", changes.last_id)
            if mkey in self._inflight:
                # Touched, and already being rendered again: the previous copy (with its own
                # ETag) rather than a queue behind the render. A tile under a stream of writes
                # is then at most one render old, and rendered once at a time.
                return Tile(hit.data, self.etag(hit), hit.truncated, "memory", hit.as_of)
        if self.disk is not None and self.disk.scope is None:
            await self.identify(pool)  # a service used without start()
        if self.disk is not None and (hit := self.disk.get(key, z, x, y)) is not None:
            if self.fresh(layers, hit.as_of, z, x, y):
                if self.memory is not None:
                    self.memory.put(mkey, hit)
                return Tile(hit.data, self.etag(hit), hit.truncated, "disk", changes.last_id)
        cached = await self._render_once(pool, await self.with_id_types(pool, plans), mkey)
        return Tile(cached.data, self.etag(cached), cached.truncated, "database", cached.as_of)

    def fresh(self, layers: Sequence[Layer], as_of: int, z: int, x: int, y: int) -> bool:
        """True when no change known after ``as_of`` touches the tile of these layers (at
        merged zooms, a change to a layer that merges reaches as far as its block)."""
        merged = [la.id for la in layers if merge_px(la, self.settings) > 0]
        return self.changes.fresh([la.id for la in layers], as_of, z, x, y, merged)

    async def with_id_types(self, pool: Pool, plans: Sequence[Plan]) -> list[Plan]:
        """Plans with ``integer_id`` set from the id column's type (looked up once per tile
        key version: the catalog does not record it, and ST_AsMVT fails on a text feature
        id)."""
        result = []
        for plan in plans:
            key = (plan.layer.id, self.changes.key_version(plan.layer))
            if key not in self._integer_ids:
                found = await pool.fetchval(ID_TYPE_SQL, *id_type_args(plan.layer))
                self._integer_ids[key] = bool(found)
            result.append(replace(plan, integer_id=self._integer_ids[key]))
        return result

    async def _render_once(
        self, pool: Pool, plans: Sequence[Plan], mkey: tuple[str, int, int, int]
    ) -> CachedTile:
        """Render, with concurrent requests for the same tile sharing one query."""
        pending = self._inflight.get(mkey)
        if pending is not None:
            return await asyncio.shield(pending)
        # Read before rendering: the tile is current as of at least this event.
        as_of = self.changes.last_id
        future: asyncio.Future[CachedTile] = asyncio.get_running_loop().create_future()
        self._inflight[mkey] = future
        try:
            tile = replace(await self.render(pool, plans, *mkey[1:]), as_of=as_of)
            future.set_result(tile)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._inflight[mkey]
        if self.memory is not None:
            self.memory.put(mkey, tile)
        if self.disk is not None:
            self.disk.put(mkey[0], *mkey[1:], tile)
            if self.disk.needs_sweep() and self.sweeping is None:
                self.sweeping = asyncio.create_task(asyncio.to_thread(self.disk.sweep))
                self.sweeping.add_done_callback(self._swept)
        return tile

    def _swept(self, task: asyncio.Task) -> None:
        self.sweeping = None
        if task.cancelled():
            return
        if (error := task.exception()) is not None:  # the cache is best effort, the log is not
            log.warning("tile disk cache sweep failed", extra={"error": repr(error)})
        elif task.result():
            log.info("tile disk cache swept", extra={"freed_mb": task.result() >> 20})

    async def render(self, pool: Pool, plans: Sequence[Plan], z: int, x: int, y: int) -> CachedTile:
        """One round trip: the composite MVT and the truncation flags; gzip it."""
        try:
            row = await pool.fetchrow(self.sql.get(plans), z, x, y)
        except asyncpg.QueryCanceledError as exc:
            raise QueryTimeout(
                f"Tile {z}/{x}/{y} took longer than the statement timeout to "
                "render; a zoom closer in draws fewer features."
            ) from exc
        mvt: bytes = row["mvt"] or b""
        truncated = tuple(p.layer.id for p, hit in zip(plans, row["truncated"], strict=True) if hit)
        if truncated:
            log.warning(
                "tile feature cap hit", extra={"tile": f"{z}/{x}/{y}", "layers": list(truncated)}
            )
        return CachedTile(await self.compress(mvt), truncated)

    async def compress(self, mvt: bytes) -> bytes:
        """gzip the tile once, for every later response (ISA-L: a third of zlib's cost); tiles
        over BIG_TILE in a worker thread (it releases the GIL) so the event loop keeps
        serving."""
        if not mvt:
            return b""
        level = self.settings.gzip_level
        if len(mvt) > BIG_TILE:
            return await asyncio.to_thread(igzip.compress, mvt, level, mtime=0)
        return igzip.compress(mvt, level, mtime=0)


MAX_LAYERS = 64


def resolve_layers(catalog: Catalog, principal: Principal, ids: str) -> list[Layer]:
    """The readable layers among comma-separated ids, in order, without repeats.

    A layer the caller may not read is left out exactly like an unknown id (it does not
    exist for them); LayerNotFound when nothing is left.
    """
    names = list(dict.fromkeys(part.strip() for part in ids.split(",") if part.strip()))
    if len(names) > MAX_LAYERS:
        raise InvalidParameter(f"At most {MAX_LAYERS} layers fit in one tile.", parameter="layers")
    layers = []
    for name in names:
        try:
            layers.append(catalog.get(name, principal))
        except LayerNotFound:
            continue
    if not layers:
        raise LayerNotFound(f"There is no layer '{ids}'.", parameter="layers")
    return layers


def all_public(catalog: Catalog, ids: str) -> bool:
    """True when every requested id is a public layer: the answer is then the same for every
    caller and may be cached by shared caches."""
    try:
        resolved = [catalog.get(p.strip(), ANONYMOUS) for p in ids.split(",") if p.strip()]
    except LayerNotFound:
        return False
    return bool(resolved)
