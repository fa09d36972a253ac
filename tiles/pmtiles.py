"""Tile ranges over an area, and offline PMTiles v3 archives of rendered tiles.

The archive is written with the ``pmtiles`` package's writer (directories, run-length and
deduplication of identical tiles per the v3 spec); tiles stay gzip-compressed as the cache holds
them, which the header declares.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ioc.errors import InvalidParameter

MAX_LAT = 85.0511287798066


def parse_zoom_range(text: str) -> tuple[int, int]:
    """``"10-14"`` or ``"12"`` → (min, max), within 0..24."""
    low, _, high = text.partition("-")
    try:
        zmin, zmax = int(low), int(high or low)
    except ValueError:
        raise InvalidParameter(
            f"Zoom '{text}' is not a range like 10-14.", parameter="zoom"
        ) from None
    if not 0 <= zmin <= zmax <= 24:
        raise InvalidParameter(
            f"Zoom range '{text}' must be within 0-24, low to high.", parameter="zoom"
        )
    return zmin, zmax


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"west,south,east,north"`` in WGS 84 degrees."""
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidParameter(
            "The bbox is four numbers: west,south,east,north.", parameter="bbox"
        ) from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise InvalidParameter(
            "The bbox must be west<east and south<north, in degrees.", parameter="bbox"
        )
    return west, south, east, north


def lonlat_to_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The (x, y) of the WebMercatorQuad tile at zoom z that contains the point."""
    n = 1 << z
    lat = max(-MAX_LAT, min(MAX_LAT, lat))
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def tiles_in_bbox(bbox: Sequence[float], zmin: int, zmax: int) -> Iterator[tuple[int, int, int]]:
    """Every tile (z, x, y) that intersects the bbox, zoom by zoom."""
    west, south, east, north = bbox
    for z in range(zmin, zmax + 1):
        x0, y0 = lonlat_to_tile(west, north, z)
        x1, y1 = lonlat_to_tile(east, south, z)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                yield z, x, y


def count_tiles(bbox: Sequence[float], zmin: int, zmax: int) -> int:
    """How many tiles :func:`tiles_in_bbox` yields (without yielding them)."""
    west, south, east, north = bbox
    total = 0
    for z in range(zmin, zmax + 1):
        x0, y0 = lonlat_to_tile(west, north, z)
        x1, y1 = lonlat_to_tile(east, south, z)
        total += (x1 - x0 + 1) * (y1 - y0 + 1)
    return total


def write_pmtiles(
    path: Path,
    tiles: Iterable[tuple[int, int, int, bytes]],
    bounds: Sequence[float],
    metadata: dict[str, Any],
) -> int:
    """Write gzip-compressed MVTs to a PMTiles v3 archive; returns the number of tiles.

    Tiles are sorted by PMTiles tile id (Hilbert order) so that the archive is "clustered";
    empty tiles are simply absent, which readers treat as empty.
    """
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import Writer

    entries = sorted((zxy_to_tileid(z, x, y), data) for z, x, y, data in tiles if data)
    if not entries:
        raise InvalidParameter("No tile with data in that area and zoom range: nothing to export.")
    zooms = [_zoom_of(tile_id) for tile_id, _ in (entries[0], entries[-1])]
    west, south, east, north = bounds
    header = {
        "tile_type": TileType.MVT,
        "tile_compression": Compression.GZIP,
        "min_lon_e7": int(west * 1e7),
        "min_lat_e7": int(south * 1e7),
        "max_lon_e7": int(east * 1e7),
        "max_lat_e7": int(north * 1e7),
        "center_zoom": zooms[0],
        "center_lon_e7": int((west + east) / 2 * 1e7),
        "center_lat_e7": int((south + north) / 2 * 1e7),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        writer = Writer(handle)
        for tile_id, data in entries:
            writer.write_tile(tile_id, data)
        writer.finalize(header, metadata)
    tmp.replace(path)
    return len(entries)


def _zoom_of(tile_id: int) -> int:
    from pmtiles.tile import tileid_to_zxy

    return tileid_to_zxy(tile_id)[0]
