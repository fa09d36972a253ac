"""A dashboard's panels, aggregated by the query service (``ioc.query``) and cached per data
version.

Every number comes from query documents of ``POST /query`` checked for the caller (the layer's
access, the role's timeout) and written by the query service: two passes
(``ioc.dashboards.counts``), run at the same time on two connections, over the dashboard's
rows (``ioc.dashboards.rows``: a narrow copy of the layer with each report's units, kept by
triggers) — counts grouped by status, channel, category, time bucket, handling unit and the
unit of the level shown in one scan; the exact median time to close.
A panel is not narrowed by its own dimension (the category bar keeps every category while one
is selected, so the selection can be seen and changed).

The whole answer is cached under (dashboard, filter, layer version, newest change event of the
layer, minute): a hundred wall screens on the same view cost one computation per change, and
concurrent requests for a state being computed wait for that computation instead of repeating
it. The minute is in the key because "overdue" and "today" move with the clock.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.dashboards import counts
from ioc.dashboards import rows as board_rows
from ioc.dashboards.filters import CITY_TZ, VALUE_FILTERS, BoardFilter
from ioc.dashboards.model import Dashboard
from ioc.dashboards.rows import Rows
from ioc.db.connection import Pool
from ioc.query.analysis import Plan, resolve
from ioc.query.model import QuerySettings, parse_query
from ioc.query.runner import (
    db_error,
    fetch_rows,
    open_session,
    plan_query,
    want_membership,
)

CACHE_SIZE = 256
UNIT_GROUPS = {
    "district": {"district": "2019"},
    "ward": {"ward": "current"},
    "ward2019": {"ward": "2019"},
}
PASS_WORK_MEM = "128MB"
SPLIT_MIN = timedelta(days=28)  # ranges at least this long are counted in two parts
VERSION_SQL = (
    "SELECT (SELECT version FROM ioc.layers WHERE id = $1),"
    " (SELECT coalesce(max(id), 0) FROM ioc.events WHERE layer_id = $1)"
)


# --- the filter as query documents -------------------------------------------------------


def _eq(prop: str, value: Any) -> dict[str, Any]:
    return {"op": "=", "args": [{"property": prop}, value]}


def _in(prop: str, values: list[str]) -> dict[str, Any]:
    return {"op": "in", "args": [{"property": prop}, list(values)]}


def _and(args: list[dict[str, Any]]) -> dict[str, Any] | None:
    return None if not args else args[0] if len(args) == 1 else {"op": "and", "args": args}


def _stamp(at: datetime) -> dict[str, str]:
    return {"timestamp": at.astimezone(CITY_TZ).isoformat()}


def overdue_filter(board: Dashboard, now: datetime) -> dict[str, Any]:
    """Open reports older than their category's handling deadline."""
    fields, deadline = board.fields, board.deadline
    by_hours: dict[float, list[str]] = {}
    for category, hours in deadline.by_category.items():
        by_hours.setdefault(hours, []).append(category)
    late: list[dict[str, Any]] = []
    for hours, categories in sorted(by_hours.items()):
        cutoff = {
            "op": "<",
            "args": [{"property": fields.reported_at}, _stamp(now - timedelta(hours=hours))],
        }
        late.append({"op": "and", "args": [_in(fields.category, categories), cutoff]})
    other = {
        "op": "<",
        "args": [
            {"property": fields.reported_at},
            _stamp(now - timedelta(hours=deadline.default_hours)),
        ],
    }
    if deadline.by_category:
        other = {
            "op": "and",
            "args": [
                {"op": "not", "args": [_in(fields.category, list(deadline.by_category))]},
                other,
            ],
        }
    late.append(other)
    either = late[0] if len(late) == 1 else {"op": "or", "args": late}
    return {"op": "and", "args": [_in(fields.status, board.open_statuses), either]}


def _spatial(f: BoardFilter) -> list[dict[str, Any]]:
    """Unit filters as spatial predicates: the same membership that groups by unit."""
    out: list[dict[str, Any]] = []
    if f.ward:
        out.append({"op": "intersects", "ward": f.ward})
    if f.ward2019:
        out.append({"op": "intersects", "ward": f.ward2019, "ward_edition": "2019"})
    if f.district:
        out.append(
            {
                "op": "intersects",
                "layer": "districts_2019",
                "filter": _eq("district_code", f.district),
            }
        )
    return out


