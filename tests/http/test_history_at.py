"""``items?at=`` on a long history (issue 19): the features as they were at an instant are read
feature by feature, not by every state begun before it. A synthetic history (written straight
into ``history.<layer>``: features created late, deleted and re-created, states opened and
closed within one tick) is asked at several instants; every answer (ids, properties, geometry,
numberMatched, pages, sort, filter, bbox) equals what the plain predicate
``valid_from <= at AND valid_to > at`` selects, and the plan reads a few index entries per
feature, not the states."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime

import asyncpg
import psycopg2
import pytest

from ioc.features.crs import VN2000_TM3_10545, WGS84, BBox
from ioc.features.items import FORMATS, ItemsQuery, at_plan, count_sql, items_sql
from tests.http.test_history import HISTORY
from tests.http.test_publish import SENSORS, _clean

LAYER = "pa_sensors"
ITEMS = f"/collections/{LAYER}/items"
FEATURES, STATES = 40, 250  # states per feature: a sensor's readings, one a minute


@pytest.fixture(scope="module")
def history(client, make_key, db_settings):
    """The layer with a synthetic history: fid n's k-th state runs [base + k min, base + (k+1)
    min) with depth n * 1000 + k; every 7th feature is deleted at k = 120 and re-created at
    k = 180, every 5th begins at k = 50, every 3rd has an empty state [x, x) before each of
    its states; the last states are open. The instants it is read at, from the database."""
    _clean(db_settings, "pa")
    headers = {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}
    response = client.post("/layers", json={**SENSORS, **HISTORY, "id": LAYER}, headers=headers)
    assert response.status_code == 201, response.text
    conn = psycopg2.connect(db_settings.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("UPDATE ioc.layer_history SET started_at = now() - interval '6 days'"
                    " WHERE layer_id = %s", (LAYER,))  # fmt: skip
        cur.execute(
            f"""INSERT INTO history.{LAYER} (fid, sensor_id, depth_cm, geom, valid_from, valid_to)
            SELECT n, 'S-' || n, n * 1000 + k,
                   ST_SetSRID(ST_MakePoint(106.6 + n * 0.001, 10.7 + k * 0.0001), 4326),
                   b + k * interval '1 min',
                   CASE WHEN k = {STATES} - 1 THEN 'infinity'
                        WHEN n % 7 = 0 AND k = 119 THEN b + 120 * interval '1 min'
                        ELSE b + (k + 1) * interval '1 min' END
            FROM generate_series(1, {FEATURES}) n, generate_series(0, {STATES} - 1) k,
                 (SELECT date_trunc('minute', now()) - interval '5 days' AS b) base
            WHERE NOT (n % 7 = 0 AND k BETWEEN 120 AND 179) AND NOT (n % 5 = 0 AND k < 50)"""
        )
        cur.execute(  # opened and closed in one tick: the same valid_from as a real state
            f"""INSERT INTO history.{LAYER} (fid, sensor_id, depth_cm, geom, valid_from, valid_to)
            SELECT fid, sensor_id, -depth_cm, geom, valid_from, valid_from
            FROM history.{LAYER} WHERE fid % 3 = 0"""
        )
        cur.execute(f"ANALYZE history.{LAYER}")
        cur.execute(
            f"SELECT min(valid_from), max(valid_from) FROM history.{LAYER} WHERE valid_to > valid_from"
        )
        first, last = cur.fetchone()
    minute = (last - first) / (STATES - 1)
    instants = [
        first,  # the first instant kept: only the features begun then
        first + minute * 0.5,
        first + minute * 50,  # the late ones begin
        first + minute * 120,  # the deleted ones are gone (their last state ends here)
        first + minute * 150.25,
        first + minute * 180,  # … and back
        last - minute * 0.001,
        last,  # the last states begin: all open
        last + minute * 10,
    ]
    yield conn, instants
    conn.close()
    _clean(db_settings, "pa")


def expected(conn, moment: datetime, where: str = "TRUE", args=()) -> list[dict]:
    """The features at ``moment`` by the plain predicate, as GeoJSON-like dicts, by id."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT fid, sensor_id, depth_cm, ST_AsGeoJSON(geom)::json FROM history.{LAYER}"
            f" WHERE valid_from <= %s AND valid_to > %s AND {where} ORDER BY fid",
            (moment, moment, *args),
        )
        return [
            {"id": fid, "properties": {"sensor_id": s, "depth_cm": d}, "geometry": g}
            for fid, s, d, g in cur.fetchall()
        ]


