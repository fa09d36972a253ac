"""A panel of a dashboard's answer as CSV (UTF-8 with a byte-order mark, which Excel needs to
read Vietnamese), and the unit shapes the map colours."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.dashboards.model import UnitLevel
from ioc.db.connection import Pool
from ioc.db.identifiers import quote_ident
from ioc.errors import InvalidParameter
from ioc.query.stats import unit_geometries
from ioc.query.units import UNITS

PANELS = ("kpi", "category", "status", "channel", "series", "ranking", "units", "alerts")
COLUMNS = {
    "category": ("key", "n"),
    "status": ("key", "n"),
    "channel": ("key", "n"),
    "series": ("key", "n"),
    "ranking": ("key", "total", "open", "overdue"),
    "units": ("code", "name", "total", "open", "overdue"),
    "alerts": ("code", "name", "metric", "value", "threshold"),
}
UNIT_SETS = {
    "district": ("district", "2019"),
    "ward": ("ward", "current"),
    "ward2019": ("ward", "2019"),
}


def panel_csv(data: dict[str, Any], panel: str) -> bytes:
    """One panel of :func:`ioc.dashboards.panels.dashboard_data`'s answer as CSV rows."""
    if panel not in PANELS:
        raise InvalidParameter(
            f"There is no panel '{panel[:40]}': use one of {', '.join(PANELS)}.", parameter="panel"
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if panel == "kpi":
        writer.writerow(("measure", "value"))
        writer.writerows(data["kpi"].items())
    else:
        columns = COLUMNS[panel]
        writer.writerow(columns)
        writer.writerows([row.get(c) for c in columns] for row in data[panel])
    return "\ufeff".encode() + out.getvalue().encode()


async def unit_shapes(
    pool: Pool, catalog: Catalog, principal: Principal, level: UnitLevel
) -> bytes:
    """A FeatureCollection of the level's units (simplified, cached per units-layer version),
    each with its code and name: the map's choropleth, counts come with the panels."""
    kind, edition = UNIT_SETS[level]
    unit = UNITS[(kind, edition)]
    layer = catalog.get(unit.layer_id, principal)
    async with pool.acquire() as conn:
        shapes = await unit_geometries(conn, layer.id, unit.code)
        rows = await conn.fetch(
            f"SELECT t.{quote_ident(unit.code)}::text, t.{quote_ident(unit.name)}::text FROM {layer.table_sql} t"
        )
    names = dict((r[0], r[1]) for r in rows)
    features = [
        {
            "type": "Feature",
            "id": code,
            "properties": {"code": code, "name": names.get(code)},
            "geometry": orjson.Fragment(shape),
        }
        for code, shape in sorted(shapes.items())
    ]
    return orjson.dumps(
        {"type": "FeatureCollection", "level": level, "layer": layer.id, "features": features}
    )
