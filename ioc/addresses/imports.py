"""Loading the national digital-address platform into the registry.

The platform is reached through one boundary, :class:`NationalAddressService`. Its offline
implementation, :class:`ExportFile`, reads an export (CSV, or GeoJSON points, optionally gzipped);
an online client of the platform's service would implement the same protocol. Every record is
validated; good ones are upserted into ``ioc.addresses`` in one transaction and bad ones are
reported with their row number and the reason, never silently dropped.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from ioc.addresses.index import (
    UPSERT_SQL,
    IndexReport,
    _package_units,
    finish_registry_change,
    ward_fill_sql,
)
from ioc.addresses.normalise import fold
from ioc.addresses.registry import (
    CITY_BBOX,
    WARDS_2019_LAYER,
    WARDS_LAYER,
    AddressSettings,
    _layer,
)
from ioc.catalog.layers import Catalog, load_catalog_sync
from ioc.db.connection import PgConn
from ioc.db.identifiers import quote_ident
from ioc.errors import InvalidParameter

FIELDS = (
    "code",
    "house_number",
    "street",
    "ward_code",
    "ward_code_2019",
    "building_id",
    "parcel_id",
    "valid_from",
    "valid_to",
    "lon",
    "lat",
)
# Column names accepted in exports (compared folded: no diacritics, lower case, '_' for spaces).
ALIASES: dict[str, tuple[str, ...]] = {
    "code": ("code", "ma_dia_chi", "ma_dia_chi_so", "ma_dinh_danh", "madiachi", "address_code"),
    "house_number": ("house_number", "so_nha", "house_no", "housenumber"),
    "street": ("street", "ten_duong", "duong", "street_name"),
    "ward_code": ("ward_code", "ma_phuong_xa", "ma_xa", "ward_code_2025"),
    "ward_code_2019": ("ward_code_2019", "ma_phuong_xa_cu", "old_ward_code"),
    "building_id": ("building_id", "ma_cong_trinh"),
    "parcel_id": ("parcel_id", "ma_thua_dat", "thua_dat"),
    "valid_from": ("valid_from", "hieu_luc_tu", "ngay_hieu_luc"),
    "valid_to": ("valid_to", "hieu_luc_den", "ngay_het_hieu_luc"),
    "lon": ("lon", "lng", "long", "longitude", "kinh_do", "x"),
    "lat": ("lat", "latitude", "vi_do", "y"),
}
MAX_TEXT = 200


@dataclass(frozen=True)
class AddressRecord:
    """One address as the platform gives it (strings or None), with its row in the source."""

    row: int
    values: dict[str, Any]


class NationalAddressService(Protocol):
    """The national digital-address platform, as ioc uses it.

    ``source`` names where records come from (stored with each address). ``records`` yields the
    addresses changed since a date (all without one); ``lookup`` returns one address by code.
    """

    source: str

    def records(self, since: date | None = None) -> Iterator[AddressRecord]: ...

    def lookup(self, code: str) -> AddressRecord | None: ...


def _header_map(names: list[str]) -> dict[str, str]:
    """Export column name -> registry field, by the accepted aliases."""
    folded = {fold(n).replace(" ", "_"): n for n in names}
    mapping = {}
    for field_name, aliases in ALIASES.items():
        for alias in aliases:
            if alias in folded:
                mapping[folded[alias]] = field_name
                break
    return mapping


class ExportFile:
    """Offline implementation of the platform: an export file (.csv, .geojson, .json, + .gz)."""

    def __init__(self, path: Path | str, source: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidParameter(
                f"Không tìm thấy tệp {self.path} / the file {self.path} does not exist.",
                parameter="file",
            )
        self.source = source or f"export:{self.path.name}"
        suffixes = [s.lower() for s in self.path.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes = suffixes[:-1]
        self.kind = "csv" if suffixes and suffixes[-1] in (".csv", ".txt") else "geojson"
        if not suffixes or suffixes[-1] not in (".csv", ".txt", ".geojson", ".json"):
            raise InvalidParameter(
                "Chỉ nhận tệp CSV hoặc GeoJSON / only CSV or GeoJSON exports are read.",
                parameter="file",
            )

    def _open(self) -> IO[str]:
        if self.path.suffix.lower() == ".gz":
            return io.TextIOWrapper(gzip.open(self.path), encoding="utf-8-sig")
        return self.path.open(encoding="utf-8-sig", newline="")

    def records(self, since: date | None = None) -> Iterator[AddressRecord]:
        """Every record of the file (those valid from ``since`` on, when given)."""
        reader = self._csv() if self.kind == "csv" else self._geojson()
        for record in reader:
            if since is not None:
                start = parse_date(record.values.get("valid_from"))
                if isinstance(start, date) and start < since:
                    continue
            yield record

    def lookup(self, code: str) -> AddressRecord | None:
        return next(
            (r for r in self.records() if (r.values.get("code") or "").strip() == code), None
        )

    def _csv(self) -> Iterator[AddressRecord]:
        with self._open() as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                return
            mapping = _header_map(header)
            if "code" not in mapping.values():
                raise InvalidParameter(
                    "Tệp thiếu cột mã địa chỉ ('code') / the export has no 'code' column.",
                    parameter="file",
                )
            for n, cells in enumerate(reader, start=2):
                if not any(c.strip() for c in cells):
                    continue
                values = dict.fromkeys(FIELDS)
                for name, cell in zip(header, cells, strict=False):
                    if name in mapping:
                        values[mapping[name]] = cell.strip() or None
                yield AddressRecord(n, values)

    def _geojson(self) -> Iterator[AddressRecord]:
        with self._open() as handle:
            try:
                doc = json.load(handle)
            except json.JSONDecodeError as exc:
                raise InvalidParameter(
                    f"Tệp GeoJSON không đọc được / the GeoJSON cannot be read: "
                    f"{exc.msg} at line {exc.lineno}.",
                    parameter="file",
                ) from None
        features = doc.get("features") if isinstance(doc, dict) else None
        if not isinstance(features, list):
            raise InvalidParameter(
                "Tệp không phải FeatureCollection / the file is not a GeoJSON FeatureCollection.",
                parameter="file",
            )
        for n, feature in enumerate(features, start=1):
            props = (feature or {}).get("properties") or {}
            mapping = _header_map(list(props))
            values = dict.fromkeys(FIELDS)
            for name, field_name in mapping.items():
                value = props[name]
                values[field_name] = None if value in (None, "") else str(value).strip()
            geometry = (feature or {}).get("geometry") or {}
            coords = geometry.get("coordinates")
            if geometry.get("type") == "Point" and isinstance(coords, list) and len(coords) >= 2:
                values["lon"], values["lat"] = str(coords[0]), str(coords[1])
            elif geometry:
                values["lon"] = values["lat"] = None
                values["_geometry"] = geometry.get("type")
            yield AddressRecord(n, values)


# --- validation ----------------------------------------------------------------------------


def parse_date(text: Any) -> date | str | None:
    """ISO 'YYYY-MM-DD' (or a timestamp) or Vietnamese 'DD/MM/YYYY'; the text back when invalid."""
    if text in (None, ""):
        return None
    text = str(text).strip()
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text[:10], pattern).date()
        except ValueError:
            continue
    return text


@dataclass
class Rejected:
    """A record not imported, and why (Vietnamese first, English second)."""

    row: int
    code: str | None
    reason: str


@dataclass
class ImportReport:
    """The outcome of an import: counts and every rejected row."""

    source: str
    read: int = 0
    imported: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    dry_run: bool = False
    index: IndexReport | None = None

    def write_rejected(self, path: Path) -> None:
        """The rejected rows as CSV: row, code, reason."""
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "code", "reason"])
            for r in self.rejected:
                writer.writerow([r.row, r.code or "", r.reason])


def validate_record(
    record: AddressRecord, pattern: re.Pattern[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """(clean values, None) or (None, reason) for one record; positions are checked later in SQL
    against the ward polygons."""
    v = record.values
    code = (v.get("code") or "").strip()
    if not code:
        return None, "thiếu mã địa chỉ / missing code"
    if not pattern.search(code):
        return None, f"mã không hợp lệ / invalid code (expected {pattern.pattern})"
    if v.get("_geometry"):
        return None, f"hình học {v['_geometry']} không phải điểm / geometry is not a Point"
    try:
        lon, lat = float(v.get("lon") or "nan"), float(v.get("lat") or "nan")
    except ValueError:
        return None, "toạ độ không phải số / lon/lat are not numbers"
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return None, "thiếu toạ độ / missing lon/lat"
    if not (CITY_BBOX[0] <= lon <= CITY_BBOX[2] and CITY_BBOX[1] <= lat <= CITY_BBOX[3]):
        return None, f"toạ độ ({lon}, {lat}) ngoài thành phố / position outside the city"
    dates = {}
    for name in ("valid_from", "valid_to"):
        parsed = parse_date(v.get(name))
        if isinstance(parsed, str):
            return None, f"ngày {name} '{parsed[:20]}' không hợp lệ / invalid {name} date"
        dates[name] = parsed
    if dates["valid_from"] and dates["valid_to"] and dates["valid_to"] < dates["valid_from"]:
        return None, "valid_to trước valid_from / valid_to is before valid_from"
    for name in ("house_number", "street", "building_id", "parcel_id"):
        if v.get(name) and len(v[name]) > MAX_TEXT:
            return None, f"{name} dài quá {MAX_TEXT} ký tự / {name} is too long"
    for name in ("ward_code", "ward_code_2019"):
        if v.get(name) and not re.fullmatch(r"\d{5}", v[name]):
            return None, f"{name} '{v[name][:20]}' không phải mã 5 số / is not a 5-digit code"
    clean = {
        k: v.get(k)
        for k in (
            "house_number",
            "street",
            "ward_code",
            "ward_code_2019",
            "building_id",
            "parcel_id",
        )
    }
    clean.update(code=code, lon=lon, lat=lat, **dates)
    return clean, None


STAGE_COLUMNS = ("row_no", *FIELDS)


def _copy_text(rows: list[tuple[int, dict[str, Any]]]) -> io.StringIO:
    def cell(value: Any) -> str:
        if value is None:
            return r"\N"
        text = value.isoformat() if isinstance(value, date) else str(value)
        return (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )

    buffer = io.StringIO()
    for row_no, v in rows:
        buffer.write(
            "\t".join(cell(x) for x in (row_no, *(v[c] for c in STAGE_COLUMNS[1:]))) + "\n"
        )
    buffer.seek(0)
    return buffer


def _known_ward_codes(cur, catalog: Catalog) -> list[str]:
    layer = _layer(catalog, WARDS_LAYER)
    codes = set(_package_units()[0])
    if layer is not None and layer.attribute("ward_code") is not None:
        cur.execute(f"SELECT DISTINCT ward_code::text FROM {layer.table_sql}")
        codes |= {r[0] for r in cur.fetchall()}
    return sorted(codes)


def _validated(
    service: NationalAddressService,
    since: date | None,
    pattern: re.Pattern[str],
    report: ImportReport,
    progress: Callable[[int], None] | None,
) -> list[tuple[int, dict[str, Any]]]:
    """The clean records as (row, values); the others (and repeated codes) go to the report."""
    good: list[tuple[int, dict[str, Any]]] = []
    first_row: dict[str, int] = {}
    for record in service.records(since):
        report.read += 1
        clean, reason = validate_record(record, pattern)
        if clean is not None and clean["code"] in first_row:
            first = first_row[clean["code"]]
            clean = None
            reason = f"mã trùng với dòng {first} / duplicate code, first at row {first}"
        if clean is None:
            report.rejected.append(Rejected(record.row, record.values.get("code"), reason or ""))
        else:
            first_row[clean["code"]] = record.row
            good.append((record.row, clean))
        if progress and report.read % 10_000 == 0:
            progress(report.read)
    return good


def _stage(cur, good: list[tuple[int, dict[str, Any]]], source: str) -> None:
    """The clean records in a temporary table (dropped at commit), with their points."""
    cur.execute(
        "CREATE TEMP TABLE import_stage (row_no integer, code text, house_number text,"
        " street text, ward_code text, ward_code_2019 text, building_id text,"
        " parcel_id text, valid_from date, valid_to date, lon float8, lat float8,"
        " source text, geom geometry(Point, 4326)) ON COMMIT DROP"
    )
    cur.copy_expert(
        f"COPY import_stage ({', '.join(quote_ident(c) for c in STAGE_COLUMNS)}) FROM STDIN",
        _copy_text(good),
    )
    cur.execute(
        "UPDATE import_stage SET source = %s, geom = ST_SetSRID(ST_MakePoint(lon, lat), 4326)",
        (source,),
    )


def _reject_unknown_wards(cur, catalog: Catalog, report: ImportReport) -> None:
    """Staged records that name a ward code the city does not have are rejected."""
    cur.execute(
        "DELETE FROM import_stage WHERE ward_code IS NOT NULL"
        " AND NOT ward_code = ANY(%s) RETURNING row_no, code, ward_code",
        (_known_ward_codes(cur, catalog),),
    )
    for row_no, code, ward in cur.fetchall():
        report.rejected.append(
            Rejected(row_no, code, f"mã phường/xã {ward} không tồn tại / unknown ward code {ward}")
        )


def _place_in_wards(cur, catalog: Catalog, report: ImportReport) -> None:
    """Missing ward codes (current and 2019) from the point; records outside every ward are
    rejected."""
    for column, layer_id in (("ward_code", WARDS_LAYER), ("ward_code_2019", WARDS_2019_LAYER)):
        fill = ward_fill_sql(catalog, "import_stage", column, layer_id)
        if fill:
            cur.execute(fill)
    cur.execute("DELETE FROM import_stage WHERE ward_code IS NULL RETURNING row_no, code")
    for row_no, code in cur.fetchall():
        report.rejected.append(
            Rejected(
                row_no,
                code,
                "vị trí không thuộc phường/xã nào của thành phố / position outside every ward",
            )
        )


def _upsert(cur) -> int:
    """The staged records into the registry; how many."""
    cur.execute(UPSERT_SQL.format(stage="import_stage"))
    cur.execute("SELECT count(*) FROM import_stage")
    return cur.fetchone()[0]


def import_addresses(
    conn: PgConn,
    service: NationalAddressService,
    *,
    settings: AddressSettings,
    catalog: Catalog | None = None,
    since: date | None = None,
    dry_run: bool = False,
    link: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate every record of the service and upsert the good ones into the registry (one
    transaction); then rebuild the vocabulary and (``link``) relink the point layers."""
    catalog = catalog if catalog is not None else load_catalog_sync(conn)
    report = ImportReport(source=service.source, dry_run=dry_run)
    good = _validated(service, since, re.compile(settings.code_pattern), report, progress)
    try:
        with conn.cursor() as cur:
            _stage(cur, good, service.source)
            _reject_unknown_wards(cur, catalog, report)
            _place_in_wards(cur, catalog, report)
            report.imported = _upsert(cur)
        if dry_run:
            conn.rollback()
        else:
            conn.commit()
    except BaseException:
        conn.rollback()
        raise
    report.rejected.sort(key=lambda r: r.row)
    if not dry_run and report.imported:
        report.index = finish_registry_change(
            conn, catalog, settings, {"loaded": report.imported}, link=link
        )
    return report
