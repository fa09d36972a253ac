"""Recording change events inside a writer's transaction, and reading them back.

``record_event`` runs on the writer's own psycopg2 cursor: the row and its ``pg_notify`` are
part of the write's transaction, so a rolled-back write neither records nor announces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ioc.db.connection import Pool

CHANNEL = "ioc_events"
MAX_IDS = 500  # larger batches store NULL ids and the count: events stay small
# Held from the event's insert to the writer's commit, so event ids become visible in order:
# otherwise a reader could see id 11 before a slower writer commits id 10, and skip it for good.
ORDER_LOCK = 0x10CE7E47

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


def record_event(
    cur,
    layer_id: str,
    op: str,
    version: int | None,
    ids: Sequence[str] | None = None,
    count: int | None = None,
    bbox: Bbox | None = None,
) -> int:
    """Record one event in the current transaction and NOTIFY its id (sent at commit); call it
    last before the commit (it serialises writers until then)."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (ORDER_LOCK,))
    n = len(ids) if ids is not None else (count or 0)
    kept = list(ids) if ids is not None and len(ids) <= MAX_IDS else None
    cur.execute(
        "INSERT INTO ioc.events (layer_id, op, version, feature_ids, count, bbox)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (layer_id, op, version, kept, n, list(bbox) if bbox else None),
    )
    row = cur.fetchone()
    assert row is not None  # RETURNING of an INSERT of one row
    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(row[0])))
    return int(row[0])


EVENTS_SQL = (
    "SELECT id, at, layer_id, op, version, feature_ids, count, bbox FROM ioc.events"
    " WHERE id > $1 AND ($2::text[] IS NULL OR layer_id = ANY($2)) ORDER BY id LIMIT $3"
)


async def events_since(
    pool: Pool, after_id: int, layer_ids: Iterable[str] | None, limit: int
) -> list[ChangeEvent]:
    """Events after ``after_id`` (of ``layer_ids``, or all), oldest first."""
    wanted = list(layer_ids) if layer_ids is not None else None
    rows = await pool.fetch(EVENTS_SQL, after_id, wanted, limit)
    return [ChangeEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]


async def latest_id(pool: Pool) -> int:
    """The id of the newest event (0 when none)."""
    return int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM ioc.events"))


async def prune(pool: Pool, retention_hours: float) -> int:
    """Forget events older than the retention period; how many were removed."""
    status = await pool.execute(
        "DELETE FROM ioc.events WHERE at < now() - make_interval(secs => $1)",
        retention_hours * 3600.0,
    )
    return int(status.split()[-1])
