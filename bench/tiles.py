"""Tile benchmark (``make bench BENCH_ARGS=tiles``; not a test): ioc against tipg and the
PostGIS floor, on the city's dense layers, where their data is, while the data changes.

The issue's layers at city scale (1 M 1022 reports, 300 k buildings), each measured on its own
with a tile list drawn where the layer's features are (:mod:`bench.tilelist`; every zoom 10-16
equally represented), 8 clients, one server process each:

- **content first** (:mod:`bench.tilecheck`): every distinct tile of the list from ioc and from
  tipg, compared (aggregate counts against tipg's features, feature ids otherwise);
- **tipg** (the Python peer, from PyPI, in ``var/bench-venv``, on the same uvicorn stack);
- **ioc uncached** (``IOC_TILE_CACHE=off``) and **PostGIS alone** (ioc's own statements run by
  pgbench, prepared: the floor), run by run alternately, zoom by zoom (per-zoom p50/p99);
- **ioc warm cache** (every tile requested before measuring);
- **with live updates**: WRITE_RATE feature writes/s on the layer (the PATCH handler's write
  of the drawn features' style category, from a process of its own as a sensor gateway
  writes: :mod:`bench.tilewrites`) while measuring ioc cached and uncached.

ioc is given the whole zoom range 10-16 for these layers (their manifests start at 12 and 14,
where ioc would answer lower zooms without the database: a flattering 204), and their low-zoom
tables (sql/0012) are built with the settings in force and checked before measuring.
Targets (issue #20) are printed with the ratios. Every load run is bounded and only targets
127.0.0.1. ``--quick`` draws fewer tiles and runs one pass, to try the benchmark out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import psycopg2

from bench.common import Server, console, seeded_database, start_ioc, start_tipg
from bench.loadgen import Job, Run, combine, pgbench, wrk
from bench.tilecheck import ZoomCheck, compare
from bench.tilelist import Sample, draw_tiles, sample_features
from bench.tilewrites import Writer
from ioc.catalog import keys
from ioc.catalog.access import ADMIN
from ioc.catalog.layers import Layer, load_catalog
from ioc.settings import DatabaseSettings
from layers.manifest import load_catalog as load_manifests
from layers.registry import manifest_row
from tiles.lowzoom import build_layers
from tiles.render import TileService
from tiles.settings import TileSettings

LAYERS = ("reports_1022", "buildings")
ZOOMS = range(10, 17)
CONCURRENCY = 8
WRITE_RATE = 10.0  # feature writes per second during the live runs
# Writes sent on time may wait this many at once (bench/tilewrites.py).
WRITES_IN_FLIGHT = 32
# Its own database: other benchmarks add their own layers to theirs.
BENCH_DB = os.environ.get("IOC_BENCH_TILES_DB", "ioc_bench_tiles_city")


@dataclass(frozen=True)
class Options:
    """How long the benchmark runs."""

    per_zoom: int = 36  # tiles drawn per zoom and layer
    passes: int = 3  # timed passes (each one round of the list per client) per zoom
    warm_up: float = 5.0  # seconds before each contender's first pass
    warm_seconds: float = 10.0  # timed seconds of the warm-cache runs


QUICK = Options(per_zoom=12, passes=1, warm_up=3.0, warm_seconds=5.0)


@dataclass
class LayerResult:
    """Everything measured on one layer."""

    layer: Layer
    tiles: list[tuple[int, int, int]]
    checks: dict[int, ZoomCheck] = field(default_factory=dict)
    zooms: dict[str, dict[int, Run]] = field(default_factory=dict)  # contender → zoom → run
    whole: dict[str, Run] = field(default_factory=dict)  # contender → run over the whole list
    writes: dict[str, Writer] = field(default_factory=dict)

    def rate(self, contender: str) -> float:
        if contender in self.whole:
            return self.whole[contender].rate
        return combine(contender, list(self.zooms[contender].values())).rate


# --- database ----------------------------------------------------------------------------------


def prepare_database() -> DatabaseSettings:
    """The benchmark database, seeded with the demo city at city scale (once, minutes)."""
    return seeded_database(BENCH_DB, "city", "IOC_BENCH_TILES_DB")


def prepare_layers(settings: DatabaseSettings, tile_settings: TileSettings) -> None:
    """Open the bench layers' zoom range to 10 and make sure their low-zoom tables are built
    for the live tables with the settings in force (else the tile SQL reads the rows)."""
    conn = psycopg2.connect(settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE ioc.layers SET manifest = jsonb_set(manifest, '{zoom,min}', to_jsonb(%s))"
                " WHERE id = ANY(%s) AND coalesce((manifest #>> '{zoom,min}')::int, 0) > %s"
                " RETURNING id",
                (ZOOMS.start, list(LAYERS), ZOOMS.start),
            )
            opened = [row[0] for row in cur.fetchall()]
            # The manifests' tiles block as the catalog has it now (a database seeded before
            # tiles.merge came keeps the older one otherwise).
            for manifest in load_manifests():
                if manifest.id not in LAYERS:
                    continue
                tiles = manifest_row(manifest, "manifest")["manifest"].get("tiles")
                cur.execute(
                    "UPDATE ioc.layers SET manifest = jsonb_set(manifest, '{tiles}', %s::jsonb)"
                    " WHERE id = %s AND manifest -> 'tiles' IS DISTINCT FROM %s::jsonb"
                    " RETURNING id",
                    (json.dumps(tiles), manifest.id, json.dumps(tiles)),
                )
                opened += [row[0] for row in cur.fetchall()]
        conn.commit()
        stale = [la for la in LAYERS if la in opened or not _lowzoom_built(conn, la, tile_settings)]
        if stale:
            console.print(f"building the low-zoom tables of {', '.join(stale)} …")
            build_layers(conn, tile_settings, stale)
        for layer_id in LAYERS:
            if not _lowzoom_built(conn, layer_id, tile_settings):
                raise SystemExit(f"the low-zoom tables of {layer_id} did not build")
            console.print(f"low zooms of {layer_id}: {_lowzoom_summary(conn, layer_id)}")
    finally:
        conn.close()


def _lowzoom_built(conn, layer_id: str, s: TileSettings) -> bool:
    """True when ioc.tile_lowzoom says what the tile SQL's gate checks (sql/0012)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT m.kind IN ('points', 'shapes') AND m.min_zoom <= %s"
            " AND m.relid = to_regclass(format('%%I.%%I', l.schema_name, l.table_name))"
            " AND (m.kind = 'shapes' OR m.grid = %s)"
            " AND (m.kind = 'points' OR (m.visible_px = %s AND m.simplify_px = %s"
            " AND m.merge_px = CASE WHEN coalesce((l.manifest #>> '{tiles,merge}')::boolean,"
            " false) THEN %s ELSE 0 END))"
            " FROM ioc.tile_lowzoom m JOIN ioc.layers l ON l.id = m.layer_id"
            " WHERE m.layer_id = %s",
            (ZOOMS.start, s.cluster_grid, s.visible_px, s.simplify_px, s.merge_px, layer_id),
        )
        row = cur.fetchone()
    conn.rollback()
    return bool(row and row[0])


