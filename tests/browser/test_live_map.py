"""Maps that move: the pages follow the change events (GET /events) in headless Chromium
against a real `ioc serve`, with writes made through the public API by another client.

No reload, no timer: a PATCH turns one congestion segment red on the wall (the same SVG path,
changed in place), a new 1022 report is recounted into the heat map, and an anonymous page
never receives an event of a restricted layer.
"""

from __future__ import annotations

import subprocess

import httpx
import psycopg2
import pytest

from ioc.settings import PROJECT_ROOT
from tests.browser.conftest import LOAD_TIMEOUT_MS
from tests.browser.races import stream_held_after
from tests.browser.test_map_pages import open_page, screenshot
from tests.conftest import VENV_BIN, free_port, server_env, wait_ready

pytestmark = pytest.mark.browser

CONGESTION = {"ùn tắc": "#e31a1c", "thông thoáng": "#41ab5d"}  # the manifest's legend
MERGE = "application/merge-patch+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_live(page, layers: int) -> dict:
    """Until the page has loaded its layers and its event stream is open. (Not Playwright's
    'networkidle': an open event stream is a request that never ends.)"""
    page.wait_for_function(
        f"() => window.IocMaps && IocMaps.status().loaded >= {layers} && "
        "IocMaps.status().pending === 0 && IocMaps.status().live.state === 'on'",
        timeout=LOAD_TIMEOUT_MS,
    )
    status = page.evaluate("IocMaps.status()")
    assert status["errors"] == 0 and status["tileErrors"] == 0, status
    assert page.inner_text("#ioc-live-label") == "Trực tiếp"
    return status


def received(page, layer: str) -> list[dict]:
    return [e for e in page.evaluate("IocMaps.status().live.received") if e["layer"] == layer]


def patch(server: str, layer: str, fid: str, props: dict, headers: dict) -> None:
    response = httpx.patch(
        f"{server}/collections/{layer}/items/{fid}",
        json={"properties": props},
        headers={**headers, "Content-Type": MERGE},
    )
    assert response.status_code == 204, response.text


@pytest.fixture(scope="module")
def wall(browser, live_server, make_key):
    """The wall, signed in as an operator with the map-session cookie (as a wall screen is)."""
    context, page, rec = open_page(browser, "", live_server)
    signed = context.request.post(
        f"{live_server}/maps/session", headers=bearer(make_key("operator"))
    )
    assert signed.ok, signed.text()
    page.goto(f"{live_server}/maps/wall", wait_until="load")
    wait_live(page, layers=4)
    page.evaluate("window.__sameDocument = true")
    yield page, rec
    context.close()


def test_a_patched_segment_changes_colour_in_place(wall, live_server, make_key):
    page, rec = wall
    writer = bearer(make_key("publisher", "construction"))
    selector = 'path[data-layer="congestion_segments"]'
    fid = page.get_attribute(selector, "data-feature")
    assert fid
    path = f'{selector}[data-feature="{fid}"]'
    feature = httpx.get(f"{live_server}/collections/congestion_segments/items/{fid}").json()
    before = feature["properties"]["level"]
    after = "thông thoáng" if before == "ùn tắc" else "ùn tắc"
    assert page.get_attribute(path, "stroke") != CONGESTION[after]
    page.evaluate("(s) => { document.querySelector(s).__marked = true; }", path)
    stamp = page.inner_text("#ioc-live-at")
    requests_before = len(rec.requests)
    patch(live_server, "congestion_segments", fid, {"level": after}, writer)
    try:
        page.wait_for_function(
            "([s, colour]) => document.querySelector(s)?.getAttribute('stroke') === colour",
            arg=[path, CONGESTION[after]],
            timeout=30_000,
        )
        # The same SVG element, the same document: changed in place, not redrawn or reloaded.
        assert page.evaluate("(s) => document.querySelector(s).__marked === true", path)
        assert page.evaluate("window.__sameDocument") is True
        assert page.inner_text("#ioc-live-at") not in (stamp, "chưa có")
        events = received(page, "congestion_segments")
        assert any(e["op"] == "item.update" and e["ids"] == [fid] for e in events), events
        status = page.evaluate("IocMaps.status()")
        assert status["patched"]["congestion_segments"] >= 1
        assert status["reloads"].get("congestion_segments", 0) == 0
        # Only that feature was fetched, nothing else was reloaded.
        fetched = [u for u in rec.requests[requests_before:] if "/collections/" in u]
        assert fetched and all(u.endswith(f"/congestion_segments/items/{fid}") for u in fetched)
        screenshot(page, "wall-live")
    finally:
        patch(live_server, "congestion_segments", fid, {"level": before}, writer)
    if before in CONGESTION:  # and back, on the event of the restoring PATCH
        page.wait_for_function(
            "([s, colour]) => document.querySelector(s)?.getAttribute('stroke') === colour",
            arg=[path, CONGESTION[before]],
            timeout=30_000,
        )
    rec.check_clean()


