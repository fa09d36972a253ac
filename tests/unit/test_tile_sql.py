"""Tile SQL builders, settings, caches, TileJSON/style and PMTiles helpers (no database)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time

import mapbox_vector_tile
import pytest

from api.encoding import accepts_gzip
from ioc.catalog.access import ANONYMOUS, Principal
from ioc.catalog.layers import Catalog, CatalogWatcher, layer_from_row
from ioc.errors import InvalidParameter, LayerNotFound
from tiles.cache import CachedTile, DiskCache, MemoryCache
from tiles.pmtiles import count_tiles, parse_bbox, parse_zoom_range, tiles_in_bbox, write_pmtiles
from tiles.render import (
    BIG_TILE,
    TileOutOfRange,
    TileService,
    check_tile,
    resolve_layers,
)
from tiles.settings import TileSettings
from tiles.sql import (
    Plan,
    TileSQL,
    build_tile_sql,
    layer_mode,
    literal,
    mercator_box,
    plan_tile,
    tile_properties,
)
from tiles.style import colour_expression, maplibre_style
from tiles.tilejson import tilejson


def make_layer(
    layer_id="roads",
    *,
    srid=4326,
    geometry_type="LineString",
    count=10,
    version=1,
    access="public",
    department="construction",
    attributes=None,
    style=None,
    zoom=(0, 22),
    table="roads",
    time=None,
    extent=(106.5, 10.6, 106.9, 11.0),
    tiles=None,
):
    """A Layer as the catalog builds it from a registry row."""
    manifest = {
        "attributes": attributes
        or [
            {"name": "name", "type": "text"},
            {"name": "kind", "type": "text"},
            {"name": "lanes", "type": "integer"},
        ],
        "style": style or {"color": "#ff0000", "by": "kind", "legend": []},
        "zoom": {"min": zoom[0], "max": zoom[1]},
        "time_attribute": time,
    }
    if tiles is not None:
        manifest["tiles"] = tiles
    row = {
        "id": layer_id,
        "schema_name": "data",
        "table_name": table,
        "geometry_column": "geom",
        "id_column": "fid",
        "geometry_type": geometry_type,
        "srid": srid,
        "title_vi": "Đường",
        "title_en": "Roads",
        "description_vi": "",
        "description_en": "",
        "domain": "transport",
        "department": department,
        "access": access,
        "cadence": "static",
        "origin": "manifest",
        "manifest": json.dumps(manifest),
        "metadata": "{}",
        "feature_count": count,
        "extent": list(extent) if extent else None,
        "version": version,
        "last_update": None,
    }
    return layer_from_row(row)


SETTINGS = TileSettings(_env_file=None)


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IOC_TILE_CACHE", "off")
    monkeypatch.setenv("IOC_TILE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("IOC_TILE_MAX_FEATURES", "500")
    settings = TileSettings(_env_file=None)
    assert not settings.enabled and settings.cache_dir == tmp_path and settings.max_features == 500
    with pytest.raises(ValueError):
        TileSettings(_env_file=None, cluster_grid=30)
    assert TileSettings(_env_file=None, max_features=20_000).fingerprint() != settings.fingerprint()


def test_only_style_attributes_are_carried():
    layer = make_layer(
        time=None,
        attributes=[
            {"name": "name", "type": "text"},
            {"name": "kind", "type": "text"},
            {"name": "secret_note", "type": "text"},
            {"name": "built", "type": "date"},
        ],
    )
    assert [p.name for p in tile_properties(layer)] == ["kind", "name"]
    timed = make_layer(
        time="built",
        attributes=[{"name": "built", "type": "date"}, {"name": "kind", "type": "text"}],
    )
    props = {p.name: p for p in tile_properties(timed)}
    assert props["built"].sql == """to_json(t."built") #>> '{}'"""
    extra = make_layer(tiles={"properties": ["lanes", "not_an_attribute"]})
    assert [p.name for p in tile_properties(extra)] == ["kind", "name", "lanes"]


