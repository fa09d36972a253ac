"""Dashboard benchmark (``python -m bench dashboards``; not a test): the 1022 dashboard's data
(``GET /dashboards/reports_1022/data``) on one million citizen reports.

It uses the query benchmark's city-scale database (``IOC_BENCH_QUERIES_DB``, seeded on first
use) and runs the endpoint's domain function (``ioc.dashboards.panels.dashboard_data``) on one
asyncpg pool as an operator, after building the unit memberships the job runner would build.
For each state: **cold** (a fresh answer cache: the passes run), **warm** (the cached answer),
and **after a write** (one report's status changed, then the next load computes anew). With
``--passes``, each statement of a cold load (``ioc.dashboards.counts``) is also timed alone,
one after the other: what each costs without the other competing for the cores. With
``--compare``, each cold load is followed by one from the layer itself (no dashboard rows: the
three passes of before, units through the membership), so both see the same machine load.

Before a state is timed, its answer is checked once against direct SQL over the layer's own
table (``bench.dashcheck``; not timed): the column "matches SQL" says yes or the first panel and
key that differ, and the run exits non-zero when any state differs.

Target (issue #21, item 4): a cold load under a second at city scale.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import datetime

from rich.table import Table

from bench import dashcheck
from bench.queries import bench_settings, console, prepare
from ioc.catalog.access import Principal
from ioc.catalog.layers import load_catalog
from ioc.dashboards import rows as board_rows
from ioc.dashboards.filters import CITY_TZ, parse_filter
from ioc.dashboards.model import load_dashboards
from ioc.dashboards.panels import PanelCache, compute, dashboard_data, run_pass
from ioc.db.connection import create_pool
from ioc.query import units
from ioc.query.model import QuerySettings

TARGET_MS = 1000.0
# Timed alone: the counts pass (both halves of a long range, one after the other; the longer
# half: what the pass costs when the halves run at the same time on two idle cores), the median.
PASSES = ("counts", "counts halves", "median")
LATEST_SQL = "SELECT max(reported_at) FROM data.reports_1022"
OPERATOR = Principal(role="operator", key_id=None)
STATES = {
    "default (last 90 days, districts)": {},
    "whole year, 2025 wards": {"from": "2024-12-01", "to": "2025-12-01", "units": "ward"},
    "90 days, one field, pre-2025 wards": {"category": "ngập nước", "units": "ward2019"},
    "90 days, one district": {"district": "760", "units": "ward"},
    "one week hourly, one status": {
        "from": "2025-11-24",
        "to": "2025-12-01",
        "bucket": "hour",
        "status": "mới",
    },
}
UNIT_LAYERS = ("wards", "wards_2019", "districts_2019")
WRITE_SQL = """
UPDATE data.reports_1022 SET status = CASE status WHEN 'mới' THEN 'đang xử lý' ELSE 'mới' END
WHERE fid = (SELECT max(fid) FROM data.reports_1022)
"""


async def pass_times(pool, catalog, settings, board, params: dict[str, str]) -> dict[str, float]:
    """Each pass of a state's cold load alone, one after the other (ms)."""
    now = datetime.now(CITY_TZ)
    first = parse_filter(board, params, now)
    answer = await dashboard_data(
        pool, catalog, OPERATOR, settings, board, first, cache=PanelCache()
    )
    state = parse_filter(board, answer["filter"], now)  # the default range resolved
    lock, order = asyncio.Lock(), list[float]()

    def timed(document, write):
        i = len(order)  # compute calls them in its order: the counts parts, then the median
        order.append(0.0)

        async def one():
            async with lock:
                started = time.perf_counter()
                rows = await run_pass(pool, catalog, OPERATOR, settings, document, write)
                order[i] = (time.perf_counter() - started) * 1000
                return rows

        return one()

    copy = await board_rows.ensure(pool, catalog, board)
    until = await pool.fetchval(LATEST_SQL)  # as dashboard_data's default range knows it
    await compute(board, catalog, state, timed, now, copy, until)
    parts = order[:-1]
    return {"counts": sum(parts), "counts halves": max(parts), "median": order[-1]}


