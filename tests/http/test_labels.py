"""Label points (``/collections/{id}/labels``): where the map pages write place and street
names — inside each polygon, on each named line, with the zoom from which each fits."""

from __future__ import annotations

import unicodedata

import pytest

from ioc.maps import labels


def get_labels(client, layer: str, headers=None, **params) -> list[dict]:
    response = client.get(f"/collections/{layer}/labels", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["numberOfLabels"] == len(doc["labels"]) and doc["layer"] == layer
    return [dict(zip(doc["columns"], row, strict=True)) for row in doc["labels"]]


def test_each_ward_named_once_inside_itself(client, db):
    """Every named ward has one label, with its name as stored (diacritics and all, composed),
    at a point inside the ward."""
    found = get_labels(client, "wards", property="name", zoom=22)
    with db.cursor() as cur:
        cur.execute(
            "SELECT normalize(name, NFC) FROM data.wards WHERE nullif(btrim(name), '') IS NOT NULL"
        )
        names = sorted(r[0] for r in cur.fetchall())
        assert sorted(f["text"] for f in found) == names
        cur.execute(
            "SELECT count(*) FROM data.wards w, unnest(%s::text[], %s::float8[], %s::float8[])"
            " AS l(text, lon, lat) WHERE normalize(w.name, NFC) = l.text"
            " AND ST_Intersects(w.geom, ST_SetSRID(ST_MakePoint(l.lon, l.lat), 4326))",
            ([f["text"] for f in found], [f["lon"] for f in found], [f["lat"] for f in found]),
        )
        assert cur.fetchone()[0] == len(found)
    assert any(any(c in f["text"] for c in "ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệ") for f in found)


def test_larger_places_are_named_from_lower_zooms(client):
    """The per-label zoom follows the shape's size; a request gets only what fits."""
    every = get_labels(client, "wards", property="name", zoom=22)
    city = get_labels(client, "wards", property="name", zoom=10)
    assert 0 < len(city) < len(every)
    assert all(f["minzoom"] <= 10 for f in city)
    assert [f["rank"] for f in every] == sorted((f["rank"] for f in every), reverse=True)
    big, small = every[0], every[-1]
    assert big["minzoom"] < small["minzoom"]


def test_bbox_and_limit(client):
    box = (106.66, 10.74, 106.72, 10.80)
    inside = get_labels(client, "wards", property="name", zoom=22, bbox=",".join(map(str, box)))
    assert inside and all(
        box[0] <= f["lon"] <= box[2] and box[1] <= f["lat"] <= box[3] for f in inside
    )
    two = get_labels(
        client, "wards", property="name", zoom=22, bbox="106.66,10.74,106.72,10.80", limit=2
    )
    assert two == inside[:2]  # the largest first


def test_street_names_lie_on_their_streets(client, db):
    """A road's anchors are on a road of that name, turned along it, and repeated along long
    streets only from higher zooms."""
    found = get_labels(client, "roads", property="name", zoom=22, limit=labels.MAX_LIMIT)
    assert found and all(-90 <= f["angle"] < 90 for f in found)
    sample = found[:: max(1, len(found) // 300)]
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM unnest(%s::text[], %s::float8[], %s::float8[]) AS l(text, lon, lat)"
            " WHERE EXISTS (SELECT 1 FROM data.roads r"
            " WHERE normalize(r.name, NFC) = l.text AND ST_DWithin("
            " ST_Transform(r.geom, 3857),"
            " ST_Transform(ST_SetSRID(ST_MakePoint(l.lon, l.lat), 4326), 3857), 1))",
            ([f["text"] for f in sample], [f["lon"] for f in sample], [f["lat"] for f in sample]),
        )
        assert cur.fetchone()[0] == len(sample)
    longest = found[0]
    again = [f for f in found if f["text"] == longest["text"] and f["rank"] == longest["rank"]]
    assert len(again) > 1 and min(f["minzoom"] for f in again) < max(f["minzoom"] for f in again)


def test_a_line_is_labelled_along_its_direction(client, make_key):
    """fx_roads' one street runs north-east at ~45° on screen: its text is turned -45°
    (clockwise from the x axis, so it rises to the right); internal, so anonymous gets 404."""
    assert client.get("/collections/fx_roads/labels?property=name&zoom=14").status_code == 404
    key = {"Authorization": f"Bearer {make_key('operator')}"}
    (middle,) = [f for f in get_labels(client, "fx_roads", key, property="name", zoom=14)]
    assert middle["text"] == "Đường nội bộ" and middle["angle"] in (-46, -45)
    assert middle["lon"] == pytest.approx(0.5 * (106.681 + 106.719), abs=1e-4)


@pytest.mark.parametrize(
    ("bearing", "angle"),
    [(90, 0), (270, 0), (0, -90), (180, -90), (45, -45), (135, 45), (179.6, -90)],
)
def test_text_never_reads_upside_down(bearing, angle):
    assert labels.screen_angle(bearing) == angle


def test_same_places_in_another_crs(client):
    """fx_blocks are fx_parcels' squares in EPSG:9210: the same labels, at the squares'
    centres (to the inscribed circle's tolerance)."""
    parcels = {f["text"]: f for f in get_labels(client, "fx_parcels", property="name", zoom=22)}
    blocks = {f["text"]: f for f in get_labels(client, "fx_blocks", property="name", zoom=22)}
    assert len(parcels) == 100 and parcels.keys() == blocks.keys()
    for name, p in parcels.items():
        assert blocks[name]["lon"] == pytest.approx(
            p["lon"], abs=1e-4
        )  # ~10 m: the inscribed circle is found to a tolerance
        assert blocks[name]["lat"] == pytest.approx(
            p["lat"], abs=1e-4
        )  # ~10 m: the inscribed circle is found to a tolerance


def test_quoted_column_names_and_points(client):
    """fx_odd_names: a property named with a space, on a point layer."""
    found = get_labels(client, "fx_odd_names", property="has space", zoom=3)
    assert all(f["minzoom"] == 0 and f["angle"] == 0 for f in found)


def test_a_new_name_is_labelled_after_a_write(client, make_key):
    """Labels are kept per layer version: a PATCH makes the next request see the new name,
    composed (NFC) and as text."""
    writer = {"Authorization": f"Bearer {make_key('admin')}"}
    before = get_labels(client, "fx_mutable", writer, property="name", zoom=5)
    fid = client.get("/collections/fx_mutable/items?limit=1").json()["features"][0]["id"]
    old = client.get(f"/collections/fx_mutable/items/{fid}").json()["properties"]["name"]
    # Decomposed (ợ as o + U+031B + U+0323, as some OSM names are), with markup in it.
    new = unicodedata.normalize("NFD", "Chợ Bến Thành <b>&amp;</b>")
    headers = {**writer, "Content-Type": "application/merge-patch+json"}
    url = f"/collections/fx_mutable/items/{fid}"
    assert client.patch(url, json={"properties": {"name": new}}, headers=headers).is_success
    try:
        after = get_labels(client, "fx_mutable", writer, property="name", zoom=5)
        composed = unicodedata.normalize("NFC", new)
        assert composed in {f["text"] for f in after} - {f["text"] for f in before}
    finally:
        client.patch(url, json={"properties": {"name": old}}, headers=headers)


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"property": "nope", "zoom": 12}, "nope"),
        ({"property": "name", "zoom": 12, "colour": "red"}, "colour"),
        ({"property": "name", "zoom": 30}, "zoom"),
        ({"property": "name"}, "zoom"),
        ({"property": "name", "zoom": 12, "bbox": "1,2,3"}, "bbox"),
        ({"property": "name", "zoom": 12, "limit": 0}, "limit"),
    ],
)
def test_bad_requests_are_one_sentence(client, params, word):
    response = client.get("/collections/wards/labels", params=params)
    assert response.status_code == 400, response.text
    assert word in response.text


def test_a_layer_too_big_to_label(client, monkeypatch):
    monkeypatch.setattr(labels, "MAX_FEATURES", 10)
    response = client.get("/collections/fx_parcels/labels?property=name&zoom=12")
    assert response.status_code == 400 and "more than the 10" in response.text