def _lowzoom_summary(conn, layer_id: str) -> str:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT m.kind, m.min_zoom, m.max_zoom,"
            " (SELECT count(*) FROM ioc.tile_cells c WHERE c.layer_id = m.layer_id),"
            " (SELECT count(*) FROM ioc.tile_shapes s WHERE s.layer_id = m.layer_id),"
            " (SELECT count(*) FROM ioc.tile_blocks k WHERE k.layer_id = m.layer_id)"
            " FROM ioc.tile_lowzoom m WHERE m.layer_id = %s",
            (layer_id,),
        )
        kind, low, high, cells, shapes, blocks = cur.fetchone()
    conn.rollback()
    return f"{kind} z{low}-{high}, {cells:,} cells, {shapes:,} shapes, {blocks:,} blocks"


def admin_key(settings: DatabaseSettings) -> str:
    """A new admin key for this run (the bench layers are internal; the writes need one)."""
    conn = psycopg2.connect(settings.dsn())
    try:
        return "Bearer " + keys.create_key(conn, "admin", None, "bench tiles")
    finally:
        conn.close()


async def load_layers(settings: DatabaseSettings) -> list[Layer]:
    pool = await asyncpg.create_pool(settings.dsn(), min_size=1, max_size=2)
    try:
        catalog = await load_catalog(pool)
    finally:
        await pool.close()
    return [catalog.get(layer_id, ADMIN) for layer_id in LAYERS]


