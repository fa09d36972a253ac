"""CRS URIs, axis order and bbox parsing (OGC API – Features Part 1 bbox, Part 2 CRS)."""

from __future__ import annotations

import pyproj
import pytest

from ioc.errors import InvalidParameter
from ioc.features import crs
from ioc.features.crs import transformer

EPSG = "http://www.opengis.net/def/crs/EPSG/0/"


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, crs.CRS84),
        ("", crs.CRS84),
        (crs.CRS84_URI, crs.CRS84),
        ("https://www.opengis.net/def/crs/OGC/1.3/CRS84", crs.CRS84),
        ("OGC:CRS84", crs.CRS84),
        ("[OGC:CRS84]", crs.CRS84),
        (EPSG + "4326", crs.WGS84),
        ("EPSG:4326", crs.WGS84),
        ("urn:ogc:def:crs:EPSG::4326", crs.WGS84),
        ("<" + EPSG + "3857>", crs.WEB_MERCATOR),
        ("EPSG:9210", crs.VN2000_TM3_10545),
    ],
)
def test_parse_crs_forms(text, expected):
    assert crs.parse_crs(text, parameter="crs") == expected


@pytest.mark.parametrize("text", ["EPSG:1234", "EPSG:32648", "foo", EPSG + "4326x", "CRS83"])
def test_unknown_crs_is_400_naming_the_parameter(text):
    with pytest.raises(InvalidParameter) as err:
        crs.parse_crs(text, parameter="bbox-crs")
    assert err.value.parameter == "bbox-crs"


def test_storage_crs_is_offered_beside_the_supported_ones():
    utm = crs.parse_crs("EPSG:32648", parameter="crs", storage_srid=32648)
    assert utm.srid == 32648 and not utm.lat_lon and not utm.geographic
    uris = [c.uri for c in crs.collection_crs(32648)]
    assert uris[0] == crs.CRS84_URI and uris[-1] == EPSG + "32648"
    assert [c.uri for c in crs.collection_crs(9210)] == [c.uri for c in crs.SUPPORTED]


def test_axis_order_follows_the_authority():
    # EPSG:4326 is latitude first; CRS84 and the projected CRSs are x/y.
    assert crs.WGS84.lat_lon and not crs.CRS84.lat_lon
    assert not crs.WEB_MERCATOR.lat_lon and not crs.VN2000_TM3_10545.lat_lon
    axes = [a.direction for a in pyproj.CRS.from_epsg(9210).axis_info]
    assert axes == ["east", "north"]
    vn2000_geographic = crs.crs_for_srid(4756)  # VN-2000 lat/lon
    assert vn2000_geographic.lat_lon and vn2000_geographic.geographic
    assert crs.crs_for_srid(4326) == crs.CRS84


def test_bbox_in_crs84_and_epsg4326_axis_order():
    [a] = crs.parse_bbox("106.6,10.7,106.8,10.9", crs.CRS84)
    [b] = crs.parse_bbox("10.7,106.6,10.9,106.8", crs.WGS84)
    assert a == b == crs.BBox(106.6, 10.7, 106.8, 10.9, 4326)


def test_bbox_with_six_numbers_ignores_heights():
    [box] = crs.parse_bbox("106.6,10.7,-5,106.8,10.9,100", crs.CRS84)
    assert box.values == (106.6, 10.7, 106.8, 10.9)


def test_bbox_across_the_antimeridian_is_split():
    boxes = crs.parse_bbox("170,-10,-170,10", crs.CRS84)
    assert [b.values for b in boxes] == [(170, -10, 180, 10), (-180, -10, -170, 10)]


def test_projected_bbox():
    [box] = crs.parse_bbox("600000,1190000,610000,1200000", crs.VN2000_TM3_10545)
    assert box.srid == 9210 and box.values == (600000, 1190000, 610000, 1200000)


@pytest.mark.parametrize(
    "text",
    [
        "1,2,3",
        "1,2,3,4,5",
        "a,b,c,d",
        "1,2,3,nan",
        "1,2,3,inf",
        "106,11,107,10",
        "0,-91,1,0",
        "-181,0,0,1",
        "",
        "1,,2,3",
    ],
)
def test_bad_bbox_is_400(text):
    with pytest.raises(InvalidParameter) as err:
        crs.parse_bbox(text, crs.CRS84)
    assert err.value.parameter == "bbox"


def test_bad_projected_bbox_is_400():
    with pytest.raises(InvalidParameter):
        crs.parse_bbox("610000,1190000,600000,1200000", crs.VN2000_TM3_10545)


def test_prefilter_of_the_world_into_vn2000_stays_meaningful():
    # A world box transformed naively into a TM-3 zone collapses onto a sliver; clipped to
    # the zone's area first, it covers Ho Chi Minh City.
    box = crs.prefilter_bounds((-180, -90, 180, 90), 4326, 9210)
    assert box is not None
    x, y = transformer(4326, 9210).transform(106.7, 10.78)
    assert box[0] < x < box[2] and box[1] < y < box[3]


def test_prefilter_contains_the_transformed_box():
    src = (106.6, 10.7, 106.8, 10.9)
    box = crs.prefilter_bounds(src, 4326, 9210)
    t = transformer(4326, 9210)
    for lon in (106.6, 106.7, 106.8):
        for lat in (10.7, 10.8, 10.9):
            x, y = t.transform(lon, lat)
            assert box[0] <= x <= box[2] and box[1] <= y <= box[3]


def test_prefilter_outside_the_zone_is_none_and_nonsense_is_an_error():
    assert crs.prefilter_bounds((-80, 30, -70, 40), 4326, 9210) is None
    with pytest.raises(ValueError):
        crs.prefilter_bounds((1e12, 1e12, 2e12, 2e12), 9210, 4326)
