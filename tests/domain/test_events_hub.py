"""The event hub on the real database: a NOTIFY sent at commit wakes it, a rolled-back write
announces nothing, and a subscriber that stops reading is closed when its queue is full."""

from __future__ import annotations

import asyncio

import psycopg2

from ioc.db.connection import create_pool
from ioc.events.hub import EventHub
from ioc.events.log import record_event

LAYER = "ev_hub_test"


def write(db_settings, n: int, commit: bool = True) -> None:
    conn = psycopg2.connect(db_settings.dsn())
    with conn.cursor() as cur:
        for i in range(n):
            record_event(cur, LAYER, "item.update", i, [str(i)])
    if commit:
        conn.commit()
    else:
        conn.rollback()
    conn.close()


async def next_event(queue: asyncio.Queue, seconds: float = 30):
    return await asyncio.wait_for(queue.get(), seconds)  # a bound, not a speed assertion


def test_fan_out_rollback_and_a_full_queue(db_settings):
    async def scenario() -> None:
        pool = await create_pool(db_settings)
        hub = EventHub(pool, db_settings, retention_hours=72, queue_size=2)
        await hub.start()
        try:
            reader, idle = hub.subscribe(), hub.subscribe()
            await asyncio.to_thread(write, db_settings, 1, False)  # rolled back
            await asyncio.to_thread(write, db_settings, 1)
            first = await next_event(reader.queue)
            assert (first.layer, first.ids, first.version) == (LAYER, ["0"], 0)
            assert reader.queue.empty()  # the rolled-back one never came
            await asyncio.to_thread(write, db_settings, 2)  # idle now holds 3 > 2: closed
            assert [(await next_event(reader.queue)).version for _ in range(2)] == [0, 1]
            assert idle.closed and not reader.closed
        finally:
            await hub.stop()
            await pool.execute("DELETE FROM ioc.events WHERE layer_id = $1", LAYER)
            await pool.close()

    asyncio.run(scenario())
