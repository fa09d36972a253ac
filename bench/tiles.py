"""Tile benchmark (``make bench``; not a test): ioc against tipg and the PostGIS floor.

The same public tables of the demo city (largest polygon, line and point layers), the same
tiles over the city centre at zooms 10-16, 8 concurrent clients, one server process each:

- **tipg** (the Python peer, from PyPI, in its own virtualenv ``var/bench-venv``, on the same
  uvicorn stack as ioc);
- **ioc uncached** (``IOC_TILE_CACHE=off``);
- **PostGIS alone**: ioc's tile SQL run directly through asyncpg, one dedicated connection per
  client and nothing else per tile (the floor: what any server on top of this SQL can at best
  reach). Its passes alternate with ioc uncached's, so both see the same machine weather;
- **ioc warm cache** (every tile requested once before measuring).

Targets (issue #5): uncached ioc ≥ 1.5 × tipg tiles/s and ≥ 90 % of PostGIS alone; warm-cache
ioc ≥ 20 × tipg. Every load loop is bounded in requests and time and only targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.common import percentile_ms, seeded_database, start_ioc, start_tipg
from ioc.access import ANONYMOUS
from ioc.catalog import Layer, load_catalog
from ioc.settings import DatabaseSettings
from tiles.pmtiles import lonlat_to_tile
from tiles.render import TileService
from tiles.settings import TileSettings

console = Console()
CONCURRENCY = 8
ZOOMS = range(10, 17)
TILES_PER_ZOOM = 36
CENTRE = (106.70, 10.78)  # District 1
MAX_SECONDS = 60.0
MEASURED_PASSES = 3
# The city's scale by default (1 M reports, 1 M addresses, 300 k buildings: what the IOC serves);
# IOC_BENCH_TILES_SCALE=demo measures the small demo city instead.
SCALE = os.environ.get("IOC_BENCH_TILES_SCALE", "city")
# Its own database per scale: other benchmarks add their own layers to theirs.
BENCH_DB = os.environ.get("IOC_BENCH_TILES_DB", f"ioc_bench_tiles_{SCALE}")


@dataclass
class Result:
    """Throughput and latency of one run."""

    name: str
    count: int
    seconds: float
    latencies: list[float]
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile_ms(self.latencies, p)


# --- database ----------------------------------------------------------------------------------


def prepare_database() -> DatabaseSettings:
    """The benchmark database, seeded with the demo city at SCALE (once)."""
    return seeded_database(BENCH_DB, SCALE, "IOC_BENCH_TILES_DB")


def choose_layers(layers: list[Layer]) -> list[Layer]:
    """The largest public polygon, line and point layers of the demo city's catalog."""
    chosen = []
    for kind in ("Polygon", "Line", "Point"):
        candidates = [la for la in layers if kind in la.geometry_type and la.access == "public"
                      and la.origin == "manifest"
                      and la.feature_count and la.zoom_min <= 12]
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


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost far less CPU than
    the servers it measures (httpx costs about a millisecond per request, as much as a cached
    tile), since both share this machine's cores."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of GET path (gzip accepted, bodies left encoded)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Accept-Encoding: gzip\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
        if chunked:
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                body += await self.reader.readexactly(size + 2)
                if size == 0:
                    break
            return status, body
        return status, await self.reader.readexactly(length) if length else b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def fetch_all(name: str, base: str, paths: list[str], passes: int = 1) -> Result:
    """GET every path ``passes`` times with CONCURRENCY keep-alive clients; bounded by
    MAX_SECONDS."""
    host, port = base.removeprefix("http://").split(":")
    queue: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(passes):
        for path in paths:
            queue.put_nowait(path)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + MAX_SECONDS

    async def worker() -> None:
        nonlocal errors
        connection = Connection(host, int(port))
        try:
            while not queue.empty() and time.monotonic() < deadline:
                path = queue.get_nowait()
                started = time.perf_counter()
                status, _ = await connection.get(path)
                latencies.append(time.perf_counter() - started)
                if status not in (200, 204):
                    errors += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return Result(name, len(latencies), time.perf_counter() - started, latencies, errors)


async def floor_jobs(settings: DatabaseSettings, layers: list[Layer],
                     tiles: list[tuple[int, int, int]]) -> tuple[list[tuple], int]:
    """(statement, z, x, y) of every tile that costs a query, and how many cost none (outside
    a layer's zoom range: ioc answers those without the database too)."""
    conn = await asyncpg.connect(settings.dsn())
    try:
        service = TileService(TileSettings(cache="off"))
        jobs = []
        for layer in layers:
            for z, x, y in tiles:
                plans = service.plan([layer], z)
                if plans:
                    statement = service.sql.get(await service.with_id_types(conn, plans))
                    jobs.append((statement, z, x, y))
    finally:
        await conn.close()
    return jobs, len(layers) * len(tiles) - len(jobs)


