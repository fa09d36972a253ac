"""The web face in headless Chromium against a real `ioc serve`: the front page leads citizens
to the portal and an operator to the wall, the catalog finds layers without diacritics, the
items page draws its features beside the table and links the two both ways, and a phone sees
no sideways scroll (the portal's own phone test is test_map_pages.test_portal_on_a_phone). Every page: no request outside the server, no console error.
Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import pytest

from tests.browser.conftest import LOAD_TIMEOUT_MS
from tests.browser.test_map_pages import PHONE, WALL, open_page, screenshot, settle, wait_loaded

pytestmark = pytest.mark.browser

SELECTED_STROKE = "#d4380d"  # ioc-web.js SELECTED.color


def wait_map(page, rec) -> dict:
    """Until the page's map has drawn its features; the page's own status."""
    page.wait_for_function("() => window.IocWeb && IocWeb.status().ready", timeout=LOAD_TIMEOUT_MS)
    settle(page, rec)
    status = page.evaluate("IocWeb.status()")
    assert status["errors"] == 0, status
    return status


def no_sideways_scroll(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_front_page_leads_citizens_to_the_map(browser, live_server):
    context, page, rec = open_page(browser, f"{live_server}/", live_server)
    try:
        assert page.get_attribute("html", "lang") == "vi"
        portal = page.locator("#ioc-portal-link")
        assert portal.is_visible() and portal.get_attribute("href") == "/maps/portal"
        assert page.locator("a[data-view=wall]").count() == 0  # not for anonymous callers
        assert page.locator("#ioc-sign-in").is_visible()
        domains = page.locator(".ioc-domains li").all_inner_texts()
        assert any(text.startswith("Chống ngập và thoát nước") for text in domains), domains
        # The address search answers in the page, each result linked to its place on a map.
        page.fill("#ioc-address-q", "pham the hien")
        page.click("#ioc-address-search button[type=submit]")
        page.wait_for_selector("#ioc-address-results li a", timeout=LOAD_TIMEOUT_MS)
        first = page.locator("#ioc-address-results li a").first
        assert "Phạm Thế Hiển" in first.inner_text()
        settle(page, rec)
        screenshot(page, "front-page")
        first.click()
        page.wait_for_url("**/collections/digital_addresses/items?**")
        status = wait_map(page, rec)
        assert status["features"] == 1 and page.locator("tr[data-fid]").count() == 1
        rec.check_clean()
    finally:
        context.close()


def test_front_page_shows_an_operator_the_wall(browser, live_server, make_key):
    context, page, rec = open_page(browser, f"{live_server}/maps/session", live_server)
    try:
        page.fill("#key", make_key("operator"))
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server}/maps/wall", timeout=LOAD_TIMEOUT_MS)
        page.goto(f"{live_server}/", wait_until="load")
        wall = page.locator("#ioc-staff-links a[data-view=wall]")
        assert wall.is_visible() and wall.get_attribute("href") == "/maps/wall"
        assert page.locator("#ioc-staff-links a[href='/dashboards']").count() == 1
        assert page.locator("#ioc-sign-in").count() == 0
        screenshot(page, "front-page-operator")
        wall.click()
        page.wait_for_url(f"{live_server}/maps/wall", timeout=LOAD_TIMEOUT_MS)
        wait_loaded(page, rec, layers=4)
        rec.check_clean()
    finally:
        context.close()


def test_catalog_search_without_diacritics(browser, live_server):
    context, page, rec = open_page(browser, f"{live_server}/catalog/layers?f=html", live_server)
    try:
        every = page.locator("li.ioc-layer").count()
        page.fill("#ioc-catalog-q", "ngap")
        page.click("#ioc-catalog-filters button[type=submit]")
        page.wait_for_url("**/catalog/layers?**q=ngap**")
        ids = page.eval_on_selector_all(
            "li.ioc-layer", "els => els.map(e => e.getAttribute('data-layer'))"
        )
        assert {"flood_points", "flood_warnings", "flood_risk_zones", "flood_sensors"} <= set(ids)
        assert "schools" not in ids and len(ids) < every
        titles = page.locator("li.ioc-layer h2").all_inner_texts()
        assert "ngập" in titles[0].lower()  # title matches first
        screenshot(page, "catalog-search")
        # A filter applies as soon as it is chosen (no button needed), with the search kept.
        page.select_option("select[name=access]", "public")
        page.wait_for_url("**access=public**")
        assert page.input_value("#ioc-catalog-q") == "ngap"
        accesses = page.locator("li.ioc-layer .ioc-meta .access-public").count()
        assert accesses == page.locator("li.ioc-layer").count() > 0
        rec.check_clean()
    finally:
        context.close()


FIND_POINT_INSIDE = """(index) => {
    const path = document.querySelectorAll('.leaflet-overlay-pane path')[index];
    const box = path.getBoundingClientRect();
    for (let fy = 0.5; fy < 1; fy += 0.05) {
        for (const f of [fy, 1 - fy]) {
            for (let fx = 0.1; fx < 0.95; fx += 0.05) {
                const x = box.left + box.width * fx, y = box.top + box.height * f;
                if (document.elementFromPoint(x, y) === path) { return [x, y]; }
            }
        }
    }
    return null;
}"""


def test_wards_items_page_links_map_and_table(browser, live_server):
    url = f"{live_server}/collections/wards/items?f=html&limit=20"
    context, page, rec = open_page(browser, url, live_server)
    try:
        status = wait_map(page, rec)
        assert status["features"] == 20
        assert page.locator(".leaflet-overlay-pane path").count() == 20
        assert page.locator("#ioc-items tbody tr").count() == 20
        # A polygon clicked: its row is highlighted (and only it).
        point = page.evaluate(FIND_POINT_INSIDE, 7)
        assert point, "no visible point inside the 8th polygon"
        page.mouse.click(*point)
        page.wait_for_selector("tr.ioc-selected")
        selected = page.evaluate("IocWeb.status().selected")
        rows = page.locator("tr.ioc-selected")
        assert rows.count() == 1 and rows.get_attribute("data-fid") == selected
        stroke = page.eval_on_selector_all(
            ".leaflet-overlay-pane path", "ps => ps.map(p => p.getAttribute('stroke'))"
        )
        assert stroke.count(SELECTED_STROKE) == 1
        screenshot(page, "wards-items")
        # And back: a row clicked highlights its polygon.
        other = page.locator("#ioc-items tbody tr").nth(2)
        other.locator("td").nth(1).click()
        assert page.evaluate("IocWeb.status().selected") == other.get_attribute("data-fid")
        assert other.get_attribute("class") == "ioc-selected"
        assert page.locator("tr.ioc-selected").count() == 1
        rec.check_clean()
    finally:
        context.close()


def test_feature_page_shows_geometry_and_linked_addresses(browser, live_server):
    url = f"{live_server}/collections/bus_stops/items/1?f=html"
    context, page, rec = open_page(browser, url, live_server)
    try:
        assert wait_map(page, rec)["features"] == 1
        assert page.locator(".leaflet-overlay-pane path").count() == 1
        codes = page.locator("#ioc-addresses li code").all_inner_texts()
        assert codes and all(code.isdigit() and len(code) == 10 for code in codes), codes
        rec.check_clean()
    finally:
        context.close()


@pytest.mark.parametrize(
    "path", ["/", "/catalog/layers?f=html", "/collections/wards/items?f=html&limit=20"]
)
def test_pages_fit_a_phone(browser, live_server, path):
    context, page, rec = open_page(
        browser, f"{live_server}{path}", live_server, viewport=PHONE, mobile=True
    )
    try:
        if "items" in path:
            wait_map(page, rec)
            box = page.locator("#ioc-map").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 250
        settle(page, rec)
        no_sideways_scroll(page)
        rec.check_clean()
        name = {"/": "front-page-phone"}.get(path, path.strip("/").split("?")[0].replace("/", "-"))
        screenshot(page, f"{name}-phone" if path != "/" else name)
    finally:
        context.close()


def test_front_page_on_a_desktop(browser, live_server):
    context, page, rec = open_page(browser, f"{live_server}/", live_server, viewport=WALL)
    try:
        settle(page, rec)
        assert page.evaluate("document.documentElement.scrollWidth") <= WALL["width"]
        rec.check_clean()
    finally:
        context.close()
