"""Place and street names on the map pages, in headless Chromium against a real `ioc serve`.

The wall and the portal name districts at the city's zooms, wards from ~12 and streets from
~14, from ioc's own layers (``/collections/{id}/labels``), with no two label boxes meeting,
Vietnamese names exactly as stored, a halo that keeps them legible on either theme, nothing
fetched from elsewhere and no console error. Screenshots go to ``test-artifacts/``; the time
the page took to place its labels is written next to them (never asserted).
"""

from __future__ import annotations

import json
import unicodedata

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS, LOAD_TIMEOUT_MS
from tests.browser.test_map_pages import (
    PHONE,
    WALL,
    open_page,
    screenshot,
    settle,
    wait_loaded,
)

pytestmark = pytest.mark.browser

BEN_THANH = (10.7725, 106.6980)  # lat, lon: the market, among named streets
LABELS_JS = """() => Array.from(document.querySelectorAll('.ioc-label')).map((node) => {
    const r = node.getBoundingClientRect();
    return {text: node.textContent, layer: node.dataset.layer,
            box: [r.left, r.top, r.right, r.bottom]};
})"""


def shown(page) -> list[dict]:
    """The label elements on screen: text, source layer, box in CSS pixels."""
    return page.evaluate(LABELS_JS)


FLOATING_JS = """() => Array.from(document.querySelectorAll('.leaflet-control, .ioc-legend'))
    .map((node) => { const r = node.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })
    .filter((b) => b[2] > b[0] && b[3] > b[1])"""


