"""The 1022 dashboard's panels against direct SQL (``python -m bench dashboards`` checks every
state it times; tests/http/test_dashcheck.py checks this module on the demo city).

The expected numbers are counted here over the layer's own table (``data.reports_1022``, not the
dashboard rows' coded copy) and the unit layers' geometry, with SQL written for this check, not
by ``ioc.dashboards.counts``: a unit holds every report its geometry intersects (the membership
rule of ``ioc.query.units``), a panel is not narrowed by its own dimension, overdue and the
deadlines are the dashboard file's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ioc.dashboards.filters import CITY_TZ
from ioc.dashboards.model import Dashboard
from ioc.db.connection import Pool

REPORTS = "data.reports_1022"
TZ = "Asia/Ho_Chi_Minh"
VALUES = ("category", "status", "channel", "handling_unit")
# Unit filters and levels (the filter bar's names): the unit layer's table and code column.
UNITS = {
    "ward": ("data.wards", "ward_code"),
    "ward2019": ("data.wards_2019", "ward_code"),
    "district": ("data.districts_2019", "district_code"),
}
# Clauses are templates with ``{}`` where each bound value goes ($n once they are joined).
Clause = tuple[str, list[Any]]
KPIS = ("total", "open", "overdue", "today", "median_close_hours")


def _number(clauses: list[Clause]) -> tuple[list[str], list[Any]]:
    """The clauses' SQL with their ``{}`` numbered as asyncpg's $1, $2, … in order; the values."""
    out: list[str] = []
    args: list[Any] = []
    for template, values in clauses:
        out.append(template.format(*(f"${len(args) + i + 1}" for i in range(len(values)))))
        args += values
    return out, args


def state_clauses(state: dict[str, str]) -> dict[str, Clause]:
    """A state's filters (an answer's ``filter``) as WHERE clauses over ``r``, by filter name."""
    out: dict[str, Clause] = {}
    if "from" in state:
        out["from"] = ("r.reported_at >= {}", [datetime.fromisoformat(state["from"])])
    if "to" in state:
        out["to"] = ("r.reported_at < {}", [datetime.fromisoformat(state["to"])])
    for name in VALUES:
        if name in state:
            out[name] = (f"r.{name} = {{}}", [state[name]])
    for name, (table, code) in UNITS.items():
        if name in state:
            out[name] = (
                f"EXISTS (SELECT 1 FROM {table} u WHERE u.{code} = {{}}"
                " AND ST_Intersects(u.geom, r.geom))",
                [state[name]],
            )
    return out


def overdue_clause(board: Dashboard, now: datetime) -> Clause:
    """Open and older than its category's deadline (the dashboard file's hours)."""
    deadline = board.deadline
    parts, args = [], []
    for category, hours in deadline.by_category.items():
        parts.append("(r.category = {} AND r.reported_at < {})")
        args += [category, now - timedelta(hours=hours)]
    parts.append("(NOT (r.category = ANY({})) AND r.reported_at < {})")
    args += [list(deadline.by_category), now - timedelta(hours=deadline.default_hours)]
    return f"r.status = ANY({{}}) AND ({' OR '.join(parts)})", [board.open_statuses, *args]


async def expected(conn: Any, board: Dashboard, answer: dict[str, Any]) -> dict[str, Any]:
    """The panels of ``answer`` (its state and minute) counted by direct SQL, in
    :func:`observed`'s shape."""
    state, now = answer["filter"], datetime.fromisoformat(answer["at"])
    where = state_clauses(state)
    today = now.astimezone(CITY_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    opened: Clause = ("r.status = ANY({})", [board.open_statuses])
    late = overdue_clause(board, now)
    closed: Clause = (
        "r.status = ANY({}) AND r.resolved_at >= r.reported_at",
        [board.closed_statuses],
    )

    async def rows(
        select: Clause, *extra: Clause, without: str = "", join: str = "", key: bool = False
    ) -> list:
        """``select`` over the reports under the state (less ``without``) and ``extra``;
        grouped by its first column when it is a ``key``."""
        filters = [c for k, c in where.items() if k != without] + list(extra)
        (head, *conditions), args = _number([select, *filters])
        sql = f"SELECT {head} FROM {REPORTS} r {join} WHERE " + " AND ".join(
            f"({c})" for c in conditions or ["true"]
        )
        return await conn.fetch(sql + (" GROUP BY 1" if key else ""), *args)

    async def count(*extra: Clause) -> int:
        return (await rows(("count(*)", []), *extra))[0][0]

    async def by(column: str) -> dict[Any, int]:
        return {
            k: n for k, n in await rows((f"r.{column}, count(*)", []), without=column, key=True)
        }

    async def triples(column: str, **kw: str) -> dict[Any, tuple[int, int, int]]:
        """total, open and overdue per value of ``column``."""
        select = (
            f"{column}, count(*), count(*) FILTER (WHERE {opened[0]}),"
            f" count(*) FILTER (WHERE {late[0]})",
            [*opened[1], *late[1]],
        )
        return {r[0]: (r[1], r[2], r[3]) for r in await rows(select, key=True, **kw)}

    median = (
        await rows(
            (
                "percentile_cont(0.5) WITHIN GROUP"
                " (ORDER BY extract(epoch FROM r.resolved_at - r.reported_at))",
                [],
            ),
            closed,
        )
    )[0][0]
    bucket = "hour" if state.get("bucket") == "hour" else "day"
    series = await rows((f"date_trunc('{bucket}', r.reported_at, '{TZ}'), count(*)", []), key=True)
    table, code = UNITS[state["units"]]
    return {
        "kpi": {
            "total": await count(),
            "open": await count(opened),
            "overdue": await count(late),
            "today": await count(("r.reported_at >= {}", [today])),
            "median_close_hours": None if median is None else round(float(median) / 3600, 1),
        },
        **{panel: await by(panel) for panel in ("category", "status", "channel")},
        "series": {k.astimezone(CITY_TZ): n for k, n in series},
        "ranking": await triples("r.handling_unit"),
        # The map's units: the shown level, not narrowed by its own filter.
        "units": await triples(
            f"u.{code}::text",
            without=state["units"],
            join=f"JOIN {table} u ON ST_Intersects(u.geom, r.geom)",
        ),
    }


def observed(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer's panels in :func:`expected`'s shape (units without reports left out)."""
    return {
        "kpi": {k: answer["kpi"][k] for k in KPIS},
        **{p: {r["key"]: r["n"] for r in answer[p]} for p in ("category", "status", "channel")},
        "series": {datetime.fromisoformat(r["key"]): r["n"] for r in answer["series"]},
        "ranking": {r["key"]: (r["total"], r["open"], r["overdue"]) for r in answer["ranking"]},
        "units": {
            str(u["code"]): (u["total"], u["open"], u["overdue"])
            for u in answer["units"]
            if u["total"]
        },
    }


def first_difference(got: dict[str, Any], want: dict[str, Any]) -> str | None:
    """The first panel and key where the answer differs from SQL, or None."""
    for panel, values in want.items():
        mine = got[panel]
        for key in sorted(set(values) | set(mine), key=str):
            if mine.get(key) != values.get(key):
                return f"{panel} {key}: {mine.get(key)} ≠ SQL {values.get(key)}"
    return None


async def check(pool: Pool, board: Dashboard, answer: dict[str, Any]) -> str | None:
    """:func:`first_difference` of ``answer`` and direct SQL (one connection, no time limit:
    at city scale the unit join takes a while)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = 0")
        want = await expected(conn, board, answer)
    return first_difference(observed(answer), want)
