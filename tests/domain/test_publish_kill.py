"""Killing the server in the middle of a large upload leaves the previous version served."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psycopg2
import pytest

from ioc.catalog import keys
from ioc.settings import PROJECT_ROOT
from layers import registry
from layers.manifest import LayerManifest
from tests.conftest import free_port, server_env, wait_ready
from tests.fixtures import uploads
from tests.http.test_publish import SENSORS, checksum
from tests.polling import wait_until

IOC = str(Path(sys.executable).parent / "ioc")
LAYER = "pk_sensors"


@pytest.fixture
def layer(db_settings):
    conn = psycopg2.connect(db_settings.dsn())
    with conn.cursor() as cur:
        cur.execute("DELETE FROM ioc.layers WHERE id = %s", (LAYER,))
        for schema in ("data", "staging", "versions"):
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
                (schema, "pk\\_%"),
            )
            for (table,) in cur.fetchall():
                cur.execute(f'DROP TABLE "{schema}"."{table}"')
    conn.commit()
    registry.create_layer(conn, LayerManifest.model_validate({**SENSORS, "id": LAYER}))
    key = keys.create_key(conn, "publisher", "construction")
    yield conn, {"Authorization": f"Bearer {key}"}
    conn.close()


def _serve(db_settings, port):
    return subprocess.Popen(
        [IOC, "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=server_env(db_settings, IOC_LOG_LEVEL="warning"),
    )


def _big_geojson(path: Path, n: int) -> None:
    with open(path, "w") as handle:
        handle.write('{"type":"FeatureCollection","features":[')
        for i in range(n):
            lon, lat = 106.6 + (i % 1000) * 1e-4, 10.7 + (i // 1000) * 1e-4
            handle.write(
                ("," if i else "")
                + json.dumps(
                    {
                        "type": "Feature",
                        "properties": {"sensor_id": f"B{i}", "depth_cm": i % 90},
                        "geometry": {"type": "Point", "coordinates": [lon, lat]},
                    }
                )
            )
        handle.write("]}")


def test_kill_during_large_upload(db_settings, layer, tmp_path):
    conn, auth = layer
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(db_settings, port)
    try:
        wait_ready(url)
        first = httpx.put(
            f"{url}/layers/{LAYER}/data?filename=a.geojson",
            headers=auth,
            content=uploads.sensors_geojson(),
            timeout=60,
        )
        assert first.status_code == 200, first.text
        before, version = checksum(conn, LAYER), first.json()["version"]

        big = tmp_path / "big.geojson"
        _big_geojson(big, 300_000)
        thread = threading.Thread(
            target=lambda: _swallow(
                lambda: httpx.put(
                    f"{url}/layers/{LAYER}/data?filename=big.geojson",
                    headers=auth,
                    content=big.read_bytes(),
                    timeout=120,
                )
            ),
            daemon=True,
        )
        thread.start()

        def staged() -> bool:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'"
                    " AND tablename LIKE 'pk\\_sensors\\_\\_%'"
                )
                found = cur.fetchone()[0] > 0
            conn.rollback()
            return found

        wait_until(staged, timeout=60, message="the upload to reach the staging table")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        thread.join(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()

    assert checksum(conn, LAYER) == before
    with conn.cursor() as cur:
        cur.execute("SELECT version, feature_count FROM ioc.layers WHERE id = %s", (LAYER,))
        assert cur.fetchone() == (version, len(uploads.SENSORS))
    conn.rollback()

    server = _serve(db_settings, port)
    try:
        wait_ready(url)
        doc = httpx.get(f"{url}/catalog/layers/{LAYER}").json()
        assert doc["feature_count"] == len(uploads.SENSORS) and doc["version"] == version
        again = httpx.put(
            f"{url}/layers/{LAYER}/data?filename=c.geojson",
            headers=auth,
            content=uploads.sensors_geojson(uploads.SENSORS[:2]),
            timeout=60,
        )
        assert again.status_code == 200 and again.json()["version"] == version + 1
        with conn.cursor() as cur:  # the orphaned staging table was cleaned up
            cur.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'"
                " AND tablename LIKE 'pk\\_%'"
            )
            assert cur.fetchone()[0] == 0
        conn.rollback()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _swallow(call):
    try:
        call()
    except httpx.HTTPError:
        pass  # the server was killed on purpose
