"""Coordinate reference systems of OGC API – Features Part 2: URIs, SRIDs, axis order, bboxes.

The HTTP boundary speaks CRS URIs; PostGIS speaks SRIDs. Axis order is the trap: the URI
``…/EPSG/0/4326`` means latitude first (as EPSG defines it), while ``…/OGC/1.3/CRS84`` and
GeoJSON mean longitude first. Inside ioc every coordinate pair is kept x/y (lon/lat, easting/
northing); the swap happens only where a lat/lon-ordered CRS enters (``bbox``, filter
literals) or leaves (``crs`` of the response, done in SQL with ``ST_FlipCoordinates``).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache

from ioc.errors import InvalidParameter

EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{code}"
CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


@dataclass(frozen=True)
class CRS:
    """A CRS ioc can read and write: its URI, PostGIS SRID and axis order."""

    uri: str
    srid: int
    lat_lon: bool  # the authority's first axis is latitude (northing): swap at the boundary
    geographic: bool
    title: str

    @property
    def precision(self) -> int:
        """Decimal digits for output: ~1 cm in degrees, 1 mm in metres."""
        return 7 if self.geographic else 3


CRS84 = CRS(CRS84_URI, 4326, False, True, "WGS 84 (lon/lat, CRS84)")
WGS84 = CRS(EPSG_URI.format(code=4326), 4326, True, True, "WGS 84 (lat/lon, EPSG:4326)")
WEB_MERCATOR = CRS(EPSG_URI.format(code=3857), 3857, False, False, "WGS 84 / Pseudo-Mercator")
VN2000_TM3_10545 = CRS(
    EPSG_URI.format(code=9210), 9210, False, False, "VN-2000 / TM-3 105°45' (EPSG:9210)"
)

# The CRSs every collection offers (Part 2 /req/crs/crs-uri), CRS84 first because it is the
# default of Part 1 and of GeoJSON.
SUPPORTED: tuple[CRS, ...] = (CRS84, WGS84, WEB_MERCATOR, VN2000_TM3_10545)
_BY_URI = {crs.uri: crs for crs in SUPPORTED}

_EPSG_FORMS = (
    re.compile(r"^https?://www\.opengis\.net/def/crs/EPSG/0/(\d+)/?$"),
    re.compile(r"^\[?EPSG:(\d+)\]?$", re.IGNORECASE),
    re.compile(r"^urn:ogc:def:crs:EPSG:[\d.]*:(\d+)$", re.IGNORECASE),
)
_CRS84_FORMS = re.compile(
    r"^(https?://www\.opengis\.net/def/crs/OGC/1\.3/CRS84/?|\[?(OGC:)?CRS84\]?"
    r"|urn:ogc:def:crs:OGC:1\.3:CRS84)$",
    re.IGNORECASE,
)


@lru_cache(maxsize=64)
def _axis_facts(srid: int) -> tuple[bool, bool, str]:
    """(lat_lon, geographic, name) of an EPSG code, from PROJ's database."""
    import pyproj

    try:
        crs = pyproj.CRS.from_epsg(srid)
    except pyproj.exceptions.CRSError:
        return False, False, f"EPSG:{srid}"
    first = crs.axis_info[0].direction.lower() if crs.axis_info else "east"
    return first in ("north", "south"), crs.is_geographic, crs.name


def crs_for_srid(srid: int) -> CRS:
    """The CRS of a storage SRID (EPSG codes; 4326 is reported as CRS84, the x/y default)."""
    for crs in SUPPORTED:
        if crs.srid == srid and not crs.lat_lon:
            return crs
    lat_lon, geographic, name = _axis_facts(srid)
    return CRS(EPSG_URI.format(code=srid), srid, lat_lon, geographic, name)


def collection_crs(storage_srid: int) -> list[CRS]:
    """The CRSs a collection offers: the supported ones plus its storage CRS."""
    offered = list(SUPPORTED)
    storage = crs_for_srid(storage_srid)
    if storage.uri not in _BY_URI:
        offered.append(storage)
    return offered


