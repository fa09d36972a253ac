"""The tile benchmark's live writer (bench/tilewrites.py) really writes the layer, one change
event per write, never before a write is due, and counts only what took."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench.tilelist import sample_features
from bench.tilewrites import Writer
from ioc.catalog.layers import load_catalog_sync


def _samples(db_settings, layer, n):
    async def go():
        conn = await asyncpg.connect(db_settings.dsn())
        try:
            return await sample_features(conn, layer, n, "bench writer")
        finally:
            await conn.close()

    return asyncio.run(go())


def _scalar(db, sql: str, *args):
    with db.cursor() as cur:
        cur.execute(sql, args)
        value = cur.fetchone()[0]
    db.rollback()
    return value


def test_writer_writes_the_layer_on_schedule(db_settings, db):
    layer = load_catalog_sync(db).find("buildings")
    db.rollback()
    samples = _samples(db_settings, layer, 20)
    last_event = _scalar(db, "SELECT coalesce(max(id), 0) FROM ioc.events")
    with Writer(db_settings, layer, samples, rate=20.0, in_flight=4) as writer:
        time.sleep(0.5)  # lets it write; nothing below depends on how many it wrote
    assert writer.writes, "the first write is due when the writer is ready"
    assert all(w.ok for w in writer.writes)
    assert all(w.sent >= w.due for w in writer.writes)
    assert writer.failed == 0
    assert writer.ok == sum(1 for w in writer.writes if w.done <= writer.ended)
    events = _scalar(
        db,
        "SELECT count(*) FROM ioc.events WHERE id > %s AND layer_id = 'buildings'"
        " AND op LIKE 'item%%'",
        last_event,
    )
    assert events == len(writer.writes)
    k = len(writer.writes) - 1  # the last write set its feature's use_type to this sample's
    fid, value = samples[k % len(samples)].fid, samples[(k + 7) % len(samples)].category
    assert _scalar(db, "SELECT use_type FROM data.buildings WHERE fid = %s", fid) == value
