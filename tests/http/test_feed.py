"""Feed ingest through the real HTTP API: NDJSON and GeoJSON text sequences upserted by the
layer's id_attribute in one transaction per batch, bad lines reported by number, atomic
batches, access, the change event, incremental address links, and a server killed with
SIGKILL in the middle of a batch."""

from __future__ import annotations

import json
import threading

import httpx
import psycopg2
import pytest

from ioc.events.log import ORDER_LOCK
from ioc.features.crs import transformer
from tests.conftest import free_port
from tests.http.test_events import serve
from tests.http.test_publish import SENSORS, ZONES, _clean
from tests.polling import wait_until

LAYER, ZONE_LAYER, KILL_LAYER = "fd_sensors", "fd_zones", "fd_kill"
NDJSON, SEQ = "application/x-ndjson", "application/geo+json-seq"


def sensor(sid, depth=1, lon=106.70, lat=10.78, **props):
    return {
        "type": "Feature",
        "properties": {"sensor_id": sid, "depth_cm": depth, **props},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def ndjson(*features) -> bytes:
    return b"".join(
        (f if isinstance(f, bytes) else json.dumps(f).encode()) + b"\n" for f in features
    )


def seq(*features) -> bytes:
    return b"".join(b"\x1e" + json.dumps(f).encode() + b"\n" for f in features)


def post(client, headers, body, media=NDJSON, layer=LAYER, **params):
    return client.post(
        f"/collections/{layer}/items",
        content=body,
        params=params,
        headers={**headers, "Content-Type": media},
    )


def query(db, sql, *params):
    with db.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    db.rollback()
    return rows


def count(db, layer=LAYER) -> int:
    return query(db, f"SELECT count(*) FROM data.{layer}")[0][0]


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture(scope="module")
def layers(client, publisher, db_settings):
    _clean(db_settings, "fd")
    for doc in ({**SENSORS, "id": LAYER}, {**ZONES, "id": ZONE_LAYER}):
        response = client.post("/layers", json=doc, headers=publisher)
        assert response.status_code == 201, response.text
    yield
    _clean(db_settings, "fd")


@pytest.mark.parametrize(("media", "encode"), [(NDJSON, ndjson), (SEQ, seq)])
def test_a_batch_creates_then_updates_by_id(client, layers, publisher, db, media, encode):
    prefix = media[-5:]
    before = count(db)
    first = post(client, publisher, encode(*[sensor(f"{prefix}-{n}", n) for n in range(3)]), media)
    assert first.status_code == 200, first.text
    report = first.json()
    assert report | {"version": 0} == {
        "received": 3,
        "applied": 3,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "failed": [],
        "version": 0,
    }
    assert count(db) == before + 3

    moved = [sensor(f"{prefix}-{n}", 50 + n, 106.71, 10.79) for n in range(3)]
    second = post(client, publisher, encode(*moved), media)
    assert second.status_code == 200, second.text
    assert second.json()["updated"] == 3 and second.json()["created"] == 0
    assert second.json()["version"] == report["version"] + 1
    assert count(db) == before + 3
    rows = query(
        db,
        f"SELECT sensor_id, depth_cm, ST_X(geom), ST_Y(geom) FROM data.{LAYER}"
        " WHERE sensor_id LIKE %s ORDER BY sensor_id",
        f"{prefix}-%",
    )
    assert rows == [
        (f"{prefix}-{n}", 50 + n, pytest.approx(106.71), pytest.approx(10.79)) for n in range(3)
    ]
    audits = query(
        db,
        "SELECT version, counts FROM ioc.audit WHERE layer_id = %s AND action = 'feed.upsert'"
        " AND version >= %s ORDER BY id",
        LAYER,
        report["version"],
    )
    assert [a[0] for a in audits] == [report["version"], report["version"] + 1]
    assert audits[1][1]["updated"] == 3


def test_bad_lines_are_reported_and_the_others_applied(client, layers, publisher, db):
    before = count(db)
    line = {"type": "LineString", "coordinates": [[106.7, 10.78], [106.71, 10.79]]}
    lines = [  # line numbers of the body: a blank line 6 is skipped but counted
        sensor("B-ok-1"),  # 1
        b"{not json",  # 2
        {"type": "FeatureCollection", "features": []},  # 3
        sensor("B-colour", colour="red"),  # 4
        sensor("B-deep", "deep"),  # 5
        sensor("B-paris", lon=2.35, lat=48.85),  # 7
        {**sensor("B-line"), "geometry": line},  # 8
        sensor("B-ok-1", 9),  # 9: the same id as line 1
        sensor(None),  # 10
        {**sensor("B-nogeom"), "geometry": None},  # 11
        {**sensor("B-poynt"), "geometry": {"type": "Poynt", "coordinates": [106.7, 10.78]}},  # 12
        sensor("B-ok-2"),  # 13
        sensor("B-big", 10**30),  # 14: past bigint
        sensor("B-nul\x00"),  # 15: PostgreSQL text holds no NUL
    ]
    body = ndjson(*lines[:5]) + b"\n" + ndjson(*lines[5:])
    response = post(client, publisher, body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["received"], report["applied"], report["created"]) == (14, 2, 2)
    reasons = {f["line"]: f["reason"] for f in report["failed"]}
    expected = {
        2: "not JSON",
        3: "not a GeoJSON Feature",
        4: "does not know: 'colour'",
        5: "'depth_cm' must be a whole number",
        7: "outside the city",
        8: "expected Point, got LINESTRING",
        9: "duplicate id B-ok-1",
        10: "no value for 'sensor_id'",
        11: "missing geometry",
        12: "not valid GeoJSON",
        14: "out of range",
        15: "the database refuses",
    }
    assert sorted(reasons) == sorted(expected)
    for line, words in expected.items():
        assert words in reasons[line], (line, reasons[line])
    assert count(db) == before + 2
    assert query(db, f"SELECT depth_cm FROM data.{LAYER} WHERE sensor_id = 'B-ok-1'") == [(1,)]


def test_atomic_applies_nothing(client, layers, publisher, db):
    before, version = count(db), query(db, "SELECT version FROM ioc.layers WHERE id = %s", LAYER)
    body = seq(sensor("A-1"), sensor("A-2", lon=10.78, lat=106.70), sensor("A-3"))
    refused = post(client, publisher, body, SEQ, atomic="true")
    assert refused.status_code == 422, refused.text
    answer = refused.json()
    assert "Line 2" in answer["description"] and "swapped" in answer["description"]
    assert answer["report"]["applied"] == 0
    assert answer["report"]["failed"] == [
        {"line": 2, "reason": "latitude and longitude look swapped"}
    ]
    assert count(db) == before
    assert query(db, "SELECT version FROM ioc.layers WHERE id = %s", LAYER) == version
    accepted = post(client, publisher, seq(sensor("A-1"), sensor("A-3")), SEQ, atomic="true")
    assert accepted.status_code == 200, accepted.text
    assert count(db) == before + 2


def test_polygons_in_vn2000_and_an_invalid_one(client, layers, publisher, db):
    to_vn = transformer(4326, 9210)

    def zone(code, ring):
        coords = [[list(to_vn.transform(x, y)) for x, y in ring]]
        return {
            "type": "Feature",
            "properties": {"zone_code": code, "risk": "high"},
            "geometry": {"type": "Polygon", "coordinates": coords},
        }

    square = [(106.70, 10.78), (106.71, 10.78), (106.71, 10.79), (106.70, 10.79), (106.70, 10.78)]
    bowtie = [(106.70, 10.78), (106.71, 10.79), (106.71, 10.78), (106.70, 10.79), (106.70, 10.78)]
    response = client.post(
        f"/collections/{ZONE_LAYER}/items",
        content=ndjson(zone("Z-1", square), zone("Z-2", bowtie)),
        headers={
            **publisher,
            "Content-Type": NDJSON,
            "Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/9210>",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1
    assert response.json()["failed"][0]["line"] == 2
    assert "invalid geometry: Self-intersection" in response.json()["failed"][0]["reason"]
    (xmin, ymin, kind), *_ = query(
        db,
        f"SELECT ST_XMin(geom), ST_YMin(geom), GeometryType(geom) FROM data.{ZONE_LAYER}"
        " WHERE zone_code = 'Z-1'",
    )
    assert kind == "MULTIPOLYGON"
    assert (xmin, ymin) == (pytest.approx(106.70, abs=1e-6), pytest.approx(10.78, abs=1e-6))


def test_who_may_feed(client, layers, make_key):
    body = ndjson(sensor("W-1"))
    other = {"Authorization": f"Bearer {make_key('publisher', 'health')}"}
    assert post(client, other, body).status_code == 403
    assert post(client, {}, body).status_code == 401
    analyst = {"Authorization": f"Bearer {make_key('analyst')}"}
    assert post(client, analyst, body, layer="fx_restricted").status_code == 404


def test_bad_bodies(client, layers, publisher, settings):
    empty = post(client, publisher, b"\n \n")
    assert empty.status_code == 400
    assert "no features" in empty.json()["description"]
    limit = settings.server.request_body_max_bytes
    line = json.dumps(sensor("L-" + "x" * 200)).encode() + b"\n"
    huge = post(client, publisher, line * (limit // len(line) + 1))
    assert huge.status_code == 413


def test_the_event_names_the_touched_features(client, layers, publisher, db):
    made = post(client, publisher, ndjson(sensor("E-1"), sensor("E-2", lon=106.72)))
    assert made.status_code == 200, made.text
    fids = query(
        db, f"SELECT fid::text FROM data.{LAYER} WHERE sensor_id IN ('E-1', 'E-2') ORDER BY 1"
    )
    version = made.json()["version"]
    events = query(
        db,
        "SELECT op, feature_ids, count, bbox, boxes FROM ioc.events"
        " WHERE layer_id = %s AND version = %s",
        LAYER,
        version,
    )
    assert len(events) == 1
    op, ids, n, bbox, boxes = events[0]
    assert (op, sorted(ids), n) == ("feed.upsert", [f for (f,) in fids], 2)
    assert bbox == pytest.approx([106.70, 10.78, 106.72, 10.78])
    # Two places 2 km apart: two boxes for the tile caches, not one extent over both.
    assert sorted(zip(boxes[::4], boxes[2::4], strict=True)) == [
        pytest.approx((106.70, 106.70)),
        pytest.approx((106.72, 106.72)),
    ]
    moved = post(client, publisher, ndjson(sensor("E-1", lon=106.60)))
    (moved_bbox,) = query(
        db,
        "SELECT bbox FROM ioc.events WHERE layer_id = %s AND version = %s",
        LAYER,
        moved.json()["version"],
    )[0]
    assert moved_bbox == pytest.approx([106.60, 10.78, 106.70, 10.78])  # old and new place


def test_only_the_touched_features_are_relinked(client, layers, publisher, db):
    """A fed sensor standing on an address is linked to it; links of features the batch did not
    touch are left alone (a marker link of another feature survives)."""
    code, lon, lat = query(
        db,
        "SELECT code, ST_X(geom), ST_Y(geom) FROM ioc.addresses WHERE valid_to IS NULL"
        " ORDER BY code LIMIT 1",
    )[0]
    assert post(client, publisher, ndjson(sensor("K-1"))).status_code == 200
    (other,) = query(db, f"SELECT fid FROM data.{LAYER} WHERE sensor_id = 'K-1'")[0]
    with db.cursor() as cur:  # a link the next batch must not rebuild
        cur.execute("DELETE FROM ioc.address_links WHERE layer_id = %s", (LAYER,))
        cur.execute(
            "INSERT INTO ioc.address_links (layer_id, fid, code, distance_m)"
            " VALUES (%s, %s, %s, 0)",
            (LAYER, other, code),
        )
    db.commit()
    fed = post(client, publisher, ndjson(sensor("K-2", lon=lon, lat=lat)))
    assert fed.status_code == 200, fed.text
    (fid,) = query(db, f"SELECT fid FROM data.{LAYER} WHERE sensor_id = 'K-2'")[0]
    links = dict(query(db, "SELECT fid, code FROM ioc.address_links WHERE layer_id = %s", LAYER))
    assert links == {other: code, fid: code}


def test_a_server_killed_mid_batch_applies_nothing_of_it(db_settings, layers, publisher, db):
    """SIGKILL of a real `ioc serve` while a large batch's transaction has written every row:
    the batch is then held at its last step (the change event's ordering lock, taken here), so
    the kill lands between the writes and the commit without any timing."""
    port = free_port()
    proc = serve(db_settings, port)
    base = f"http://127.0.0.1:{port}"
    try:
        made = httpx.post(
            f"{base}/layers", json={**SENSORS, "id": KILL_LAYER}, headers=publisher, timeout=30
        )
        assert made.status_code == 201, made.text
        n = 4000
        body = ndjson(*[sensor(f"X-{i}", i % 100, 106.6 + i * 1e-5) for i in range(n)])
        before = count(db, KILL_LAYER)
        holder = psycopg2.connect(db_settings.dsn())
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (ORDER_LOCK,))
        outcome: dict = {}

        def send() -> None:
            try:
                outcome["response"] = httpx.post(
                    f"{base}/collections/{KILL_LAYER}/items",
                    content=body,
                    headers={**publisher, "Content-Type": NDJSON},
                    timeout=120,
                )
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        waiting = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        (backend,) = wait_until(
            lambda: query(db, waiting), message="the batch to wait for the event lock"
        )[0]
        proc.kill()
        proc.wait(timeout=20)
        holder.close()  # the batch's backend takes the lock, then finds its client gone
        sender.join(30)
        assert "error" in outcome, "the killed server answered"
        gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s"
        wait_until(lambda: query(db, gone, backend)[0][0], message="the batch's backend to end")
        assert count(db, KILL_LAYER) == before
        staging = (
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging' AND tablename LIKE %s"
        )
        assert query(db, staging, "fd\\_kill\\_\\_%") == [(0,)]

        proc = serve(db_settings, port)
        again = httpx.post(
            f"{base}/collections/{KILL_LAYER}/items",
            content=body,
            headers={**publisher, "Content-Type": NDJSON},
            timeout=120,
        )
        assert again.status_code == 200, again.text
        assert count(db, KILL_LAYER) == before + n
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
