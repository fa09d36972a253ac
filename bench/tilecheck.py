"""Do ioc and tipg serve the same content? The tile benchmark compares throughput only after
checking, tile by tile, what each server put in its tiles.

The comparison, per tile of the list (each distinct tile once):

- tipg stops at 10,000 rows a tile (``max_features_per_tile``, by id) without saying so (and
  draws fewer when some collapse to nothing), so PostGIS first counts the rows tipg's own filter
  selects (``ST_Intersects`` with the tile's bounds in the layer's CRS, computed as tipg does,
  by pyproj): from 10,000 on, the tile is *capped in tipg*;
- **aggregated** (ioc draws a dense point layer as counted cells): the sum of ioc's ``count``
  must equal tipg's number of features, or that count where tipg is capped;
- **features**: the two sets of feature ids. A feature only tipg has must be one ioc leaves out
  by rule (smaller than a pixel at that zoom: the generalisation's visibility size), one merged
  into a block (below), or one beyond ioc's MVT buffer (tipg's is 256 px, ioc's 64); a feature
  only ioc has must lie in its MVT buffer, outside the tile itself (ioc selects by the buffered
  envelope, tipg by the tile), or outside tipg's filter — checked only where tipg is not capped.
  Anything else is *unexplained* and makes the tile differ. Tiles ioc capped
  (``X-Tile-Truncated``) are listed.
- **blocks** (a layer whose manifest says ``tiles: {merge: true}``, up to
  ``IOC_TILE_GENERALISE_MAX_ZOOM``, sql/0022): ioc draws a polygon whose EPSG:3857 bounding box
  is ``visible_px`` or more but under ``merge_px`` pixels both ways as a member of its 16-pixel
  cell's block (an MVT feature with no id and a ``count``), not alone. Checked from the layer's
  rows, never from ioc's own block tables: each block's cell is read back from its MVT geometry
  (its least x and y in world pixels: a block is its members' whole-pixel boxes, each starting
  inside the cell and under ``merge_px`` + 1 pixels long, and a block clipped at the tile's
  buffer keeps the clip's edge, 4 px outside the tile, which lies in the same cell); PostGIS
  then computes, per such cell, the features of that size class whose rounded pixel box starts
  in it (cx = round((xmin + πR) / px) / 16, cy from the north likewise) — their number must be
  the block's ``count`` and, for a text or integer ``style.by``, their most frequent value
  (ties: the least) its value. A feature only tipg has is *merged* when it is of that class and
  its cell is one of the blocks ioc drew; a shape ioc draws at those zooms must be of neither
  smaller class (it would be drawn twice, or a speck). Each feature counted wrong is
  unexplained.

*tipg's edge*: for a layer in another CRS than the tiles' (the buildings are in VN-2000,
EPSG:9210), tipg turns the tile's bounds into that CRS with pyproj, whose EPSG database picks
the transformation 'VN-2000 to WGS 84 (1)', while the database applies the official one
(sql/0006): about 0.8 m apart in the city. A building overlapping the tile by less than that
at its edge is in ioc's tile (PostGIS says it meets the tile) and outside tipg's filter; such
features are counted in a column of their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
import httpx
import mapbox_vector_tile
from pyproj import Transformer

from ioc.catalog.layers import Layer
from ioc.db.identifiers import quote_ident
from tiles.settings import TileSettings
from tiles.sql import BLOCK_PX, COUNT, EARTH_RADIUS, TILE_PX, merge_px, plan_tile

TIPG_TILE_CAP = 10_000  # tipg's default max_features_per_tile
# style.by types whose MVT value reads back as the column's text (str() of the decoded value).
CATEGORY_TYPES = ("text", "integer")
# One pixel of zoom $1 and a size of $n pixels, written as sql/0022 writes them, so a feature
# at a class's very edge falls on the same side here as in the build.
PX_SQL = "2 * pi() * 6378137.0 / (256 * 2 ^ $1::int)"


def _px(param: str) -> str:
    return f"{param}::float8 * 2 * pi() * 6378137.0 / (256 * 2 ^ $1::int)"


@dataclass
class ZoomCheck:
    """What the comparison found at one zoom of one layer."""

    zoom: int
    mode: str = ""
    tiles: int = 0
    same: int = 0
    tipg_capped: int = 0
    ioc_capped: int = 0
    ioc_features: int = 0  # aggregated: sum of counts; blocks count their members
    tipg_features: int = 0
    below_pixel: int = 0  # only in tipg, smaller than the visibility size
    merged: int = 0  # only in tipg, of merged size and counted in a block ioc drew
    blocks: int = 0  # ioc's blocks of merged features
    block_members: int = 0  # the sum of their counts (each checked against the rows)
    in_buffer: int = 0  # only in ioc, in the buffer outside the tile
    tipg_edge: int = 0  # outside tipg's filter (its bounds by pyproj) or beyond ioc's buffer
    unexplained: int = 0


@dataclass(frozen=True)
class Block:
    """One block ioc drew: its cell (16-pixel columns from the west, rows from the north), its
    count and its category as decoded."""

    cx: int
    cy: int
    count: int | None
    category: object


def _decode(body: bytes) -> list[tuple[int, dict]]:
    """Each feature with its layer's extent; coordinates as stored (y down from the top)."""
    if not body:
        return []
    layers = mapbox_vector_tile.decode(body, default_options={"y_coord_down": True})
    return [(layer["extent"], f) for layer in layers.values() for f in layer["features"]]


