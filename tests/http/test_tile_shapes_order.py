"""Dense generalised polygon tiles (issue 20): the stored shapes lie in the table by place, and
the tile statement clips each shape once.

A layer of our own: 400 small squares on a grid near the centre, published in shuffled order
(so feature ids say nothing about place), all visible at z12.
"""

from __future__ import annotations

import random

import pytest

from ioc.catalog.layers import load_catalog_sync
from tests.http.test_publish import _clean
from tests.http.test_tiles import tile_of
from tests.http.test_tiles_lowzoom import _manifest, _polygon, _rows, _square, _upload
from tiles.settings import TileSettings
from tiles.sql import build_tile_sql, plan_tile

LAYER = "tso_squares"
CENTRE = (106.70, 10.78)
Z = 12


@pytest.fixture(scope="module")
def squares(client, make_key, db_settings):
    """The layer, published: 20 × 20 squares of 80 m, 150 m apart, in shuffled order."""
    _clean(db_settings, "tso")
    publisher = {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}
    response = client.post("/layers", json=_manifest(LAYER, "Polygon"), headers=publisher)
    assert response.status_code == 201, response.text
    cells = [(i, j) for i in range(20) for j in range(20)]
    random.Random(7).shuffle(cells)
    step = 150 / 111_320
    shapes = [
        _polygon(f"s{i}_{j}", _square(CENTRE[0] + i * step, CENTRE[1] + j * step, 80))
        for i, j in cells
    ]
    _upload(client, "put", LAYER, shapes, publisher)
    yield
    _clean(db_settings, "tso")


def test_stored_shapes_are_in_spatial_order(squares, db):
    """Within a zoom, each row's geometry sorts after the one stored before it (PostGIS orders
    geometries along a Hilbert curve): shapes near each other share heap pages."""
    count, out_of_order = _rows(
        db,
        "SELECT count(*), count(*) FILTER (WHERE prev > geom) FROM (SELECT geom,"
        " lag(geom) OVER (ORDER BY ctid) AS prev FROM ioc.tile_shapes"
        " WHERE layer_id = %s AND z = %s) s",
        LAYER,
        Z,
    )[0]
    assert count == 400
    assert out_of_order == 0


def test_tile_statement_clips_each_shape_once(squares, db):
    """ST_AsMVTGeom is in no scan's filter: the IS NOT NULL test reads the computed column."""
    layer = load_catalog_sync(db).find(LAYER)
    db.rollback()
    plans = plan_tile([layer], Z, TileSettings())
    z, x, y = tile_of(*CENTRE, Z)
    with db.cursor() as cur:
        cur.execute("PREPARE tso_tile(int, int, int) AS " + build_tile_sql(plans, TileSettings()))
        cur.execute("EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE tso_tile(%s, %s, %s)", (z, x, y))
        plan = cur.fetchone()[0]
        cur.execute("DEALLOCATE tso_tile")
    db.rollback()
    filters = []

    def walk(node: dict) -> None:
        filters.extend(v for k, v in node.items() if k.endswith("Filter") and isinstance(v, str))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    assert filters, "the plan has no filter at all: the test reads the wrong plan"
    assert not [f for f in filters if "st_asmvtgeom" in f.lower()]
