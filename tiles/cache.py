"""Tile caches (an in-process LRU and a shared on-disk cache).

Every key holds each layer's **tile base** version (tiles.changes: moved by a publish, restore
or any change made without a change event), so a layer changed as a whole gets new keys: old
tiles are never looked up again, and are dropped from memory at once and from disk by
:meth:`DiskCache.prune`. Item writes do not move it: each cached tile records the event id it
is current *as of*, and the tile service checks it against the change boxes it knows of.

Layer ids, versions and event ids repeat from one database to another (test runs, a re-created
database, a restored dump), so the disk cache keeps each database's tiles in a folder of its own,
named after the database's identity (sql/0015), which the tile service reads once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Longest directory name used as is; longer composite keys are hashed (filename limit 255).
MAX_DIR_NAME = 200
# The disk budget is swept when this share of it has been written since the last sweep, down
# to SWEEP_TARGET of it (so sweeps stay rare and each frees room for many writes).
SWEEP_EVERY = 0.05
SWEEP_TARGET = 0.8
BLOCK = 4096  # a small file still takes a block
# A cache file: magic, the event id the tile is current as of, the length of the truncated
# layers' names, the names, the gzip MVT. One file, written atomically: a reader never pairs a
# tile with another one's as-of.
HEADER = struct.Struct(">4sQH")
MAGIC = b"IOT1"
# Folders of databases start with this; anything else at the top is the layout before them.
SCOPE_PREFIX = "db-"


@dataclass(frozen=True)
class CachedTile:
    """A rendered tile: gzip-compressed MVT (b"" when empty), the layers that hit the cap and
    the newest change event it is current as of (0: unknown)."""

    data: bytes
    truncated: tuple[str, ...] = ()
    as_of: int = 0
    # What the tile says, hashed once (its ETag's core; the same bytes give the same digest in
    # every process); carried along by dataclasses.replace.
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.digest:
            h = hashlib.blake2b(self.data, digest_size=10)
            h.update(",".join(self.truncated).encode())
            object.__setattr__(self, "digest", h.hexdigest())


def layers_key(parts: Iterable[tuple[str, int, str]]) -> str:
    """The cache key part for layers: ``id@version`` (``id@version.mode`` when a layer is not
    drawn as plain features) joined with ``+`` in tile order."""
    return "+".join(
        f"{layer_id}@{version}" + ("" if mode == "features" else f".{mode}")
        for layer_id, version, mode in parts
    )


def database_scope(identity: str) -> str:
    """The disk cache folder of a database, from ``ioc.database_identity()``."""
    return SCOPE_PREFIX + hashlib.sha1(identity.encode()).hexdigest()[:16]


def parse_layers_key(key: str) -> list[tuple[str, int]]:
    """The (id, version) pairs of a :func:`layers_key`."""
    pairs = []
    for part in key.split("+"):
        layer_id, _, version = part.rpartition("@")
        pairs.append((layer_id, int(version.split(".", 1)[0])))
    return pairs


class MemoryCache:
    """An LRU of tiles bounded by the total size of their bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[tuple[str, int, int, int], CachedTile] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[str, int, int, int]) -> CachedTile | None:
        """The tile, marked as recently used, or None."""
        tile = self._items.get(key)
        if tile is not None:
            self._items.move_to_end(key)
        return tile

    def put(self, key: tuple[str, int, int, int], tile: CachedTile) -> None:
        """Store a tile, evicting the least recently used ones beyond the size bound."""
        cost = len(tile.data) + 64  # an empty tile still costs its entry
        if cost > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old.data) + 64
            if old.as_of > tile.as_of:  # a slower render finished after a fresher one
                tile = old
                cost = len(tile.data) + 64
        self._items[key] = tile
        self.size += cost
        while self.size > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted.data) + 64

    def drop_layers(self, layer_ids: set[str]) -> int:
        """Forget every tile that contains one of these layers; returns how many."""
        stale = [
            k
            for k in self._items
            if {i for i, _ in parse_layers_key(k[0].split("/", 1)[1])} & layer_ids
        ]
        for key in stale:
            self.size -= len(self._items.pop(key).data) + 64
        return len(stale)


