"""Change events through a real `ioc serve`: an SSE client written with httpx streaming sees
the writes of a real publisher, never a hidden layer's, and resumes with Last-Event-ID (also
across a server restart); /changes gives the same as JSON; a refused write records nothing."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from ioc.events.log import record_event
from ioc.settings import PROJECT_ROOT
from tests.conftest import VENV_BIN, free_port, server_env, wait_ready
from tests.fixtures import uploads
from tests.http.test_publish import SENSORS, _clean
from tests.http.test_transactions import feature
from tests.polling import wait_until

PUBLIC, HIDDEN = "ev_public", "ev_hidden"
DEADLINE = 30.0  # a bound on waiting, not an assertion on speed


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture(scope="module")
def layers(live_server, publisher, db_settings):
    _clean(db_settings, "ev")
    for layer_id, access in ((PUBLIC, "public"), (HIDDEN, "restricted")):
        doc = {**SENSORS, "id": layer_id, "access": access}
        response = httpx.post(f"{live_server}/layers", json=doc, headers=publisher, timeout=30)
        assert response.status_code == 201, response.text
    yield
    _clean(db_settings, "ev")


def post(base, headers, layer, body):
    response = httpx.post(
        f"{base}/collections/{layer}/items", json=body, headers=headers, timeout=30
    )
    return response


def created(base, headers, layer, body) -> str:
    response = post(base, headers, layer, body)
    assert response.status_code == 201, response.text
    return response.json()["ids"][0]


class Listener(threading.Thread):
    """An SSE client: reads `id:`/`event:`/`data:` lines until ``want`` events or the deadline."""

    def __init__(
        self, url: str, want: int, headers: dict[str, str] | None = None, deadline=DEADLINE
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.want, self.headers = url, want, headers or {}
        self.deadline = deadline
        self.events: list[dict] = []
        self.connected = threading.Event()
        self.status: int | None = None

    def run(self) -> None:
        end = time.monotonic() + self.deadline
        current: dict = {}
        try:
            with httpx.stream(
                "GET", self.url, headers=self.headers, timeout=httpx.Timeout(5, read=DEADLINE)
            ) as response:
                self.status = response.status_code
                self.connected.set()
                for line in response.iter_lines():
                    if line == "":
                        if current.get("event") == "change":
                            self.events.append(current)
                        current = {}
                        if len(self.events) >= self.want or time.monotonic() > end:
                            return
                    elif not line.startswith(":") and ":" in line:
                        key, value = line.split(":", 1)
                        current[key] = value.removeprefix(" ")
        finally:
            self.connected.set()

    def start_and_wait(self) -> Listener:
        self.start()
        assert self.connected.wait(DEADLINE), "the stream did not open"
        assert self.status == 200
        return self

    def result(self) -> list[dict]:
        self.join(self.deadline + 5)
        return [{"id": int(e["id"]), **json.loads(e["data"])} for e in self.events]


def latest(base, headers, layer) -> int:
    """The layer's newest event id, paging to the end (a reused test database may hold more
    than a page of the layer's events: the first page's last id is not the newest)."""
    since = 0
    while True:
        url = f"{base}/collections/{layer}/changes?since={since}&limit=1000"
        response = httpx.get(url, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["changes"]:
            return page["last"]
        since = page["last"]


def test_a_write_reaches_a_live_stream(live_server, layers, publisher):
    listener = Listener(f"{live_server}/events?layers={PUBLIC}", 1).start_and_wait()
    fid = created(live_server, publisher, PUBLIC, feature())
    (event,) = listener.result()
    assert (event["layer"], event["op"], event["ids"]) == (PUBLIC, "item.create", [fid])
    assert event["bbox"] == pytest.approx([106.6990, 10.7798, 106.6990, 10.7798])

    patched = httpx.patch(
        f"{live_server}/collections/{PUBLIC}/items/{fid}",
        json={"properties": {"depth_cm": 9}},
        headers=publisher,
    )
    assert patched.status_code == 204, patched.text
    changes = httpx.get(f"{live_server}/collections/{PUBLIC}/changes?since={event['id']}")
    (update,) = changes.json()["changes"]
    assert (update["op"], update["ids"], update["version"]) == (
        "item.update",
        [fid],
        event["version"] + 1,
    )


def test_a_hidden_layer_never_reaches_anonymous(live_server, layers, publisher):
    listener = Listener(f"{live_server}/events", 1).start_and_wait()
    hidden = created(live_server, publisher, HIDDEN, feature("H-1"))
    fid = created(live_server, publisher, PUBLIC, feature("P-1"))
    got = listener.result()
    assert [(e["layer"], e["ids"]) for e in got] == [(PUBLIC, [fid])]
    # Asking for it by name is the same 404 as elsewhere.
    assert httpx.get(f"{live_server}/events?layers={HIDDEN}").status_code == 404
    assert httpx.get(f"{live_server}/collections/{HIDDEN}/changes").status_code == 404
    # Its publisher sees it.
    mine = httpx.get(f"{live_server}/collections/{HIDDEN}/changes", headers=publisher)
    assert [e["ids"] for e in mine.json()["changes"]] == [[hidden]]


def test_resume_with_last_event_id(live_server, layers, publisher):
    since = latest(live_server, publisher, PUBLIC)
    first = Listener(f"{live_server}/events?layers={PUBLIC}&since={since}", 1).start_and_wait()
    created(live_server, publisher, PUBLIC, feature("R-1"))
    (seen,) = first.result()  # the listener disconnected after one event
    two = [created(live_server, publisher, PUBLIC, feature(f"R-{n}")) for n in (2, 3)]
    again = Listener(
        f"{live_server}/events?layers={PUBLIC}", 2, {"Last-Event-ID": str(seen["id"])}
    ).start_and_wait()
    assert [e["ids"] for e in again.result()] == [[two[0]], [two[1]]]


def first_message(url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """The first message of a stream (pings and comments skipped), then it is closed."""
    fields: dict[str, str] = {}
    with httpx.stream("GET", url, headers=headers or {}, timeout=DEADLINE) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line == "" and fields:
                return fields
            if line and not line.startswith(":") and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.removeprefix(" ")
    raise AssertionError("the stream ended before its first message")


def test_a_fresh_stream_opens_with_where_to_resume(live_server, layers, publisher):
    """`event: ready`: its id is the newest event of the layers the caller may read, never a
    hidden layer's newer one; resuming there gives the next write, and nothing hidden."""
    created(live_server, publisher, PUBLIC, feature("F-1"))
    public = latest(live_server, publisher, PUBLIC)
    created(live_server, publisher, HIDDEN, feature("F-2"))
    hidden = latest(live_server, publisher, HIDDEN)
    assert hidden > public
    anonymous = first_message(f"{live_server}/events")
    assert anonymous["event"] == "ready"
    assert int(anonymous["id"]) == json.loads(anonymous["data"])["last_event_id"] == public
    assert int(first_message(f"{live_server}/events", publisher)["id"]) == hidden
    assert int(first_message(f"{live_server}/events?layers={HIDDEN}", publisher)["id"]) == hidden
    # A stream that resumes has its id already: no ready message, the missed write first.
    fid = created(live_server, publisher, PUBLIC, feature("F-3"))
    resumed = first_message(f"{live_server}/events", {"Last-Event-ID": anonymous["id"]})
    assert resumed["event"] == "change" and json.loads(resumed["data"])["ids"] == [fid]


