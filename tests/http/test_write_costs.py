"""Writes pay only for what changed (issue 19, write performance), through the real HTTP API.

* The low-zoom triggers (sql/0014) leave a layer's cells and shapes untouched — not even
  rewritten with the same values (their ``xmin`` is kept) — when an update changes only
  readings, and move a point's counts when it moves or changes category: the cells are then
  exactly what a rebuild from the rows gives.
* A feed line identical to the stored feature is not written: reported ``unchanged``, no
  history state, no change event, no version when the whole batch is unchanged.
* Single-item writes keep the count and extent without a recount and re-link only the
  features they wrote to digital addresses.
* A layer deleted from the registry takes its low-zoom rows with it.
"""

from __future__ import annotations

import math

import psycopg2
import pytest

from tests.http.test_feed import ndjson, post
from tests.http.test_feed import query as _rows
from tests.http.test_publish import _clean
from tests.http.test_tiles_lowzoom import KINDS
from tests.http.test_tiles_lowzoom import _manifest as lowzoom_manifest

POINTS, SHAPES = "wc_points", "wc_shapes"


def _manifest(layer_id: str, geometry: str) -> dict:
    """The low-zoom tests' layer, upserted by name, with history and a reading (level)."""
    manifest = lowzoom_manifest(
        layer_id,
        geometry,
        id_attribute="name",
        tiles={"cluster": True, "cluster_max_zoom": 13},
        history={"retention_days": 7},
    )
    level = {"name": "level", "type": "integer", "label": {"vi": "Mức", "en": "Level"}}
    return {**manifest, "attributes": [*manifest["attributes"], level]}