async def floor_jobs(
    settings: DatabaseSettings, layer: Layer, tiles: Sequence[tuple[int, int, int]]
) -> tuple[list[Job], int]:
    """The tiles that cost a query, as ioc's own statements, and how many cost none.

    pgbench reads results in text format, where a tile's bytea is written out in hex (twice
    its size, a few ms for a large tile) that ioc, reading binary, never pays: the floor
    returns each tile's length instead, so it is the statement's own cost."""
    conn = await asyncpg.connect(settings.dsn())
    try:
        service = TileService(TileSettings(cache="off"))
        jobs = []
        for z, x, y in tiles:
            if plans := service.plan([layer], z):
                statement = service.sql.get(await service.with_id_types(conn, plans))
                floor = f"SELECT length(t.mvt), t.truncated FROM ({statement}) t"
                jobs.append(Job(floor, z, x, y))
    finally:
        await conn.close()
    return jobs, len(tiles) - len(jobs)


# --- load --------------------------------------------------------------------------------------


def writes(settings: DatabaseSettings, layer: Layer, samples: list[Sample]) -> Writer:
    """WRITE_RATE feature writes a second on the layer, from a process of their own."""
    return Writer(settings, layer, samples, WRITE_RATE, WRITES_IN_FLIGHT)


def serve(settings: DatabaseSettings, **env: str) -> Server:
    """``ioc serve`` on the bench database, migrated first (a migration added to the working
    tree during a long run would otherwise stop the next start)."""
    prepare_database()
    return start_ioc(settings, **env)


def _paths(prefix: str, tiles: Sequence[tuple[int, int, int]], suffix: str = "") -> list[str]:
    return [f"{prefix}/{z}/{x}/{y}{suffix}" for z, x, y in tiles]


def _by_zoom(tiles: Sequence[tuple[int, int, int]]) -> dict[int, list[tuple[int, int, int]]]:
    return {z: [t for t in tiles if t[0] == z] for z in ZOOMS}