def meet(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def assert_no_overlap(found: list[dict], viewport: dict, page=None) -> None:
    """No two label boxes meet, each lies on the map and (given the page) none is under the
    legend or a control."""
    for floating in page.evaluate(FLOATING_JS) if page else []:
        hidden = [f["text"] for f in found if meet(f["box"], floating)]
        assert not hidden, (floating, hidden)
    for i, a in enumerate(found):
        ax0, ay0, ax1, ay1 = a["box"]
        assert ax1 - ax0 > 4 and ay1 - ay0 > 4, a
        assert ax0 >= 0 and ay0 >= 0 and ax1 <= viewport["width"] and ay1 <= viewport["height"], a
        for b in found[i + 1 :]:
            assert not meet(a["box"], b["box"]), (a, b)


def go(page, rec, lat_lon: tuple[float, float], zoom: int) -> None:
    """Move the map and wait until the labels of the new view are placed."""
    draws = page.evaluate("IocMaps.status().labels.draws")
    page.evaluate(
        "([lat, lon, z]) => IocMaps.map.setView([lat, lon], z, {animate: false})",
        [lat_lon[0], lat_lon[1], zoom],
    )
    placed(page, draws)
    settle(page, rec)


def placed(page, draws: int = 0) -> None:
    """Until the page has placed labels again after `draws` with every label request done."""
    page.wait_for_function(
        f"() => IocMaps.status().labels.draws > {draws} && IocMaps.status().labels.pending === 0"
        " && IocMaps.status().labels.shown > 0",
        timeout=LOAD_TIMEOUT_MS,
    )


def by_layer(found: list[dict], layer: str) -> set[str]:
    return {f["text"] for f in found if f["layer"] == layer}


def record(name: str, page) -> dict:
    """The page's own figures for its last placement, kept beside the screenshots."""
    status = page.evaluate("IocMaps.status().labels")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "labels-timing.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = {k: status[k] for k in ("candidates", "shown", "ms", "maxMs", "draws")}
    path.write_text(json.dumps(figures, indent=1, sort_keys=True))
    assert status["errors"] == 0, status
    return status


def stored(page, layer: str, prop: str, names: set[str], server: str, headers=None) -> None:
    """The names shown are the layer's own over the view, character for character (composed,
    NFC, as the server gives them)."""
    doc = httpx.get(
        f"{server}/collections/{layer}/labels",
        params={
            "property": prop,
            "zoom": 22,
            "limit": 5000,
            "bbox": page.evaluate("IocMaps.map.getBounds().toBBoxString()"),
        },
        headers=headers or {},
    ).json()
    known = {row[0] for row in doc["labels"]}
    assert names <= known, names - known


def luminance(css: str) -> float:
    """Relative luminance (WCAG 2) of an rgb()/rgba() colour."""
    channels = [float(v) / 255 for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def halo_contrast(page, layer: str) -> float:
    """Contrast ratio between a label's ink and its halo (the text-shadow's colour)."""
    ink, shadow = page.evaluate(
        """(layer) => {
        const cs = getComputedStyle(document.querySelector(`.ioc-label[data-layer="${layer}"]`));
        return [cs.color, cs.textShadow];
    }""",
        layer,
    )
    halo = shadow[: shadow.index(")") + 1]  # the first shadow's colour, rgb(a)(…)
    hi, lo = sorted((luminance(ink), luminance(halo)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.fixture(scope="module")
def wall(browser, live_server, make_key):
    """The wall as an operator sees it (session cookie), 1920 × 1080 at its own zoom, 12."""
    context, page, rec = open_page(browser, "", live_server)
    key = make_key("operator")
    signed = context.request.post(
        f"{live_server}/maps/session", headers={"Authorization": f"Bearer {key}"}
    )
    assert signed.ok, signed.text()
    page.goto(f"{live_server}/maps/wall", wait_until="load")
    wait_loaded(page, rec, layers=4)
    placed(page)
    settle(page, rec)
    yield page, rec, {"Authorization": f"Bearer {key}"}
    context.close()


def test_wall_names_districts_and_wards_at_its_zoom(wall, live_server, data_dir):
    page, rec, key = wall
    assert page.evaluate("IocMaps.map.getZoom()") == 12
    found = shown(page)
    assert_no_overlap(found, WALL, page)
    districts, wards = by_layer(found, "districts_2024"), by_layer(found, "wards")
    assert len(districts) >= 6 and len(wards) >= 10, found
    assert not by_layer(found, "roads")  # streets from 14
    stored(page, "districts_2024", "district_name", districts, live_server, key)
    stored(page, "wards", "name", wards, live_server)
    if data_dir:  # the city's real districts
        assert {"Quận 1", "Thành phố Thủ Đức"} <= districts, districts
    assert all(unicodedata.is_normalized("NFC", f["text"]) for f in found)
    assert halo_contrast(page, "districts_2024") >= 7 and halo_contrast(page, "wards") >= 7
    record("wall z12 (1920x1080)", page)
    screenshot(page, "wall-labels-z12")
    rec.check_clean()


def test_wall_names_streets_along_them_when_zoomed_in(wall, live_server, data_dir):
    page, rec, key = wall
    go(page, rec, BEN_THANH, 15)
    found = shown(page)
    assert_no_overlap(found, WALL, page)
    streets = by_layer(found, "roads")
    assert not by_layer(found, "districts_2024")  # districts up to 12
    assert len(streets) >= 10 and by_layer(found, "wards"), found
    stored(page, "roads", "name", streets, live_server)
    if data_dir:  # OSM's streets around Bến Thành market
        known = {
            "Lê Lợi",
            "Hai Bà Trưng",
            "Nguyễn Thị Minh Khai",
            "Pasteur",
            "Lý Tự Trọng",
            "Nam Kỳ Khởi Nghĩa",
            "Nguyễn Du",
            "Lê Thánh Tôn",
            "Hàm Nghi Boulevard",
        }
        assert len(streets & known) >= 3, streets
    turned = page.evaluate(
        "Array.from(document.querySelectorAll('.ioc-label[data-layer=roads]'))"
        ".filter((n) => n.style.transform.includes('rotate')).length"
    )
    assert turned > 0  # written along the streets, not all level
    record("wall z15 (1920x1080)", page)
    screenshot(page, "wall-labels-z15")
    go(page, rec, BEN_THANH, 17)
    assert_no_overlap(shown(page), WALL, page)
    record("wall z17 (1920x1080)", page)
    rec.check_clean()


def test_labels_can_be_switched_off(wall):
    page, rec, _ = wall
    switch = page.locator(".leaflet-control-layers-overlays label", has_text="Tên địa danh")
    switch.locator("input").uncheck()
    assert page.locator(".ioc-label").count() == 0
    switch.locator("input").check()
    page.wait_for_function("() => document.querySelectorAll('.ioc-label').length > 0")
    rec.check_clean()


def test_portal_names_wards_and_streets_for_citizens(browser, live_server, data_dir):
    """Anonymous: no district names (an internal layer), ward names at the city's zoom,
    street names from 14; on a phone too."""
    context, page, rec = open_page(browser, f"{live_server}/maps/portal", live_server)
    try:
        wait_loaded(page, rec, layers=3, tiles=False)
        placed(page)
        settle(page, rec)
        found = shown(page)
        assert_no_overlap(found, WALL, page)
        assert len(by_layer(found, "wards")) >= 10 and not by_layer(found, "districts_2024")
        assert not [u for u in rec.requests if "districts_2024" in u]  # never even asked
        assert halo_contrast(page, "wards") >= 7
        record("portal z12 (1920x1080)", page)
        screenshot(page, "portal-labels-z12")
        go(page, rec, BEN_THANH, 16)
        found = shown(page)
        assert_no_overlap(found, WALL, page)
        assert len(by_layer(found, "roads")) >= 10
        if data_dir:
            assert "Bến Thành" in by_layer(found, "wards")
        record("portal z16 (1920x1080)", page)
        screenshot(page, "portal-labels-z16")
        page.set_viewport_size(PHONE)
        go(page, rec, BEN_THANH, 16)
        found = shown(page)
        assert_no_overlap(found, PHONE, page)
        assert by_layer(found, "roads")
        screenshot(page, "portal-labels-phone")
        rec.check_clean()
    finally:
        context.close()


def test_a_name_with_markup_is_shown_as_text(browser, live_server, make_key):
    """A ward renamed with HTML and script in it: the label shows the characters, nothing is
    parsed or run (labels are set with textContent; the CSP would refuse the handler too)."""
    admin = {"Authorization": f"Bearer {make_key('admin')}"}
    ward = httpx.get(
        f"{live_server}/collections/wards/items",
        params={"limit": 1, "bbox": "106.695,10.770,106.700,10.775"},
    ).json()["features"][0]
    url = f"{live_server}/collections/wards/items/{ward['id']}"
    name = ward["properties"]["name"]
    hostile = f'<img src=x onerror="window.__pwned=1">{name}'
    patch = {**admin, "Content-Type": "application/merge-patch+json"}
    assert httpx.patch(url, json={"properties": {"name": hostile}}, headers=patch).is_success
    context, page, rec = open_page(browser, f"{live_server}/maps/portal", live_server)
    try:
        wait_loaded(page, rec, layers=3, tiles=False)
        placed(page)
        doc = httpx.get(
            f"{live_server}/collections/wards/labels", params={"property": "name", "zoom": 22}
        ).json()
        (lon, lat) = [(r[1], r[2]) for r in doc["labels"] if r[0] == hostile][0]
        go(page, rec, (lat, lon), 14)
        assert hostile in by_layer(shown(page), "wards")
        assert page.locator(".leaflet-ioc-labels-pane img").count() == 0
        assert page.evaluate("window.__pwned") is None
        rec.check_clean()
    finally:
        context.close()
        httpx.patch(url, json={"properties": {"name": name}}, headers=patch)
