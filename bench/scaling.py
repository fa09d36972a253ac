"""Scaling benchmark (``make bench BENCH_ARGS=scaling``; not a test): the replicated topology
of docs/scaling.md on loopback, started as the cluster test starts it (tests/cluster/stack.py:
etcd, two Patroni PostGIS nodes, HAProxy, two ``ioc serve`` sharing one tile cache folder).

- **tiles/s and items/s through HAProxy, with two ioc processes, then one** (the other
  stopped): wrk over tiles of a POINTS-point layer (zooms 12-15 around the centre, tile cache
  off so every tile is rendered) and over bbox pages of its items; reads go to the streaming
  replica as in production. For the sizing model: on a 2-core machine the processes, both
  PostgreSQL nodes and wrk share the cores, so the gain of a second process is bounded;
- **the shared disk tile cache**: cache on, an empty shared folder; process A renders every
  tile of the list once, then process B asks for the same tiles: B's hit ratio (its
  ``ioc_tile_answers_total`` by source, /metrics) and the time of both passes.

Needs Debian's etcd-server, patroni, haproxy and wrk (``make bench`` installs them). Every
load run is bounded in time and only targets 127.0.0.1.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import psycopg2
from rich.table import Table

from bench.common import console
from bench.loadgen import Run, wrk
from ioc.catalog import keys
from tests.cluster.stack import Stack, missing_programs
from tests.http.test_publish import SENSORS
from tiles.pmtiles import lonlat_to_tile

LAYER = "bench_sensors"
POINTS, BATCH = 40_000, 5_000  # below the low-zoom aggregation threshold (50,000)
CITY = (106.60, 10.70, 106.80, 10.85)  # lon/lat box the points fall in
CENTRE = (106.70, 10.78)
CONNECTIONS, SECONDS = 8, 15.0
SEQ = "application/geo+json-seq"


def tile_paths() -> list[str]:
    """The 3 × 3 tiles around the centre at zooms 12-15."""
    paths = []
    for z in range(12, 16):
        cx, cy = lonlat_to_tile(*CENTRE, z)
        paths += [f"/tiles/{LAYER}/{z}/{cx + i}/{cy + j}.pbf" for i in (-1, 0, 1) for j in (-1, 0, 1)]  # fmt: skip
    return paths


def item_paths() -> list[str]:
    """Pages of 100 items in a 4 × 4 grid of boxes over the points."""
    w, s, e, n = CITY
    dx, dy = (e - w) / 4, (n - s) / 4
    return [
        f"/collections/{LAYER}/items?limit=100&bbox="
        f"{w + i * dx:.4f},{s + j * dy:.4f},{w + (i + 1) * dx:.4f},{s + (j + 1) * dy:.4f}"
        for i in range(4)
        for j in range(4)
    ]


def load_layer(stack: Stack, headers: dict[str, str]) -> None:
    """The layer and its POINTS random points, as feed batches through ioc A."""
    rng = random.Random(24)
    w, s, e, n = CITY
    with httpx.Client(base_url=stack.ioc_url(0), headers=headers, timeout=300) as client:
        created = client.post("/layers", json={**SENSORS, "id": LAYER})
        if created.status_code != 201:
            raise SystemExit(f"creating {LAYER}: {created.status_code} {created.text[:300]}")
        for start in range(0, POINTS, BATCH):
            lines = [
                b"\x1e"
                + json.dumps(
                    {
                        "type": "Feature",
                        "properties": {"sensor_id": f"s{i}", "depth_cm": i % 200},
                        "geometry": {
                            "type": "Point",
                            "coordinates": [rng.uniform(w, e), rng.uniform(s, n)],
                        },
                    }
                ).encode()
                + b"\n"
                for i in range(start, start + BATCH)
            ]
            sent = client.post(
                f"/collections/{LAYER}/items",
                content=b"".join(lines),
                headers={"Content-Type": SEQ},
            )
            if sent.status_code != 200:
                raise SystemExit(f"loading {LAYER}: {sent.status_code} {sent.text[:300]}")


def restart_ioc(stack: Stack, **settings: str) -> None:
    """Both ioc processes again, with these settings."""
    for i in range(2):
        name = f"ioc{i}"
        if stack.procs[name].poll() is None:
            stack.kill(name, signal.SIGTERM)
        stack.start_ioc(i, **settings)


def throughput(stack: Stack) -> dict[int, tuple[Run, Run]]:
    """tiles/s and items/s through HAProxy with both processes, then with A alone."""
    restart_ioc(stack, IOC_TILE_CACHE="off")
    tiles, items = tile_paths(), item_paths()
    wrk("warm-up", stack.http, tiles + items, CONNECTIONS, seconds=5)
    found = {}
    for n in (2, 1):
        if n == 1:
            stack.kill("ioc1", signal.SIGTERM)
            time.sleep(2)  # HAProxy marks it down within two checks (500 ms)
        console.print(f"tiles and items through HAProxy, {n} ioc process(es) …")
        found[n] = (
            wrk(f"tiles, {n}", stack.http, tiles, CONNECTIONS, seconds=SECONDS),
            wrk(f"items, {n}", stack.http, items, CONNECTIONS, seconds=SECONDS),
        )
    return found


def tile_sources(url: str, headers: dict[str, str]) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    found = re.findall(r'^ioc_tile_answers_total\{source="(\w+)"\} (\S+)$', text, re.M)
    return {source: float(count) for source, count in found}


def _pass(url: str, paths: list[str]) -> float:
    began = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        for path in paths:
            client.get(path).raise_for_status()
    return time.perf_counter() - began


def shared_cache(stack: Stack, headers: dict[str, str]) -> dict[str, float]:
    """A renders every tile into the empty shared folder; then B's answers by source."""
    folder = stack.base / "tiles"
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    restart_ioc(stack, IOC_TILE_CACHE="on")
    paths = tile_paths()
    console.print(f"shared tile cache: {len(paths)} tiles rendered by A, then asked of B …")
    a_seconds = _pass(stack.ioc_url(0), paths)
    files = -1
    while files != (files := sum(1 for p in folder.rglob("*") if p.is_file())):
        time.sleep(1)  # until A's cache writes have all landed
    before = tile_sources(stack.ioc_url(1), headers)
    b_seconds = _pass(stack.ioc_url(1), paths)
    after = tile_sources(stack.ioc_url(1), headers)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    answered = sum(delta.values()) or 1
    return {
        "tiles": len(paths),
        "files": files,
        "a_seconds": a_seconds,
        "b_seconds": b_seconds,
        "b_disk": delta.get("disk", 0),
        "b_database": delta.get("database", 0),
        "hit_ratio": (delta.get("disk", 0) + delta.get("memory", 0)) / answered,
    }


