"""The demo-city generator against the real test PostGIS and, where a test needs it,
the real city files (IOC_DATA_DIR).

Layer tables live in a schema of their own, so the tests never touch a seeded catalog.
"""

# ruff: noqa: S608 - every identifier in these queries comes from table_ident/quote_ident

from __future__ import annotations

import os
import re
import sqlite3
from datetime import timedelta
from importlib import resources
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from ioc.db.identifiers import quote_ident
from ioc.db.tables import create_table_sql, table_ident
from layers.democity import LayerSeedResult, seed_city
from layers.democity.context import REFERENCE_TIME
from layers.democity.seed import seed_layers
from layers.democity.text import unique_codes
from layers.manifest import LayerManifest, load_catalog

SCHEMA = "democity_test"
DATA_DIR = Path(os.environ["IOC_DATA_DIR"]) if os.environ.get("IOC_DATA_DIR") else None
needs_data = pytest.mark.skipif(DATA_DIR is None, reason="IOC_DATA_DIR is not set")


def manifest(
    id: str,
    gtype: str,
    attrs: list[dict],
    *,
    weight: str = "population",
    count: int = 150,
    srid: int = 4326,
    dataset: str | None = None,
    filter: dict | None = None,
    time: str | None = None,
    id_attribute: str | None = None,
    domain: str = "flooding",
) -> LayerManifest:
    """A valid manifest with only what the generator reads spelled out."""
    label = {"vi": "nhãn", "en": "label"}
    return LayerManifest.model_validate(
        {
            "id": id,
            "title": {"vi": f"Lớp {id}", "en": id},
            "description": label,
            "domain": domain,
            "department": "construction",
            "geometry": {"type": gtype, "srid": srid},
            "access": "public",
            "cadence": "daily",
            "source": {"name": "demo", "licence": "CC0", "dataset": dataset, "filter": filter},
            "id_attribute": id_attribute,
            "time_attribute": time,
            "zoom": {"min": 10, "max": 18},
            "attributes": [{"label": label, **a} for a in attrs],
            "style": {"color": "#123456", "legend": [{"label": label, "color": "#123456"}]},
            "demo": {"count": count, "weight": weight},
        }
    )


WARDS = manifest(
    "wards",
    "MultiPolygon",
    [
        {"name": "ward_code", "type": "text", "required": True},
        {"name": "name", "type": "text", "required": True},
        {"name": "full_name", "type": "text"},
        {"name": "population", "type": "integer"},
    ],
    dataset="wards_2025",
    domain="admin",
    id_attribute="ward_code",
)
WARDS_2019 = manifest(
    "wards_2019",
    "MultiPolygon",
    [
        {"name": "ward_code", "type": "text", "required": True},
        {"name": "district_code", "type": "text"},
    ],
    dataset="wards_2019",
    domain="admin",
)
FLOOD = manifest(
    "flood_points",
    "Point",
    [
        {"name": "name", "type": "text", "required": True},
        {"name": "depth_cm", "type": "integer", "required": True, "range": [5, 80]},
        {"name": "severity", "type": "text", "values": ["low", "medium", "high"]},
        {"name": "observed_at", "type": "timestamp", "required": True},
        {"name": "ward_code", "type": "text", "required": True},
        {"name": "ward_code_2019", "type": "text"},
    ],
    weight="lowland",
    time="observed_at",
    count=400,
)
REPORTS = manifest(
    "reports_1022",
    "Point",
    [
        {"name": "report_id", "type": "text", "required": True},
        {
            "name": "category",
            "type": "text",
            "required": True,
            "values": ["Trật tự đô thị", "Môi trường", "Giao thông", "Khác"],
        },
        {
            "name": "status",
            "type": "text",
            "required": True,
            "values": ["Mới tiếp nhận", "Đang xử lý", "Đã xử lý", "Từ chối"],
        },
        {"name": "reported_at", "type": "timestamp", "required": True},
        {"name": "resolved_at", "type": "timestamp"},
        {"name": "handling_unit", "type": "text", "required": True},
        {"name": "ward_code", "type": "text", "required": True},
    ],
    time="reported_at",
    id_attribute="report_id",
    domain="citizen_reports",
    count=600,
)
ADDRESSES = manifest(
    "digital_addresses",
    "Point",
    [
        {"name": "code", "type": "text", "required": True},
        {"name": "house_number", "type": "text", "required": True},
        {"name": "street", "type": "text", "required": True},
        {"name": "ward_code", "type": "text", "required": True},
    ],
    id_attribute="code",
    domain="addresses",
    count=800,
)
BUILDINGS = manifest(
    "buildings",
    "Polygon",
    [
        {"name": "floors", "type": "integer", "required": True, "range": [1, 40]},
        {"name": "area_m2", "type": "number"},
        {"name": "use", "type": "text", "values": ["residential", "commercial", "public"]},
    ],
    srid=9210,
    domain="planning",
    count=300,
)
PIPES = manifest(
    "drain_pipes",
    "MultiLineString",
    [
        {"name": "diameter_mm", "type": "integer", "range": [300, 1500]},
        {"name": "built_on", "type": "date"},
        {"name": "in_service", "type": "boolean", "required": True},
        {"name": "score", "type": "number", "range": [0, 10]},
    ],
    weight="roads",
    count=120,
)
INDICATORS = manifest(
    "ward_indicators",
    "MultiPolygon",
    [
        {"name": "ward_code", "type": "text", "required": True},
        {"name": "index", "type": "number", "range": [0, 1]},
    ],
    weight="uniform",
    count=168,
)
CENTRE = manifest(
    "cameras_centre",
    "MultiPoint",
    [{"name": "kind", "type": "text", "values": ["a", "b"]}],
    weight="centre",
    count=300,
)
HOSPITALS = manifest(
    "hospitals",
    "Point",
    [
        {"name": "name", "type": "text", "required": True},
        {"name": "category", "type": "text", "required": True},
        {"name": "beds", "type": "integer", "range": [10, 2000]},
    ],
    dataset="pois_osm_2018",
    filter={"category": ["health"]},
    domain="health",
)
SUBSET = [WARDS, WARDS_2019, FLOOD, REPORTS, ADDRESSES, BUILDINGS, PIPES, INDICATORS, CENTRE]


