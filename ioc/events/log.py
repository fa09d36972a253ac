"""Recording change events inside a writer's transaction, and reading them back.

``record_event`` runs on the writer's own psycopg2 cursor: the row and its ``pg_notify`` are
part of the write's transaction, so a rolled-back write neither records nor announces.

Each event also carries what the tile caches of every process need (sql/0013): its change
boxes and the layer's *tile base* (the version its tiles are keyed by, moved only by a
whole-layer change) and *floor* (the oldest event whose boxes are still kept). Both are decided
here, under the order lock, so every process reading the stream reaches the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ioc.db.connection import Pool, scalar

CHANNEL = "ioc_events"
MAX_IDS = 500  # larger batches store NULL ids and the count: events stay small
# Held from the event's insert to the writer's commit, so event ids become visible in order:
# otherwise a reader could see id 11 before a slower writer commits id 10, and skip it for good.
ORDER_LOCK = 0x10CE7E47
MAX_BOXES = 64  # change boxes kept per event; more are merged on a coarser grid
# Item-level events of a layer whose boxes every process keeps since the last whole-layer
# change; past it the older half is forgotten (the floor moves): a tile last checked before the
# floor is rendered again, the rest stay cached.
MAX_TRACKED = 4096
MERGE_CELL_DEG = 0.005  # first grid (about 500 m) on which too many boxes are merged

Bbox = tuple[float, float, float, float]


@dataclass(frozen=True)
class ChangeEvent:
    """One recorded change: which layer, what happened, which features, where."""

    id: int
    at: datetime
    layer: str
    op: str
    version: int | None
    ids: list[str] | None
    count: int
    bbox: list[float] | None
    # For the tile caches (tiles.changes): CRS84 boxes (4 numbers each; None for a whole-layer
    # change), the version the layer's tiles are keyed by, the floor of its kept boxes.
    boxes: list[float] | None = None
    tile_base: int | None = None
    tile_floor: int | None = None

    def document(self) -> dict[str, Any]:
        """The JSON payload of the event (SSE data and the changes list)."""
        return {
            "id": self.id,
            "layer": self.layer,
            "op": self.op,
            "version": self.version,
            "ids": self.ids,
            "count": self.count,
            "bbox": self.bbox,
            "at": self.at.isoformat(),
        }


def extent_sql(geom_col: str, source_sql: str) -> str:
    """SQL of the CRS84 extent of ``geom_col`` over ``source_sql`` (a FROM … WHERE …)."""
    return (
        f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT"
        f" ST_Extent(ST_Transform({geom_col}, 4326)) AS e FROM {source_sql}) AS x"
    )


def union(a: Bbox | None, b: Bbox | None) -> Bbox | None:
    """The box covering both (either may be None)."""
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def fetch_extent(cur, sql: str, params: Sequence[Any] = ()) -> Bbox | None:
    """Run an ``extent_sql``; None when nothing has a geometry."""
    cur.execute(sql, tuple(params))
    row = cur.fetchone()
    return None if row is None or row[0] is None else (row[0], row[1], row[2], row[3])


def fetch_boxes(cur, geom_col: str, source_sql: str, params: Sequence[Any] = ()) -> list[Bbox]:
    """CRS84 boxes of the geometries of ``source_sql`` (a FROM … WHERE …), one per ~500 m
    cell: finer ``boxes=`` for ``record_event`` than one extent of a scattered batch."""
    point = f"ST_PointOnSurface(ST_Transform({geom_col}, 4326))"
    cur.execute(
        f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT"  # noqa: S608
        f" ST_Extent(ST_Transform({geom_col}, 4326)) AS e FROM {source_sql}"
        f" GROUP BY floor(ST_X({point}) / {MERGE_CELL_DEG}), floor(ST_Y({point}) / "
        f"{MERGE_CELL_DEG})) AS x WHERE e IS NOT NULL",
        tuple(params),
    )
    return [(r[0], r[1], r[2], r[3]) for r in cur.fetchall()]


def merge_boxes(boxes: Sequence[Bbox], limit: int = MAX_BOXES) -> list[Bbox]:
    """At most ``limit`` boxes covering ``boxes``: merged per grid cell of their centres, the
    grid doubling until few enough remain."""
    merged = list(boxes)
    cell = MERGE_CELL_DEG
    while len(merged) > limit:
        cells: dict[tuple[int, int], Bbox] = {}
        for box in merged:
            at = (int((box[0] + box[2]) / 2 // cell), int((box[1] + box[3]) / 2 // cell))
            cells[at] = union(cells.get(at), box)  # type: ignore[assignment]
        merged, cell = list(cells.values()), cell * 2
    return merged


def _tile_state(
    cur, layer_id: str, version: int | None, boxes: list[Bbox] | None, event_id: int
) -> tuple[int | None, int, int]:
    """(tile base, floor, tracked count) after this event. A whole-layer change or a change
    with no known place starts a new base at its version; otherwise the event's boxes are
    tracked, and past MAX_TRACKED the floor moves up by half of them. A placed change whose
    version does not follow the last event's (the layer's first event, or something changed
    it without one, e.g. ``refresh_stats``) starts a base at the version before it instead."""
    cur.execute(
        "SELECT version, tile_base, tile_floor, tile_tracked FROM ioc.events"
        " WHERE layer_id = %s ORDER BY id DESC LIMIT 1",
        (layer_id,),
    )
    prev = cur.fetchone()
    follows = (
        prev is not None
        and None not in (prev[0], prev[1], prev[2], version)
        and version == prev[0] + 1
    )
    if boxes is None or version is None:
        return version, event_id, 0
    if not follows:
        # Until now every process keyed the layer's tiles by its catalog version, which an item
        # write moves by one: that stays the base, with this event's boxes tracked on it, so
        # the key and tile URLs' digest (tiles.versions) do not move for a placed write.
        return version - 1, event_id - 1, 1
    assert prev is not None
    floor, tracked = int(prev[2]), int(prev[3]) + 1
    if tracked > MAX_TRACKED:
        keep = MAX_TRACKED // 2
        cur.execute(
            "SELECT id FROM ioc.events WHERE layer_id = %s AND id > %s"
            " ORDER BY id DESC OFFSET %s LIMIT 1",
            (layer_id, floor, keep - 1),
        )
        found = cur.fetchone()
        floor, tracked = (int(found[0]), keep) if found else (floor, tracked)
    return int(prev[1]), floor, tracked


def record_event(
    cur,
    layer_id: str,
    op: str,
    version: int | None,
    ids: Sequence[str] | None = None,
    count: int | None = None,
    bbox: Bbox | None = None,
    boxes: Sequence[Bbox] | None = None,
) -> int:
    """Record one event in the current transaction and NOTIFY its id (sent at commit); call it
    last before the commit (it serialises writers until then).

    ``bbox`` covers the changed features before and after; ``boxes`` (optional, e.g. from
    :func:`fetch_boxes`) cover them more finely, so a scattered batch makes only the tiles it
    touches stale. A ``layer.*`` op, or an item op with neither, changes the whole layer's tiles.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (ORDER_LOCK,))
    n = len(ids) if ids is not None else (count or 0)
    kept = list(ids) if ids is not None and len(ids) <= MAX_IDS else None
    places: list[Bbox] | None = list(boxes) if boxes else ([bbox] if bbox else None)
    if op.startswith("layer."):
        places = None
    elif places is not None:
        places = merge_boxes(places)
    cur.execute("SELECT nextval(pg_get_serial_sequence('ioc.events', 'id'))")
    event_id = int(scalar(cur))
    base, floor, tracked = _tile_state(cur, layer_id, version, places, event_id)
    cur.execute(
        "INSERT INTO ioc.events (id, layer_id, op, version, feature_ids, count, bbox, boxes,"
        " tile_base, tile_floor, tile_tracked) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s)",
        (
            event_id,
            layer_id,
            op,
            version,
            kept,
            n,
            list(bbox) if bbox else None,
            [v for box in places for v in box] if places is not None else None,
            base,
            floor,
            tracked,
        ),
    )
    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(event_id)))
    return event_id


