"""The reports a dashboard's map draws: the newest under the dashboard's whole state (value
filters, time range and unit), as a query document of the query service built like the panels'
(``ioc.dashboards.panels.query_doc``). A unit filter is the same membership that counts a
report in that unit, so every point drawn in a chosen ward is one of its count.

Answers are cached like the panels, per (dashboard, state, limit, data version): every screen
reloads its points on each change event, and the newest 2,000 of a city-wide view sort a
quarter of a million reports (~0.4 s at 1 M reports), once per change rather than per screen.
"""

from __future__ import annotations

from typing import Any

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.dashboards.filters import BoardFilter
from ioc.dashboards.model import Dashboard
from ioc.dashboards.panels import PanelCache, data_version, query_doc
from ioc.db.connection import Pool
from ioc.query.model import QueryDoc, QuerySettings, limits_for, parse_query
from ioc.query.runner import run_query

POINTS = 2_000  # what the map draws by default: enough to read, light for a wall screen
MAX_POINTS = 10_000
CACHE = PanelCache(size=64)


def points_query(board: Dashboard, f: BoardFilter, limit: int) -> QueryDoc:
    """The newest ``limit`` reports under ``f`` with their category, status and time (run by
    ``ioc.query.runner.run_query``: ``truncated`` says when more match)."""
    fields = board.fields
    doc = query_doc(board, f)
    for key in ("group_by", "aggregates"):
        doc.pop(key, None)
    doc.update(
        geometry=True,
        properties=[fields.category, fields.status, fields.reported_at],
        order_by=[{"key": fields.reported_at, "desc": True}],
        limit=limit,
    )
    return parse_query(doc)


async def newest_points(
    pool: Pool,
    catalog: Catalog,
    principal: Principal,
    settings: QuerySettings,
    board: Dashboard,
    f: BoardFilter,
    limit: int,
    *,
    cache: PanelCache = CACHE,
) -> bytes:
    """GeoJSON of the newest ``limit`` reports under ``f`` (at most the caller's row cap) for a
    caller who may read the layer (404 otherwise), from the cache while the layer is unchanged."""
    catalog.get(board.layer, principal)
    limit = min(limit, limits_for(settings, principal)[1])
    key = (board.id, f.key(), limit, await data_version(pool, board.layer))

    async def make() -> dict[str, Any]:
        doc = points_query(board, f, limit)
        answer = await run_query(pool, catalog, principal, doc, settings)
        return {"geojson": b"".join([chunk async for chunk in answer.chunks])}

    return (await cache.get(key, make))["geojson"]