def query_doc(
    board: Dashboard,
    f: BoardFilter,
    *,
    group_by: list[dict[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
    start: datetime | None = None,
) -> dict[str, Any]:
    """The query document of one panel under the filter ``f``."""
    args = [
        _eq(getattr(board.fields, name), v) for name in VALUE_FILTERS if (v := getattr(f, name))
    ]
    if extra:
        args.append(extra)
    begin = max(d for d in (start, f.start) if d) if (start or f.start) else None
    doc: dict[str, Any] = {
        "source": board.layer,
        "group_by": group_by or [],
        "aggregates": [{"op": "count", "as": "n"}],
        "geometry": False,
        "spatial": _spatial(f),
        "filter": _and(args),
        "filter_lang": "cql2-json",
        "from": begin.isoformat() if begin else None,
        "to": f.end.isoformat() if f.end else None,
    }
    return {k: v for k, v in doc.items() if v is not None}


# --- running ---------------------------------------------------------------------------------


Runner = Callable[[dict[str, Any]], Awaitable[list[dict[str, Any]]]]
PassRunner = Callable[
    [dict[str, Any], Callable[[Plan], counts.Statement]], Awaitable[list[asyncpg.Record]]
]


def _ordered(counts: dict[Any, int], order: list[str] | None = None) -> list[dict[str, Any]]:
    """[{key, n}] in the manifest's value order, then by count."""
    rank = {v: i for i, v in enumerate(order or [])}
    keys = sorted(counts, key=lambda k: (rank.get(k, len(rank)), -counts[k], str(k)))
    return [{"key": k, "n": counts[k]} for k in keys]


async def compute(
    board: Dashboard,
    catalog: Catalog,
    f: BoardFilter,
    run: PassRunner,
    now: datetime,
    copy: Rows | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Every panel of the dashboard under ``f`` (see the module's docstring): the passes of
    ``ioc.dashboards.counts``, each on its own connection, at the same time, over the
    dashboard's rows (``copy``) when there are — there, a long range counted in two halves
    (``halves``; ``until``: the newest report when ``f`` has no end)."""
    fields = board.fields
    layer = catalog.find(board.layer)
    assert layer is not None  # checked by the caller (dashboard_data)
    values = {a.name: list(a.values or []) for a in layer.attributes}
    late = overdue_filter(board, now)
    today = now.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    after_midnight = {"op": ">=", "args": [{"property": fields.reported_at}, _stamp(today)]}
    flags = {n: _eq(getattr(fields, n), v) for n in counts.FLAGGED if (v := getattr(f, n))}
    unflagged = f.without(*counts.FLAGGED)
    closed = _in(fields.status, board.closed_statuses)
    parts = halves(unflagged, until or now, copy.bounds) if copy is not None else [unflagged]
    passes = [
        run(
            query_doc(board, part),
            lambda plan: counts.counts_statement(
                plan, board, f, flags=flags, late=late, today=after_midnight, rows=copy
            ),
        )
        for part in parts
    ]
    passes.append(
        run(
            query_doc(board, f, extra=closed),
            lambda plan: counts.median_statement(plan, board, closed, copy, counts.unit_filters(f)),
        )
    )
    if copy is None:  # the layer itself: units through the query service's membership
        passes.append(
            run(
                query_doc(board, f.without(f.units), group_by=[UNIT_GROUPS[f.units]]),
                lambda plan: counts.units_statement(plan, board, late),
            )
        )
    answers = await asyncio.gather(*passes)
    rows = _merge(answers[: len(parts)])
    medians, *by_unit = answers[len(parts) :]
    sets = {
        g: [r for r in rows if r["g"] == counts.grouping(keys)] for g, keys in counts.SETS.items()
    }
    (whole,) = sets["all"]

    def tally(name: str, n: str = "n") -> dict[Any, int]:
        return {r[f"k_{name}"]: r[n] for r in sets[name] if r[n]}

    opened = set(board.open_statuses)
    statuses = tally("status")
    unit_counts = (
        by_unit[0]
        if by_unit
        else [
            {
                "code": r["unit_code"],
                "name": r["unit_name"],
                "status": r["k_status"],
                "n": r["n_without_unit"],
                "late": r["late_without_unit"],
            }
            for r in sets["units"]
            if r["unit_code"] is not None
        ]
    )
    unit_rows = _tally(
        unit_counts, "code", opened, lambda r: {"code": r["code"], "name": r["name"]}
    )
    handlers = _tally(
        [{**r, "key": r["k_handling_unit"], "status": r["k_status"]} for r in sets["ranking"]],
        "key",
        opened,
        lambda r: {"key": r["key"]},
    )
    median_s = medians[0][0]
    return {
        "kpi": {
            "total": whole["n"],
            "today": whole["today"],
            "open": sum(n for s, n in statuses.items() if s in opened),
            "overdue": whole["late"],
            "median_close_hours": None if median_s is None else round(median_s / 3600, 1),
        },
        "category": _ordered(tally("category", "n_without_category"), values.get(fields.category)),
        "status": _ordered(tally("status", "n_without_status"), values.get(fields.status)),
        "channel": _ordered(tally("channel", "n_without_channel"), values.get(fields.channel)),
        "series": [
            {"key": _bucket(r["k_time"]), "n": r["n"]}
            for r in sorted(sets["series"], key=lambda r: r["k_time"])
            if r["n"]
        ],
        "ranking": sorted(
            handlers.values(), key=lambda e: (-e["overdue"], -e["open"], str(e["key"]))
        ),
        "units": sorted(unit_rows.values(), key=lambda e: e["code"]),
        "alerts": _alerts(board, unit_rows),
    }


def halves(f: BoardFilter, until: datetime, bounds: tuple[datetime, ...] = ()) -> list[BoardFilter]:
    """``f``'s range cut in two when it is long: GROUPING SETS has no parallel plan, so two
    scans at the same time use both cores (counts of disjoint rows add up exactly); else ``f``
    alone. The cut is at the city midnight before the median report time of the range by the
    planner's quantiles (``bounds``; reports are not spread evenly over a year), else before
    the range's middle."""
    end = f.end or until
    if f.start is None or end - f.start < SPLIT_MIN:
        return [f]
    inside = [b for b in bounds if f.start < b < end]
    middle = inside[len(inside) // 2] if inside else f.start + (end - f.start) / 2
    mid = middle.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    if not f.start < mid < end:
        return [f]
    return [replace(f, end=mid), replace(f, start=mid)]


def _merge(parts: list[list[Any]]) -> list[Any]:
    """The counts pass's rows of the halves of a range, summed per grouping set and key."""
    if len(parts) == 1:
        return parts[0]
    out: dict[tuple, dict[str, Any]] = {}
    for row in (dict(r) for part in parts for r in part):
        key = tuple(v for k, v in row.items() if k not in counts.COUNTED)
        if key in out:
            for name in counts.COUNTED:
                out[key][name] += row[name]
        else:
            out[key] = row
    return list(out.values())


def _tally(
    rows: list[Any], key: str, opened: set[str], head: Callable[[Any], dict[str, Any]]
) -> dict[Any, dict[str, Any]]:
    """Total, open and overdue per key, from counts (``n``, ``late``) by (key, status)."""
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if not row["n"]:
            continue
        entry = out.setdefault(row[key], {**head(row), "total": 0, "open": 0, "overdue": 0})
        entry["total"] += row["n"]
        entry["open"] += row["n"] if row["status"] in opened else 0
        entry["overdue"] += row["late"]
    return out


def _bucket(value: Any) -> str:
    return value.astimezone(CITY_TZ).isoformat() if isinstance(value, datetime) else str(value)


def _alerts(board: Dashboard, units: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Units past a threshold, the first threshold each passes colouring it, worst first."""
    out = []
    for entry in units.values():
        for i, threshold in enumerate(board.thresholds):
            if entry[threshold.metric] > threshold.above:
                entry["alert"] = i
                out.append(
                    {
                        "code": entry["code"],
                        "name": entry["name"],
                        "threshold": i,
                        "metric": threshold.metric,
                        "value": entry[threshold.metric],
                    }
                )
                break
    return sorted(out, key=lambda a: (a["threshold"], -a["value"], a["code"]))


# --- the query service, for one caller -------------------------------------------------------


async def _run_rows(
    pool: Pool,
    catalog: Catalog,
    principal: Principal,
    settings: QuerySettings,
    document: dict[str, Any],
):
    doc = parse_query(document)
    plan, timeout_ms = plan_query(doc, catalog, principal, settings)
    plan.max_rows = max(plan.max_rows, 100_000)  # every group, whatever the role's row cap
    await want_membership(pool, plan, settings)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await open_session(conn, timeout_ms)
        _, rows = await fetch_rows(conn, plan, settings)
    return [dict(r) for r in rows]


async def run_pass(
    pool: Pool,
    catalog: Catalog,
    principal: Principal,
    settings: QuerySettings,
    document: dict[str, Any],
    write: Callable[[Plan], counts.Statement],
) -> list[asyncpg.Record]:
    """One pass of ``ioc.dashboards.counts`` over a query document's plan, for the caller."""
    plan, timeout_ms = plan_query(parse_query(document), catalog, principal, settings)
    await want_membership(pool, plan, settings)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await open_session(conn, timeout_ms)
        # Room for the pass's hash tables and the median's sort in memory (one computation per
        # state and data version, whatever the number of screens).
        await conn.execute("SELECT set_config('work_mem', $1, true)", PASS_WORK_MEM)
        try:
            await resolve(conn, plan, min_features=settings.membership_min_features)
            statement = write(plan)
            return await conn.fetch(statement.sql, *statement.args)
        except asyncpg.PostgresError as exc:
            raise db_error(exc) from exc


async def default_range(
    board: Dashboard, f: BoardFilter, run: Runner
) -> tuple[BoardFilter, datetime]:
    """``f`` over the dashboard's last ``days`` city days up to its newest report (a replayed
    or quiet layer still shows its data), whole days so it stays one state all day; and that
    newest report's time."""
    doc = query_doc(board, BoardFilter())
    doc["aggregates"] = [{"op": "max", "attribute": board.fields.reported_at, "as": "latest"}]
    rows = await run(doc)
    latest = rows[0]["latest"] if rows and rows[0]["latest"] else datetime.now(CITY_TZ)
    day = latest.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return replace(f, start=day - timedelta(days=board.days - 1)), latest


class PanelCache:
    """Answers by (dashboard, filter, data version, minute), and the computations under way."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.answers: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self.running: dict[tuple, asyncio.Future] = {}
        self.computed = 0  # computations run (tests, docs/dashboards.md)

    async def get(
        self, key: tuple, make: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        if key in self.answers:
            self.answers.move_to_end(key)
            return self.answers[key]
        if key in self.running:
            return await asyncio.shield(self.running[key])
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.running[key] = future
        try:
            answer = await make()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self.running.pop(key, None)
        future.set_result(answer)
        self.computed += 1
        self.answers[key] = answer
        while len(self.answers) > self.size:
            self.answers.popitem(last=False)
        return answer


CACHE = PanelCache()


async def data_version(pool: Pool, layer_id: str) -> tuple[int, int]:
    """(layer version, newest change event of the layer): what makes an answer stale."""
    row = await pool.fetchrow(VERSION_SQL, layer_id)
    return int(row[0] or 0), int(row[1])


async def dashboard_data(
    pool: Pool,
    catalog: Catalog,
    principal: Principal,
    settings: QuerySettings,
    board: Dashboard,
    f: BoardFilter,
    *,
    now: datetime | None = None,
    cache: PanelCache = CACHE,
    copy: bool = True,
) -> dict[str, Any]:
    """The panels of ``board`` under ``f`` for a caller who may read its layer (404 otherwise),
    from the cache when the layer has not changed since."""
    catalog.get(board.layer, principal)  # 404 for a caller who may not read the layer
    now = now or datetime.now(CITY_TZ)
    version = await data_version(pool, board.layer)
    minute = now.replace(second=0, microsecond=0)
    key = (board.id, f.key(), version, minute.isoformat())

    async def run(document: dict[str, Any]) -> list[dict[str, Any]]:
        return await _run_rows(pool, catalog, principal, settings, document)

    async def one_pass(document: dict[str, Any], write) -> list[asyncpg.Record]:
        return await run_pass(pool, catalog, principal, settings, document, write)

    async def make() -> dict[str, Any]:
        state, until = (f, None) if f.start or f.end else await default_range(board, f, run)
        rows = await board_rows.ensure(pool, catalog, board) if copy else None
        panels = await compute(board, catalog, state, one_pass, minute, rows, until)
        return {
            "dashboard": board.id,
            "version": list(version),
            "at": minute.isoformat(),
            "filter": state.query(),
            **panels,
        }

    return await cache.get(key, make)