def _is_block(feature: dict) -> bool:
    # ioc's shapes always carry their (integer) id; a block has none (protobuf reads 0).
    return not feature.get("id") and COUNT in feature["properties"]


def _points(coordinates) -> Iterable[tuple[float, float]]:
    if coordinates and isinstance(coordinates[0], int | float):
        yield coordinates[0], coordinates[1]
        return
    for part in coordinates:
        yield from _points(part)


def block_cell(feature: dict, extent: int, x: int, y: int) -> tuple[int, int]:
    """The cell of a block from its MVT geometry: its least x and y, in world pixels, lie in
    it (integer arithmetic: MVT coordinates are whole units of 1/extent of a tile)."""
    xs, ys = zip(*_points(feature["geometry"]["coordinates"]), strict=True)
    scale = extent * BLOCK_PX
    return (
        (x * extent + int(min(xs))) * TILE_PX // scale,
        (y * extent + int(min(ys))) * TILE_PX // scale,
    )


def _block(feature: dict, extent: int, x: int, y: int, by: str) -> Block:
    properties = feature["properties"]
    return Block(*block_cell(feature, extent, x, y), properties.get(COUNT), properties.get(by))


def tipg_bounds(transformer: Transformer | None, z: int, x: int, y: int) -> list[float]:
    """The tile's bounds in the layer's CRS as tipg computes them (pyproj's transform_bounds
    of the EPSG:3857 tile, tipg 1.6 ``_where``): west, south, east, north."""
    size = 2 * math.pi * EARTH_RADIUS / 2**z
    west, north = -math.pi * EARTH_RADIUS + x * size, math.pi * EARTH_RADIUS - y * size
    bounds = (west, north - size, west + size, north)
    return list(transformer.transform_bounds(*bounds) if transformer else bounds)


