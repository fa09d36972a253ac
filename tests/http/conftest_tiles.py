"""Tile test fixtures: awkward layers in schema ``tile_fixtures``, registered in the catalog.

Imported by ``tests/http/test_tiles.py``; the database itself is ``tests/http/conftest.py``'s. Layers (ids ``tf_*``):
- ``tf_parcels``: 100 square polygons in EPSG:4326, public, categorised by ``kind``, zoom 10-18;
- ``tf_blocks``: the same squares stored in VN-2000 / TM-3 (EPSG:9210), public, zoom 8-20;
- ``tf_reports``: 100,000 points with a category and a timestamp, public (aggregated at low
  zoom): 80,000 packed in a small core (enough to hit the feature cap at z14), 20,000 spread;
- ``tf_province``: one huge polygon (20,000 vertices), public, every zoom;
- ``tf_internal`` (lines) and ``tf_restricted`` (points, police): access levels;
- ``tf_mutable``: a few points whose data the tests change;
- ``tf_quoted``: table ``Mixed "Case" Table`` with a column ``Kind Of`` used by the style;
- ``tf_faulty``: a few points behind a view whose rows make PostgreSQL cancel the statement or
  terminate the connection, as ``tile_fixtures.fault_mode`` says (``set_fault``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg2
import pytest

from layers import registry
from tiles.render import TileService
from tiles.settings import TileSettings

SCHEMA = "tile_fixtures"
# Parcels: a 10 × 10 grid of 0.004° squares from this corner (District 1).
WEST, SOUTH, CELL = 106.68, 10.76, 0.004
REPORT_COUNT = 100_000
CORE = (106.700, 10.775, 106.704, 10.779)  # where 80,000 reports are packed
CATEGORIES = ("ngap_nuoc", "rac_thai", "giao_thong", "chieu_sang", "khac")
LEGEND = [
    {"value": v, "color": c, "label": {"vi": v, "en": v}}
    for v, c in zip(
        CATEGORIES, ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#7f7f7f"), strict=True
    )
]

TABLES_SQL = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.parcels (fid serial PRIMARY KEY, name text, kind text, area_m2 double precision,
    geom geometry(Polygon, 4326));
INSERT INTO {SCHEMA}.parcels (name, kind, area_m2, geom)
SELECT format('Thửa %s-%s', i, j), (ARRAY['dat_o','cong_vien','thuong_mai'])[1 + (i + j) % 3],
       0, ST_MakeEnvelope({WEST} + i * {CELL}, {SOUTH} + j * {CELL},
                          {WEST} + (i + 1) * {CELL}, {SOUTH} + (j + 1) * {CELL}, 4326)
FROM generate_series(0, 9) i, generate_series(0, 9) j ORDER BY i, j;
CREATE INDEX ON {SCHEMA}.parcels USING gist (geom);

CREATE TABLE {SCHEMA}.blocks (fid serial PRIMARY KEY, name text, geom geometry(Polygon, 9210));
INSERT INTO {SCHEMA}.blocks (name, geom)
SELECT name, ST_Transform(ST_Segmentize(geom, 0.0005), 9210) FROM {SCHEMA}.parcels ORDER BY fid;
CREATE INDEX ON {SCHEMA}.blocks USING gist (geom);

CREATE TABLE {SCHEMA}.reports (fid bigserial PRIMARY KEY, category text, created_at timestamptz,
    geom geometry(Point, 4326));
SELECT setseed(0.42);
INSERT INTO {SCHEMA}.reports (category, created_at, geom)
SELECT CASE WHEN random() < 0.7 THEN 'ngap_nuoc'
            ELSE (ARRAY{list(CATEGORIES)!r})[1 + floor(random() * 5)::int] END,
       timestamptz '2025-07-01 00:00+07' + n * interval '1 minute',
       ST_SetSRID(ST_MakePoint({CORE[0]} + random() * {CORE[2] - CORE[0]},
                               {CORE[1]} + random() * {CORE[3] - CORE[1]}), 4326)
FROM generate_series(1, 80000) n;
INSERT INTO {SCHEMA}.reports (category, created_at, geom)
SELECT (ARRAY{list(CATEGORIES)!r})[1 + floor(random() * 5)::int],
       timestamptz '2025-08-01 00:00+07' + n * interval '1 minute',
       ST_SetSRID(ST_MakePoint(106.5 + random() * 0.4, 10.6 + random() * 0.4), 4326)
FROM generate_series(1, 20000) n;
CREATE INDEX ON {SCHEMA}.reports USING gist (geom);

CREATE TABLE {SCHEMA}.province (fid integer PRIMARY KEY, name text, geom geometry(Polygon, 4326));
INSERT INTO {SCHEMA}.province VALUES
    (1, 'Vùng lớn', ST_Buffer(ST_SetSRID(ST_MakePoint(106.7, 10.8), 4326), 0.3, 5000));
CREATE INDEX ON {SCHEMA}.province USING gist (geom);

CREATE TABLE {SCHEMA}.internal_roads (fid serial PRIMARY KEY, name text,
    geom geometry(LineString, 4326));
INSERT INTO {SCHEMA}.internal_roads (name, geom) VALUES
    ('Đường nội bộ', ST_GeomFromText('LINESTRING(106.681 10.761, 106.719 10.799)', 4326));
CREATE INDEX ON {SCHEMA}.internal_roads USING gist (geom);

CREATE TABLE {SCHEMA}.restricted_sites (fid serial PRIMARY KEY, name text,
    geom geometry(Point, 4326));
INSERT INTO {SCHEMA}.restricted_sites (name, geom) VALUES
    ('Điểm mật', ST_SetSRID(ST_MakePoint(106.69, 10.77), 4326));
CREATE INDEX ON {SCHEMA}.restricted_sites USING gist (geom);

CREATE TABLE {SCHEMA}.mutable (fid serial PRIMARY KEY, name text, geom geometry(Point, 4326));
INSERT INTO {SCHEMA}.mutable (name, geom)
SELECT 'p' || n, ST_SetSRID(ST_MakePoint(106.69 + n * 0.001, 10.77), 4326)
FROM generate_series(1, 3) n;
CREATE INDEX ON {SCHEMA}.mutable USING gist (geom);

CREATE TABLE {SCHEMA}."Mixed ""Case"" Table" ("Id" integer PRIMARY KEY, "Kind Of" text,
    "The Geom" geometry(Point, 4326));
INSERT INTO {SCHEMA}."Mixed ""Case"" Table" VALUES
    (7, 'it''s', ST_SetSRID(ST_MakePoint(106.7, 10.78), 4326));

CREATE TABLE {SCHEMA}.faulty (fid serial PRIMARY KEY, name text, geom geometry(Point, 4326));
INSERT INTO {SCHEMA}.faulty (name, geom)
SELECT 'f' || n, ST_SetSRID(ST_MakePoint(106.69 + n * 0.001, 10.78), 4326)
FROM generate_series(1, 3) n;
CREATE TABLE {SCHEMA}.fault_mode (mode text NOT NULL);
INSERT INTO {SCHEMA}.fault_mode VALUES ('none');
CREATE FUNCTION {SCHEMA}.fault() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    CASE (SELECT mode FROM {SCHEMA}.fault_mode)
        WHEN 'cancel' THEN PERFORM pg_cancel_backend(pg_backend_pid()); PERFORM pg_sleep(5);
        WHEN 'terminate' THEN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);
        ELSE NULL;
    END CASE;
    RETURN true;
END $$;
ANALYZE {SCHEMA}.reports;
"""  # noqa: S608 (module constants only)

