"""Dashboards over HTTP (issue 21): every panel's numbers against direct SQL over the same
filter, access like map views, bad input as one-sentence 400s, CSV, and the cache per data
version (a write makes the next answer new, a repeated request does no database work)."""

from __future__ import annotations

import csv
import io
import statistics
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ioc.dashboards import panels
from ioc.dashboards.model import load_dashboards

CITY = ZoneInfo("Asia/Ho_Chi_Minh")
BOARD = load_dashboards()["reports_1022"]
OPEN = list(BOARD.open_statuses)
MERGE = "application/merge-patch+json"


@pytest.fixture(scope="module")
def operator(make_key):
    return {"Authorization": f"Bearer {make_key('operator')}"}


@pytest.fixture(scope="module")
def writer(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'science_tech')}"}


def data(client, headers, **params):
    response = client.get("/dashboards/reports_1022/data", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def sql_rows(db, where: str, args: list, select: str, group: str | None = None) -> list[tuple]:
    """Direct SQL over data.reports_1022 under a WHERE clause (the test's own, not ioc's)."""
    sql = f"SELECT {select} FROM data.reports_1022 r WHERE {where}"
    if group:
        sql += f" GROUP BY {group}"
    with db.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def deadline_sql(now: datetime) -> tuple[str, list]:
    """Overdue as the dashboard file says: open, older than its category's deadline."""
    clauses, args = [], []
    for category, hours in BOARD.deadline.by_category.items():
        clauses.append("(r.category = %s AND r.reported_at < %s)")
        args += [category, now - timedelta(hours=hours)]
    clauses.append("(NOT (r.category = ANY(%s)) AND r.reported_at < %s)")
    args += [list(BOARD.deadline.by_category), now - timedelta(hours=BOARD.deadline.default_hours)]
    return f"r.status = ANY(%s) AND ({' OR '.join(clauses)})", [OPEN, *args]


def test_the_list_is_the_caller_s(client, operator):
    anonymous = client.get("/dashboards").json()
    assert anonymous["numberOfDashboards"] == 0
    mine = client.get("/dashboards", headers=operator).json()
    assert [d["id"] for d in mine["dashboards"]] == ["reports_1022"]
    page = client.get("/dashboards?f=html", headers=operator)
    assert page.status_code == 200 and "Bảng điều hành phản ánh 1022" in page.text
    # An internal dashboard does not exist for an anonymous caller; a browser is sent to sign in.
    assert client.get("/dashboards/reports_1022/data").status_code == 404
    assert client.get("/dashboards/nope/data", headers=operator).status_code == 404
    redirect = client.get(
        "/dashboards/reports_1022?ward=25747",
        headers={"Accept": "text/html"},
        follow_redirects=False,
    )
    assert redirect.status_code == 303 and "/maps/session?next=" in redirect.headers["location"]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2025-01-01", "to": "2025-12-01", "units": "ward"},
        {"from": "2025-06-01", "to": "2025-09-01", "category": "rác thải", "units": "ward2019"},
        {"from": "2025-01-01", "to": "2025-12-01", "ward": "25747", "units": "district"},
        {
            "from": "2025-03-01",
            "to": "2025-12-01",
            "district": "776",
            "status": "mới",
            "units": "ward",
        },
        {  # every value filter at once, hourly (each flag of the counts pass in play)
            "from": "2025-11-01",
            "to": "2025-11-30T12:00",
            "category": "rác thải",
            "status": "đã xử lý",
            "channel": "điện thoại",
            "handling_unit": "UBND Xã Bình Hưng",
            "bucket": "hour",
            "units": "ward2019",
        },
        {"from": "2025-10-01", "to": "2025-12-01", "channel": "điện thoại", "units": "ward"},
    ],
)
def test_every_panel_equals_direct_sql(client, db, operator, params):
    doc = data(client, operator, **params)
    now = datetime.fromisoformat(doc["at"])
    start = datetime.fromisoformat(params["from"]).replace(tzinfo=CITY)
    end = datetime.fromisoformat(params["to"]).replace(tzinfo=CITY)
    where_of: dict[str, tuple[str, list]] = {
        "time": ("r.reported_at >= %s AND r.reported_at < %s", [start, end])
    }
    for name in ("category", "status", "channel", "handling_unit"):
        if name in params:
            where_of[name] = (f"r.{name} = %s", [params[name]])
    if "ward" in params:
        where_of["ward"] = (
            "EXISTS (SELECT 1 FROM data.wards w WHERE w.ward_code = %s"
            " AND ST_Intersects(w.geom, r.geom))",
            [params["ward"]],
        )
    if "district" in params:
        where_of["district"] = (
            "EXISTS (SELECT 1 FROM data.districts_2019 d WHERE d.district_code = %s"
            " AND ST_Intersects(d.geom, r.geom))",
            [params["district"]],
        )

    def where(without: str | None = None, extra: tuple[str, list] | None = None):
        parts = [v for k, v in where_of.items() if k != without] + ([extra] if extra else [])
        return " AND ".join(p[0] for p in parts), [a for p in parts for a in p[1]]

    def grouped(column: str, without: str | None = None) -> dict:
        w, a = where(without)
        return dict(sql_rows(db, w, a, f"r.{column}, count(*)", f"r.{column}"))

    overdue = deadline_sql(now)
    w, a = where()
    (total,) = sql_rows(db, w, a, "count(*)")[0]
    assert doc["kpi"]["total"] == total > 0
    w, a = where(extra=("r.status = ANY(%s)", [OPEN]))
    assert doc["kpi"]["open"] == sql_rows(db, w, a, "count(*)")[0][0]
    w, a = where(extra=overdue)
    assert doc["kpi"]["overdue"] == sql_rows(db, w, a, "count(*)")[0][0]
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    w, a = where(extra=("r.reported_at >= %s", [today]))
    assert doc["kpi"]["today"] == sql_rows(db, w, a, "count(*)")[0][0]
    w, a = where(
        extra=("r.status = ANY(%s) AND r.resolved_at >= r.reported_at", [BOARD.closed_statuses])
    )
    hours = [r[0] for r in sql_rows(db, w, a, "extract(epoch FROM r.resolved_at - r.reported_at)")]
    median = round(statistics.median(map(float, hours)) / 3600, 1) if hours else None
    assert doc["kpi"]["median_close_hours"] == median
    for panel in ("category", "status", "channel"):
        # A panel is not narrowed by its own dimension.
        assert {r["key"]: r["n"] for r in doc[panel]} == grouped(panel, without=panel), panel
    assert sum(r["n"] for r in doc["series"]) == total
    w, a = where()
    bucket = params.get("bucket", "day")
    days = dict(
        sql_rows(
            db, w, a, f"date_trunc('{bucket}', r.reported_at, 'Asia/Ho_Chi_Minh'), count(*)", "1"
        )
    )
    assert {datetime.fromisoformat(r["key"]): r["n"] for r in doc["series"]} == days
    w, a = where(extra=("r.status = ANY(%s)", [OPEN]))
    opened = dict(sql_rows(db, w, a, "r.handling_unit, count(*)", "1"))
    w, a = where(extra=overdue)
    late = dict(sql_rows(db, w, a, "r.handling_unit, count(*)", "1"))
    totals = grouped("handling_unit")
    assert {r["key"]: (r["total"], r["open"], r["overdue"]) for r in doc["ranking"]} == {
        k: (n, opened.get(k, 0), late.get(k, 0)) for k, n in totals.items()
    }
    # The map's units: counted by the same intersection, not narrowed by their own level.
    level = params["units"]
    table, code = {
        "ward": ("data.wards", "ward_code"),
        "ward2019": ("data.wards_2019", "ward_code"),
        "district": ("data.districts_2019", "district_code"),
    }[level]
    w, a = where(without={"ward2019": "ward2019"}.get(level, level))
    by_unit = dict(_unit_counts(db, table, code, w, a))
    assert {u["code"]: u["total"] for u in doc["units"] if u["total"]} == by_unit