def test_a_new_report_is_counted_into_the_heat_map(wall, live_server, make_key):
    """The heat map is the server's count of every open report over the view; a report
    created at the centre of the view is counted in on its event, and out on its deletion."""
    page, rec = wall
    writer = bearer(make_key("publisher", "science_tech"))
    total = page.evaluate("IocMaps.status().features.reports_1022")
    grids = page.evaluate("IocMaps.status().grids")
    centre = page.evaluate(
        "(() => { const c = IocMaps.map.getCenter(); return [c.lng, c.lat]; })()"
    )
    report = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": centre},
        "properties": {
            "report_no": "LIVE-TEST-0001",
            "category": "ngập nước",
            "status": "mới",
            "reported_at": "2025-09-01T08:00:00+07:00",
        },
    }
    created = httpx.post(
        f"{live_server}/collections/reports_1022/items",
        json=report,
        headers={**writer, "Content-Type": "application/geo+json"},
    )
    assert created.status_code == 201, created.text
    fid = created.json()["ids"][0]
    try:
        page.wait_for_function(
            f"() => IocMaps.status().features.reports_1022 === {total + 1}", timeout=30_000
        )
        assert page.evaluate("IocMaps.status().grids") > grids
        assert any(e["op"] == "item.create" for e in received(page, "reports_1022"))
    finally:
        gone = httpx.delete(f"{live_server}/collections/reports_1022/items/{fid}", headers=writer)
        assert gone.status_code == 204, gone.text
    page.wait_for_function(
        f"() => IocMaps.status().features.reports_1022 === {total}", timeout=30_000
    )
    assert page.evaluate("window.__sameDocument") is True
    rec.check_clean()


def test_a_restricted_layer_s_events_never_reach_an_anonymous_page(browser, live_server, make_key):
    police = bearer(make_key("publisher", "police"))
    writer = bearer(make_key("publisher", "construction"))
    context, page, rec = open_page(browser, f"{live_server}/maps/portal", live_server)
    try:
        wait_live(page, layers=3)
        # Besides the page's own stream, one that asks for every layer the page may read.
        page.evaluate(
            """() => { window.__all = []; const s = new EventSource('/events');
            s.addEventListener('open', () => { window.__open = true; });
            s.addEventListener('change', (e) => window.__all.push(JSON.parse(e.data))); }"""
        )
        page.wait_for_function("() => window.__open === true", timeout=30_000)
        hotspots = httpx.get(
            f"{live_server}/collections/crime_hotspots/items?limit=1", headers=police
        ).json()["features"][0]
        flood = httpx.get(f"{live_server}/collections/flood_points/items?limit=1").json()
        flood = flood["features"][0]
        depth = flood["properties"]["depth_cm"]
        secret = {"incidents_90d": hotspots["properties"]["incidents_90d"]}
        patch(live_server, "crime_hotspots", hotspots["id"], secret, police)  # first
        patch(live_server, "flood_points", flood["id"], {"depth_cm": depth}, writer)  # then
        # Events come in order: once the later public one is here, the restricted one
        # would have been too.
        page.wait_for_function(
            "() => window.__all.some((e) => e.layer === 'flood_points') && "
            "IocMaps.status().live.received.some((e) => e.layer === 'flood_points')",
            timeout=30_000,
        )
        seen = page.evaluate("window.__all") + page.evaluate("IocMaps.status().live.received")
        assert all(e["layer"] != "crime_hotspots" for e in seen), seen
        assert "crime_hotspots" not in page.content()
        rec.check_clean()
    finally:
        context.close()


def feature_url(fid: str):
    """A URL matcher: the page's fetch of one congestion segment."""
    return lambda url: url.endswith(f"/collections/congestion_segments/items/{fid}")


