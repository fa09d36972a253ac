"""Read routing: reads that tolerate lag go to streaming replicas within a staleness budget.

The primary (``DATABASE_URL``) takes every write and every read that must see the caller's own
write; replicas (``IOC_DATABASE_REPLICA_URLS``, e.g. an HAProxy replica port) take the reads
the caller chose to route (tiles, items, statistics, address search: docs/scaling.md lists
each endpoint). A checker measures each replica's lag against the primary every
IOC_REPLICA_CHECK_SECONDS and :meth:`ReadRouter.pool` hands out only replicas within
IOC_REPLICA_LAG_BUDGET_SECONDS; with none, reads fall back to the primary (logged once per
change, counted in /metrics).

Lag is measured in time from WAL positions, not from ``pg_last_xact_replay_timestamp()``:
that timestamp grows while the primary is idle and says nothing of a replica that stopped
receiving. The checker samples the primary's ``pg_current_wal_lsn()``; a replica is as late as
the oldest sample it has not replayed yet.

Answers cached or tagged against the change events (tiles, items' ETags) need more than a
budget: when the process takes in a layer's change event, :meth:`ReadRouter.mark` notes the
primary's WAL position, and that layer is read on a replica only once the replica has replayed
past it. The pool handed out is lazy (:class:`ReadPool`): the replica is chosen when a query
runs, after the tile cache has read the event id its tile will be current as of.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import asyncpg

from ioc.db.connection import Pool, create_pool
from ioc.settings import DatabaseSettings

log = logging.getLogger("ioc.db.routing")
CHECK_TIMEOUT = 3.0  # seconds a replica may take to connect or answer its check

PRIMARY_SQL = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
# The replayed position; a promoted replica (no replay position) is as current as itself.
REPLICA_SQL = """
SELECT (coalesce(pg_last_wal_replay_lsn(), pg_current_wal_lsn()) - '0/0'::pg_lsn)::bigint
"""


@dataclass
class Replica:
    """One replica pool and what its last check found."""

    name: str  # host:port/db, never the password
    settings: DatabaseSettings
    pool: Pool | None = None
    up: bool = False
    lag: float = float("inf")  # seconds behind the primary at the last check
    replayed: int = 0  # WAL position replayed at the last check
    error: str | None = None

    def within(self, budget: float, position: int) -> bool:
        """Usable for a read: answering, within the lag budget, past WAL ``position``."""
        return self.up and self.lag <= budget and self.replayed >= position


def replica_name(url: str) -> str:
    """``host:port/db`` of a URL, without user or password (for logs and metrics); a Unix
    socket's folder and port come from the query (``?host=/run/pg&port=5433``)."""
    rest, _, query = url.split("://", 1)[-1].rsplit("@", 1)[-1].partition("?")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    host, _, database = rest.partition("/")
    if not host and "host" in params:
        host = params["host"] + (f":{params['port']}" if "port" in params else "")
    return f"{host}/{database}"


