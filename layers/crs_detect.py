"""Working out the CRS of an uploaded file, with VN-2000 recognised in its common forms.

Department files often carry VN-2000 as a custom ``.prj`` that omits the datum shift (no
TOWGS84), or even labels the datum WGS 84 while using a VN-2000 TM-3 projection. Taken
literally, such data lands ~300 m off. We map every VN-2000 form to its EPSG code so that
PostGIS applies the official 'VN-2000 to WGS 84 (2)' shift stored in spatial_ref_sys.
"""

from __future__ import annotations

import re

from pyproj import CRS
from pyproj.exceptions import CRSError

from ioc.errors import InvalidParameter

# VN-2000 / TM-3 zones: central meridian → EPSG code (EPSG:9205–9218).
TM3_ZONES: dict[float, int] = {
    103.0: 9205,
    104.0: 9206,
    104.5: 9207,
    104.75: 9208,
    105.5: 9209,
    105.75: 9210,
    106.0: 9211,
    106.25: 9212,
    106.5: 9213,
    107.0: 9214,
    107.25: 9215,
    107.5: 9216,
    108.25: 9217,
    108.5: 9218,
}
# VN-2000 / UTM zones 48N and 49N.
UTM_ZONES = {105.0: 3405, 111.0: 3406}
VN2000_GEOGRAPHIC = 4756
_VN_DATUM_NAMES = ("vn-2000", "vn_2000", "vietnam_2000", "vietnam 2000", "vn2000")

_NAMES_ELSEWHERE = re.compile(r"\binit\s*=|^\s*(/|~|\.\.?/|file:|https?:|ftp:)", re.IGNORECASE)

HOW_TO_FIX = (
    "say which CRS the file uses: add a .prj to the Shapefile, or pass crs=EPSG:9210 "
    "(VN-2000 / TM-3 105°45', the city's survey CRS) or crs=EPSG:4326"
)


def _param(crs: CRS, *names: str) -> float | None:
    op = crs.coordinate_operation
    if op is None:
        return None
    for param in op.params:
        if param.name.lower() in names:
            return float(param.value)
    return None


def _is_vn2000_datum(crs: CRS) -> bool:
    datum = (crs.datum.name if crs.datum else "").lower()
    return any(name in datum for name in _VN_DATUM_NAMES)


def vn2000_epsg(crs: CRS) -> int | None:
    """The EPSG code of a VN-2000 CRS given in any common form, or None if it is not VN-2000."""
    if crs.is_geographic:
        return VN2000_GEOGRAPHIC if _is_vn2000_datum(crs) else None
    if not crs.is_projected:
        return None
    method = (crs.coordinate_operation.method_name if crs.coordinate_operation else "").lower()
    if "transverse mercator" not in method:
        return None
    lon0 = _param(crs, "longitude of natural origin", "central_meridian")
    k = _param(crs, "scale factor at natural origin", "scale_factor")
    x0 = _param(crs, "false easting", "false_easting")
    if lon0 is None or k is None or x0 != 500000:
        return None
    if abs(k - 0.9999) < 1e-9 and lon0 in TM3_ZONES:
        # k = 0.9999 on these meridians is the Vietnamese TM-3 grid whatever the datum label says.
        return TM3_ZONES[lon0]
    if abs(k - 0.9996) < 1e-9 and lon0 in UTM_ZONES and _is_vn2000_datum(crs):
        return UTM_ZONES[lon0]
    return None


def resolve_srid(wkt_or_code: str | None, *, explicit: str | None = None) -> int:
    """The SRID to load a file with: an explicit ``crs`` parameter wins over the file's own."""
    source = explicit or wkt_or_code
    if not source:
        raise InvalidParameter(
            f"The file's CRS cannot be determined: {HOW_TO_FIX}.", parameter="crs"
        )
    normalised = _normalise(source)
    if _NAMES_ELSEWHERE.search(normalised):
        # PROJ reads "+init=FILE:ID" from any path, and a URL is no CRS: never follow either.
        raise InvalidParameter(
            f"The CRS must be given by code or definition, not by a file or URL: {HOW_TO_FIX}.",
            parameter="crs",
        )
    try:
        crs = CRS.from_user_input(normalised)
    except CRSError as exc:
        raise InvalidParameter(
            f"Unknown CRS '{source[:80]}': {HOW_TO_FIX}.", parameter="crs"
        ) from exc
    vn = vn2000_epsg(crs)
    if vn is not None:
        return vn
    code = crs.to_epsg(min_confidence=70)
    if code is None:
        raise InvalidParameter(
            f"The CRS '{crs.name}' has no EPSG code ioc can use: {HOW_TO_FIX}.", parameter="crs"
        )
    return code


def _normalise(value: str) -> str:
    value = value.strip()
    for prefix in ("http://www.opengis.net/def/crs/EPSG/0/", "urn:ogc:def:crs:EPSG::"):
        if value.startswith(prefix):
            return "EPSG:" + value[len(prefix) :]
    if value in ("CRS84", "http://www.opengis.net/def/crs/OGC/1.3/CRS84", "OGC:CRS84"):
        return "EPSG:4326"
    return value
