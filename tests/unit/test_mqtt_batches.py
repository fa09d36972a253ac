"""The MQTT bridge's message handling without a broker: broker URLs, topic filters, payloads
to feature lines, and batches that never carry an id twice (the feed refuses that)."""

from __future__ import annotations

import json
import re

import pytest

from ioc.errors import InvalidParameter
from layers.mqtt_batches import (
    Broker,
    batches,
    body_of,
    check_topic_filter,
    layer_of,
    lines_of,
    parse_broker,
)


def reading(sid: str, depth: int = 1) -> dict:
    return {
        "type": "Feature",
        "properties": {"sensor_id": sid, "depth_cm": depth},
        "geometry": {"type": "Point", "coordinates": [106.7, 10.78]},
    }


@pytest.mark.parametrize(
    ("url", "broker"),
    [
        ("mqtt://localhost", Broker("localhost", 1883)),
        ("mqtt://10.0.0.5:1884/", Broker("10.0.0.5", 1884)),
        ("mqtts://gw.example.vn", Broker("gw.example.vn", 8883, tls=True)),
        ("mqtt://u%40x:p%3Aw@h:2", Broker("h", 2, username="u@x", password="p:w")),
    ],
)
def test_broker_urls(url, broker):
    assert parse_broker(url) == broker
    assert "p:w" not in str(parse_broker(url))  # logs never show the password


@pytest.mark.parametrize(
    "url", ["http://h", "localhost:1883", "mqtt://", "mqtt://h:99999", "mqtt://h/x"]
)
def test_wrong_broker_urls(url):
    with pytest.raises(InvalidParameter, match="mqtt://host"):
        parse_broker(url)


@pytest.mark.parametrize("topic", ["ioc/+/features", "+", "city/+/#", "a/b/+/c"])
def test_topic_filters(topic):
    assert check_topic_filter(topic) == topic


@pytest.mark.parametrize("topic", ["ioc/#", "ioc/x+/f", "ioc/#/+", "ioc/a#/+"])
def test_wrong_topic_filters(topic):
    with pytest.raises(InvalidParameter, match=re.escape(f"'{topic}'")):
        check_topic_filter(topic)


def test_the_first_plus_level_names_the_layer():
    topics = ("ioc/+/features", "city/+/readings/#")
    assert layer_of(topics, "ioc/flood_sensors/features") == "flood_sensors"
    assert layer_of(topics, "city/traffic/readings/a/b") == "traffic"
    assert layer_of(topics, "city/traffic") is None
    assert layer_of(topics, "ioc/flood_sensors/other") is None
    assert layer_of(topics, "ioc//features") is None


def test_payload_forms():
    one = json.dumps(reading("A"), indent=2).encode()  # pretty-printed: one feature
    assert [json.loads(line.text) for line in lines_of("t", one)] == [reading("A")]

    collection = {"type": "FeatureCollection", "features": [reading("A"), reading("B")]}
    assert len(lines_of("t", json.dumps(collection).encode())) == 2

    ndjson = f"{json.dumps(reading('A'))}\n\n{{oops\n{json.dumps(reading('B'))}\n".encode()
    assert [line.text for line in lines_of("t", ndjson)][1] == "{oops"  # the feed says why

    seq = b"".join(b"\x1e" + json.dumps(reading(s)).encode() + b"\n" for s in "AB")  # RFC 8142
    assert [json.loads(line.text)["properties"]["sensor_id"] for line in lines_of("t", seq)] == [
        "A",
        "B",
    ]


@pytest.mark.parametrize(("payload", "reason"), [(b"\xff\xfe", "UTF-8"), (b" \n", "empty")])
def test_unreadable_payloads(payload, reason):
    with pytest.raises(ValueError, match=reason):
        lines_of("t", payload)


def test_batches_carry_each_id_once_and_keep_its_order():
    docs = [reading("A", 1), reading("B", 1), reading("A", 2), reading("A", 3), reading("C")]
    lines = [line for doc in docs for line in lines_of("t", json.dumps(doc).encode())]
    lines.append(lines_of("t", b"{broken")[0])

    def seen(line):
        if line.feature_id is None:
            return line.text
        return line.feature_id, json.loads(line.text)["properties"]["depth_cm"]

    got = [[seen(line) for line in b] for b in batches(lines, "sensor_id", 500)]
    assert got[0][:3] == [("A", 1), ("B", 1), ("C", 1)]
    assert got[0][3:] == ["{broken"]  # no id: first batch, the feed reports it
    assert got[1:] == [[("A", 2)], [("A", 3)]]


def test_batches_are_at_most_size_lines_and_number_lines_for_the_feed():
    lines = [lines_of("t", json.dumps(reading(str(i))).encode())[0] for i in range(7)]
    sized = batches(lines, "sensor_id", 3)
    assert [len(b) for b in sized] == [3, 3, 1]
    body = body_of(sized[1]).decode().splitlines()
    assert json.loads(body[1])["properties"]["sensor_id"] == "4"  # line 2 is batch[1]
    assert len(batches(lines, None, 500)) == 1  # without id_attribute every line is inserted
