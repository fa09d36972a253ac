"""Shared benchmark machinery: the bench database, server processes, a bounded load generator,
and result tables.

Everything stays on the loopback interface; every load run is bounded both in requests and in
seconds. Servers run as one process each (one uvicorn worker) against the same database.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg2
from rich.console import Console
from rich.table import Table

from ioc.config import get_settings
from ioc.db.connection import create_migrated, sibling_settings
from ioc.settings import PROJECT_ROOT, DatabaseSettings, DataSettings

console = Console(width=None if sys.stdout.isatty() else 110)
BENCH_DB = os.environ.get("IOC_BENCH_DB", "ioc_bench")
BENCH_VENV = PROJECT_ROOT / "var" / "bench-venv"
TIPG_VERSION = "1.6.1"  # resolves beside our pinned fastapi/starlette/pydantic; kept apart anyway
UVICORN = "uvicorn[standard]==0.54.0"  # the same server stack (uvloop, httptools) as ioc
LOOPBACK = "127.0.0.1"


# --- database ----------------------------------------------------------------------------------


def bench_settings() -> DatabaseSettings:
    """The bench database: ``IOC_BENCH_DB`` in the managed cluster or beside DATABASE_URL."""
    return sibling_settings(BENCH_DB, get_settings().database)


def prepare_database(name: str = BENCH_DB) -> DatabaseSettings:
    """Create (if needed) and migrate a bench database."""
    return create_migrated(name, get_settings().database)


def seeded_database(name: str, scale: str, env_var: str) -> DatabaseSettings:
    """A bench database, migrated and seeded with the demo city at ``scale`` on first use (then
    analysed); one seeded at another scale is refused, naming the setting to change."""
    from layers.seeding import SEED_KEY, seed_database

    settings = create_migrated(name, get_settings().database)
    conn = psycopg2.connect(settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT value ->> 'scale' FROM ioc.meta WHERE key = %s", (SEED_KEY,))
            seeded = (cur.fetchone() or (None,))[0]
        conn.rollback()
        if seeded not in (None, scale):
            raise SystemExit(
                f"{name} holds a '{seeded}' seed: set {env_var} to another database name."
            )
        if seeded is None:
            console.print(
                f"seeding the demo city at {scale} scale into {name} (first run only;"
                " minutes at city scale)…"
            )
            seed_database(
                conn,
                addresses=get_settings().addresses,
                scale=scale,
                data_dir=DataSettings().data_dir,
                only_if_empty=True,
            )
            with conn.cursor() as cur:
                cur.execute("ANALYZE")
            conn.commit()
    finally:
        conn.close()
    return settings


def libpq_url(settings: DatabaseSettings) -> str:
    """A URL every client parses: the managed cluster's socket directory as an encoded host."""
    if not settings.managed:
        return settings.dsn()
    return (
        f"postgresql://postgres@{quote(str(settings.socket_dir), safe='')}:"
        f"{settings.pg_port}/{settings.db_name}"
    )


