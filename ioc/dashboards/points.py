"""The reports a dashboard's map draws: the newest under the dashboard's whole state (value
filters, time range and unit), as a query document of the query service built like the panels'
(``ioc.dashboards.panels.query_doc``). A unit filter is the same membership that counts a
report in that unit, so every point drawn in a chosen ward is one of its count.
"""

from __future__ import annotations

from ioc.dashboards.filters import BoardFilter
from ioc.dashboards.model import Dashboard
from ioc.dashboards.panels import query_doc
from ioc.query.model import QueryDoc, parse_query

POINTS = 2_000  # what the map draws by default: enough to read, light for a wall screen
MAX_POINTS = 10_000


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