def _point(name: str, lon: float, lat: float, kind: str = "ngap", level: int = 0) -> dict:
    return {
        "type": "Feature",
        "properties": {"name": name, "kind": kind, "level": level},
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def _square(name: str, lon: float, lat: float, side_m: float, level: int = 0) -> dict:
    h = side_m / 2 / 111_320
    ring = [[lon - h, lat - h], [lon + h, lat - h], [lon + h, lat + h], [lon - h, lat + h]]
    return {
        "type": "Feature",
        "properties": {"name": name, "kind": "ngap", "level": level},
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    }


def _grid_points(level: int = 0) -> list[dict]:
    """60 points over ~6 km, so that they spread over cells of every zoom."""
    return [
        _point(f"P{k}", 106.66 + (k % 10) * 0.006, 10.75 + (k // 10) * 0.006, KINDS[k % 3], level)
        for k in range(60)
    ]


def _feed(client, headers, layer: str, features: list[dict]) -> dict:
    response = post(client, headers, ndjson(*features), layer=layer)
    assert response.status_code == 200, response.text
    return response.json()


def _cells(db, layer: str = POINTS) -> dict[tuple, tuple]:
    """(z, x, y, i, j, c) → (n, sx, sy, xmin) of a layer's stored cells."""
    rows = _rows(
        db,
        "SELECT z, x, y, i, j, c, n, sx, sy, xmin::text FROM ioc.tile_cells WHERE layer_id = %s",
        layer,
    )
    return {r[:6]: r[6:] for r in rows}


def _rebuilt_cells(db, layer: str = POINTS) -> dict[tuple, tuple]:
    """The cells a build from the rows gives (built and rolled back)."""
    with db.cursor() as cur:
        cur.execute("SELECT ioc.tile_lowzoom_build(%s)", (layer,))
        cur.execute(
            "SELECT z, x, y, i, j, c, n, sx, sy FROM ioc.tile_cells WHERE layer_id = %s", (layer,)
        )
        rows = cur.fetchall()
    db.rollback()
    return {r[:6]: r[6:] for r in rows}


def _assert_cells_are_rebuilt(db) -> None:
    stored, rebuilt = _cells(db), _rebuilt_cells(db)
    assert stored.keys() == rebuilt.keys()
    for key, (n, sx, sy, _) in stored.items():
        assert (n, sx, sy) == (rebuilt[key][0], *map(pytest.approx, rebuilt[key][1:])), key


def _drop(db_settings, prefix: str) -> None:
    """_clean, and the history tables it leaves (a later layer of the same id and other
    columns would meet them)."""
    _clean(db_settings, prefix)
    conn = psycopg2.connect(db_settings.dsn())
    with conn.cursor() as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'history' AND tablename LIKE %s",
            (prefix + "\\_%",),
        )
        for (table,) in cur.fetchall():
            cur.execute(f'DROP TABLE history."{table}"')
    conn.commit()
    conn.close()


@pytest.fixture(scope="module")
def publisher(make_key):
    return {"Authorization": f"Bearer {make_key('publisher', 'construction')}"}


@pytest.fixture(scope="module")
def layers(client, publisher, db_settings):
    _drop(db_settings, "wc")
    for manifest in (_manifest(POINTS, "Point"), _manifest(SHAPES, "Polygon")):
        response = client.post("/layers", json=manifest, headers=publisher)
        assert response.status_code == 201, response.text
    _feed(client, publisher, POINTS, _grid_points())
    squares = [_square(f"S{k}", 106.66 + k * 0.01, 10.76, 200 * (k + 1)) for k in range(4)]
    _feed(client, publisher, SHAPES, squares)
    yield
    _drop(db_settings, "wc")


def test_a_reading_update_leaves_the_low_zoom_rows_untouched(client, layers, publisher, db):
    before = _cells(db)
    assert sum(n for (z, *_), (n, *_) in before.items() if z == 13) == 60
    report = _feed(client, publisher, POINTS, _grid_points(level=7))
    assert (report["updated"], report["unchanged"]) == (60, 0)
    assert _cells(db) == before  # same sums, and no row rewritten (same xmin)

    shapes = "SELECT fid, z, xmin::text FROM ioc.tile_shapes WHERE layer_id = %s ORDER BY 1, 2"
    before_shapes = _rows(db, shapes, SHAPES)
    assert before_shapes
    squares = [_square(f"S{k}", 106.66 + k * 0.01, 10.76, 200 * (k + 1), 9) for k in range(4)]
    assert _feed(client, publisher, SHAPES, squares)["updated"] == 4
    assert _rows(db, shapes, SHAPES) == before_shapes


def test_a_moved_or_recategorised_point_moves_its_cells(client, layers, publisher, db):
    moved = _point("P0", 106.80, 10.90, "ngap")  # to other cells at every zoom
    nudged = _point("P11", 106.666 + 0.00001, 10.756, "den")  # same z8 cell, new centroid
    recategorised = _point("P22", 106.672, 10.762, "den")  # was 'rac', same place
    report = _feed(client, publisher, POINTS, [moved, nudged, recategorised])
    assert report["updated"] == 3
    _assert_cells_are_rebuilt(db)
    cells = _cells(db)
    at_z13 = {(c, n) for (z, *_, c), (n, *_) in cells.items() if z == 13}
    assert at_z13 <= {(k, 1) for k in KINDS}  # 60 points 660 m apart: one a cell
    new_place = [
        key
        for key, (n, sx, sy, _) in cells.items()
        if key[0] == 13 and math.isclose(sx / n, 6378137.0 * math.radians(106.80))
    ]
    assert len(new_place) == 1 and new_place[0][5] == "ngap"
    # A delete empties the cells it leaves: none is kept with a zero count.
    fid = _rows(db, f"SELECT fid FROM data.{POINTS} WHERE name = 'P0'")[0][0]
    assert client.delete(f"/collections/{POINTS}/items/{fid}", headers=publisher).status_code == 204
    _assert_cells_are_rebuilt(db)
    assert not [key for key, (n, *_) in _cells(db).items() if n <= 0]
    assert _feed(client, publisher, POINTS, [moved])["created"] == 1
    _assert_cells_are_rebuilt(db)


def test_identical_lines_are_not_written(client, layers, publisher, db):
    points = _grid_points(level=3)
    first = _feed(client, publisher, POINTS, points)
    history = f"SELECT count(*) FROM history.{POINTS}"
    events = "SELECT count(*) FROM ioc.events WHERE layer_id = %s"
    states, changes = _rows(db, history)[0][0], _rows(db, events, POINTS)[0][0]

    again = _feed(client, publisher, POINTS, points)
    assert again | {"failed": []} == {
        "received": 60,
        "applied": 60,
        "created": 0,
        "updated": 0,
        "unchanged": 60,
        "failed": [],
        "version": first["version"],  # nothing written: no new version
    }
    assert _rows(db, history)[0][0] == states
    assert _rows(db, events, POINTS)[0][0] == changes

    points[5] = _point("P5", 106.69, 10.75, KINDS[2], level=4)  # a reading changed
    mixed = _feed(client, publisher, POINTS, [*points, _point("NEW", 106.7, 10.8)])
    assert (mixed["updated"], mixed["created"], mixed["unchanged"]) == (1, 1, 59)
    assert mixed["version"] == first["version"] + 1
    assert _rows(db, history)[0][0] == states + 2  # one new state each, no copy of the rest
    (ids,) = _rows(
        db, "SELECT feature_ids FROM ioc.events WHERE layer_id = %s AND version = %s",
        POINTS, mixed["version"],
    )[0]  # fmt: skip
    codes = _rows(db, f"SELECT name FROM data.{POINTS} WHERE fid::text = ANY(%s)", ids)
    assert sorted(c for (c,) in codes) == ["NEW", "P5"]


def test_item_writes_keep_count_and_extent_without_a_recount(client, layers, publisher, db):
    items = f"/collections/{POINTS}/items"

    def stats():
        count, extent = _rows(
            db, "SELECT feature_count, extent FROM ioc.layers WHERE id = %s", POINTS
        )[0]
        real = _rows(
            db,
            "SELECT n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            f" FROM (SELECT count(*) AS n, ST_Extent(geom) AS e FROM data.{POINTS}) s",
        )[0]
        return count, extent, real

    far = _point("FAR", 106.95, 10.95)
    assert client.post(items, json=far, headers=publisher).status_code == 201
    count, extent, (n, *real) = stats()
    assert count == n
    assert extent[2:] == pytest.approx([106.95, 10.95])  # grown to the new feature
    assert extent[:2] == pytest.approx(real[:2])
    fid = _rows(db, f"SELECT fid FROM data.{POINTS} WHERE name = 'FAR'")[0][0]
    patched = client.patch(f"{items}/{fid}", json={"properties": {"level": 5}}, headers=publisher)
    assert patched.status_code == 204, patched.text
    assert stats()[0] == n
    assert client.delete(f"{items}/{fid}", headers=publisher).status_code == 204
    assert stats()[0] == n - 1 == stats()[2][0]


def test_an_item_write_relinks_only_its_feature(client, layers, publisher, db):
    """A marker link of another feature survives a PATCH (a whole-layer relink drops it)."""
    code, lon, lat = _rows(
        db,
        "SELECT code, ST_X(geom), ST_Y(geom) FROM ioc.addresses WHERE valid_to IS NULL"
        " ORDER BY code LIMIT 1",
    )[0]
    assert _feed(client, publisher, POINTS, [_point("ADDR", lon, lat)])["created"] == 1
    (fid,) = _rows(db, f"SELECT fid FROM data.{POINTS} WHERE name = 'ADDR'")[0]
    (other,) = _rows(db, f"SELECT fid FROM data.{POINTS} WHERE name = 'P1'")[0]
    with db.cursor() as cur:
        cur.execute("DELETE FROM ioc.address_links WHERE layer_id = %s", (POINTS,))
        cur.execute(
            "INSERT INTO ioc.address_links (layer_id, fid, code, distance_m)"
            " VALUES (%s, %s, %s, 0)",
            (POINTS, other, code),
        )
    db.commit()
    items = f"/collections/{POINTS}/items"
    answer = client.patch(f"{items}/{fid}", json={"properties": {"level": 1}}, headers=publisher)
    assert answer.status_code == 204, answer.text
    links = dict(_rows(db, "SELECT fid, code FROM ioc.address_links WHERE layer_id = %s", POINTS))
    assert links == {other: code, fid: code}


def test_a_deleted_layer_takes_its_low_zoom_rows(client, publisher, db, db_settings):
    _drop(db_settings, "wd")
    doc = {**_manifest("wd_points", "Point"), "id": "wd_points"}
    assert client.post("/layers", json=doc, headers=publisher).status_code == 201
    _feed(client, publisher, "wd_points", _grid_points())
    assert _cells(db, "wd_points")
    _drop(db_settings, "wd")  # drops the table and deletes the registry row
    assert _cells(db, "wd_points") == {}
