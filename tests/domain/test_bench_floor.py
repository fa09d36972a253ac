"""The tile benchmark's floor: pgbench runs exactly the list of tiles it is given, with ioc's
own tile statements, against the real database (``make bench`` compares ioc with it)."""

from __future__ import annotations

from collections import Counter

import psycopg2
import pytest

from bench.loadgen import Job, pgbench, pgbench_binary, pgbench_script
from ioc.catalog.layers import load_catalog_sync
from tiles.settings import TileSettings
from tiles.sql import build_tile_sql, plan_tile


@pytest.fixture
def probe(db_settings):
    """A table that records the (z, x, y) each pgbench transaction was given."""
    conn = psycopg2.connect(db_settings.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "DROP TABLE IF EXISTS public.bench_probe;"
            "CREATE TABLE public.bench_probe (z int, x int, y int)"
        )
    yield conn
    with conn.cursor() as cur:
        cur.execute("DROP TABLE public.bench_probe")
    conn.close()


def _need_pgbench(db_settings) -> None:
    try:
        pgbench_binary(db_settings)
    except SystemExit:
        if db_settings.managed:  # make test installs the server package, and pgbench with it
            raise
        pytest.skip(
            "pgbench is not installed (an external DATABASE_URL without PostgreSQL's "
            "server package)"
        )


def _scattered(statement: str) -> list[Job]:
    """Tiles anywhere, one drawn twice, as the benchmark draws them where the data is; a second
    statement for the zooms it aggregates at (the text differs by mode)."""
    other = statement.replace(" VALUES", " (z, x, y) VALUES")
    tiles = [(10, 812, 478), (12, 3251, 1915), (10, 812, 478), (11, 1626, 958), (16, 52200, 30700)]
    return [Job(statement if z > 10 else other, z, x, y) for z, x, y in tiles]


def _counts(probe) -> dict[tuple[int, int, int], int]:
    with probe.cursor() as cur:
        cur.execute("SELECT z, x, y, count(*) FROM public.bench_probe GROUP BY 1, 2, 3")
        return {(z, x, y): n for z, x, y, n in cur.fetchall()}


def test_a_round_runs_every_tile_once_per_client(db_settings, probe):
    _need_pgbench(db_settings)
    jobs = _scattered("INSERT INTO public.bench_probe VALUES ($1, $2, $3)")
    script = pgbench_script(jobs, 4)
    # One SQL command per statement (each prepared once per connection), whatever the tiles.
    assert script.count("INSERT INTO") == 2 and script.count(r"\elif") == 1
    run = pgbench("probe", db_settings, jobs, 4, free_jobs=3, rounds=2)
    # Exactly the same work as a server gets from 4 connections going twice through the list:
    # every job 8 times (a tile listed twice 16 times), and the tiles a server answers
    # without a query counted alike.
    assert _counts(probe) == dict(Counter((j.z, j.x, j.y) for j in jobs * 8))
    assert run.errors == 0 and run.count == 8 * (len(jobs) + 3)
    assert run.seconds > 0 and run.p99 >= run.p50 >= 0


def test_a_timed_run_walks_the_list_in_order(db_settings, probe):
    _need_pgbench(db_settings)
    jobs = _scattered("INSERT INTO public.bench_probe VALUES ($1, $2, $3)")
    run = pgbench("probe", db_settings, jobs, 4, seconds=2)
    counts = _counts(probe)
    assert run.errors == 0 and run.count == sum(counts.values()) > 0
    assert set(counts) <= {(j.z, j.x, j.y) for j in jobs}
    if sum(counts.values()) >= 3 * len(jobs):  # several rounds: every tile, evenly
        assert set(counts) == {(j.z, j.x, j.y) for j in jobs}
        per_job = Counter((j.z, j.x, j.y) for j in jobs)
        shares = [n / per_job[tile] for tile, n in counts.items()]
        assert max(shares) <= 1.1 * min(shares)
    with pytest.raises(ValueError, match="either"):
        pgbench("probe", db_settings, jobs, 4)


def test_floor_runs_ioc_tile_statements(db_settings, db):
    _need_pgbench(db_settings)
    settings = TileSettings(cache="off")
    plans = next(
        plan
        for la in load_catalog_sync(db)
        if la.geometry_type.endswith("LineString")
        and la.feature_count
        and (plan := plan_tile([la], 14, settings))
    )
    statement = build_tile_sql(plans, settings)
    jobs = [Job(statement, 14, 13_047 + i, 7_666 + j) for i in range(2) for j in range(2)]
    run = pgbench("floor", db_settings, jobs, 2, free_jobs=4, seconds=1)
    assert run.errors == 0 and run.count > 0 and run.p99 >= run.p50 >= 0
    with pytest.raises(ValueError, match="misread"):
        pgbench_script([Job("SELECT 1; SELECT $1, $2, $3", 1, 0, 0)], 1)


def test_warm_rounds_run_first_and_are_not_measured(db_settings, probe):
    _need_pgbench(db_settings)
    jobs = _scattered("INSERT INTO public.bench_probe VALUES ($1, $2, $3)")
    run = pgbench("probe", db_settings, jobs, 2, rounds=1, warm_rounds=2)
    # Three walks through the list per client were made; only what ended after every client's
    # warm walks is measured (at most the last walk of each client).
    assert sum(_counts(probe).values()) == 3 * 2 * len(jobs)
    assert 0 < run.count <= 2 * len(jobs) and run.errors == 0 and run.seconds > 0
    # One client: exactly its last walk.
    assert pgbench("probe", db_settings, jobs, 1, rounds=1, warm_rounds=1).count == len(jobs)
