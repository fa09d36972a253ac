"""The tile benchmark's live writes: feature writes at a fixed rate on a layer while tiles
are measured, and whether that rate was really reached.

The writer is a process of its own, as a sensor gateway is (``ioc bridge mqtt`` calls the
domain the same way): each write is ``layers.items_write.write``, the PATCH handler's one
transaction (validation, history and low-zoom triggers, version, change event, NOTIFY) on its
own connection, and the ioc server under test learns of it from the change events, as from
any other process. Writes through the server under test were tried first: with 8 tile
clients on 2 cores its one process answered a PATCH in 1-6 s and the rate fell to 3.5-8 a
second, so the "under writes" run measured fewer writes than it said.

Each write is due at ``start + k / rate`` and sent then by a dispatcher thread, whatever the
earlier ones take, from a pool of ``in_flight`` threads. What counts is what was achieved: the
writes that took within the measured window, per second of it, and how late they were sent. A
run that did not reach ``rate`` is flagged by the report (its "under writes" figures are then
not the issue's condition).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.common import percentile_ms
from bench.tilelist import Sample
from ioc.catalog.layers import Layer
from ioc.settings import DatabaseSettings

# A run reaches its rate when this share of the due writes was answered in the window.
REACHED = 0.95


@dataclass
class Write:
    """One write: when it was due, sent and answered (perf_counter seconds), and if it took."""

    due: float
    sent: float = 0.0
    done: float = 0.0
    ok: bool = False


class Writer:
    """``rate`` writes a second of drawn features' style category (to another drawn
    feature's, so tiles and aggregates really change), from entering until leaving."""

    def __init__(
        self,
        database: DatabaseSettings,
        layer: Layer,
        samples: list[Sample],
        rate: float,
        in_flight: int,
    ) -> None:
        self.rate = rate
        self.writes: list[Write] = []
        self.began = self.ended = 0.0
        context = multiprocessing.get_context("spawn")
        self._stop, self._ready = context.Event(), context.Event()
        self._began = context.Value("d", 0.0)
        self._results = context.Queue()
        self._args = (database, layer.id, layer.style.get("by"), samples, rate, in_flight)
        self._context = context
        self._process: multiprocessing.process.BaseProcess | None = None

    def __enter__(self) -> Writer:
        """Start the writer process; the schedule starts once it is ready to write (a spawned
        process takes a second or more to import and load the catalog)."""
        self._process = self._context.Process(
            target=_run,
            args=(self._ready, self._began, self._stop, self._results, *self._args),
            daemon=True,
        )
        self._process.start()
        if not self._ready.wait(timeout=120):
            raise RuntimeError("the bench writer process did not start")
        self.began = self._began.value  # CLOCK_MONOTONIC: the same clock in both processes
        return self

    def __exit__(self, *exc) -> None:
        self.ended = time.perf_counter()
        self._stop.set()
        self.writes = [Write(*row) for row in self._results.get(timeout=300)]
        if self._process is not None:
            self._process.join(timeout=60)

    # --- what was achieved ----------------------------------------------------------------

    @property
    def seconds(self) -> float:
        return max(self.ended - self.began, 0.0)

    @property
    def ok(self) -> int:
        """Writes answered 204 within the measured window."""
        return sum(1 for w in self.writes if w.ok and w.done <= self.ended)

    @property
    def failed(self) -> int:
        return sum(1 for w in self.writes if w.done and not w.ok)

    @property
    def achieved(self) -> float:
        """Writes a second that took, over the measured window."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def reached(self) -> bool:
        return self.failed == 0 and self.achieved >= REACHED * self.rate

    @property
    def latencies(self) -> list[float]:
        return [w.done - w.sent for w in self.writes if w.done]

    def late_ms(self, q: float) -> float:
        """Quantile ``q`` of how late the writes were sent after they were due."""
        return percentile_ms([w.sent - w.due for w in self.writes if w.sent], q)


def _run(ready, start, stop, results, database, layer_id, by, samples, rate, in_flight) -> None:
    """The writer process: once ready, dispatch on schedule until ``stop``, then send back
    every write."""
    import dataclasses

    from ioc.catalog.access import ADMIN
    from ioc.catalog.layers import load_catalog_sync
    from ioc.config import get_settings
    from ioc.db.connection import connect
    from layers.items_write import write

    settings = dataclasses.replace(get_settings(), database=database)
    conn = connect(database)
    try:
        layer = load_catalog_sync(conn).find(layer_id)
    finally:
        conn.close()
    if layer is None:
        raise SystemExit(f"bench writes: no layer {layer_id}")
    writes: list[Write] = []
    start.value = began = time.perf_counter()
    ready.set()

    def one(k: int, done: Write) -> None:
        sample = samples[k % len(samples)]
        value = samples[(k + 7) % len(samples)].category
        done.sent = time.perf_counter()
        try:
            body = {"properties": {by: value}}
            write(settings, layer, ADMIN, "update", body=body, feature_id=str(sample.fid))
            done.ok = True
        except Exception:  # noqa: BLE001 — a failed write is counted, not fatal
            done.ok = False
        done.done = time.perf_counter()

    with ThreadPoolExecutor(in_flight, thread_name_prefix="bench-write") as pool:
        k = 0
        while not stop.is_set():
            due = began + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                stop.wait(wait)
                continue
            writes.append(Write(due))
            pool.submit(one, k, writes[-1])
            k += 1
    results.put([(w.due, w.sent, w.done, w.ok) for w in writes])
