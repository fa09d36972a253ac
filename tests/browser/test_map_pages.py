"""The map pages in headless Chromium against a real `ioc serve` (the `live_server` fixture).

Each page must draw features, request vector tiles that decode, log no console error and make
no request outside the server's origin (the pages must work in an operations centre without
internet). Screenshots go to ``test-artifacts/`` for people to look at.

Debian's ``chromium`` is driven by Playwright's Python package (never ``playwright install``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mapbox_vector_tile
import pytest

from tests.browser.conftest import ARTIFACTS, LOAD_TIMEOUT_MS
from tests.polling import wait_until

pytestmark = pytest.mark.browser

WALL = {"width": 1920, "height": 1080}
PHONE = {"width": 390, "height": 844}


@dataclass
class Recorder:
    """Everything a page did: requests, console errors, uncaught errors, tile responses."""

    origin: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    tiles: list[tuple[str, int, bytes]] = field(default_factory=list)
    in_flight: set = field(default_factory=set)  # requests not finished yet

    def external(self) -> list[str]:
        return [
            url
            for url in self.requests
            if not (url.startswith(self.origin + "/") or url.startswith(("data:", "blob:")))
        ]

    def check_clean(self) -> None:
        assert self.page_errors == [], self.page_errors
        assert self.console_errors == [], self.console_errors
        assert self.external() == [], self.external()


def open_page(
    browser,
    url: str,
    origin: str,
    *,
    viewport=WALL,
    mobile: bool = False,
    headers: dict[str, str] | None = None,
):
    context = browser.new_context(
        viewport=viewport,
        is_mobile=mobile,
        has_touch=mobile,
        device_scale_factor=1,
        locale="vi-VN",
        timezone_id="Asia/Ho_Chi_Minh",
        service_workers="block",
        extra_http_headers=headers or {},
    )
    page = context.new_page()
    rec = Recorder(origin)
    page.on(
        "request", lambda request: (rec.requests.append(request.url), rec.in_flight.add(request))
    )
    page.on("requestfinished", lambda request: rec.in_flight.discard(request))
    page.on("requestfailed", lambda request: rec.in_flight.discard(request))
    page.on(
        "console",
        lambda msg: (
            rec.console_errors.append(f"{msg.text} @ {msg.location}")
            if msg.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda error: rec.page_errors.append(str(error)))
    context.route("**/*.pbf*", lambda route: _intercept_tile(route, rec))
    if url:
        page.goto(url, wait_until="load")
    return context, page, rec


def _intercept_tile(route, rec: Recorder) -> None:
    """Pass a tile request on to the server and keep the bytes that come back."""
    response = route.fetch()
    rec.tiles.append((route.request.url, response.status, response.body()))
    route.fulfill(response=response)


def settle(page, rec: Recorder) -> None:
    """Until no request is in flight but the pages' change-event streams (Playwright's
    'networkidle' would wait for ever: an open stream is a request that never ends)."""
    wait_until(
        lambda: not [r for r in rec.in_flight if "/events" not in r.url],
        timeout=LOAD_TIMEOUT_MS / 1000,
        interval=0.5,
        message=lambda: f"requests to end: {[r.url for r in rec.in_flight]}",
        sleep=pumping(page),
    )


def wait_loaded(page, rec: Recorder, layers: int, tiles: bool = True) -> dict:
    """Until the page script has loaded `layers` GeoJSON layers (and some tiles), idle."""
    tiles_loaded = " && IocMaps.status().tiles > 0" if tiles else ""
    condition = (
        f"() => window.IocMaps && IocMaps.status().loaded >= {layers} && "
        f"IocMaps.status().pending === 0{tiles_loaded}"
    )
    page.wait_for_function(condition, timeout=LOAD_TIMEOUT_MS)
    settle(page, rec)
    status = page.evaluate("IocMaps.status()")
    assert status["errors"] == 0 and status["tileErrors"] == 0, status
    return status


def pumping(page):
    """A sleep for wait_until during which the page's events (requests, console) still reach
    the test: Playwright delivers them only while a call into it is waiting."""
    return lambda seconds: page.wait_for_timeout(seconds * 1000)


def decoded_tiles(rec: Recorder) -> list[dict]:
    """Every vector tile the page received, decoded; at least one must hold features."""
    tiles = []
    for url, status, body in rec.tiles:
        assert status in (200, 204), (url, status)
        if status == 200:
            tiles.append(mapbox_vector_tile.decode(body))
    assert any(any(layer["features"] for layer in tile.values()) for tile in tiles), (
        f"no tile with features among {len(tiles)}"
    )
    return tiles


def painted(page, selector: str) -> int:
    """How many canvases matching `selector` have at least one non-transparent pixel."""
    return page.evaluate(
        """(selector) => {
        let n = 0;
        for (const canvas of document.querySelectorAll(selector)) {
            if (!canvas.width || !canvas.height) continue;
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 3; i < data.length; i += 4 * 7) { if (data[i] > 0) { n += 1; break; } }
        }
        return n;
    }""",
        selector,
    )


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    return path


def paths_in(page, pane: str) -> int:
    return page.locator(f".leaflet-{pane}-pane path").count()


# --- the pages -----------------------------------------------------------------------------


def test_wall_map_for_operators(browser, live_server, make_key):
    """Sign in with a key (HttpOnly cookie), then: dark basemap from ioc's own tiles, ward
    choropleth with its legend, open-report heat map, flood points, clock and update stamp."""
    context, page, rec = open_page(browser, f"{live_server}/maps/wall", live_server)
    try:
        page.fill("#key", make_key("operator"))
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server}/maps/wall", timeout=LOAD_TIMEOUT_MS)
        cookie = next(c for c in context.cookies() if c["name"] == "ioc_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # not readable by scripts
        status = wait_loaded(page, rec, layers=4)
        assert status["features"]["flood_points"] > 0
        assert status["features"]["reports_1022"] > 1000  # open 1022 reports in the heat
        assert status["features"]["ward_indicators"] >= 100
        assert painted(page, ".leaflet-ioc-base-pane canvas") > 0  # the basemap
        assert painted(page, "canvas.leaflet-heatmap-layer") == 1  # the heat map
        assert paths_in(page, "ioc-fill") >= 100  # the choropleth
        assert paths_in(page, "ioc-points") > 0  # flood points
        assert paths_in(page, "ioc-lines") > 0  # congestion
        classes = page.locator('[data-choropleth="ward_indicators"] li .ioc-swatch').count()
        assert classes >= 3  # its legend
        assert page.locator(".leaflet-control-layers-overlays label").count() >= 6
        clock = page.inner_text("#ioc-clock")
        page.wait_for_function(  # the clock ticks
            "(before) => document.querySelector('#ioc-clock').innerText !== before",
            arg=clock,
            timeout=10_000,
        )
        assert page.inner_text("#ioc-updated") not in ("", "chưa cập nhật")
        assert "crime_hotspots" not in page.content()
        decoded_tiles(rec)
        rec.check_clean()
        screenshot(page, "wall")
    finally:
        context.close()


def test_portal_for_citizens(browser, live_server):
    context, page, rec = open_page(browser, f"{live_server}/maps/portal", live_server)
    try:
        wait_loaded(page, rec, layers=3)
        assert page.get_attribute("html", "lang") == "vi"
        assert paths_in(page, "ioc-points") > 0 and paths_in(page, "ioc-lines") > 0
        assert painted(page, ".leaflet-ioc-base-pane canvas") > 0
        decoded_tiles(rec)
        overlays = page.locator(".leaflet-control-layers-overlays label").all_inner_texts()
        assert not any("1022" in text and "chưa" in text for text in overlays)
        rec.check_clean()
        screenshot(page, "portal")
        page.click("a.ioc-lang")
        page.wait_for_url(f"{live_server}/maps/portal?lang=en")
        wait_loaded(page, rec, layers=3)
        assert page.get_attribute("html", "lang") == "en"
        assert page.get_attribute("#ioc-search-q", "placeholder") == "Search an address…"
        rec.check_clean()
    finally:
        context.close()


def test_portal_on_a_phone(browser, live_server):
    context, page, rec = open_page(
        browser, f"{live_server}/maps/portal", live_server, viewport=PHONE, mobile=True
    )
    try:
        wait_loaded(page, rec, layers=3)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # no sideways scroll
        search = page.locator("#ioc-search-q").bounding_box()
        assert search and search["width"] > 200
        box = page.locator(".ioc-map").bounding_box()
        assert box and box["height"] > 500 and box["width"] == PHONE["width"]
        assert page.evaluate("document.getElementById('ioc-legend').open") is False
        rec.check_clean()
        screenshot(page, "portal-phone")
    finally:
        context.close()


@pytest.fixture(scope="module")
def address_index(db_settings):
    """The address registry built from the seeded demo city (as `ioc addresses` does)."""
    import psycopg2

    from ioc.addresses.index import build_address_index
    from ioc.addresses.registry import AddressSettings
    from ioc.catalog.layers import load_catalog_sync

    conn = psycopg2.connect(db_settings.dsn())
    try:
        return build_address_index(conn, load_catalog_sync(conn), settings=AddressSettings())
    finally:
        conn.close()


def test_portal_search_and_whats_here(browser, live_server, address_index):
    """The search box uses GET /addresses?q=, a tap on the map GET /whats-here."""
    sample = httpx.get(f"{live_server}/collections/digital_addresses/items?limit=1").json()
    props = sample["features"][0]["properties"]
    query = f"{props['house_number']} {props['street']}"
    context, page, rec = open_page(browser, f"{live_server}/maps/portal", live_server)
    try:
        wait_loaded(page, rec, layers=3)
        page.fill("#ioc-search-q", query)
        page.press("#ioc-search-q", "Enter")
        page.wait_for_selector("#ioc-search-results li button", timeout=LOAD_TIMEOUT_MS)
        assert props["street"] in page.inner_text("#ioc-search-results li button >> nth=0")
        page.evaluate("IocMaps.map.once('moveend', () => { window.__settled = true; })")
        page.click("#ioc-search-results li button >> nth=0")
        page.wait_for_selector(".leaflet-popup-content strong")
        assert any("/addresses?" in url and "q=" in url for url in rec.requests)
        # The map moves to the result (animated): click on it once it has stopped.
        page.wait_for_function("() => window.__settled === true", timeout=LOAD_TIMEOUT_MS)
        page.evaluate("IocMaps.map.closePopup()")
        size = page.viewport_size
        page.mouse.click(size["width"] * 0.5 + 40, size["height"] * 0.5 + 60)
        page.wait_for_selector(".ioc-whats-here .ioc-ward", timeout=LOAD_TIMEOUT_MS)
        assert page.inner_text(".ioc-whats-here .ioc-ward").strip()
        assert any("/whats-here?lon=" in url for url in rec.requests)
        rec.check_clean()
        screenshot(page, "portal-whats-here")
    finally:
        context.close()


def test_layer_preview_with_legend_and_popups(browser, live_server):
    context, page, rec = open_page(browser, f"{live_server}/maps/preview/flood_points", live_server)
    try:
        wait_loaded(page, rec, layers=1)
        assert page.locator("#ioc-legend li").count() >= 2
        page.locator(".leaflet-ioc-points-pane path").first.click(force=True)
        page.wait_for_selector(".ioc-popup dl dt", timeout=10_000)
        page.wait_for_function(  # the popup has faded in (for the screenshot)
            "() => getComputedStyle(document.querySelector('.leaflet-popup')).opacity === '1'",
            timeout=10_000,
        )
        labels = page.locator(".ioc-popup dt").all_inner_texts()
        assert any("Độ sâu" in label or "sâu" in label for label in labels), labels
        rec.check_clean()
        screenshot(page, "preview-flood_points")
    finally:
        context.close()


def test_large_layer_preview_uses_vector_tiles(browser, live_server, make_key):
    headers = {"Authorization": f"Bearer {make_key('operator')}"}
    context, page, rec = open_page(
        browser, f"{live_server}/maps/preview/roads", live_server, headers=headers
    )
    try:
        page.wait_for_function(
            "() => window.IocMaps && IocMaps.status().tiles > 4", timeout=LOAD_TIMEOUT_MS
        )
        settle(page, rec)
        tiles = decoded_tiles(rec)
        assert any("roads" in tile for tile in tiles)
        assert painted(page, ".leaflet-ioc-lines-pane canvas") > 0
        rec.check_clean()
        screenshot(page, "preview-roads")
    finally:
        context.close()


def test_embed_in_an_iframe(browser, live_server):
    """?embed=1 is chrome-less and frameable by the server's own pages ('self')."""
    context, page, rec = open_page(browser, f"{live_server}/maps?f=html", live_server)
    try:
        page.evaluate(
            """(src) => { const f = document.createElement('iframe');
            f.src = src; f.id = 'embed'; f.width = 640; f.height = 420;
            document.body.appendChild(f); }""",
            "/maps/portal?embed=1",
        )
        frame = page.frame_locator("#embed")
        frame.locator(".ioc-map").wait_for(timeout=LOAD_TIMEOUT_MS)
        inner = next(f for f in page.frames if f.url.endswith("/maps/portal?embed=1"))
        inner.wait_for_function(
            "() => window.IocMaps && IocMaps.status().loaded >= 3", timeout=LOAD_TIMEOUT_MS
        )
        assert inner.locator(".ioc-bar").count() == 0
        assert "ioc-embed" in inner.get_attribute("body", "class")
        settle(page, rec)
        rec.check_clean()
        screenshot(page, "embed")
    finally:
        context.close()


def test_embedding_from_another_origin_is_refused(browser, live_server):
    """frame-ancestors 'self': a page of another origin (localhost vs 127.0.0.1) cannot frame
    the map."""
    other = live_server.replace("127.0.0.1", "localhost")
    context, page, rec = open_page(browser, f"{other}/maps?f=html", other)
    try:
        page.evaluate(
            """(src) => { const f = document.createElement('iframe');
            f.src = src; f.id = 'embed'; document.body.appendChild(f); }""",
            f"{live_server}/maps/portal?embed=1",
        )
        wait_until(
            lambda: any("frame-ancestors" in error for error in rec.console_errors),
            timeout=10,
            interval=0.2,
            message=lambda: f"a frame-ancestors refusal among {rec.console_errors}",
            sleep=pumping(page),
        )
        inner = [f for f in page.frames if "embed=1" in f.url]
        assert not inner or inner[0].evaluate("() => !window.IocMaps")
    finally:
        context.close()
