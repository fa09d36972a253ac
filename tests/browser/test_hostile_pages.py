"""Stored script in the pages: hostile titles, labels and values are shown as text, in Chromium.

A department publisher creates a layer through ``POST /layers`` whose titles, description,
attribute labels, legend labels and attribute values are HTML and script; an analyst saves a
query with a hostile title. A real ``ioc serve`` (views folder = ioc's views plus these layers)
then serves every page that shows them — previews, the wall, the portal, their embeds, the
``/maps`` list and the OGC / catalog HTML pages — and each one, opened in Debian's Chromium, must
show the hostile strings as text: nothing runs (``window.__pwned`` unset, ``document.title``
unchanged), no element is made from them, no ioc script is blocked by the CSP, no console
error, and the map still draws.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import psycopg2
import pytest

from ioc.maps import views as maps
from tests.browser.conftest import LOAD_TIMEOUT_MS
from tests.browser.test_map_pages import WALL, open_page, paths_in, screenshot, settle
from tests.conftest import VENV_BIN, free_port, server_env, wait_ready

pytestmark = pytest.mark.browser

IMG = "<img src=x onerror=\"document.title='pwned'\">"
SCRIPT = "</script><script>window.__pwned=1</script>"
SVG = '<svg onload="window.__pwned=2"></svg>'
LAYER = "hx_points"
SAVED = "hx_saved"
HOSTILE = {
    "id": LAYER,
    "title": {"vi": IMG, "en": SCRIPT},
    "description": {"vi": SVG, "en": IMG},
    "domain": "flooding",
    "department": "construction",
    "geometry": {"type": "Point", "srid": 4326},
    "access": "public",
    "cadence": "static",
    "source": {"name": SCRIPT, "licence": "CC0"},
    "id_attribute": "code",
    "zoom": {"min": 8, "max": 22},
    "keywords": [IMG],
    "attributes": [
        {"name": "code", "type": "text", "label": {"vi": "Mã", "en": "Code"}, "required": True},
        {"name": "name", "type": "text", "label": {"vi": SVG, "en": SVG}},
        {"name": "note", "type": "text", "label": {"vi": IMG, "en": SCRIPT}, "unit": SVG},
    ],
    "style": {
        "color": "#d7191c",
        "legend": [{"label": {"vi": SCRIPT, "en": IMG}, "color": "#d7191c"}],
    },
    "demo": {"count": 1, "weight": "uniform"},
}
FEATURES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [106.70 + i / 100, 10.78]},
            "properties": {"code": f"{IMG}{i}", "name": SCRIPT if i % 2 else IMG, "note": SVG},
        }
        for i in range(3)
    ],
}


# The layers and saved query of this module, with their tables, versions and audit rows.
DROP = r"""
DO $$ DECLARE t record; BEGIN
  FOR t IN SELECT schemaname, tablename FROM pg_tables
           WHERE tablename LIKE 'hx\_%' AND schemaname IN ('data', 'versions', 'staging') LOOP
    EXECUTE format('DROP TABLE %I.%I', t.schemaname, t.tablename);
  END LOOP;
  DELETE FROM ioc.layers WHERE id LIKE 'hx\_%';
  DELETE FROM ioc.audit WHERE layer_id LIKE 'hx\_%';
END $$"""


def _drop(db_settings) -> None:
    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn, conn.cursor() as cur:
            cur.execute(DROP)
    finally:
        conn.close()


def _views_with_hostile_layers(folder: Path) -> Path:
    """ioc's views, with the hostile layer (and the saved query, on the wall) drawn on them."""
    for path in maps.VIEWS_DIR.glob("*.yaml"):
        shutil.copyfile(path, folder / path.name)
    for name, extra in (("wall", [LAYER, SAVED]), ("portal", [LAYER])):
        path = folder / f"{name}.yaml"
        text = path.read_text(encoding="utf-8").rstrip("\n") + "\n"
        text += "".join(f"  - {{layer: {layer}, kind: features}}\n" for layer in extra)
        path.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hostile(db_settings, make_key, server_tmp):
    """A live server whose catalog holds the hostile layer and saved query; keys to see them."""
    _drop(db_settings)
    views = _views_with_hostile_layers(server_tmp("hostile-views"))
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "ioc"), "serve", "--port", str(port)],
        env=server_env(db_settings, IOC_LOG_LEVEL="warning", IOC_MAPS_VIEWS_DIR=str(views)),
    )
    url = f"http://127.0.0.1:{port}"
    publisher = {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}
    analyst = {"Authorization": f"Bearer {make_key('analyst')}"}
    try:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=120) as http:
            created = http.post("/layers", json=HOSTILE, headers=publisher)
            assert created.status_code == 201, created.text
            data = http.put(
                f"/layers/{LAYER}/data",
                params={"filename": "hx.geojson"},
                content=json.dumps(FEATURES).encode(),
                headers=publisher,
            )
            assert data.status_code == 200, data.text
            saved = http.post(
                "/query/saved",
                headers=analyst,
                json={
                    "id": SAVED,
                    "access": "internal",
                    "title": {"vi": SCRIPT, "en": IMG},
                    "description": {"vi": IMG, "en": SVG},
                    "query": {"source": LAYER},
                },
            )
            assert saved.status_code == 201, saved.text
        yield {"url": url, "analyst": analyst}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        _drop(db_settings)


