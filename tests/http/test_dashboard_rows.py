"""The dashboard's rows (sql/0018, ioc.dashboards.rows): the narrow copy of the reports with
their units follows every write to the layer — inserts, updates, deletes, truncates and an
append published over HTTP — and the panels read from it still equal direct SQL, a report on
a shared ward boundary counting in both wards."""

from __future__ import annotations

import asyncio
import json

import pytest

from ioc.dashboards import panels, rows
from ioc.dashboards.model import load_dashboards
from tests.http.test_dashboards import data

BOARD = load_dashboards()["reports_1022"]
UNIT_LAYERS = rows.unit_layers()
WARDS = f"m{UNIT_LAYERS.index('wards') + 1}"  # the 2025 wards' other units
MERGE = "application/merge-patch+json"
# The build's lock (sql/0020), taken for the transaction: a build of the layer's rows is running
# while another connection holds it.
HOLD = "SELECT pg_advisory_xact_lock(hashtext('ioc.dashboard_rows'), hashtext(%s))"
# What the rows should be, computed afresh from the layer's table by the build's own SELECT.
FRESH = (
    "SELECT ioc.dashboard_rows_sql(l, %s, %s, 'data.reports_1022', %s)"
    " FROM ioc.layers l WHERE l.id = 'reports_1022'"
)


@pytest.fixture(scope="module")
def keys(make_key) -> dict[str, dict[str, str]]:
    """Headers of an operator (reads the dashboard) and the layer's publisher."""
    made = {"operator": make_key("operator"), "writer": make_key("publisher", "science_tech")}
    return {role: {"Authorization": f"Bearer {key}"} for role, key in made.items()}


@pytest.fixture
def operator(keys):
    return keys["operator"]


@pytest.fixture
def writer(keys):
    return keys["writer"]


@pytest.fixture
def table(client, db, operator) -> str:
    """The rows' table, built at the server's start or by a dashboard load."""
    with db.cursor() as cur:
        cur.execute(HOLD, ("reports_1022",))  # waits for the start-up build, if it runs
    db.rollback()
    data(client, operator, **{"from": "2025-01-01", "to": "2025-12-01"})
    with db.cursor() as cur:
        cur.execute(
            "SELECT ioc.dashboard_rows_current('reports_1022', %s, %s, %s)",
            (rows.columns(BOARD), UNIT_LAYERS, rows.coded(BOARD)),
        )
        (name,) = cur.fetchone()
    db.rollback()
    assert name
    return f'ioc."{name}"'


def differences(db, table: str) -> tuple[int, int]:
    """(rows missing from the copy, rows in the copy not in the layer), in db's transaction."""
    with db.cursor() as cur:
        cur.execute(FRESH, (rows.columns(BOARD), UNIT_LAYERS, rows.coded(BOARD)))
        (fresh,) = cur.fetchone()
        cur.execute(
            f"SELECT (SELECT count(*) FROM ({fresh} EXCEPT ALL SELECT * FROM {table}) a),"
            f" (SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL {fresh}) b)"
        )
        return cur.fetchone()


