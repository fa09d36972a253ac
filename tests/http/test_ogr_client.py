"""A real OGC API – Features client: GDAL's OAPIF driver against a live ``ioc serve``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("ogrinfo") is None,
                                reason="GDAL (gdal-bin) is not installed")


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


@pytest.mark.parametrize("layer, table, page_size", [
    ("fx_points", "fixtures.points", 5000),  # pages through next links
    ("fx_vn2000", "fixtures.vn2000_parcels", 7),  # stored in VN-2000, served in CRS84
    ("fx_odd_names", 'fixtures."Odd ""Table"" Name"', 2),
])
def test_ogr2ogr_copies_a_collection_with_every_feature(live_server, db, tmp_path, layer, table,
                                                       page_size):
    target = tmp_path / f"{layer}.geojson"
    run("ogr2ogr", "-f", "GeoJSON", str(target), f"OAPIF:{live_server}", layer,
        "-oo", f"PAGE_SIZE={page_size}")
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