# Set before any page script: records CSP violations (an ioc script blocked, or a hostile
# handler that was parsed as markup and refused).
WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || ''));
});
"""


def _visit(browser, url: str, origin: str, headers: dict[str, str] | None = None):
    context, page, rec = open_page(browser, "", origin, viewport=WALL, headers=headers)
    context.add_init_script(WATCH)
    page.goto(url, wait_until="load")
    return context, page, rec


def _nothing_ran(page, rec, title: str) -> None:
    assert page.evaluate("window.__pwned") is None
    assert page.title() == title
    assert page.evaluate("window.__violations") == []
    assert page.locator("img[src='x'], svg[onload], [onerror], [onload]").count() == 0
    rec.check_clean()


def _wait_drawn(page, rec, layers: int) -> None:
    page.wait_for_function(
        f"() => window.IocMaps && IocMaps.status().loaded >= {layers} && "
        "IocMaps.status().pending === 0 && IocMaps.status().tiles > 0",
        timeout=LOAD_TIMEOUT_MS,
    )
    settle(page, rec)
    status = page.evaluate("IocMaps.status()")
    assert status["errors"] == 0 and status["tileErrors"] == 0, status


def _control_labels(page) -> list[str]:
    """The layer switcher's names as text (Leaflet puts ' ' + name in a span)."""
    return [
        text.strip()
        for text in page.locator(".leaflet-control-layers-overlays label span span").evaluate_all(
            "nodes => nodes.map(n => n.textContent)"
        )
    ]


def _legend_titles(page) -> list[str]:
    return page.locator("#ioc-legend h2").evaluate_all("ns => ns.map(n => n.textContent)")


@pytest.mark.parametrize(("lang", "title", "legend"), [("vi", IMG, SCRIPT), ("en", SCRIPT, IMG)])
def test_preview_shows_hostile_layer_text_as_text(browser, hostile, lang, title, legend):
    url = hostile["url"]
    context, page, rec = _visit(browser, f"{url}/maps/preview/{LAYER}?lang={lang}", url)
    try:
        _wait_drawn(page, rec, layers=1)
        assert paths_in(page, "ioc-points") == 3
        assert title in _control_labels(page)
        assert page.locator(".ioc-brand h1").text_content() == title
        assert _legend_titles(page) == [title]
        assert page.locator("#ioc-legend li").evaluate_all("ns => ns.map(n => n.textContent)") == [
            legend
        ]
        page.locator(".leaflet-ioc-points-pane path").nth(1).click(force=True)
        page.wait_for_selector(".ioc-popup dl dt", timeout=10_000)
        popup = page.locator(".ioc-popup")
        assert popup.locator("h3").text_content() == SCRIPT  # props.name
        assert popup.locator(".ioc-popup-layer").text_content() == title
        assert (IMG if lang == "vi" else SCRIPT) in popup.locator("dt").all_text_contents()
        assert f"{SVG} {SVG}" in popup.locator("dd").all_text_contents()  # value and unit
        _nothing_ran(page, rec, f"{title} — IOC TP.HCM")
        screenshot(page, f"hostile-preview-{lang}")
    finally:
        context.close()


def test_saved_query_preview_shows_its_title_as_text(browser, hostile):
    url = hostile["url"]
    context, page, rec = _visit(
        browser, f"{url}/maps/preview/{SAVED}", url, headers=hostile["analyst"]
    )
    try:
        _wait_drawn(page, rec, layers=1)
        assert paths_in(page, "ioc-points") == 3
        assert SCRIPT in _control_labels(page)
        assert _legend_titles(page) == [SCRIPT]
        _nothing_ran(page, rec, f"{SCRIPT} — IOC TP.HCM")
    finally:
        context.close()


@pytest.mark.parametrize(
    "path",
    [
        "/maps/wall",
        "/maps/wall?lang=en",
        "/maps/wall?embed=1",
        "/maps/portal",
        "/maps/portal?lang=en",
        "/maps/portal?embed=1",
    ],
)
def test_views_show_hostile_titles_as_text(browser, hostile, path):
    url = hostile["url"]
    wall = path.startswith("/maps/wall")
    en = "lang=en" in path
    context, page, rec = _visit(
        browser, url + path, url, headers=hostile["analyst"] if wall else None
    )
    try:
        _wait_drawn(page, rec, layers=6 if wall else 4)
        labels = _control_labels(page)
        assert (SCRIPT if en else IMG) in labels
        if wall:
            assert (IMG if en else SCRIPT) in labels  # the saved query
        assert (SCRIPT if en else IMG) in _legend_titles(page)
        view = maps.load_view(maps.VIEWS_DIR / f"{path.split('/')[2].split('?')[0]}.yaml")
        _nothing_ran(page, rec, f"{view.title.get('en' if en else 'vi')} — IOC TP.HCM")
        screenshot(page, "hostile-" + path.strip("/").replace("/", "-").replace("?", "-"))
    finally:
        context.close()


@pytest.mark.parametrize(
    "path",
    [
        "/?f=html",
        "/maps?f=html",
        "/catalog/layers?f=html",
        f"/catalog/layers/{LAYER}?f=html",
        "/collections?f=html",
        f"/collections/{LAYER}?f=html",
        f"/collections/{LAYER}/items?f=html",
        f"/collections/{LAYER}/queryables?f=html",
    ],
)
def test_html_pages_show_hostile_text_as_text(browser, hostile, path):
    url = hostile["url"]
    served = httpx.get(url + path, headers=hostile["analyst"], timeout=60)
    assert served.status_code == 200, served.text
    # The title as the browser must show it: the <title> element's text, whitespace collapsed.
    title = " ".join(
        html.unescape(re.search(r"<title>(.*?)</title>", served.text, re.S)[1]).split()
    )
    context, page, rec = _visit(browser, url + path, url, headers=hostile["analyst"])
    try:
        if "/maps" not in path and path != "/?f=html":
            text = page.locator("body").inner_text()
            assert IMG in text or SCRIPT in text
        _nothing_ran(page, rec, title)
    finally:
        context.close()
