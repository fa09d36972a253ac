"""Tile benchmark (``make bench``; not a test): ioc against tipg and the PostGIS floor.

The same public tables of the demo city (largest polygon, line and point layers), the same
tiles over the city centre at zooms 10-16, 8 concurrent clients, one server process each:

- **tipg** (the Python peer, from PyPI, in its own virtualenv ``var/bench-venv``, on the same
  uvicorn stack as ioc);
- **ioc uncached** (``IOC_TILE_CACHE=off``);
- **PostGIS alone**: ioc's tile SQL run by pgbench, prepared, one connection per client and
  nothing else per tile (the floor: what any server on top of this SQL can at best reach).
  Its runs alternate with ioc uncached's, so both see the same machine weather;
- **ioc warm cache** (every tile requested before measuring).

The HTTP servers are driven by wrk and PostgreSQL by pgbench (:mod:`bench.loadgen`): C clients
that cost a few microseconds a request, so the figures are the servers', not a Python load
generator's. Each contender runs a warm-up, then MEASURED_PASSES timed runs of PASS_ROUNDS
rounds each: in a round every tile of the list is requested once per client, so tipg, ioc and
the floor do exactly the same work. The warm cache runs for WARM_PASS_SECONDS instead (it goes
through the list hundreds of times a run: the mix is the list's whatever the time).

Targets (issue #5): uncached ioc ≥ 1.5 × tipg tiles/s and ≥ 90 % of PostGIS alone; warm-cache
ioc ≥ 20 × tipg. Every load run is bounded in time and only targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.common import seeded_database, start_ioc, start_tipg
from bench.loadgen import Job, Run, combine, pgbench, wrk
from ioc.catalog.access import ANONYMOUS
from ioc.catalog.layers import Layer, load_catalog
from ioc.settings import DatabaseSettings
from tiles.pmtiles import lonlat_to_tile
from tiles.render import TileService
from tiles.settings import TileSettings

console = Console()
CONCURRENCY = 8
ZOOMS = range(10, 17)
TILES_PER_ZOOM = 36
CENTRE = (106.70, 10.78)  # District 1
WARM_UP_SECONDS = 5.0
PASS_ROUNDS = int(os.environ.get("IOC_BENCH_PASS_ROUNDS", "1"))
WARM_PASS_SECONDS = 10.0
MEASURED_PASSES = 3
# The city's scale by default (1 M reports, 1 M addresses, 300 k buildings: what the IOC serves);
# IOC_BENCH_TILES_SCALE=demo measures the small demo city instead.
SCALE = os.environ.get("IOC_BENCH_TILES_SCALE", "city")
# Its own database per scale: other benchmarks add their own layers to theirs.
BENCH_DB = os.environ.get("IOC_BENCH_TILES_DB", f"ioc_bench_tiles_{SCALE}")


# --- database ----------------------------------------------------------------------------------


def prepare_database() -> DatabaseSettings:
    """The benchmark database, seeded with the demo city at SCALE (once)."""
    return seeded_database(BENCH_DB, SCALE, "IOC_BENCH_TILES_DB")


def choose_layers(layers: list[Layer]) -> list[Layer]:
    """The largest public polygon, line and point layers of the demo city's catalog."""
    chosen = []
    for kind in ("Polygon", "Line", "Point"):
        candidates = [
            la
            for la in layers
            if kind in la.geometry_type
            and la.access == "public"
            and la.origin == "manifest"
            and la.feature_count
            and la.zoom_min <= 12
        ]
        if candidates:
            chosen.append(max(candidates, key=lambda la: la.feature_count))
    return chosen


def tile_list() -> list[tuple[int, int, int]]:
    """TILES_PER_ZOOM tiles per zoom in a square around the centre."""
    side = math.isqrt(TILES_PER_ZOOM)
    tiles = []
    for z in ZOOMS:
        cx, cy = lonlat_to_tile(*CENTRE, z)
        start = side // 2
        tiles += [(z, cx - start + i, cy - start + j) for i in range(side) for j in range(side)]
    return tiles


# --- load --------------------------------------------------------------------------------------


async def floor_jobs(
    settings: DatabaseSettings, layers: list[Layer], tiles: list[tuple[int, int, int]]
) -> tuple[list[Job], int]:
    """The tiles that cost a query, as ioc's own statements, and how many cost none (outside a
    layer's zoom range: ioc answers those without the database too)."""
    conn = await asyncpg.connect(settings.dsn())
    try:
        service = TileService(TileSettings(cache="off"))
        jobs = []
        for layer in layers:
            for z, x, y in tiles:
                plans = service.plan([layer], z)
                if plans:
                    statement = service.sql.get(await service.with_id_types(conn, plans))
                    jobs.append(Job(statement, z, x, y))
    finally:
        await conn.close()
    return jobs, len(layers) * len(tiles) - len(jobs)


