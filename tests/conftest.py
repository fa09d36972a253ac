"""Shared fixtures: a real PostGIS test database (migrated and seeded once), the app, keys,
and a live server process for real clients (GDAL, Chromium)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest
from fastapi.testclient import TestClient

from ioc.catalog import keys
from ioc.config import Settings, get_settings
from ioc.db.connection import create_migrated, sibling_settings
from ioc.settings import PROJECT_ROOT, DatabaseSettings, DataSettings
from tests.polling import wait_until

TEST_DB = os.environ.get("IOC_TEST_DB_NAME", "ioc_test")
VENV_BIN = Path(sys.executable).parent


def _test_database_settings() -> DatabaseSettings:
    return sibling_settings(TEST_DB, get_settings().database)


@pytest.fixture(scope="session")
def data_dir() -> Path | None:
    """Real city data (IOC_DATA_DIR), or None when it is not available."""
    return DataSettings().data_dir


@pytest.fixture(scope="session")
def db_settings(data_dir: Path | None) -> DatabaseSettings:
    """The migrated, seeded test database (seeded once, kept between runs)."""
    from layers.seeding import seed_database

    settings = create_migrated(TEST_DB, get_settings().database)
    conn = psycopg2.connect(settings.dsn())
    try:
        seed_database(
            conn,
            addresses=get_settings().addresses,
            scale="demo",
            data_dir=data_dir,
            only_if_empty=True,
        )
    finally:
        conn.close()
    return settings


@pytest.fixture(scope="session")
def settings(db_settings: DatabaseSettings, data_dir: Path | None) -> Settings:
    return Settings(database=db_settings)


@pytest.fixture
def db(db_settings: DatabaseSettings) -> Iterator:
    """A psycopg2 connection to the test database."""
    conn = psycopg2.connect(db_settings.dsn())
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """The app in-process, with its lifespan (pool, catalog) running."""
    from api.app import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def make_key(db_settings: DatabaseSettings):
    """Create an API key for a role (and department) in the test database."""

    def make(role: str, department: str | None = None) -> str:
        conn = psycopg2.connect(db_settings.dsn())
        try:
            return keys.create_key(conn, role, department, label="pytest")
        finally:
            conn.close()

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float = 60, path: str = "/readyz") -> None:
    """Wait until the server at ``url`` answers 200 on ``path``."""

    def ready() -> bool:
        try:
            return httpx.get(url + path, timeout=2).status_code == 200
        except httpx.HTTPError:  # not listening yet
            return False

    wait_until(ready, timeout=timeout, interval=0.2, message=f"the server at {url} to be ready")


def server_env(db_settings: DatabaseSettings, **extra: str) -> dict[str, str]:
    """Environment for a child ioc process that uses the test database."""
    env = dict(os.environ)
    if db_settings.managed:
        env["IOC_DB_NAME"] = db_settings.db_name
    else:
        env["DATABASE_URL"] = db_settings.dsn()
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def server_tmp() -> Iterator[Callable[[str], Path]]:
    """Make folders a live server may read: `ioc serve` started as root serves as the IOC_RUN_AS
    user, which cannot enter pytest's temporary folders (root's only). Writable folders it is
    given (tile cache, jobs) are handed over to it at start."""
    base = Path(tempfile.mkdtemp(prefix="ioc-test-"))
    base.chmod(0o755)

    def make(name: str) -> Path:
        path = base / name
        path.mkdir(mode=0o755)
        return path

    yield make
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def live_server(db_settings: DatabaseSettings) -> Iterator[str]:
    """A real `ioc serve` process on a free port, for real HTTP clients."""
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "ioc"), "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=server_env(db_settings, IOC_LOG_LEVEL="warning"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
