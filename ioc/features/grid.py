"""Grid aggregates of a layer: how many features fall in each cell of the Web Mercator
quadtree at one level, over a bbox, after the same filters as ``/items``.

A heat map drawn from these counts shows every feature (a million 1022 reports as well as a
demo city's thousands) in one answer whose size depends on the view, never on the data. Cells
are the tiles of zoom ``level`` (x, y as in ``/tiles/{z}/{x}/{y}``): a map at zoom z asks level
z + 4 for 16-pixel cells. Keying cells by quadtree address is what lets per-zoom aggregates
kept in the database (issue #20) answer the same request later: a level-L cell is the sum of
its four level-L+1 children.

Each feature counts once, in the cell of its point (a multipoint's centroid, a line's or
polygon's point on surface); the cell's ``lon``/``lat`` is the mean of its points, so the heat
of a sparse area sits where the features are rather than on a lattice. Features without a
geometry cannot be placed: they are counted apart (``unlocated``), so ``total`` +
``unlocated`` is what ``/items`` counts with the same filters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import asyncpg

from ioc.catalog.layers import Layer
from ioc.db.connection import Pool
from ioc.errors import InvalidParameter
from ioc.features.binds import ALIAS, Binds, attribute_or_400, column
from ioc.features.items import ItemsQuery, db_error, where_sql

MAX_LEVEL = 24
MAX_CELLS = 1 << 18  # cells a request may span (512 × 512): a 4K wall at 16-pixel cells is ~32,000
MAX_LAT = 85.0511287798066  # Web Mercator's edge
COLUMNS = ("x", "y", "count", "lon", "lat")


@dataclass(frozen=True)
class GridAnswer:
    """Counts per cell, and the totals a client needs to scale them."""

    layer: Layer
    level: int
    cells: list[tuple[int, int, int, float, float, float | None]]
    unlocated: int
    weight: str | None

    def document(self) -> dict[str, Any]:
        """The JSON answer: one compact row per non-empty cell."""
        counts = [c[2] for c in self.cells]
        columns = list(COLUMNS) + (["sum"] if self.weight else [])
        width = len(columns)
        return {
            "layer": self.layer.id,
            "version": self.layer.version,
            "level": self.level,
            "weight": self.weight,
            "total": sum(counts),
            "unlocated": self.unlocated,
            "max": max(counts, default=0),
            "numberOfCells": len(self.cells),
            "columns": columns,
            "cells": [list(c[:width]) for c in self.cells],
        }


def tile_x(lon: float, level: int) -> int:
    """The column of the level's tile holding longitude ``lon``."""
    n = 1 << level
    return min(n - 1, max(0, math.floor((lon + 180.0) / 360.0 * n)))


def tile_y(lat: float, level: int) -> int:
    """The row of the level's tile holding latitude ``lat`` (row 0 at the top)."""
    n = 1 << level
    phi = math.radians(max(-MAX_LAT, min(MAX_LAT, lat)))
    return min(n - 1, max(0, math.floor((1 - math.asinh(math.tan(phi)) / math.pi) / 2 * n)))


def check_span(bounds: tuple[float, float, float, float], level: int) -> int:
    """How many cells of ``level`` the lon/lat ``bounds`` span; 400 above MAX_CELLS."""
    west, south, east, north = bounds
    span = (tile_x(east, level) - tile_x(west, level) + 1) * (
        tile_y(south, level) - tile_y(north, level) + 1
    )
    if span > MAX_CELLS:
        raise InvalidParameter(
            f"Level {level} over this bbox makes {span:,} cells, more than {MAX_CELLS:,}: "
            "ask a lower level or a smaller bbox.",
            parameter="level",
        )
    return span


def _point_sql(layer: Layer) -> str:
    """One lon/lat point per feature."""
    geom = column(layer, layer.geometry_column)
    if layer.geometry_type == "MultiPoint":
        geom = f"ST_Centroid({geom})"
    elif layer.geometry_type != "Point":
        geom = f"ST_PointOnSurface({geom})"
    return geom if layer.srid == 4326 else f"ST_Transform({geom}, 4326)"