def test_sql_filters_in_the_layer_srid_and_binds_only_zxy():
    sql = build_tile_sql([Plan(make_layer(), "features")], SETTINGS)
    assert "ST_TileEnvelope($1, $2, $3)" in sql and "$4" not in sql
    assert 't."geom" && b.f0' in sql
    assert "ST_Transform(ST_Expand(e.env" in sql and ", 4326) AS f0" in sql
    assert "ST_AsMVT(q, 'roads', 4096, 'geom', 'fid')" in sql
    assert "ST_Simplify(" in sql and "ST_ClipByBox2D(" in sql and "ST_XMax(" in sql
    assert f"LIMIT {SETTINGS.max_features + 1}" in sql and "lanes" not in sql


def test_vn2000_envelope_is_clipped_before_transform():
    sql = build_tile_sql([Plan(make_layer(srid=9210), "features")], SETTINGS)
    assert "ST_Transform(ST_ClipByBox2D(ST_Expand(e.env" in sql and ", 9210) AS f0" in sql
    assert "ST_MakeEnvelope(" in sql  # the guard around the layer's extent


def test_points_are_neither_simplified_nor_size_filtered():
    sql = build_tile_sql([Plan(make_layer(geometry_type="Point"), "features")], SETTINGS)
    assert "ST_Simplify" not in sql and "ST_XMax(t." not in sql


def test_cluster_sql_counts_and_takes_the_dominant_category():
    layer = make_layer(geometry_type="Point", count=60_000)
    assert layer_mode(layer, 10, SETTINGS) == "cluster"
    assert layer_mode(layer, SETTINGS.cluster_max_zoom + 1, SETTINGS) == "features"
    sql = build_tile_sql([Plan(layer, "cluster")], SETTINGS)
    assert "count(*) AS n" in sql and '(array_agg(c ORDER BY n DESC, c))[1] AS "kind"' in sql
    assert "radians(ST_X(" in sql and "OFFSET 0" in sql and "ARRAY[false]" in sql


def test_cluster_flag_and_zoom_ranges():
    small = make_layer(
        geometry_type="Point", count=10, tiles={"cluster": True, "cluster_max_zoom": 11}
    )
    assert (
        layer_mode(small, 11, SETTINGS) == "cluster"
        and layer_mode(small, 12, SETTINGS) == "features"
    )
    big = make_layer(geometry_type="Point", count=10**6, tiles={"cluster": False})
    assert layer_mode(big, 8, SETTINGS) == "features"
    ranged = make_layer(zoom=(10, 16))
    assert layer_mode(ranged, 9, SETTINGS) is None and layer_mode(ranged, 17, SETTINGS) is None
    assert layer_mode(make_layer(extent=None), 12, SETTINGS) is None  # empty layer
    assert [p.layer.id for p in plan_tile([ranged, make_layer("b")], 9, SETTINGS)] == ["b"]


def test_composite_is_one_statement_concatenating_layers():
    plans = [
        Plan(make_layer("a"), "features"),
        Plan(make_layer("b", srid=9210), "features"),
        Plan(make_layer("c", geometry_type="Point", count=10**6), "cluster"),
    ]
    sql = build_tile_sql(plans, SETTINGS)
    assert sql.count("ST_AsMVT(q,") == 3 and sql.count(" || ") == 2
    assert "'a'" in sql and "'b'" in sql and "'c'" in sql
    assert (
        "ARRAY[(SELECT count(*) FROM l0) > 20000, (SELECT count(*) FROM l1) > 20000, false]" in sql
    )


def test_identifiers_are_quoted_and_literals_escaped():
    layer = make_layer(
        table='Odd "Table"',
        attributes=[{"name": 'Kind "x"', "type": "text"}],
        style={"color": "#000000", "by": 'Kind "x"', "legend": []},
    )
    sql = build_tile_sql([Plan(layer, "features")], SETTINGS)
    assert '"data"."Odd ""Table"""' in sql and 't."Kind ""x""" AS "Kind ""x"""' in sql
    assert literal("it's") == "'it''s'"
    with pytest.raises(ValueError):
        literal("a\x00b")


def test_text_ids_are_not_mvt_ids():
    sql = build_tile_sql([Plan(make_layer(), "features", integer_id=False)], SETTINGS)
    assert "'geom', 'fid'" not in sql and 't."fid" AS "fid"' in sql


