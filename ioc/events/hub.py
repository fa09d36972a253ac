"""One LISTEN per server process, fanned out to subscribers through bounded queues.

A NOTIFY carries only an event id; on waking, the hub reads every new event once from the
database and hands it to each subscriber, letting the streams run between two events (so a
client that reads keeps up with any burst). A subscriber whose queue is full — its client has
not read for that many events — is marked ``behind`` and dropped: its stream tells the client
where to resume (``Last-Event-ID``) and ends; the client reads what it missed from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from ioc.db.connection import Pool
from ioc.events.log import CHANNEL, ChangeEvent, events_since, latest_id, prune
from ioc.settings import DatabaseSettings

log = logging.getLogger("ioc.events")

Changed = Callable[[set[str]], Awaitable[object]]
PRUNE_SECONDS = 3600.0
CHECK_SECONDS = 5.0  # how soon a lost LISTEN connection is replaced


class Subscriber:
    """A client's bounded queue; ``closed`` once it fell behind (``behind``) or the hub
    stopped."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[ChangeEvent | None] = asyncio.Queue(size)
        self.closed = self.behind = False

    def offer(self, event: ChangeEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.closed = self.behind = True


class EventHub:
    """The process's listener: started and stopped by the server's lifespan."""

    def __init__(
        self, pool: Pool, database: DatabaseSettings, retention_hours: float, queue_size: int = 256
    ) -> None:
        self.pool, self.database = pool, database
        self.retention_hours, self.queue_size = retention_hours, queue_size
        self.subscribers: set[Subscriber] = set()
        self.last_id = 0
        self.on_change: Changed | None = None  # e.g. the state's catalog reload
        self._wake = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._listen()
        self.last_id = await latest_id(self.pool)
        await prune(self.pool, self.retention_hours)
        self._task = asyncio.create_task(self._run(), name="ioc-events")

    async def _listen(self) -> None:
        self._conn = await asyncpg.connect(
            self.database.dsn(), server_settings={"application_name": "ioc-events"}
        )
        await self._conn.add_listener(CHANNEL, self._notified)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()
        for sub in self.subscribers:
            sub.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.queue_size)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pruned = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=CHECK_SECONDS)
            self._wake.clear()
            try:
                if self._conn is None or self._conn.is_closed():
                    # Lost (database restart, terminated): listen again, then catch up from
                    # last_id below, so the notifications missed meanwhile lose nothing.
                    await self._listen()
                    log.info("listening for change events again")
                await self._deliver()
                if loop.time() - pruned > PRUNE_SECONDS:
                    pruned = loop.time()
                    await prune(self.pool, self.retention_hours)
            except (OSError, asyncpg.PostgresError) as exc:  # tried again at the next check
                log.warning("reading change events failed", extra={"error": str(exc)})

    async def _deliver(self) -> None:
        while True:
            batch = await events_since(self.pool, self.last_id, None, 500)
            if not batch:
                return
            self.last_id = batch[-1].id
            for event in batch:
                for sub in list(self.subscribers):
                    sub.offer(event)
                    if sub.behind:  # its stream ends with where to resume; nothing more to it
                        self.subscribers.discard(sub)
                await asyncio.sleep(0)  # the streams take it now: only one that cannot falls behind
            if self.on_change is not None:
                await self.on_change({e.layer for e in batch})