# After registration (which needs a table with a primary key), the faulty layer's table is
# swapped for a view that calls fault() on every row.
FAULTY_VIEW_SQL = f"""
ALTER TABLE {SCHEMA}.faulty RENAME TO faulty_rows;
CREATE VIEW {SCHEMA}.faulty AS SELECT * FROM {SCHEMA}.faulty_rows WHERE {SCHEMA}.fault();
"""

# id: (table, access, department, manifest changes)
LAYERS: dict[str, tuple[str, str, str, dict]] = {
    "tf_parcels": (
        "parcels",
        "public",
        "planning",
        {
            "zoom": {"min": 10, "max": 18},
            "time_attribute": None,
            "style": {
                "color": "#444444",
                "fill": "#cccccc",
                "by": "kind",
                "opacity": 0.5,
                "legend": [
                    {
                        "value": "dat_o",
                        "color": "#f4a261",
                        "label": {"vi": "Đất ở", "en": "Housing"},
                    },
                    {
                        "value": "cong_vien",
                        "color": "#2a9d8f",
                        "label": {"vi": "Công viên", "en": "Park"},
                    },
                ],
            },
        },
    ),
    "tf_blocks": ("blocks", "public", "planning", {"zoom": {"min": 8, "max": 20}}),
    "tf_reports": (
        "reports",
        "public",
        "science_tech",
        {
            "zoom": {"min": 8, "max": 22},
            "time_attribute": "created_at",
            "style": {"color": "#d62728", "by": "category", "radius": 4, "legend": LEGEND},
        },
    ),
    "tf_province": ("province", "public", "home_affairs", {"zoom": {"min": 0, "max": 22}}),
    "tf_internal": ("internal_roads", "internal", "construction", {"zoom": {"min": 0, "max": 22}}),
    "tf_restricted": ("restricted_sites", "restricted", "police", {"zoom": {"min": 0, "max": 22}}),
    "tf_mutable": ("mutable", "public", "science_tech", {"zoom": {"min": 0, "max": 22}}),
    "tf_quoted": (
        'Mixed "Case" Table',
        "public",
        "science_tech",
        {
            "zoom": {"min": 0, "max": 22},
            "style": {
                "color": "#000000",
                "by": "Kind Of",
                "legend": [{"value": "it's", "color": "#ff0000", "label": {"vi": "x", "en": "x"}}],
            },
        },
    ),
    "tf_faulty": ("faulty", "public", "science_tech", {"zoom": {"min": 0, "max": 22}}),
}


