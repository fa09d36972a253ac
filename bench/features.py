"""Features benchmark (``make bench``; not a test): ioc against tipg on the same tables.

Two tables in schema ``bench_features`` of the bench database — 200,000 points and 50,000
small polygons spread over Ho Chi Minh City — are registered as ioc layers and discovered by
tipg. Two mixes, 8 concurrent clients, one server process each:

- **items**: ``/items?bbox=…&limit=500`` over random boxes that hold more than 500 features;
- **feature**: ``/items/{id}`` for random ids.

Target (issue #4): ioc ≥ 2× tipg's throughput on the items mix. Responses are requested without
compression by default (``--gzip`` to ask for gzip), so that the servers' own work is measured.
Note: ioc omits ``numberMatched`` for filtered requests on layers above 50,000 features (no
count query); tipg always counts.
"""

from __future__ import annotations

import argparse
import random

import httpx
import psycopg2

from bench.common import (
    Result,
    console,
    merge,
    prepare_database,
    print_results,
    run_load,
    start_ioc,
    start_tipg,
)
from ioc.settings import DatabaseSettings
from layers import registry

SCHEMA = "bench_features"
POINTS, PARCELS = 200_000, 50_000
WEST, SOUTH, SPAN = 106.45, 10.55, 0.5
TABLES = {"points": ("bench_points", POINTS, 0.035), "parcels": ("bench_parcels", PARCELS, 0.07)}
VERSION = 1

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
DROP TABLE IF EXISTS {SCHEMA}.points, {SCHEMA}.parcels;
SELECT setseed(0.4242);
CREATE TABLE {SCHEMA}.points (
    fid bigint PRIMARY KEY, name text, category text, value double precision, n integer,
    observed_at timestamptz, geom geometry(Point, 4326));
INSERT INTO {SCHEMA}.points
SELECT i, 'Điểm ' || i,
       (ARRAY['ngap_nuoc', 'rac_thai', 'giao_thong', 'chieu_sang', 'khac'])[1 + (i % 5)],
       round((random() * 1000)::numeric, 2), (random() * 100)::int,
       TIMESTAMPTZ '2025-01-01' + random() * INTERVAL '365 days',
       ST_SetSRID(ST_MakePoint({WEST} + random() * {SPAN}, {SOUTH} + random() * {SPAN}), 4326)
FROM generate_series(1, {POINTS}) i;
CREATE INDEX ON {SCHEMA}.points USING gist (geom);
CREATE TABLE {SCHEMA}.parcels (
    fid bigint PRIMARY KEY, so_thua text, loai_dat text, dien_tich double precision,
    geom geometry(Polygon, 4326));
INSERT INTO {SCHEMA}.parcels
SELECT i, 'T-' || i, (ARRAY['ODT', 'CLN', 'LUA', 'TMD'])[1 + (i % 4)],
       round((random() * 500)::numeric, 1),
       ST_Buffer(ST_SetSRID(ST_MakePoint({WEST} + random() * {SPAN},
                                         {SOUTH} + random() * {SPAN}), 4326), 0.0003,
                 'quad_segs=2')
FROM generate_series(1, {PARCELS}) i;
CREATE INDEX ON {SCHEMA}.parcels USING gist (geom);
ANALYZE {SCHEMA}.points;
ANALYZE {SCHEMA}.parcels;
"""


def prepare_tables(settings: DatabaseSettings) -> None:
    """Create and register the bench tables once (kept between runs)."""
    conn = psycopg2.connect(settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT value FROM ioc.meta WHERE key = 'bench_features'")
            row = cur.fetchone()
            cur.execute(
                "SELECT count(*) FROM ioc.layers WHERE id IN %s",
                (tuple(layer for layer, _, _ in TABLES.values()),),
            )
            if row and row[0] == VERSION and cur.fetchone()[0] == len(TABLES):
                conn.rollback()
                return
        console.print("[bold]Creating the bench tables …[/bold]")
        with conn.cursor() as cur:
            cur.execute(
                "DELETE FROM ioc.layers WHERE id IN %s",
                (tuple(layer for layer, _, _ in TABLES.values()),),
            )
            cur.execute(DDL)
        conn.commit()
        for table, (layer_id, _, _) in TABLES.items():
            registry.add_table(
                conn,
                SCHEMA,
                table,
                layer_id=layer_id,
                access="public",
                domain="bench",
                title=f"Bench {table}",
            )
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ioc.meta (key, value) VALUES ('bench_features', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(VERSION),),
            )
        conn.commit()
    finally:
        conn.close()


def boxes(side: float, count: int, rng: random.Random) -> list[str]:
    """Random square boxes inside the data's extent."""
    out = []
    for _ in range(count):
        x, y = WEST + rng.random() * (SPAN - side), SOUTH + rng.random() * (SPAN - side)
        out.append(f"{x:.5f},{y:.5f},{x + side:.5f},{y + side:.5f}")
    return out


