"""Digital-address benchmark (not a test): look-up by code, free-text search and reverse
geocoding over HTTP on the city-scale seed (1,000,000 addresses).

Target (issue #6): each answers within 50 ms at the 95th percentile. One ``ioc serve`` process
(one worker) on 127.0.0.1 and one client sending requests one after another, so the numbers are
latencies, not queueing. The workload is drawn from the registry with a fixed seed: codes;
ward and street names with and without diacritics, full addresses, names with a typo (a
quarter with a ``near`` bias); positions up to ~30 m away from an address.
Run with ``python -m bench.addresses`` (IOC_DATA_DIR for the real wards and streets).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import httpx
import psycopg2
from rich.table import Table

from bench.common import console, percentile_ms, seeded_database, start_ioc
from ioc.addresses.index import build_address_index
from ioc.addresses.normalise import fold
from ioc.config import get_settings
from ioc.settings import DatabaseSettings

BENCH_DB = os.environ.get("IOC_ADDRESS_BENCH_DB", "ioc_bench_addresses")
REQUESTS = int(os.environ.get("IOC_ADDRESS_BENCH_REQUESTS", "400"))
WARMUP = 40
TARGET_P95_MS = 50.0
MAX_SECONDS = 120.0  # per kind: the loop stops early rather than run away


@dataclass
class Result:
    """Latencies of one kind of request."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    empty: int = 0

    def percentile(self, p: float) -> float:
        return percentile_ms(self.latencies, p)


# --- database ------------------------------------------------------------------------------


def prepare_database() -> DatabaseSettings:
    """The city-scale database (seeded on the first run: several minutes) and its registry."""
    settings = seeded_database(BENCH_DB, "city", "IOC_ADDRESS_BENCH_DB")
    conn = psycopg2.connect(settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT feature_count FROM ioc.layers WHERE id = 'digital_addresses'")
            layer_count = (cur.fetchone() or (0,))[0]
            cur.execute("SELECT count(*) FROM ioc.addresses")
            registry_count = cur.fetchone()[0]
        conn.rollback()
        if registry_count < layer_count:
            console.print(f"building the address registry ({layer_count:,} addresses)…")
            build_address_index(conn, settings=get_settings().addresses, link=False)
            with conn.cursor() as cur:
                cur.execute("ANALYZE ioc.addresses; ANALYZE ioc.address_names")
            conn.commit()
    finally:
        conn.close()
    return settings


def _typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters inside one word of four letters or more."""
    words = text.split()
    long_words = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long_words:
        return text
    i = rng.choice(long_words)
    w = words[i]
    k = rng.randrange(1, len(w) - 2)
    words[i] = w[:k] + w[k + 1] + w[k] + w[k + 2 :]
    return " ".join(words)


def workload(settings: DatabaseSettings, n: int, seed: int = 6) -> dict[str, list[dict]]:
    """Parameters of n requests of each kind, drawn from the registry."""
    rng = random.Random(seed)
    conn = psycopg2.connect(settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT setseed(0.6)")
            cur.execute(
                "SELECT a.code, a.house_number, a.street, w.name, ST_X(a.geom), ST_Y(a.geom)"
                " FROM ioc.addresses a TABLESAMPLE SYSTEM (1) REPEATABLE (6)"
                " JOIN ioc.address_names w ON w.kind = 'ward' AND w.key = a.ward_code"
                " WHERE a.street IS NOT NULL LIMIT %s",
                (3 * n,),
            )
            rows = cur.fetchall()
            cur.execute("SELECT name FROM ioc.address_names WHERE kind = 'ward' ORDER BY key")
            wards = [r[0] for r in cur.fetchall()]
            cur.execute(
                "SELECT name FROM ioc.address_names WHERE kind = 'street' ORDER BY n DESC"
                " LIMIT 2000"
            )
            streets = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    if not rows:
        raise SystemExit("the address registry is empty: is the city seeded?")
    rng.shuffle(rows)
    lookups = [{"path": f"/addresses/{r[0]}"} for r in rows[:n]]
    queries = []
    for k in range(n):
        code, house, street, ward, _, _ = rows[k % len(rows)]
        kind = k % 5
        if kind == 0:
            text = rng.choice([rng.choice(wards), fold(rng.choice(wards))])
        elif kind == 1:
            text = rng.choice([rng.choice(streets), "đường " + rng.choice(streets)])
        elif kind == 2:
            text = f"{house or ''} {street}, Phường {ward}, TP.HCM".strip()
        elif kind == 3:
            text = fold(f"{house or ''} {street} {ward}")
        else:
            text = _typo(fold(rng.choice([rng.choice(wards), rng.choice(streets)])), rng)
        params = {"q": text}
        if k % 4 == 3:  # a quarter with a proximity bias around some address
            lon, lat = rows[(k * 7) % len(rows)][4:6]
            params["near"] = f"{lon:.6f},{lat:.6f}"
        queries.append({"path": "/addresses", "params": params})
    reverse = []
    for r in rows[n : 2 * n] or rows[:n]:
        lon = r[4] + rng.uniform(-0.0003, 0.0003)
        lat = r[5] + rng.uniform(-0.0003, 0.0003)
        reverse.append(
            {"path": "/addresses/reverse", "params": {"lon": round(lon, 6), "lat": round(lat, 6)}}
        )
    return {"lookup by code": lookups, "search": queries, "reverse": reverse}


# --- load ----------------------------------------------------------------------------------


def measure(client: httpx.Client, name: str, requests: list[dict]) -> Result:
    """Send the requests one after another (after a warm-up) and record each latency."""
    for req in requests[:WARMUP]:
        client.get(req["path"], params=req.get("params"))
    result = Result(name)
    deadline = time.monotonic() + MAX_SECONDS
    for req in requests:
        started = time.perf_counter()
        response = client.get(req["path"], params=req.get("params"))
        result.latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            result.errors += 1
        elif response.json().get("type") == "FeatureCollection" and not response.json()["features"]:
            result.empty += 1
        if time.monotonic() > deadline:
            break
    return result


def report(results: list[Result], count: int) -> bool:
    table = Table(
        "request",
        "n",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "non-200",
        "empty",
        f"p95 ≤ {TARGET_P95_MS:g} ms",
        title=f"Digital addresses on {count:,} addresses (one client, one worker)",
    )
    ok = True
    for r in results:
        passed = r.percentile(0.95) <= TARGET_P95_MS and r.errors == 0
        ok &= passed
        table.add_row(
            r.name,
            str(len(r.latencies)),
            f"{r.percentile(0.5):.1f}",
            f"{r.percentile(0.95):.1f}",
            f"{r.percentile(0.99):.1f}",
            f"{max(r.latencies) * 1000:.1f}",
            str(r.errors),
            str(r.empty),
            "[green]yes[/green]" if passed else "[red]no[/red]",
        )
    console.print(table)
    return ok


def main() -> None:
    """Prepare the city-scale registry, measure the three look-ups, print the table."""
    settings = prepare_database()
    conn = psycopg2.connect(settings.dsn())
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ioc.addresses")
        count = cur.fetchone()[0]
    conn.close()
    work = workload(settings, REQUESTS)
    server = start_ioc(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            results = [measure(client, name, reqs) for name, reqs in work.items()]
    finally:
        server.stop()
    if not report(results, count):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
