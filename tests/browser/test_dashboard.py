"""The 1022 dashboard in headless Chromium against a real `ioc serve` (issue 21): every panel
has data, a ward click narrows the bar chart to that ward's totals (against SQL) and the map's
reports to that ward's (ids against SQL) and fits the map to it, a category click narrows the
map's reports, the URL reproduces the state, clearing goes back to the city, nothing is
requested elsewhere, no console error, and a report PATCHed to "đã đóng" moves the KPIs
without a reload."""

from __future__ import annotations

import httpx
import psycopg2
import pytest

from tests.browser.conftest import LOAD_TIMEOUT_MS
from tests.browser.races import stream_held_after
from tests.browser.test_map_pages import open_page, screenshot

pytestmark = pytest.mark.browser
RANGE = "from=2024-12-01&to=2025-12-01"
MERGE = "application/merge-patch+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settle(page, loads: int) -> dict:
    """Until the page has loaded its data ``loads`` times and nothing is pending (an open
    EventSource never lets 'networkidle' fire)."""
    page.wait_for_function(
        f"() => window.IocDashboard && IocDashboard.status().loads >= {loads} && "
        "!IocDashboard.status().pending && IocDashboard.status().units > 0 && "
        "IocDashboard.status().points > 0",
        timeout=LOAD_TIMEOUT_MS,
    )
    status = page.evaluate("IocDashboard.status()")
    assert status["errors"] == 0, status
    return status


def sql(db_settings, query: str, *args):
    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def board(browser, live_server, make_key):
    context, page, rec = open_page(browser, "", live_server)
    signed = context.request.post(
        f"{live_server}/maps/session", headers=bearer(make_key("operator"))
    )
    assert signed.ok, signed.text()
    yield context, page, rec
    context.close()


def points_of(page, **state: str) -> dict:
    """The page's status once its map's points are those of ``state`` (filter values)."""
    page.wait_for_function(
        "(want) => { const f = IocDashboard.status().pointsFilter || {};"
        " return Object.keys(want).every((k) => (f[k] || '') === want[k]); }",
        arg=state,
        timeout=30_000,
    )
    return page.evaluate("IocDashboard.status()")


def map_bounds(page) -> tuple[float, float, float, float]:
    return tuple(
        page.evaluate(
            "(() => { const b = IocMaps.map.getBounds();"
            " return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()"
        )
    )


def thousands(n: int) -> str:
    return f"{n:,}".replace(",", ".")  # vi-VN


def set_status(server: str, fid: str, writer: dict[str, str], *, closed: bool) -> None:
    """A report closed ("đã đóng"), or open again ("mới"), through the API."""
    props = {"status": "đã đóng", "resolved_at": "2025-11-30T10:00:00+07:00"}
    if not closed:
        props = {"status": "mới", "resolved_at": None}
    response = httpx.patch(
        f"{server}/collections/reports_1022/items/{fid}",
        json={"properties": props},
        headers={**writer, "Content-Type": MERGE},
    )
    assert response.status_code == 204, response.text


def bar_totals(page) -> dict[str, int]:
    return {r["key"]: r["n"] for r in page.evaluate("IocDashboard.data().category")}


