"""A real OGC API – Features client: GDAL's OAPIF driver against a live ``ioc serve``."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("ogrinfo") is None, reason="GDAL (gdal-bin) is not installed"
)


def run(*args: str, timeout: int = 300) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def public_layers(db) -> set[str]:
    with db.cursor() as cur:
        cur.execute("SELECT id FROM ioc.layers WHERE access = 'public' AND deleted_at IS NULL")
        return {row[0] for row in cur.fetchall()}


def test_ogrinfo_lists_every_public_collection_and_nothing_else(live_server, db):
    out = run("ogrinfo", "-ro", "-q", f"OAPIF:{live_server}")
    listed = set(re.findall(r"^\d+: (\S+)", out, flags=re.MULTILINE))
    assert listed == public_layers(db)
    assert "fx_internal" not in listed and "fx_restricted" not in listed


@pytest.mark.parametrize(
    "layer, table, page_size",
    [
        ("fx_points", "fixtures.points", 5000),  # pages through next links
        ("fx_vn2000", "fixtures.vn2000_parcels", 7),  # stored in VN-2000, served in CRS84
        ("fx_odd_names", 'fixtures."Odd ""Table"" Name"', 2),
    ],
)
def test_ogr2ogr_copies_a_collection_with_every_feature(
    live_server, db, tmp_path, layer, table, page_size
):
    target = tmp_path / f"{layer}.geojson"
    run(
        "ogr2ogr",
        "-f",
        "GeoJSON",
        str(target),
        f"OAPIF:{live_server}",
        layer,
        "-oo",
        f"PAGE_SIZE={page_size}",
    )
    with db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixture names
        expected = cur.fetchone()[0]
    copied = json.loads(target.read_text())["features"]
    assert len(copied) == expected > 0
    if layer == "fx_vn2000":  # back in lon/lat around Ho Chi Minh City
        lon, lat = copied[0]["geometry"]["coordinates"]
        assert 106.5 < lon < 107 and 10.6 < lat < 11


def test_ogrinfo_reads_the_feature_count(live_server):
    out = run("ogrinfo", "-ro", "-so", f"OAPIF:{live_server}", "fx_landmarks")
    assert "Feature Count: 4" in out and "Point" in out


def test_ogrinfo_reads_a_vector_tile_where_the_features_are(live_server, db):
    """GDAL's MVT driver reads a tile of the VN-2000 layer: every point of the tile, in
    EPSG:3857, within the tile grid's resolution (4096 units a tile) of where PostGIS puts it."""
    z = 12
    with db.cursor() as cur:
        cur.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(geom, 4326) AS p"
            " FROM fixtures.vn2000_parcels WHERE parcel_id = 10) s"
        )
        lon, lat = cur.fetchone()
        n = 1 << z
        x = int((lon + 180) / 360 * n)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
        cur.execute(
            "SELECT parcel_id, ST_X(g), ST_Y(g) FROM (SELECT parcel_id,"
            " ST_Transform(geom, 3857) AS g FROM fixtures.vn2000_parcels) s"
            " WHERE ST_Intersects(g, ST_TileEnvelope(%s, %s, %s))",
            (z, x, y),
        )
        expected = {pid: (px, py) for pid, px, py in cur.fetchall()}
    out = run(
        "ogrinfo", "-ro", "-q", f"MVT:{live_server}/tiles/fx_vn2000/{z}/{x}/{y}.pbf", "fx_vn2000"
    )
    found = {
        int(pid): (float(px), float(py))
        for pid, px, py in re.findall(
            r"mvt_id \(Integer64\) = (\d+).*?POINT \(([-\d.e+]+) ([-\d.e+]+)\)", out, flags=re.S
        )
    }
    assert set(found) == set(expected) and 10 in found
    step = 2 * math.pi * 6378137 / n / 4096  # one tile unit in metres
    for pid, (px, py) in found.items():
        assert abs(px - expected[pid][0]) <= step and abs(py - expected[pid][1]) <= step
