"""``ioc tiles``: seed the disk cache, export PMTiles, prune old cached versions.

Registered in ``ioc/cli/__init__.py``. Long runs show a
rich progress bar and stop cleanly on Ctrl-C: every tile already written stays valid (cache
files and the archive are written to a temporary name, then renamed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    Progress,
    TimeRemainingColumn,
)

from ioc.catalog.access import ADMIN
from ioc.catalog.layers import Layer, load_catalog
from ioc.cli.console import friendly, out, progress_bar
from ioc.config import get_settings
from ioc.db.connection import create_pool
from ioc.errors import IocError
from tiles.pmtiles import count_tiles, parse_bbox, parse_zoom_range, tiles_in_bbox, write_pmtiles
from tiles.render import TileService, resolve_layers
from tiles.tilejson import tilejson, union_bounds

app = typer.Typer(help="Vector tiles: seed the cache, export PMTiles.", no_args_is_help=True)

LayersOpt = Annotated[str, typer.Option("--layers", help="Layer ids, comma-separated.")]
ZoomOpt = Annotated[str, typer.Option("--zoom", help="Zoom range, e.g. 10-14.")]
BboxOpt = Annotated[
    str | None,
    typer.Option("--bbox", help="west,south,east,north (WGS 84); default: the layers' extent."),
]
ConcurrencyOpt = Annotated[int, typer.Option(min=1, max=32, help="Tiles rendered at once.")]


def _progress() -> Progress:
    return progress_bar(TimeRemainingColumn())


async def _render_all(
    service: TileService,
    pool,
    groups: Sequence[list[Layer]],
    tiles: Sequence[tuple[int, int, int]],
    concurrency: int,
    advance: Callable[[], None],
    keep: Callable[[int, int, int, bytes], None] | None = None,
) -> dict[str, int]:
    """Render (or find in cache) every tile of every layer group, ``concurrency`` at a time."""
    counts = {"database": 0, "disk": 0, "none": 0, "memory": 0, "truncated": 0}
    queue: asyncio.Queue = asyncio.Queue()
    for group in groups:
        for tile in tiles:
            queue.put_nowait((group, tile))

    async def worker() -> None:
        while not queue.empty():
            group, (z, x, y) = queue.get_nowait()
            result = await service.get_tile(pool, group, z, x, y)
            counts[result.source] += 1
            counts["truncated"] += bool(result.truncated)
            if keep is not None:
                keep(z, x, y, result.data)
            advance()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


async def _run(
    layer_ids: str,
    zoom: str,
    bbox: str | None,
    concurrency: int,
    composite: bool,
    keep: Callable[[int, int, int, bytes], None] | None = None,
) -> tuple[list[Layer], tuple[float, float, float, float], dict[str, int]]:
    """Shared by seed and export: resolve layers and area, then render with a progress bar."""
    settings = get_settings()
    tile_settings = settings.tiles.model_copy(update={"memory_mb": 0})
    if not tile_settings.enabled and keep is None:
        raise IocError("IOC_TILE_CACHE=off: there is no cache to seed.")
    zmin, zmax = parse_zoom_range(zoom)
    pool = await create_pool(settings.database)
    try:
        catalog = await load_catalog(pool)
        layers = resolve_layers(catalog, ADMIN, layer_ids)
        area = parse_bbox(bbox) if bbox else tuple(union_bounds(layers))
        groups = [layers] if composite or keep is not None else [[la] for la in layers]
        total = count_tiles(area, zmin, zmax) * len(groups)
        service = TileService(tile_settings)
        await service.start(pool, catalog)  # key and date tiles as the servers do
        with _progress() as progress:
            task = progress.add_task(
                f"tiles {','.join(la.id for la in layers)} z{zoom}", total=total
            )
            counts = await _render_all(
                service,
                pool,
                groups,
                list(tiles_in_bbox(area, zmin, zmax)),
                concurrency,
                lambda: progress.advance(task),
                keep,
            )
    finally:
        await pool.close()
    return layers, area, counts  # type: ignore[return-value]


@app.command("seed")
@friendly
def seed(
    layers: LayersOpt,
    zoom: ZoomOpt = "10-14",
    bbox: BboxOpt = None,
    concurrency: ConcurrencyOpt = 4,
    composite: Annotated[
        bool,
        typer.Option(
            help="Seed the combined tile of all the layers (/tiles/a,b/…) instead of each "
            "layer's own."
        ),
    ] = False,
) -> None:
    """Pre-render tiles into the shared disk cache (IOC_TILE_CACHE_DIR)."""
    _, _, counts = asyncio.run(_run(layers, zoom, bbox, concurrency, composite))
    out.print(
        f"rendered {counts['database']:,}, already cached {counts['disk']:,}, outside the "
        f"zoom range {counts['none']:,}; {counts['truncated']:,} tile(s) hit the feature cap."
    )


@app.command("export")
@friendly
def export(
    layers: LayersOpt,
    pmtiles: Annotated[Path, typer.Option("--pmtiles", help="The PMTiles v3 archive to write.")],
    zoom: ZoomOpt = "10-14",
    bbox: BboxOpt = None,
    concurrency: ConcurrencyOpt = 4,
) -> None:
    """Write an offline PMTiles archive of the layers (one MVT per tile, all layers in it)."""
    collected: list[tuple[int, int, int, bytes]] = []
    found, area, _ = asyncio.run(
        _run(
            layers,
            zoom,
            bbox,
            concurrency,
            True,
            keep=lambda z, x, y, data: collected.append((z, x, y, data)),
        )
    )
    zmin, zmax = parse_zoom_range(zoom)
    metadata = tilejson(found, "", get_settings().tiles)
    metadata.pop("tiles")
    metadata.update(minzoom=zmin, maxzoom=zmax, bounds=list(area))
    written = write_pmtiles(pmtiles, collected, area, metadata)
    out.print(f"wrote {written:,} tiles to {pmtiles}", highlight=False)


@app.command("prune")
@friendly
def prune() -> None:
    """Delete cached tiles of layer versions (or tile settings) that are no longer current."""

    async def versions() -> dict[str, int]:
        pool = await create_pool(get_settings().database)
        try:
            catalog = await load_catalog(pool)
            await service.start(pool, catalog)
            return service.key_versions(catalog)  # tile bases: item writes keep their tiles
        finally:
            await pool.close()

    tile_settings = get_settings().tiles
    service = TileService(tile_settings)
    if service.disk is None:
        raise IocError("The disk cache is off: nothing to prune.")
    removed = service.disk.prune(asyncio.run(versions()), service.fingerprint)
    out.print(
        f"removed {removed} stale cache folder(s) under {tile_settings.cache_dir}", highlight=False
    )
