"""Versioned tile URLs (issue 24 item 3, docs/scaling.md): TileJSON hands out a template with the
layers' tile version; a URL whose tile is as of its version is `immutable` (an HTTP cache or CDN
keeps it for ever), a tile changed since answers with the short max-age, a version this process
does not know yet must be revalidated; unversioned URLs keep ETag revalidation."""

from __future__ import annotations

import gzip
import re

import mapbox_vector_tile
import pytest

from tests.fixtures import uploads
from tests.http.test_publish import _clean
from tests.http.test_tile_invalidation import _publish
from tests.http.test_tiles import tile_of
from tests.http.test_transactions import feature
from tests.polling import wait_until

LAYER = "turl_sensors"
Z = 14
# Two sensors far apart (centre, Củ Chi): different tiles at Z.
NEAR, FAR = (106.7000, 10.7800), (106.5000, 11.0000)
IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture
def layer(client, publisher, db_settings):
    _clean(db_settings, "turl")
    _publish(client, publisher, LAYER, [("C-1", *NEAR, 5), ("F-1", *FAR, 6)])
    yield LAYER
    _clean(db_settings, "turl")


def template(client, path: str = f"/tiles/{LAYER}/tilejson.json") -> str:
    doc = client.get(path)
    assert doc.status_code == 200, doc.text
    (url,) = doc.json()["tiles"]
    assert re.search(r"\?v=\d+\.[0-9a-f]{8}$", url), url
    return url


def version(url: str) -> tuple[int, str]:
    event, digest = url.rsplit("?v=", 1)[1].split(".")
    return int(event), digest


def at(url: str, place: tuple[float, float], z: int = Z) -> str:
    _, x, y = tile_of(*place, z)
    return url.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    data = response.content
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return sorted(
        f["properties"]["sensor_id"] for f in mapbox_vector_tile.decode(data)[LAYER]["features"]
    )


def write(client, publisher, sid: str, place: tuple[float, float]) -> None:
    written = client.post(
        f"/collections/{LAYER}/items", json=feature(sid, *place), headers=publisher
    )
    assert written.status_code == 201, written.text


def test_current_old_and_no_versions(client, layer, publisher):
    """A current version is immutable; after a write, the old version stays immutable for the
    tile it did not touch (same bytes, same ETag) and gets the short max-age, with the new
    content, for the tile it touched; the template moves to the write's event."""
    url = template(client)
    plain = client.get(at(url.split("?")[0], NEAR))
    assert plain.headers["cache-control"] == "public, max-age=60" and plain.headers["etag"]
    before = {p: client.get(at(url, p)) for p in (NEAR, FAR)}
    for answer in before.values():
        assert answer.headers["cache-control"] == IMMUTABLE
    assert names(before[NEAR]) == ["C-1"] and names(before[FAR]) == ["F-1"]
    cond = client.get(at(url, NEAR), headers={"If-None-Match": before[NEAR].headers["etag"]})
    assert cond.status_code == 304 and cond.headers["cache-control"] == IMMUTABLE

    write(client, publisher, "N-1", (NEAR[0] + 0.0003, NEAR[1] + 0.0003))
    new = wait_until(
        lambda: (u := template(client)) != url and u,
        message="the template to carry the write's version",
    )
    assert version(new)[0] > version(url)[0] and version(new)[1] == version(url)[1]

    kept = client.get(at(url, FAR))  # untouched since the old version: still as of it
    assert kept.headers["cache-control"] == IMMUTABLE
    assert (
        kept.content == before[FAR].content and kept.headers["etag"] == before[FAR].headers["etag"]
    )
    touched = client.get(at(url, NEAR))  # changed since the old version: current, short-lived
    assert touched.headers["cache-control"] == "public, max-age=60"
    assert (
        names(touched) == ["C-1", "N-1"] and touched.headers["etag"] != before[NEAR].headers["etag"]
    )
    current = client.get(at(new, NEAR))
    assert current.headers["cache-control"] == IMMUTABLE and names(current) == ["C-1", "N-1"]
    assert client.get(at(new, FAR)).headers["cache-control"] == IMMUTABLE


