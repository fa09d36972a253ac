"""What one request may cost: bodies over their route's limit are refused while they are read
(over real HTTP: a live ``ioc serve``, raw sockets), and an export ends by its time bound (the
real app driven as raw ASGI, with a client that stops reading)."""

from __future__ import annotations

import asyncio
import json
import select
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ioc.config import Settings
from ioc.settings import FeatureSettings
from tests.http.conftest import POINTS

MIB = 1 << 20


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=60)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of an answer with a Content-Length (or read to EOF)."""
    sock.setblocking(True)
    sock.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        body += part
    return int(lines[0].split()[1]), headers, body


def send_chunked(
    url: str, path: str, total: int, content_type: str
) -> tuple[int, dict, bytes, int]:
    """POST ``total`` bytes chunked, 64 KiB at a time, stopping as soon as an answer arrives;
    (status, headers, body, bytes sent)."""
    sock = connect(url)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: ioc\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    size = 64 * 1024
    chunk = b"%x\r\n" % size + b"x" * size + b"\r\n"
    sock.setblocking(False)
    sent, pending = 0, memoryview(b"")
    try:
        while sent < total or pending:
            readable, writable, _ = select.select([sock], [sock], [], 60)
            assert readable or writable, "the server neither read nor answered for a minute"
            if readable:
                break
            if not pending:
                pending, sent = memoryview(chunk), sent + size
            try:
                pending = pending[sock.send(pending) :]
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed after answering: read the answer
        else:
            sock.sendall(b"0\r\n\r\n")
        status, headers, body = read_answer(sock)
    finally:
        sock.close()
    return status, headers, body, sent


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/query", "application/json"),
        ("/query/saved", "application/json"),
        ("/addresses/geocode", "text/csv"),
    ],
)
def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read(live_server, path, content_type):
    total = 30 * MIB
    status, headers, body, sent = send_chunked(live_server, path, total, content_type)
    assert status == 413, body
    error = json.loads(body)
    assert error["code"] == "UploadTooLarge" and "limit" in error["description"]
    assert headers["connection"] == "close"
    assert sent < total  # the answer came before the client had sent the body: nothing more read


@pytest.mark.parametrize(
    "method, path, size",
    [
        ("POST", "/query", 21 * MIB),
        ("POST", "/addresses/geocode", 30 * MIB),
        ("PUT", "/layers/wards/data", 2 << 30),  # over IOC_UPLOAD_MAX_BYTES (1 GiB)
    ],
)
def test_a_declared_length_over_the_limit_is_refused_before_any_byte(
    live_server, method, path, size
):
    """Only the headers are sent: the 413 comes without the server waiting for the body."""
    sock = connect(live_server)
    try:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: ioc\r\nContent-Type: application/json"
            f"\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        status, headers, body = read_answer(sock)
    finally:
        sock.close()
    assert status == 413, body
    assert json.loads(body)["code"] == "UploadTooLarge"


def test_bodies_within_the_limit_still_work(live_server):
    response = httpx.post(
        f"{live_server}/query",
        timeout=60,
        json={"source": "fx_points", "limit": 2, "pad": "x" * (MIB // 2)},
    )
    assert response.status_code == 400  # read whole and parsed: the unknown field is named
    assert response.json()["parameter"] == "pad"


# --- the time bound of an export ------------------------------------------------------------


def stalled_client_messages(
    app, method: str, path: str, query: bytes = b"", body: bytes = b""
) -> list[dict]:
    """What the app sends to a client that takes the first chunk and then never reads again
    (nor disconnects), driven as raw ASGI in the app's own event loop."""

    async def run() -> list[dict]:
        stall = asyncio.Event()  # never set
        messages: list[dict] = []
        request = [{"type": "http.request", "body": body, "more_body": False}]

        async def send(message) -> None:
            messages.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                await stall.wait()  # the socket buffer is full: send never returns

        async def receive() -> dict:
            if request:
                return request.pop()
            await stall.wait()
            return {"type": "http.disconnect"}

        headers = [
            (b"host", b"ioc"),
            (b"accept-encoding", b"identity"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("ioc", 80),
        }
        # A guard against a hang, not a measurement: without the bound this never returns.
        await asyncio.wait_for(app(scope, receive, send), 120)
        return messages

    with TestClient(app) as running:
        return running.portal.call(run)


@pytest.mark.parametrize(
    "method, path, query, body",
    [
        ("GET", "/collections/fx_points/items", b"f=geojsonseq", b""),
        ("GET", "/collections/fx_points/items", b"limit=10000", b""),
        ("POST", "/query", b"", json.dumps({"source": "fx_points", "format": "csv"}).encode()),
    ],
)
def test_an_answer_to_a_client_that_stops_reading_is_cut_at_its_bound(
    settings, method, path, query, body
):
    """The bound covers the whole answer, not each fetch: a client that stops reading does not
    hold the export (and its database connection) open. The answer is cut without its final
    chunk, so the client sees an incomplete body rather than a complete-looking file."""
    app = create_app(
        Settings(database=settings.database, features=FeatureSettings(export_max_seconds=3))
    )
    messages = stalled_client_messages(app, method, path, query, body)
    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 200
    bodies = [m for m in messages if m["type"] == "http.response.body"]
    assert bodies and len(b"".join(m["body"] for m in bodies)) > 0
    assert all(m.get("more_body") for m in bodies)  # never ended as if complete
    assert b"".join(m["body"] for m in bodies).count(b"\x1e") < POINTS


def test_an_export_past_its_bound_before_the_first_byte_is_a_503(settings):
    """The bound covers the first query too: past it, a 503 and nothing half sent."""
    tight = Settings(database=settings.database, features=FeatureSettings(export_max_seconds=1e-9))
    with TestClient(create_app(tight)) as strict:
        response = strict.get("/collections/fx_points/items", params={"f": "csv"})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "QueryTimeout"