class LagClock:
    """Samples of the primary's WAL position, to turn a replica's position into seconds."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, lsn: int) -> None:
        if not self.samples or lsn > self.samples[-1][1]:
            self.samples.append((at, lsn))
        while len(self.samples) > 1 and self.samples[1][0] < at - self.keep:
            self.samples.popleft()

    def lag(self, replayed: int, now: float) -> float:
        """Seconds since the primary first passed ``replayed`` (0 when it has all of it)."""
        for at, lsn in self.samples:
            if lsn > replayed:
                return max(0.0, now - at)
        return 0.0


class ReadRouter:
    """The primary pool and the replica pools; picks where a read goes."""

    def __init__(
        self,
        primary: Pool,
        settings: DatabaseSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.budget = settings.replica_lag_budget_seconds
        self.interval = settings.replica_check_seconds
        self.replicas = [
            Replica(replica_name(url), settings.model_copy(update={"url": url}))
            for url in settings.replica_urls
        ]
        self.lags = LagClock(keep=max(4 * self.budget, 10 * self.interval))
        self.clock = clock
        self.fallbacks = 0  # reads a replica could not take (metrics)
        self.replica_reads = 0
        self.floor = 0  # WAL position every replica read must have replayed
        self.needed: dict[str, int] = {}  # per layer: position of its newest change taken in
        self._turn = itertools.count()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Open the replica pools (one that does not answer is retried by the checker) and
        start checking their lag."""
        if not self.replicas:
            return
        await self.check()
        self._task = asyncio.create_task(self._run(), name="ioc-replica-check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for replica in self.replicas:
            if replica.pool is not None:
                await replica.pool.close()
                replica.pool = None

    def pool(self, layers: Iterable[str] = ()) -> Pool:
        """A pool for a read that tolerates the lag budget: a replica within it that holds
        the newest change taken in of each of ``layers`` (round robin), else the primary."""
        if not self.replicas:
            return self.primary
        position = max((self.needed.get(i, 0) for i in layers), default=0)
        position = max(position, self.floor)
        ready = [r for r in self.replicas if r.pool and r.within(self.budget, position)]
        if not ready:
            self.fallbacks += 1
            return self.primary
        self.replica_reads += 1
        return ready[next(self._turn) % len(ready)].pool  # type: ignore[return-value]

    def lazy(self, layers: Iterable[str] = ()) -> Pool:
        """:meth:`pool`, chosen at each query (see :class:`ReadPool`)."""
        if not self.replicas:
            return self.primary
        return ReadPool(self, tuple(layers))  # type: ignore[return-value]

    async def mark(self, layers: set[str]) -> None:
        """Before the process takes in change events of ``layers`` (all when empty): replica
        reads of them wait for the primary's present WAL position. A primary that does not
        answer marks nothing (nothing new can be read from it either)."""
        if not self.replicas:
            return
        try:
            position = await self.primary.fetchval(PRIMARY_SQL)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return
        if not layers:
            self.floor = max(self.floor, position)
        for layer in layers:
            self.needed[layer] = max(self.needed.get(layer, 0), position)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # the checker must outlive any one failure
                log.exception("replica check failed")

    async def check(self) -> None:
        """Measure every replica's lag once (primary first: its position is the reference)."""
        try:
            self.lags.add(self.clock(), await self.primary.fetchval(PRIMARY_SQL))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Without the primary's position no lag is known: keep the last verdicts.
            log.warning("primary position unknown", extra={"error": str(exc)})
            return
        await asyncio.gather(*(self._check(r) for r in self.replicas))

    async def _check(self, replica: Replica) -> None:
        was = replica.up, replica.lag <= self.budget
        try:
            if replica.pool is None:
                replica.pool = await asyncio.wait_for(
                    create_pool(replica.settings, application_name="ioc-replica"), CHECK_TIMEOUT
                )
            pool: Pool = replica.pool
            replayed = await pool.fetchval(REPLICA_SQL, timeout=CHECK_TIMEOUT)
        except Exception as exc:  # any failure: the replica is out until it answers again
            replica.up, replica.lag, replica.error = False, float("inf"), _sentence(exc)
        else:
            replica.up, replica.error, replica.replayed = True, None, replayed
            replica.lag = self.lags.lag(replayed, self.clock())
        now = replica.up, replica.lag <= self.budget
        if now != was:
            _log_change(replica, now, self.budget)


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _log_change(replica: Replica, now: tuple[bool, bool], budget: float) -> None:
    if not now[0]:
        log.warning(
            "replica not answering: reads fall back to the primary",
            extra={"replica": replica.name, "error": replica.error},
        )
    elif not now[1]:
        log.warning(
            "replica beyond the lag budget: reads fall back to the primary",
            extra={"replica": replica.name, "lag_s": round(replica.lag, 3), "budget_s": budget},
        )
    else:
        log.info("replica serving reads", extra={"replica": replica.name})


class ReadPool:
    """A pool stand-in for one read: each query (``fetch*``, ``acquire``) asks the router
    where to go at that moment, so a tile rendered after the cache read its as-of event id
    never comes from a replica that lacks that event."""

    def __init__(self, router: ReadRouter, layers: tuple[str, ...]) -> None:
        self._router = router
        self._layers = layers

    def __getattr__(self, name: str):
        return getattr(self._router.pool(self._layers), name)
