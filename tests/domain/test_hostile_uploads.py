"""The ingest layer itself against the hostile corpus: every file refused before GDAL reads what
it names, GDAL's network file systems off, and genuine files of every format still read."""

from __future__ import annotations

import json

import pyogrio
import pytest
from pyogrio.errors import DataSourceError
from pyogrio.raw import open_arrow

from ioc.errors import InvalidParameter, IocError
from layers import ingest, upload_check
from layers.crs_detect import resolve_srid
from tests.fixtures import hostile_uploads as hostile
from tests.fixtures import uploads


@pytest.fixture
def listener():
    net = hostile.Listener()
    yield net
    net.close()


@pytest.mark.parametrize("case", [c for c in hostile.CORPUS if not c.startswith("csv")])
def test_every_hostile_file_is_refused_before_it_is_read(tmp_path, listener, case):
    entry = hostile.CORPUS[case]
    path = tmp_path / "upload"
    path.write_bytes(entry.build(tmp_path, listener))
    with pytest.raises(IocError) as refused:
        ingest.open_source(path, entry.filename)
    message = refused.value.message
    assert message.endswith(".") and str(tmp_path) not in message
    assert not any(marker in message for marker in hostile.PASSWD_MARKERS)
    assert listener.connections == []


def test_gdal_network_file_systems_are_off(listener):
    assert (
        pyogrio.get_gdal_config_option("CPL_VSIL_CURL_ALLOWED_FILENAME")
        == upload_check.GDAL_HARDENING["CPL_VSIL_CURL_ALLOWED_FILENAME"]
    )
    with pytest.raises(DataSourceError):
        with open_arrow(f"/vsicurl/{listener.url}/sensors.geojson"):
            pass
    assert listener.connections == []


def test_crs_parameter_never_names_a_file_or_url():
    for value in (
        "+init=/etc/passwd:root",
        "+proj=longlat +init=/etc/passwd:x",
        "/etc/passwd",
        "file:///etc/passwd",
        "http://127.0.0.1:9/crs",
    ):
        with pytest.raises(InvalidParameter, match="not by a file or URL"):
            resolve_srid(None, explicit=value)
    assert resolve_srid(None, explicit="http://www.opengis.net/def/crs/EPSG/0/9210") == 9210
    assert resolve_srid("EPSG:4326") == 4326


def test_geojson_check_accepts_real_shapes_and_refuses_others(tmp_path):
    path = tmp_path / "a.geojson"
    late_type = {"features": [], "type": "FeatureCollection"}
    for ok in (
        uploads.sensors_geojson(crs_member="urn:ogc:def:crs:EPSG::9210"),
        json.dumps(late_type).encode(),
        b'\xef\xbb\xbf {"type": "Point", "coordinates": [1, 2]}',
    ):
        path.write_bytes(ok)
        upload_check.check_geojson(path)
    for bad in (
        b"[1, 2]",
        b'{"type": "Topology"}',
        b'{"type": "FeatureCollection", "crs": 5}',
        b'{"type": "gdal_streamed_alg", "command_line": "x"}',
        b'{"a": ',
    ):
        path.write_bytes(bad)
        with pytest.raises(InvalidParameter):
            upload_check.check_geojson(path)


def test_genuine_files_open_and_their_copies_are_removed(tmp_path):
    gpkg = hostile.sensors_gpkg(tmp_path / "s.gpkg")
    kml = tmp_path / "s.kml"
    kml.write_bytes(hostile.sensors_kml())
    zipped = tmp_path / "upload"
    zipped.write_bytes(hostile.zipped({"s.geojson": uploads.sensors_geojson()}))
    for path, name, kind in (
        (gpkg, "s.gpkg", "gpkg"),
        (kml, "s.kml", "kml"),
        (zipped, "s.zip", "geojson"),
    ):
        source = ingest.open_source(path, name)
        assert source.format == kind
        rows = [row for batch in ingest.iter_rows(source) for row in batch]
        assert len(rows) == len(uploads.SENSORS) and all(r["__wkb__"] for r in rows)
        workdir = source.workdir
        source.close()
        assert workdir is not None and not workdir.exists()
