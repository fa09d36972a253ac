"""Proving an upload is the format it claims before GDAL sees it, and keeping GDAL away from
anything but that one local file.

GDAL picks a driver by what a file *contains*: a VRT document named ``wards.geojson`` is opened
as a VRT and reads whatever path or URL it names. So the format is decided by the request (the
file name or ``format=``), the bytes are checked here to really be that format, and ingest then
opens them with that format's driver only. Every check reads the file itself, never follows
anything the file names, and fails with one sentence (``InvalidParameter``, a 400).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import pyogrio

from ioc.errors import InvalidParameter, UploadTooLarge

# Process-wide GDAL settings (ioc reads nothing remote through GDAL): no /vsicurl/ (and the
# cloud file systems built on it) except a name no upload can produce, no schema or xlink
# fetching in GML, no VirtualOGR tables, no remote KML styles, no Python in VRTs.
GDAL_HARDENING = {
    "CPL_VSIL_CURL_ALLOWED_FILENAME": "/vsicurl/ioc-network-access-is-disabled",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_HTTP_TIMEOUT": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "1",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_ALLOW_REMOTE_RESOURCE_TO_ACCESS_LOCAL_FILE": "NO",
    "CPL_ALLOW_VSISTDIN": "NO",
    "OGR_SQLITE_LIST_VIRTUAL_OGR": "NO",
    "GML_SKIP_RESOLVE_ELEMS": "ALL",
    "GML_DOWNLOAD_SCHEMA": "NO",
    "GML_DOWNLOAD_WFS_SCHEMA": "NO",
    "LIBKML_RESOLVE_STYLE": "NO",
    "LIBKML_EXTERNAL_STYLE": "NO",
    "GDAL_VRT_ENABLE_PYTHON": "NO",
}


def harden_gdal() -> None:
    """Apply :data:`GDAL_HARDENING` (idempotent)."""
    pyogrio.set_gdal_config_options(GDAL_HARDENING)


def refuse(sentence: str) -> InvalidParameter:
    return InvalidParameter(sentence, parameter="file")


def excerpt(value: Any, limit: int = 40) -> str:
    """A short, escaped quotation of a value for a report (never a whole row)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- GeoJSON ------------------------------------------------------------------------------

_GEOJSON_TYPES = {
    "FeatureCollection",
    "Feature",
    "Point",
    "LineString",
    "Polygon",
    "MultiPoint",
    "MultiLineString",
    "MultiPolygon",
    "GeometryCollection",
}
# Members that hold the bulk of a document: the check stops there and GDAL reads the rest.
_BULKY = {"features", "geometry", "geometries", "coordinates"}
_CRS_NAME = re.compile(
    r"(EPSG:\d{4,6}|OGC:CRS84|CRS84|urn:ogc:def:crs:(EPSG::\d{4,6}|OGC:1\.3:CRS84)"
    r"|https?://www\.opengis\.net/def/crs/(EPSG/0/\d{4,6}|OGC/1\.3/CRS84))",
    re.IGNORECASE,
)
HEAD_BYTES = 1 << 20


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _check_crs_member(value: Any) -> None:
    value = value if isinstance(value, dict) else {}
    props = value.get("properties")
    name = props.get("name") if isinstance(props, dict) else None
    if value.get("type") != "name" or not isinstance(name, str) or not _CRS_NAME.fullmatch(name):
        raise refuse(
            "The GeoJSON 'crs' member may only name a CRS code (e.g. EPSG:4326); links,"
            " files and URLs are refused."
        )


