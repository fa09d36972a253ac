"""The managed cluster end to end with the real `ioc` command: start, stop, a clear message
when serving without a database, serve, readiness, SIGTERM exits 0."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ioc.settings import PROJECT_ROOT, DatabaseSettings
from tests.conftest import free_port, wait_ready

IOC = str(Path(sys.executable).parent / "ioc")

pytestmark = pytest.mark.skipif(
    not DatabaseSettings().managed, reason="DATABASE_URL is set: no managed cluster to exercise"
)


@pytest.fixture(scope="module")
def cluster_env():
    # Under var/: the 'postgres' user (when tests run as root) must reach the folder.
    home = PROJECT_ROOT / "var" / "test-cluster"
    env = dict(os.environ, IOC_PG_DIR=str(home), IOC_PG_PORT=str(free_port()), IOC_DB_NAME="ioc")
    env.pop("DATABASE_URL", None)
    # A cluster left running by an interrupted run must stop before its folder goes: a
    # postmaster whose files vanish shuts down and unlinks socket files by path.
    subprocess.run([IOC, "db", "stop"], env=env, capture_output=True)
    shutil.rmtree(home, ignore_errors=True)
    yield env
    subprocess.run([IOC, "db", "stop"], env=env, capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def run(env, *args, check=True):
    result = subprocess.run([IOC, *args], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_cluster_lifecycle_and_graceful_shutdown(cluster_env):
    run(cluster_env, "db", "start")
    assert "running" in run(cluster_env, "db", "status").stdout
    assert "started" not in run(cluster_env, "db", "start").stdout  # already running: no-op
    run(cluster_env, "db", "stop")

    # Serving without the database: one clear sentence, non-zero exit, no traceback.
    result = run(cluster_env, "serve", check=False)
    assert result.returncode == 1
    assert "ioc db start" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    status = run(cluster_env, "db", "status", check=False)
    assert status.returncode != 0 and "stopped" in status.stdout

    run(cluster_env, "db", "start")
    result = run(cluster_env, "serve", check=False)
    assert result.returncode == 1 and "ioc db migrate" in result.stderr
    run(cluster_env, "db", "migrate")
    assert "current" in run(cluster_env, "db", "migrate").stdout

    port = free_port()
    server = subprocess.Popen(
        [IOC, "serve", "--port", str(port)],
        env=cluster_env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200 and ready.json()["schema_version"] >= 2
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr
    assert "database connections closed" in stderr


def test_keys_create_prints_key_alone_on_last_line(cluster_env):
    run(cluster_env, "db", "start")
    run(cluster_env, "db", "migrate")
    result = run(
        cluster_env, "keys", "create", "--role", "publisher", "--department", "construction"
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("ioc_") and " " not in last and len(last) > 40
    bad = run(cluster_env, "keys", "create", "--role", "publisher", check=False)
    assert bad.returncode == 1 and "--department" in bad.stderr and "Traceback" not in bad.stderr