def test_an_immutable_url_never_changes(client, layer, publisher):
    """Every immutable answer to one URL has the same bytes, through writes on its tile."""
    url = at(template(client), NEAR)
    seen = {}
    for n in range(3):
        answer = client.get(url, headers={"Accept-Encoding": "identity"})
        if answer.headers["cache-control"] == IMMUTABLE:
            seen.setdefault(answer.content, n)
        write(client, publisher, f"M-{n}", (NEAR[0] + 0.0001 * (n + 1), NEAR[1]))
        wait_until(lambda n=n: f"M-{n}" in names(client.get(at(template(client), NEAR))))
    assert list(seen.values()) == [0]  # only the first answer, before any write, was immutable


def test_a_version_not_known_yet_is_revalidated(client, layer):
    """A version ahead of this process (an event on its way, a made-up one) is no promise."""
    event, digest = version(template(client))
    ahead = at(f"/tiles/{LAYER}/{{z}}/{{x}}/{{y}}.pbf?v={event + 1000}.{digest}", NEAR)
    answer = client.get(ahead)
    assert answer.headers["cache-control"] == "public, no-cache" and names(answer) == ["C-1"]


def test_a_publish_moves_every_tile_off_the_old_version(client, layer, publisher):
    """A whole-layer change (a new upload) changes the digest: no old URL stays immutable."""
    url = template(client)
    assert client.get(at(url, FAR)).headers["cache-control"] == IMMUTABLE
    upload = uploads.sensors_geojson([("C-1", *NEAR, 5), ("F-1", *FAR, 9)])
    again = client.put(
        f"/layers/{LAYER}/data",
        content=upload,
        headers=publisher,
        params={"filename": "s.geojson"},
    )
    assert again.status_code == 200, again.text
    new = wait_until(lambda: (u := template(client)) != url and u)
    assert version(new)[1] != version(url)[1]
    for place in (NEAR, FAR):
        assert client.get(at(url, place)).headers["cache-control"] == "public, max-age=60"
        assert client.get(at(new, place)).headers["cache-control"] == IMMUTABLE


def test_ogc_path_and_signed_in_callers(client, layer, publisher):
    """The OGC API path's TileJSON is versioned the same way; a signed-in caller's answer stays
    private whatever the version."""
    url = template(client, f"/collections/{LAYER}/tiles/WebMercatorQuad/tilejson.json")
    assert "/tiles/WebMercatorQuad/{z}/{y}/{x}?v=" in url
    ogc = client.get(at(url, NEAR))
    assert ogc.headers["cache-control"] == IMMUTABLE and names(ogc) == ["C-1"]
    xyz = at(template(client), NEAR)
    signed = client.get(xyz, headers=publisher)
    assert signed.headers["cache-control"] == "private, no-store" and names(signed) == ["C-1"]


@pytest.mark.parametrize("value", ["abc", "12", "12.0A1B2C3D", "1.0a1b2c3d&v=2.0a1b2c3d"])
def test_a_malformed_version_is_a_400(client, layer, publisher, value):
    """Anonymous (the fast path) and signed in (the app) alike."""
    path = at(f"/tiles/{LAYER}/{{z}}/{{x}}/{{y}}.pbf", NEAR) + "?v=" + value
    for headers in ({}, publisher):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 400, answer.text
        assert "'v' must be one tile version" in answer.text


def test_map_pages_hand_out_the_tilejson_versions(client, layer):
    """A map page's tile URLs are TileJSON's templates, versions included (one function
    gives both: a page rendered after a write carries the layer's new version)."""
    for path in ("/maps/portal", f"/maps/preview/{LAYER}"):
        page = client.get(path)
        assert page.status_code == 200, page.text
        found = re.findall(r'(/tiles/([^/"]+)/\{z\}/\{x\}/\{y\}\.pbf[^"\\]*)', page.text)
        assert "water_areas,roads,wards" in {ids for _, ids in found}  # the basemap
        for url, ids in found:
            assert "?v=" in url
            assert url == template(client, f"/tiles/{ids}/tilejson.json").split("testserver")[1]