def measure_server(name: str, base: str, paths: list[str], **length: float) -> Run:
    """A warm-up run, then MEASURED_PASSES timed runs of the given length (rounds or
    seconds)."""
    wrk(name, base, paths, CONCURRENCY, seconds=WARM_UP_SECONDS)
    return combine(
        name, [wrk(name, base, paths, CONCURRENCY, **length) for _ in range(MEASURED_PASSES)]
    )


def report(results: dict[str, Run], layers: list[Layer], tiles: int) -> None:
    """Print the table and the ratios against the targets."""
    table = Table(
        title=f"{tiles} tiles × {len(layers)} layers "
        f"({', '.join(la.id for la in layers)}), z{ZOOMS.start}-{ZOOMS.stop - 1},"
        f" {CONCURRENCY} clients, {SCALE} scale"
    )
    for column in ("server", "tiles", "tiles/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right" if column != "server" else "left")
    for result in results.values():
        table.add_row(
            result.name,
            f"{result.count:,.0f}",
            f"{result.rate:,.0f}",
            f"{result.p50:.1f}",
            f"{result.p99:.1f}",
            str(result.errors),
        )
    console.print(table)
    tipg, ioc = results["tipg"].rate, results["ioc"].rate
    floor, warm = results["floor"].rate, results["warm"].rate
    checks = [
        ("uncached ioc / tipg", ioc / tipg, 1.5),
        ("uncached ioc / PostGIS alone", ioc / floor, 0.9),
        ("warm-cache ioc / tipg", warm / tipg, 20.0),
    ]
    for label, ratio, target in checks:
        mark = "[green]ok[/green]" if ratio >= target else "[red]below target[/red]"
        console.print(f"{label}: {ratio:.2f} (target ≥ {target}) {mark}")


async def run(
    settings: DatabaseSettings,
    layers: list[Layer],
    tiles: list[tuple[int, int, int]],
) -> dict[str, Run]:
    """All four measurements; ioc uncached and the floor run by run, alternately."""
    results: dict[str, Run] = {}
    tipg = start_tipg(settings, sorted({la.schema for la in layers}))
    try:
        paths = [
            f"/collections/{la.schema}.{la.table}/tiles/WebMercatorQuad/{z}/{x}/{y}"
            for la in layers
            for z, x, y in tiles
        ]
        results["tipg"] = measure_server("tipg", tipg.url, paths, rounds=PASS_ROUNDS)
    finally:
        tipg.stop()
    paths = [f"/tiles/{la.id}/{z}/{x}/{y}.pbf" for la in layers for z, x, y in tiles]
    jobs, free = await floor_jobs(settings, layers, tiles)
    with tempfile.TemporaryDirectory() as cache_dir:
        ioc = start_ioc(settings, IOC_TILE_CACHE="off", IOC_TILE_CACHE_DIR=cache_dir)
        try:
            # Warm-up: both read the same pages into PostgreSQL's buffers.
            wrk("ioc uncached", ioc.url, paths, CONCURRENCY, seconds=WARM_UP_SECONDS)
            pgbench("floor", settings, jobs, CONCURRENCY, free, seconds=WARM_UP_SECONDS)
            served, floor = [], []
            for _ in range(MEASURED_PASSES):
                served.append(wrk("ioc uncached", ioc.url, paths, CONCURRENCY, rounds=PASS_ROUNDS))
                floor.append(
                    pgbench("floor", settings, jobs, CONCURRENCY, free, rounds=PASS_ROUNDS)
                )
            results["ioc"] = combine("ioc uncached", served)
            results["floor"] = combine("PostGIS alone (floor)", floor)
        finally:
            ioc.stop()
        ioc = start_ioc(settings, IOC_TILE_CACHE="on", IOC_TILE_CACHE_DIR=cache_dir)
        try:
            results["warm"] = measure_server(
                "ioc warm cache", ioc.url, paths, seconds=WARM_PASS_SECONDS
            )
        finally:
            ioc.stop()
    return {k: results[k] for k in ("tipg", "ioc", "floor", "warm")}


def main() -> None:
    """Prepare, measure, print."""
    settings = prepare_database()

    async def catalog_layers() -> list[Layer]:
        pool = await asyncpg.create_pool(settings.dsn(), min_size=1, max_size=2)
        try:
            return (await load_catalog(pool)).visible(ANONYMOUS)
        finally:
            await pool.close()

    layers = choose_layers(asyncio.run(catalog_layers()))
    if not layers:
        console.print("[red]no public layer with data: is the demo city seeded?[/red]")
        raise SystemExit(1)
    tiles = tile_list()
    results = asyncio.run(run(settings, layers, tiles))
    report(results, layers, len(tiles))


if __name__ == "__main__":
    main()
