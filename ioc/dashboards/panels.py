"""A dashboard's panels, aggregated by the query service (``ioc.query``) and cached per data
version.

Every number is a query document of ``POST /query`` run for the caller (the layer's access, the
role's timeout): counts grouped by status, channel, category, time bucket, handling unit and
administrative unit (its cached ward membership at city scale), under the dashboard's filter.
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
from ioc.dashboards.filters import CITY_TZ, VALUE_FILTERS, BoardFilter
from ioc.dashboards.model import Dashboard
from ioc.db.connection import Pool
from ioc.db.identifiers import quote_ident
from ioc.query.model import QuerySettings, parse_query
from ioc.query.runner import (
    compile_plan,
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
UNIT_CODES = {"district": "district_code", "ward": "ward_code", "ward2019": "ward_code"}
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


def _counts(rows: list[dict[str, Any]], key: str) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for row in rows:
        out[row[key]] = out.get(row[key], 0) + int(row["n"])
    return out


def _ordered(counts: dict[Any, int], order: list[str] | None = None) -> list[dict[str, Any]]:
    """[{key, n}] in the manifest's value order, then by count."""
    rank = {v: i for i, v in enumerate(order or [])}
    keys = sorted(counts, key=lambda k: (rank.get(k, len(rank)), -counts[k], str(k)))
    return [{"key": k, "n": counts[k]} for k in keys]


async def compute(
    board: Dashboard,
    catalog: Catalog,
    f: BoardFilter,
    run: Runner,
    now: datetime,
    median: Callable[[dict[str, Any]], Awaitable[float | None]],
) -> dict[str, Any]:
    """Every panel of the dashboard under ``f`` (see the module's docstring)."""
    fields = board.fields
    layer = catalog.find(board.layer)
    assert layer is not None  # checked by the caller (dashboard_data)
    values = {a.name: list(a.values or []) for a in layer.attributes}
    overdue = overdue_filter(board, now)
    today = now.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    unit_f = f.without(f.units)
    unit_key = UNIT_GROUPS[f.units]

    def by(*keys: dict[str, str]) -> list[dict[str, str]]:
        return list(keys)

    status_all = await run(query_doc(board, f, group_by=by({"attribute": fields.status})))
    status_pie = (
        status_all
        if not f.status
        else await run(
            query_doc(board, f.without("status"), group_by=by({"attribute": fields.status}))
        )
    )
    channel = await run(
        query_doc(board, f.without("channel"), group_by=by({"attribute": fields.channel}))
    )
    category = await run(
        query_doc(board, f.without("category"), group_by=by({"attribute": fields.category}))
    )
    series = await run(query_doc(board, f, group_by=by({"time": f.bucket})))
    units = await run(query_doc(board, unit_f, group_by=by(unit_key, {"attribute": fields.status})))
    units_late = await run(query_doc(board, unit_f, group_by=by(unit_key), extra=overdue))
    ranking = await run(
        query_doc(
            board, f, group_by=by({"attribute": fields.handling_unit}, {"attribute": fields.status})
        )
    )
    ranking_late = await run(
        query_doc(board, f, group_by=by({"attribute": fields.handling_unit}), extra=overdue)
    )
    today_rows = await run(query_doc(board, f, start=today))
    closed = _in(fields.status, board.closed_statuses)
    median_s = await median(query_doc(board, f, extra=closed))

    statuses = _counts(status_all, fields.status)
    opened = set(board.open_statuses)
    code, name = UNIT_CODES[f.units], _name(f.units)
    unit_rows = _tally(
        units,
        units_late,
        lambda r: str(r[code]),
        fields.status,
        opened,
        lambda r: {"code": str(r[code]), "name": r.get(name)},
    )
    handlers = _tally(
        ranking,
        ranking_late,
        lambda r: r[fields.handling_unit],
        fields.status,
        opened,
        lambda r: {"key": r[fields.handling_unit]},
    )
    alerts = _alerts(board, unit_rows)
    return {
        "kpi": {
            "total": sum(statuses.values()),
            "today": sum(int(r["n"]) for r in today_rows),
            "open": sum(n for s, n in statuses.items() if s in opened),
            "overdue": sum(int(r["n"]) for r in ranking_late),
            "median_close_hours": None if median_s is None else round(median_s / 3600, 1),
        },
        "category": _ordered(_counts(category, fields.category), values.get(fields.category)),
        "status": _ordered(_counts(status_pie, fields.status), values.get(fields.status)),
        "channel": _ordered(_counts(channel, fields.channel), values.get(fields.channel)),
        "series": [
            {"key": _bucket(r[f.bucket]), "n": int(r["n"])}
            for r in sorted(series, key=lambda r: r[f.bucket])
        ],
        "ranking": sorted(
            handlers.values(), key=lambda e: (-e["overdue"], -e["open"], str(e["key"]))
        ),
        "units": sorted(unit_rows.values(), key=lambda e: e["code"]),
        "alerts": alerts,
    }


