"""The seeded catalog: ~201 layers in ≥ 10 domains, every one non-empty, the real wards."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ioc.catalog.layers import load_catalog_sync
from ioc.settings import PROJECT_ROOT
from tests.conftest import server_env

IOC = str(Path(sys.executable).parent / "ioc")


def test_registry_holds_the_whole_catalog_and_every_layer_has_data(db):
    catalog = load_catalog_sync(db)
    assert len(catalog) >= 200
    assert len(catalog.domains()) >= 10
    # Only catalog (manifest) layers: other tests register deliberately empty fixture tables.
    empty = [
        layer.id for layer in catalog if layer.feature_count == 0 and layer.origin == "manifest"
    ]
    assert empty == []
    with db.cursor() as cur:
        for layer in list(catalog)[:: max(1, len(catalog) // 25)]:
            cur.execute(f"SELECT count(*) FROM {layer.table_sql}")  # noqa: S608 - catalog ident
            assert cur.fetchone()[0] == layer.feature_count, layer.id
    assert {la.access for la in catalog} == {"public", "internal", "restricted"}


def test_layers_list_json_as_admin_and_as_anonymous(db_settings):
    env = server_env(db_settings)
    admin = json.loads(
        subprocess.run(
            [IOC, "layers", "list", "--json"],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert len(admin) >= 200 and len({la["domain"] for la in admin}) >= 10
    assert all(la["feature_count"] > 0 for la in admin if la["origin"] == "manifest")
    anon = json.loads(
        subprocess.run(
            [IOC, "layers", "list", "--json", "--role", "anonymous"],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert anon and all(la["access"] == "public" for la in anon)
    assert len(anon) == sum(la["access"] == "public" for la in admin)


def test_real_wards_and_ben_thanh_market(db, data_dir):
    if data_dir is None:
        pytest.skip("IOC_DATA_DIR is not set: the wards are synthetic")
    with db.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT ward_code) FROM data.wards")
        assert cur.fetchone() == (168, 168)
        cur.execute(
            "SELECT ward_code FROM data.wards WHERE ST_Intersects(geom,"
            " ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
            (106.6981, 10.7725),
        )
        assert cur.fetchall() == [("26743",)]
        cur.execute("SELECT metadata->>'synthetic' FROM ioc.layers WHERE id = 'wards'")
        assert cur.fetchone()[0] == "false"