def parse_crs(
    value: str | None, *, parameter: str, storage_srid: int | None = None, default: CRS = CRS84
) -> CRS:
    """The CRS named by a URI (or ``EPSG:n``/``CRS84`` short forms); 400 when not offered."""
    if value is None or not value.strip():
        return default
    text = value.strip().strip("<>")
    if _CRS84_FORMS.match(text):
        return CRS84
    for form in _EPSG_FORMS:
        match = form.match(text)
        if match:
            code = int(match.group(1))
            for crs in SUPPORTED:
                if crs.srid == code and crs.uri.startswith("http://www.opengis.net/def/crs/EPSG"):
                    return crs
            if storage_srid is not None and code == storage_srid:
                return crs_for_srid(code)
            break
    offered = ", ".join(c.uri for c in collection_crs(storage_srid or 4326))
    raise InvalidParameter(
        f"Unsupported CRS '{value}' in '{parameter}': use one of {offered}.", parameter=parameter
    )


@dataclass(frozen=True)
class BBox:
    """A box in x/y order (lon/lat or easting/northing) in one SRID."""

    minx: float
    miny: float
    maxx: float
    maxy: float
    srid: int

    @property
    def values(self) -> tuple[float, float, float, float]:
        return self.minx, self.miny, self.maxx, self.maxy


def parse_bbox(text: str, crs: CRS, *, parameter: str = "bbox") -> list[BBox]:
    """Parse ``bbox`` in the axis order of ``crs``; two boxes when it spans the antimeridian.

    Part 1 /req/core/fc-bbox-definition: 4 or 6 numbers, lower corner then upper corner, each in
    the CRS's axis order (lat,lon for EPSG:4326); the vertical values of 6 are ignored.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 6):
        raise InvalidParameter(
            f"'{parameter}' needs 4 or 6 comma-separated numbers, not {len(parts)}.",
            parameter=parameter,
        )
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InvalidParameter(
            f"'{parameter}' must contain numbers only: '{text}'.", parameter=parameter
        ) from None
    if not all(math.isfinite(n) for n in numbers):
        raise InvalidParameter(f"'{parameter}' must contain finite numbers.", parameter=parameter)
    a1, a2, b1, b2 = (
        numbers if len(numbers) == 4 else (numbers[0], numbers[1], numbers[3], numbers[4])
    )
    minx, miny, maxx, maxy = (a2, a1, b2, b1) if crs.lat_lon else (a1, a2, b1, b2)
    if miny > maxy:
        raise InvalidParameter(
            f"'{parameter}': the lower corner's {'latitude' if crs.geographic else 'northing'} "
            "is above the upper corner's.",
            parameter=parameter,
        )
    if crs.geographic:
        if not (-90 <= miny <= 90 and -90 <= maxy <= 90):
            raise InvalidParameter(
                f"'{parameter}': latitudes must lie within -90..90 (axis order of {crs.uri}).",
                parameter=parameter,
            )
        if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
            raise InvalidParameter(
                f"'{parameter}': longitudes must lie within -180..180 (axis order of {crs.uri}).",
                parameter=parameter,
            )
        if minx > maxx:  # spans the antimeridian (Part 1, 7.15.3): split in two
            return [
                BBox(minx, miny, 180.0, maxy, crs.srid),
                BBox(-180.0, miny, maxx, maxy, crs.srid),
            ]
    elif minx > maxx:
        raise InvalidParameter(
            f"'{parameter}': the lower corner's easting is right of the upper corner's.",
            parameter=parameter,
        )
    return [BBox(minx, miny, maxx, maxy, crs.srid)]


# --- moving boxes between CRSs (index pre-filters) ----------------------------------------

_WORLD = (-180.0, -90.0, 180.0, 90.0)


# EPSG 'VN-2000 to WGS 84 (2)', the official shift (Decision 05/2007/QĐ-BTNMT), in the
# position-vector form of TOWGS84. PROJ would otherwise pick 'VN-2000 to WGS 84 (1)', about
# 0.8 m away in the city; migration 0006 makes PostGIS use these parameters too.
VN2000_TOWGS84 = (
    "-191.90441429,-39.30318279,-111.45032835,0.00928836,-0.01975479,0.00427372,0.252906278"
)
VN2000_SRIDS = frozenset({*range(9205, 9219), 3405, 3406, 4756})


@lru_cache(maxsize=64)
def pyproj_crs(srid: int):
    """The pyproj CRS of an EPSG code; VN-2000 ones carry the official datum shift."""
    import pyproj

    crs = pyproj.CRS.from_epsg(srid)
    if srid not in VN2000_SRIDS:
        return crs
    with warnings.catch_warnings():  # PROJ strings are lossy in general; these are TM/UTM/longlat
        warnings.simplefilter("ignore", UserWarning)
        proj4 = crs.to_proj4().replace("+type=crs", "").strip()
    return pyproj.CRS.from_proj4(f"{proj4} +towgs84={VN2000_TOWGS84}")


@lru_cache(maxsize=64)
def transformer(src: int, dst: int):
    """A (lon, lat)-ordered transformer between EPSG codes, as PostGIS transforms them."""
    import pyproj

    return pyproj.Transformer.from_crs(pyproj_crs(src), pyproj_crs(dst), always_xy=True)


_transformer = transformer


@lru_cache(maxsize=64)
def safe_lonlat(srid: int) -> tuple[float, float, float, float]:
    """Where transforms into ``srid`` are meaningful (lon/lat): clipping there first keeps a
    world-sized box from folding into nonsense (a TM-3 zone maps lon ±180 onto a sliver)."""
    if srid == 4326:
        return _WORLD
    if srid == 3857:
        return (-180.0, -85.06, 180.0, 85.06)
    import pyproj

    try:
        area = pyproj.CRS.from_epsg(srid).area_of_use
    except pyproj.exceptions.CRSError:
        area = None
    if area is None:
        return _WORLD
    margin = 5.0  # data a little outside the official area of use is still served
    return (
        max(-180.0, area.west - margin),
        max(-90.0, area.south - margin),
        min(180.0, area.east + margin),
        min(90.0, area.north + margin),
    )


def _finite(values: tuple[float, ...]) -> bool:
    return all(math.isfinite(v) for v in values)


def to_lonlat(
    bounds: tuple[float, float, float, float], srid: int
) -> tuple[float, float, float, float]:
    """Bounds in lon/lat (densified edges); ValueError when outside the CRS's domain."""
    if srid == 4326:
        return bounds
    try:
        out = _transformer(srid, 4326).transform_bounds(*bounds, densify_pts=21)
    except Exception as exc:  # pyproj raises ProjError for points outside the projection
        raise ValueError(str(exc)) from None
    if not _finite(out):
        raise ValueError("outside the area where the CRS is defined")
    return out


