"""``ioc bridge mqtt``: subscribe to an MQTT broker and upsert what sensor gateways publish.

The topic names the layer (``ioc/<layer_id>/features``), the payload is a GeoJSON Feature or
NDJSON lines. Messages are batched (``batch_size`` lines or ``batch_seconds``) and written
through the feed (:func:`layers.feed.ingest`) with the key's principal: the same access rules,
validation, versions, change events and audit as ``POST /collections/{id}/items``.

paho's network thread only queues messages; the calling thread batches and writes, so a slow
database never stalls the keep-alive with the broker. paho reconnects by itself (and retries a
first connection); subscriptions are made in ``on_connect`` so they survive a reconnect.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg2

from ioc.catalog.access import Principal, can_write
from ioc.catalog.keys import resolve_key_sync
from ioc.catalog.layers import Catalog, Layer, load_catalog_sync
from ioc.db.connection import connection
from ioc.errors import DatabaseUnavailable, IocError, NotAuthenticated
from layers import feed
from layers.mqtt_batches import DEFAULT_TOPIC, Broker, Line, batches, body_of, layer_of, lines_of
from layers.publishing import PublishingSettings

log = logging.getLogger("ioc.bridge.mqtt")
MEDIA_TYPE = "application/x-ndjson"
RETRY_MAX_SECONDS = 30.0
STATS_SECONDS = 60.0
# Errors that mean "the database is not there right now": retried, never skipped.
OUTAGE = (DatabaseUnavailable, psycopg2.OperationalError, psycopg2.InterfaceError)


@dataclass(frozen=True)
class BridgeOptions:
    """How to reach the broker and how to batch."""

    broker: Broker
    topics: tuple[str, ...] = (DEFAULT_TOPIC,)
    qos: int = 1
    client_id: str = ""  # '' = a new clean session each start; else a persistent session
    batch_size: int = 500
    batch_seconds: float = 0.2
    catalog_seconds: float = 2.0  # how old the bridge's catalog and key check may get
    queue_max: int = 100_000


@dataclass
class Stats:
    """Counts since start (logged every minute and at exit): messages taken from the broker,
    then feature lines applied, refused (``failed``) and skipped; messages ``dropped``."""

    messages: int = 0
    applied: int = 0
    failed: int = 0
    skipped: int = 0
    dropped: int = 0

    def document(self) -> dict[str, int]:
        return dict(vars(self))


class Bridge:
    """One subscription feeding the layers its topics name; ``run`` until ``stop`` is set."""

    def __init__(self, settings: PublishingSettings, key: str, options: BridgeOptions) -> None:
        self.settings, self.key, self.options = settings, key, options
        self.stats = Stats()
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(options.queue_max)
        self._catalog = Catalog()
        self._principal: Principal | None = None
        self._checked = float("-inf")
        self._refresh(force=True)

    # -- the key and the catalog, re-read every catalog_seconds ------------------------------
    def _refresh(self, force: bool = False) -> Principal:
        if force or time.monotonic() - self._checked >= self.options.catalog_seconds:
            with connection(self.settings.database) as conn:
                principal = resolve_key_sync(conn, self.key)
                if principal is None:
                    raise NotAuthenticated(
                        "The bridge's key is unknown or revoked: create one with "
                        "'ioc keys create --role publisher --department D'."
                    )
                self._principal, self._catalog = principal, load_catalog_sync(conn)
            self._checked = time.monotonic()
        assert self._principal is not None
        return self._principal

    # -- the broker -------------------------------------------------------------------------
    def _client(self) -> mqtt.Client:
        opts = self.options
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=opts.client_id,
            clean_session=not opts.client_id,
        )
        if opts.broker.username:
            client.username_pw_set(opts.broker.username, opts.broker.password)
        if opts.broker.tls:
            client.tls_set()
        client.reconnect_delay_set(1, int(RETRY_MAX_SECONDS))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, _userdata, _flags, reason, _props) -> None:
        if reason.is_failure:
            log.error("the broker refused the connection: %s", reason, extra=self._where())
            return
        log.info("connected to the broker", extra=self._where())
        client.subscribe([(topic, self.options.qos) for topic in self.options.topics])

    def _on_connect_fail(self, _client, _userdata) -> None:
        log.warning("cannot reach the broker; retrying", extra=self._where())

    def _on_disconnect(self, _client, _userdata, _flags, reason, _props) -> None:
        if reason.value != 0:
            log.warning("lost the broker (%s); reconnecting", reason, extra=self._where())

    def _on_subscribe(self, _client, _userdata, _mid, reasons, _props) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("the broker refused a subscription: %s", ", ".join(refused))
        else:
            log.info("subscribed", extra={"topics": list(self.options.topics)})

    def _on_message(self, _client, _userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:  # blocking here would stall paho's keep-alive and lose the broker
            self.stats.dropped += 1
            if self.stats.dropped % 1000 == 1:
                log.error("the database is not keeping up: %d messages dropped", self.stats.dropped)

    def _where(self) -> dict[str, str]:
        return {"broker": str(self.options.broker)}

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect, then batch and write until ``stop``; the messages already received are
        written before returning."""
        client = self._client()
        client.connect_async(self.options.broker.host, self.options.broker.port, keepalive=30)
        client.loop_start()
        last_stats = time.monotonic()
        try:
            while not stop.is_set():
                self._write(self._collect(), stop)
                if time.monotonic() - last_stats >= STATS_SECONDS:
                    log.info("bridge statistics", extra=self.stats.document())
                    last_stats = time.monotonic()
        finally:  # no new messages from here on
            client.disconnect()
            client.loop_stop()
        while not self._inbox.empty():
            self._write(self._collect(), None)
        log.info("bridge stopped", extra=self.stats.document())

    def _collect(self) -> list[Line]:
        """The lines of the messages that arrive within ``batch_seconds`` of the first one (or
        until ``batch_size`` lines); empty when nothing came for half a second."""
        lines: list[Line] = []
        deadline: float | None = None
        while len(lines) < self.options.batch_size:
            wait = 0.5 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                topic, payload = self._inbox.get(timeout=wait)
            except queue.Empty:
                break
            self.stats.messages += 1
            deadline = deadline or time.monotonic() + self.options.batch_seconds
            try:
                lines.extend(lines_of(topic, payload))
            except ValueError as exc:
                self.stats.failed += 1
                self._bad(topic, str(exc), layer_of(self.options.topics, topic))
        return lines

    def _bad(self, topic: str, reason: str, layer: str | None = None) -> None:
        log.warning("message refused: %s", reason, extra={"topic": topic, "layer": layer})

    def _write(self, lines: list[Line], stop: threading.Event | None) -> None:
        """Write the lines layer by layer; a database outage is retried (with back-off) from
        the first unwritten batch, so that nothing received is lost; a revoked key stops the
        bridge; anything else is logged and skipped."""
        by_layer: dict[str, list[Line]] = defaultdict(list)
        for line in lines:
            layer_id = layer_of(self.options.topics, line.topic)
            if layer_id is None:
                self._skip([line], "the topic names no layer", None)
            else:
                by_layer[layer_id].append(line)
        delay = 1.0
        pending = list(by_layer.items())
        while pending:
            layer_id, layer_lines = pending[0]
            try:
                self._write_layer(layer_id, layer_lines)
                pending.pop(0)
                delay = 1.0
            except NotAuthenticated:
                raise
            except psycopg2.extensions.QueryCanceledError:  # an OperationalError, but no outage
                self._skip(pending.pop(0)[1], "the batch ran past the statement timeout", layer_id)
            except OUTAGE as exc:
                log.error("database unavailable (%s); retrying in %.0f s", exc, delay)
                if stop is None or stop.wait(delay):
                    lost = sum(len(v) for _, v in pending)
                    log.error("stopping with %d unwritten lines", lost)
                    return
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            except Exception:  # a bug must not stop the city's sensors: log it, go on
                log.exception("lines skipped after an unexpected error", extra={"layer": layer_id})
                self._skip(pending.pop(0)[1], "unexpected error (logged)", layer_id)

    def _write_layer(self, layer_id: str, lines: list[Line]) -> None:
        principal = self._refresh()
        layer = self._catalog.find(layer_id)
        if layer is None or not can_write(principal, layer):
            reason = "no such layer" if layer is None else "the bridge's key may not write it"
            self._skip(lines, reason, layer_id)
            return
        for batch in batches(lines, layer.id_attribute, self.options.batch_size):
            self._ingest(principal, layer, batch)
            written = {id(line) for line in batch}  # a retry starts after this batch
            lines[:] = [line for line in lines if id(line) not in written]

    def _ingest(self, principal: Principal, layer: Layer, batch: list[Line]) -> None:
        started = time.monotonic()
        try:
            report = feed.ingest(
                self.settings, layer, principal, body_of(batch), media_type=MEDIA_TYPE
            )
        except OUTAGE:
            raise
        except IocError as exc:  # the whole batch refused (layer gone, rights changed…)
            self._skip(batch, exc.message, layer.id)
            return
        self.stats.applied += report.applied
        self.stats.failed += report.received - report.applied
        for failure in report.failed:  # the first MAX_FAILED of the batch
            line = batch[failure["line"] - 1]
            self._bad(line.topic, failure["reason"], layer.id)
        log.debug(
            "batch written",
            extra={
                "layer": layer.id,
                "lines": len(batch),
                "version": report.version,
                "ms": round((time.monotonic() - started) * 1000),
                "queued": self._inbox.qsize(),
            },
        )

    def _skip(self, lines: list[Line], reason: str, layer_id: str | None) -> None:
        self.stats.skipped += len(lines)
        for topic in sorted({line.topic for line in lines}):
            count = sum(1 for line in lines if line.topic == topic)
            log.warning(
                "%d line(s) skipped: %s",
                count,
                reason,
                extra={"topic": topic, "layer": layer_id},
            )
