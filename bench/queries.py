"""Query benchmark (``python -m bench queries``; not a test): per-ward statistics of a million
citizen reports, and the analysts' typical spatial joins, on the city-scale seed.

The bench database ``IOC_BENCH_QUERIES_DB`` (default ``ioc_bench_queries``) gets the
administrative units and the point layers the scenarios use, with ``reports_1022`` at city
scale (1,000,000 reports); it is kept between runs. Each scenario runs the same domain
function the endpoint calls (``ioc.query.stats.by_ward``, ``ioc.query.runner.run_query``) on one asyncpg
pool, a few times after a warm-up; the table shows median and worst times.

Target (issue #9): the per-ward count of 1,000,000 reports well under a second — with the
unit-membership cache (``ioc.query.units``) that the job runner builds for large layers. The live
spatial join (what a query sees before the cache is built) is shown beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import psycopg2
from psycopg2 import sql as pgsql
from rich.console import Console
from rich.table import Table

from ioc.catalog.access import Principal
from ioc.catalog.layers import load_catalog
from ioc.config import get_settings
from ioc.db.connection import create_migrated, create_pool, sibling_settings
from ioc.query import stats, units
from ioc.query.model import QuerySettings, parse_query
from ioc.query.runner import run_query
from ioc.settings import DatabaseSettings, DataSettings
from layers import registry

console = Console()
BENCH_DB = os.environ.get("IOC_BENCH_QUERIES_DB", "ioc_bench_queries")
LAYERS = (
    "wards",
    "wards_2019",
    "districts_2019",
    "districts_2024",
    "reports_1022",
    "flood_points",
    "schools",
    "hospitals",
    "digital_addresses",
)
CITY_SCALE = ("reports_1022",)
TARGET_MS = 1000.0
VERSION = 1
ANALYST = Principal(role="analyst", key_id=None)


def bench_settings() -> DatabaseSettings:
    return sibling_settings(BENCH_DB, get_settings().database)


def prepare(settings: DatabaseSettings) -> None:
    """Create, migrate and seed the bench database once (a few minutes the first time)."""
    create_migrated(BENCH_DB, get_settings().database)
    conn = psycopg2.connect(settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT value FROM ioc.meta WHERE key = 'bench_queries'")
            row = cur.fetchone()
        conn.rollback()
        if row and row[0] == VERSION:
            return
        from layers.democity.seed import seed_layers
        from layers.manifest import load_catalog as load_manifests

        manifests = load_manifests()
        registry.sync_manifests(conn, manifests)
        chosen = [m for m in manifests if m.id in LAYERS]
        data_dir = DataSettings().data_dir
        started = time.perf_counter()
        for manifest in chosen:
            scale = "city" if manifest.id in CITY_SCALE else "demo"
            console.print(f"seeding {manifest.id} ({scale}) …")
            seed_layers(conn, [manifest], scale=scale, data_dir=data_dir)
            registry.refresh_stats(conn, manifest.id)
        with conn.cursor() as cur:
            for layer in LAYERS:
                cur.execute(pgsql.SQL("ANALYZE {}").format(pgsql.Identifier("data", layer)))
            cur.execute(
                "INSERT INTO ioc.meta (key, value) VALUES ('bench_queries', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(VERSION),),
            )
        conn.commit()
        console.print(f"seeded in {time.perf_counter() - started:.0f} s")
    finally:
        conn.close()


async def timed(fn: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    await fn()  # warm-up: caches, plans
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def measure(settings: DatabaseSettings, runs: int) -> list[tuple[str, list[float], str]]:
    pool = await create_pool(settings)
    results: list[tuple[str, list[float], str]] = []
    try:
        catalog = await load_catalog(pool)
        reports = catalog.get("reports_1022", ANALYST)
        wards = catalog.get("wards", ANALYST)
        live = QuerySettings(membership_min_features=10**12, timeout_analyst_s=600)
        cached = QuerySettings(timeout_analyst_s=600)
        address = await pool.fetchval(
            "SELECT code FROM data.digital_addresses ORDER BY fid LIMIT 1 OFFSET 1000"
        )

        async def by_ward(settings_: QuerySettings, **params) -> None:
            await stats.by_ward(
                pool, catalog, ANALYST, "reports_1022", settings=settings_, **params
            )

        async def answer(document: dict) -> None:
            result = await run_query(pool, catalog, ANALYST, parse_query(document), cached)
            async for _ in result.chunks:
                pass

        results.append(
            (
                f"per-ward count, live join ({reports.feature_count:,} reports)",
                await timed(lambda: by_ward(live), max(1, runs // 3)),
                "before cache",
            )
        )
        started = time.perf_counter()
        await units.build(pool, reports, wards, 1_800_000)
        results.append(
            (
                "build the ward membership cache",
                [(time.perf_counter() - started) * 1000],
                "once per publish",
            )
        )
        results.append(
            (
                "per-ward count (/stats/reports_1022/by-ward)",
                await timed(lambda: by_ward(cached), runs),
                "target",
            )
        )
        results.append(
            (
                "per-ward count, category filter, 3 months",
                await timed(
                    lambda: by_ward(
                        cached,
                        filter="category = 'ngập nước'",
                        start="2025-03-01",
                        end="2025-06-01",
                    ),
                    runs,
                ),
                "",
            )
        )
        results.append(
            (
                "schools within 500 m of flood points",
                await timed(
                    lambda: answer(
                        {
                            "source": "schools",
                            "spatial": [
                                {"op": "dwithin", "distance": 500, "layer": "flood_points"}
                            ],
                        }
                    ),
                    runs,
                ),
                "features",
            )
        )
        results.append(
            (
                "reports within 200 m of flood points (count)",
                await timed(
                    lambda: answer(
                        {
                            "source": "reports_1022",
                            "aggregates": [{"op": "count"}],
                            "spatial": [
                                {"op": "dwithin", "distance": 200, "layer": "flood_points"}
                            ],
                        }
                    ),
                    runs,
                ),
                "1M × 200",
            )
        )
        results.append(
            (
                "5 hospitals nearest a digital address",
                await timed(
                    lambda: answer(
                        {
                            "source": "hospitals",
                            "spatial": [{"op": "nearest", "k": 5, "address": address}],
                        }
                    ),
                    runs,
                ),
                "exact",
            )
        )
        results.append(
            (
                "reports by month and category",
                await timed(
                    lambda: answer(
                        {
                            "source": "reports_1022",
                            "group_by": [{"time": "month"}, {"attribute": "category"}],
                            "aggregates": [{"op": "count"}],
                        }
                    ),
                    runs,
                ),
                "",
            )
        )
    finally:
        await pool.close()
    return results


def main(argv: list[str] | None = None) -> list[tuple[str, list[float], str]]:
    """Seed (first time), measure, print the table; returns the timings."""
    parser = argparse.ArgumentParser(prog="python -m bench queries")
    parser.add_argument("--runs", type=int, default=7, help="measured runs per scenario")
    args = parser.parse_args(argv)
    settings = bench_settings()
    prepare(settings)
    results = asyncio.run(measure(settings, args.runs))
    table = Table(title="Spatial queries on the city-scale seed (one asyncpg pool, analyst)")
    for column in ("scenario", "median ms", "max ms", "note"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    for name, times, note in results:
        table.add_row(name, f"{statistics.median(times):,.0f}", f"{max(times):,.0f}", note)
    console.print(table)
    target = next(times for name, times, _ in results if name.startswith("per-ward count ("))
    ok = statistics.median(target) < TARGET_MS
    console.print(
        f"per-ward count of the reports: median {statistics.median(target):.0f} ms — "
        f"{'[green]meets[/green]' if ok else '[red]misses[/red]'} the target "
        f"(< {TARGET_MS:.0f} ms)"
    )
    return results


if __name__ == "__main__":
    main()
