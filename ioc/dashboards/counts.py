"""The statements behind a dashboard's numbers: two passes over the dashboard's rows
(``ioc.dashboards.rows``: a narrow copy of the layer with each report's units and coded values)
instead of one query per panel.

- **counts**: one scan of the rows in the state's time range and unit/handling-unit filters,
  grouped by ``GROUPING SETS`` (category, status, channel, time bucket, handling unit × status,
  unit of the level shown × status, and the whole) — the category, status and channel filters
  and the shown level's own unit filter are not in the ``WHERE`` but flags counted with
  ``FILTER``, so that the panel of a dimension is counted without its own filter in the same
  pass (the category bar keeps every category while one is selected). A report in several
  units of the level (on a shared boundary) comes again once per other unit, counted only by
  the units set: it counts in both units, as the ``ST_Intersects`` join does;
- **median**: the exact median time to close over the closed reports under the state.

A layer without such a copy (not a plain table) is read itself, with a third pass, **units**:
counts per administrative unit and status through the query service's unit membership.

Conditions come from the query service (``ioc.query``): the plan of a query document is written
by its statement builder, and every extra condition (flags, overdue, today, closed) is a CQL2-JSON
document compiled against the catalog with its values bound — over the copy, against its typing
with the coded attributes' values replaced by their codes; the few result rows are decoded in SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ioc.dashboards.filters import UNIT_FILTERS, BoardFilter
from ioc.dashboards.model import Dashboard
from ioc.dashboards.rows import Level, Rows
from ioc.db.identifiers import quote_ident
from ioc.features import cql2, cql2_sql
from ioc.query.analysis import Plan
from ioc.query.sql import Column, statement_builder

FLAGGED = ("category", "status", "channel")  # counted with FILTER, not narrowed in WHERE
# The grouping keys of the counts pass, in the order GROUPING() numbers them.
KEYS = ("category", "status", "channel", "handling_unit", "time", "unit")
VALUE_KEYS = ("category", "status", "channel", "handling_unit")
SETS = {
    "category": ("category",),
    "status": ("status",),
    "channel": ("channel",),
    "series": ("time",),
    "ranking": ("handling_unit", "status"),
    "units": ("unit", "status"),  # over the dashboard's rows only
    "all": (),
}
COUNTED = (
    "n",
    "late",
    "today",
    "n_without_category",
    "n_without_status",
    "n_without_channel",
    "n_without_unit",
    "late_without_unit",
)


@dataclass
class Statement:
    """SQL text and its bound values."""

    sql: str
    args: list[Any]


def _parse(document: dict[str, Any]) -> Any:
    return cql2.parse_filter(json.dumps(document), "cql2-json", parameter="dashboard")


def grouping(keys: tuple[str, ...]) -> int:
    """``GROUPING(k_category, …, k_time)`` of a set: a bit set for each key not in it."""
    return sum(1 << (len(KEYS) - 1 - i) for i, k in enumerate(KEYS) if k not in keys)


class _Conditions:
    """The plan's statement builder, and CQL2-JSON conditions bound in the same numbering;
    over the dashboard's ``rows`` when given, with ``units`` (filter name → unit code) as
    conditions on their stored unit ids instead of the plan's spatial predicates."""

    def __init__(
        self, plan: Plan, rows: Rows | None = None, units: dict[str, str] | None = None
    ) -> None:
        self.rows = rows
        if rows is not None:  # the copy's codes in the plan's filter and its typing
            document = plan.doc.filter
            tree = None if document is None else _parse(rows.encode(document))
            plan = replace(plan, source=rows.layer, filter=tree)
        self.plan = plan
        self.builder = statement_builder(plan)
        if rows is None:
            self.table, self.where = plan.source.table_sql, self.builder.where()
        else:
            conds = self.builder.attribute_conditions()
            conds += [self.in_unit(rows.levels[n], code) for n, code in (units or {}).items()]
            self.table, self.where = rows.table_sql, " AND ".join(conds) or "TRUE"

    def in_unit(self, level: Level, code: str) -> str:
        """A row is in the unit of that code (its first unit or one of the others)."""
        u = level.layer
        ids = (
            f"ARRAY(SELECT u.{quote_ident(u.id_column)}::integer FROM {u.table_sql} u"
            f" WHERE u.{quote_ident(level.unit.code)}::text = {self.builder.binds.add(code, 'text')})"
        )
        return f"({level.first} = ANY({ids}) OR {level.more} && {ids})"

    def cond(self, document: dict[str, Any]) -> str:
        tree = _parse(self.rows.encode(document) if self.rows else document)
        return f"({cql2_sql.compile_filter(tree, self.plan.source, self.builder.binds)})"

    def value(self, name: str, expr: str) -> str:
        """A grouping key's value as the panels show it (decoded from the copy's code)."""
        return self.rows.decode(expr) if self.rows and name in self.rows.codes else expr

    def col(self, name: str, alias: str = "t") -> str:
        return self.builder.col(name, alias)

    def statement(self, sql: str) -> Statement:
        return Statement(sql, self.builder.binds.values)


