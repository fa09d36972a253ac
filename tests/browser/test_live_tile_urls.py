"""Versioned tile URLs on a live page (issue 24 item 3, docs/scaling.md): a live tile layer asks
for its tiles with the version TileJSON hands out, and after a change event with the event's
version, so no HTTP cache can answer it with a tile from before the change."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from layers import registry
from tests.browser.conftest import LOAD_TIMEOUT_MS
from tests.browser.test_live_map import bearer, patch, received
from tests.browser.test_map_pages import open_page, pumping, settle
from tests.polling import wait_until

pytestmark = pytest.mark.browser


def versions(rec, start: int = 0) -> set[str]:
    """The ``v`` of the roads tiles the page asked for, from the ``start``-th tile on."""
    return {
        parse_qs(urlsplit(url).query).get("v", [""])[0]
        for url, _, _ in rec.tiles[start:]
        if "/tiles/roads/" in url
    }


def template_version(server: str) -> str:
    doc = httpx.get(f"{server}/tiles/roads/tilejson.json", timeout=30).json()
    return doc["tiles"][0].rsplit("?v=", 1)[1]


def test_a_live_tile_layer_asks_for_the_event_s_version(browser, live_server, make_key):
    """The roads preview (a live tile layer): its first tiles carry TileJSON's version; a PATCH
    of a road makes it draw a new set of tiles whose version is the event's id, which is what
    TileJSON hands out then."""
    context, page, rec = open_page(browser, f"{live_server}/maps/preview/roads", live_server)
    writer = bearer(make_key("publisher", "construction"))
    road = httpx.get(f"{live_server}/collections/roads/items", params={"limit": 1}).json()
    fid, name = road["features"][0]["id"], road["features"][0]["properties"].get("name")
    try:
        page.wait_for_function(
            "() => window.IocMaps && IocMaps.status().tiles > 4 && "
            "IocMaps.status().live.state === 'on'",
            timeout=LOAD_TIMEOUT_MS,
        )
        settle(page, rec)
        assert versions(rec) == {template_version(live_server)}
        start = len(rec.tiles)
        patch(live_server, "roads", fid, {"name": "Đường thử phiên bản"}, writer)
        wait_until(lambda: received(page, "roads"), message="the page to hear the road's event")
        event = received(page, "roads")[-1]["id"]
        # Pumping: the tile requests reach the recorder only while a Playwright call waits.
        wait_until(
            lambda: len(versions(rec, start)) > 0,
            message="the page's new set of tiles",
            sleep=pumping(page),
        )
        settle(page, rec)
        (new,) = versions(rec, start)
        assert new.split(".")[0] == str(event)
        assert new == template_version(live_server)  # the URL any other client gets now
        assert all(status in (200, 204) for url, status, _ in rec.tiles[start:])
        rec.check_clean()
    finally:
        patch(live_server, "roads", fid, {"name": name}, writer)
        context.close()


def test_a_placed_write_keeps_the_digest_after_a_change_without_an_event(live_server, make_key, db):
    """A road write after the layer changed without an event (as after seeding, whose
    recounts record none: the layer's first write) moves the template's event, not its
    digest: the pages holding the template keep asking for tiles a CDN may keep."""
    before = template_version(live_server)
    with db.cursor() as cur:
        registry.bump_stats(cur, "roads", 0, None)  # a version without an event
    db.commit()
    # The server sees the registry change at its next catalog check: the digest moves.
    wait_until(
        lambda: template_version(live_server).split(".")[1] != before.split(".")[1],
        message="the server to take in the version without an event",
    )
    keyed = template_version(live_server)
    writer = bearer(make_key("publisher", "construction"))
    road = httpx.get(f"{live_server}/collections/roads/items", params={"limit": 1}).json()
    fid, name = road["features"][0]["id"], road["features"][0]["properties"].get("name")
    try:
        patch(live_server, "roads", fid, {"name": "Đường thử phiên bản"}, writer)
        after = template_version(live_server)  # the PATCH answers once this process knows it
        assert after.split(".")[0] != keyed.split(".")[0]
        assert after.split(".")[1] == keyed.split(".")[1]
    finally:
        patch(live_server, "roads", fid, {"name": name}, writer)