class DiskCache:
    """Tiles as files ``<dir>/<database>/<fingerprint>/<layers key>/<z>/<x>/<y>.mvt.gz``, shared
    by all processes; writes are atomic (temporary file + rename), so readers never see half a tile.
    Each file starts with a HEADER (as-of event id, the layers that hit the feature cap).

    With ``max_bytes``, :meth:`sweep` keeps the cache within that budget: any caller may ask
    for a tile of any set of public layers at any zoom, so an unbounded cache would fill the
    disk. The first write after start asks for a sweep, then every SWEEP_EVERY of the budget.

    ``scope`` is the database's folder (:func:`database_scope`); until it is known the cache
    neither reads nor writes.
    """

    def __init__(self, root: Path, max_bytes: int | None = None, scope: str | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.scope = scope
        # Bytes written since the last sweep (this process's share; enough to pace sweeps).
        self.written = int(max_bytes * SWEEP_EVERY) if max_bytes else 0

    def needs_sweep(self) -> bool:
        """True when enough has been written since the last sweep to check the budget."""
        return self.max_bytes is not None and self.written >= self.max_bytes * SWEEP_EVERY

    def sweep(self) -> int:
        """When the cache is over its budget, delete the zoom levels of layer sets written
        least recently until it is under SWEEP_TARGET of the budget; returns the bytes freed.
        Runs in a worker thread (it walks the whole cache)."""
        self.written = 0
        if self.max_bytes is None:
            return 0
        # The budget is the folder's: every database's tiles count.
        levels = [
            (*_usage(z_dir), z_dir)
            for db_dir in _dirs(self.root)
            if db_dir.name.startswith(SCOPE_PREFIX)
            for fp_dir in _dirs(db_dir)
            for key_dir in _dirs(fp_dir)
            for z_dir in _dirs(key_dir)
        ]
        total = sum(size for _, size, _ in levels)
        if total <= self.max_bytes:
            return 0
        freed = 0
        for _, size, z_dir in sorted(levels, key=lambda level: level[0]):
            if total - freed <= self.max_bytes * SWEEP_TARGET:
                break
            shutil.rmtree(z_dir, ignore_errors=True)
            freed += size
        return freed

    def _dir(self, key: str) -> Path:
        fingerprint, layers = key.split("/", 1)
        if len(layers) > MAX_DIR_NAME:
            layers = "h-" + hashlib.sha1(layers.encode()).hexdigest()
        return self.root / str(self.scope) / fingerprint / layers

    def path(self, key: str, z: int, x: int, y: int) -> Path:
        """Where a tile lives (in this database's folder)."""
        return self._dir(key) / str(z) / str(x) / f"{y}.mvt.gz"

    def get(self, key: str, z: int, x: int, y: int) -> CachedTile | None:
        """The cached tile or None. Reads are synchronous on purpose: a small file in the page
        cache is read faster than a hop to a worker thread."""
        if self.scope is None:
            return None
        path = self.path(key, z, x, y)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if len(data) < HEADER.size or not data.startswith(MAGIC):
            return None  # an older cache format: rendered again
        _, as_of, names = HEADER.unpack_from(data)
        start = HEADER.size + names
        truncated = tuple(filter(None, data[HEADER.size : start].decode().split(",")))
        return CachedTile(data[start:], truncated, as_of)

    def put(self, key: str, z: int, x: int, y: int, tile: CachedTile) -> None:
        """Store a tile atomically; a failure to write (disk full, read-only) is not an error
        for the request that rendered it."""
        if self.scope is None:
            return
        path = self.path(key, z, x, y)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            keyfile = self._dir(key) / "key.txt"
            if not keyfile.exists():
                keyfile.write_text(key.split("/", 1)[1])
            names = ",".join(tile.truncated).encode()
            head = HEADER.pack(MAGIC, tile.as_of, len(names)) + names
            _atomic_write(path, head + tile.data)
            self.written += max(BLOCK, len(head) + len(tile.data))
        except OSError:
            pass

    def prune(self, versions: dict[str, int], fingerprint: str) -> int:
        """Delete this database's cached tiles of other fingerprints and of layer versions that
        are not current, and folders of the layout before databases had their own; returns the
        number of directories removed. Other databases' folders are left to their processes
        (and to :meth:`sweep`)."""
        if self.scope is None:
            return 0
        removed = 0
        for old in _dirs(self.root):
            if not old.name.startswith(SCOPE_PREFIX):
                shutil.rmtree(old, ignore_errors=True)
                removed += 1
        for fp_dir in _dirs(self.root / self.scope):
            if fp_dir.name != fingerprint:
                shutil.rmtree(fp_dir, ignore_errors=True)
                removed += 1
                continue
            for key_dir in _dirs(fp_dir):
                try:
                    pairs = parse_layers_key((key_dir / "key.txt").read_text())
                except (OSError, ValueError):
                    continue
                if any(versions.get(i) != v for i, v in pairs):
                    shutil.rmtree(key_dir, ignore_errors=True)
                    removed += 1
        return removed


def _dirs(path: Path) -> list[Path]:
    try:
        return [entry for entry in path.iterdir() if entry.is_dir()]
    except OSError:  # missing, or removed meanwhile by another process's sweep or prune
        return []


def _usage(folder: Path) -> tuple[float, int]:
    """(newest modification time, bytes on disk) of the files under a folder."""
    newest, size = 0.0, 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            newest = max(newest, st.st_mtime)
            size += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return newest, size


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
