"""Do ioc and tipg serve the same content? The tile benchmark compares throughput only after
checking, tile by tile, what each server put in its tiles.

The comparison, per tile of the list (each distinct tile once):

- tipg stops at 10,000 rows a tile (``max_features_per_tile``, by id) without saying so (and
  draws fewer when some collapse to nothing), so PostGIS first counts the rows tipg's own filter
  selects (``ST_Intersects`` with the tile): from 10,000 on, the tile is *capped in tipg*;
- **aggregated** (ioc draws a dense point layer as counted cells): the sum of ioc's ``count``
  must equal tipg's number of features, or that count where tipg is capped;
- **features**: the two sets of feature ids. A feature only tipg has must be one ioc leaves out
  by rule (smaller than a pixel at that zoom: the generalisation's visibility size); a feature
  only ioc has must lie in its MVT buffer, outside the tile itself (ioc selects by the buffered
  envelope, tipg by the tile) — checked only where tipg is not capped. Anything else is
  *unexplained* and makes the tile differ. Tiles ioc capped (``X-Tile-Truncated``) are listed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
import httpx
import mapbox_vector_tile

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
    unexplained: int = 0


def _decode(body: bytes) -> list[dict]:
    if not body:
        return []
    return [f for layer in mapbox_vector_tile.decode(body).values() for f in layer["features"]]


def _pixel_m(z: int) -> float:
    """One pixel of a 256-pixel tile at zoom z, in EPSG:3857 metres."""
    return 2 * math.pi * EARTH_RADIUS / (TILE_PX * 2**z)


class Checker:
    """Compares one layer's tiles from ioc and tipg, with the database to explain differences."""

    def __init__(self, conn: asyncpg.Connection, layer: Layer, settings: TileSettings) -> None:
        self.conn, self.layer, self.settings = conn, layer, settings
        geom, fid = quote_ident(layer.geometry_column), quote_ident(layer.id_column)
        tile = f"ST_Transform(ST_TileEnvelope($1, $2, $3), {int(layer.srid)})"
        table = layer.table_sql
        self.count_sql = f"SELECT count(*) FROM {table} t WHERE ST_Intersects(t.{geom}, {tile})"
        # Of the given ids: how many are at least $4 metres wide or tall in EPSG:3857, and how
        # many touch the tile itself.
        box = f"Box2D(ST_Transform(t.{geom}, 3857))"
        self.explain_sql = (
            f"SELECT count(*) FILTER (WHERE greatest(ST_XMax({box}) - ST_XMin({box}),"
            f" ST_YMax({box}) - ST_YMin({box})) >= $4) AS big,"
            f" count(*) FILTER (WHERE ST_Intersects(t.{geom}, {tile})) AS inside"
            f" FROM {table} t WHERE t.{fid} = ANY($5::bigint[])"
        )

    async def tile(
        self, check: ZoomCheck, z: int, x: int, y: int, ioc: httpx.Response, tipg: httpx.Response
    ) -> None:
        """Compare one tile's two answers and add the outcome to ``check``."""
        plans = plan_tile([self.layer], z, self.settings)
        check.mode = plans[0].mode if plans else "none"
        ours, theirs = _decode(ioc.content), _decode(tipg.content)
        check.tiles += 1
        selected = await self.conn.fetchval(self.count_sql, z, x, y)
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
        unexplained = 0
        if missing := their_ids - ids:
            big, _ = await self._explain(z, x, y, missing)
            check.below_pixel += len(missing) - big
            unexplained += big
        if not tipg_capped and (extra := ids - their_ids):
            _, inside = await self._explain(z, x, y, extra)
            check.in_buffer += len(extra) - inside
            unexplained += inside
        check.same += unexplained == 0
        check.unexplained += unexplained

    async def _explain(self, z: int, x: int, y: int, ids: Iterable[int]) -> tuple[int, int]:
        # Visible from the zoom where a feature is visible_px wide or tall (at least a pixel).
        size = _pixel_m(z) * max(self.settings.visible_px, 1.0)
        row = await self.conn.fetchrow(self.explain_sql, z, x, y, size, sorted(ids))
        return int(row["big"]), int(row["inside"])


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
