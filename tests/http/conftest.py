"""HTTP fixtures: the test database plus deliberately awkward layers of our own.

``db_settings`` is overridden here so that the app (``client``) and the ``live_server`` process
start with the fixture layers already in the registry: a VN-2000 (EPSG:9210) table, names with
quotes, spaces and mixed case, an empty layer, a huge polygon, 20,000 timestamped points, and an
internal and a restricted layer. They live in schema ``fixtures`` with layer ids ``fx_*`` and are
rebuilt when :data:`FIXTURE_VERSION` changes. The demo city is seeded too when its generator is
present; the suite stays green while it is not.
"""

from __future__ import annotations

import psycopg2
import pytest

from ioc.db.identifiers import quote_ident
from ioc.settings import DatabaseSettings
from layers import registry

FIXTURE_VERSION = 3
SCHEMA = "fixtures"
ODD_TABLE = 'Odd "Table" Name'
POINTS = 20_000
# Known places in Ho Chi Minh City (lon, lat): Bến Thành market, Notre-Dame cathedral, Thủ Đức.
LANDMARKS = [
    ("Chợ Bến Thành", 106.698056, 10.772500, 1914),
    ("Nhà thờ Đức Bà", 106.699017, 10.779783, 1880),
    ("Thủ Đức", 106.753900, 10.849400, 1997),
    ("Cần Giờ", 106.953300, 10.411000, 2003),
]

DDL = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};

CREATE TABLE {SCHEMA}.landmarks (
    fid integer PRIMARY KEY, name text NOT NULL, built integer, geom geometry(Point, 4326));
CREATE TABLE {SCHEMA}.vn2000_parcels (
    parcel_id bigint PRIMARY KEY, so_thua text, area_m2 double precision,
    geom geometry(Point, 9210));
CREATE INDEX ON {SCHEMA}.vn2000_parcels USING gist (geom);
CREATE TABLE {SCHEMA}.{quote_ident(ODD_TABLE)} (
    "Feature ID" text PRIMARY KEY, "Mixed Case" integer, "has space" text,
    "quote""d" text, "select" boolean, "Geom Col" geometry(Point, 4326));
CREATE TABLE {SCHEMA}.empty_layer (fid serial PRIMARY KEY, label text,
    geom geometry(Polygon, 4326));
CREATE TABLE {SCHEMA}.huge_polygon (fid integer PRIMARY KEY, label text,
    geom geometry(Polygon, 4326));
CREATE TABLE {SCHEMA}.points (
    fid bigint PRIMARY KEY, category text, n integer, value double precision, ok boolean,
    day date, observed_at timestamptz, geom geometry(Point, 4326));
CREATE INDEX ON {SCHEMA}.points USING gist (geom);
CREATE TABLE {SCHEMA}.internal_layer (fid integer PRIMARY KEY, label text,
    geom geometry(Point, 4326));
CREATE TABLE {SCHEMA}.restricted_layer (fid integer PRIMARY KEY, label text,
    geom geometry(Point, 4326));

INSERT INTO {SCHEMA}.vn2000_parcels
SELECT i, 'T-' || i, 100.0 * i,
       ST_Transform(ST_SetSRID(ST_MakePoint(106.60 + i * 0.01, 10.70 + i * 0.01), 4326), 9210)
FROM generate_series(1, 20) i;
INSERT INTO {SCHEMA}.{quote_ident(ODD_TABLE)} VALUES
    ('a/1', 1, 'x y', 'it''s "q"', true, ST_SetSRID(ST_MakePoint(106.70, 10.77), 4326)),
    ('b 2', 2, NULL, '%_\\', false, ST_SetSRID(ST_MakePoint(106.71, 10.78), 4326)),
    ('c''3', NULL, 'z', NULL, NULL, NULL);