def test_the_dashboard_links_both_ways(board, live_server, db_settings):
    context, page, rec = board
    page.goto(f"{live_server}/dashboards/reports_1022?{RANGE}&units=ward", wait_until="load")
    status = settle(page, 1)
    doc = page.evaluate("IocDashboard.data()")
    assert doc["kpi"]["total"] > 0 and doc["category"] and doc["status"] and doc["channel"]
    assert doc["series"] and doc["ranking"]
    for key in ("category", "status", "channel", "series"):
        assert page.locator(f"#chart-{key} canvas").count() >= 1, key
    assert page.locator("#dash-ranking tbody tr").count() > 0
    assert page.inner_text("#kpi-open") not in ("", "…")
    # Place names as on the wall (issue 21 item 6): the map is readable, offline.
    page.wait_for_function("() => document.querySelectorAll('.ioc-label').length > 0")
    screenshot(page, "dashboard-desk")

    # A ward click on the map: every panel narrows to it; the bar's totals are that ward's.
    ward = sql(
        db_settings,
        "SELECT w.ward_code::text FROM data.wards w JOIN data.reports_1022 r"
        " ON ST_Intersects(w.geom, r.geom) GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    )[0][0]
    page.evaluate(f"IocDashboard.click('{ward}')")
    page.wait_for_function(f"() => IocDashboard.data().filter.ward === '{ward}'", timeout=30_000)
    settle(page, status["loads"] + 1)
    expected = dict(
        sql(
            db_settings,
            "SELECT r.category, count(*) FROM data.reports_1022 r JOIN data.wards w"
            " ON ST_Intersects(w.geom, r.geom) WHERE w.ward_code = %s"
            " AND r.reported_at >= '2024-12-01T00:00+07' AND r.reported_at < '2025-12-01T00:00+07'"
            " GROUP BY 1",
            ward,
        )
    )
    assert bar_totals(page) == expected
    assert f"ward={ward}" in page.url

    # The map's reports obey the unit filter too: each one lies in the ward (ids against SQL),
    # and they are all of the ward's reports in the range up to the cap.
    status = points_of(page, ward=ward)
    ids = status["pointIds"]
    inside = sql(
        db_settings,
        "SELECT count(DISTINCT r.fid) FROM data.reports_1022 r JOIN data.wards w"
        " ON ST_Intersects(w.geom, r.geom) WHERE w.ward_code = %s AND r.fid::text = ANY(%s)",
        ward,
        ids,
    )[0][0]
    total = sum(expected.values())
    assert len(set(ids)) == len(ids) == inside == min(total, 2000) > 0
    note = f"{thousands(len(ids))} phản ánh trên bản đồ"
    if total > 2000:
        note = f"2.000 / {thousands(total)} phản ánh mới nhất"
    assert page.inner_text("#dash-map-note") == note
    # ... and the map shows the ward: its box in view, and not a city-wide view around it.
    page.wait_for_function(
        "(w) => IocDashboard.status().fitted === 'ward:' + w", arg=ward, timeout=30_000
    )
    west, south, east, north = sql(
        db_settings,
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT"
        " ST_Extent(ST_Transform(geom, 4326)) e FROM data.wards WHERE ward_code = %s) x",
        ward,
    )[0]
    view = map_bounds(page)
    slack = 1e-3  # the map's unit shapes are simplified
    assert view[0] <= west + slack and view[1] <= south + slack, (view, west, south)
    assert view[2] >= east - slack and view[3] >= north - slack, (view, east, north)
    assert min((view[2] - view[0]) / (east - west), (view[3] - view[1]) / (north - south)) < 4
    screenshot(page, "dashboard-ward")
    assert page.locator('#dash-chips [data-filter="ward"]').count() == 1

    # A category click (on the bar) narrows the map's reports and the other panels.
    category = max(expected, key=expected.get)
    before = page.evaluate("IocDashboard.status().loads")
    box = page.locator("#chart-category").bounding_box()
    names = [r["key"] for r in page.evaluate("IocDashboard.data().category")]
    row = names.index(category)
    # The bars are evenly spaced: click the middle of this category's band.
    grid = page.evaluate(
        "(i) => echarts.getInstanceByDom(document.getElementById('chart-category'))"
        ".convertToPixel({seriesIndex: 0}, [1, i])",
        row,
    )
    page.mouse.click(box["x"] + grid[0] + 2, box["y"] + grid[1])
    page.wait_for_function(
        "(c) => IocDashboard.data().filter.category === c", arg=category, timeout=30_000
    )
    settle(page, before + 1)
    page.wait_for_function(
        "(c) => (IocDashboard.status().pointKeys || []).length > 0 && "
        "IocDashboard.status().pointKeys.every(k => k === c)",
        arg=category,
        timeout=30_000,
    )
    assert page.evaluate("IocDashboard.data().kpi.total") == expected[category]
    screenshot(page, "dashboard-filtered")

    # The URL reproduces the state.
    url = page.url
    page.goto(url, wait_until="load")
    settle(page, 1)
    assert page.evaluate("IocDashboard.data().filter.category") == category
    assert page.evaluate("IocDashboard.data().filter.ward") == ward
    assert page.evaluate("IocDashboard.data().kpi.total") == expected[category]
    points_of(page, ward=ward, category=category)
    page.wait_for_function(
        "(w) => IocDashboard.status().fitted === 'ward:' + w", arg=ward, timeout=30_000
    )
    ward_view = map_bounds(page)

    # Clearing the filters: the whole city's newest reports, the map back to the city.
    page.click("#dash-clear")
    status = points_of(page, ward="", category="")
    assert status["fitted"] == "" and status["pointsCapped"] is True
    assert len(status["pointIds"]) == 2000
    total = page.evaluate("IocDashboard.data().kpi.total")
    note = f"2.000 / {thousands(total)} phản ánh mới nhất"
    assert total > 2000 and page.inner_text("#dash-map-note") == note
    assert page.evaluate("IocMaps.map.getZoom()") == 11
    wide = map_bounds(page)
    assert wide[2] - wide[0] > 2 * (ward_view[2] - ward_view[0])
    rec.check_clean()


def test_a_closed_report_moves_the_kpis_without_reload(board, live_server, make_key, db_settings):
    context, page, rec = board
    page.goto(f"{live_server}/dashboards/reports_1022?{RANGE}&layout=wall", wait_until="load")
    settle(page, 1)
    page.wait_for_function("() => IocDashboard.status().live === 'live'", timeout=30_000)
    page.evaluate("window.__sameDocument = true")
    screenshot(page, "dashboard-wall")
    opened = page.evaluate("IocDashboard.data().kpi.open")
    fid = sql(
        db_settings,
        "SELECT fid::text FROM data.reports_1022 WHERE status = 'mới'"
        " AND reported_at >= '2025-01-01' ORDER BY fid LIMIT 1",
    )[0][0]
    writer = bearer(make_key("publisher", "science_tech"))
    set_status(live_server, fid, writer, closed=True)
    try:
        page.wait_for_function(
            f"() => IocDashboard.data().kpi.open === {opened - 1}", timeout=30_000
        )
        assert page.inner_text("#kpi-open").replace(".", "").replace(",", "") == str(opened - 1)
        assert page.evaluate("IocDashboard.status().events") >= 1
        assert page.evaluate("window.__sameDocument") is True
    finally:
        set_status(live_server, fid, writer, closed=False)
    rec.check_clean()


def test_a_write_during_the_first_load_moves_the_kpis(browser, live_server, make_key, db_settings):
    """The page-start gap: a report is closed while the page's first data answer is on its way
    (read from the server before the write, handed over after it). The page asks for its data
    once its stream is 'ready', so the write is an event it reloads on; a page that asked for
    the data first opened its stream after the write (held here until then) and kept the
    older numbers."""
    context, page, rec = open_page(browser, "", live_server)
    signed = context.request.post(
        f"{live_server}/maps/session", headers=bearer(make_key("operator"))
    )
    assert signed.ok, signed.text()
    writer = bearer(make_key("publisher", "science_tech"))
    fid = sql(
        db_settings,
        "SELECT fid::text FROM data.reports_1022 WHERE status = 'mới'"
        " AND reported_at >= '2025-01-01' ORDER BY fid DESC LIMIT 1",
    )[0][0]
    url = f"{live_server}/dashboards/reports_1022?{RANGE}"
    order: list[str] = []
    opened: list[int] = []

    def hold_data(route) -> None:
        if "data" in order:
            route.continue_()
            return
        order.append("data")
        answer = route.fetch()  # the numbers before the write
        opened.append(answer.json()["kpi"]["open"])
        set_status(live_server, fid, writer, closed=True)
        order.append("write")
        page.evaluate("window.__written = true")
        if order[0] == "stream":  # the write's event reaches the page during the load
            page.wait_for_function("() => IocDashboard.status().events >= 1", timeout=30_000)
        route.fulfill(response=answer)

    page.route(lambda u: "/dashboards/reports_1022/data?" in u, hold_data)
    page.route(lambda u: "/events?" in u, stream_held_after(page, order, "data"))
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function("() => window.__written === true", timeout=LOAD_TIMEOUT_MS)
        page.wait_for_function(
            "(n) => IocDashboard.data() && IocDashboard.data().kpi.open === n",
            arg=opened[0] - 1,
            timeout=30_000,
        )
        assert order[:3] == ["stream", "data", "write"], order
        rec.check_clean()
    finally:
        set_status(live_server, fid, writer, closed=False)
        context.close()
