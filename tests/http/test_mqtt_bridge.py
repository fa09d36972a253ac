"""`ioc bridge mqtt` against a real mosquitto (started here on a free port, never the system
service) and the test database: readings published with paho-mqtt become items and change
events; bad messages are logged with their topic and reason while the good ones are applied;
the bridge reconnects by itself when the broker restarts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import paho.mqtt.client as mqtt
import psycopg2
import pytest

from ioc.catalog.keys import hash_key
from ioc.settings import PROJECT_ROOT
from tests.conftest import VENV_BIN, free_port, server_env
from tests.http.test_events import Listener
from tests.http.test_publish import SENSORS, _clean
from tests.http.test_transactions import feature
from tests.polling import wait_until

LAYER = "mq_sensors"
TOPIC = f"ioc/{LAYER}/features"
DEADLINE = 30.0  # a bound on waiting, not an assertion on speed


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if found is None:
        if os.environ.get("CI"):  # make test installs it
            pytest.fail("mosquitto is not installed")
        pytest.skip("mosquitto is not installed (make test installs it: apt-get install mosquitto)")
    return found


class Broker:
    """A mosquitto of our own on a free loopback port, with a generated configuration."""

    def __init__(self, folder: Path) -> None:
        self.binary, self.port = _mosquitto(), free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\n"
        )
        self.config.chmod(0o644)  # mosquitto started as root reads it as user mosquitto
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._listening, timeout=DEADLINE, message="mosquitto to listen")

    def _listening(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "mosquitto exited"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=DEADLINE)

    def publish(self, topic: str, payload: bytes | str) -> None:
        """Publish with QoS 1 and wait for the broker's acknowledgement."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        try:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=DEADLINE)
        finally:
            client.disconnect()
            client.loop_stop()