def check_geojson(path: Path) -> None:
    """The file starts as a GeoJSON object: a FeatureCollection, Feature or geometry."""
    with open(path, "rb") as handle:
        text = handle.read(HEAD_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    not_geojson = refuse(
        'The file is not GeoJSON: it must be a JSON object with "type": '
        '"FeatureCollection" (or a Feature or geometry).'
    )
    if not text.startswith("{"):
        raise not_geojson
    decoder, pos, kind, key = json.JSONDecoder(), 1, None, None
    try:
        while True:
            pos = _skip_ws(text, pos)
            if text[pos] == "}":
                break
            if text[pos] != '"':
                raise not_geojson
            # scanstring is public at run time but missing from typeshed's json.decoder.
            key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            pos = _skip_ws(text, pos)
            if text[pos] != ":":
                raise not_geojson
            if key in _BULKY:
                break
            value, pos = decoder.raw_decode(text, _skip_ws(text, pos + 1))
            if key == "type":
                kind = value
            elif key == "crs":
                _check_crs_member(value)
            pos = _skip_ws(text, pos)
            if text[pos] == ",":
                pos += 1
            elif text[pos] != "}":
                raise not_geojson
    except (IndexError, ValueError) as exc:  # ran out of the head, or not JSON
        raise not_geojson from exc
    if kind not in _GEOJSON_TYPES and not (kind is None and key in _BULKY):
        raise not_geojson


# --- GeoPackage ---------------------------------------------------------------------------

_GPKG_IDS = (0x47504B47, 0x47503130, 0x47503131)  # 'GPKG', 'GP10', 'GP11'
_RTREE = re.compile(r'CREATE\s+VIRTUAL\s+TABLE\s+"?rtree_[\w]+"?\s+USING\s+rtree\s*\(', re.I)


def check_gpkg(path: Path) -> None:
    """SQLite with the GeoPackage application id, no views and no virtual tables (the spatial
    index's rtree tables excepted). Opened read-only and immutable; extensions never load."""
    with open(path, "rb") as handle:
        header = handle.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        raise refuse("The file is not a GeoPackage (it is not an SQLite database).")
    if int.from_bytes(header[68:72], "big") not in _GPKG_IDS:
        raise refuse(
            "The file is an SQLite database but not a GeoPackage (its application id "
            "is not 'GPKG')."
        )
    uri = f"file:{quote(str(path))}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise refuse("The GeoPackage cannot be read (a damaged SQLite database).") from exc
    for kind, name, sql in rows:
        text = (sql or "").strip()
        if kind == "view":
            raise refuse(
                f"The GeoPackage holds a view ({excerpt(name)}): export the data as plain tables."
            )
        if text.upper().startswith("CREATE VIRTUAL") and not _RTREE.match(text):
            raise refuse(
                f"The GeoPackage holds a virtual table ({excerpt(name)}): only plain "
                "tables and spatial indexes are accepted."
            )


# --- KML ----------------------------------------------------------------------------------

_KML_ROOT = re.compile(rb"\s*(<\?xml[^>]*\?>)?(\s|<!--.*?-->)*<(kml:)?kml[\s>]", re.DOTALL)
_XML_ENCODING = re.compile(rb'<\?xml[^>]*encoding\s*=\s*["\']([^"\']+)["\']')
_KML_ENCODINGS = {
    b"utf-8",
    b"utf8",
    b"us-ascii",
    b"ascii",
    b"iso-8859-1",
    b"latin1",
    b"windows-1252",
}
# Markers a KML document never needs; each makes a parser or a GDAL driver reach elsewhere.
_KML_FORBIDDEN = {
    b"<!doctype": "a DTD (<!DOCTYPE>)",
    b"<!entity": "an entity declaration (<!ENTITY>)",
    b"<networklink": "a NetworkLink (a document on another server)",
    b"opengis.net/gml": "GML content",
    b"ogrvrtdatasource": "a GDAL VRT document",
}


def check_kml(path: Path) -> None:
    """UTF-8 (or Latin-1) XML whose root is <kml>, without DTD, entities or remote links."""
    with open(path, "rb") as handle:
        head = handle.read(4096).removeprefix(b"\xef\xbb\xbf")
    if b"\x00" in head:
        raise refuse("The KML must be encoded in UTF-8.")
    declared = _XML_ENCODING.match(head.lstrip())
    if declared and declared.group(1).lower() not in _KML_ENCODINGS:
        raise refuse("The KML must be encoded in UTF-8.")
    if not _KML_ROOT.match(head):
        raise refuse("The file is not KML: its root element must be <kml>.")
    keep = max(len(m) for m in _KML_FORBIDDEN)
    tail = b""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            window = (tail + chunk).lower()
            for marker, what in _KML_FORBIDDEN.items():
                if marker in window:
                    raise refuse(f"The KML holds {what}, which is refused: upload plain KML.")
            tail = window[-keep:]


# --- zip archives -------------------------------------------------------------------------

SHAPEFILE_PARTS = {
    ".shp",
    ".shx",
    ".dbf",
    ".prj",
    ".cpg",
    ".qix",
    ".sbn",
    ".sbx",
    ".xml",
    ".qmd",
    ".fix",
}
SINGLE_FILES = {".geojson": "geojson", ".json": "geojson", ".kml": "kml", ".gpkg": "gpkg"}
_ARCHIVES = {".zip", ".kmz", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz", ".zst"}
_SHP_MAGIC = b"\x00\x00\x27\x0a"
_DBF_VERSIONS = {0x02, 0x03, 0x04, 0x05, 0x30, 0x31, 0x32, 0x43, 0x63, 0x83, 0x8B, 0xCB, 0xF5, 0xFB}


def _is_junk(name: str) -> bool:
    """macOS resource forks: harmless copies nobody opens."""
    return name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._")


def check_zip(path: Path, max_uncompressed: int, max_ratio: int) -> list[zipfile.ZipInfo]:
    """Every entry a plain file (or folder) inside the archive, of an expected kind, not an
    archive itself, not a zip bomb. Returns the data entries (folders and junk left out)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise refuse("The upload is not a valid zip archive.") from exc
    total, seen, data = 0, set(), []
    for member in members:
        name = member.filename.replace("\\", "/")
        parts = PurePosixPath(name)
        if (
            name.startswith("/")
            or parts.is_absolute()
            or ".." in parts.parts
            or ":" in name.split("/")[0]
        ):
            raise refuse(f"The zip entry {excerpt(member.filename)} points outside the archive.")
        kind = stat.S_IFMT(member.external_attr >> 16)  # 0 when the archiver set no type
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise refuse(
                f"The zip entry {excerpt(member.filename)} is a link or device, not a "
                "file: refused."
            )
        if member.flag_bits & 0x1:
            raise refuse("The zip archive is encrypted: send it without a password.")
        if name.lower() in seen:
            raise refuse(f"The zip holds {excerpt(member.filename)} twice.")
        seen.add(name.lower())
        total += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if total > max_uncompressed or (member.file_size > 1 << 20 and ratio > max_ratio):
            raise UploadTooLarge(
                "The zip archive expands far beyond its size (a zip bomb?): refused.",
                parameter="file",
            )
        if member.is_dir() or _is_junk(name):
            continue
        suffix = parts.suffix.lower()
        if suffix in _ARCHIVES:
            raise refuse(
                f"The zip holds another archive ({excerpt(member.filename)}); nested "
                "archives are refused."
            )
        if suffix not in SHAPEFILE_PARTS and suffix not in SINGLE_FILES:
            raise refuse(
                f"The zip entry {excerpt(member.filename)} is not part of a Shapefile, "
                "GeoJSON, KML or GeoPackage: refused."
            )
        data.append(member)
    return data


def shapefile_member(path: Path, members: list[zipfile.ZipInfo]) -> str | None:
    """The .shp of a zipped Shapefile, checked with its .shx and .dbf; None if there is no .shp."""
    by_name = {m.filename.lower(): m.filename for m in members}
    shps = [m.filename for m in members if m.filename.lower().endswith(".shp")]
    if not shps:
        return None
    if len(shps) > 1 or len(members) > len(
        [m for m in members if PurePosixPath(m.filename).suffix.lower() in SHAPEFILE_PARTS]
    ):
        raise refuse(
            f"The zip must hold one Shapefile and nothing else; found {len(shps)} .shp "
            "files or other kinds of file."
        )
    shp = shps[0]
    stem = shp[:-4]
    needed = {".shx": "its index", ".dbf": "its attribute table"}
    with zipfile.ZipFile(path) as archive:
        for suffix, role in needed.items():
            part = by_name.get((stem + suffix).lower())
            if part is None:
                raise refuse(
                    f"The Shapefile '{PurePosixPath(shp).name}' has no "
                    f"{PurePosixPath(stem).name}{suffix} ({role}): add it to the zip."
                )
            with archive.open(part) as handle:
                head = handle.read(4)
            if (suffix == ".shx" and head != _SHP_MAGIC) or (
                suffix == ".dbf" and (not head or head[0] not in _DBF_VERSIONS)
            ):
                raise refuse(f"{excerpt(part)} is not a Shapefile {suffix} file.")
        with archive.open(shp) as handle:
            if handle.read(4) != _SHP_MAGIC:
                raise refuse(f"{excerpt(shp)} is not a Shapefile .shp file.")
    return shp


def extract_single(path: Path, members: list[zipfile.ZipInfo], workdir: Path) -> tuple[str, Path]:
    """The one GeoJSON, KML or GeoPackage of a zip, copied out to a local file for checking."""
    if len(members) != 1 or PurePosixPath(members[0].filename).suffix.lower() not in SINGLE_FILES:
        raise refuse(
            "The zip must hold exactly one Shapefile (.shp with its .shx and .dbf), "
            f"GeoJSON, KML or GeoPackage file; found {len(members)} files."
        )
    member = members[0]
    suffix = PurePosixPath(member.filename).suffix.lower()
    target = workdir / f"upload{suffix}"
    with zipfile.ZipFile(path) as archive, archive.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return SINGLE_FILES[suffix], target