async def postgis_floor(connections: list[asyncpg.Connection], jobs: list[tuple], skipped: int,
                        passes: int) -> Result:
    """ioc's tile SQL straight through asyncpg: one connection per client, no HTTP, no pool."""
    queue: asyncio.Queue = asyncio.Queue()
    for _ in range(passes):
        for job in jobs:
            queue.put_nowait(job)
    latencies: list[float] = []

    async def worker(conn: asyncpg.Connection) -> None:
        while not queue.empty():
            statement, z, x, y = queue.get_nowait()
            started = time.perf_counter()
            await conn.fetchrow(statement, z, x, y)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(conn) for conn in connections))
    seconds = time.perf_counter() - started
    # Tiles outside a layer's zoom range cost no query in ioc either; count them as served.
    return Result("PostGIS alone (floor)", len(latencies) + skipped * passes, seconds,
                  latencies + [0.0] * (skipped * passes))


def combine(name: str, parts: list[Result]) -> Result:
    """Several measured passes of one contender as one result."""
    return Result(name, sum(p.count for p in parts), sum(p.seconds for p in parts),
                  [t for p in parts for t in p.latencies], sum(p.errors for p in parts))


async def measure_server(name: str, base: str, paths: list[str]) -> Result:
    """One warm-up pass, then MEASURED_PASSES passes (bounded by MAX_SECONDS)."""
    await fetch_all(name, base, paths)
    return await fetch_all(name, base, paths, passes=MEASURED_PASSES)


def report(results: dict[str, Result], layers: list[Layer], tiles: int) -> None:
    """Print the table and the ratios against the targets."""
    table = Table(title=f"{tiles} tiles × {len(layers)} layers "
                        f"({', '.join(la.id for la in layers)}), z{ZOOMS.start}-{ZOOMS.stop - 1},"
                        f" {CONCURRENCY} clients")
    for column in ("server", "tiles", "tiles/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right" if column != "server" else "left")
    for result in results.values():
        table.add_row(result.name, str(result.count), f"{result.rate:,.0f}",
                      f"{result.percentile(0.5):.1f}", f"{result.percentile(0.99):.1f}",
                      str(result.errors))
    console.print(table)
    tipg, ioc = results["tipg"].rate, results["ioc"].rate
    floor, warm = results["floor"].rate, results["warm"].rate
    checks = [("uncached ioc / tipg", ioc / tipg, 1.5),
              ("uncached ioc / PostGIS alone", ioc / floor, 0.9),
              ("warm-cache ioc / tipg", warm / tipg, 20.0)]
    for label, ratio, target in checks:
        mark = "[green]ok[/green]" if ratio >= target else "[red]below target[/red]"
        console.print(f"{label}: {ratio:.2f} (target ≥ {target}) {mark}")


async def run(settings: DatabaseSettings, layers: list[Layer], tiles: list[tuple[int, int, int]],
              ) -> dict[str, Result]:
    """All four measurements; ioc uncached and the floor pass by pass, alternately."""
    results: dict[str, Result] = {}
    tipg = start_tipg(settings, sorted({la.schema for la in layers}))
    try:
        paths = [f"/collections/{la.schema}.{la.table}/tiles/WebMercatorQuad/{z}/{x}/{y}"
                 for la in layers for z, x, y in tiles]
        results["tipg"] = await measure_server("tipg", tipg.url, paths)
    finally:
        tipg.stop()
    paths = [f"/tiles/{la.id}/{z}/{x}/{y}.pbf" for la in layers for z, x, y in tiles]
    jobs, skipped = await floor_jobs(settings, layers, tiles)
    connections = [await asyncpg.connect(settings.dsn()) for _ in range(CONCURRENCY)]
    with tempfile.TemporaryDirectory() as cache_dir:
        ioc = start_ioc(settings, IOC_TILE_CACHE="off", IOC_TILE_CACHE_DIR=cache_dir)
        try:
            await fetch_all("ioc uncached", ioc.url, paths)  # warm-up: both read the same pages
            await postgis_floor(connections, jobs, skipped, 1)
            served, floor = [], []
            for _ in range(MEASURED_PASSES):
                served.append(await fetch_all("ioc uncached", ioc.url, paths))
                floor.append(await postgis_floor(connections, jobs, skipped, 1))
            results["ioc"] = combine("ioc uncached", served)
            results["floor"] = combine("PostGIS alone (floor)", floor)
        finally:
            ioc.stop()
            for conn in connections:
                await conn.close()
        ioc = start_ioc(settings, IOC_TILE_CACHE="on", IOC_TILE_CACHE_DIR=cache_dir)
        try:
            results["warm"] = await measure_server("ioc warm cache", ioc.url, paths)
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
    console.print(f"latency median of all ioc uncached requests: "
                  f"{statistics.median(results['ioc'].latencies) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