def scenario_paths(collection: dict[str, str], rng_seed: int = 7) -> dict[str, list[str]]:
    """The same request paths for both servers (collection ids differ only)."""
    rng = random.Random(rng_seed)
    items, features = [], []
    for table, (_, count, side) in TABLES.items():
        items += [
            f"/collections/{collection[table]}/items?bbox={b}&limit=500"
            for b in boxes(side, 200, rng)
        ]
        features += [
            f"/collections/{collection[table]}/items/{rng.randint(1, count)}" for _ in range(400)
        ]
    rng.shuffle(items)
    rng.shuffle(features)
    return {"items (bbox, limit 500)": items, "feature (by id)": features}


def check_same_answers(
    ioc_url: str, tipg_url: str, ioc_paths: list[str], tipg_paths: list[str]
) -> None:
    """Both servers return 500 features for the same boxes (sanity before timing)."""
    for mine, theirs in list(zip(ioc_paths, tipg_paths, strict=True))[:5]:
        a = httpx.get(ioc_url + mine, timeout=60).json()
        b = httpx.get(tipg_url + theirs, timeout=60).json()
        if len(a["features"]) != len(b["features"]) or len(a["features"]) != 500:
            raise RuntimeError(
                f"different answers for {mine}: {len(a['features'])} vs {len(b['features'])}"
            )


def main(argv: list[str] | None = None) -> list[Result]:
    """Run the features benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench features")
    parser.add_argument("--requests", type=int, default=3000, help="per scenario and server")
    parser.add_argument("--seconds", type=float, default=30.0, help="per scenario and server")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--gzip", action="store_true", help="ask for gzip responses")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating ioc/tipg rounds per scenario (evens out background load)",
    )
    args = parser.parse_args(argv)

    settings = prepare_database()
    prepare_tables(settings)
    ioc_paths = scenario_paths({t: layer for t, (layer, _, _) in TABLES.items()})
    tipg_paths = scenario_paths({t: f"{SCHEMA}.{t}" for t in TABLES})
    servers = [start_ioc(settings), start_tipg(settings, [SCHEMA])]
    results: list[Result] = []
    try:
        ioc, tipg = servers
        check_same_answers(
            ioc.url,
            tipg.url,
            ioc_paths["items (bbox, limit 500)"],
            tipg_paths["items (bbox, limit 500)"],
        )
        for scenario in ioc_paths:
            pairs = [
                (ioc, [ioc.url + p for p in ioc_paths[scenario]]),
                (tipg, [tipg.url + p for p in tipg_paths[scenario]]),
            ]
            for server, urls in pairs:
                run_load(
                    server.name,
                    "warm-up",
                    urls,
                    concurrency=args.concurrency,
                    max_requests=200,
                    max_seconds=10,
                    gzip=args.gzip,
                )
            rounds: dict[str, list[Result]] = {"ioc": [], "tipg": []}
            for i in range(args.rounds):
                for server, urls in pairs if i % 2 == 0 else pairs[::-1]:
                    rounds[server.name].append(
                        run_load(
                            server.name,
                            scenario,
                            urls,
                            concurrency=args.concurrency,
                            max_requests=args.requests // args.rounds,
                            max_seconds=args.seconds / args.rounds,
                            gzip=args.gzip,
                        )
                    )
            results += [merge(rounds["ioc"]), merge(rounds["tipg"])]
    finally:
        for server in servers:
            server.stop()
    encoding = "gzip" if args.gzip else "identity"
    print_results(
        f"OGC API – Features: ioc vs tipg ({args.concurrency} clients, "
        f"{args.rounds} alternating rounds, Accept-Encoding: {encoding})",
        results,
        baseline="tipg",
        candidate="ioc",
    )
    return results


if __name__ == "__main__":
    main()