async def measure_layer(
    settings: DatabaseSettings,
    tipg_url: str,
    authorization: str,
    layer: Layer,
    samples: list[Sample],
    opts: Options,
) -> LayerResult:
    """Content check, then tipg, ioc uncached with the floor, ioc warm, and the live runs."""
    tiles = draw_tiles(samples, ZOOMS, opts.per_zoom)
    result = LayerResult(layer, tiles)
    zooms = _by_zoom(tiles)
    tipg_prefix = f"/collections/{layer.schema}.{layer.table}/tiles/WebMercatorQuad"
    ioc_prefix = f"/tiles/{layer.id}"
    auth = {"authorization": authorization}

    def passes(name: str, base: str, paths: list[str], **extra) -> Run:
        return combine(
            name,
            [wrk(name, base, paths, CONCURRENCY, rounds=1, **extra) for _ in range(opts.passes)],
        )

    console.print(f"[bold]{layer.id}[/bold]: {len(set(tiles))} distinct tiles of {len(tiles)}")
    wrk("tipg", tipg_url, _paths(tipg_prefix, tiles), CONCURRENCY, seconds=opts.warm_up)
    result.zooms["tipg"] = {
        z: passes("tipg", tipg_url, _paths(tipg_prefix, ts)) for z, ts in zooms.items()
    }
    with tempfile.TemporaryDirectory() as cache_dir:
        ioc = serve(settings, IOC_TILE_CACHE="off", IOC_TILE_CACHE_DIR=cache_dir)
        try:
            conn = await asyncpg.connect(settings.dsn())
            try:
                result.checks = await compare(conn, layer, tiles, ioc.url, tipg_url, authorization)
            finally:
                await conn.close()
            paths = _paths(ioc_prefix, tiles, ".pbf")
            wrk("ioc uncached", ioc.url, paths, CONCURRENCY, seconds=opts.warm_up, **auth)
            result.zooms["ioc"], result.zooms["floor"] = {}, {}
            for z, ts in zooms.items():
                jobs, free = await floor_jobs(settings, layer, ts)
                served, floor = [], []
                for _ in range(opts.passes):
                    served.append(
                        wrk(
                            "ioc",
                            ioc.url,
                            _paths(ioc_prefix, ts, ".pbf"),
                            CONCURRENCY,
                            rounds=1,
                            **auth,
                        )
                    )
                    floor.append(
                        pgbench("floor", settings, jobs, CONCURRENCY, free, rounds=1, warm_rounds=1)
                    )
                result.zooms["ioc"][z] = combine("ioc uncached", served)
                result.zooms["floor"][z] = combine("PostGIS alone", floor)
            with writes(settings, layer, samples) as writer:
                result.whole["ioc, writes"] = passes("ioc, writes", ioc.url, paths, **auth)
            result.writes["ioc, writes"] = writer
        finally:
            ioc.stop()
        ioc = serve(settings, IOC_TILE_CACHE="on", IOC_TILE_CACHE_DIR=cache_dir)
        try:
            wrk("warm-up", ioc.url, paths, CONCURRENCY, rounds=1, **auth)
            result.whole["warm"] = wrk(
                "warm", ioc.url, paths, CONCURRENCY, seconds=opts.warm_seconds, **auth
            )
            with writes(settings, layer, samples) as writer:
                result.whole["warm, writes"] = wrk(
                    "warm, writes", ioc.url, paths, CONCURRENCY, seconds=opts.warm_seconds, **auth
                )
            result.writes["warm, writes"] = writer
        finally:
            ioc.stop()
    return result


async def run(settings: DatabaseSettings, opts: Options) -> list[LayerResult]:
    """Every bench layer, one after the other, tipg kept running."""
    tile_settings = TileSettings()
    prepare_layers(settings, tile_settings)
    authorization = admin_key(settings)
    layers = await load_layers(settings)
    conn = await asyncpg.connect(settings.dsn())
    try:
        samples = {
            la.id: await sample_features(conn, la, opts.per_zoom * len(ZOOMS)) for la in layers
        }
    finally:
        await conn.close()
    from bench.tilereport import report

    results = []
    tipg = start_tipg(settings, sorted({la.schema for la in layers}))
    try:
        for la in layers:
            results.append(
                await measure_layer(settings, tipg.url, authorization, la, samples[la.id], opts)
            )
            report(results[-1])  # as soon as measured: a run is long
    finally:
        tipg.stop()
    return results


def main(argv: Sequence[str] = ()) -> None:
    """Prepare, measure, print."""
    from bench.tilereport import profile_slowest

    parser = argparse.ArgumentParser(prog="python -m bench tiles")
    parser.add_argument("--quick", action="store_true", help="fewer tiles, one pass (a try-out)")
    opts = QUICK if parser.parse_args(list(argv)).quick else Options()
    settings = prepare_database()
    results = asyncio.run(run(settings, opts))
    asyncio.run(profile_slowest(settings, results))