def main() -> None:
    """Start the topology, measure, print."""
    missing = missing_programs()
    if missing:
        raise SystemExit(f"the scaling benchmark needs apt-get install {' '.join(missing)}")
    base = Path(tempfile.mkdtemp(prefix="ioc-bench-scaling-"))
    base.chmod(0o755)
    stack = Stack(base)
    try:
        console.print("starting etcd, two Patroni nodes, HAProxy, two ioc processes …")
        stack.start()
        conn = psycopg2.connect(stack.database_url())
        try:
            headers = {"Authorization": f"Bearer {keys.create_key(conn, 'admin', None, 'bench')}"}
        finally:
            conn.close()
        console.print(f"loading {POINTS} points …")
        load_layer(stack, headers)
        rates = throughput(stack)
        cache = shared_cache(stack, headers)
    finally:
        stack.stop()
        shutil.rmtree(base, ignore_errors=True)
    report(rates, cache)


def report(rates: dict[int, tuple[Run, Run]], cache: dict[str, float]) -> None:
    table = Table(title="ioc processes behind HAProxy (loopback, Patroni primary + replica)")
    for column in ("measure", "1 process", "2 processes", "gain"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for k, what in enumerate(("tiles/s (rendered)", "items/s (pages of 100)")):
        one, two = rates[1][k], rates[2][k]
        table.add_row(what, f"{one.rate:.0f}", f"{two.rate:.0f}", f"× {two.rate / one.rate:.2f}")
        table.add_row(
            "  p50 / p99 ms",
            f"{one.p50:.0f} / {one.p99:.0f}",
            f"{two.p50:.0f} / {two.p99:.0f}",
            f"errors {one.errors + two.errors}",
        )
    console.print(table)
    console.print(
        f"shared tile cache: A rendered {cache['tiles']:.0f} tiles ({cache['files']:.0f} files) "
        f"in {cache['a_seconds']:.2f} s; B answered them in {cache['b_seconds']:.2f} s, "
        f"{cache['b_disk']:.0f} from the shared disk, {cache['b_database']:.0f} rendered: "
        f"hit ratio {cache['hit_ratio']:.0%}"
    )
