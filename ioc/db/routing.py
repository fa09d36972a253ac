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

A replica may die between two checks. A routed read's statement whose replica connection
fails (refused, closed, the server shutting down) is made once more on the primary — a
statement on the pool, a statement on an acquired connection outside a transaction (the rest
of that read then runs on the primary), a transaction none of whose statements has answered
yet (begun again on the primary) — and the replica is out until its next check answers
(logged, counted in /metrics). A transaction that has had answers from the replica (a cursor
half read, a read-only snapshot) cannot move: it fails, as on a primary that dies.
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
    lost: int = 0  # reads whose connection to it failed, retried on the primary

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
        self.lost = 0  # reads retried on the primary after their replica connection failed
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
        replica = self.pick(layers)
        return self.primary if replica is None else replica.pool  # type: ignore[return-value]

    def pick(self, layers: Iterable[str] = ()) -> Replica | None:
        """The replica a read goes to (see :meth:`pool`), None for the primary."""
        if not self.replicas:
            return None
        position = max((self.needed.get(i, 0) for i in layers), default=0)
        position = max(position, self.floor)
        ready = [r for r in self.replicas if r.pool and r.within(self.budget, position)]
        if not ready:
            self.fallbacks += 1
            return None
        self.replica_reads += 1
        return ready[next(self._turn) % len(ready)]

    def lose(self, replica: Replica, exc: BaseException) -> None:
        """A read's connection to ``replica`` failed: out of the rotation until its next
        check answers (the read is retried on the primary by the caller)."""
        self.lost += 1
        replica.lost += 1
        if replica.up:
            replica.up, replica.lag, replica.error = False, float("inf"), _sentence(exc)
            log.warning(
                "replica connection lost: its reads go to the primary until it answers a check",
                extra={"replica": replica.name, "error": replica.error},
            )

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


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection (not the statement) failed: refused or missing
    socket, closed under the read, a server shutting down, crashed or full."""
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)
    return isinstance(exc, (OSError, *LOST))


LOST = (
    asyncpg.PostgresConnectionError,  # incl. ConnectionDoesNotExistError: closed mid-statement
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


class ReadPool:
    """A pool stand-in for one read: each query (``fetch*``, ``acquire``) asks the router
    where to go at that moment, so a tile rendered after the cache read its as-of event id
    never comes from a replica that lacks that event. A replica connection that fails is
    retried once on the primary (see the module's docstring)."""

    def __init__(self, router: ReadRouter, layers: tuple[str, ...]) -> None:
        self._router = router
        self._layers = layers

    async def _once(self, method: str, args: tuple, kwargs: dict):
        replica = self._router.pick(self._layers)
        if replica is not None:
            try:
                return await getattr(replica.pool, method)(*args, **kwargs)
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                self._router.lose(replica, exc)
        return await getattr(self._router.primary, method)(*args, **kwargs)

    async def fetch(self, *args, **kwargs):
        return await self._once("fetch", args, kwargs)

    async def fetchrow(self, *args, **kwargs):
        return await self._once("fetchrow", args, kwargs)

    async def fetchval(self, *args, **kwargs):
        return await self._once("fetchval", args, kwargs)

    async def execute(self, *args, **kwargs):
        return await self._once("execute", args, kwargs)

    def acquire(self, *, timeout: float | None = None) -> _Acquired:
        return _Acquired(self._router, self._layers, timeout)

    def __getattr__(self, name: str):
        return getattr(self._router.pool(self._layers), name)


class _Acquired:
    """``async with pool.acquire() as conn`` of a routed read. On a replica the connection is
    a :class:`_FirstUse`: should the replica be gone before its first answer, the read moves
    to a connection of the primary."""

    def __init__(self, router: ReadRouter, layers: tuple[str, ...], timeout: float | None):
        self._router, self._layers, self._timeout = router, layers, timeout
        self._held: list = []  # the pools' acquire contexts, released on exit

    async def _take(self, pool: Pool):
        context = pool.acquire(timeout=self._timeout)
        conn = await context.__aenter__()
        self._held.append(context)
        return conn

    async def __aenter__(self):
        replica = self._router.pick(self._layers)
        if replica is not None:
            try:
                return _FirstUse(await self._take(replica.pool), replica, self)  # type: ignore[arg-type]
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                self._router.lose(replica, exc)
        return await self._take(self._router.primary)

    async def move_to_primary(self, replica: Replica, exc: BaseException):
        """The replica connection failed: give it back and take one of the primary's."""
        self._router.lose(replica, exc)
        dead = self._held.pop()
        try:
            await dead.__aexit__(None, None, None)
        except Exception:  # noqa: BLE001 — a broken connection the pool discards anyway
            log.debug("releasing a lost replica connection failed", exc_info=True)
        return await self._take(self._router.primary)

    async def __aexit__(self, *exc_info) -> None:
        while self._held:
            await self._held.pop().__aexit__(*exc_info)


class _FirstUse:
    """A replica connection that moves to the primary when a statement fails for want of the
    replica. Outside a transaction each statement stands alone: the rest of the read runs on
    the primary. Inside one, until a statement has answered, the transaction is begun again
    there; after that its snapshot is the replica's and cannot move."""

    def __init__(self, conn, replica: Replica, owner: _Acquired) -> None:
        self._conn, self._replica, self._owner = conn, replica, owner
        self._moved = False
        self.open: _Transaction | None = None  # the transaction under way
        self.settled = False  # a statement of it has answered

    async def _first(self, call):
        if self._moved or self.settled:
            return await call(self._conn)
        try:
            result = await call(self._conn)
        except Exception as exc:
            if not connection_lost(exc):
                raise
            self._conn = await self._owner.move_to_primary(self._replica, exc)
            self._moved = True
            if self.open is not None:  # nothing of it has answered: begin it on the primary
                await self.open.begin(self._conn)
            return await call(self._conn)
        self.settled = self.open is not None
        return result

    async def cursor(self, *args, **kwargs):
        return await self._first(lambda conn: conn.cursor(*args, **kwargs))

    async def fetch(self, *args, **kwargs):
        return await self._first(lambda conn: conn.fetch(*args, **kwargs))

    async def fetchrow(self, *args, **kwargs):
        return await self._first(lambda conn: conn.fetchrow(*args, **kwargs))

    async def fetchval(self, *args, **kwargs):
        return await self._first(lambda conn: conn.fetchval(*args, **kwargs))

    async def execute(self, *args, **kwargs):
        return await self._first(lambda conn: conn.execute(*args, **kwargs))

    async def prepare(self, *args, **kwargs):
        return await self._first(lambda conn: conn.prepare(*args, **kwargs))

    def transaction(self, **kwargs) -> _Transaction:
        return _Transaction(self, kwargs)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


class _Transaction:
    """``async with conn.transaction(...)`` on a :class:`_FirstUse`: begun again on the
    primary when the replica goes before the transaction's first answer."""

    def __init__(self, conn: _FirstUse, options: dict) -> None:
        self._conn, self._options = conn, options
        self._tx = None

    async def begin(self, conn):
        self._tx = conn.transaction(**self._options)
        return await self._tx.__aenter__()

    async def __aenter__(self):
        entered = await self._conn._first(self.begin)  # noqa: SLF001 — the same read's
        self._conn.open, self._conn.settled = self, False
        return entered

    async def __aexit__(self, *exc_info):
        self._conn.open, self._conn.settled = None, False
        return await self._tx.__aexit__(*exc_info)  # type: ignore[union-attr]
