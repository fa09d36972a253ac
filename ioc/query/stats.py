"""Per-ward statistics for choropleth maps (the IOC wall map): one feature per ward with its
value, rank and class.

A statistic is a query like any other (``ioc.query.sql``): the layer, grouped by ward, with one
aggregate named ``value`` — so the same access rules, limits and unit-membership cache apply.
Ward geometries are simplified (``ST_SimplifyPreserveTopology``, 0.0005° ≈ 55 m) for the map:
each ward on its own, so neighbours may show hairline gaps at wall-map scale, a price worth
the ~10× smaller answer (PostGIS 3.4's coverage simplification would avoid them).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.db.connection import Pool
from ioc.db.identifiers import qualified, quote_ident
from ioc.errors import InvalidParameter, LayerNotFound
from ioc.query.analysis import ID
from ioc.query.model import LAYER_ID, QuerySettings, parse_query
from ioc.query.runner import fetch_rows, open_session, plan_query, want_membership
from ioc.query.units import UNITS

SIMPLIFY_DEGREES = 0.0005
CLASSES = 5  # quintiles
Measure = Literal["count", "sum", "avg"]
Edition = Literal["current", "2019"]


# (units layer, its version) → ward code → simplified GeoJSON geometry. Simplifying 168 wards
# (216,000 vertices) costs ~175 ms, more than counting a million reports from the cache.
_SHAPES: dict[tuple[str, int], dict[str, bytes]] = {}


async def unit_geometries(conn, layer_id: str, code: str) -> dict[str, bytes]:
    """Simplified GeoJSON geometries of a units layer by code, cached per layer version (read
    from the registry, so another process's publish is seen)."""
    row = await conn.fetchrow(
        "SELECT schema_name, table_name, geometry_column, version FROM ioc.layers WHERE id = $1",
        layer_id,
    )
    key = (layer_id, row["version"])
    if key not in _SHAPES:
        table = qualified(row["schema_name"], row["table_name"])
        geom = quote_ident(row["geometry_column"])
        rows = await conn.fetch(
            f"SELECT u.{quote_ident(code)}::text, ST_AsGeoJSON(ST_Multi("
            f"ST_SimplifyPreserveTopology(ST_Transform(u.{geom}, 4326), $1)), 6) FROM {table} u",
            SIMPLIFY_DEGREES,
        )
        if len(_SHAPES) >= 8:
            _SHAPES.pop(next(iter(_SHAPES)))
        _SHAPES[key] = {r[0]: r[1].encode() for r in rows}
    return _SHAPES[key]


def quantile_breaks(values: list[float], classes: int = CLASSES) -> list[float]:
    """Class limits [min, q1, …, max] by quantiles (nearest rank), duplicates removed."""
    ordered = sorted(values)
    if not ordered:
        return []
    n = len(ordered)
    limits = (
        [ordered[0]]
        + [ordered[min(n - 1, max(0, -(-k * n // classes) - 1))] for k in range(1, classes)]
        + [ordered[-1]]
    )
    return sorted(set(limits))


def class_of(value: float | None, breaks: list[float]) -> int | None:
    """The class (0-based) of a value: the first interval (lo, hi] holding it; the lowest
    class includes its lower limit."""
    if value is None or not breaks:
        return None
    for i, upper in enumerate(breaks[1:]):
        if value <= upper:
            return i
    return max(0, len(breaks) - 2)


def ranks(values: list[float | None]) -> list[int | None]:
    """Competition ranks, largest value first (1, 2, 2, 4); None for no value."""
    present = sorted((v for v in values if v is not None), reverse=True)
    first: dict[float, int] = {}
    for position, value in enumerate(present, start=1):
        first.setdefault(value, position)
    return [first[v] if v is not None else None for v in values]


_PARAMETERS = {"source": "layer", "filter_lang": "filter-lang", "group_by.0.ward": "wards"}


def _renamed(exc: InvalidParameter | LayerNotFound):
    """An error of the underlying query, naming the endpoint's own parameter."""
    name = exc.parameter or ""
    name = "attribute" if name.startswith("aggregates") else _PARAMETERS.get(name, name)
    return type(exc)(exc.message, parameter=name)


def _legend(breaks: list[float]) -> list[dict[str, Any]]:
    def fmt(v: float) -> str:
        return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"

    return [
        {
            "class": i,
            "min": lo,
            "max": hi,
            "label": {"vi": f"{fmt(lo)} – {fmt(hi)}", "en": f"{fmt(lo)} – {fmt(hi)}"},
        }
        for i, (lo, hi) in enumerate(zip(breaks, breaks[1:], strict=False))
    ]


async def by_ward(
    pool: Pool,
    catalog: Catalog,
    principal: Principal,
    layer_id: str,
    *,
    measure: Measure = "count",
    attribute: str | None = None,
    start: str | None = None,
    end: str | None = None,
    filter: str | None = None,
    filter_lang: str | None = None,
    wards: Edition = "current",
    settings: QuerySettings,
) -> tuple[bytes, bool]:
    """A GeoJSON FeatureCollection of every ward with ``value``, ``rank`` and ``class`` of the
    layer's count, sum or mean, and the quantile ``breaks`` at collection level; and whether
    it is public data (every layer it reads is public)."""
    document: dict[str, Any] = {
        "source": layer_id,
        "group_by": [{"ward": wards}],
        "aggregates": [{"op": measure, "attribute": attribute, "as": "value"}],
        "geometry": False,
        "filter": filter,
        "filter_lang": filter_lang,
        "from": start,
        "to": end,
    }
    if measure == "count" and attribute is None:
        document["aggregates"] = [{"op": "count", "as": "value"}]
    if not re.match(LAYER_ID, layer_id):
        raise LayerNotFound(f"There is no layer '{layer_id}'.", parameter="layer")
    try:
        doc = parse_query({k: v for k, v in document.items() if v is not None})
        plan, timeout_ms = plan_query(doc, catalog, principal, settings)
    except (InvalidParameter, LayerNotFound) as exc:
        raise _renamed(exc) from None
    plan.max_rows = max(plan.max_rows, 1000)  # every ward, whatever the role's cap
    await want_membership(pool, plan, settings)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await open_session(conn, timeout_ms)
        compiled, rows = await fetch_rows(conn, plan, settings)
        assert plan.unit is not None and plan.unit_layer is not None
        shapes = await unit_geometries(conn, plan.unit_layer.id, plan.unit.code)
    names = [c.name for c in compiled.columns]
    unit = UNITS[("ward", wards)]
    values = [None if row["value"] is None else float(row["value"]) for row in rows]
    breaks = quantile_breaks([v for v in values if v is not None])
    features = []
    for row, rank in zip(rows, ranks(values), strict=True):
        props = {name: row[name] for name in names}
        value = props["value"]
        props["rank"] = rank
        props["class"] = class_of(None if value is None else float(value), breaks)
        shape = shapes.get(row[ID])
        features.append(
            {
                "type": "Feature",
                "id": row[ID],
                "properties": props,
                "geometry": orjson.Fragment(shape) if shape else None,
            }
        )
    present = [v for v in values if v is not None]
    layer = plan.source
    doc_out = {
        "type": "FeatureCollection",
        "layer": layer.id,
        "title": {
            "vi": f"{layer.title_vi} theo {unit.label_vi.lower()}",
            "en": f"{layer.title_en} by {unit.label_en.lower()}",
        },
        "measure": measure,
        "attribute": attribute,
        "wards": wards,
        "units_layer": unit.layer_id,
        "from": start,
        "to": end,
        "filter": filter,
        "classes": max(0, len(breaks) - 1),
        "breaks": breaks,
        "legend": _legend(breaks),
        "total": sum(present) if measure != "avg" else None,
        "min": min(present) if present else None,
        "max": max(present) if present else None,
        "numberReturned": len(features),
        "timeStamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "features": features,
    }
    return orjson.dumps(doc_out), all(la.access == "public" for la in plan.layers)
