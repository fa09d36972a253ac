"""What the MQTT bridge does with messages before the feed takes them: the broker address,
topics to layers, payloads to feature lines, lines to upsert batches.

Pure functions (no broker, no database), tested alone in tests/unit/test_mqtt_batches.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ioc.errors import InvalidParameter

DEFAULT_TOPIC = "ioc/+/features"
PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class Broker:
    """Where the broker is; ``tls`` for ``mqtts://``. Credentials come from the URL."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:  # for logs: never the password
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str) -> Broker:
    """``mqtt://[user:password@]host[:port]`` (1883) or ``mqtts://…`` (TLS, 8883)."""
    wrong = InvalidParameter(
        f"The broker must be mqtt://host[:port] or mqtts://host[:port], not '{url}'.",
        parameter="broker",
    )
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        raise wrong from None
    if parts.scheme not in PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise wrong
    return Broker(
        host=parts.hostname,
        port=port or PORTS[parts.scheme],
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def check_topic_filter(topic: str) -> str:
    """A filter whose first ``+`` level names the layer (``ioc/+/features``); ``#`` only last."""
    levels = topic.split("/")
    if "+" not in levels:
        raise InvalidParameter(
            f"The topic '{topic}' has no '+' level to name the layer (e.g. {DEFAULT_TOPIC}).",
            parameter="topic",
        )
    bad = [lvl for lvl in levels if lvl not in ("+", "#") and ("+" in lvl or "#" in lvl)]
    if bad or "#" in levels[:-1]:
        raise InvalidParameter(
            f"The topic '{topic}' is not a valid MQTT filter ('+' and '#' stand alone, "
            "'#' only last).",
            parameter="topic",
        )
    return topic


def layer_of(topics: Iterable[str], topic: str) -> str | None:
    """The layer id a received topic names: its level at the first ``+`` of the first filter
    it matches; None when it matches none (or names an empty layer)."""
    got = topic.split("/")
    for pattern in topics:
        want = pattern.split("/")
        if _matches(want, got):
            layer = got[want.index("+")]
            return layer or None
    return None


def _matches(want: list[str], got: list[str]) -> bool:
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(got) or (level != "+" and level != got[i]):
            return False
    return len(want) == len(got)


@dataclass
class Line:
    """One feature line of one message, as the feed will read it."""

    topic: str
    text: str
    feature_id: Any = None  # the id_attribute value, when the line parses


def lines_of(topic: str, payload: bytes) -> list[Line]:
    """The feature lines of a payload: one GeoJSON Feature (pretty-printed or not), a
    FeatureCollection, or newline-delimited / RS-separated (RFC 8142) Features. Lines that do
    not parse are kept as they are: the feed reports them with their reason."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the payload is not UTF-8 text") from None
    if not text.strip():
        raise ValueError("the payload is empty")
    try:
        whole = json.loads(text)
    except ValueError:
        # Only \n and RS separate: str.splitlines would also cut at U+2028 inside a string.
        pieces = text.replace("\x1e", "\n").split("\n")
        return [Line(topic, p.strip()) for p in pieces if p.strip()]
    if isinstance(whole, dict) and whole.get("type") == "FeatureCollection":
        features = whole.get("features")
        docs = features if isinstance(features, list) else [whole]
    else:
        docs = [whole]
    return [Line(topic, json.dumps(doc, ensure_ascii=False)) for doc in docs]


def _feature_id(line: Line, id_attribute: str) -> Any:
    try:
        doc = json.loads(line.text)
        value = doc["properties"][id_attribute]
    except (ValueError, TypeError, KeyError):
        return None
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def batches(lines: list[Line], id_attribute: str | None, size: int) -> list[list[Line]]:
    """Lines of one layer in upsert batches of at most ``size``, in arrival order, each id at
    most once per batch: the feed refuses an id twice in one batch, and a sensor that reported
    twice within the batching window keeps both readings (the later one applied last)."""
    rounds: list[list[Line]] = []
    seen: dict[Any, int] = defaultdict(int)
    for line in lines:
        fid = _feature_id(line, id_attribute) if id_attribute else None
        line.feature_id = fid
        n = seen[fid] if fid is not None else 0
        if fid is not None:
            seen[fid] += 1
        while len(rounds) <= n:
            rounds.append([])
        rounds[n].append(line)
    return [r[i : i + size] for r in rounds for i in range(0, len(r), size)]


def body_of(batch: list[Line]) -> bytes:
    """The NDJSON body of a batch: line ``n`` (1-based, as the feed reports) is ``batch[n-1]``."""
    return "\n".join(line.text for line in batch).encode("utf-8") + b"\n"
