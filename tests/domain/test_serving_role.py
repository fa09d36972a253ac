"""ioc never connects to its managed cluster as a superuser (issue 24): a database an older ioc
migrated as the superuser is handed over to the role by `ioc db migrate` (once), and a real
`ioc serve` on it connects as that role only, publishes a layer and writes a feature."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest

from ioc.catalog import keys
from ioc.config import get_settings
from ioc.db import cluster, migrations, roles
from ioc.db.connection import sibling_settings
from ioc.settings import PROJECT_ROOT, DatabaseSettings, ServerSettings
from tests.conftest import TEST_DB, VENV_BIN, free_port, server_env, wait_ready
from tests.http.test_publish import SENSORS
from tests.http.test_tiles_databases import _server  # the maintenance database, as superuser

pytestmark = pytest.mark.skipif(
    not get_settings().database.managed, reason="the managed cluster's role (DATABASE_URL is set)"
)
OLD_DB = f"{TEST_DB}_superuser_made"


def _as_superuser(settings: DatabaseSettings, sql: str, args: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(settings.superuser_dsn())
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def _ioc(settings: DatabaseSettings, *args: str) -> str:
    done = subprocess.run(
        [str(VENV_BIN / "ioc"), *args],
        cwd=PROJECT_ROOT,
        env=server_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def old_database(db_settings: DatabaseSettings) -> Iterator[DatabaseSettings]:
    """A database as ioc made it before the role: created, migrated and written by the
    superuser (a layer table with an identity column, a standalone sequence)."""
    settings = sibling_settings(OLD_DB, db_settings)
    _server(f'DROP DATABASE IF EXISTS "{OLD_DB}" WITH (FORCE)')
    _server(f'CREATE DATABASE "{OLD_DB}"')
    conn = psycopg2.connect(settings.superuser_dsn())
    try:
        migrations.migrate(conn)
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE data.old_layer (fid int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " geom geometry(Point, 4326)); CREATE SEQUENCE ioc.old_counter"
            )
    finally:
        conn.close()
    yield settings
    _server(f'DROP DATABASE IF EXISTS "{OLD_DB}" WITH (FORCE)')


def test_ioc_db_migrate_hands_an_old_database_over_once(old_database: DatabaseSettings):
    role = old_database.db_role
    assert _as_superuser(old_database, roles.NOT_OWNED_SQL, {"role": role}), "nothing to hand over"
    first = _ioc(old_database, "db", "migrate")
    assert "handed over to the database role" in first
    assert _as_superuser(old_database, roles.NOT_OWNED_SQL, {"role": role}) == []
    owners = _as_superuser(
        old_database,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        " UNION ALL SELECT relowner::regrole::text FROM pg_class"
        " WHERE oid IN ('data.old_layer'::regclass, 'ioc.old_counter'::regclass,"
        " 'ioc.schema_migrations'::regclass)"
        " UNION ALL SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'data'",
    )
    assert {o for (o,) in owners} == {role}
    # PostGIS stays the superuser's (an extension's objects), the role may add VN-2000 to it.
    assert _as_superuser(
        old_database,
        "SELECT relowner::regrole::text FROM pg_class WHERE relname = 'spatial_ref_sys'",
    ) == [("postgres",)]
    second = _ioc(old_database, "db", "migrate")
    assert "handed over" not in second and "database is current." in second


@pytest.fixture(scope="module")
def served(old_database: DatabaseSettings, server_tmp) -> Iterator[str]:
    """A real `ioc serve` on the handed-over database."""
    _ioc(old_database, "db", "migrate")
    home = server_tmp("serving-role")
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "ioc"), "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=server_env(
            old_database,
            IOC_LOG_LEVEL="warning",
            IOC_TILE_CACHE_DIR=str(home / "tiles"),
            IOC_QUERY_JOB_DIR=str(home / "jobs"),
        ),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_server_connects_as_a_role_that_is_no_superuser(served, old_database):
    httpx.get(served + "/collections")  # a request on the pool, beside the event listener
    sessions = _as_superuser(
        old_database,
        "SELECT a.usename, r.rolsuper, a.application_name FROM pg_stat_activity a"
        " JOIN pg_roles r ON r.oid = a.usesysid"
        " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    assert any(app == "ioc-api" for _, _, app in sessions), sessions
    assert {(user, superuser) for user, superuser, _ in sessions} == {(old_database.db_role, False)}


def test_publish_and_feature_writes_work_as_the_role(served, old_database):
    conn = psycopg2.connect(old_database.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone() == (old_database.db_role, False)
        admin = {"Authorization": f"Bearer {keys.create_key(conn, 'admin', None, label='pytest')}"}
    finally:
        conn.close()
    doc = {**SENSORS, "id": "role_sensors"}
    created = httpx.post(served + "/layers", json=doc, headers=admin, timeout=60)
    assert created.status_code == 201, created.text
    feature = {
        "type": "Feature",
        "properties": {"sensor_id": "ROLE-1", "depth_cm": 12},
        "geometry": {"type": "Point", "coordinates": [106.7, 10.77]},
    }
    url = served + "/collections/role_sensors/items"
    written = httpx.post(url, json=feature, headers=admin, timeout=60)
    assert written.status_code == 201, written.text
    found = httpx.get(url, timeout=60).json()["features"]
    assert [f["properties"]["sensor_id"] for f in found] == ["ROLE-1"]
    # The new layer's tables (data, history) are the role's, made by the server itself.
    owners = _as_superuser(
        old_database,
        "SELECT DISTINCT relowner::regrole::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname LIKE %s"
        " AND n.nspname NOT LIKE 'pg%%'",
        ("role_sensors%",),
    )
    assert owners == [(old_database.db_role,)]


def test_database_url_users_keep_their_url():
    url = "postgresql://city:secret@db.example:5432/gis?sslmode=require"
    managed = DatabaseSettings().model_copy(update={"url": None})
    settings = managed.model_copy(update={"url": url})
    assert settings.dsn() == settings.superuser_dsn() == url
    assert managed.dsn().startswith(f"postgresql://{managed.db_role}@/")
    assert managed.superuser_dsn().startswith("postgresql://postgres@/")


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as the serving user needs root")
def test_the_serving_user_reaches_the_role_but_not_the_superuser(monkeypatch):
    """On a cluster of its own, running as an older ioc left it (every role trusted): after
    `ioc db start` the operating-system user that serves (IOC_RUN_AS, who may reach the
    socket) connects as ioc's role, never as the superuser; root still does."""
    serving = pwd.getpwnam(ServerSettings().run_as)
    base = Path(tempfile.mkdtemp(prefix="ioc-role-"))
    base.chmod(0o755)  # the postgres and serving users pass through
    settings = DatabaseSettings().model_copy(
        update={"url": None, "pg_dir": base, "pg_port": free_port(), "db_name": "ioc"}
    )

    def connects_as_serving_user(dsn: str) -> bool:
        probe = subprocess.run(
            [
                str(VENV_BIN / "python"),
                "-c",
                "import psycopg2, sys; psycopg2.connect(sys.argv[1])",
                dsn,
            ],
            user=serving.pw_uid,
            group=serving.pw_gid,
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.returncode == 0 or "authentication failed" in probe.stderr, probe.stderr
        return probe.returncode == 0

    try:
        with monkeypatch.context() as older:  # started as an older ioc started it
            older.setattr(cluster, "secure_superuser", lambda _settings: False)
            cluster.start_cluster(settings, socket_gid=serving.pw_gid)
        assert cluster.HBA_MARK not in (base / "data" / "pg_hba.conf").read_text()
        assert connects_as_serving_user(settings.superuser_dsn())  # the hole
        cluster.start_cluster(settings, socket_gid=serving.pw_gid)  # running: rule + reload
        assert connects_as_serving_user(settings.dsn())
        assert not connects_as_serving_user(settings.superuser_dsn())
        psycopg2.connect(settings.superuser_dsn()).close()  # root administers it
        assert not cluster.secure_superuser(settings)  # written once
    finally:
        cluster.stop_cluster(settings)
        shutil.rmtree(base, ignore_errors=True)