# --- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A server process on a loopback port."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    cwd: Path | None = None,
    timeout: float = 120,
) -> Server:
    """Start a server and wait until ``ready_path`` answers 200."""
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    process = subprocess.Popen(
        command, env=env, cwd=cwd or PROJECT_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    server = Server(name, f"http://{LOOPBACK}:{port}", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(server.url + ready_path, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"{name} did not become ready: {log.read_text()[-2000:]}")


def start_ioc(settings: DatabaseSettings, **extra_env: str) -> Server:
    """``ioc serve`` with one worker, quiet logs."""
    port = free_port()
    env = dict(os.environ, IOC_LOG_LEVEL="warning", IOC_WORKERS="1", **extra_env)
    if settings.managed:
        env["IOC_DB_NAME"] = settings.db_name
    else:
        env["DATABASE_URL"] = settings.dsn()
    command = [
        str(Path(sys.executable).parent / "ioc"),
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return start_server("ioc", command, env, port, "/readyz")


def ensure_tipg() -> Path:
    """tipg in its own virtualenv under var/ (created on first use); returns its bin dir."""
    bin_dir = BENCH_VENV / "bin"
    probe = [str(bin_dir / "python"), "-c", "import tipg, uvloop, httptools"]
    if bin_dir.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return bin_dir
    console.print(f"[bold]Installing tipg {TIPG_VERSION} in {BENCH_VENV} …[/bold]")
    subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    subprocess.run(
        [str(bin_dir / "pip"), "install", "-q", f"tipg=={TIPG_VERSION}", UVICORN], check=True
    )
    return bin_dir


def start_tipg(settings: DatabaseSettings, schemas: Sequence[str]) -> Server:
    """tipg (uvicorn, one worker) over the given schemas of the same database."""
    bin_dir = ensure_tipg()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOC_", "TIPG_"))}
    schema_list = ",".join(f'"{s}"' for s in schemas)
    env.update(
        DATABASE_URL=libpq_url(settings),
        TIPG_DB_SCHEMAS=f"[{schema_list}]",
        TIPG_MAX_FEATURES_PER_QUERY="10000",
    )
    command = [
        str(bin_dir / "uvicorn"),
        "tipg.main:app",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    workdir = Path(tempfile.mkdtemp(prefix="bench-tipg-"))  # no project .env for tipg
    return start_server("tipg", command, env, port, "/healthz", cwd=workdir)


# --- load --------------------------------------------------------------------------------------


def percentile_ms(latencies: Sequence[float], fraction: float) -> float:
    """The latency (seconds in, milliseconds out) below which ``fraction`` of requests fall."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else 0.0


@dataclass
class Result:
    """What one server did for one scenario."""

    server: str
    scenario: str
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1] * 1000


async def _worker(
    client: httpx.AsyncClient,
    urls: Sequence[str],
    start: int,
    step: int,
    stop_at: float,
    budget: list[int],
    result: Result,
) -> None:
    i = start
    while budget[0] > 0 and time.perf_counter() < stop_at:
        budget[0] -= 1
        url = urls[i % len(urls)]
        i += step
        begin = time.perf_counter()
        try:
            response = await client.get(url)
            body = await response.aread()
        except httpx.HTTPError:
            result.errors += 1
            continue
        if response.status_code != 200:
            result.errors += 1
            continue
        result.latencies.append(time.perf_counter() - begin)
        result.bytes += len(body)


async def _load(
    urls: Sequence[str],
    offset: int,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    headers: dict[str, str],
) -> Result:
    result = Result("", "")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as client:
        budget = [max_requests]
        begin = time.perf_counter()
        stop_at = begin + max_seconds
        await asyncio.gather(
            *(
                _worker(client, urls, offset + k, concurrency, stop_at, budget, result)
                for k in range(concurrency)
            )
        )
        result.seconds = time.perf_counter() - begin
    return result


def _load_process(args) -> Result:
    return asyncio.run(_load(*args))


def run_load(
    server: str,
    scenario: str,
    urls: Sequence[str],
    *,
    concurrency: int = 8,
    max_requests: int = 2000,
    max_seconds: float = 20.0,
    processes: int = 2,
    gzip: bool = False,
) -> Result:
    """``concurrency`` clients (spread over ``processes`` client processes so that the Python
    client is not the bottleneck) cycling through ``urls``; bounded in count and time."""
    if not all(u.startswith(f"http://{LOOPBACK}:") for u in urls):
        raise ValueError("the load generator only targets the loopback interface")
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    per = max(1, concurrency // processes)
    jobs = [
        (urls, p * 7919, per, max_requests // processes, max_seconds, headers)
        for p in range(processes)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_load_process, jobs)
    total = Result(server, scenario)
    for part in parts:
        total.latencies += part.latencies
        total.errors += part.errors
        total.bytes += part.bytes
        total.seconds = max(total.seconds, part.seconds)
    return total


# --- reporting ---------------------------------------------------------------------------------


def merge(parts: list[Result]) -> Result:
    """Several rounds of one server and scenario as one result."""
    total = Result(parts[0].server, parts[0].scenario)
    for part in parts:
        total.latencies += part.latencies
        total.errors += part.errors
        total.bytes += part.bytes
        total.seconds += part.seconds
    return total


def print_results(title: str, results: list[Result], baseline: str, candidate: str) -> None:
    """One row per (scenario, server) and the candidate/baseline throughput ratio."""
    table = Table(title=title)
    for column in (
        "scenario",
        "server",
        "requests",
        "errors",
        "req/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        f"{candidate}/{baseline}",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "server") else "right")
    by_key = {(r.scenario, r.server): r for r in results}
    for r in results:
        base = by_key.get((r.scenario, baseline))
        ratio = (
            f"{r.throughput / base.throughput:.2f}×"
            if r.server == candidate and base and base.throughput
            else ""
        )
        table.add_row(
            r.scenario,
            r.server,
            str(r.count),
            str(r.errors),
            f"{r.throughput:,.0f}",
            f"{r.bytes / r.seconds / 1e6:,.1f}" if r.seconds else "-",
            f"{r.percentile(50):.1f}",
            f"{r.percentile(99):.1f}",
            ratio,
        )
    console.print(table)
