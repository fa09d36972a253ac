"""The tile benchmark's live writes: feature writes at a fixed rate through ioc's API while
tiles are measured, and whether that rate was really reached.

Each write is due at ``start + k / rate`` and sent then by a dispatcher thread, whatever the
earlier ones take, on its own keep-alive connection from a pool of ``in_flight`` (a city's
sensors and operators do not wait for one another). Under tile load a PATCH takes about a
second on the shared 2-core machine, so ten in flight capped the rate at 6-8 a second; with
enough connections the rate holds as long as the server keeps up on average. What counts is
what was achieved: the writes answered 204 within the measured window, per second of it, and
how late they were sent. A run that did not reach ``rate`` is flagged by the report (its
"under writes" figures are then not the issue's condition).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from bench.common import percentile_ms
from bench.tilelist import Sample
from ioc.catalog.layers import Layer

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
    """``rate`` PATCHes a second of drawn features' style category (to another drawn
    feature's, so tiles and aggregates really change), from ``start()`` until ``stop()``."""

    def __init__(
        self,
        base: str,
        authorization: str,
        layer: Layer,
        samples: list[Sample],
        rate: float,
        in_flight: int,
    ) -> None:
        self.url = f"{base}/collections/{layer.id}/items"
        self.by = layer.style.get("by")
        self.samples, self.rate, self.in_flight = samples, rate, in_flight
        self.writes: list[Write] = []
        self.began = self.ended = 0.0
        self._client = httpx.Client(
            headers={"Authorization": authorization},
            timeout=60,
            limits=httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight),
        )
        self._pool = ThreadPoolExecutor(in_flight, thread_name_prefix="bench-write")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dispatch, name="bench-writes")

    def __enter__(self) -> Writer:
        self.began = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.ended = time.perf_counter()
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)  # writes in flight finish (they count only if in time)
        self._client.close()

    def _dispatch(self) -> None:
        k = 0
        while not self._stop.is_set():
            due = self.began + k / self.rate
            wait = due - time.perf_counter()
            if wait > 0:
                self._stop.wait(wait)
                continue
            write = Write(due)
            self.writes.append(write)
            self._pool.submit(self._write, k, write)
            k += 1

    def _write(self, k: int, write: Write) -> None:
        sample = self.samples[k % len(self.samples)]
        value = self.samples[(k + 7) % len(self.samples)].category
        write.sent = time.perf_counter()
        try:
            response = self._client.patch(
                f"{self.url}/{sample.fid}", json={"properties": {self.by: value}}
            )
            write.ok = response.status_code == 204
        except httpx.HTTPError:
            write.ok = False
        write.done = time.perf_counter()

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