def create_fixture_layers(dsn: str) -> None:
    """(Re)create the tables and their registry rows; deterministic (seeded random)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM ioc.layers WHERE id LIKE 'tf\\_%'")
            cur.execute(TABLES_SQL)
        conn.commit()
        for layer_id, (table, access, department, changes) in LAYERS.items():
            registry.add_table(
                conn,
                SCHEMA,
                table,
                layer_id=layer_id,
                access=access,
                department=department,
                domain="registered",
                title=layer_id,
            )
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE ioc.layers SET manifest = manifest || %s::jsonb WHERE id = %s",
                    (json.dumps(changes, ensure_ascii=False), layer_id),
                )
            conn.commit()
        with conn.cursor() as cur:
            cur.execute(FAULTY_VIEW_SQL)
        conn.commit()
    finally:
        conn.close()


def set_fault(dsn: str, mode: str) -> None:
    """What the tf_faulty layer's rows do: 'none', 'cancel' or 'terminate'."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {SCHEMA}.fault_mode SET mode = %s", (mode,))  # noqa: S608
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(scope="session")
def tile_layers(db_settings) -> list[str]:
    """Create the fixture layers once per session."""
    create_fixture_layers(db_settings.dsn())
    return list(LAYERS)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tile-cache")


@pytest.fixture
def tiles_client(client, tile_layers, cache_dir) -> Iterator:
    """The app with the fixture layers in its catalog and a fresh tile service per test
    (its own disk cache folder, versions checked on every request)."""
    app = client.app
    own = app.state.tiles
    app.state.tiles = TileService(TileSettings(cache_dir=cache_dir))
    client.portal.call(app.state.reload_catalog, set())
    interval, app.state.catalog_watcher.interval = app.state.catalog_watcher.interval, 0
    yield client
    app.state.tiles = own
    app.state.catalog_watcher.interval = interval
