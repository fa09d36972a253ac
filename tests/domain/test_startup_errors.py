"""A wrong setting or a broken map view stops ``ioc`` at start-up with one sentence naming
it (never a traceback), and the app refuses to start rather than answer 500 later."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ioc.config import Settings
from ioc.errors import ConfigError
from ioc.maps.views import VIEWS_DIR, MapsSettings
from ioc.settings import PROJECT_ROOT

IOC = str(Path(sys.executable).parent / "ioc")


def ioc(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [IOC, *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )


@pytest.mark.parametrize(
    "command", [("serve",), ("maps", "list"), ("db", "status"), ("layers", "list")]
)
def test_a_wrong_setting_is_one_sentence(command):
    result = ioc(*command, IOC_TILE_EXTENT="abc")
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr and "validation error" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "IOC_TILE_EXTENT" in lines[0] and "'abc'" in lines[0] and "integer" in lines[0]


@pytest.fixture
def broken_views(tmp_path) -> Path:
    for view in VIEWS_DIR.glob("*.yaml"):
        shutil.copy(view, tmp_path)
    (tmp_path / "zz_broken.yaml").write_text("id: zz_broken\nlayout: [not, a, layout\n")
    return tmp_path


def test_a_broken_view_stops_serve(broken_views):
    result = ioc("serve", IOC_MAPS_VIEWS_DIR=str(broken_views))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: Map view zz_broken.yaml is invalid")


def test_a_broken_view_stops_the_app(settings, broken_views):
    broken = Settings(database=settings.database, maps=MapsSettings(views_dir=broken_views))
    with pytest.raises(ConfigError, match="zz_broken"), TestClient(create_app(broken)):
        pass
