"""Where the tile benchmark looks: tiles drawn where a layer's data is.

A wall map and thousands of portal users ask for the tiles where the features are (the dense
core, the crowded wards), not for a square around one point, most of which is countryside at
city zoom. So each tile of the list is the tile, at its zoom, of a feature drawn at random
from the layer: a tile's chance is proportional to the features it holds, dense tiles come up
more than once (as they do in real traffic), and every zoom gets the same number of tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ioc.catalog.layers import Layer
from ioc.db.identifiers import quote_ident
from tiles.pmtiles import lonlat_to_tile


@dataclass(frozen=True)
class Sample:
    """A feature drawn from a layer: its id, a point on it (WGS 84) and its style category."""

    fid: int
    lon: float
    lat: float
    category: str | None


def sample_sql(layer: Layer) -> str:
    """Up to $1 features in an order as good as random but the same every run ($2 seeds it;
    ``random()`` would follow the rows' physical order, which writes change), each with a
    point on its surface in WGS 84 and its style.by value as text."""
    geom = quote_ident(layer.geometry_column)
    by = layer.attribute(layer.style.get("by") or "")
    category = f"t.{quote_ident(by.name)}::text" if by else "NULL::text"
    return (
        "SELECT s.fid, ST_X(s.p) AS lon, ST_Y(s.p) AS lat, s.c FROM ("
        f"SELECT r.fid, ST_Transform(ST_PointOnSurface(r.g), 4326) AS p, r.c FROM ("
        f"SELECT t.{quote_ident(layer.id_column)} AS fid, t.{geom} AS g, {category} AS c"
        f" FROM {layer.table_sql} t WHERE t.{geom} IS NOT NULL"
        f" ORDER BY md5($2 || t.{quote_ident(layer.id_column)}::text) LIMIT $1"
        ") r) s"
    )


async def sample_features(
    conn: asyncpg.Connection, layer: Layer, count: int, seed: str = "issue 20"
) -> list[Sample]:
    """``count`` features of the layer drawn uniformly at random (the same ones every run)."""
    rows = await conn.fetch(sample_sql(layer), count, seed)
    return [Sample(int(r["fid"]), r["lon"], r["lat"], r["c"]) for r in rows]


def draw_tiles(
    samples: Sequence[Sample], zooms: Sequence[int], per_zoom: int
) -> list[tuple[int, int, int]]:
    """``per_zoom`` tiles at each zoom, listed zoom by zoom: the k-th tile of a zoom is the one
    holding its own sample, so no sample counts twice and the zooms are drawn independently."""
    if len(samples) < per_zoom * len(zooms):
        raise ValueError(f"{len(zooms)} zooms × {per_zoom} tiles need as many samples")
    tiles = []
    for n, z in enumerate(zooms):
        for s in samples[n * per_zoom : (n + 1) * per_zoom]:
            tiles.append((z, *lonlat_to_tile(s.lon, s.lat, z)))
    return tiles