def _tally(
    by_status: list[dict[str, Any]],
    late: list[dict[str, Any]],
    key: Callable[[dict[str, Any]], Any],
    status: str,
    opened: set[str],
    head: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[Any, dict[str, Any]]:
    """Total, open and overdue per key, from counts by (key, status) and overdue counts by key."""
    out: dict[Any, dict[str, Any]] = {}
    for row, overdue in [(r, False) for r in by_status] + [(r, True) for r in late]:
        entry = out.setdefault(key(row), {**head(row), "total": 0, "open": 0, "overdue": 0})
        n = int(row["n"])
        if overdue:
            entry["overdue"] += n
        else:
            entry["total"] += n
            entry["open"] += n if row[status] in opened else 0
    return out


def _name(level: str) -> str:
    return "district_name" if level == "district" else "ward_name"


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


async def _run_median(pool, catalog, principal, settings, document: dict[str, Any]) -> float | None:
    """Median seconds from report to resolution over the query's features (closed ones)."""
    fields = document.pop("_fields")
    document = {k: v for k, v in document.items() if k not in ("group_by", "aggregates")}
    document["properties"] = fields
    plan, timeout_ms = plan_query(parse_query(document), catalog, principal, settings)
    plan.max_rows = 100_000_000  # a median over every closed report, not a page of them
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await open_session(conn, timeout_ms)
        compiled = await compile_plan(conn, plan, settings)
        reported, resolved = (f"r.{quote_ident(name)}" for name in fields)
        sql = (
            f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
            f"{resolved} - {reported})) FROM ({compiled.sql}) r WHERE {resolved} >= {reported}"
        )
        try:
            value = await conn.fetchval(sql, *compiled.args)
        except asyncpg.PostgresError as exc:
            raise db_error(exc) from exc
    return None if value is None else float(value)


async def default_range(board: Dashboard, f: BoardFilter, run: Runner) -> BoardFilter:
    """``f`` over the dashboard's last ``days`` city days up to its newest report (a replayed
    or quiet layer still shows its data), whole days so it stays one state all day."""
    doc = query_doc(board, BoardFilter())
    doc["aggregates"] = [{"op": "max", "attribute": board.fields.reported_at, "as": "latest"}]
    rows = await run(doc)
    latest = rows[0]["latest"] if rows and rows[0]["latest"] else datetime.now(CITY_TZ)
    day = latest.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    return replace(f, start=day - timedelta(days=board.days - 1))


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

    async def median(document: dict[str, Any]) -> float | None:
        document["_fields"] = [board.fields.reported_at, board.fields.resolved_at]
        return await _run_median(pool, catalog, principal, settings, document)

    async def make() -> dict[str, Any]:
        state = f if f.start or f.end else await default_range(board, f, run)
        panels = await compute(board, catalog, state, run, minute, median)
        return {
            "dashboard": board.id,
            "version": list(version),
            "at": minute.isoformat(),
            "filter": state.query(),
            **panels,
        }

    return await cache.get(key, make)
