"""Tile benchmark (``make bench``; not a test): ioc against tipg and the PostGIS floor.

The same public tables of the demo city (largest polygon, line and point layers), the same
tiles over the city centre at zooms 10-16, 8 concurrent clients, one server process each:

- **tipg** (the Python peer, from PyPI, in its own virtualenv ``var/tipg-venv``);
- **ioc uncached** (``IOC_TILE_CACHE=off``);
- **PostGIS alone**: ioc's tile SQL run directly through asyncpg with 8 connections (the floor:
  what any server on top of this SQL can at best reach);
- **ioc warm cache** (every tile requested once before measuring).

Targets (issue #5): uncached ioc ≥ 1.5 × tipg tiles/s and ≥ 90 % of PostGIS alone; warm-cache
ioc ≥ 20 × tipg. Every load loop is bounded in requests and time and only targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psycopg2
from rich.console import Console
from rich.table import Table

from bench.common import percentile_ms
from ioc.access import ANONYMOUS
from ioc.catalog import Layer, load_catalog
from ioc.database import create_migrated
from ioc.settings import PROJECT_ROOT, DatabaseSettings
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
TIPG_VENV = PROJECT_ROOT / "var" / "tipg-venv"
# Its own database: other benchmarks add their own layers to theirs.
BENCH_DB = os.environ.get("IOC_BENCH_TILES_DB", "ioc_bench_tiles")


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
    """The benchmark database: migrated and seeded with the demo city (once)."""
    settings = create_migrated(BENCH_DB)
    conn = psycopg2.connect(settings.dsn())
    try:
        from layers.seeding import seed_database

        console.print("seeding the demo city (first run only)…")
        seed_database(conn, scale="demo", only_if_empty=True)
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()
    return settings


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


# --- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def socket_url(settings: DatabaseSettings) -> str:
    """A URL with the Unix socket directory as a percent-encoded host (tipg's validator
    rejects an empty host with ?host=)."""
    if not settings.managed:
        return settings.dsn()
    host = str(settings.socket_dir).replace("/", "%2F")
    return f"postgresql://postgres@{host}:{settings.pg_port}/{settings.db_name}"


def start_server(command: list[str], env: dict[str, str], ready_path: str) -> tuple[subprocess.Popen, str]:
    """Start a server on a free port and wait until it answers."""
    port = free_port()
    proc = subprocess.Popen([*command, "--port", str(port)], cwd=PROJECT_ROOT,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"server {' '.join(command)} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_ioc(settings: DatabaseSettings, cache: str, cache_dir: str) -> tuple[subprocess.Popen, str]:
    env = {"IOC_DB_NAME": settings.db_name, "IOC_LOG_LEVEL": "warning", "IOC_WORKERS": "1",
           "IOC_TILE_CACHE": cache, "IOC_TILE_CACHE_DIR": cache_dir}
    if not settings.managed:
        env["DATABASE_URL"] = settings.dsn()
    return start_server([str(Path(sys.executable).parent / "ioc"), "serve"], env, "/readyz")


def start_tipg(settings: DatabaseSettings, layers: list[Layer]) -> tuple[subprocess.Popen, str]:
    schemas = sorted({la.schema for la in layers})
    tables = [f"{la.schema}.{la.table}" for la in layers]
    env = {"DATABASE_URL": socket_url(settings), "TIPG_DB_SCHEMAS": json.dumps(schemas),
           "TIPG_DB_TABLES": json.dumps(tables), "TIPG_DEBUG": "false"}
    command = [str(TIPG_VENV / "bin" / "uvicorn"), "tipg.main:app", "--workers", "1",
               "--log-level", "warning", "--host", "127.0.0.1"]
    return start_server(command, env, "/healthz")


def ensure_tipg() -> None:
    """tipg in its own virtualenv (its pins must not touch ioc's)."""
    if (TIPG_VENV / "bin" / "uvicorn").exists():
        return
    console.print("installing tipg into var/tipg-venv…")
    subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
    subprocess.run([str(TIPG_VENV / "bin" / "pip"), "install", "-q", "tipg==1.6.1",
                    "uvicorn"], check=True)


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


async def postgis_floor(settings: DatabaseSettings, layers: list[Layer],
                        tiles: list[tuple[int, int, int]]) -> Result:
    """ioc's tile SQL straight through asyncpg, CONCURRENCY connections, no HTTP."""
    pool = await asyncpg.create_pool(settings.dsn(), min_size=CONCURRENCY, max_size=CONCURRENCY)
    service = TileService(TileSettings(cache="off"))
    jobs = []
    for layer in layers:
        for z, x, y in tiles:
            plans = service.plan([layer], z)
            if plans:
                jobs.append((service.sql.get(await service.with_id_types(pool, plans)), z, x, y))
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            statement, z, x, y = queue.get_nowait()
            started = time.perf_counter()
            await pool.fetchrow(statement, z, x, y)
            latencies.append(time.perf_counter() - started)

    for passes in (1, MEASURED_PASSES):  # warm-up (prepares, reads pages), then measured
        latencies.clear()
        for job in jobs * passes:
            queue.put_nowait(job)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        seconds = time.perf_counter() - started
    await pool.close()
    # Tiles outside a layer's zoom range cost no query in ioc either; count them as served.
    skipped = (len(layers) * len(tiles) - len(jobs)) * MEASURED_PASSES
    return Result("PostGIS alone (floor)", len(latencies) + skipped, seconds,
                  latencies + [0.0] * skipped)


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
    """All four measurements, one server at a time."""
    results: dict[str, Result] = {}
    proc, url = start_tipg(settings, layers)
    try:
        paths = [f"/collections/{la.schema}.{la.table}/tiles/WebMercatorQuad/{z}/{x}/{y}"
                 for la in layers for z, x, y in tiles]
        results["tipg"] = await measure_server("tipg", url, paths)
    finally:
        stop(proc)
    with tempfile.TemporaryDirectory() as cache_dir:
        runs = (("ioc", "off", "ioc uncached"), ("warm", "on", "ioc warm cache"))
        for key, cache, name in runs:
            proc, url = start_ioc(settings, cache, cache_dir)
            try:
                paths = [f"/tiles/{la.id}/{z}/{x}/{y}.pbf" for la in layers for z, x, y in tiles]
                results[key] = await measure_server(name, url, paths)
            finally:
                stop(proc)
    results["floor"] = await postgis_floor(settings, layers, tiles)
    return {k: results[k] for k in ("tipg", "ioc", "floor", "warm")}


def main() -> None:
    """Prepare, measure, print."""
    ensure_tipg()
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
