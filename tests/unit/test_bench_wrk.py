"""The tile benchmark's HTTP load generator: a run of rounds makes exactly the requests it says,
every path as often as every other (``make bench`` compares servers on the same work)."""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.loadgen import wrk


@pytest.fixture
def server():
    """A real HTTP/1.1 keep-alive server on the loopback that counts the paths it is asked."""
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):  # make test installs it
            pytest.fail("wrk is not installed")
        pytest.skip("wrk is not installed (make test and make bench install it)")
    seen: Counter[str] = Counter()
    authorizations: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 — http.server's name
            with lock:
                seen[self.path] += 1
                authorizations[self.headers.get("Authorization", "")] += 1
            if self.path == "/drop":  # a server that hangs up without answering
                self.close_connection = True
                return
            body = b"x" * 100
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    seen.authorizations = authorizations  # type: ignore[attr-defined]
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()
    httpd.server_close()


def test_a_round_requests_every_path_once_per_connection(server):
    base, seen = server
    paths = [f"/tiles/t/{z}/0/0.pbf" for z in range(5)]
    run = wrk("probe", base, paths, 3, rounds=4)
    # wrk stops at the 60th answer; answers read in the same pass of its event loop count too.
    assert 60 <= run.count <= 62 and run.errors == 0
    assert 0 < run.seconds < 60  # it did not wait out its time limit
    # The server may also have been asked the next round's first paths (in flight at the stop).
    assert all(12 <= seen[p] <= 13 for p in paths) and set(seen) == set(paths)
    assert run.p99 >= run.p50 >= 0


def test_a_run_lasts_rounds_or_seconds_and_stays_on_the_loopback(server):
    base, _ = server
    with pytest.raises(ValueError, match="either"):
        wrk("probe", base, ["/"], 1)  # no end
    with pytest.raises(ValueError, match="loopback"):
        wrk("probe", "http://example.org:80", ["/"], 1, seconds=1)


def test_a_run_of_rounds_that_is_not_answered_says_so(server):
    base, _ = server
    with pytest.raises(RuntimeError, match="0 of 4 requests answered"):
        wrk("probe", base, ["/drop"], 2, rounds=2, seconds=1)


def test_every_request_carries_the_authorization_given(server):
    # The benchmark's layers are internal: ioc answers them to a key only.
    base, seen = server
    wrk("probe", base, ["/a", "/b"], 2, rounds=3, authorization="Bearer k1")
    assert set(seen.authorizations) == {"Bearer k1"}
    seen.authorizations.clear()
    wrk("probe", base, ["/a"], 1, rounds=1)
    assert set(seen.authorizations) == {""}