def _unit_counts(db, table: str, code: str, where: str, args: list) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            f"SELECT u.{code}::text, count(*) FROM {table} u JOIN data.reports_1022 r"
            f" ON ST_Intersects(u.geom, r.geom) WHERE {where} GROUP BY 1",
            args,
        )
        return cur.fetchall()


def test_thresholds_colour_units_and_fill_the_alerts(client, operator):
    doc = data(client, operator, **{"from": "2024-12-01", "to": "2025-12-01", "units": "district"})
    alerts = {a["code"]: a for a in doc["alerts"]}
    for unit in doc["units"]:
        passed = [i for i, t in enumerate(BOARD.thresholds) if unit[t.metric] > t.above]
        if passed:
            assert unit["alert"] == passed[0] and alerts[unit["code"]]["threshold"] == passed[0]
        else:
            assert "alert" not in unit and unit["code"] not in alerts
    assert alerts, "the demo year passes the overdue threshold somewhere"


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"colour": "red"}, "colour"),
        ({"ward": "1; DROP TABLE x"}, "ward"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2025-05-01", "to": "2025-04-01"}, "to"),
        ({"bucket": "minute"}, "bucket"),
        ({"units": "province"}, "units"),
        ({"bucket": "hour", "from": "2025-01-01", "to": "2025-06-01"}, "bucket"),
        ({"ward": "99999999"}, "spatial.0.ward"),
    ],
)
def test_bad_input_is_a_400_that_says_why(client, operator, params, parameter):
    response = client.get("/dashboards/reports_1022/data", params=params, headers=operator)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["parameter"] == parameter and body["description"].endswith(".")


