"""Every link ioc hands out honours IOC_PUBLIC_URL, path prefix included (ioc behind a reverse
proxy at https://gis.example/ioc), and follows the request's host and root path without it."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from html import unescape
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from ioc.settings import ServerSettings
from tests.http.test_maps import layer_configs

PUBLIC = "https://gis.example/ioc"
LINK_KEYS = {"href", "url", "tiles", "sprite", "glyphs", "embed", "$id"}
ATTRIBUTE = re.compile(r'(?:href|src|action)="([^"]*)"')


def _app_client(settings, **client_args) -> Iterator[TestClient]:
    from api.app import create_app

    with TestClient(create_app(settings), **client_args) as client:
        yield client


@pytest.fixture(scope="module")
def proxied(settings) -> Iterator[TestClient]:
    """The app as a proxy at https://gis.example/ioc reaches it: prefix stripped, nothing
    forwarded, only IOC_PUBLIC_URL tells the public address."""
    public = copy.copy(settings)
    public.server = ServerSettings(public_url=PUBLIC)
    yield from _app_client(public)


@pytest.fixture(scope="module")
def mounted(settings) -> Iterator[TestClient]:
    """No IOC_PUBLIC_URL: served under the root path /gis on another host name."""
    yield from _app_client(settings, base_url="http://other.example:8080", root_path="/gis")


def json_links(doc: Any) -> list[str]:
    """Every URL a JSON answer hands out: link hrefs, TileJSON/style tiles, sources' urls."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in LINK_KEYS and isinstance(value, str):
                found.append(value)
            elif key in LINK_KEYS and isinstance(value, list):
                found.extend(v for v in value if isinstance(v, str))
            else:
                found.extend(json_links(value))
    elif isinstance(doc, list):
        for value in doc:
            found.extend(json_links(value))
    return found


def html_links(html: str) -> list[str]:
    """href/src/action attributes and the data URLs of a map page's layer configurations."""
    urls = [unescape(u) for u in ATTRIBUTE.findall(html)]
    urls = [u for u in urls if not u.startswith(("data:", "#", "mailto:"))]
    return urls + [c["url"] for c in layer_configs(html) if c.get("url")]


def _get_json(client: TestClient, path: str) -> Any:
    response = client.get(path, headers={"Accept": "application/json"})
    assert response.status_code == 200, (path, response.text[:300])
    return response.json()


def _get_html(client: TestClient, path: str) -> str:
    response = client.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 200, (path, response.text[:300])
    return response.text


def _paged_layer(client: TestClient) -> str:
    """A public layer with more than two features (so ``limit=2`` has a next page)."""
    layers = _get_json(client, "/catalog/layers")["layers"]
    return next(
        la["id"] for la in layers if la["access"] == "public" and (la["feature_count"] or 0) > 2
    )


def all_links(client: TestClient) -> dict[str, list[str]]:
    """The links of each page the acceptance criterion names, by page."""
    layer = _paged_layer(client)
    pages: dict[str, list[str]] = {}
    for path in (
        "/",
        "/collections",
        f"/collections/{layer}",
        f"/collections/{layer}/queryables",
        f"/collections/{layer}/tiles",
        f"/collections/{layer}/tiles/WebMercatorQuad/tilejson.json",
        "/catalog/layers",
        "/maps",
        "/tileMatrixSets",
        f"/tiles/{layer}/tilejson.json",
        f"/styles/{layer}.json",
    ):
        pages[path] = json_links(_get_json(client, path))
    items = _get_json(client, f"/collections/{layer}/items?limit=2&offset=2")
    assert {"next", "prev"} <= {link["rel"] for link in items["links"]}
    pages["items"] = json_links(items)
    first = items["features"][0]["id"]
    pages["item"] = json_links(_get_json(client, f"/collections/{layer}/items/{first}"))
    for path in (
        "/",
        "/collections",
        f"/collections/{layer}",
        f"/collections/{layer}/items?limit=2",
        "/catalog/layers",
        "/maps",
        "/maps/portal",
        f"/maps/preview/{layer}",
        "/maps/session",
    ):
        pages[f"{path} (HTML)"] = html_links(_get_html(client, path))
    return pages


def test_every_link_starts_with_the_public_url(proxied):
    pages = all_links(proxied)
    wrong = {
        page: [u for u in urls if not u.startswith(PUBLIC + "/")] for page, urls in pages.items()
    }
    assert {page: urls for page, urls in wrong.items() if urls} == {}
    # Not vacuous: each page has links, the map page its tiles and items URLs.
    assert all(pages.values()), [page for page, urls in pages.items() if not urls]
    portal = pages["/maps/portal (HTML)"]
    assert any("/tiles/" in u for u in portal) and any("/items" in u for u in portal)


def test_links_follow_the_request_without_a_public_url(mounted):
    pages = all_links(mounted)
    for page, urls in pages.items():
        # JSON links are absolute; HTML pages may also link root-relative (whatever host name
        # the browser used).
        prefixes = ("http://other.example:8080/gis/",)
        if page.endswith("(HTML)"):
            prefixes += ("/gis/",)
        assert [u for u in urls if not u.startswith(prefixes)] == [], page


def test_the_map_page_config_carries_the_public_base(proxied):
    html = _get_html(proxied, "/maps/portal")
    config = re.search(r"IocMaps\.page\(\s*map_\w+,\s*(\{.*?\})\);", html, re.S)
    # The page's own settings (address search, what's-here) build their URLs on it.
    assert config is not None and json.loads(config.group(1))["base"] == PUBLIC


def test_sign_in_goes_through_the_prefix(proxied):
    """The wall redirects to the prefixed sign-in form, which accepts the prefixed way back
    and refuses anything outside the prefix."""
    wall = proxied.get("/maps/wall", headers={"Accept": "text/html"}, follow_redirects=False)
    assert wall.status_code == 303
    back = quote("/ioc/maps/wall", safe="")
    assert wall.headers["location"] == f"{PUBLIC}/maps/session?next={back}"
    form = _get_html(proxied, "/maps/session?next=/ioc/maps/wall%3Flang%3Den")
    assert 'value="/ioc/maps/wall?lang=en"' in form
    for outside in ("/maps/wall", "https://evil.example/ioc/maps/wall", "/ioc/other"):
        form = _get_html(proxied, f"/maps/session?next={quote(outside, safe='')}")
        assert 'value="/ioc/maps/wall"' in form, outside