def test_statement_text_is_built_once_per_version():
    cache = TileSQL(SETTINGS)
    plans = [Plan(make_layer(), "features")]
    assert cache.get(plans) is cache.get(list(plans))
    bumped = [Plan(make_layer(version=2), "features")]
    assert cache.get(bumped) is not cache.get(plans) and cache.get(bumped) == cache.get(plans)


def test_mercator_box():
    assert mercator_box((0, 0, 0, 0), 1).startswith("ST_MakeEnvelope(-111319.49")
    assert ", 3857)" in mercator_box((179.5, 85, 180, 89), 2)


def test_check_tile():
    check_tile(0, 0, 0)
    check_tile(3, 7, 7)
    for z, x, y in ((3, 8, 0), (3, 0, 8), (25, 0, 0), (2, -1, 0)):
        with pytest.raises(TileOutOfRange):
            check_tile(z, x, y)


def test_resolve_layers_hides_what_cannot_be_read():
    catalog = Catalog(
        [
            make_layer("a"),
            make_layer("b", access="internal"),
            make_layer("c", access="restricted", department="police"),
        ]
    )
    assert [la.id for la in resolve_layers(catalog, ANONYMOUS, "a,b,c,zzz,a")] == ["a"]
    operator = Principal(role="operator")
    assert [la.id for la in resolve_layers(catalog, operator, "c,b,a")] == ["b", "a"]
    police = Principal(role="publisher", department="police")
    assert [la.id for la in resolve_layers(catalog, police, "c")] == ["c"]
    with pytest.raises(LayerNotFound):
        resolve_layers(catalog, ANONYMOUS, "b,c")
    with pytest.raises(InvalidParameter):
        resolve_layers(catalog, ANONYMOUS, ",".join(f"l{i}" for i in range(100)))


def test_memory_cache_is_bounded_by_bytes():
    cache = MemoryCache(max_bytes=1000)
    for i in range(20):
        cache.put((f"fp/a@1+b@{i % 2}", 1, 0, i), CachedTile(b"x" * 100))
    assert cache.size <= 1000 and len(cache) < 20
    assert cache.get(("fp/a@1+b@1", 1, 0, 19)) is not None
    assert cache.get(("fp/a@1+b@0", 1, 0, 0)) is None  # evicted first
    cache.put(("fp/c@1", 1, 0, 0), CachedTile(b"z"))
    held = len(cache)
    assert cache.drop_layers({"b"}) == held - 1 and len(cache) == 1 and cache.size == 65
    cache.put(("fp/a@1", 1, 0, 0), CachedTile(b"y" * 5000))  # larger than the cache: skipped
    assert cache.get(("fp/a@1", 1, 0, 0)) is None


def test_disk_cache_roundtrip_truncation_and_prune(tmp_path):
    assert DiskCache(tmp_path).get("fp1/a@1", 3, 1, 2) is None  # no database known yet
    DiskCache(tmp_path).put("fp1/a@1", 3, 1, 2, CachedTile(b"nowhere"))
    assert not list(tmp_path.iterdir())  # ... so nothing is written either
    other = DiskCache(tmp_path, scope="db-other")
    other.put("fp1/a@1", 3, 1, 2, CachedTile(b"another database"))
    (tmp_path / "fp1" / "a@1").mkdir(parents=True)  # the layout before databases had folders
    disk = DiskCache(tmp_path, scope="db-this")
    assert disk.get("fp1/a@1", 3, 1, 2) is None  # same key, another database's tile
    disk.put("fp1/a@1+b@2", 3, 1, 2, CachedTile(b"data", ("b",)))
    disk.put("fp1/a@1", 3, 1, 2, CachedTile(b""))
    disk.put("fp0/a@1", 3, 1, 2, CachedTile(b"old"))
    long_key = "fp1/" + "+".join(f"layer_{i}@1" for i in range(30))
    disk.put(long_key, 3, 1, 2, CachedTile(b"long"))
    assert disk.get("fp1/a@1+b@2", 3, 1, 2) == CachedTile(b"data", ("b",))
    assert disk.get("fp1/a@1", 3, 1, 2) == CachedTile(b"")
    assert disk.get(long_key, 3, 1, 2).data == b"long"
    assert disk.get("fp1/a@1", 3, 1, 3) is None
    removed = disk.prune({"a": 1, "b": 3}, "fp1")  # b moved on; fp0 is another configuration
    # fp0, a@1+b@2, the hashed key (its layers no longer exist) and the old layout's folder
    assert removed == 4
    assert disk.get("fp1/a@1", 3, 1, 2) is not None and disk.get("fp1/a@1+b@2", 3, 1, 2) is None
    assert other.get("fp1/a@1", 3, 1, 2).data == b"another database"  # left to its own