def grid_sql(
    layer: Layer, q: ItemsQuery, level: int, weight: str | None = None
) -> tuple[str, list[Any]]:
    """Counts (and sums of ``weight``) per cell; the cell (NULL, NULL) holds the features
    without a geometry."""
    binds = Binds()
    where = where_sql(layer, q, binds)
    n = binds.add(float(1 << level), "double precision")
    top = binds.add(float((1 << level) - 1), "double precision")
    lat = binds.add(MAX_LAT, "double precision")
    value = column(layer, weight) if weight else "NULL::double precision"
    # OFFSET 0 keeps the planner from inlining ST_X/ST_Y into every use (once per row is enough).
    points = (
        f"SELECT ST_X(g) AS lon, ST_Y(g) AS lat, w FROM (SELECT {_point_sql(layer)} AS g,"
        f" ({value})::double precision AS w FROM {layer.table_sql} {ALIAS} WHERE {where}"
        f" OFFSET 0) s OFFSET 0"
    )
    # Tile column and row of a lon/lat (the slippy-map formula); clamped so that the edges
    # (lon 180, the poles) fall in the last cell rather than outside the grid.
    x = f"least(greatest(floor((p.lon + 180) / 360 * {n}), 0), {top})"
    phi = f"radians(least(greatest(p.lat, -{lat}), {lat}))"
    y = f"least(greatest(floor((1 - asinh(tan({phi})) / pi()) / 2 * {n}), 0), {top})"
    # greatest() skips NULLs: without the CASE a feature without geometry would land in cell 0.
    x, y = (f"CASE WHEN p.lon IS NOT NULL THEN {v} END" for v in (x, y))
    sql = (
        f"SELECT {x}::int AS x, {y}::int AS y, count(*)::bigint AS count,"
        f" avg(p.lon) AS lon, avg(p.lat) AS lat, sum(p.w) AS sum FROM ({points}) p GROUP BY 1, 2"
    )
    return sql, binds.values


def check_weight(layer: Layer, name: str | None) -> str | None:
    """The numeric attribute summed per cell; 400 when unknown or not a number."""
    if name is None:
        return None
    attribute = attribute_or_400(layer, name, "weight")
    if attribute.type not in ("integer", "number"):
        raise InvalidParameter(
            f"'weight' must be a numeric property; '{name}' is {attribute.type}.",
            parameter="weight",
        )
    return attribute.name


async def count_cells(
    pool: Pool, layer: Layer, q: ItemsQuery, level: int, weight: str | None = None
) -> GridAnswer:
    """Every feature matching ``q`` counted in its level-``level`` cell (bbox-bounded
    requests are checked against MAX_CELLS first)."""
    if not 0 <= level <= MAX_LEVEL:
        raise InvalidParameter(f"'level' is a zoom level from 0 to {MAX_LEVEL}.", parameter="level")
    bounds = [b.values for b in q.bboxes if b.srid == 4326] or [layer.extent or (0, 0, 0, 0)]
    for box in bounds:
        check_span(box, level)
    sql, args = grid_sql(layer, q, level, check_weight(layer, weight))
    try:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            # The planner guesses 40,000 groups for computed keys and sorts every matching row
            # (17 MB to disk for 500,000 reports) rather than hashing the few thousand cells
            # there are; hashing is never slower. The cells are sorted in Python below.
            await conn.execute("SET LOCAL enable_sort = off")
            rows = await conn.fetch(sql, *args)
    except asyncpg.PostgresError as exc:
        raise db_error(exc, q) from exc
    cells, unlocated = [], 0
    for r in rows:
        if r["x"] is None:
            unlocated += r["count"]
            continue
        cells.append((r["x"], r["y"], r["count"], round(r["lon"], 6), round(r["lat"], 6), r["sum"]))
    cells.sort()
    return GridAnswer(layer, level, cells, unlocated, weight)