def answered(client, moment: datetime, **params) -> tuple[list[dict], dict]:
    """Every page of ``items?at=`` (following next links) as the same dicts, and the first."""
    response = client.get(ITEMS, params={"at": moment.isoformat(), **params})
    assert response.status_code == 200, response.text
    first = doc = response.json()
    found = []
    while True:
        found += [
            {
                "id": f["id"],
                "properties": {k: f["properties"][k] for k in ("sensor_id", "depth_cm")},
                "geometry": f["geometry"],
            }
            for f in doc["features"]
        ]
        nxt = [link["href"] for link in doc["links"] if link["rel"] == "next"]
        if not nxt:
            return found, first
        response = client.get(nxt[0])
        assert response.status_code == 200, response.text
        doc = response.json()


def same(a: list[dict], b: list[dict]) -> bool:
    """Equal features (ids, properties, coordinates to 6 decimals)."""

    def rounded(f):
        coords = [round(c, 6) for c in f["geometry"]["coordinates"]]
        return (f["id"], json.dumps(f["properties"], sort_keys=True), coords)

    return [rounded(f) for f in a] == [rounded(f) for f in b]


def test_at_equals_the_states_valid_then(client, history):
    conn, instants = history
    seen = set()
    for moment in instants:
        want = expected(conn, moment)
        got, first = answered(client, moment, limit=1000)
        assert same(got, want), moment
        assert first["numberMatched"] == len(want) == first["numberReturned"]
        seen.add(len(want))
    # the instants do tell apart late, deleted and re-created features
    assert {FEATURES - FEATURES // 5, FEATURES - FEATURES // 7, FEATURES} <= seen


def test_at_pages_sorts_filters_and_boxes_as_before(client, history):
    conn, instants = history
    for moment in (instants[2], instants[4], instants[-2]):
        want = expected(conn, moment)
        got, first = answered(client, moment, limit=7)
        assert same(got, want) and first["numberReturned"] == 7
        assert first["numberMatched"] == len(want)
        by_depth = sorted(want, key=lambda f: -f["properties"]["depth_cm"])
        assert same(answered(client, moment, limit=5, sortby="-depth_cm")[0], by_depth)
        deep = expected(conn, moment, "depth_cm > %s", (20_000,))
        got, first = answered(client, moment, limit=4, filter="depth_cm > 20000")
        assert same(got, deep) and first["numberMatched"] == len(deep)
        box = expected(conn, moment, "geom && ST_MakeEnvelope(106.6, 10.7, 106.62, 10.8, 4326)")
        got, first = answered(client, moment, limit=6, bbox="106.6,10.7,106.62,10.8")
        assert same(got, box) and first["numberMatched"] == len(box)


def _read(plan: dict, relation: str) -> int:
    """Rows a plan's scans of ``relation`` produced or filtered away, over all their loops."""
    own = 0
    if plan.get("Relation Name") == relation:
        loops = plan.get("Actual Loops", 1)
        own = (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * loops
    return own + sum(_read(child, relation) for child in plan.get("Plans", ()))


async def _explained(dsn: str, sql: str, args: list) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        text = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
    finally:
        await conn.close()
    return json.loads(text)[0]["Plan"]


async def _planned(dsn: str, layer, q: ItemsQuery) -> ItemsQuery:
    async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as pool:
        return await at_plan(pool, layer, q)


def test_the_plan_reads_per_feature_not_per_state(client, history, db_settings):
    _, instants = history
    layer = client.app.state.catalog.find(LAYER)
    by_depth = (("depth_cm", True),)
    for moment in instants:
        for sql, args in (
            items_sql(layer, ItemsQuery(at=moment)),
            items_sql(layer, ItemsQuery(at=moment, sortby=by_depth, limit=5, offset=5)),
            count_sql(layer, ItemsQuery(at=moment)),
        ):
            read = _read(asyncio.run(_explained(db_settings.dsn(), sql, args)), LAYER)
            # the plain predicate reads every state begun by the instant: thousands here
            assert 0 < read <= 4 * FEATURES, (read, moment, sql)


def test_a_bbox_reads_by_feature_unless_it_holds_few_states(client, history, db_settings):
    conn, instants = history
    layer = client.app.state.catalog.find(LAYER)
    city = BBox(106.5, 10.6, 106.7, 10.8, 4326)  # every feature: thousands of states
    one = BBox(106.6005, 10.6, 106.6015, 10.8, 4326)  # fid 1 only: a state or two then
    early, late = instants[1], instants[-2]
    wide = asyncio.run(_planned(db_settings.dsn(), layer, ItemsQuery(at=late, bboxes=(city,))))
    small = asyncio.run(_planned(db_settings.dsn(), layer, ItemsQuery(at=early, bboxes=(one,))))
    assert wide.at_by_feature is True and small.at_by_feature is False
    # without a bbox: the few states begun by an early instant are read as they are
    plans = [
        asyncio.run(_planned(db_settings.dsn(), layer, ItemsQuery(at=m))) for m in (early, late)
    ]
    assert [p.at_by_feature for p in plans] == [False, True]
    for q in (wide, small):
        sql, args = count_sql(layer, q)
        read = _read(asyncio.run(_explained(db_settings.dsn(), sql, args)), LAYER)
        assert 0 < read <= 4 * FEATURES + 2 * STATES, read
    for moment in (early, late):
        for box, where in ((city, "TRUE"), (one, "fid = 1")):
            want = expected(conn, moment, where)
            got, first = answered(client, moment, limit=9, bbox=",".join(map(str, box.values)))
            assert same(got, want) and first["numberMatched"] == len(want) > 0


async def _both_ways(dsn: str, layer, queries: list[tuple[ItemsQuery, str]]) -> list[tuple]:
    """Each query's rows and count read by feature and by the states begun by the instant."""
    conn = await asyncpg.connect(dsn)
    out = []
    try:
        for q, fmt in queries:
            answers = []
            for by in (True, False):
                way = replace(q, at_by_feature=by)
                rows = await conn.fetch(*_flat(items_sql(layer, way, fmt)))
                answers.append(
                    ([r[0] for r in rows], await conn.fetchval(*_flat(count_sql(layer, way))))
                )
            out.append((q, fmt, *answers))
    finally:
        await conn.close()
    return out


def _flat(built: tuple[str, list]) -> list:
    sql, args = built
    return [sql, *args]


def test_both_ways_answer_the_same_bytes(client, history, db_settings):
    """Every format, CRS, property choice, sort and page: the same bytes and count either way."""
    _, instants = history
    layer = client.app.state.catalog.find(LAYER)
    queries = []
    for moment in instants:
        for fmt in FORMATS:
            queries.append((ItemsQuery(at=moment, limit=7, offset=3), fmt))
        queries += [
            (ItemsQuery(at=moment, limit=None, crs=VN2000_TM3_10545), "geojson"),
            (ItemsQuery(at=moment, limit=5, crs=WGS84, properties=("depth_cm",)), "csv"),
            (
                ItemsQuery(at=moment, limit=6, sortby=(("sensor_id", True),), properties=()),
                "geojson",
            ),
        ]
    answers = asyncio.run(_both_ways(db_settings.dsn(), layer, queries))
    for q, fmt, by_feature, by_state in answers:
        assert by_feature == by_state, (q, fmt)
    assert all(rows and count for *_, (rows, count), _ in answers)