def counts_statement(
    plan: Plan,
    board: Dashboard,
    f: BoardFilter,
    *,
    flags: dict[str, dict[str, Any]],
    late: dict[str, Any],
    today: dict[str, Any],
    rows: Rows | None = None,
) -> Statement:
    """The counts pass over ``plan`` (the state without its category, status and channel
    filters, which are the ``flags``: their CQL2 conditions by dimension). Over the dashboard's
    ``rows`` it also counts per unit of the level shown (the ``units`` set): that level's own
    filter is a flag too, and the rare rows in several units come again, once per other unit,
    marked ``x`` so that only the units set counts them."""
    shown = f.units if rows is not None else None
    c = _Conditions(plan, rows, unit_filters(f.without(shown) if shown else f))
    fields = board.fields
    # The session's time zone is the city's (ioc.query.runner.open_session): date_trunc's
    # two-argument form uses it, at half the cost of naming the zone on every row.
    unit = {"day": "day", "hour": "hour"}[f.bucket]  # SQL text from this table only
    bucket = f"date_trunc('{unit}', {c.col(fields.reported_at)})"
    columns = [f"{c.col(getattr(fields, k))} AS k_{k}" for k in KEYS if k not in ("time", "unit")]
    columns += [f"{bucket} AS k_time", f"{c.cond(late)} AS late", f"{c.cond(today)} AS today"]
    columns += [f"{c.cond(doc)} AS m_{name}" for name, doc in flags.items()]
    named = list(flags)
    if rows is not None and shown:
        level = rows.levels[shown]
        if (code := getattr(f, shown)) is not None:
            columns.append(f"{c.in_unit(level, code)} AS m_unit")
            named.append("unit")
        source = (
            f"SELECT {', '.join(columns)}, {level.first} AS k_unit, false AS x FROM {c.table} t"
            f" WHERE {c.where} UNION ALL SELECT {', '.join(columns)}, e.k, true FROM {c.table} t"
            f" CROSS JOIN unnest({level.more}) e(k) WHERE {level.more} IS NOT NULL AND {c.where}"
        )
    else:  # no units set to count (GROUPING() still names k_unit: one NULL group)
        source = (
            f"SELECT {', '.join(columns)}, NULL::integer AS k_unit, false AS x FROM {c.table} t"
            f" WHERE {c.where}"
        )

    def match(without: str | None = None) -> str:
        conds = [f"m_{n}" for n in named if n != without]
        return " AND ".join(conds + ([] if without == "unit" else ["NOT x"])) or "TRUE"

    counted = [
        f"count(*) FILTER (WHERE {match()}) AS n",
        f"count(*) FILTER (WHERE {match()} AND late) AS late",
        f"count(*) FILTER (WHERE {match()} AND today) AS today",
    ]
    counted += [f"count(*) FILTER (WHERE {match(n)}) AS n_without_{n}" for n in FLAGGED]
    counted += [
        f"count(*) FILTER (WHERE {match('unit')}) AS n_without_unit",
        f"count(*) FILTER (WHERE {match('unit')} AND late) AS late_without_unit",
    ]
    sets = ", ".join(f"({', '.join(f'k_{k}' for k in keys)})" for keys in SETS.values())
    keys = ", ".join(f"k_{k}" for k in KEYS)
    sql = (
        f"SELECT GROUPING({keys}) AS g, {keys}, {', '.join(counted)} FROM ({source}) r"
        f" GROUP BY GROUPING SETS ({sets})"
    )
    if rows is not None:  # the few result rows' codes as values, unit ids as code and name
        values = [f"{c.value(getattr(fields, k), f'q.k_{k}')} AS k_{k}" for k in VALUE_KEYS]
        out = [c.col(level.unit.code, "u"), c.col(level.unit.name, "u")] if shown else []
        units = (
            f" LEFT JOIN {level.layer.table_sql} u ON"
            f" {c.col(level.layer.id_column, 'u')} = q.k_unit"
            if shown
            else ""
        )
        code_name = (
            f"{out[0]}::text AS unit_code, {out[1]}::text AS unit_name"
            if out
            else ("NULL::text AS unit_code, NULL::text AS unit_name")
        )
        sql = (
            f"SELECT q.g, q.k_time, {', '.join(values)}, {code_name},"
            f" {', '.join(f'q.{n}' for n in COUNTED)} FROM ({sql}) q{units}"
        )
    return c.statement(sql)


