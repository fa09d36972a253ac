"""Live benchmark (``make bench BENCH_ARGS=live``; not a test): writes, events and tiles of a
city that changes.

One ``ioc serve`` (one worker, tile cache on) over the demo city in its own database:

- **upserts/s through HTTP**: feed batches of BATCH features (GeoJSON text sequence) upserted by
  ``report_no`` into the 20,000 1022 reports, one after the other; a server without the feed
  is measured with single PATCHes instead (and says so);
- **commit → SSE latency** at RATE updates/s (paced feed batches on the congestion segments and
  flood sensors) with CLIENTS subscribed ``/events`` clients in another process. The reference
  is the commit:
  this process LISTENs on the database's own channel and notes when each event id is announced
  (PostgreSQL sends a NOTIFY at commit), the clients note when it reaches them; same machine,
  same monotonic clock;
- **cached wall tiles with and without updates**: wrk over the wall's public tiles (its basemap
  composite and the live congestion and flood-sensor layers, zooms 11-14 around the centre),
  first quiet, then while RATE updates/s land on those two layers (each write bumps a layer's
  version, so its tiles are rendered again; the basemap stays cached).

Every load run is bounded in time and only targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import asyncpg
import httpx
import psycopg2
from rich.table import Table

from bench.common import console, percentile_ms, seeded_database, start_ioc
from bench.loadgen import wrk
from ioc.catalog import keys
from ioc.events.log import CHANNEL
from ioc.settings import DatabaseSettings
from tiles.pmtiles import lonlat_to_tile

BENCH_DB = os.environ.get("IOC_BENCH_LIVE_DB", "ioc_bench_live")
UPSERT_LAYER, EVENT_LAYERS = "reports_1022", ("congestion_segments", "flood_sensors")
BATCH = 500
UPSERT_BATCHES = 40
RATE, RATE_BATCH = 1000, 100  # updates/s, in batches of at least RATE_BATCH
CLIENTS = 50
RUN_SECONDS = 20.0
TILE_SECONDS = 15.0
TILE_CONNECTIONS = 8
WALL_TILES = ("water_areas,roads,wards", "congestion_segments", "flood_sensors")
CENTRE = (106.70, 10.78)
SEQ = "application/geo+json-seq"


# --- writing ---------------------------------------------------------------------------------


def features(base: str, headers: dict[str, str], layer: str, key: str) -> list[dict[str, Any]]:
    """Every feature of the layer (key, properties, geometry), read through the API."""
    url: str | None = f"{base}/collections/{layer}/items?limit=10000"
    found = []
    with httpx.Client(headers=headers, timeout=120) as client:
        while url:
            doc = client.get(url).json()
            found += [f for f in doc["features"] if f["properties"].get(key) is not None]
            url = next((lk["href"] for lk in doc["links"] if lk["rel"] == "next"), None)
    return found


def seq_body(batch: list[dict[str, Any]], stamp: str, field: str) -> bytes:
    lines = []
    for feat in batch:
        props = {**feat["properties"], field: stamp}
        doc = {"type": "Feature", "properties": props, "geometry": feat["geometry"]}
        lines.append(b"\x1e" + json.dumps(doc, ensure_ascii=False).encode() + b"\n")
    return b"".join(lines)


def measure_upserts(base: str, headers: dict[str, str]) -> dict[str, Any]:
    """UPSERT_BATCHES feed batches of BATCH existing reports, back to back."""
    reports = features(base, headers, UPSERT_LAYER, "report_no")
    url = f"{base}/collections/{UPSERT_LAYER}/items"
    latencies, applied = [], 0
    with httpx.Client(headers={**headers, "Content-Type": SEQ}, timeout=120) as client:
        probe = client.post(url, content=seq_body(reports[:1], _now(), "summary"))
        if probe.status_code != 200:
            return {"mode": f"no feed ({probe.status_code})", **_patches(base, headers, reports)}
        began = time.perf_counter()
        for i in range(UPSERT_BATCHES):
            start = (i * BATCH) % max(1, len(reports) - BATCH)
            body = seq_body(reports[start : start + BATCH], f"bench {i}", "summary")
            t0 = time.perf_counter()
            response = client.post(url, content=body)
            latencies.append(time.perf_counter() - t0)
            if response.status_code == 200:
                applied += int(response.json()["applied"])
        seconds = time.perf_counter() - began
    return {"mode": f"feed, batches of {BATCH}", "count": applied, "seconds": seconds,
            "latencies": latencies}  # fmt: skip


def _patches(base: str, headers: dict[str, str], reports: list[dict[str, Any]]) -> dict[str, Any]:
    latencies, began = [], time.perf_counter()
    with httpx.Client(headers=headers, timeout=60) as client:
        for feat in reports:
            if time.perf_counter() - began > RUN_SECONDS:
                break
            t0 = time.perf_counter()
            client.patch(
                f"{base}/collections/{UPSERT_LAYER}/items/{feat['id']}",
                json={"properties": {"summary": "bench"}},
            )
            latencies.append(time.perf_counter() - t0)
    return {"count": len(latencies), "seconds": time.perf_counter() - began, "latencies": latencies}


def paced_writer(base: str, headers: dict[str, str], seconds: float, done: list[int]) -> None:
    """RATE updates/s, split over the EVENT_LAYERS (one writer thread each: a layer's writes
    queue on its lock, two layers' do not), as feed batches of at least RATE_BATCH features:
    a writer that falls behind sends what is due in a larger batch (at most the layer)."""
    threads = [
        threading.Thread(target=_layer_writer, args=(base, headers, layer, seconds, done))
        for layer in EVENT_LAYERS
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done[1] = int((time.perf_counter() - began) * 1000)


def _layer_writer(base: str, headers, layer: str, seconds: float, done: list[int]) -> None:
    key = {"congestion_segments": "segment_id", "flood_sensors": "sensor_id"}[layer]
    rows = features(base, headers, layer, key)
    url, rate = f"{base}/collections/{layer}/items", RATE / len(EVENT_LAYERS)
    sent, k = 0, 0
    with httpx.Client(headers={**headers, "Content-Type": SEQ}, timeout=60) as client:
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            due = int(rate * (time.perf_counter() - began)) - sent
            if due < RATE_BATCH / len(EVENT_LAYERS):
                time.sleep(0.005)
                continue
            n = min(due, len(rows))
            start = (k * n) % max(1, len(rows) - n + 1)
            response = client.post(
                url, content=seq_body(rows[start : start + n], _now(), "observed_at")
            )
            if response.status_code == 200:
                done[0] += int(response.json()["applied"])
            sent, k = sent + n, k + 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


# --- events ----------------------------------------------------------------------------------


async def _subscribers(url: str, n: int, seconds: float, ready) -> list[tuple[int, float]]:
    """n SSE clients; (event id, monotonic receipt time) of every change each one got."""
    got: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=n + 2)
    timeout = httpx.Timeout(10, read=seconds + 30)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        connected = [0]

        async def one() -> None:
            async with client.stream("GET", url) as response:
                connected[0] += 1
                if connected[0] == n:
                    ready.set()
                end = time.monotonic() + seconds
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        got.append((int(line[3:].strip()), time.monotonic()))
                    if time.monotonic() > end:
                        return

        await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    return got


def _subscribers_process(url: str, n: int, seconds: float, ready, out) -> None:
    out.put(asyncio.run(_subscribers(url, n, seconds, ready)))


async def _announced(settings: DatabaseSettings, seconds: float, started) -> dict[int, float]:
    """When the database announced each event id (the commit: NOTIFY is sent then)."""
    seen: dict[int, float] = {}
    conn = await asyncpg.connect(settings.dsn())
    try:
        await conn.add_listener(CHANNEL, lambda *a: seen.setdefault(int(a[3]), time.monotonic()))
        started.set()
        await asyncio.sleep(seconds)
    finally:
        await conn.close()
    return seen


def measure_latency(settings: DatabaseSettings, base: str, headers: dict[str, str]):
    """RATE updates/s for RUN_SECONDS with CLIENTS SSE subscribers."""
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    url = f"{base}/events?layers={','.join(EVENT_LAYERS)}"
    clients = ctx.Process(
        target=_subscribers_process, args=(url, CLIENTS, RUN_SECONDS + 5, ready, out)
    )
    clients.start()
    if not ready.wait(60):
        raise RuntimeError("the SSE clients did not connect")
    started = threading.Event()
    announced: dict[int, float] = {}

    def listen() -> None:
        announced.update(asyncio.run(_announced(settings, RUN_SECONDS + 3, started)))

    listener = threading.Thread(target=listen)
    listener.start()
    started.wait(30)
    done = [0, 0]
    paced_writer(base, headers, RUN_SECONDS, done)
    listener.join()
    received = out.get(timeout=120)
    clients.join(30)
    delays = [t - announced[i] for i, t in received if i in announced]
    return {"updates": done[0], "seconds": done[1] / 1000, "delays": delays,
            "events": len(announced), "deliveries": len(received)}  # fmt: skip


# --- tiles -----------------------------------------------------------------------------------


def wall_paths() -> list[str]:
    paths = []
    for z in range(11, 15):
        cx, cy = lonlat_to_tile(*CENTRE, z)
        for ids in WALL_TILES:
            paths += [f"/tiles/{ids}/{z}/{cx + i}/{cy + j}.pbf" for i in (-1, 0, 1) for j in (-1, 0, 1)]  # fmt: skip
    return paths


def measure_tiles(base: str, headers: dict[str, str]):
    paths = wall_paths()
    wrk("warm-up", base, paths, TILE_CONNECTIONS, seconds=5)
    quiet = wrk("quiet", base, paths, TILE_CONNECTIONS, seconds=TILE_SECONDS)
    done = [0, 0]
    writer = threading.Thread(target=paced_writer, args=(base, headers, TILE_SECONDS + 2, done))
    writer.start()
    busy = wrk("busy", base, paths, TILE_CONNECTIONS, seconds=TILE_SECONDS)
    writer.join()
    return quiet, busy, done


# --- the run ---------------------------------------------------------------------------------


def main() -> None:
    """Prepare, measure, print."""
    settings = seeded_database(BENCH_DB, "demo", "IOC_BENCH_LIVE_DB")
    conn = psycopg2.connect(settings.dsn())
    try:
        headers = {"Authorization": f"Bearer {keys.create_key(conn, 'admin', None, 'bench')}"}
    finally:
        conn.close()
    with tempfile.TemporaryDirectory() as cache_dir:
        server = start_ioc(settings, IOC_TILE_CACHE="on", IOC_TILE_CACHE_DIR=cache_dir)
        try:
            console.print("upserts through HTTP …")
            upserts = measure_upserts(server.url, headers)
            console.print(f"commit → SSE latency, {RATE} updates/s, {CLIENTS} clients …")
            latency = measure_latency(settings, server.url, headers)
            console.print("cached wall tiles, quiet then under updates …")
            quiet, busy, tile_writes = measure_tiles(server.url, headers)
        finally:
            server.stop()
    report(upserts, latency, quiet, busy, tile_writes)


def report(upserts, latency, quiet, busy, tile_writes) -> None:
    table = Table(title="live city (demo scale, one ioc worker)")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_column("detail")
    rate = upserts["count"] / upserts["seconds"] if upserts["seconds"] else 0.0
    table.add_row(
        "upserts/s (HTTP)",
        f"{rate:,.0f}",
        f"{upserts['mode']}: {upserts['count']:,} in {upserts['seconds']:.1f} s, request p50 "
        f"{percentile_ms(upserts['latencies'], 0.5):.0f} ms",
    )
    delays = latency["delays"]
    achieved = latency["updates"] / latency["seconds"] if latency["seconds"] else 0.0
    for q in (0.5, 0.95, 0.99):
        table.add_row(
            f"commit → SSE p{int(q * 100)}",
            f"{percentile_ms(delays, q):.1f} ms",
            f"{len(delays):,} deliveries of {latency['events']} events, {CLIENTS} clients, "
            f"{achieved:,.0f} updates/s achieved",
        )
    table.add_row(
        "wall tiles/s, quiet",
        f"{quiet.rate:,.0f}",
        f"p99 {quiet.p99:.1f} ms, {quiet.errors} errors",
    )
    writes = tile_writes[0] / (tile_writes[1] / 1000) if tile_writes[1] else 0.0
    table.add_row(
        "wall tiles/s, updating",
        f"{busy.rate:,.0f}",
        f"p99 {busy.p99:.1f} ms, {busy.errors} errors, {writes:,.0f} updates/s, "
        f"{busy.rate / quiet.rate:.2f}× quiet"
        if quiet.rate
        else "",
    )
    console.print(table)
    if delays:
        console.print(
            f"mean commit → SSE {statistics.fmean(delays) * 1000:.1f} ms (target p95 < 500 ms)"
        )
