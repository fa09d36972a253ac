"""Migrations: applied once each, in a transaction, recorded; a database ahead is refused."""

import psycopg2
import pytest
from psycopg2 import sql as pgsql
from pyproj.transformer import TransformerGroup

from ioc.db import migrations
from ioc.db.connection import create_database
from ioc.errors import MigrationError
from ioc.settings import DatabaseSettings

SCRATCH = "ioc_test_migrations"


@pytest.fixture
def scratch(db_settings):
    admin = psycopg2.connect(DatabaseSettings().superuser_dsn("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(SCRATCH))
        )
    # Made as `ioc db start` makes one (owned by ioc's role, extensions in), not migrated.
    conn = psycopg2.connect(create_database(SCRATCH, db_settings).dsn())
    yield conn
    conn.close()
    with admin.cursor() as cur:
        cur.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(SCRATCH))
        )
    admin.close()


def test_migrate_applies_each_once(scratch):
    shipped = migrations.discover()
    applied = migrations.migrate(scratch)
    assert [m.version for m in applied] == [m.version for m in shipped]
    assert migrations.migrate(scratch) == []
    state = migrations.state(scratch)
    assert state.current and state.version == shipped[-1].version
    with scratch.cursor() as cur:
        cur.execute("SELECT count(*) FROM ioc.schema_migrations")
        assert cur.fetchone()[0] == len(shipped)
        cur.execute("SELECT proj4text FROM spatial_ref_sys WHERE srid = 9210")
        assert "+towgs84=-191.90441429" in cur.fetchone()[0]
        # PostGIS applies the official shift, 'VN-2000 to WGS 84 (2)', not PROJ's default (1).
        cur.execute(
            "SELECT ST_X(p), ST_Y(p) FROM ST_Transform(ST_SetSRID("
            "ST_MakePoint(106.6990, 10.7798), 4326), 9210) AS p"
        )
        x, y = cur.fetchone()
    official = next(
        t
        for t in TransformerGroup(4326, 9210, always_xy=True).transformers
        if "VN-2000 to WGS 84 (2)" in t.description
    )
    ex, ey = official.transform(106.6990, 10.7798)
    assert abs(x - ex) < 0.01 and abs(y - ey) < 0.01


def test_database_ahead_of_code_is_refused(scratch):
    migrations.migrate(scratch)
    with scratch.cursor() as cur:
        cur.execute("INSERT INTO ioc.schema_migrations VALUES (9999, 'future', 'x')")
    scratch.commit()
    state = migrations.state(scratch)
    assert state.ahead == [9999] and not state.current
    with pytest.raises(MigrationError, match="ahead of the code"):
        migrations.migrate(scratch)


def test_failing_migration_rolls_back(scratch, tmp_path):
    (tmp_path / "0001_ok.sql").write_text(
        "CREATE EXTENSION IF NOT EXISTS postgis;CREATE TABLE ioc.a (x int);"
    )
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE ioc.b (x int); SELECT no_such_function();")
    shipped = migrations.discover(tmp_path)
    with pytest.raises(MigrationError, match="0002_bad.sql failed"):
        migrations.migrate(scratch, shipped)
    with scratch.cursor() as cur:
        cur.execute("SELECT to_regclass('ioc.a') IS NOT NULL, to_regclass('ioc.b') IS NOT NULL")
        assert cur.fetchone() == (True, False)
        cur.execute("SELECT array_agg(version) FROM ioc.schema_migrations")
        assert cur.fetchone()[0] == [1]