def unit_filters(f: BoardFilter) -> dict[str, str]:
    """The unit filters of a state: BoardFilter name → unit code."""
    return {n: code for n in UNIT_FILTERS if (code := getattr(f, n))}


def units_statement(plan: Plan, board: Dashboard, late: dict[str, Any]) -> Statement:
    """Counts per unit (``code``, ``name``), status, and overdue ones, under ``plan`` (a query
    grouped by the unit: its membership join, cached or live)."""
    c = _Conditions(plan)
    unit, ulayer = plan.unit, plan.unit_layer
    assert unit is not None and ulayer is not None
    keys = c.builder.group_keys()
    count = ("count(*)", Column("n", "integer", "", ""))
    from_sql, keys = c.builder.group_source(keys, [count], c.where, False)
    status = c.col(board.fields.status)
    inner = (
        f"SELECT {keys[0][0]} AS k, {status} AS status, count(*) AS n,"
        f" count(*) FILTER (WHERE {c.cond(late)}) AS late"
        f" FROM {from_sql} WHERE {c.where} GROUP BY 1, 2"
    )
    u = c.builder.col
    sql = (
        f"SELECT {u(unit.code, 'u')}::text AS code, {u(unit.name, 'u')}::text AS name,"
        f" g.status, g.n, g.late FROM ({inner}) g JOIN {ulayer.table_sql} u"
        f" ON {u(ulayer.id_column, 'u')} = g.k"
    )
    return c.statement(sql)


def median_statement(
    plan: Plan,
    board: Dashboard,
    closed: dict[str, Any],
    rows: Rows | None = None,
    units: dict[str, str] | None = None,
) -> Statement:
    """The exact median of seconds from report to resolution over the closed reports under
    ``plan`` (those resolved before they were reported are left out as data errors)."""
    c = _Conditions(plan, rows, units)
    reported, resolved = c.col(board.fields.reported_at), c.col(board.fields.resolved_at)
    # date_part gives double precision: sorting it is cheaper than extract's numeric.
    sql = (
        f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', {resolved} -"
        f" {reported})) FROM {c.table} t WHERE {c.where} AND {c.cond(closed)}"
        f" AND {resolved} >= {reported}"
    )
    return c.statement(sql)
