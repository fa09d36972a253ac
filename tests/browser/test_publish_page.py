"""The publishing page (/publish) in headless Chromium against a real `ioc serve`.

A planning publisher signs in with the department's key, creates a layer from a zipped VN-2000
Shapefile by confirming four fields on the preview (report and map), publishes it, and finds it
in /collections and on its map preview; a health publisher does not see it (restricted). Then a
new version's dry run shows what would change over the live data and changes nothing. No
console error and no request outside the server.
"""

from __future__ import annotations

import httpx
import psycopg2
import pytest

from tests.browser.conftest import ARTIFACTS, LOAD_TIMEOUT_MS
from tests.browser.test_map_pages import open_page, settle
from tests.http.test_publish_inference import bus_stops_shapefile, checksum, clean_layers

pytestmark = pytest.mark.browser

LAYER = "pb_bus_stops"


@pytest.fixture(scope="module", autouse=True)
def clean(db_settings):
    clean_layers(db_settings, "pb")
    yield
    clean_layers(db_settings, "pb")


def wait_step(page, *steps: str) -> None:
    wanted = " || ".join(f"IocPublish.status().step === '{s}'" for s in (*steps, "error"))
    page.wait_for_function(f"() => window.IocPublish && ({wanted})", timeout=LOAD_TIMEOUT_MS)
    status = page.evaluate("IocPublish.status()")
    assert status["step"] in steps, page.inner_text("#error")


def sign_in(browser, server: str, key: str):
    context, page, rec = open_page(browser, f"{server}/publish", server)
    wait_step(page, "signed-out")
    page.fill("#key", key)
    page.click("#signin-form button[type=submit]")
    wait_step(page, "ready")
    return context, page, rec


def test_a_publisher_creates_a_layer_from_a_vn2000_shapefile(
    browser, live_server, make_key, tmp_path, db_settings
):
    planning, health = make_key("publisher", "planning"), make_key("publisher", "health")
    archive = bus_stops_shapefile(tmp_path, limit=30, name="tram_xe_buyt")
    context, page, rec = sign_in(browser, live_server, planning)
    try:
        assert page.inner_text("#department") == "planning"
        page.set_input_files("#create-file", str(archive))
        page.click("#create-preview")
        wait_step(page, "preview-drawn")
        assert page.inner_text("#report-accepted") == "30"
        assert page.inner_text("#report-rejected") == "0"
        assert "EPSG:9210" in page.inner_text("#report-crs")
        assert page.inner_text("#report-added") == "30"
        assert page.locator("#preview-map path.leaflet-interactive").count() == 30
        # Under it, ioc's own basemap (water, roads, wards) from this server's vector tiles.
        page.wait_for_function(
            "() => IocPublish.status().basemapTiles > 0", timeout=LOAD_TIMEOUT_MS
        )
        basemap = [u for u in rec.requests if "/tiles/water_areas,roads,wards/" in u]
        assert basemap and all(u.startswith(live_server) for u in basemap)
        assert page.locator("#preview-map canvas.leaflet-tile").count() > 0
        # Nothing exists yet: the preview is not the layer.
        assert httpx.get(f"{live_server}/collections/{LAYER}").status_code == 404
        page.fill("#title-vi", "Trạm xe buýt (thử)")
        page.fill("#title-en", "PB bus stops")
        page.select_option("#domain", "transport")
        page.select_option("#access", "restricted")
        page.select_option("#id-attribute", "stop_id")
        settle(page, rec)
        page.screenshot(path=str(ARTIFACTS / "publish-preview.png"), full_page=True)
        page.click("#publish")
        wait_step(page, "published")
        assert page.inner_text("#published-layer") == LAYER
        page.wait_for_selector(f'#layer-table tr[data-layer="{LAYER}"]')
        page.screenshot(path=str(ARTIFACTS / "publish-done.png"), full_page=True)
        # On a map preview, through the same session.
        page.click("#published-map")
        page.wait_for_function(
            "() => window.IocMaps && IocMaps.status().loaded >= 1 && IocMaps.status().pending === 0",
            timeout=LOAD_TIMEOUT_MS,
        )
        settle(page, rec)
        assert page.evaluate("IocMaps.status().errors") == 0
        page.screenshot(path=str(ARTIFACTS / "publish-map-preview.png"))
        rec.check_clean()
    finally:
        context.close()
    mine = {"Authorization": f"Bearer {planning}"}
    collections = httpx.get(f"{live_server}/collections", headers=mine).json()
    assert LAYER in [c["id"] for c in collections["collections"]]
    items = httpx.get(
        f"{live_server}/collections/{LAYER}/items", params={"limit": 100}, headers=mine
    ).json()
    assert len(items["features"]) == 30
    other = {"Authorization": f"Bearer {health}"}
    assert httpx.get(f"{live_server}/collections/{LAYER}", headers=other).status_code == 404
    listed = httpx.get(f"{live_server}/collections", headers=other).json()
    assert LAYER not in [c["id"] for c in listed["collections"]]
    context, page, rec = sign_in(browser, live_server, health)
    try:
        assert page.locator(f'#layer-table tr[data-layer="{LAYER}"]').count() == 0
        rec.check_clean()
    finally:
        context.close()

    # A new version's dry run: the live stops under the new ones, what would change; nothing
    # changes until publish, and a discarded preview is gone.
    conn = psycopg2.connect(db_settings.dsn())
    before = checksum(conn, LAYER)
    (tmp_path / "v2").mkdir()
    bigger = bus_stops_shapefile(tmp_path / "v2", limit=40, name="tram_v2")
    context, page, rec = sign_in(browser, live_server, planning)
    try:
        page.click(f'#layer-table tr[data-layer="{LAYER}"] button:text("Tải lên / Upload")')
        page.set_input_files("#upload-file", str(bigger))
        page.click("#upload-preview")
        wait_step(page, "preview-drawn")
        assert page.inner_text("#report-added") == "10"
        assert page.inner_text("#report-removed") == "0"
        assert page.evaluate("IocPublish.status().drawn") == {"live": 30, "preview": 40}
        page.screenshot(path=str(ARTIFACTS / "publish-new-version.png"), full_page=True)
        assert checksum(conn, LAYER) == before
        page.click("#discard")
        wait_step(page, "idle")
        page.click(f'#layer-table tr[data-layer="{LAYER}"] button:text("Phiên bản / Versions")')
        page.wait_for_selector("#audit tbody tr")
        actions = page.locator("#audit tbody tr td:nth-child(2)").all_inner_texts()
        assert actions == ["layer.replace", "layer.create"]
        settle(page, rec)
        rec.check_clean()
    finally:
        context.close()
        conn.close()
    assert checksum(psycopg2.connect(db_settings.dsn()), LAYER) == before
