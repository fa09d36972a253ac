"""Driving the scenario through the public write API, as a sensor gateway or the 1022 system
would: read each live layer's queryables and features, then write every tick's changes.

A layer with an ``id_attribute`` gets its changes as one feed batch (``POST …/items`` as
GeoJSON text sequence, upserted by that attribute, one transaction); a server without the feed,
or a layer without an id attribute, gets single writes (``PATCH`` of a known feature, ``POST``
of a new one). Nothing here touches the database: the simulator is one more HTTP client.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from ioc.errors import Forbidden, IocError, NotAuthenticated
from layers.simulation import LIVE_LAYERS, NEEDED_VALUES, Change, Feature, Scenario

FEED_TYPE = "application/geo+json-seq"  # RFC 8142: RS before each JSON text, LF after
PAGE = 1000
REPORTS_LOADED = 400  # open 1022 reports taken over by the simulated ward units
GONE_SECONDS = 15.0  # a server silent this long has stopped: so does the simulator


@dataclass
class Tally:
    """What the simulator wrote, per layer."""

    written: Counter[str] = field(default_factory=Counter)
    created: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    reasons: list[str] = field(default_factory=list)

    def fail(self, layer: str, reason: str, count: int = 1) -> None:
        self.failed[layer] += count
        if len(self.reasons) < 20:
            self.reasons.append(f"{layer}: {reason}")


class SimulationClient:
    """The HTTP side of ``ioc simulate``: one keep-alive client, one key."""

    def __init__(self, url: str, key: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(60, connect=5),
            transport=transport,
        )
        self.feed: dict[str, bool] = {}  # layer → the feed works (learnt on first batch)
        self.id_attribute: dict[str, str | None] = {}
        self.tally = Tally()
        self.warn: Callable[[str], None] = lambda _message: None
        self.demo_only = False
        self.refused: set[str] = set()

    def close(self) -> None:
        self.http.close()

    # --- reading -----------------------------------------------------------------------------

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self._send("GET", path, params=params)
        self._check(response, path)
        return response.json()

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code == 401:
            raise NotAuthenticated(
                f"The server refused the key ({_reason(response)}): create one with "
                "'ioc keys create --role admin'."
            )
        if response.status_code == 404:
            raise IocError(f"{what}: not found, or not readable with this key.")
        if response.status_code >= 400:
            raise IocError(f"{what} answered {response.status_code}: {_reason(response)}")

    def describe(self, layer: str) -> None:
        """Learn the layer's id attribute from the catalog, and check that its attributes
        offer the values the scenario writes (a manifest may have changed) and, with
        ``demo_only``, that the demo city made its data (never invent a real city's readings)."""
        doc = self._get(f"/catalog/layers/{layer}")
        if self.demo_only and not (doc.get("metadata") or {}).get("synthetic"):
            raise IocError(
                f"Layer '{layer}' holds data the demo city did not make: the simulator leaves "
                "it alone (give --key to feed it anyway)."
            )
        self.id_attribute[layer] = doc.get("id_attribute")
        if layer not in NEEDED_VALUES:
            return
        name, needed = NEEDED_VALUES[layer]
        attrs = {a.get("name"): a for a in doc.get("attributes", [])}
        offered = (attrs.get(name) or {}).get("values") or []
        missing = [v for v in needed if v not in offered]
        if missing:
            raise IocError(
                f"Layer '{layer}' does not offer the {name} values {', '.join(missing)} "
                "(its manifest changed): the simulator leaves it alone."
            )

    def features(self, layer: str) -> Iterator[Feature]:
        """The layer's features (the open ones of the 1022 reports, at most REPORTS_LOADED)."""
        id_attr = self.id_attribute.get(layer)
        params: dict[str, Any] = {"limit": PAGE}
        if layer == "reports_1022":
            params.update({"filter": "status IN ('mới','đang xử lý')", "limit": REPORTS_LOADED})
        doc = self._get(f"/collections/{layer}/items", **params)
        seen: set[str] = set()
        while True:
            for feat in doc.get("features", []):
                props, geom = feat.get("properties") or {}, feat.get("geometry")
                key = str(props.get(id_attr) if id_attr else feat["id"])
                if geom is None or key in seen or (id_attr and props.get(id_attr) is None):
                    continue  # duplicates of an id attribute: the first one is driven
                seen.add(key)
                yield Feature(key, props, geom, str(feat["id"]))
            nxt = next((lk["href"] for lk in doc.get("links", []) if lk["rel"] == "next"), None)
            if nxt is None or layer == "reports_1022":
                return
            response = self._send("GET", nxt)
            self._check(response, nxt)
            doc = response.json()

    def load(self, scenario: Scenario, layers: tuple[str, ...] = LIVE_LAYERS) -> list[str]:
        """Read the layers into the scenario; the ones this key may not read are left out
        (with a warning). NotAuthenticated for a refused key."""
        loaded = []
        for layer in layers:
            try:
                self.describe(layer)
                scenario.add(layer, list(self.features(layer)))
            except NotAuthenticated:
                raise
            except IocError as exc:
                self.warn(exc.message)
                continue
            loaded.append(layer)
        return loaded

    # --- writing -----------------------------------------------------------------------------

    def write(self, changes: list[Change], stop: Callable[[], bool] = lambda: False) -> None:
        """Write one tick's changes: a feed batch per layer that takes them, then the single
        writes taking turns between the layers (a slow server still sees every layer move),
        until ``stop`` says the time is up."""
        by_layer: dict[str, list[Change]] = {}
        for change in changes:
            if change.layer not in self.refused:
                by_layer.setdefault(change.layer, []).append(change)
        singles = []
        for layer, batch in by_layer.items():
            if self.id_attribute.get(layer) and self.feed.get(layer, True):
                if self._feed(layer, batch):
                    continue
            singles.append(batch)
        for turn in itertools.zip_longest(*singles):
            for change in turn:
                if stop():
                    return
                if change is not None and change.layer not in self.refused:
                    self._single(change.layer, change)

    def _feed(self, layer: str, batch: list[Change]) -> bool:
        """One feed batch; False when the server has no feed ingest (single writes then)."""
        body = b"".join(
            b"\x1e" + json.dumps(_geojson(c.feature), ensure_ascii=False).encode() + b"\n"
            for c in batch
        )
        response = self._send(
            "POST", f"/collections/{layer}/items", content=body, headers={"Content-Type": FEED_TYPE}
        )
        report = _json(response)
        if response.status_code == 200 and isinstance(report, dict) and "applied" in report:
            self.feed[layer] = True
            self.tally.written[layer] += int(report.get("updated", 0))
            self.tally.created[layer] += int(report.get("created", 0))
            for failure in report.get("failed", []):
                self.tally.fail(layer, f"line {failure.get('line')}: {failure.get('reason')}")
            for change in batch:
                change.new = False
            return True
        if response.status_code in (401, 403, 429) or self.feed.get(layer):
            self._refused(layer, response, len(batch))
            return True  # a refusal of this batch, not a server without the feed
        self.feed[layer] = False
        self.warn(
            f"{layer}: the server took no feed batch ({response.status_code}: "
            f"{_reason(response)}); writing features one by one."
        )
        return False

    def _single(self, layer: str, change: Change) -> None:
        feat = change.feature
        doc = _geojson(feat)
        if feat.feature_id is None:
            response = self._send("POST", f"/collections/{layer}/items", json=doc)
            if response.status_code == 201:
                feat.feature_id = str(response.json()["ids"][0])
                self.tally.created[layer] += 1
                return
        else:
            patch = {"properties": doc["properties"]}  # the geometry does not move
            path = f"/collections/{layer}/items/{quote(feat.feature_id, safe='')}"
            response = self._send("PATCH", path, json=patch)
            if response.status_code == 204:
                self.tally.written[layer] += 1
                return
        self._refused(layer, response, 1)

    def _refused(self, layer: str, response: httpx.Response, count: int) -> None:
        if response.status_code == 401:
            self._check(response, layer)
        if response.status_code == 403:
            # Another department's layer: leave it, feed the others.
            self.refused.add(layer)
            self.warn(f"{layer}: this key may not write it ({_reason(response)}); left alone.")
            if self.refused >= set(self.id_attribute):
                raise Forbidden("This key may write none of the live layers: nothing to simulate.")
            return
        self.tally.fail(layer, f"{response.status_code} {_reason(response)}", count)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; waits out a 429's Retry-After once and rides out a server restart for
        GONE_SECONDS (then the server is taken to have stopped)."""
        deadline = time.monotonic() + GONE_SECONDS
        while True:
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    raise IocError(
                        f"The server at {self.http.base_url} does not answer ({exc})."
                    ) from None
                time.sleep(0.5)
                continue
            if response.status_code == 429 and time.monotonic() < deadline:
                time.sleep(min(10.0, float(response.headers.get("Retry-After", "1") or 1)))
                continue
            return response


def _geojson(feat: Feature) -> dict[str, Any]:
    return {"type": "Feature", "properties": feat.properties, "geometry": feat.geometry}


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reason(response: httpx.Response) -> str:
    """The server's one sentence (``detail`` of its problem document), or the status text."""
    doc = _json(response)
    if isinstance(doc, dict):
        for key in ("detail", "description", "title", "message"):
            if isinstance(doc.get(key), str):
                return doc[key]
    return response.reason_phrase or str(response.status_code)