@pytest.fixture(scope="module")
def conn(db_settings):
    connection = psycopg2.connect(db_settings.dsn())
    yield connection
    connection.rollback()
    with connection.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {quote_ident(SCHEMA)} CASCADE")
    connection.commit()
    connection.close()


def create_tables(conn, manifests: list[LayerManifest], schema: str = SCHEMA) -> None:
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        for m in manifests:
            cur.execute(f"DROP TABLE IF EXISTS {table_ident(m.id, schema)}")
            for statement in create_table_sql(m, schema):
                cur.execute(statement)
    conn.commit()


def seed(conn, manifests: list[LayerManifest], **kwargs) -> dict[str, LayerSeedResult]:
    create_tables(conn, manifests)
    return seed_layers(conn, manifests, schema=SCHEMA, **kwargs)


def rows(conn, layer_id: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT *, ST_AsEWKB(geom) FROM {table_ident(layer_id, SCHEMA)} ORDER BY fid")
        return cur.fetchall()


def scalar(conn, sql: str, params: tuple = ()) -> object:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


@pytest.fixture(scope="module")
def synthetic_city(conn) -> dict[str, LayerSeedResult]:
    """The subset seeded without real files (synthetic wards), left in place for the checks."""
    return seed(conn, SUBSET, data_dir=None, seed=7)


def test_same_seed_gives_identical_rows_and_another_seed_does_not(conn, synthetic_city):
    layers = [FLOOD, REPORTS, BUILDINGS, PIPES]
    first = {m.id: rows(conn, m.id) for m in layers}
    again = seed_layers(conn, [WARDS, *layers], schema=SCHEMA, data_dir=None, seed=7)
    assert {m.id: rows(conn, m.id) for m in layers} == first
    assert again["flood_points"].count == len(first["flood_points"]) == 400
    assert first["flood_points"][0][0] == 1  # truncated with RESTART IDENTITY
    seed_layers(conn, [FLOOD], schema=SCHEMA, data_dir=None, seed=8)
    assert rows(conn, "flood_points") != first["flood_points"]
    seed_layers(conn, [FLOOD], schema=SCHEMA, data_dir=None, seed=7)  # restore for the other tests


def test_synthetic_wards_have_the_official_codes_and_valid_polygons(conn, synthetic_city):
    result = synthetic_city["wards"]
    assert result.synthetic and "synthetic" in result.note.lower() and result.count == 168
    db = resources.files("vietnamadminunits") / "data" / "dataset.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as package:
        official = {
            r[0]
            for r in package.execute("SELECT wardCode FROM admin_units WHERE provinceCode = '79'")
        }
    wards = table_ident("wards", SCHEMA)
    with conn.cursor() as cur:
        cur.execute(f"SELECT ward_code, ST_IsValid(geom), ST_Area(geom::geography) FROM {wards}")
        found = cur.fetchall()
    assert {r[0] for r in found} == official and len(found) == 168
    assert all(valid for _, valid, _ in found)
    assert min(area for *_, area in found) > 0.3e6  # no sliver cells
    # Ward cells must not overlap (beyond rounding at shared edges).
    overlap = scalar(
        conn,
        f"SELECT coalesce(sum(ST_Area(ST_Intersection(a.geom, b.geom)::geography)), 0) "
        f"FROM {wards} a JOIN {wards} b ON a.fid < b.fid AND ST_Overlaps(a.geom, b.geom)",
    )
    assert overlap < 1000
    assert synthetic_city["wards_2019"].synthetic and synthetic_city["wards_2019"].count == 273


def test_generated_points_lie_in_the_ward_they_name(conn, synthetic_city):
    for m in (FLOOD, REPORTS, ADDRESSES):
        table, wards = table_ident(m.id, SCHEMA), table_ident("wards", SCHEMA)
        outside = scalar(
            conn,
            f"SELECT count(*) FROM {table} p WHERE NOT EXISTS (SELECT 1 FROM {wards} w "
            f"WHERE ST_Intersects(w.geom, p.geom) AND w.ward_code = p.ward_code)",
        )
        assert outside == 0, m.id


def test_weightings_shape_the_distribution(conn, synthetic_city):
    flood = table_ident("flood_points", SCHEMA)
    south = scalar(conn, f"SELECT avg((ST_Y(geom) < 10.80)::int) FROM {flood}")
    assert south > 0.6  # lowland: mostly the low-lying south of the core
    centre = table_ident("cameras_centre", SCHEMA)
    near = scalar(
        conn,
        f"SELECT avg((ST_Distance(geom::geography, ST_SetSRID(ST_MakePoint(106.698, 10.772), 4326)"
        f"::geography) < 5000)::int) FROM {centre}",
    )
    assert near > 0.6
    assert scalar(conn, f"SELECT GeometryType(geom) FROM {centre} LIMIT 1") == "MULTIPOINT"


def test_digital_address_codes_are_unique_ten_digit_strings(conn, synthetic_city):
    with conn.cursor() as cur:
        cur.execute(f"SELECT code FROM {table_ident('digital_addresses', SCHEMA)}")
        codes = [r[0] for r in cur.fetchall()]
    assert len(codes) == 800 and len(set(codes)) == 800
    assert all(re.fullmatch(r"[1-9]\d{9}", c) for c in codes)
    # The code map is a bijection: a large block of row numbers never collides either.
    block = unique_codes(0, 200_000, 12345)
    assert len(np.unique(block)) == 200_000


def test_required_attributes_values_and_ranges_hold(conn, synthetic_city):
    for m in SUBSET:
        table = table_ident(m.id, SCHEMA)
        for a in m.attributes:
            col = quote_ident(a.name)
            if a.required:
                assert scalar(conn, f"SELECT count(*) FROM {table} WHERE {col} IS NULL") == 0, (
                    m.id,
                    a.name,
                )
            if a.values is not None:
                bad = scalar(
                    conn,
                    f"SELECT count(*) FROM {table} WHERE {col} IS NOT NULL AND NOT ({col} = ANY(%s))",
                    (list(a.values),),
                )
                assert bad == 0, (m.id, a.name)
                distinct = scalar(conn, f"SELECT count(DISTINCT {col}) FROM {table}")
                assert distinct > 1, (m.id, a.name)  # categories vary
            if a.range is not None:
                lo, hi = scalar(
                    conn, f"SELECT array[min({col}), max({col})]::float8[] FROM {table}"
                )
                assert a.range[0] <= lo <= hi <= a.range[1], (m.id, a.name)
    optional_nulls = scalar(
        conn, f"SELECT count(*) FROM {table_ident('drain_pipes', SCHEMA)} WHERE built_on IS NULL"
    )
    assert optional_nulls < 120 * 0.2


def test_timestamps_are_recent_and_reports_resolve_after_they_are_reported(conn, synthetic_city):
    reports = table_ident("reports_1022", SCHEMA)
    with conn.cursor() as cur:
        cur.execute(f"SELECT min(reported_at), max(reported_at) FROM {reports}")
        lo, hi = cur.fetchone()
    assert REFERENCE_TIME - timedelta(days=366) <= lo <= hi <= REFERENCE_TIME
    assert scalar(conn, f"SELECT count(*) FROM {reports} WHERE resolved_at < reported_at") == 0
    # Old reports are mostly resolved, today's mostly not.
    old = scalar(
        conn,
        f"SELECT avg((status = 'Đã xử lý')::int) FROM {reports} WHERE reported_at < %s",
        (REFERENCE_TIME - timedelta(days=60),),
    )
    assert old > 0.8
    unit = scalar(
        conn,
        f"SELECT count(*) FROM {reports} r JOIN {table_ident('wards', SCHEMA)} w "
        f"ON w.ward_code = r.ward_code WHERE r.handling_unit <> 'UBND ' || w.full_name",
    )
    assert unit == 0


def test_buildings_are_stored_in_vn2000(conn, synthetic_city):
    table = table_ident("buildings", SCHEMA)
    assert scalar(conn, "SELECT Find_SRID(%s, 'buildings', 'geom')", (SCHEMA,)) == 9210
    x, y = scalar(
        conn,
        f"SELECT array[avg(ST_X(ST_Centroid(geom))), avg(ST_Y(ST_Centroid(geom)))] FROM {table}",
    )
    assert 540_000 < x < 720_000 and 1_130_000 < y < 1_280_000  # TM-3 105°45' metres around HCMC
    area = scalar(
        conn, f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ST_Area(geom)) FROM {table}"
    )
    assert 20 < area < 2_000
    assert scalar(conn, f"SELECT bool_and(ST_IsValid(geom)) FROM {table}")