def test_a_value_with_quotes_is_only_a_value(client, operator):
    doc = data(client, operator, category="x' OR '1'='1", **{"from": "2025-01-01"})
    assert doc["kpi"]["total"] == 0


def test_csv_per_panel_is_the_panel(client, operator):
    params = {"from": "2025-01-01", "to": "2025-12-01", "category": "rác thải"}
    doc = data(client, operator, **params)
    for panel, key in (("category", "n"), ("ranking", "overdue"), ("units", "total")):
        response = client.get(
            f"/dashboards/reports_1022/panels/{panel}.csv", params=params, headers=operator
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
        assert [int(r[key]) for r in rows] == [r[key] for r in doc[panel]]
    kpi = client.get("/dashboards/reports_1022/panels/kpi.csv", params=params, headers=operator)
    assert f"total,{doc['kpi']['total']}" in kpi.text
    bad = client.get("/dashboards/reports_1022/panels/nope.csv", headers=operator)
    assert bad.status_code == 400 and bad.json()["parameter"] == "panel"


def test_cached_per_data_version(client, db, operator, writer):
    params = {"from": "2025-01-01", "to": "2025-12-01"}
    first = data(client, operator, **params)
    computed = panels.CACHE.computed
    again = data(client, operator, **params)
    assert panels.CACHE.computed == computed and again == first
    with db.cursor() as cur:
        cur.execute(
            "SELECT fid::text FROM data.reports_1022 WHERE status = 'mới'"
            " AND reported_at >= '2025-01-01' ORDER BY fid LIMIT 1"
        )
        (report_no,) = cur.fetchone()
    response = client.patch(
        f"/collections/reports_1022/items/{report_no}",
        json={"properties": {"status": "đã đóng", "resolved_at": "2025-11-30T10:00:00+07:00"}},
        headers={**writer, "Content-Type": MERGE},
    )
    assert response.status_code == 204, response.text
    try:
        moved = data(client, operator, **params)
        assert panels.CACHE.computed == computed + 1
        assert moved["kpi"]["open"] == first["kpi"]["open"] - 1
        assert moved["version"] != first["version"]
    finally:
        client.patch(
            f"/collections/reports_1022/items/{report_no}",
            json={"properties": {"status": "mới", "resolved_at": None}},
            headers={**writer, "Content-Type": MERGE},
        )


def test_the_page_holds_no_data_and_no_inline_script(client, operator):
    response = client.get(
        "/dashboards/reports_1022?category=r%C3%A1c%20th%E1%BA%A3i&layout=wall", headers=operator
    )
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    html = response.text
    assert "/static/vendor/echarts/dist/echarts.min.js" in html
    assert "ioc-dash-wall" in html
    assert client.get("/static/vendor/echarts/dist/echarts.min.js").status_code == 200
    assert client.get("/static/dashboards/dashboard.js").status_code == 200
    units = client.get("/dashboards/reports_1022/units?units=ward2019", headers=operator).json()
    assert len(units["features"]) > 300 and units["features"][0]["properties"]["code"]
