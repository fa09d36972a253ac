"""The points a dashboard's map draws (GET /dashboards/{id}/points): the newest reports under
every filter of the state, the unit filters too (ids against direct SQL), capped with
`truncated`, bad input a 400, and only for callers who may open the dashboard."""

from __future__ import annotations

import pytest

RANGE = {"from": "2024-12-01", "to": "2025-12-01"}
URL = "/dashboards/reports_1022/points"


@pytest.fixture(scope="module")
def operator(make_key):
    return {"Authorization": f"Bearer {make_key('operator')}"}


def points(client, headers, **params) -> dict:
    response = client.get(URL, params={**RANGE, **params}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/geo+json")
    return response.json()


def in_range(db, join: str, where: str, *args) -> list[tuple[str, str]]:
    """(fid, reported_at) of the reports in the range under a unit join, newest first."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT r.fid::text, r.reported_at FROM data.reports_1022 r"
            f" JOIN {join} ON ST_Intersects(u.geom, r.geom) WHERE {where}"
            " AND r.reported_at >= '2024-12-01T00:00+07' AND r.reported_at < '2025-12-01T00:00+07'"
            " ORDER BY r.reported_at DESC",
            args,
        )
        return cur.fetchall()


def busiest(db, table: str, code: str) -> str:
    with db.cursor() as cur:
        cur.execute(
            f"SELECT u.{code}::text FROM {table} u JOIN data.reports_1022 r"
            " ON ST_Intersects(u.geom, r.geom) GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        return cur.fetchone()[0]


def test_a_ward_s_points_are_its_reports(client, db, operator):
    ward = busiest(db, "data.wards", "ward_code")
    rows = in_range(db, "data.wards u", "u.ward_code = %s", ward)
    doc = points(client, operator, ward=ward, limit=5000)
    assert {str(f["id"]) for f in doc["features"]} == {fid for fid, _ in rows}
    assert doc["numberReturned"] == len(rows) and doc["truncated"] is False
    # With a value filter too, and newest first under a cap.
    category = doc["features"][0]["properties"]["category"]
    capped = points(client, operator, ward=ward, category=category, limit=3)
    assert capped["truncated"] is True and len(capped["features"]) == 3
    assert all(f["properties"]["category"] == category for f in capped["features"])
    times = [f["properties"]["reported_at"] for f in capped["features"]]
    assert times == sorted(times, reverse=True)


def test_a_district_s_points_are_its_reports(client, db, operator):
    district = busiest(db, "data.districts_2019", "district_code")
    rows = in_range(db, "data.districts_2019 u", "u.district_code = %s", district)
    doc = points(client, operator, district=district, units="ward", limit=10000)
    assert {str(f["id"]) for f in doc["features"]} == {fid for fid, _ in rows}


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"limit": "0"}, "limit"), ({"ward": "x'1"}, "ward"), ({"colour": "red"}, "colour")],
)
def test_bad_input_is_a_400(client, operator, params, parameter):
    response = client.get(URL, params=params, headers=operator)
    assert response.status_code == 400, response.text
    assert parameter in response.json()["description"]


def test_only_for_those_who_may_open_the_dashboard(client):
    assert client.get(URL).status_code in (401, 404)


def test_cached_per_data_version(client, operator, make_key):
    """A repeated request is answered from the cache; a new report makes the next answer new,
    with the report first (the newest)."""
    from ioc.dashboards.points import CACHE

    writer = {"Authorization": f"Bearer {make_key('publisher', 'science_tech')}"}
    first = points(client, operator, limit=5)
    computed = CACHE.computed
    assert points(client, operator, limit=5) == first
    assert CACHE.computed == computed
    created = client.post(
        "/collections/reports_1022/items",
        json={
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [106.70, 10.78]},
            "properties": {
                "report_no": "POINTS-TEST-0001",
                "category": "ngập nước",
                "status": "mới",
                "reported_at": "2025-11-30T23:30:00+07:00",
            },
        },
        headers={**writer, "Content-Type": "application/geo+json"},
    )
    assert created.status_code == 201, created.text
    fid = created.json()["ids"][0]
    try:
        after = points(client, operator, limit=5)
        assert CACHE.computed == computed + 1
        assert str(after["features"][0]["id"]) == str(fid)
    finally:
        gone = client.delete(f"/collections/reports_1022/items/{fid}", headers=writer)
        assert gone.status_code == 204, gone.text