def test_unknown_scale_is_rejected_before_any_table_is_touched(conn, synthetic_city):
    before = rows(conn, "flood_points")
    with pytest.raises(ValueError, match="scale"):
        seed_layers(conn, [FLOOD], schema=SCHEMA, scale="huge")
    assert rows(conn, "flood_points") == before


def test_seed_city_fills_the_data_schema(conn):
    probe = manifest(
        "democity_probe_points",
        "Point",
        [{"name": "kind", "type": "text", "required": True}],
        weight="uniform",
        count=25,
    )
    create_tables(conn, [probe], schema="data")
    calls: list[tuple[str, int, int]] = []
    try:
        result = seed_city(conn, [probe], progress=lambda *a: calls.append(a), seed=1)
        assert (
            result["democity_probe_points"].count
            == 25
            == scalar(conn, f"SELECT count(*) FROM {table_ident('democity_probe_points')}")
        )
        assert calls[-1] == ("democity_probe_points", 25, 25)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table_ident('democity_probe_points')}")
        conn.commit()


@needs_data
def test_real_wards_and_dataset_layers(conn):
    result = seed(conn, [WARDS, WARDS_2019, HOSPITALS, FLOOD], data_dir=DATA_DIR, seed=3)
    assert result["wards"].count == 168 and not result["wards"].synthetic
    assert "wards_2025" in result["wards"].note
    wards = table_ident("wards", SCHEMA)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT ward_code FROM {wards} WHERE ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            (106.6981, 10.7725),
        )
        assert cur.fetchall() == [("26743",)]
    assert result["wards_2019"].count == 322 and not result["wards_2019"].synthetic
    hospitals = table_ident("hospitals", SCHEMA)
    assert result["hospitals"].count > 100 and result["hospitals"].synthetic  # beds are generated
    assert "beds" in result["hospitals"].note
    assert scalar(conn, f"SELECT count(*) FROM {hospitals} WHERE category <> 'health'") == 0
    # ward_code_2019 comes from the real 2019 ward under the point.
    flood, w19 = table_ident("flood_points", SCHEMA), table_ident("wards_2019", SCHEMA)
    wrong = scalar(
        conn,
        f"SELECT count(*) FROM {flood} f WHERE f.ward_code_2019 IS NOT NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {w19} w WHERE w.ward_code = f.ward_code_2019 AND ST_Intersects(w.geom, f.geom))",
    )
    assert wrong == 0