class Checker:
    """Compares one layer's tiles from ioc and tipg, with the database to explain differences."""

    def __init__(self, conn: asyncpg.Connection, layer: Layer, settings: TileSettings) -> None:
        self.conn, self.layer, self.settings = conn, layer, settings
        self.merge_px = merge_px(layer, settings)
        # A block clipped at the buffer must keep an edge in its own cell (see block_cell).
        if settings.buffer * TILE_PX / settings.extent + self.merge_px + 1 >= BLOCK_PX:
            raise ValueError("the MVT buffer is too wide to read a block's cell back exactly.")
        geom, fid = quote_ident(layer.geometry_column), quote_ident(layer.id_column)
        srid = int(layer.srid)
        self.transformer = (
            Transformer.from_crs(3857, srid, always_xy=True) if srid != 3857 else None
        )
        tile = f"ST_Transform(ST_TileEnvelope($1, $2, $3), {srid})"
        # tipg's filter: its bounds, computed here as tipg does ($1-$4 here, $4-$7 below).
        table = layer.table_sql
        self.count_sql = (
            f"SELECT count(*) FROM {table} t"
            f" WHERE ST_Intersects(t.{geom}, ST_MakeEnvelope($1, $2, $3, $4, {srid}))"
        )
        tipg = f"ST_Intersects(s.geom, ST_MakeEnvelope($4, $5, $6, $7, {srid}))"
        g3857 = f"t.{geom}" if srid == 3857 else f"ST_Transform(t.{geom}, 3857)"
        by = layer.attribute(layer.style.get("by") or "")
        category = f"t.{quote_ident(by.name)}" if by else "NULL::text"
        self.category_checked = by is not None and by.type in CATEGORY_TYPES
        # Each feature's EPSG:3857 size, pixel and cell at zoom $1, as sql/0022 computes them.
        sized = (
            "SELECT f.*, greatest(ST_XMax(f.g) - ST_XMin(f.g), ST_YMax(f.g) - ST_YMin(f.g))"
            " AS size, (round((ST_XMin(f.g) + pi() * 6378137.0) / f.px)::bigint / 16)::int AS cx,"
            " (round((pi() * 6378137.0 - ST_YMax(f.g)) / f.px)::bigint / 16)::int AS cy FROM f"
        )
        buffered = (
            f"ST_Expand(ST_TileEnvelope($1, $2, $3), {PX_SQL} * {TILE_PX}"
            f" * {settings.buffer / settings.extent!r})"
        )
        # Of the given ids ($10): whether each is at least $8 pixels wide or tall (visible),
        # under $9 (merged: 0 where nothing merges), its cell, whether it meets the tile itself,
        # tipg's filter, and ioc's buffered tile (in EPSG:3857, where ioc clips).
        self.explain_sql = (
            f"WITH f AS (SELECT t.{fid}::bigint AS id, t.{geom} AS geom, {g3857} AS g,"
            f" {PX_SQL} AS px FROM {table} t WHERE t.{fid} = ANY($10::bigint[])),"
            f" s AS ({sized})"
            f" SELECT s.id, s.size >= {_px('$8')} AS big, s.size < {_px('$9')} AS small,"
            f" s.cx, s.cy, ST_Intersects(s.geom, {tile}) AS inside, {tipg} AS tipg,"
            f" ST_Intersects(s.g, {buffered}) AS ioc FROM s"
        )
        # Per cell of the given ones ($6, $7): the features of merged size ($4 <= size < $5)
        # whose rounded pixel box starts in it, and their most frequent category. The index
        # filter reaches 32 px around the tile, past any member of a cell whose block meets
        # the buffered tile (its members lie within 4 + 16 + merge_px pixels of the tile).
        near = (
            f"ST_Transform(ST_Segmentize(ST_Expand(ST_TileEnvelope($1, $2, $3), 32 * {PX_SQL}),"
            f" 8 * {PX_SQL}), {srid})"
        )
        self.blocks_sql = (
            f"WITH f AS (SELECT {category} AS c, {g3857} AS g, {PX_SQL} AS px"
            f" FROM {table} t WHERE t.{geom} && {near}), s AS ({sized})"
            " SELECT s.cx, s.cy, count(*) AS n, (mode() WITHIN GROUP (ORDER BY s.c))::text AS c"
            f" FROM s WHERE s.size >= {_px('$4')} AND s.size < {_px('$5')}"
            " AND (s.cx, s.cy) IN (SELECT * FROM unnest($6::int[], $7::int[]))"
            " GROUP BY s.cx, s.cy"
        )

    def merges_at(self, z: int, mode: str) -> bool:
        """Whether ioc draws this layer's small polygons as blocks at zoom z."""
        return mode == "features" and self.merge_px > 0 and z <= self.settings.generalise_max_zoom

    async def tile(
        self, check: ZoomCheck, z: int, x: int, y: int, ioc: httpx.Response, tipg: httpx.Response
    ) -> None:
        """Compare one tile's two answers and add the outcome to ``check``."""
        plans = plan_tile([self.layer], z, self.settings)
        check.mode = plans[0].mode if plans else "none"
        decoded, theirs = _decode(ioc.content), [f for _, f in _decode(tipg.content)]
        check.tiles += 1
        selected = await self.conn.fetchval(self.count_sql, *tipg_bounds(self.transformer, z, x, y))
        tipg_capped = selected >= TIPG_TILE_CAP
        check.tipg_capped += tipg_capped
        check.tipg_features += len(theirs)
        if check.mode == "cluster":
            total = sum(int(f["properties"]["count"]) for _, f in decoded)
            check.ioc_features += total
            expected = selected if tipg_capped else len(theirs)
            check.same += total == expected
            check.unexplained += abs(total - expected)
            return
        merging = self.merges_at(z, check.mode)
        by = self.layer.style.get("by") or ""
        blocks = [_block(f, extent, x, y, by) for extent, f in decoded if merging and _is_block(f)]
        ours = [f for _, f in decoded if not (merging and _is_block(f))]
        check.blocks += len(blocks)
        members = sum(int(b.count or 0) for b in blocks)
        check.block_members += members
        check.ioc_features += len(ours) + members
        ioc_capped = bool(ioc.headers.get("X-Tile-Truncated"))
        check.ioc_capped += ioc_capped
        if ioc_capped:
            return
        unexplained = await self._check_blocks(z, x, y, blocks) if blocks else 0
        cells = {(b.cx, b.cy) for b in blocks}
        ids = {int(f["id"]) for f in ours}
        their_ids = {int(f["properties"][self.layer.id_column]) for f in theirs}
        edge = 0
        for found in await self._explain(z, x, y, their_ids - ids, merging):
            if not found["big"]:
                check.below_pixel += 1
            elif found["small"] and (found["cx"], found["cy"]) in cells:
                check.merged += 1
            elif not found["ioc"]:
                edge += 1  # in tipg's wider buffer, beyond ioc's
            else:
                unexplained += 1
        # At merged zooms every shape ioc draws is checked for its size; elsewhere only those
        # tipg lacks, where tipg is not capped.
        own = ids if merging else ids - their_ids if not tipg_capped else set()
        for found in await self._explain(z, x, y, own, merging):
            if found["small"]:
                unexplained += 1  # drawn alone, yet of a size ioc merges or leaves out
            elif found["id"] in their_ids or tipg_capped:
                continue
            elif not found["inside"]:
                check.in_buffer += 1
            elif not found["tipg"]:
                edge += 1  # meets the tile, outside tipg's bounds (pyproj's datum shift)
            else:
                unexplained += 1
        check.tipg_edge += edge
        check.same += unexplained == 0
        check.unexplained += unexplained

    async def _check_blocks(self, z: int, x: int, y: int, blocks: list[Block]) -> int:
        """How many features ioc's blocks count wrong (and blocks of the wrong category)."""
        drawn: dict[tuple[int, int], list[Block]] = {}
        for block in blocks:
            drawn.setdefault((block.cx, block.cy), []).append(block)
        visible = self.settings.visible_px
        rows = await self.conn.fetch(
            self.blocks_sql, z, x, y, visible, self.merge_px,
            [c[0] for c in drawn], [c[1] for c in drawn],
        )  # fmt: skip
        expected = {(r["cx"], r["cy"]): r for r in rows}
        wrong = 0
        for cell, found in drawn.items():
            row = expected.get(cell)
            wrong += abs(sum(int(b.count or 0) for b in found) - (row["n"] if row else 0))
            if len(found) > 1 or any(b.count is None for b in found):
                wrong += 1  # a cell is one block, and a block says how many it holds
            elif self.category_checked and row is not None:
                value = found[0].category
                wrong += (None if value is None else str(value)) != row["c"]
        return wrong

    async def _explain(
        self, z: int, x: int, y: int, ids: Iterable[int], merging: bool
    ) -> list[asyncpg.Record]:
        ids = sorted(ids)
        if not ids:
            return []
        # Visible from the zoom where a feature is visible_px wide or tall (at least a pixel);
        # merged below merge_px at the zooms where the layer merges (else no size is under 0).
        visible = max(self.settings.visible_px, 1.0)
        merge = max(self.merge_px, visible) if merging else 0.0
        bounds = tipg_bounds(self.transformer, z, x, y)
        return await self.conn.fetch(self.explain_sql, z, x, y, *bounds, visible, merge, ids)


async def compare(
    conn: asyncpg.Connection,
    layer: Layer,
    tiles: Iterable[tuple[int, int, int]],
    ioc_url: str,
    tipg_url: str,
    authorization: str,
) -> dict[int, ZoomCheck]:
    """Fetch every distinct tile from both servers and compare them, per zoom."""
    checker = Checker(conn, layer, TileSettings())
    checks: dict[int, ZoomCheck] = {}
    headers = {"Authorization": authorization}
    async with httpx.AsyncClient(timeout=120) as client:
        for z, x, y in sorted(set(tiles)):
            ioc = await client.get(f"{ioc_url}/tiles/{layer.id}/{z}/{x}/{y}.pbf", headers=headers)
            tipg = await client.get(
                f"{tipg_url}/collections/{layer.schema}.{layer.table}/tiles/WebMercatorQuad/"
                f"{z}/{x}/{y}"
            )
            for response in (ioc, tipg):
                if response.status_code not in (200, 204):
                    raise RuntimeError(f"{response.url}: {response.status_code}")
            check = checks.setdefault(z, ZoomCheck(z))
            await checker.tile(check, z, x, y, ioc, tipg)
    return checks