EVENT_COLUMNS = (
    "id, at, layer_id, op, version, feature_ids, count, bbox, boxes, tile_base, tile_floor"
)
EVENTS_SQL = (
    f"SELECT {EVENT_COLUMNS} FROM ioc.events"
    " WHERE id > $1 AND ($2::text[] IS NULL OR layer_id = ANY($2)) ORDER BY id LIMIT $3"
)


async def events_since(
    pool: Pool, after_id: int, layer_ids: Iterable[str] | None, limit: int
) -> list[ChangeEvent]:
    """Events after ``after_id`` (of ``layer_ids``, or all), oldest first."""
    wanted = list(layer_ids) if layer_ids is not None else None
    rows = await pool.fetch(EVENTS_SQL, after_id, wanted, limit)
    return [ChangeEvent(*r) for r in rows]


# The newest event of each registered layer (its tile base and floor), then the kept boxes
# after each floor: what a starting process needs of the stream for its tile caches.
TILE_STATES_SQL = f"""
SELECT x.* FROM ioc.layers l CROSS JOIN LATERAL (
    SELECT {EVENT_COLUMNS} FROM ioc.events e WHERE e.layer_id = l.id AND e.id <= $1
    ORDER BY e.id DESC LIMIT 1) x
"""
TRACKED_SQL = f"""
SELECT {", ".join("e." + c.strip() for c in EVENT_COLUMNS.split(","))} FROM ioc.events e
JOIN unnest($1::text[], $2::bigint[]) AS f(layer_id, floor) ON e.layer_id = f.layer_id
WHERE e.id > f.floor AND e.id <= $3 AND e.boxes IS NOT NULL ORDER BY e.id
"""