def catalog_sample(cap: int) -> list[LayerManifest]:
    """The bundled catalog with demo counts capped (per-ward layers keep one feature per ward)."""
    catalog = load_catalog()
    if not catalog:
        pytest.skip("the layer catalog is empty")
    return [
        m
        if m.demo.count <= cap or m.demo.count == 168
        else m.model_copy(update={"demo": m.demo.model_copy(update={"count": cap})})
        for m in catalog
    ]


@pytest.fixture(scope="module")
def synthetic_catalog(conn) -> tuple[list[LayerManifest], dict[str, LayerSeedResult]]:
    """Every catalog layer seeded without real files (small counts)."""
    manifests = catalog_sample(60)
    return manifests, seed(conn, manifests, data_dir=None, seed=5)


def test_every_catalog_layer_seeds_with_valid_values(conn, synthetic_catalog):
    manifests, results = synthetic_catalog
    for m in manifests:
        result = results[m.id]
        assert result.count > 0 and result.synthetic, m.id
        assert result.note.endswith(".") and len(result.note) > 20, m.id
        table = table_ident(m.id, SCHEMA)
        assert scalar(conn, f"SELECT count(*) FROM {table} WHERE NOT ST_IsValid(geom)") == 0, m.id
        assert scalar(conn, "SELECT Find_SRID(%s, %s, 'geom')", (SCHEMA, m.id)) == m.geometry.srid
        for a in m.attributes:
            col = quote_ident(a.name)
            if a.required:
                assert scalar(conn, f"SELECT count(*) FROM {table} WHERE {col} IS NULL") == 0, (
                    m.id,
                    a.name,
                )
            if a.values is not None:
                bad = scalar(
                    conn,
                    f"SELECT count(*) FROM {table} WHERE {col} IS NOT NULL AND NOT ({col} = ANY(%s))",
                    (list(a.values),),
                )
                assert bad == 0, (m.id, a.name)
            if a.range is not None:
                lo, hi = scalar(
                    conn, f"SELECT array[min({col}), max({col})]::float8[] FROM {table}"
                )
                if lo is not None:
                    assert a.range[0] <= lo <= hi <= a.range[1], (m.id, a.name, lo, hi)
        if m.id_attribute:
            col = quote_ident(m.id_attribute)
            distinct = scalar(conn, f"SELECT count(DISTINCT {col}) = count(*) FROM {table}")
            assert distinct, (m.id, "id attribute not unique")


