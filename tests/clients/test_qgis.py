"""QGIS 3.22 (Debian's ``python3-qgis``), headless, against a live ``ioc serve``: layers over
OGC API - Features (public, and restricted with the API key in a Basic-auth configuration of
QGIS's auth manager) and the vector tiles drawn with ioc's MapLibre style as QGIS converts it.

QGIS runs in the system Python (``tests/clients/qgis_probe.py``), not in the venv."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from psycopg2 import sql

QGIS_PYTHON = os.environ.get("IOC_QGIS_PYTHON", "/usr/bin/python3")
PROBE = Path(__file__).with_name("qgis_probe.py")
# HCMC's core and its suburbs: wards (Phường) and communes (Xã) at about zoom 10.
HCMC = [106.45, 10.6, 106.95, 11.1]
STYLE_CHUNK = 32  # layers per style request (a request takes at most 64)


@pytest.fixture(scope="module")
def qgis() -> str:
    """The system Python with QGIS, or a skip (a failure in CI: make test installs it)."""
    found = (
        subprocess.run(
            [QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False
        ).returncode
        == 0
        if Path(QGIS_PYTHON).exists()
        else False
    )
    if not found:
        if os.environ.get("CI"):
            pytest.fail(
                f"QGIS is missing from {QGIS_PYTHON}: scripts/setup.sh installs python3-qgis"
            )
        pytest.skip("QGIS is not installed (make test installs Debian's python3-qgis)")
    return QGIS_PYTHON


def probe(qgis: str, **request) -> dict:
    """What the probe answers for one request (its JSON on standard output)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [qgis, str(PROBE)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def table_count(db, layer_id: str) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT schema_name, table_name FROM ioc.layers WHERE id = %s", (layer_id,))
        schema, table = cur.fetchone()
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
        return cur.fetchone()[0]


def restricted_layer(db) -> tuple[str, str]:
    """The smallest restricted catalog layer that has features, and its department."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT id, department FROM ioc.layers WHERE access = 'restricted' AND"
            " origin = 'manifest' AND deleted_at IS NULL AND feature_count > 0"
            " ORDER BY feature_count, id LIMIT 1"
        )
        found = cur.fetchone()
    if found is None:
        pytest.skip("the catalog has no restricted layer with features")
    return found


def test_public_layer_over_oapif_with_and_without_basic_auth(qgis, live_server, db, make_key):
    expected = table_count(db, "wards")
    plain = probe(qgis, check="oapif", base=live_server, layer="wards")
    assert plain["valid"] and plain["count"] == expected > 0, plain
    assert {"ward_code", "name", "unit_type"} <= set(plain["fields"])
    if os.environ.get("IOC_DATA_DIR"):
        assert expected == 168  # the real wards of 2025
    # A Basic-auth configuration (needed for other layers) must not lose the public ones.
    keyed = probe(qgis, check="oapif", base=live_server, layer="wards", key=make_key("analyst"))
    assert keyed["valid"] and keyed["count"] == expected, keyed


def test_restricted_layer_with_the_key_in_a_basic_auth_config(qgis, live_server, db, make_key):
    layer, department = restricted_layer(db)
    key = make_key("publisher", department)
    opened = probe(qgis, check="oapif", base=live_server, layer=layer, key=key)
    assert opened["valid"] and opened["count"] == table_count(db, layer) > 0, opened
    # Without the key, or with another department's, the layer does not exist.
    other = "police" if department != "police" else "health"
    for key in (None, make_key("publisher", other)):
        hidden = probe(qgis, check="oapif", base=live_server, layer=layer, key=key)
        assert not hidden["valid"] and any("Not Found" in m for m in hidden["messages"]), hidden


def test_wards_tiles_drawn_with_ioc_style_show_the_legend_colours(qgis, live_server):
    doc = httpx.get(f"{live_server}/catalog/layers/wards").json()
    style = doc["style"]
    opacity = style.get("opacity", 0.4)

    def on_white(colour: str) -> str:  # a fill of that colour at the style's opacity
        rgb = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        return "#" + "".join(f"{round(opacity * c + (1 - opacity) * 255):02x}" for c in rgb)

    legend = {on_white(entry["color"]): entry["value"] for entry in style["legend"]}
    drawn = probe(
        qgis,
        check="render",
        base=live_server,
        layer="wards",
        zmin=doc["zoom"]["min"],
        zmax=doc["zoom"]["max"],
        extent=HCMC,
        style_url=f"{live_server}/styles/wards.json",
        colours=list(legend),
    )
    assert drawn["valid"] and not drawn["errors"] and not drawn["warnings"], drawn
    width, height = drawn["size"]
    shown = {legend[c] for c, pixels in drawn["pixels"].items() if pixels > width * height / 100}
    assert len(shown) >= 2, drawn  # e.g. Phường and Xã, each over 1 % of the image


def test_restricted_tiles_with_the_key_in_a_basic_auth_config(
    qgis, live_server, db, make_key, tmp_path
):
    layer, department = restricted_layer(db)
    key = make_key("publisher", department)
    with db.cursor() as cur:  # around one of its features, at about zoom 15
        cur.execute(
            "SELECT schema_name, table_name, geometry_column FROM ioc.layers WHERE id = %s",
            (layer,),
        )
        schema, table, column = cur.fetchone()
        cur.execute(
            sql.SQL(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(ST_PointOnSurface("
                "{}), 4326) AS p FROM {} LIMIT 1) s"
            ).format(sql.Identifier(column), sql.Identifier(schema, table))
        )
        lon, lat = cur.fetchone()
    doc = httpx.get(f"{live_server}/catalog/layers/{layer}", auth=("qgis", key)).json()
    style = tmp_path / "style.json"  # QGIS would read it with the same configuration
    style.write_bytes(httpx.get(f"{live_server}/styles/{layer}.json", auth=("qgis", key)).content)
    drawn = {}
    for name, with_key in (("key", key), ("anonymous", None)):
        drawn[name] = probe(
            qgis,
            check="render",
            base=live_server,
            layer=layer,
            key=with_key,
            zmin=doc["zoom"]["min"],
            zmax=doc["zoom"]["max"],
            extent=[lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01],
            style_file=str(style),
        )
    assert drawn["key"]["drawn"] > 0 and drawn["anonymous"]["drawn"] == 0, drawn


def test_every_public_legend_converts_to_qgis_in_its_colours(qgis, live_server):
    """Each legend value of every public categorised layer (wards, roads by highway, flood
    points by status, layers by a yes/no attribute…) is painted by QGIS in its legend colour,
    and a value outside the legend in the default colour."""
    wanted, expected = [], {}
    for item in httpx.get(f"{live_server}/catalog/layers").json()["layers"]:
        if item["access"] != "public":
            continue
        doc = httpx.get(item["href"]).json()
        style = doc["style"]
        legend = [e for e in style.get("legend") or [] if e.get("value") is not None]
        if doc["origin"] != "manifest" or not style.get("by") or not legend:
            continue
        kind = doc["geometry"]["type"]
        geometry = "point" if "Point" in kind else "line" if "Line" in kind else "polygon"
        default = style.get("fill" if geometry == "polygon" else "color") or style["color"]
        wanted.append(
            {
                "layer": doc["id"],
                "geometry": geometry,
                "by": style["by"],
                "values": [e["value"] for e in legend] + [None],
                "zoom": doc["zoom"]["max"],
            }
        )
        expected[doc["id"]] = [e["color"].lower() for e in legend] + [default.lower()]
    assert {"wards", "roads", "flood_points"} <= set(expected)
    ids = [w["layer"] for w in wanted]
    urls = [
        f"{live_server}/styles/{','.join(ids[i : i + STYLE_CHUNK])}.json"
        for i in range(0, len(ids), STYLE_CHUNK)
    ]
    converted = probe(qgis, check="legend", style_urls=urls, layers=wanted)
    painted = {
        layer: [c and c.lower() for c in colours] for layer, colours in converted["layers"].items()
    }
    assert painted == expected
    # Only the cluster circles' size (by count) is beyond QGIS 3.22: drawn at its default size.
    assert all("-cluster" in w for w in converted["warnings"]), converted["warnings"]
