"""GET /stats/{layer}/by-ward: the value of every ward equals a direct SQL aggregate, ranks and
classes are consistent, geometries are simplified, access and parameters are checked."""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import shape


@pytest.fixture(scope="module")
def analyst(make_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('analyst')}"}


def _values(doc) -> dict[str, float]:
    return {f["properties"]["ward_code"]: f["properties"]["value"] for f in doc["features"]}


def _sql(db, sql: str, *args) -> dict:
    with db.cursor() as cur:
        cur.execute(sql, args)
        return {code: (float(v) if v is not None else None) for code, v in cur.fetchall()}


def test_counts_equal_direct_sql_for_every_ward(client, analyst, db):
    response = client.get("/stats/reports_1022/by-ward", headers=analyst)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/geo+json"
    expected = _sql(
        db,
        "SELECT w.ward_code, count(t.fid) FROM data.wards w LEFT JOIN"
        " data.reports_1022 t ON ST_Intersects(w.geom, t.geom) GROUP BY 1",
    )
    got = _values(response.json())
    assert len(got) == 168 and got == expected
    assert sum(got.values()) >= 20_000  # every report lies in a ward (boundaries: in both)


def test_filtered_period_counts_equal_direct_sql(client, analyst, db):
    response = client.get(
        "/stats/reports_1022/by-ward",
        headers=analyst,
        params={"filter": "status = 'mới'", "from": "2025-03-01", "to": "2025-06-01"},
    )
    assert response.status_code == 200, response.text
    expected = _sql(
        db,
        """
        SELECT w.ward_code, count(t.fid) FROM data.wards w LEFT JOIN data.reports_1022 t
          ON ST_Intersects(w.geom, t.geom) AND t.status = 'mới'
         AND t.reported_at >= TIMESTAMPTZ '2025-03-01 00:00+07'
         AND t.reported_at < TIMESTAMPTZ '2025-06-01 00:00+07'
        GROUP BY 1""",
    )
    got = _values(response.json())
    assert got == expected and 0 < sum(got.values()) < 20_000


def test_pre_2025_wards_and_mean(client, analyst, db, data_dir):
    response = client.get(
        "/stats/flood_points/by-ward",
        headers=analyst,
        params={"measure": "avg", "attribute": "depth_cm", "wards": "2019"},
    )
    assert response.status_code == 200, response.text
    doc = response.json()
    expected = _sql(
        db,
        "SELECT w.ward_code, avg(t.depth_cm) FROM data.wards_2019 w LEFT JOIN"
        " data.flood_points t ON ST_Intersects(w.geom, t.geom) GROUP BY 1",
    )
    got = _values(doc)
    assert got.keys() == expected.keys()
    if data_dir is not None:  # the real 2019 wards (synthetic ones without IOC_DATA_DIR)
        assert len(got) == 322
    for code, value in expected.items():
        assert got[code] == (pytest.approx(value) if value is not None else None)
    assert doc["units_layer"] == "wards_2019" and doc["total"] is None
    assert {"district_code", "district_name"} <= set(doc["features"][0]["properties"])


def test_sum_equals_direct_sql(client, db):
    response = client.get(
        "/stats/construction_permits/by-ward", params={"measure": "sum", "attribute": "gfa_m2"}
    )
    assert response.status_code == 200
    expected = _sql(
        db,
        "SELECT w.ward_code, sum(t.gfa_m2) FROM data.wards w LEFT JOIN"
        " data.construction_permits t ON ST_Intersects(w.geom, t.geom)"
        " GROUP BY 1",
    )
    got = _values(response.json())
    assert got.keys() == expected.keys()
    for code, value in expected.items():
        assert got[code] == (pytest.approx(value) if value is not None else None)


def test_rank_class_and_breaks(client, analyst):
    doc = client.get("/stats/reports_1022/by-ward", headers=analyst).json()
    rows = [f["properties"] for f in doc["features"]]
    top = max(rows, key=lambda r: r["value"])
    assert top["rank"] == 1
    for row in rows:
        higher = sum(1 for other in rows if other["value"] > row["value"])
        assert row["rank"] == higher + 1
    breaks = doc["breaks"]
    assert breaks == sorted(breaks) and breaks[0] == min(r["value"] for r in rows)
    assert breaks[-1] == top["value"] and doc["classes"] == len(breaks) - 1
    for row in rows:
        lo, hi = breaks[row["class"]], breaks[row["class"] + 1]
        assert lo <= row["value"] <= hi
    assert len(doc["legend"]) == doc["classes"] and doc["legend"][0]["label"]["vi"]
    assert doc["total"] == sum(r["value"] for r in rows)


def test_geometries_are_simplified_and_valid(client, db, data_dir):
    doc = client.get("/stats/flood_points/by-ward").json()
    with db.cursor() as cur:
        cur.execute("SELECT sum(ST_NPoints(geom)) FROM data.wards")
        raw_vertices = cur.fetchone()[0]
    shapes = [shape(f["geometry"]) for f in doc["features"]]
    vertices = sum(shapely.get_num_coordinates(s) for s in shapes)
    assert all(s.geom_type == "MultiPolygon" and not s.is_empty for s in shapes)
    # Real ward outlines are dense; the synthetic Voronoi cells (no IOC_DATA_DIR) are not.
    assert vertices < (raw_vertices / 3 if data_dir is not None else raw_vertices)
    assert doc["features"][0]["id"] == doc["features"][0]["properties"]["ward_code"]


def test_public_statistics_are_cacheable_internal_ones_are_not(client, analyst):
    public = client.get("/stats/flood_points/by-ward")
    assert public.headers["cache-control"].startswith("public")
    internal = client.get("/stats/reports_1022/by-ward", headers=analyst)
    assert internal.headers["cache-control"] == "private, no-store"


def test_unreadable_layer_is_404_like_an_unknown_one(client):
    hidden = client.get("/stats/reports_1022/by-ward")
    unknown = client.get("/stats/no_such_layer/by-ward")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["description"].replace("reports_1022", "X") == unknown.json()[
        "description"
    ].replace("no_such_layer", "X")
    assert client.get("/stats/flood_points/by-ward", params={"wards": "2019"}).status_code == 404
    assert client.get("/stats/x';DROP TABLE data.wards;--/by-ward").status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"measure": "median"},
        {"measure": "sum"},
        {"measure": "sum", "attribute": "street"},
        {"measure": "avg", "attribute": "depth_cm'); DROP TABLE data.wards; --"},
        {"from": "yesterday"},
        {"to": "2025-13-45"},
        {"filter": "depth_cm > 1; DROP TABLE data.wards"},
        {"filter": "no_such_attribute = 1"},
        {"filter-lang": "sql"},
        {"wards": "2020"},
    ],
)
def test_bad_parameters_are_400(client, params):
    response = client.get("/stats/flood_points/by-ward", params=params)
    assert response.status_code == 400, (params, response.text)
    assert response.json()["parameter"]
