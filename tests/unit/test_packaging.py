"""The wheel builds from pyproject.toml and carries the package data the server reads at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# One file of each kind of package data; a glob missing from [tool.setuptools.package-data]
# leaves a server that imports but cannot draw a map, render a page or load its catalog.
EXPECTED = [
    "ioc/py.typed",
    "ioc/maps/js/ioc-maps.js",
    "ioc/maps/js/ioc-maps.css",
    "ioc/maps/js/page.html",
    "ioc/maps/view_files/wall.yaml",
    "api/templates/base.html",
    "api/templates/maps/index.html",
    "layers/catalog/flooding/flood_points.yaml",
]


def _source_copy(target: Path) -> Path:
    """The project's packaging inputs, copied so setuptools' build/ stays out of the tree."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "cache")
    for name in ("ioc", "layers", "tiles", "api"):
        shutil.copytree(PROJECT_ROOT / name, target / name, ignore=junk)
    for name in ("pyproject.toml", "requirements.txt", "README.md", "LICENSE"):
        shutil.copy(PROJECT_ROOT / name, target / name)
    return target


def test_wheel_builds_with_package_data(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    # No build isolation: the pinned setuptools of the dev extra, no download.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("ioc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [n for n in EXPECTED if n not in names] == []
    catalog = {n for n in names if n.startswith("layers/catalog/") and n.endswith(".yaml")}
    on_disk = {
        p.relative_to(PROJECT_ROOT).as_posix()
        for p in (PROJECT_ROOT / "layers" / "catalog").rglob("*.yaml")
    }
    assert catalog == on_disk
    assert not any(n.startswith("tiles/cache/") for n in names)