async def tile_states(pool: Pool) -> tuple[int, list[ChangeEvent], list[ChangeEvent]]:
    """(latest event id, each layer's newest event, the tracked events after each floor)."""
    last = await latest_id(pool)
    newest = [ChangeEvent(*r) for r in await pool.fetch(TILE_STATES_SQL, last)]
    floors = [(e.layer, e.tile_floor) for e in newest if e.tile_floor is not None]
    rows = await pool.fetch(TRACKED_SQL, [f[0] for f in floors], [f[1] for f in floors], last)
    return last, newest, [ChangeEvent(*r) for r in rows]


async def latest_id(pool: Pool) -> int:
    """The id of the newest event (0 when none)."""
    return int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM ioc.events"))


# One backward index probe (layer_id, id) per layer, not a scan of every layer's events.
NEWEST_OF_SQL = """
SELECT coalesce(max(x.id), 0) FROM unnest($1::text[]) AS l(id) CROSS JOIN LATERAL (
    SELECT e.id FROM ioc.events e WHERE e.layer_id = l.id AND e.id <= $2
    ORDER BY e.id DESC LIMIT 1) x
"""


async def newest_of(pool: Pool, layer_ids: Iterable[str], upto: int) -> int:
    """The newest event id of ``layer_ids`` not after ``upto`` (0 when none): where a stream of
    those layers may resume without its id telling anything of the other layers' events."""
    return int(await pool.fetchval(NEWEST_OF_SQL, list(layer_ids), upto))


# Past the retention, an event goes unless its layer's tile caches still need it: the newest
# event of each layer (its tile base and floor) and the events after its floor stay.
PRUNE_SQL = """
DELETE FROM ioc.events e WHERE e.at < now() - make_interval(secs => $1)
AND NOT EXISTS (
    SELECT 1 FROM (SELECT n.id, n.tile_floor FROM ioc.events n WHERE n.layer_id = e.layer_id
                   ORDER BY n.id DESC LIMIT 1) last
    WHERE e.id = last.id OR e.id > last.tile_floor)
"""


async def prune(pool: Pool, retention_hours: float) -> int:
    """Forget events older than the retention period; how many were removed."""
    status = await pool.execute(PRUNE_SQL, retention_hours * 3600.0)
    return int(status.split()[-1])
