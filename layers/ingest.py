"""Reading department uploads: format detection, archive safety, streaming record batches.

Files are read in batches (GDAL through pyogrio/Arrow, CSV with the csv module), so a large
upload never needs to fit in memory. Rows come out as dicts of raw attribute values plus the
geometry as WKB in the file's own CRS.
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyogrio.raw import open_arrow

from ioc.errors import InvalidParameter, UploadTooLarge
from layers import upload_check

# GDAL never reaches the network or a file an upload names (see layers/upload_check.py).
upload_check.harden_gdal()

FORMATS = ("geojson", "shapefile", "gpkg", "csv", "kml")
_EXTENSIONS = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".zip": "zip",
    ".gpkg": "gpkg",
    ".csv": "csv",
    ".kml": "kml",
    ".kmz": "zip",
}
LON_NAMES = ("lon", "lng", "long", "longitude", "kinh_do", "kinhdo")
LAT_NAMES = ("lat", "latitude", "vi_do", "vido")
X_NAMES = ("x", "toa_do_x", "x_vn2000")
Y_NAMES = ("y", "toa_do_y", "y_vn2000")


@dataclass(frozen=True)
class IngestLimits:
    """Size limits of one upload."""

    max_bytes: int = 1 << 30
    max_features: int = 2_000_000
    max_uncompressed: int = 4 << 30
    max_ratio: int = 200  # compression ratio beyond which a zip member is treated as a bomb


@dataclass
class Source:
    """An opened upload: where GDAL reads it, its declared CRS, its fields."""

    path: str
    format: str
    crs: str | None
    fields: list[str] = field(default_factory=list)
    csv_columns: tuple[str, str] | None = None  # (x/lon column, y/lat column) for CSV
    workdir: Path | None = None  # extracted or renamed copies, removed by close()

    def close(self) -> None:
        """Remove the local copies made while checking the upload."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def file_checksum(path: Path) -> str:
    """sha256 of the uploaded bytes (recorded in the audit trail)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sniff_format(path: Path) -> str | None:
    """Guess the format from the first bytes, for uploads sent without a file name."""
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"PK"):
        return "zip"
    if head.startswith(b"SQLite format 3"):
        return "gpkg"
    if head.startswith((b"{", b"[")):
        return "geojson"
    if head.startswith(b"<") and b"kml" in head.lower():
        return "kml"
    return None


def detect_format(filename: str, explicit: str | None = None) -> str:
    """geojson, zip, gpkg, csv or kml from the parameter or the file name."""
    if explicit:
        if explicit not in FORMATS:
            raise InvalidParameter(
                f"Unknown format '{explicit}': use one of {', '.join(FORMATS)}.", parameter="format"
            )
        return "zip" if explicit == "shapefile" else explicit
    kind = _EXTENSIONS.get(Path(filename).suffix.lower())
    if kind is None:
        raise InvalidParameter(
            f"Cannot tell the format of '{filename}': upload .geojson, .zip (Shapefile), .gpkg, "
            ".csv or .kml, or pass format=.",
            parameter="format",
        )
    return kind


def open_source(
    path: Path, filename: str, *, fmt: str | None = None, limits: IngestLimits | None = None
) -> Source:
    """Check the upload and open it; raises InvalidParameter with one clear sentence.

    The format comes from ``fmt`` or the file name (the first bytes only when there is no
    name); :mod:`layers.upload_check` proves the bytes are that format, and GDAL opens them
    with that format's driver. Call :meth:`Source.close` when done (it removes extracted files).
    """
    limits = limits or IngestLimits()
    size = path.stat().st_size
    if size == 0:
        raise InvalidParameter("The uploaded file is empty.", parameter="file")
    if size > limits.max_bytes:
        raise UploadTooLarge(
            f"The upload is {size:,} bytes; the limit is {limits.max_bytes:,}.", parameter="file"
        )
    sniffed = sniff_format(path) if not fmt and "." not in filename else None
    kind = detect_format(
        filename, fmt or (None if sniffed is None else "shapefile" if sniffed == "zip" else sniffed)
    )
    if kind == "csv":
        return _open_csv(path)
    workdir = Path(tempfile.mkdtemp(prefix="ioc-ingest-"))
    try:
        source = _open_gdal(path, kind, limits, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    source.workdir = workdir
    return source


def _open_gdal(path: Path, kind: str, limits: IngestLimits, workdir: Path) -> Source:
    """Verify the file is ``kind`` and open it with that one GDAL driver."""
    if kind == "zip":
        members = upload_check.check_zip(path, limits.max_uncompressed, limits.max_ratio)
        shp = upload_check.shapefile_member(path, members)
        if shp is not None:
            # Braces let GDAL open an archive whose temporary name does not end in .zip.
            return _read_meta(f"/vsizip/{{{path}}}/{shp}", "shapefile")
        kind, path = upload_check.extract_single(path, members, workdir)
    if kind == "geojson":
        upload_check.check_geojson(path)
        # The "GeoJSON:" prefix names the driver: no other driver may claim the file.
        return _read_meta(f"GeoJSON:{path}", kind)
    # GPKG and KML have no driver prefix: a local copy with the right extension, whose
    # content was proven above, leaves GDAL no other driver that claims it.
    checks = {"gpkg": upload_check.check_gpkg, "kml": upload_check.check_kml}
    local = workdir / f"upload.{kind}"
    if path != local:
        shutil.copyfile(path, local)
    checks[kind](local)
    return _read_meta(str(local), kind)


def _read_meta(gdal_path: str, kind: str) -> Source:
    try:
        with open_arrow(gdal_path, use_pyarrow=True, batch_size=1) as (meta, _reader):
            crs, fields = meta.get("crs"), [str(f) for f in meta["fields"]]
    except (DataSourceError, DataLayerError, OSError, ValueError) as exc:
        raise InvalidParameter(
            f"The file cannot be read as {kind}: {_reason(exc, gdal_path)}.", parameter="file"
        ) from exc
    return Source(path=gdal_path, format=kind, crs=crs, fields=fields)


def _reason(exc: BaseException, gdal_path: str) -> str:
    """GDAL's first line, without server paths, shortened."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
    text = re.sub(r"(/vsizip/)?\{?/[^\s'\"]*", "the file", text.replace(gdal_path, "the file"))
    return text[:160]