def test_catalog_key_layers_behave(conn, synthetic_catalog):
    manifests, results = synthetic_catalog
    ids = {m.id for m in manifests}
    wards = table_ident("wards", SCHEMA)
    if "one_stop_centres" in ids:
        centres = table_ident("one_stop_centres", SCHEMA)
        assert results["one_stop_centres"].count == 168
        misplaced = scalar(
            conn,
            f"SELECT count(*) FROM {centres} c JOIN {wards} w ON ST_Intersects(w.geom, c.geom) "
            f"WHERE c.ward_code IS NOT NULL AND c.ward_code <> w.ward_code",
        )
        assert misplaced == 0
    if "digital_addresses" in ids:
        codes = table_ident("digital_addresses", SCHEMA)
        assert scalar(
            conn,
            f"SELECT bool_and(code ~ '^[1-9][0-9]{{9}}$') AND count(DISTINCT code) = count(*) "
            f"FROM {codes}",
        )
    if "road_segments" in ids:
        assert results["road_segments"].count == 60
    if "ward_indicators" in ids:
        indicators = table_ident("ward_indicators", SCHEMA)
        assert scalar(conn, f"SELECT count(DISTINCT ward_code) FROM {indicators}") == 168


@needs_data
def test_catalog_manifests_seed_cleanly_with_real_files(conn):
    sample = [
        m
        for m in catalog_sample(40)
        if m.source.dataset
        or m.id
        in (
            "flood_points",
            "reports_1022",
            "digital_addresses",
            "road_segments",
            "buildings",
            "parcels",
        )
    ]
    result = seed(conn, sample, data_dir=DATA_DIR, seed=11)
    for m in sample:
        assert result[m.id].count > 0, m.id
        table = table_ident(m.id, SCHEMA)
        for a in m.attributes:
            if a.required:
                assert (
                    scalar(
                        conn, f"SELECT count(*) FROM {table} WHERE {quote_ident(a.name)} IS NULL"
                    )
                    == 0
                ), (m.id, a.name)
    assert not result["wards"].synthetic and result["wards"].count == 168
    assert "real OSM" in result["digital_addresses"].note
    assert "OpenStreetMap" in result["road_segments"].note
