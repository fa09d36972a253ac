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
  by rule (smaller than a pixel at that zoom: the generalisation's visibility size) or one
  beyond ioc's MVT buffer (tipg's is 256 px, ioc's 64); a feature only ioc has must lie in its
  MVT buffer, outside the tile itself (ioc selects by the buffered envelope, tipg by the tile),
  or outside tipg's filter — checked only where tipg is not capped. Anything else is
  *unexplained* and makes the tile differ. Tiles ioc capped (``X-Tile-Truncated``) are listed.

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
from tiles.sql import EARTH_RADIUS, TILE_PX, plan_tile

TIPG_TILE_CAP = 10_000  # tipg's default max_features_per_tile


@dataclass
class ZoomCheck:
    """What the comparison found at one zoom of one layer."""

    zoom: int
    mode: str = ""
    tiles: int = 0
    same: int = 0
    tipg_capped: int = 0
    ioc_capped: int = 0
    ioc_features: int = 0  # aggregated: sum of counts
    tipg_features: int = 0
    below_pixel: int = 0  # only in tipg, smaller than the visibility size
    in_buffer: int = 0  # only in ioc, in the buffer outside the tile
    tipg_edge: int = 0  # outside tipg's filter (its bounds by pyproj) or beyond ioc's buffer
    unexplained: int = 0


def _decode(body: bytes) -> list[dict]:
    if not body:
        return []
    return [f for layer in mapbox_vector_tile.decode(body).values() for f in layer["features"]]


def _pixel_m(z: int) -> float:
    """One pixel of a 256-pixel tile at zoom z, in EPSG:3857 metres."""
    return 2 * math.pi * EARTH_RADIUS / (TILE_PX * 2**z)


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
        tipg = f"ST_Intersects(t.{geom}, ST_MakeEnvelope($4, $5, $6, $7, {srid}))"
        # Of the given ids ($9): how many are at least $8 metres wide or tall in EPSG:3857,
        # how many meet the tile itself, how many tipg's filter selects, and how many meet
        # ioc's buffered tile (in EPSG:3857, where ioc clips).
        box = f"Box2D(ST_Transform(t.{geom}, 3857))"
        buffered = (
            "ST_Expand(ST_TileEnvelope($1, $2, $3), (2 * pi() * 6378137.0 / 2 ^ $1)"
            f" * {settings.buffer / settings.extent!r})"
        )
        self.explain_sql = (
            f"SELECT count(*) FILTER (WHERE greatest(ST_XMax({box}) - ST_XMin({box}),"
            f" ST_YMax({box}) - ST_YMin({box})) >= $8) AS big,"
            f" count(*) FILTER (WHERE ST_Intersects(t.{geom}, {tile})) AS inside,"
            f" count(*) FILTER (WHERE {tipg}) AS tipg,"
            f" count(*) FILTER (WHERE ST_Intersects(ST_Transform(t.{geom}, 3857), {buffered}))"
            f" AS ioc FROM {table} t WHERE t.{fid} = ANY($9::bigint[])"
        )

    async def tile(
        self, check: ZoomCheck, z: int, x: int, y: int, ioc: httpx.Response, tipg: httpx.Response
    ) -> None:
        """Compare one tile's two answers and add the outcome to ``check``."""
        plans = plan_tile([self.layer], z, self.settings)
        check.mode = plans[0].mode if plans else "none"
        ours, theirs = _decode(ioc.content), _decode(tipg.content)
        check.tiles += 1
        selected = await self.conn.fetchval(self.count_sql, *tipg_bounds(self.transformer, z, x, y))
        tipg_capped = selected >= TIPG_TILE_CAP
        check.tipg_capped += tipg_capped
        check.tipg_features += len(theirs)
        if check.mode == "cluster":
            total = sum(int(f["properties"]["count"]) for f in ours)
            check.ioc_features += total
            expected = selected if tipg_capped else len(theirs)
            check.same += total == expected
            check.unexplained += abs(total - expected)
            return
        check.ioc_features += len(ours)
        ioc_capped = bool(ioc.headers.get("X-Tile-Truncated"))
        check.ioc_capped += ioc_capped
        if ioc_capped:
            return
        ids = {int(f["id"]) for f in ours}
        their_ids = {int(f["properties"][self.layer.id_column]) for f in theirs}
        unexplained = edge = 0
        for fid in their_ids - ids:  # one at a time: each is explained by one rule or none
            found = await self._explain(z, x, y, [fid])
            if not found["big"]:
                check.below_pixel += 1
            elif not found["ioc"]:
                edge += 1  # in tipg's wider buffer, beyond ioc's
            else:
                unexplained += 1
        for fid in ids - their_ids if not tipg_capped else ():
            found = await self._explain(z, x, y, [fid])
            if not found["inside"]:
                check.in_buffer += 1
            elif not found["tipg"]:
                edge += 1  # meets the tile, outside tipg's bounds (pyproj's datum shift)
            else:
                unexplained += 1
        check.tipg_edge += edge
        check.same += unexplained == 0
        check.unexplained += unexplained

    async def _explain(self, z: int, x: int, y: int, ids: Iterable[int]) -> asyncpg.Record:
        # Visible from the zoom where a feature is visible_px wide or tall (at least a pixel).
        size = _pixel_m(z) * max(self.settings.visible_px, 1.0)
        bounds = tipg_bounds(self.transformer, z, x, y)
        return await self.conn.fetchrow(self.explain_sql, z, x, y, *bounds, size, sorted(ids))


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
