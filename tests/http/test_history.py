"""Layer history through the real HTTP API: a layer created with ``history`` keeps every state
of its features (item writes, publish), ``items/{id}/history`` lists them with contiguous
validity intervals, ``items?at=`` shows the layer as it was, retention prunes, access rules are
the layer's, and a layer without history says so."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.fixtures import uploads
from tests.http.test_publish import SENSORS, _clean

LAYER, SECRET = "ph_sensors", "ph_secret"
ITEMS = f"/collections/{LAYER}/items"
HISTORY = {"history": {"retention_days": 7}}


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture(scope="module")
def layers(client, publisher, db_settings):
    _clean(db_settings, "ph")
    for manifest in (
        {**SENSORS, **HISTORY, "id": LAYER},
        {**SENSORS, **HISTORY, "id": SECRET, "access": "restricted"},
    ):
        response = client.post("/layers", json=manifest, headers=publisher)
        assert response.status_code == 201, response.text
    yield
    _clean(db_settings, "ph")


def feature(sid="H-1", depth=7, lon=106.6990, lat=10.7798):
    return {
        "type": "Feature",
        "properties": {"sensor_id": sid, "depth_cm": depth},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def create(client, headers, layer=LAYER, **kw) -> str:
    response = client.post(f"/collections/{layer}/items", json=feature(**kw), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["ids"][0]


def patch(client, headers, fid, depth):
    response = client.patch(
        f"{ITEMS}/{fid}", json={"properties": {"depth_cm": depth}}, headers=headers
    )
    assert response.status_code == 204, response.text


def states(client, fid, headers=None, **params) -> dict:
    response = client.get(f"{ITEMS}/{fid}/history", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/geo+json")
    return response.json()


def at(client, moment: str, **params) -> dict:
    response = client.get(ITEMS, params={"at": moment, **params})
    assert response.status_code == 200, response.text
    return response.json()


def depths(collection: dict, fid) -> list:
    return [f["properties"]["depth_cm"] for f in collection["features"] if f["id"] == int(fid)]


def test_patches_make_contiguous_states_and_at_shows_the_past(client, layers, publisher):
    fid = create(client, publisher, sid="H-1", depth=7)
    patch(client, publisher, fid, 10)
    patch(client, publisher, fid, 10)  # the same value again: no new state
    patch(client, publisher, fid, 20)

    doc = states(client, fid)
    found = doc["features"]
    assert [f["properties"]["depth_cm"] for f in found] == [7, 10, 20]
    assert doc["numberMatched"] == doc["numberReturned"] == 3
    assert all(f["id"] == int(fid) and f["geometry"]["type"] == "Point" for f in found)
    # [valid_from, valid_to): each state ends where the next begins; the last is current.
    for before, after in zip(found, found[1:], strict=False):
        assert before["properties"]["valid_to"] == after["properties"]["valid_from"]
        assert before["properties"]["valid_from"] < before["properties"]["valid_to"]
    assert found[-1]["properties"]["valid_to"] is None

    first, second = (f["properties"]["valid_from"] for f in found[:2])
    assert depths(at(client, first), fid) == [7]  # the interval includes its start …
    assert depths(at(client, second), fid) == [10]  # … not its end
    assert depths(client.get(ITEMS, params={"limit": 100}).json(), fid) == [20]
    # with bbox and limit: the same feature, as it was
    near = at(client, first, bbox="106.69,10.77,106.70,10.78", limit=1)
    assert depths(near, fid) == [7] and near["numberReturned"] == 1

    # datetime keeps the states that overlap it; paging follows the next link
    assert [f["properties"]["depth_cm"] for f in states(client, fid, datetime=f"{second}/{second}")["features"]] == [10]  # fmt: skip
    page = states(client, fid, limit=2)
    assert page["numberReturned"] == 2
    nxt = next(link["href"] for link in page["links"] if link["rel"] == "next")
    rest = client.get(nxt).json()
    assert [f["properties"]["depth_cm"] for f in rest["features"]] == [20]


def test_delete_keeps_the_last_state_closed(client, layers, publisher):
    fid = create(client, publisher, sid="H-2", depth=3)
    assert client.delete(f"{ITEMS}/{fid}", headers=publisher).status_code == 204
    assert client.get(f"{ITEMS}/{fid}").status_code == 404
    found = states(client, fid)["features"]
    assert len(found) == 1 and found[0]["properties"]["depth_cm"] == 3
    assert found[0]["properties"]["valid_to"] is not None  # closed by the delete
    assert depths(at(client, found[0]["properties"]["valid_from"]), fid) == [3]
    assert depths(at(client, found[0]["properties"]["valid_to"]), fid) == []


def test_publish_closes_and_opens_states(client, layers, publisher):
    fid = create(client, publisher, sid="H-3", depth=5)
    before = states(client, fid)["features"][-1]["properties"]["valid_from"]
    response = client.put(
        f"/layers/{LAYER}/data",
        content=uploads.sensors_geojson(),
        headers=publisher,
        params={"filename": "sensors.geojson"},
    )
    assert response.status_code == 200, response.text
    closed = states(client, fid)["features"][-1]["properties"]
    assert closed["valid_to"] is not None  # the replace removed it
    now = client.get(ITEMS, params={"limit": 100}).json()
    assert {f["properties"]["sensor_id"] for f in now["features"]} == {
        sid for sid, *_ in uploads.SENSORS
    }
    for published in now["features"]:
        opened = states(client, published["id"])["features"]
        assert len(opened) == 1 and opened[0]["properties"]["valid_to"] is None
        assert opened[0]["properties"]["valid_from"] == closed["valid_to"] or (
            opened[0]["properties"]["valid_from"] > closed["valid_to"]
        )
    then = at(client, before, limit=100)
    assert "H-3" in {f["properties"]["sensor_id"] for f in then["features"]}
    assert then["numberMatched"] == then["numberReturned"]


def test_retention_prunes_on_write_and_bounds_at(client, layers, publisher, db):
    fid = create(client, publisher, sid="H-4", depth=1)
    patch(client, publisher, fid, 2)
    # Make the first state look as if it closed ten days ago (retention: seven).
    with db.cursor() as cur:
        cur.execute(
            f"UPDATE history.{LAYER} SET valid_from = now() - interval '11 days',"
            " valid_to = now() - interval '10 days' WHERE fid = %s AND valid_to <> 'infinity'",
            (int(fid),),
        )
    db.commit()
    assert len(states(client, fid)["features"]) == 2
    patch(client, publisher, fid, 3)  # any write of the layer prunes
    assert [f["properties"]["depth_cm"] for f in states(client, fid)["features"]] == [2, 3]

    old = (datetime.now().astimezone() - timedelta(days=8)).isoformat()
    response = client.get(ITEMS, params={"at": old})
    assert response.status_code == 400
    assert response.json()["parameter"] == "at" and "7 days" in response.json()["description"]


def test_a_layer_recreated_with_other_columns_starts_a_fresh_history(client, layers, publisher, db):
    layer = "ph_recreated"
    items = f"/collections/{layer}/items"
    post = client.post("/layers", json={**SENSORS, **HISTORY, "id": layer}, headers=publisher)
    assert post.status_code == 201, post.text
    create(client, publisher, layer=layer, sid="R-1", depth=4)
    # Deleted as an operator would by hand: its table and registry row, not its history.
    with db.cursor() as cur:
        cur.execute(f"DROP TABLE data.{layer}")
        cur.execute("DELETE FROM ioc.layers WHERE id = %s", (layer,))
    db.commit()

    other = {
        **SENSORS,
        **HISTORY,
        "id": layer,
        "id_attribute": "code",
        "attributes": [
            {"name": "code", "type": "text", "label": {"vi": "Mã", "en": "Code"}},
            {"name": "level", "type": "integer", "label": {"vi": "Mức", "en": "Level"}},
        ],
    }
    post = client.post("/layers", json=other, headers=publisher)
    assert post.status_code == 201, post.text
    body = {"type": "Feature", "properties": {"code": "Z-1", "level": 1},
            "geometry": {"type": "Point", "coordinates": [106.70, 10.78]}}  # fmt: skip
    response = client.post(items, json=body, headers=publisher)
    assert response.status_code == 201, response.text
    fid = response.json()["ids"][0]
    response = client.patch(f"{items}/{fid}", json={"properties": {"level": 2}}, headers=publisher)
    assert response.status_code == 204, response.text

    found = client.get(f"{items}/{fid}/history")
    assert found.status_code == 200, found.text
    assert [f["properties"]["level"] for f in found.json()["features"]] == [1, 2]
    now = client.get(items, params={"limit": 10})
    assert now.status_code == 200, now.text
    assert [f["properties"]["level"] for f in now.json()["features"]] == [2]
    start = found.json()["features"][0]["properties"]["valid_from"]
    then = client.get(items, params={"at": start})
    assert then.status_code == 200, then.text
    assert [f["properties"]["level"] for f in then.json()["features"]] == [1]
    # The old states were set aside (not lost), none of them mixed into the new table's.
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'history' AND tablename LIKE %s",
            (f"{layer}\\_old\\_%",),
        )
        assert cur.fetchone()[0] == 1


def test_bad_instants_are_400(client, layers):
    for bad in ("yesterday", "2025-13-01T00:00:00Z", "2025-07-01", "2025-07-01T08:00:00+25:00"):
        response = client.get(ITEMS, params={"at": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["parameter"] == "at"


def test_restricted_history_follows_the_layer(client, layers, publisher):
    fid = create(client, publisher, layer=SECRET, sid="S-1", depth=4)
    url = f"/collections/{SECRET}/items/{fid}/history"
    assert client.get(url).status_code == 404  # anonymous: the layer does not exist
    moment = client.get(url, headers=publisher).json()["features"][0]["properties"]["valid_from"]
    assert client.get(f"/collections/{SECRET}/items", params={"at": moment}).status_code == 404
    assert client.get(url, headers=publisher).status_code == 200
    mine = client.get(f"/collections/{SECRET}/items", params={"at": moment}, headers=publisher)
    assert mine.status_code == 200 and mine.json()["numberReturned"] == 1


def test_a_layer_without_history_says_so(client, layers):
    response = client.get("/collections/fx_landmarks/items/1/history")
    assert response.status_code == 404
    assert "keeps no history" in response.json()["description"]
    response = client.get("/collections/fx_landmarks/items", params={"at": "2025-07-01T08:00:00Z"})
    assert response.status_code == 400 and response.json()["parameter"] == "at"
    assert "keeps no history" in response.json()["description"]
    assert client.get(f"{ITEMS}/999999999/history").status_code == 404
    assert client.get(f"{ITEMS}/not-a-number/history").status_code == 404


def test_openapi_documents_history(client):
    doc = client.get("/openapi.json").json()
    assert "/collections/{collectionId}/items/{featureId}/history" in doc["paths"]
    params = doc["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]
    assert "at" in {p["name"] for p in params}


def test_demo_live_layers_keep_history(db):
    with db.cursor() as cur:
        cur.execute("SELECT layer_id, retention_days FROM ioc.layer_history ORDER BY layer_id")
        kept = dict(cur.fetchall())
        cur.execute(
            "SELECT (SELECT count(*) FROM data.flood_sensors),"
            " (SELECT count(*) FROM history.flood_sensors WHERE valid_to = 'infinity')"
        )
        live, open_states = cur.fetchone()
    db.rollback()
    assert kept["flood_sensors"] == 7 and kept["reports_1022"] == 90
    assert live == open_states