@pytest.mark.parametrize("primed", [True, False], ids=["resumed", "fresh"])
def test_the_page_shows_a_lost_stream_and_catches_up_after_a_restart(
    browser, live_server, db_settings, make_key, primed
):
    """The page's server stops; the indicator says so; a write made meanwhile through another
    server process is shown once the first one is back. EventSource reconnects by itself and
    sends Last-Event-ID, so the missed event is read from the database and only its feature is
    fetched: after an event the page saw (resumed), or from the stream's opening 'ready'
    message on a page that saw none (fresh). Neither reloads the layer.

    Resumed: the server stops between the event and the page's fetch of its feature (the fetch
    is cut off here, every time; before, it happened now and then under load and the page
    reloaded the layer): the page fetches the feature again once the stream is back."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def serve() -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(VENV_BIN / "ioc"), "serve", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=server_env(db_settings, IOC_LOG_LEVEL="warning"),
        )
        wait_ready(url)
        return proc

    writer = bearer(make_key("publisher", "construction"))
    server = serve()
    context, page, rec = open_page(browser, f"{url}/maps/portal", url)
    fid, before = None, None
    try:
        wait_live(page, layers=3)
        selector = 'path[data-layer="congestion_segments"]'
        fid = page.get_attribute(selector, "data-feature")
        path = f'{selector}[data-feature="{fid}"]'
        before = httpx.get(f"{url}/collections/congestion_segments/items/{fid}").json()
        before = before["properties"]["level"]
        after = "thông thoáng" if before == "ùn tắc" else "ùn tắc"
        if primed:  # an event the page sees: its id is where the stream resumes
            cut_off = feature_url(fid)
            page.route(cut_off, lambda route: route.abort("connectionrefused"))
            with page.expect_event("requestfailed", lambda r: cut_off(r.url), timeout=30_000):
                patch(url, "congestion_segments", fid, {"level": before}, writer)
            page.unroute(cut_off)
        # Where to resume: the event's id, or the opening message's on a fresh page.
        page.wait_for_function("() => IocMaps.status().live.lastId !== null", timeout=30_000)
        server.terminate()
        server.wait(timeout=20)
        page.wait_for_function("() => IocMaps.status().live.state === 'lost'", timeout=30_000)
        assert page.inner_text("#ioc-live-label") == "Mất kết nối, đang thử lại…"
        patch(live_server, "congestion_segments", fid, {"level": after}, writer)  # elsewhere
        server = serve()
        page.wait_for_function(
            "([s, colour]) => document.querySelector(s)?.getAttribute('stroke') === colour",
            arg=[path, CONGESTION[after]],
            timeout=60_000,
        )
        status = page.evaluate("IocMaps.status()")
        assert status["live"]["state"] == "on"
        # Resumed: only that feature was fetched (by event), nothing reloaded.
        assert status["reloads"].get("congestion_segments", 0) == 0, status["reloads"]
        assert any(e["op"] == "item.update" for e in status["live"]["received"][int(primed) :])
        assert page.inner_text("#ioc-live-label") == "Trực tiếp"
        # Refused connections while it was down are the browser's console errors; nothing of
        # the page's own failed, and nothing went elsewhere.
        assert rec.page_errors == [] and rec.external() == []
    finally:
        if fid is not None and before is not None:
            patch(live_server, "congestion_segments", fid, {"level": before}, writer)
        context.close()
        server.terminate()
        server.wait(timeout=20)


def test_a_write_between_the_stream_s_opening_and_the_layer_load_is_shown(
    browser, live_server, db_settings, make_key
):
    """The page-start gap (issue 19): a write lands while the layer's first load is under way
    (its answer is read from the server before the write and handed to the page after it). A
    page that asked for its stream only after the layer (as it did) gets a stream opening
    after the write (held here until then): the event is never sent and the page keeps the
    older state. Now the stream is 'ready' before the load is asked for, the write's event
    reaches the page during the load and is applied after it."""
    writer = bearer(make_key("publisher", "construction"))
    first = httpx.get(f"{live_server}/collections/congestion_segments/items?limit=1").json()
    fid = str(first["features"][0]["id"])
    before = first["features"][0]["properties"]["level"]
    after = "thông thoáng" if before == "ùn tắc" else "ùn tắc"
    path = f'path[data-layer="congestion_segments"][data-feature="{fid}"]'
    context, page, rec = open_page(browser, "", live_server)
    order: list[str] = []

    def hold_load(route) -> None:
        if "load" in order:  # only the first load is held
            route.continue_()
            return
        order.append("load")
        answer = route.fetch()  # the layer as it was before the write
        patch(live_server, "congestion_segments", fid, {"level": after}, writer)
        (newest,) = sql_row(
            db_settings, "SELECT max(id) FROM ioc.events WHERE layer_id = 'congestion_segments'"
        )
        order.append("write")
        page.evaluate("window.__written = true")
        # Until the page's stream is past the write (its event, or its opening after it).
        page.wait_for_function(
            "(n) => Number(IocMaps.status().live.lastId) >= n", arg=newest, timeout=30_000
        )
        route.fulfill(response=answer)

    page.route(lambda url: "/collections/congestion_segments/items?" in url, hold_load)
    page.route(lambda url: "/events?" in url, stream_held_after(page, order, "load"))
    try:
        page.goto(f"{live_server}/maps/portal", wait_until="load")
        page.wait_for_function(
            "([s, colour]) => document.querySelector(s)?.getAttribute('stroke') === colour",
            arg=[path, CONGESTION[after]],
            timeout=30_000,
        )
        assert order[:3] == ["stream", "load", "write"], order
        status = page.evaluate("IocMaps.status()")
        assert status["errors"] == 0, status
        # Applied from its event after the load: only that feature was fetched again.
        assert status["reloads"].get("congestion_segments", 0) == 0, status["reloads"]
        assert any(e["ids"] == [fid] for e in received(page, "congestion_segments"))
        rec.check_clean()
    finally:
        patch(live_server, "congestion_segments", fid, {"level": before}, writer)
        context.close()


def sql_row(db_settings, query: str) -> tuple:
    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchone()
    finally:
        conn.close()
