"""A dashboard's rows: a narrow copy of its source layer with each row's units (sql/0018).

The copy holds the layer's id, the attributes the panels read (``Dashboard.fields``, the report
time first: the table is in that order) and, per unit level a dashboard can show, the smallest
unit id the row intersects (``u<i>``) and the others (``m<i>``, NULL unless the row is in more
than one). The counts then scan a table a third of the layer's width, and group by unit without
joining the reports to their memberships. Statement triggers on the layer's table keep it
current without looking units up again for rows that did not move (sql/0021). The server builds
it in the background at start (:func:`build_all`); a request that finds it missing or stale while
a build runs is answered from the layer itself rather than waiting, and one that finds no build
running builds it (a unit layer's new version, a dropped copy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from ioc.catalog.layers import Catalog, Layer
from ioc.dashboards.model import Dashboard
from ioc.db.connection import Pool
from ioc.db.identifiers import quote_ident
from ioc.query.units import CACHEABLE_ORIGINS, UNITS, UnitSet

# The unit filters and levels of a dashboard (BoardFilter's names) as the query service's units.
LEVELS: dict[str, tuple[str, str]] = {
    "district": ("district", "2019"),
    "ward": ("ward", "current"),
    "ward2019": ("ward", "2019"),
}
CURRENT_SQL = "SELECT ioc.dashboard_rows_current($1, $2, $3, $4)"
BUILD_SQL = "SELECT ioc.dashboard_rows_build($1, $2, $3, $4)"
# The build's own lock (sql/0020): held while a copy of the layer is being built.
TRY_BUILD_SQL = "SELECT pg_try_advisory_xact_lock(hashtext('ioc.dashboard_rows'), hashtext($1))"
CODES_SQL = "SELECT name, value, code FROM ioc.dashboard_values WHERE layer_id = $1"
# The planner's quantiles of the report time (ANALYZE's histogram): where a range's rows split.
BOUNDS_SQL = (
    "SELECT histogram_bounds::text::timestamptz[] FROM pg_stats"
    " WHERE schemaname = 'ioc' AND tablename = $1 AND attname = $2"
)
BUILD_TIMEOUT_MS = 600_000  # a million reports: ~10-20 s on a loaded machine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Level:
    """One unit level in the rows: its columns' number, units and unit layer."""

    index: int
    unit: UnitSet
    layer: Layer

    @property
    def first(self) -> str:
        return f"t.u{self.index}"

    @property
    def more(self) -> str:
        return f"t.m{self.index}"


@dataclass(frozen=True)
class Rows:
    """A built copy: its table (SQL), unit levels by BoardFilter name, the layer as the copy
    types it (coded attributes are integers) and the codes of their values."""

    table_sql: str
    levels: dict[str, Level]
    layer: Layer
    codes: dict[str, dict[str, int]]
    bounds: tuple[datetime, ...] = ()  # quantiles of the first column (the report time)

    def encode(self, document: Any) -> Any:
        """A CQL2-JSON document with the values of coded attributes as their codes (-1, which
        no value has, for a value the layer never had)."""
        if isinstance(document, list):
            return [self.encode(d) for d in document]
        if not isinstance(document, dict):
            return document
        args = document.get("args")
        if isinstance(args, list) and args and isinstance(args[0], dict):
            codes = self.codes.get(args[0].get("property", ""))
            if codes is not None:
                coded = [
                    [codes.get(v, -1) for v in a] if isinstance(a, list) else codes.get(a, -1)
                    for a in args[1:]
                ]
                return {**document, "args": [args[0], *coded]}
        return {k: self.encode(v) for k, v in document.items()}

    def decode(self, expr: str) -> str:
        """SQL of the value a coded expression stands for."""
        return f"(SELECT v.value FROM ioc.dashboard_values v WHERE v.code = {expr})"


def columns(board: Dashboard) -> list[str]:
    """The attributes copied, the report time first (the table's order)."""
    f = board.fields
    names = [f.reported_at, f.resolved_at, f.status, f.category, f.channel, f.handling_unit]
    return list(dict.fromkeys(names))


def coded(board: Dashboard) -> list[str]:
    """The attributes stored as codes: those the panels group and filter by value."""
    f = board.fields
    return list(dict.fromkeys([f.status, f.category, f.channel, f.handling_unit]))


def unit_layers() -> list[str]:
    """The unit layers of u1, u2, … (LEVELS' order)."""
    return [UNITS[key].layer_id for key in LEVELS.values()]


async def ensure(
    pool: Pool, catalog: Catalog, board: Dashboard, *, wait: bool = False
) -> Rows | None:
    """The dashboard's rows, built if missing or stale; None for a layer without a plain table
    (then the panels read the layer itself), and None while another connection builds them
    unless ``wait`` (a request does not wait 30 s for a million reports' build)."""
    levels = {
        name: (i + 1, UNITS[key], catalog.find(UNITS[key].layer_id))
        for i, (name, key) in enumerate(LEVELS.items())
    }
    if any(layer is None for _, _, layer in levels.values()):
        return None
    args = (board.layer, columns(board), unit_layers(), coded(board))
    name = await pool.fetchval(CURRENT_SQL, *args)
    source = catalog.find(board.layer)
    if source is None:
        return None
    if name is None:
        async with pool.acquire() as conn, conn.transaction():
            if not wait and not await conn.fetchval(TRY_BUILD_SQL, board.layer):
                return None
            await conn.execute(
                "SELECT set_config('statement_timeout', $1, true)", str(BUILD_TIMEOUT_MS)
            )
            if source.origin in CACHEABLE_ORIGINS:  # plain tables
                # Writes wait for the build: one committed between the copy's snapshot and its
                # triggers would be in neither (the trigger creation takes this lock anyway).
                await conn.execute(f"LOCK TABLE {source.table_sql} IN SHARE ROW EXCLUSIVE MODE")
            name = await conn.fetchval(BUILD_SQL, *args)
    if name is None:
        return None
    codes: dict[str, dict[str, int]] = {n: {} for n in coded(board)}
    for row in await pool.fetch(CODES_SQL, board.layer):
        codes[row["name"]][row["value"]] = row["code"]
    attributes = tuple(
        replace(a, type="integer", values=None) if a.name in codes else a for a in source.attributes
    )
    bounds = await pool.fetchval(BOUNDS_SQL, name, columns(board)[0])
    return Rows(
        f"ioc.{quote_ident(name)}",
        {n: Level(i, unit, layer) for n, (i, unit, layer) in levels.items() if layer},
        replace(source, attributes=attributes),
        codes,
        tuple(bounds or ()),
    )


async def build_all(pool: Pool, catalog: Catalog, boards: Iterable[Dashboard]) -> None:
    """Build (or check) every dashboard's rows, one after the other: the server's start-up task,
    so that no request pays for a first build. A failure is logged; requests then build."""
    for board in boards:
        try:
            await ensure(pool, catalog, board, wait=True)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning(
                "dashboard rows not built", extra={"dashboard": board.id, "error": str(exc)}
            )