def percentile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    runs: int, warm_runs: int, passes: bool = False, compare: bool = False
) -> tuple[list[tuple[str, str, list[float]]], dict[str, str | None]]:
    """The timings, and per state the first difference from direct SQL (None: it matches)."""
    pool = await create_pool(bench_settings())
    results: list[tuple[str, str, list[float]]] = []
    checks: dict[str, str | None] = {}
    try:
        catalog = await load_catalog(pool)
        reports = catalog.get("reports_1022", OPERATOR)
        settings = QuerySettings(timeout_operator_s=600)
        for unit_layer in UNIT_LAYERS:  # what the job runner builds once per publish
            await units.build(pool, reports, catalog.get(unit_layer, OPERATOR), 1_800_000)
        board = load_dashboards()["reports_1022"]

        async def load(params: dict[str, str], cache: PanelCache, copy: bool = True) -> float:
            state = parse_filter(board, params, datetime.now(CITY_TZ))
            started = time.perf_counter()
            await dashboard_data(
                pool, catalog, OPERATOR, settings, board, state, cache=cache, copy=copy
            )
            return (time.perf_counter() - started) * 1000

        await load({}, PanelCache())  # warm-up: plans, catalog caches, buffers
        for name, params in STATES.items():
            console.print(f"{name} …")
            state = parse_filter(board, params, datetime.now(CITY_TZ))
            answer = await dashboard_data(
                pool, catalog, OPERATOR, settings, board, state, cache=PanelCache()
            )
            started = time.perf_counter()
            checks[name] = await dashcheck.check(pool, board, answer)  # before timing, untimed
            console.print(
                f"  matches SQL: {checks[name] or 'yes'} (checked in"
                f" {time.perf_counter() - started:.1f} s)"
            )
            cold, layer = [], []
            for _ in range(runs):  # alternately, so that both see the same machine load
                cold.append(await load(params, PanelCache()))
                if compare:
                    layer.append(await load(params, PanelCache(), copy=False))
            cache = PanelCache()
            await load(params, cache)
            warm = [await load(params, cache) for _ in range(warm_runs)]
            after = []
            for _ in range(runs):
                await pool.execute(WRITE_SQL)
                # A write's change event changes the cache key; a fresh cache stands for it here
                # (this write is plain SQL).
                after.append(await load(params, PanelCache()))
            results += [(name, "cold", cold), (name, "warm", warm), (name, "after a write", after)]
            if compare:
                results.append((name, "cold, from the layer", layer))
            if passes:
                alone = [
                    await pass_times(pool, catalog, settings, board, params) for _ in range(runs)
                ]
                results += [
                    (name, f"{p} pass alone", [t[p] for t in alone])
                    for p in PASSES
                    if p in alone[0]
                ]
    finally:
        await pool.close()
    return results, checks


def main(argv: list[str] | None = None) -> list[tuple[str, str, list[float]]]:
    """Seed (first time), measure, print the table; returns the timings."""
    parser = argparse.ArgumentParser(prog="python -m bench dashboards")
    parser.add_argument("--runs", type=int, default=5, help="cold loads per state")
    parser.add_argument("--warm-runs", type=int, default=50, help="cached loads per state")
    parser.add_argument(
        "--passes", action="store_true", help="also time each statement of a cold load alone"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also load cold from the layer itself (no dashboard rows), alternating",
    )
    args = parser.parse_args(argv)
    prepare(bench_settings())
    results, checks = asyncio.run(measure(args.runs, args.warm_runs, args.passes, args.compare))
    table = Table(title="The 1022 dashboard's data on 1,000,000 reports (one asyncpg pool)")
    for column in ("state", "load", "p50 ms", "p99 ms", "matches SQL"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    for name, kind, times in results:
        table.add_row(
            name,
            kind,
            f"{percentile(times, 0.5):,.1f}",
            f"{percentile(times, 0.99):,.1f}",
            checks[name] or "yes",
        )
    console.print(table)
    cold = [statistics.median(t) for _, kind, t in results if kind == "cold"]
    ok = max(cold) < TARGET_MS
    console.print(
        f"slowest cold state: median {max(cold):.0f} ms — "
        f"{'[green]meets[/green]' if ok else '[red]misses[/red]'} the target (< {TARGET_MS:.0f} ms)"
    )
    differ = [name for name, difference in checks.items() if difference]
    if differ:
        console.print(f"[red]panels differ from direct SQL[/red] in: {'; '.join(differ)}")
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
