"""The tile benchmark draws its features from the real layer, uniformly and the same ones every
run, even after writes have moved the rows on disk (a list that changed between runs would make
two runs incomparable)."""

from __future__ import annotations

import asyncio

import asyncpg

from bench.tilelist import draw_tiles, sample_features
from ioc.catalog.layers import load_catalog_sync
from tiles.pmtiles import lonlat_to_tile


def _sample(db_settings, layer, n, seed="issue 20"):
    async def go():
        conn = await asyncpg.connect(db_settings.dsn())
        try:
            return await sample_features(conn, layer, n, seed)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_samples_are_real_features_and_stay_the_same_across_writes(db_settings, db):
    layer = next(la for la in load_catalog_sync(db) if la.id == "reports_1022")
    first = _sample(db_settings, layer, 70)
    assert len({s.fid for s in first}) == 70
    with db.cursor() as cur:
        cur.execute(
            "SELECT fid, ST_X(geom), ST_Y(geom), status::text FROM data.reports_1022"
            " WHERE fid = ANY(%s)",
            ([s.fid for s in first],),
        )
        rows = {r[0]: r[1:] for r in cur.fetchall()}
        assert {s.fid: (s.lon, s.lat, s.category) for s in first} == rows
        # Rewrite some of them unchanged: their new versions go elsewhere in the table.
        cur.execute(
            "UPDATE data.reports_1022 SET status = status WHERE fid = ANY(%s)",
            ([s.fid for s in first[:10]],),
        )
    db.commit()
    assert _sample(db_settings, layer, 70) == first
    assert _sample(db_settings, layer, 70, seed="another") != first
    tiles = draw_tiles(first, range(10, 17), 10)
    assert tiles[0] == (10, *lonlat_to_tile(first[0].lon, first[0].lat, 10))