def _open_csv(path: Path) -> Source:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise InvalidParameter("The CSV file has no header row.", parameter="file")
    lower = {h.strip().lower(): h for h in header}
    for xs, ys, crs in ((LON_NAMES, LAT_NAMES, "EPSG:4326"), (X_NAMES, Y_NAMES, None)):
        x = next((lower[n] for n in xs if n in lower), None)
        y = next((lower[n] for n in ys if n in lower), None)
        if x and y:
            fields = [h for h in header if h not in (x, y)]
            return Source(path=str(path), format="csv", crs=crs, fields=fields, csv_columns=(x, y))
    raise InvalidParameter(
        "The CSV needs lon/lat columns (WGS 84) or X/Y columns (with crs=, e.g. EPSG:9210).",
        parameter="file",
    )


def iter_rows(source: Source, batch_size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
    """Batches of rows: raw attribute values and ``__wkb__`` (bytes, the file's CRS)."""
    if source.format == "csv":
        yield from _iter_csv(source, batch_size)
        return
    try:
        with open_arrow(source.path, use_pyarrow=True, batch_size=batch_size) as (meta, reader):
            geom_name = next(
                (
                    f.name
                    for f in reader.schema
                    if f.metadata
                    and b"geoarrow.wkb" in f.metadata.get(b"ARROW:extension:name", b"")
                ),
                "wkb_geometry",
            )
            for batch in reader:
                rows = batch.to_pylist()
                for row in rows:
                    row["__wkb__"] = row.pop(geom_name, None)
                yield rows
    except (DataSourceError, DataLayerError, OSError) as exc:
        raise InvalidParameter(
            f"The file could not be read to the end: {_reason(exc, source.path)}.", parameter="file"
        ) from exc


def _iter_csv(source: Source, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    assert source.csv_columns is not None
    xcol, ycol = source.csv_columns
    with open(source.path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        batch: list[dict[str, Any]] = []
        for row in reader:
            try:
                x, y = float(row.pop(xcol)), float(row.pop(ycol))
                if source.crs is None and x > y:
                    # Vietnamese survey convention: X is the northing, Y the easting (VN-2000
                    # northings in Vietnam exceed every easting), so swap to easting, northing.
                    x, y = y, x
                row["__wkb__"] = shapely.to_wkb(shapely.Point(x, y))
            except (TypeError, ValueError):
                row.pop(xcol, None), row.pop(ycol, None)
                row["__wkb__"] = None
            batch.append(row)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