def boundary_point(db) -> tuple[float, float]:
    """A vertex two 2025 wards share (a point in both)."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT ST_X(x.p), ST_Y(x.p) FROM (SELECT (ST_DumpPoints(geom)).geom AS p"
            " FROM data.wards ORDER BY fid LIMIT 2000) x WHERE (SELECT count(*) FROM data.wards"
            " w WHERE ST_Intersects(w.geom, x.p)) = 2 LIMIT 1"
        )
        return cur.fetchone()


def test_rows_follow_every_write(db, table):
    x, y = boundary_point(db)
    assert differences(db, table) == (0, 0)
    try:
        with db.cursor() as cur:
            cur.execute(
                "INSERT INTO data.reports_1022 (report_no, category, status, reported_at,"
                " handling_unit, channel, geom) SELECT 'T-ROWS-' || i, 'rác thải', 'mới',"
                " '2025-11-20T08:00+07'::timestamptz + i * interval '1 hour', 'UBND thử',"
                " 'điện thoại', ST_SetSRID(ST_MakePoint(%s + (i - 1) * 0.01, %s), 4326)"
                " FROM generate_series(1, 3) i",
                (x, y),
            )
            cur.execute(f"SELECT count(*) FROM {table} WHERE {WARDS} IS NOT NULL")
            assert cur.fetchone()[0] >= 1  # the boundary report is in two wards
            assert differences(db, table) == (0, 0)
            cur.execute(
                "UPDATE data.reports_1022 SET status = 'đã đóng', resolved_at = reported_at"
                " + interval '5 hours', geom = ST_Translate(geom, 0.02, 0)"
                " WHERE report_no LIKE 'T-ROWS-%%' AND report_no <> 'T-ROWS-1'"
            )
            assert differences(db, table) == (0, 0)
            cur.execute("DELETE FROM data.reports_1022 WHERE report_no = 'T-ROWS-2'")
            assert differences(db, table) == (0, 0)
            cur.execute("SAVEPOINT before_truncate")
            cur.execute("TRUNCATE data.reports_1022")
            cur.execute(f"SELECT count(*) FROM {table}")
            assert cur.fetchone()[0] == 0
            cur.execute("ROLLBACK TO SAVEPOINT before_truncate")
            assert differences(db, table) == (0, 0)
    finally:
        db.rollback()


def test_a_published_append_is_in_the_rows_and_the_panels(client, db, operator, writer, table):
    x, y = boundary_point(db)
    params = {"from": "2025-11-01", "to": "2025-12-01", "units": "ward"}
    before = {u["code"]: u["total"] for u in data(client, operator, **params)["units"]}
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": {
            "report_no": "T-PUB-1",
            "category": "rác thải",
            "status": "mới",
            "reported_at": "2025-11-25T09:00:00+07:00",
            "handling_unit": "UBND thử",
            "channel": "điện thoại",
        },
    }
    body = json.dumps({"type": "FeatureCollection", "features": [feature]})
    published = client.post(
        "/layers/reports_1022/data",
        content=body,
        headers=writer,
        params={"filename": "one.geojson"},
    )
    assert published.status_code == 200, published.text
    try:
        assert differences(db, table) == (0, 0)
        db.rollback()
        with db.cursor() as cur:
            cur.execute(
                "SELECT w.ward_code FROM data.wards w JOIN data.reports_1022 r"
                " ON ST_Intersects(w.geom, r.geom) WHERE r.report_no = 'T-PUB-1'"
            )
            wards = sorted(r[0] for r in cur.fetchall())
        db.rollback()
        assert len(wards) == 2  # on the shared boundary: counted in both
        after = {u["code"]: u["total"] for u in data(client, operator, **params)["units"]}
        assert {c: after[c] - before.get(c, 0) for c in after if after[c] != before.get(c)} == {
            w: 1 for w in wards
        }
        # Either ward's filter finds it; the ward panel is not narrowed by its own level.
        whole = data(client, operator, **params, category="rác thải")
        for ward in wards:
            one = data(client, operator, **params, ward=ward, category="rác thải")
            assert any(r["key"] == "UBND thử" for r in one["ranking"])
            assert one["units"] == whole["units"] and one["kpi"] != whole["kpi"]
    finally:
        with db.cursor() as cur:
            cur.execute("DELETE FROM data.reports_1022 WHERE report_no = 'T-PUB-1'")
        db.commit()
    assert differences(db, table) == (0, 0)
    db.rollback()


def test_a_dropped_copy_is_rebuilt_on_next_use(client, db, operator, table):
    with db.cursor() as cur:
        cur.execute(f"DROP TABLE {table}")
    db.commit()
    panels.CACHE.answers.clear()
    data(client, operator, **{"from": "2025-01-01", "to": "2025-12-01"})
    assert differences(db, table) == (0, 0)
    db.rollback()


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2025-01-01", "to": "2025-12-01", "units": "ward"},
        {"from": "2025-06-01", "to": "2025-12-01", "ward2019": "26734", "units": "ward2019"},
        {"from": "2025-03-01", "to": "2025-12-01", "district": "776", "status": "mới"},
    ],
)
def test_the_rows_answer_as_the_layer_does(db_settings, params):
    """Every panel from the dashboard's rows equals the layer's own three passes (a layer that
    is not a plain table is read so)."""
    from datetime import datetime

    from ioc.catalog.access import Principal
    from ioc.catalog.layers import load_catalog
    from ioc.dashboards.filters import CITY_TZ, parse_filter
    from ioc.db.connection import create_pool
    from ioc.query.model import QuerySettings

    async def go():
        pool = await create_pool(db_settings)
        try:
            catalog = await load_catalog(pool)
            now = datetime.now(CITY_TZ)
            state = parse_filter(BOARD, params, now)
            answers = [
                await panels.dashboard_data(
                    pool,
                    catalog,
                    Principal(role="operator", key_id=None),
                    QuerySettings(),
                    BOARD,
                    state,
                    now=now,
                    cache=panels.PanelCache(),
                    copy=copy,
                )
                for copy in (True, False)
            ]
        finally:
            await pool.close()
        return answers

    from_rows, from_layer = asyncio.run(go())
    assert from_rows["kpi"]["total"] > 0 and from_rows["units"]
    assert from_rows == from_layer


def test_a_long_range_is_counted_in_two_halves_cut_at_midnight():
    from datetime import datetime, timedelta

    from ioc.dashboards.filters import CITY_TZ, BoardFilter

    start = datetime(2025, 1, 1, tzinfo=CITY_TZ)
    first, second = panels.halves(BoardFilter(start=start), start + timedelta(days=91, hours=5))
    assert first.start == start and first.end == second.start and second.end is None
    assert second.start == datetime(2025, 2, 15, tzinfo=CITY_TZ)  # a city midnight
    assert panels.halves(BoardFilter(start=start), start + timedelta(days=20)) == [
        BoardFilter(start=start)
    ]
    # Most reports late in the range: the cut follows the quantiles, not the calendar.
    bounds = tuple(start + timedelta(days=d, hours=7) for d in (1, 70, 80, 85, 90))
    _, late = panels.halves(BoardFilter(start=start), start + timedelta(days=91), bounds)
    assert late.start == datetime(2025, 3, 22, tzinfo=CITY_TZ)