class BridgeProcess:
    """`ioc bridge mqtt` as a subprocess; its JSON log lines are collected as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "ioc"), "bridge", "mqtt", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.logs: list[dict] = []
        self.text: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.text.append(raw)
            if raw.startswith("{"):
                self.logs.append(json.loads(raw))

    def logged(self, msg: str, **fields) -> list[dict]:
        return [
            r
            for r in list(self.logs)
            if msg in r["msg"] and all(r.get(k) == v for k, v in fields.items())
        ]

    def wait_logged(self, msg: str, count: int = 1, **fields) -> list[dict]:
        return wait_until(
            lambda: len(self.logged(msg, **fields)) >= count and self.logged(msg, **fields),
            timeout=DEADLINE,
            message=lambda: (
                f"the bridge to log {msg!r} {fields} ×{count}; it said: " + "".join(self.text[-20:])
            ),
        )

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=DEADLINE)
        self._reader.join(DEADLINE)
        return code


class DatabaseProxy:
    """A TCP port in front of the test database: stopping it is a database outage for whoever
    connects through it (open connections are cut too), starting it again the recovery."""

    def __init__(self, db_settings) -> None:
        self.port, self.sockets, self.server = free_port(), [], None
        if db_settings.managed:  # the managed cluster listens on its Unix socket only
            self.target = str(db_settings.socket_dir / f".s.PGSQL.{db_settings.pg_port}")
            self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{db_settings.db_name}"
        else:
            parts = urlsplit(db_settings.dsn())
            if not parts.hostname or "host=" in parts.query:
                pytest.skip("the outage test needs a database reached by host:port or the cluster")
            self.target = (parts.hostname, parts.port or 5432)
            auth = parts.netloc.rpartition("@")[0]
            netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
            self.url = urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # stopped
                return
            family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
            upstream = socket.socket(family)
            upstream.connect(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
        self.server.close()
        for end in self.sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()
        self.sockets = []


@pytest.fixture(scope="module")
def publisher_key(make_key) -> str:
    return make_key("publisher", "construction")


@pytest.fixture(scope="module")
def layer(live_server, publisher_key, db_settings) -> Iterator[str]:
    _clean(db_settings, "mq")
    headers = {"Authorization": f"Bearer {publisher_key}"}
    doc = {**SENSORS, "id": LAYER}
    response = httpx.post(f"{live_server}/layers", json=doc, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    yield LAYER
    _clean(db_settings, "mq")


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    own = Broker(tmp_path)
    own.start()
    yield own
    own.stop()


@pytest.fixture
def bridge(broker, layer, publisher_key, db_settings) -> Iterator[BridgeProcess]:
    env = server_env(db_settings, IOC_MQTT_KEY=publisher_key, IOC_LOG_LEVEL="info")
    proc = BridgeProcess(env, "--broker", broker.url, "--topic", "ioc/+/features")
    proc.wait_logged("subscribed")
    yield proc
    if proc.proc.poll() is None:
        assert proc.stop() == 0


def other_department_layer(db_settings) -> str:
    with psycopg2.connect(db_settings.dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id FROM ioc.layers WHERE department <> 'construction' AND deleted_at IS NULL"
            " AND access = 'public' ORDER BY id LIMIT 1"
        )
        return cur.fetchone()[0]


def items(base: str) -> dict[str, dict]:
    response = httpx.get(f"{base}/collections/{LAYER}/items?limit=100", timeout=30)
    assert response.status_code == 200, response.text
    return {f["properties"]["sensor_id"]: f for f in response.json()["features"]}


def changes(base: str) -> list[dict]:
    response = httpx.get(f"{base}/collections/{LAYER}/changes?limit=1000", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["changes"]


def test_readings_become_items_and_events(live_server, broker, bridge, db_settings):
    stream = Listener(f"{live_server}/events?layers={LAYER}", 1).start_and_wait()
    ndjson = "\n".join(
        json.dumps(feature(sid, depth_cm=n)) for n, sid in ((10, "M-1"), (20, "M-2"))
    )
    broker.publish(TOPIC, ndjson)
    broker.publish(TOPIC, json.dumps(feature("M-3", depth_cm=30), indent=2))
    broker.publish(TOPIC, b"{not json")
    broker.publish(TOPIC, json.dumps(feature("M-4", colour="red")))
    broker.publish(TOPIC, b"\xff\xfe")
    broker.publish("ioc/mq_nowhere/features", json.dumps(feature("M-5")))
    foreign = other_department_layer(db_settings)
    broker.publish(f"ioc/{foreign}/features", json.dumps(feature("M-6")))

    found = wait_until(
        lambda: (got := items(live_server)).keys() >= {"M-1", "M-2", "M-3"} and got,
        timeout=DEADLINE,
        message=lambda: "the readings to become items; the bridge said: " + "".join(bridge.text),
    )
    assert {k: f["properties"]["depth_cm"] for k, f in found.items()} == {
        "M-1": 10,
        "M-2": 20,
        "M-3": 30,
    }
    (event,) = stream.result()
    assert event["layer"] == LAYER and event["op"] == "feed.upsert"
    written = {i for change in changes(live_server) for i in change["ids"]}
    assert {str(f["id"]) for f in found.values()} <= written

    refused = bridge.wait_logged("message refused", count=3, topic=TOPIC, layer=LAYER)
    reasons = " ".join(r["msg"] for r in refused)
    assert "not JSON" in reasons and "colour" in reasons and "not UTF-8" in reasons
    bridge.wait_logged("skipped: no such layer", topic="ioc/mq_nowhere/features")
    bridge.wait_logged("may not write", topic=f"ioc/{foreign}/features")


def test_a_sensor_that_reports_twice_in_a_batch_keeps_its_last_reading(live_server, broker, bridge):
    before = len(changes(live_server))
    payload = "\n".join(json.dumps(feature("M-7", depth_cm=d)) for d in (1, 2, 3))
    broker.publish(TOPIC, payload)  # one message: one batch, the same id three times
    wait_until(
        lambda: items(live_server).get("M-7", {}).get("properties", {}).get("depth_cm") == 3,
        timeout=DEADLINE,
        message="M-7 to read 3",
    )
    new = changes(live_server)[before:]
    assert [c["op"] for c in new] == ["feed.upsert"] * 3  # three readings, in their order
    assert len({c["ids"][0] for c in new}) == 1  # upserted: one feature
    assert not bridge.logged("message refused")


def test_the_bridge_reconnects_when_the_broker_restarts(live_server, broker, bridge):
    broker.stop()
    bridge.wait_logged("lost the broker")
    broker.start()  # same port
    bridge.wait_logged("subscribed", count=2)
    broker.publish(TOPIC, json.dumps(feature("M-8", depth_cm=8)))
    wait_until(
        lambda: "M-8" in items(live_server), timeout=DEADLINE, message="M-8 after the restart"
    )


def test_a_database_outage_loses_nothing(live_server, broker, layer, publisher_key, db_settings):
    proxy = DatabaseProxy(db_settings)
    proxy.start()
    env = server_env(db_settings, IOC_MQTT_KEY=publisher_key, DATABASE_URL=proxy.url)
    env.pop("IOC_DB_NAME", None)
    proc = BridgeProcess(env, "--broker", broker.url)
    try:
        proc.wait_logged("subscribed")
        broker.publish(TOPIC, json.dumps(feature("M-10", depth_cm=10)))
        wait_until(lambda: "M-10" in items(live_server), timeout=DEADLINE, message="M-10")

        proxy.stop()
        broker.publish(TOPIC, json.dumps(feature("M-11", depth_cm=11)))
        proc.wait_logged("database unavailable")
        assert "M-11" not in items(live_server)
        proxy.start()
        wait_until(
            lambda: "M-11" in items(live_server),
            timeout=DEADLINE * 2,  # the retry waits up to 2 s, then 4 s…
            message=lambda: "M-11 after the outage; the bridge said: " + "".join(proc.text[-10:]),
        )
    finally:
        assert proc.stop() == 0
        proxy.stop()


def test_a_revoked_key_stops_the_bridge(live_server, broker, layer, make_key, db_settings):
    key = make_key("publisher", "construction")
    env = server_env(db_settings, IOC_MQTT_KEY=key, IOC_CATALOG_CHECK_SECONDS="0")
    proc = BridgeProcess(env, "--broker", broker.url)
    proc.wait_logged("subscribed")
    with psycopg2.connect(db_settings.dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE ioc.api_keys SET revoked_at = now() WHERE key_hash = %s", (hash_key(key),)
        )
    broker.publish(TOPIC, json.dumps(feature("M-9")))
    assert proc.proc.wait(timeout=DEADLINE) == 1
    proc._reader.join(DEADLINE)
    assert "unknown or revoked" in "".join(proc.text)
    assert "M-9" not in items(live_server)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "http://x", "--key", "k"], "The broker must be mqtt://host"),
        (["--broker", "mqtt://x", "--key", "k", "--topic", "ioc/#"], "no '+' level"),
        (["--broker", "mqtt://127.0.0.1:1", "--key", "ioc_unknown"], "unknown or revoked"),
    ],
)
def test_wrong_start_is_one_sentence(db_settings, args, message):
    proc = subprocess.run(
        [str(VENV_BIN / "ioc"), "bridge", "mqtt", *args],
        cwd=PROJECT_ROOT,
        env=server_env(db_settings),
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
