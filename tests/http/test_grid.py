"""Grid aggregates (``/collections/{id}/grid``): every feature counted once, in the cell of its
point, after the same filters as ``/items`` — the heat map of the wall is drawn from them."""

from __future__ import annotations

import pytest

from ioc.features.grid import MAX_CELLS, tile_x, tile_y
from tests.fixtures.layers import POINTS, RESTRICTED_DEPARTMENT

OPEN = "status <> 'đã đóng'"


def grid(client, layer: str, headers=None, **params):
    response = client.get(f"/collections/{layer}/grid", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def total(doc: dict) -> int:
    counts = [row[doc["columns"].index("count")] for row in doc["cells"]]
    assert doc["total"] == sum(counts) and doc["max"] == max(counts, default=0)
    return sum(counts)


def test_every_point_counted_once_in_its_cell(client):
    doc = grid(client, "fx_points", level=14)
    assert total(doc) == POINTS and doc["unlocated"] == 0
    x, y, lon, lat = (doc["columns"].index(k) for k in ("x", "y", "lon", "lat"))
    keys = {(row[x], row[y]) for row in doc["cells"]}
    assert len(keys) == doc["numberOfCells"] == len(doc["cells"])  # one row per cell
    for row in doc["cells"]:  # a cell's mean point lies in the cell (cells are convex)
        assert (tile_x(row[lon], 14), tile_y(row[lat], 14)) == (row[x], row[y])


@pytest.mark.parametrize(
    "params",
    [
        {"filter": "category = 'alpha'"},
        {"filter": "n < 10 AND ok = true", "bbox": "106.55,10.62,106.75,10.9"},
        {"datetime": "2024-01-10T00:00:00Z/2024-02-01T00:00:00Z"},
        {"bbox": "106.6,10.7,106.7,10.8"},
    ],
)
def test_sum_of_cells_is_the_count_of_the_filter(client, params):
    """The same bbox, datetime and filter as /items select the same features."""
    matched = client.get("/collections/fx_points/items", params={**params, "limit": 1}).json()
    assert matched["numberMatched"] > 0
    assert total(grid(client, "fx_points", level=15, **params)) == matched["numberMatched"]


def test_a_larger_layer_counted_whole_at_every_level(client, db):
    """fx_reports' 100,000 points (no numberMatched on /items above 50,000): counted in SQL."""
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM fixtures.reports WHERE category = 'ngap_nuoc'")
        expected = cur.fetchone()[0]
    for level in (8, 12, 16):
        doc = grid(client, "fx_reports", level=level, filter="category = 'ngap_nuoc'")
        assert total(doc) == expected
    coarse = grid(client, "fx_reports", level=8)
    fine = grid(client, "fx_reports", level=12)
    assert (
        total(coarse) == total(fine) == 100_000 and coarse["numberOfCells"] < fine["numberOfCells"]
    )


def test_the_1022_heat_map_counts_every_open_report(client, db, make_key):
    """The wall's heat map: open reports of an internal layer, counted for an operator."""
    operator = {"Authorization": f"Bearer {make_key('operator')}"}
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM ioc.layers WHERE id = 'reports_1022'")
        if cur.fetchone()[0] == 0:
            pytest.skip("the demo city is not seeded")
        cur.execute("SELECT schema_name, table_name FROM ioc.layers WHERE id = 'reports_1022'")
        schema, table = cur.fetchone()
        cur.execute(f'SELECT count(*) FROM "{schema}"."{table}" WHERE status <> %s', ("đã đóng",))
        expected = cur.fetchone()[0]
    doc = grid(client, "reports_1022", operator, level=16, filter=OPEN)
    assert total(doc) + doc["unlocated"] == expected > 0
    assert client.get("/collections/reports_1022/grid?level=12").status_code == 404  # anonymous


def test_other_projections_lines_polygons_and_missing_geometries(client):
    assert total(grid(client, "fx_vn2000", level=16)) == 20  # stored in EPSG:9210
    assert total(grid(client, "fx_blocks", level=16)) == 100  # polygons: a point on surface
    odd = grid(client, "fx_odd_names", level=10)  # a row without geometry
    assert total(odd) == 2 and odd["unlocated"] == 1


def test_weight_sums_a_numeric_property(client):
    doc = grid(client, "fx_points", level=10, weight="n")
    assert doc["columns"][-1] == "sum"
    assert sum(row[-1] for row in doc["cells"]) == sum(i % 100 for i in range(POINTS))


def test_access_is_the_layer_s(client, make_key):
    assert client.get("/collections/fx_internal/grid?level=10").status_code == 404
    operator = {"Authorization": f"Bearer {make_key('operator')}"}
    assert (
        client.get("/collections/fx_restricted/grid?level=10", headers=operator).status_code == 404
    )
    own = {"Authorization": f"Bearer {make_key('publisher', RESTRICTED_DEPARTMENT)}"}
    doc = grid(client, "fx_restricted", own, level=10)
    assert total(doc) == 1
    answer = client.get("/collections/fx_restricted/grid?level=10", headers=own)
    assert answer.headers["cache-control"] == "private, no-store"
    assert (
        client.get("/collections/fx_points/grid?level=4")
        .headers["cache-control"]
        .startswith("public")
    )


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("", "level"),
        ("level=25", "level"),
        ("level=x", "level"),
        ("level=10&limit=5", "limit"),
        ("level=10&weight=category", "numeric"),
        ("level=10&weight=nope", "nope"),
        ("level=10&filter=nope%20%3D%201", "nope"),
        ("level=10&filter=category%20%3D", "filter"),
        ("level=10&bbox=1,2,3", "bbox"),
        ("level=10&datetime=yesterday", "datetime"),
        ("level=22", "cells"),  # fx_points' extent at level 22: far more than MAX_CELLS
        ("level=18&bbox=100,5,110,15", "cells"),
    ],
)
def test_bad_input_is_a_400_that_says_what(client, query, word):
    response = client.get(f"/collections/fx_points/grid?{query}")
    assert response.status_code == 400, response.text
    assert word in response.text
    assert MAX_CELLS == 262_144


def test_an_empty_answer(client):
    doc = grid(client, "fx_empty", level=12)
    assert doc["cells"] == [] and doc["total"] == 0 and doc["max"] == 0
    far = grid(client, "fx_points", level=12, bbox="0,0,1,1")
    assert far["total"] == 0