def test_a_refused_write_records_no_event(live_server, layers, publisher):
    since = latest(live_server, publisher, PUBLIC)
    refused = post(live_server, publisher, PUBLIC, feature("X-1", 2.35, 48.85))  # Paris
    assert refused.status_code == 422, refused.text
    fid = created(live_server, publisher, PUBLIC, feature("OK-1"))
    page = httpx.get(f"{live_server}/collections/{PUBLIC}/changes?since={since}").json()
    assert [(e["op"], e["ids"]) for e in page["changes"]] == [("item.create", [fid])]


def test_changes_pages_with_next(live_server, layers, publisher):
    since = latest(live_server, publisher, PUBLIC)
    ids = [created(live_server, publisher, PUBLIC, feature(f"N-{n}")) for n in range(3)]
    first = httpx.get(f"{live_server}/collections/{PUBLIC}/changes?since={since}&limit=2").json()
    nxt = next(link["href"] for link in first["links"] if link["rel"] == "next")
    second = httpx.get(nxt).json()
    assert [e["ids"][0] for e in first["changes"] + second["changes"]] == ids
    assert not [link for link in second["links"] if link["rel"] == "next"]
    bad = httpx.get(f"{live_server}/events?layers={PUBLIC}", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400


def serve(db_settings, port: int, **env: str) -> subprocess.Popen:
    """Another `ioc serve` on the test database, ready."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "ioc"), "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=server_env(db_settings, IOC_LOG_LEVEL="warning", **env),
    )
    wait_ready(f"http://127.0.0.1:{port}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=20)


def test_resume_across_a_server_restart(db_settings, layers, live_server, publisher):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(db_settings, port)
    try:
        since = latest(url, publisher, PUBLIC)
        stop(proc)
        # Written through the other server while this one is down.
        missed = [created(live_server, publisher, PUBLIC, feature(f"S-{n}")) for n in (1, 2)]
        proc = serve(db_settings, port)
        back = Listener(
            f"{url}/events?layers={PUBLIC}", 2, {"Last-Event-ID": str(since)}
        ).start_and_wait()
        assert [e["ids"] for e in back.result()] == [[missed[0]], [missed[1]]]
    finally:
        stop(proc)


def test_another_process_hears_a_write_at_once(db_settings, layers, live_server, publisher):
    """Its own catalog check is an hour away: only the event can make it reload."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(db_settings, port, IOC_CATALOG_CHECK_SECONDS="3600")
    try:

        def version() -> int:
            return httpx.get(f"{url}/catalog/layers/{PUBLIC}").json()["version"]

        before = version()
        response = post(live_server, publisher, PUBLIC, feature("O-1"))
        assert response.status_code == 201, response.text
        after = response.json()["version"]
        assert after > before
        wait_until(lambda: version() == after, timeout=DEADLINE, message="the other process")
    finally:
        stop(proc)


def test_publish_restore_and_delete_record_events(live_server, layers, publisher, db):
    layer = "ev_whole"
    made = httpx.post(f"{live_server}/layers", json={**SENSORS, "id": layer}, headers=publisher)
    assert made.status_code == 201, made.text
    url = f"{live_server}/layers/{layer}"
    listener = Listener(f"{live_server}/events?layers={layer}", 3, publisher).start_and_wait()
    data = {"params": {"filename": "s.geojson"}, "headers": publisher, "timeout": 60}
    replaced = httpx.put(f"{url}/data", content=uploads.sensors_geojson(), **data)
    assert replaced.status_code == 200, replaced.text
    more = uploads.sensors_geojson([("S-010", 106.70, 10.78, 3)])
    assert httpx.post(f"{url}/data", content=more, **data).status_code == 200
    version = replaced.json()["version"]
    restored = httpx.post(f"{url}/versions/{version}/restore", headers=publisher, timeout=60)
    assert restored.status_code == 200, restored.text
    got = listener.result()
    assert [(e["op"], e["ids"], e["count"]) for e in got] == [
        ("layer.replace", None, 4),
        ("layer.append", None, 5),
        ("layer.restore", None, 4),
    ]
    assert [e["version"] for e in got] == [version, version + 1, version + 2]
    assert httpx.delete(url, headers=publisher).status_code == 204
    with db.cursor() as cur:  # recorded; no stream shows a deleted layer's events any more
        cur.execute("SELECT op FROM ioc.events WHERE layer_id = %s ORDER BY id DESC", (layer,))
        assert cur.fetchone() == ("layer.delete",)
        # The deletion, its event and its audit row were written by one transaction.
        cur.execute(
            "SELECT (SELECT xmin::text FROM ioc.layers WHERE id = %(l)s),"
            " (SELECT xmin::text FROM ioc.events WHERE layer_id = %(l)s AND op = 'layer.delete'),"
            " (SELECT xmin::text FROM ioc.audit WHERE layer_id = %(l)s"
            "  AND action = 'layer.delete')",
            {"l": layer},
        )
        registry_tx, event_tx, audit_tx = cur.fetchone()
    db.rollback()
    assert registry_tx == event_tx == audit_tx


LISTENERS = (
    "SELECT {} FROM pg_stat_activity"
    " WHERE application_name = 'ioc-events' AND datname = current_database()"
)


def test_a_lost_listen_connection_is_replaced(live_server, layers, publisher, db):
    def listeners(what: str = "count(*)") -> int:
        with db.cursor() as cur:  # every LISTEN of this test database (the live server's too)
            cur.execute(LISTENERS.format(what))
            (found,) = cur.fetchone()
        db.rollback()
        return found

    listener = Listener(f"{live_server}/events?layers={PUBLIC}", 1).start_and_wait()
    assert listeners("count(pg_terminate_backend(pid))") >= 1
    wait_until(lambda: listeners() >= 1, timeout=DEADLINE, message="the LISTEN to come back")
    fid = created(live_server, publisher, PUBLIC, feature("L-1"))
    assert [e["ids"] for e in listener.result()] == [[fid]]


def test_asyncapi_is_linked_from_the_landing_page(live_server):
    landing = httpx.get(f"{live_server}/?f=json").json()
    href = next(link["href"] for link in landing["links"] if link["href"].endswith("asyncapi.json"))
    doc = httpx.get(href).json()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["changes"]["address"] == "/events"


BUFFER = 20  # the slow client's server may hold this many events for it
EVENT_BYTES = 6000  # an event of 400 ids as SSE, at least
BURST_DEADLINE = 180.0  # megabytes of events on a busy machine: a bound, not a speed


def burst() -> int:
    """Events enough to pass every buffer between the stream and a client that does not read:
    the kernel's largest send buffer (tcp_wmem), asyncio's 64 kB and the client's own, twice."""
    largest = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return 2 * (largest + (64 << 10) + (64 << 10)) // EVENT_BYTES + BUFFER


def record(db, layer: str, n: int) -> list[int]:
    """``n`` events of ``layer`` recorded as a writer records them (one transaction)."""
    with db.cursor() as cur:
        made = [
            record_event(
                cur, layer, "item.update", None, [f"F-{i:05d}-{j:03d}" for j in range(400)]
            )
            for i in range(n)
        ]
    db.commit()
    return made


READER = """import json, sys
from tests.http.test_events import Listener
listener = Listener(sys.argv[1], int(sys.argv[2]), deadline=float(sys.argv[3])).start_and_wait()
print("connected", flush=True)
print(json.dumps([e["id"] for e in listener.result()]))
"""


def reader(url: str, n: int) -> subprocess.Popen:
    """A client that reads ``n`` events, in a process of its own: a thread of this one shares
    the GIL with whatever else runs here (e.g. an in-process app of an earlier test module
    taking in the same burst), and a reader slowed down so falls behind too (it did once)."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c", READER, url, str(n), str(BURST_DEADLINE)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
    return proc


def parse_sse(text: str) -> list[dict[str, str]]:
    """The messages of an SSE body (comments and pings left out)."""
    messages = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if line and not line.startswith(":") and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.removeprefix(" ")
        if fields:
            messages.append(fields)
    return messages


def test_a_client_that_does_not_read_is_told_where_to_resume(db_settings, layers, db, publisher):
    port = free_port()
    # No catalog check in the streams (an hour away): the reading client's stream then never
    # waits on the database between two events, so only the one that does not read falls behind.
    proc = serve(
        db_settings, port, IOC_EVENTS_CLIENT_BUFFER=str(BUFFER), IOC_CATALOG_CHECK_SECONDS="3600"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        since = latest(url, publisher, PUBLIC)
        path = f"/events?layers={PUBLIC}&since={since}"
        # The slow client: a small receive buffer, and it reads nothing but the headers.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(DEADLINE)  # a bound on waiting, not an assertion on speed
        sock.connect(("127.0.0.1", port))
        slow = http.client.HTTPConnection("127.0.0.1", port)
        slow.sock = sock
        slow.request("GET", path, headers={"Connection": "close"})
        response = slow.getresponse()
        assert response.status == 200
        # A client that reads: once it has the last event, every subscriber was offered all.
        n = burst()
        fast = reader(f"{url}{path}", n)
        made = record(db, PUBLIC, n)
        out, _ = fast.communicate(timeout=BURST_DEADLINE + DEADLINE)
        assert json.loads(out) == made
        # The slow one now reads: what was sent before it fell behind, then where to resume.
        messages = parse_sse(response.read().decode())
        slow.close()
        *changes, last = messages
        assert all(m["event"] == "change" for m in changes)
        got = [int(m["id"]) for m in changes]
        assert last["event"] == "resume"
        resume = int(last["id"])
        assert json.loads(last["data"])["last_event_id"] == resume
        assert got == made[: len(got)] and resume == (got[-1] if got else since) < made[-1]
        rest = Listener(
            f"{url}/events?layers={PUBLIC}",
            len(made) - len(got),
            {"Last-Event-ID": str(resume)},
            deadline=BURST_DEADLINE,
        ).start_and_wait()
        assert got + [e["id"] for e in rest.result()] == made  # every event, exactly once
    finally:
        stop(proc)
