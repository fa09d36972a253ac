"""MapLibre GL JS, on a web page of another origin, draws ioc's MapLibre style: the style,
TileJSON and tiles are read across origins (CORS), and the rendered features come from ioc's
layers. The page is served by a second server on the loopback; MapLibre GL JS comes from
``node_modules`` (a devDependency that ``make test`` installs)."""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ioc.settings import PROJECT_ROOT
from tests.browser.conftest import ARTIFACTS, LOAD_TIMEOUT_MS

pytestmark = pytest.mark.browser

MAPLIBRE = PROJECT_ROOT / "node_modules" / "maplibre-gl" / "dist"
LAYERS = "wards,reports_1022_public"
PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>Bản đồ của sở — department map</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="maplibre-gl.css">
<script src="maplibre-gl.js"></script>
<style>html, body, #map { margin: 0; height: 100%; }</style></head>
<body><div id="map"></div><script>
window.mapErrors = [];
const map = new maplibregl.Map({container: "map", style: STYLE_URL, center: [106.70, 10.78],
                                zoom: 12, attributionControl: false});
map.on("error", (e) => window.mapErrors.push(String((e.error && e.error.message) || e)));
map.once("idle", () => { window.mapIdle = true; });
window.map = map;
</script></body></html>
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def department_site(live_server, tmp_path: Path) -> Iterator[str]:
    """Another department's web map, served from a second origin on the loopback (a public
    origin would meet Chromium's local-network protection before CORS)."""
    if not (MAPLIBRE / "maplibre-gl.js").is_file():
        if os.environ.get("CI"):
            pytest.fail("maplibre-gl is not installed: make test runs npm ci with it")
        pytest.skip("maplibre-gl is not installed (make test installs it)")
    for name in ("maplibre-gl.js", "maplibre-gl.css"):
        (tmp_path / name).write_bytes((MAPLIBRE / name).read_bytes())
    style_url = f"{live_server}/styles/{LAYERS}.json"
    (tmp_path / "map.html").write_text(PAGE.replace("STYLE_URL", json.dumps(style_url)))
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_maplibre_on_another_origin_draws_ioc_style(browser, live_server, department_site):
    context = browser.new_context(viewport={"width": 1024, "height": 768}, locale="vi-VN")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    answers: list[tuple[str, int, str | None]] = []
    page.on(
        "response",
        lambda r: (
            answers.append((r.url, r.status, r.headers.get("access-control-allow-origin")))
            if r.url.startswith(live_server)
            else None
        ),
    )
    try:
        page.goto(f"{department_site}/map.html", wait_until="load")
        page.wait_for_function(
            "window.mapIdle === true || window.mapErrors.length > 0", timeout=LOAD_TIMEOUT_MS
        )
        assert page.evaluate("window.mapErrors") == [] and errors == []
        drawn = page.evaluate("""() => {
            const seen = {};
            for (const f of map.queryRenderedFeatures()) {
                seen[f.sourceLayer] = (seen[f.sourceLayer] || 0) + 1;
            }
            return seen;
        }""")
        assert drawn.get("wards", 0) > 0 and drawn.get("reports_1022_public", 0) > 0, drawn
        # The style, its TileJSON and the tiles all came from ioc, across origins.
        kinds = {
            kind
            for url, status, allow in answers
            if status in (200, 204) and allow == "*"
            for kind in ("/styles/", "tilejson.json", ".pbf")
            if kind in url
        }
        assert kinds == {"/styles/", "tilejson.json", ".pbf"}, answers[:5]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "maplibre-other-origin.png"))
    finally:
        context.close()