class FakePool:
    """Answers the version query from a dict; counts calls."""

    def __init__(self, versions):
        self.versions, self.calls = versions, 0

    async def fetch(self, sql, *args):
        self.calls += 1
        if "version" in sql and "ioc.layers" in sql and "manifest" not in sql:
            return [{"id": k, "version": v, "updated_at": None} for k, v in self.versions.items()]
        raise AssertionError("load_catalog is not expected here")


def test_version_watcher_is_throttled():
    catalog = Catalog([make_layer("a")])
    pool = FakePool({"a": 1})
    watcher = CatalogWatcher(interval=3600)

    async def scenario():
        assert await watcher.refresh(pool, catalog) is None
        assert await watcher.refresh(pool, catalog) is None
        return pool.calls

    assert asyncio.run(scenario()) == 1  # the second call is within the interval


def test_tilejson_and_version():
    layers = [
        make_layer("a", zoom=(10, 16)),
        make_layer("b", geometry_type="Point", count=10**6, extent=(106.0, 10.0, 106.2, 10.2)),
    ]
    doc = tilejson(layers, "http://x/tiles/a,b/{z}/{x}/{y}.pbf", SETTINGS)
    assert doc["tilejson"] == "3.0.0" and doc["minzoom"] == 0 and doc["maxzoom"] == 22
    assert doc["bounds"] == [106.0, 10.0, 106.9, 11.0]
    assert doc["vector_layers"][1]["fields"]["count"] == "Number"
    assert doc["vector_layers"][0]["fields"] == {"kind": "String", "name": "String"}
    assert doc["tiles"] == ["http://x/tiles/a,b/{z}/{x}/{y}.pbf"]  # no version: none given
    versioned = tilejson(layers, "http://x/t/{z}/{x}/{y}.pbf", SETTINGS, "12.0a1b2c3d")
    assert versioned["tiles"] == ["http://x/t/{z}/{x}/{y}.pbf?v=12.0a1b2c3d"]


def test_style_colours():
    legend = [
        {"value": "a", "color": "#111111"},
        {"value": "b", "color": "#222222"},
        {"color": "#333333"},
    ]
    layer = make_layer(style={"color": "#000000", "by": "kind", "legend": legend})
    assert colour_expression(layer) == [
        "match",
        ["get", "kind"],
        ["a"],
        "#111111",
        ["b"],
        "#222222",
        "#000000",
    ]
    flags = make_layer(
        geometry_type="LineString",
        style={
            "color": "#000000",
            "by": "ok",
            "legend": [{"value": True, "color": "#00ff00"}, {"value": False, "color": "#ff0000"}],
        },
    )
    assert colour_expression(flags) is None
    # Booleans cannot be match labels, nor QGIS 3.22 read a `case`: one line layer per value.
    lines = maplibre_style([flags], "http://x/tj.json", SETTINGS)["layers"]
    assert [(la["filter"], la["paint"]["line-color"]) for la in lines] == [
        (["all", ["!=", ["get", "ok"], True], ["!=", ["get", "ok"], False]], "#000000"),
        (["==", ["get", "ok"], False], "#ff0000"),
        (["==", ["get", "ok"], True], "#00ff00"),
    ]
    assert colour_expression(make_layer(style={"color": "#abcdef", "legend": []})) == "#abcdef"
    style = maplibre_style(
        [make_layer(geometry_type="Polygon")],
        "http://x/tj.json",
        SETTINGS,
        glyphs_url="http://x/{fontstack}/{range}.pbf",
    )
    assert style["glyphs"] and [la["type"] for la in style["layers"]] == ["fill", "line"]


