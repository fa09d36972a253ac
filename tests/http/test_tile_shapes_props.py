"""Generalised tiles read their attributes from ioc.tile_shapes (issue 20, sql/0019): a dense
tile no longer joins back to the layer's rows, and what it says is what the rows say.

A layer of our own whose tiles carry text (a label with quotes, the style category), an
integer id attribute and a timestamp, 100 squares visible at z12. Each tile is
rendered twice from the same statement builder: from the stored shapes (the settings in
force) and from the rows (generalisation off at that zoom), and the two are compared feature
by feature (ids and attributes), before and after attribute-only writes.
"""

from __future__ import annotations

import mapbox_vector_tile
import pytest

from ioc.catalog.layers import load_catalog_sync
from tests.http.test_publish import _clean
from tests.http.test_tiles import tile_of
from tests.http.test_tiles_lowzoom import _manifest, _rows, _square, _upload
from tiles.settings import TileSettings
from tiles.sql import build_tile_sql, plan_tile, tile_properties

LAYER = "tsp_blocks"
CENTRE = (106.70, 10.78)
Z = 12
ATTRIBUTES = [
    {"name": "code", "type": "integer", "label": {"vi": "Mã", "en": "Code"}},
    {"name": "floors", "type": "integer", "label": {"vi": "Số tầng", "en": "Floors"}},
    {"name": "height", "type": "number", "label": {"vi": "Chiều cao", "en": "Height"}},
    {"name": "listed", "type": "boolean", "label": {"vi": "Di sản", "en": "Listed"}},
    {"name": "seen", "type": "timestamp", "label": {"vi": "Cập nhật", "en": "Seen"}},
]