-- A polygon of 20,000 vertices around the city: big, but valid.
INSERT INTO {SCHEMA}.huge_polygon
SELECT 1, 'ring', ST_MakePolygon(ST_MakeLine(array_append(array_agg(p ORDER BY i), (array_agg(p ORDER BY i))[1])))
FROM (SELECT i, ST_SetSRID(ST_MakePoint(106.7 + 0.4 * cos(radians(i * 0.018)),
                                         10.8 + 0.4 * sin(radians(i * 0.018))), 4326) p
      FROM generate_series(0, 19999) i) s;
-- 20,000 points on a 200 x 100 grid over the city, one every hour from 2024-01-01.
INSERT INTO {SCHEMA}.points
SELECT i, (ARRAY['alpha', 'beta', 'gamma', 'Đường'])[1 + i % 4], i % 100, i / 10.0, i % 2 = 0,
       DATE '2024-01-01' + (i / 24), TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL '1 hour',
       ST_SetSRID(ST_MakePoint(106.50 + (i % 200) * 0.002, 10.60 + (i / 200) * 0.004), 4326)
FROM generate_series(0, {POINTS - 1}) i;
INSERT INTO {SCHEMA}.internal_layer VALUES (1, 'secret-ish', ST_SetSRID(ST_MakePoint(106.7, 10.8), 4326));
INSERT INTO {SCHEMA}.restricted_layer VALUES (1, 'secret', ST_SetSRID(ST_MakePoint(106.7, 10.8), 4326));
"""

# (layer id, table, access, time attribute)
LAYERS = [
    ("fx_landmarks", "landmarks", "public", None),
    ("fx_vn2000", "vn2000_parcels", "public", None),
    ("fx_odd_names", ODD_TABLE, "public", None),
    ("fx_empty", "empty_layer", "public", None),
    ("fx_huge_polygon", "huge_polygon", "public", None),
    ("fx_points", "points", "public", "observed_at"),
    ("fx_internal", "internal_layer", "internal", None),
    ("fx_restricted", "restricted_layer", "restricted", None),
]
RESTRICTED_DEPARTMENT = "health"


def build_fixture_layers(conn) -> None:
    """(Re)create the fixture tables and register them; idempotent per FIXTURE_VERSION."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(4242)")
        cur.execute("SELECT value FROM ioc.meta WHERE key = 'features_fixtures'")
        row = cur.fetchone()
        cur.execute("SELECT count(*) FROM ioc.layers WHERE id LIKE 'fx\\_%'")
        registered = cur.fetchone()[0]
        if row and row[0] == FIXTURE_VERSION and registered == len(LAYERS):
            conn.commit()
            return
        cur.execute("DELETE FROM ioc.layers WHERE id LIKE 'fx\\_%'")
        cur.execute(DDL)
        cur.executemany(
            f"INSERT INTO {SCHEMA}.landmarks VALUES (%s, %s, %s, "
            "ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            [(i + 1, name, built, lon, lat) for i, (name, lon, lat, built) in enumerate(LANDMARKS)],
        )
    conn.commit()
    for layer_id, table, access, time_attribute in LAYERS:
        department = RESTRICTED_DEPARTMENT if access == "restricted" else "science_tech"
        registry.add_table(
            conn,
            SCHEMA,
            table,
            layer_id=layer_id,
            access=access,
            department=department,
            domain="fixtures",
            title=f"Fixture {table}",
        )
        if time_attribute:
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE ioc.layers SET manifest = jsonb_set(manifest, "
                    "'{time_attribute}', to_jsonb(%s::text)) WHERE id = %s",
                    (time_attribute, layer_id),
                )
            conn.commit()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ioc.meta (key, value) VALUES ('features_fixtures', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(FIXTURE_VERSION),),
        )
    conn.commit()


@pytest.fixture(scope="session")
def db_settings(db_settings: DatabaseSettings) -> DatabaseSettings:
    """The seeded test database (tests/conftest.py) plus our awkward fixture layers."""
    conn = psycopg2.connect(db_settings.dsn())
    try:
        build_fixture_layers(conn)
    finally:
        conn.close()
    return db_settings