def test_tile_ranges_and_pmtiles(tmp_path):
    assert parse_zoom_range("10-14") == (10, 14) and parse_zoom_range("7") == (7, 7)
    for bad in ("14-10", "x", "0-25"):
        with pytest.raises(InvalidParameter):
            parse_zoom_range(bad)
    with pytest.raises(InvalidParameter):
        parse_bbox("1,2,3")
    bbox = parse_bbox("106.6,10.7,106.8,10.9")
    tiles = list(tiles_in_bbox(bbox, 10, 12))
    assert len(tiles) == count_tiles(bbox, 10, 12) and len(set(tiles)) == len(tiles)
    mvt = mapbox_vector_tile.encode(
        [{"name": "a", "features": [{"geometry": "POINT(10 10)", "properties": {"k": 1}}]}]
    )
    data = gzip.compress(mvt)
    path = tmp_path / "out.pmtiles"
    count = write_pmtiles(
        path,
        [(z, x, y, data) for z, x, y in tiles] + [(12, 0, 0, b"")],
        bbox,
        {"vector_layers": []},
    )
    assert count == len(tiles)
    from pmtiles.reader import MmapSource, Reader

    with path.open("rb") as handle:
        reader = Reader(MmapSource(handle))
        z, x, y = tiles[-1]
        assert reader.header()["max_zoom"] == 12
        assert mapbox_vector_tile.decode(gzip.decompress(reader.get(z, x, y)))["a"]
    with pytest.raises(InvalidParameter):
        write_pmtiles(tmp_path / "empty.pmtiles", [(1, 0, 0, b"")], bbox, {})


def test_small_and_big_tiles_are_gzipped_alike():
    """Small tiles are compressed on the event loop, big ones in a worker thread: both give a
    gzip member that any client inflates to the tile."""
    service = TileService(TileSettings(cache="off"))
    for size in (1_000, BIG_TILE + 1):
        tile = bytes(range(256)) * (size // 256) + b"\x1a" * (size % 256)
        data = asyncio.run(service.compress(tile))
        assert data[:2] == b"\x1f\x8b" and len(data) < len(tile)
        assert gzip.decompress(data) == tile
    assert asyncio.run(service.compress(b"")) == b""


@pytest.mark.parametrize(
    "header, expected",
    [
        ("gzip, deflate, br", True),
        ("GZIP", True),
        ("br, *", True),
        ("", False),
        ("identity", False),
        ("br;q=1, gzip;q=0", False),
        ("gzip;q=0.5, br", True),
        ("*;q=0", False),
        ("*;q=0.1, gzip;q=0", False),
        ("br, *;q=0.2", True),
        ("gzip;q=abc", False),
        ("x-gzip", True),
        ("deflate;q=1", False),
        ("gzipped", False),
    ],
)
def test_accept_encoding_weights_are_read(header, expected):
    assert accepts_gzip(header) is expected


def _age(folder, seconds_ago: float) -> None:
    """Set every file under a folder to have been written that long ago."""
    stamp = time.time() - seconds_ago
    for path in folder.rglob("*"):
        os.utime(path, (stamp, stamp))


def test_disk_cache_sweep_deletes_the_least_recently_written_zooms(tmp_path):
    budget = 400 << 10
    cache = DiskCache(tmp_path, max_bytes=budget, scope="db-1")
    assert cache.needs_sweep()  # the first write after start checks the budget
    tile = CachedTile(bytes(range(256)) * 200)  # 50 KiB
    for key, z, age in (
        ("fp/old@1", 12, 3000),
        ("fp/old@1", 13, 2000),
        ("fp/new@2", 12, 1000),
        ("fp/new@2", 13, 0),
    ):
        for x in range(3):
            cache.put(key, z, x, 0, tile)
        _age(cache.path(key, z, 0, 0).parent.parent, age)
    assert cache.sweep() > 0
    kept = {(p.parent.parent.parent.name, p.parent.parent.name) for p in tmp_path.rglob("*.mvt.gz")}
    assert kept == {("new@2", "12"), ("new@2", "13")}  # the two oldest zoom levels went
    used = sum(p.stat().st_blocks * 512 for p in tmp_path.rglob("*") if p.is_file())
    assert used <= budget * 0.8
    assert cache.get("fp/new@2", 13, 2, 0) == tile
    assert not cache.needs_sweep() and cache.sweep() == 0  # under budget: nothing to do
    assert DiskCache(tmp_path).sweep() == 0  # no budget, no sweep