def _feature(k: int) -> dict:
    step = 150 / 111_320
    lon, lat = CENTRE[0] + (k % 10) * step, CENTRE[1] + (k // 10) * step
    return {
        "type": "Feature",
        "properties": {
            "name": f"Nhà {k} 'Bến Thành'" if k % 3 else None,
            "kind": ("ngap", "rac", "den")[k % 3],
            "code": 1000 + k,
            "floors": k % 7,
            "height": 3.25 * k + 0.1,
            "listed": k % 2 == 0,
            "seen": f"2026-12-0{1 + k % 5}T0{k % 10}:15:30.123456+07:00",
        },
        "geometry": {"type": "Polygon", "coordinates": _square(lon, lat, 80)},
    }


@pytest.fixture(scope="module")
def blocks(client, make_key, db_settings):
    _clean(db_settings, "tsp")
    publisher = {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}
    manifest = _manifest(LAYER, "Polygon", id_attribute="code", time_attribute="seen")
    manifest["attributes"] += ATTRIBUTES
    response = client.post("/layers", json=manifest, headers=publisher)
    assert response.status_code == 201, response.text
    _upload(client, "put", LAYER, [_feature(k) for k in range(100)], publisher)
    yield publisher
    _clean(db_settings, "tsp")


def _tile(db, settings: TileSettings) -> dict[int, dict]:
    """The z12 tile over the blocks, rendered with these settings: feature id → attributes."""
    layer = load_catalog_sync(db).find(LAYER)
    db.rollback()
    plans = plan_tile([layer], Z, settings)
    (mvt,) = _render(db, plans, settings)
    features = mapbox_vector_tile.decode(bytes(mvt))[LAYER]["features"]
    return {f["id"]: f["properties"] for f in features}


def _render(db, plans, settings: TileSettings) -> tuple:
    z, x, y = tile_of(*CENTRE, Z)
    with db.cursor() as cur:
        cur.execute("PREPARE tsp_tile(int, int, int) AS " + build_tile_sql(plans, settings))
        cur.execute("EXECUTE tsp_tile(%s, %s, %s)", (z, x, y))
        row = cur.fetchone()[:1]  # the MVT (and not the truncation flags)
        cur.execute("DEALLOCATE tsp_tile")
    db.rollback()
    return row


STORED = TileSettings()
# Generalisation ends below Z: the same builder reads the rows.
FROM_ROWS = TileSettings(generalise_max_zoom=Z - 1)


def _assert_stored_equals_rows(db) -> dict[int, dict]:
    stored, rows = _tile(db, STORED), _tile(db, FROM_ROWS)
    assert len(rows) == 100
    assert stored == rows
    return stored


def test_stored_tile_says_what_the_rows_say(blocks, db):
    tile = _assert_stored_equals_rows(db)
    some = next(p for p in tile.values() if p.get("name", "").startswith("Nhà 1 "))
    assert some["kind"] == "rac" and some["code"] == 1001
    assert some["seen"].startswith("2026-12-01T18:15:30")  # 01:15:30+07:00 on the 2nd
    assert "floors" not in some  # not what the style needs: not in the tile


def test_tile_reads_no_layer_row(blocks, db):
    """The plan of a generalised tile scans ioc.tile_shapes and never the layer's table."""
    layer = load_catalog_sync(db).find(LAYER)
    db.rollback()
    plans = plan_tile([layer], Z, STORED)
    z, x, y = tile_of(*CENTRE, Z)
    with db.cursor() as cur:
        cur.execute("PREPARE tsp_plan(int, int, int) AS " + build_tile_sql(plans, STORED))
        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE tsp_plan(%s, %s, %s)", (z, x, y))
        plan = cur.fetchone()[0]
        cur.execute("DEALLOCATE tsp_plan")
    db.rollback()
    scanned: list[tuple[str, int]] = []

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            scanned.append((node["Relation Name"], node.get("Actual Rows", 0)))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    assert ("tile_shapes", 100) in [(name, rows) for name, rows in scanned if rows]
    assert not [name for name, rows in scanned if name == LAYER and rows], scanned


def test_attribute_only_writes_reach_the_stored_tile(blocks, client, db):
    """PATCHes that change only attributes (no geometry) change the stored tile as the rows."""
    items = f"/collections/{LAYER}/items"
    fids = [row[0] for row in _rows(db, f"SELECT fid FROM data.{LAYER} ORDER BY fid LIMIT 3")]
    changes = [
        {"kind": "den", "code": 4200},
        {"name": 'Chợ "Lớn"', "height": 1e-7, "listed": True},
        {"seen": "2027-01-01T00:00:00Z", "name": None},
    ]
    for fid, properties in zip(fids, changes, strict=True):
        response = client.patch(f"{items}/{fid}", json={"properties": properties},
                                headers=blocks)  # fmt: skip
        assert response.status_code == 204, response.text
    tile = _assert_stored_equals_rows(db)
    assert tile[fids[0]]["kind"] == "den" and tile[fids[0]]["code"] == 4200
    assert tile[fids[1]]["name"] == 'Chợ "Lớn"'
    assert "name" not in tile[fids[2]] and tile[fids[2]]["seen"].startswith("2027-01-01")


def test_plain_sql_update_reaches_the_stored_tile(blocks, db):
    """The statement trigger keeps props whoever writes: a bulk UPDATE of one attribute."""
    with db.cursor() as cur:
        cur.execute(f"UPDATE data.{LAYER} SET code = code + 100000 WHERE fid % 2 = 0")
    db.commit()
    tile = _assert_stored_equals_rows(db)
    assert sum(p["code"] >= 100000 for p in tile.values()) == 50


def test_stale_property_list_falls_back_to_the_rows(blocks, db):
    """Stored props without a column the style now needs: the tile joins back to the rows."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE ioc.tile_lowzoom SET properties = array_remove(properties, 'kind')"
            " WHERE layer_id = %s",
            (LAYER,),
        )
        cur.execute(f"UPDATE data.{LAYER} SET kind = 'rac'")
    db.commit()
    try:
        tile = _assert_stored_equals_rows(db)
        assert {p["kind"] for p in tile.values()} == {"rac"}
    finally:
        with db.cursor() as cur:
            cur.execute("SELECT ioc.tile_lowzoom_build(%s)", (LAYER,))
        db.commit()


def test_every_shapes_layer_stores_what_its_tiles_carry(db):
    """ioc.tile_shape_properties (SQL) picks at least the columns tiles.sql.tile_properties
    (Python) asks for, for every layer of the demo city built as shapes: their tiles take the
    stored path, not the join."""
    catalog = load_catalog_sync(db)
    built = dict(
        _rows(db, "SELECT layer_id, properties FROM ioc.tile_lowzoom WHERE kind = 'shapes'")
    )
    assert len(built) > 20
    short = {
        layer_id: missing
        for layer_id, stored in built.items()
        if (layer := catalog.find(layer_id))
        and (missing := {p.name for p in tile_properties(layer)} - set(stored or ()))
    }
    assert short == {}