def to_lonlat_or_none(
    bounds: tuple[float, float, float, float], srid: int
) -> tuple[float, float, float, float] | None:
    """Like :func:`to_lonlat`, None instead of an error."""
    try:
        return to_lonlat(bounds, srid)
    except ValueError:
        return None


def prefilter_bounds(
    bounds: tuple[float, float, float, float], src: int, dst: int
) -> tuple[float, float, float, float] | None:
    """A box in ``dst`` that contains ``bounds`` (given in ``src``), padded, for ``&&``.

    None when nothing of the box lies where ``dst`` is meaningful. Only an index pre-filter:
    the exact test runs in PostGIS, so a few metres of padding absorb any difference between
    PROJ's pipeline here and PostGIS's. ValueError when ``bounds`` cannot be placed on Earth.
    """
    if src == dst:
        return bounds
    lon0, lat0, lon1, lat1 = to_lonlat(bounds, src)
    w, s, e, n = safe_lonlat(dst)
    lon0, lat0, lon1, lat1 = max(lon0, w), max(lat0, s), min(lon1, e), min(lat1, n)
    if lon0 > lon1 or lat0 > lat1:
        return None
    if dst == 4326:
        pad = 1e-4
        return (lon0 - pad, lat0 - pad, lon1 + pad, lat1 + pad)
    try:
        out = _transformer(4326, dst).transform_bounds(lon0, lat0, lon1, lat1, densify_pts=21)
    except Exception:
        return None
    if not _finite(out):
        return None
    pad = 10.0
    return (out[0] - pad, out[1] - pad, out[2] + pad, out[3] + pad)
