"""Staging and validating an upload (steps 1 and 2 of ``layers.publish``).

The upload is streamed into an UNLOGGED table in schema ``staging``; its rows are checked there
(attribute types and required fields against the catalog, geometry type, validity, the city's
extent, duplicate ids) and each rejected row gets a reason. Nothing here touches the live table.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from ioc.catalog.layers import Attribute, Layer
from ioc.db.connection import PgConn
from ioc.db.identifiers import qualified, quote_ident
from ioc.db.tables import PG_TYPES
from ioc.errors import UploadRejected, UploadTooLarge
from layers import ingest
from layers.upload_check import excerpt

# The 2025 city (with Bình Dương, Bà Rịa–Vũng Tàu and Côn Đảo) plus a small margin, lon/lat.
CITY_EXTENT = (105.95, 8.45, 107.75, 11.65)
_IGNORED_FIELDS = {"fid", "ogc_fid", "objectid", "id", "gid", "shape_leng", "shape_area"}
_MAX_REASONS = 50


@dataclass
class PublishOptions:
    """How to treat an upload."""

    mode: Literal["replace", "append"] = "replace"
    crs: str | None = None
    format: str | None = None
    invalid: Literal["reject", "repair"] = "reject"
    partial: bool = False
    ignore_unknown: bool = False


@dataclass
class PublishReport:
    """What happened to an upload (the API's response body)."""

    layer: str
    mode: str
    source_srid: int | None = None
    received: int = 0
    accepted: int = 0
    repaired: int = 0
    rejected: int = 0
    reasons: list[dict[str, Any]] = field(default_factory=list)
    version: int | None = None
    feature_count: int | None = None
    checksum: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading and coercing -----------------------------------------------------------------


_KIND_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "date": "a date (YYYY-MM-DD)",
    "timestamp": "a timestamp (ISO 8601)",
    "text": "text",
}
_TRUE = ("true", "1", "yes", "có", "t", "y")
_FALSE = ("false", "0", "no", "không", "f", "n")


def _coerce(attr: Attribute, value: Any) -> Any:
    """The value as the attribute's type, None for empty; ValueError with a reason that quotes
    only a short excerpt of the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return _convert(attr.type, value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"'{attr.name}' must be {_KIND_WORDS.get(attr.type, attr.type)}, not {excerpt(value)}"
        ) from exc


def _convert(kind: str, value: Any) -> Any:
    if kind in ("integer", "number") and isinstance(value, bool):
        raise ValueError(kind)
    if kind == "integer":
        number = float(value) if not isinstance(value, int) else value
        if number != int(number):
            raise ValueError(kind)
        return int(number)
    if kind == "number":
        return float(value)
    if kind == "boolean":
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(kind)
    if kind == "date":
        return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    if kind == "timestamp":
        return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return str(value)


def map_fields(source_fields: list[str], layer: Layer, ignore_unknown: bool) -> dict[str, str]:
    """File field → attribute name; Shapefile's 10-character names match by prefix."""
    names = {a.name.lower(): a.name for a in layer.attributes}
    mapping, unknown = {}, []
    for name in source_fields:
        key = name.lower()
        target = names.get(key)
        if target is None and len(name) == 10:
            candidates = [n for k, n in names.items() if k.startswith(key)]
            target = candidates[0] if len(candidates) == 1 else None
        if target:
            mapping[name] = target
        elif key not in _IGNORED_FIELDS:
            unknown.append(name)
    if unknown and not ignore_unknown:
        shown = [excerpt(name) for name in unknown[:10]]
        raise UploadRejected(
            f"The file has fields that layer '{layer.id}' does not know: {', '.join(shown)}"
            " (rename them to the layer's attributes or pass ignore_unknown=true).",
            {"unknown_fields": shown},
        )
    missing = [a.name for a in layer.attributes if a.required and a.name not in mapping.values()]
    if missing:
        raise UploadRejected(
            f"Required field(s) missing from the file: {', '.join(missing)}.",
            {"missing_fields": missing},
        )
    return mapping


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


# --- staging ------------------------------------------------------------------------------


def create_staging(cur, layer: Layer) -> str:
    """A fresh UNLOGGED staging table shaped like the layer, plus bookkeeping columns."""
    name = f"{layer.id[:40]}__{secrets.token_hex(4)}"
    table = qualified("staging", name)
    columns = [
        "_row bigint",
        "_reason text",
        "_repaired boolean NOT NULL DEFAULT false",
        "geom_src geometry",
        "geom geometry",
    ]
    columns += [f"{quote_ident(a.name)} {PG_TYPES[a.type]}" for a in layer.attributes]
    cur.execute(f"CREATE UNLOGGED TABLE {table} ({', '.join(columns)})")
    return table


def load_rows(
    cur,
    table: str,
    layer: Layer,
    source: ingest.Source,
    mapping: dict[str, str],
    limits: ingest.IngestLimits,
    progress: Callable[[int], None] | None,
) -> int:
    """Stream the file's rows into staging with COPY; per-row type errors become reasons."""
    attrs = layer.attributes
    columns = ["_row", "_reason", "geom_src", *[quote_ident(a.name) for a in attrs]]
    copy_sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
    by_attr = {target: source_name for source_name, target in mapping.items()}
    count = 0
    for batch in ingest.iter_rows(source):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in batch:
            count += 1
            if count > limits.max_features:
                raise UploadTooLarge(
                    f"The upload has more than {limits.max_features:,} features.", parameter="file"
                )
            values, reason = [], None
            for attr in attrs:
                raw = row.get(by_attr[attr.name]) if attr.name in by_attr else None
                try:
                    value = _coerce(attr, raw)
                except (ValueError, TypeError, OverflowError) as exc:
                    reason, value = reason or str(exc), None
                if value is None and attr.required and reason is None:
                    reason = f"required field '{attr.name}' is empty"
                values.append(_csv_value(value))
            wkb = row.get("__wkb__")
            writer.writerow([count, reason, wkb.hex() if wkb else None, *values])
        cur.copy_expert(copy_sql, io.StringIO(buffer.getvalue()))
        if progress:
            progress(count)
    return count


_BASE_TYPES = {"Point": "POINT", "LineString": "LINESTRING", "Polygon": "POLYGON"}
_DIMENSION = {"POINT": 1, "LINESTRING": 2, "POLYGON": 3}


def validate_geometry(cur, table: str, layer: Layer, source_srid: int, invalid: str) -> None:
    """Reasons for missing, invalid, mistyped, out-of-city and duplicate rows (all in SQL)."""
    multi = layer.geometry_type.startswith("Multi")
    base = _BASE_TYPES[layer.geometry_type.removeprefix("Multi")]
    pending = "_reason IS NULL"
    cur.execute(
        f"UPDATE {table} SET _reason = 'missing geometry' WHERE {pending} AND geom_src IS NULL"
    )
    cur.execute(
        f"UPDATE {table} SET geom_src = ST_SetSRID(ST_Force2D(geom_src), %s) WHERE {pending}",
        (source_srid,),
    )
    cur.execute(
        f"UPDATE {table} SET _reason = 'expected ' || %s || ', got ' || GeometryType(geom_src)"
        f" WHERE {pending} AND replace(GeometryType(geom_src), 'MULTI', '') <> %s",
        (layer.geometry_type, base),
    )
    if invalid == "repair":
        cur.execute(
            f"UPDATE {table} SET geom_src = ST_CollectionExtract(ST_MakeValid(geom_src), %s),"
            f" _repaired = true WHERE {pending} AND NOT ST_IsValid(geom_src)",
            (_DIMENSION[base],),
        )
        cur.execute(
            f"UPDATE {table} SET _reason = 'geometry could not be repaired'"
            f" WHERE {pending} AND ST_IsEmpty(geom_src)"
        )
    else:
        cur.execute(
            f"UPDATE {table} SET _reason = 'invalid geometry: ' || ST_IsValidReason(geom_src)"
            f" WHERE {pending} AND NOT ST_IsValid(geom_src)"
        )
    xmin, ymin, xmax, ymax = CITY_EXTENT
    cur.execute(
        f"""UPDATE {table} s SET _reason = CASE
              WHEN ST_Within(ST_FlipCoordinates(w.g), ST_MakeEnvelope(%s, %s, %s, %s, 4326))
              THEN 'latitude and longitude look swapped'
              ELSE 'outside the city''s extent (wrong CRS?)' END
            FROM (SELECT _row, ST_Transform(geom_src, 4326) AS g FROM {table} WHERE {pending}) w
            WHERE s._row = w._row
              AND NOT ST_Within(w.g, ST_MakeEnvelope(%s, %s, %s, %s, 4326))""",
        (xmin, ymin, xmax, ymax, xmin, ymin, xmax, ymax),
    )
    shape = (
        "ST_Multi(g)"
        if multi
        else "CASE WHEN ST_NumGeometries(g) = 1 THEN ST_GeometryN(g, 1) ELSE g END"
    )
    cur.execute(
        f"UPDATE {table} SET geom = (SELECT {shape} FROM (SELECT ST_Transform(geom_src, %s)"
        f" AS g) t) WHERE {pending}",
        (layer.srid,),
    )
    if not multi:
        cur.execute(
            f"UPDATE {table} SET _reason = 'multi-part geometry for a single-part layer'"
            f" WHERE {pending} AND GeometryType(geom) LIKE 'MULTI%%'"
        )
    if layer.id_attribute:
        ident = quote_ident(layer.id_attribute)
        cur.execute(
            f"""UPDATE {table} s SET _reason = 'duplicate id ' || left(s.{ident}::text, 40)
                FROM (SELECT _row, row_number() OVER (PARTITION BY {ident} ORDER BY _row) AS n
                      FROM {table} WHERE {pending} AND {ident} IS NOT NULL) d
                WHERE s._row = d._row AND d.n > 1"""
        )


def summarise(cur, table: str, report: PublishReport) -> None:
    cur.execute(
        f"SELECT count(*) FILTER (WHERE _reason IS NULL),"
        f" count(*) FILTER (WHERE _reason IS NULL AND _repaired),"
        f" count(*) FILTER (WHERE _reason IS NOT NULL) FROM {table}"
    )
    report.accepted, report.repaired, report.rejected = cur.fetchone()
    cur.execute(
        f"SELECT _row, _reason FROM {table} WHERE _reason IS NOT NULL ORDER BY _row"
        f" LIMIT {_MAX_REASONS}"
    )
    report.reasons = [{"row": row, "reason": reason} for row, reason in cur.fetchall()]


# --- versions and swap --------------------------------------------------------------------


def drop_orphans(conn: PgConn, layer: Layer) -> None:
    """Staging tables left by an interrupted publish of this layer (server killed mid-load)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'staging' AND tablename LIKE %s",
            (layer.id[:40].replace("_", r"\_") + r"\_\_%",),
        )
        for (name,) in cur.fetchall():
            cur.execute(f"DROP TABLE IF EXISTS {qualified('staging', name)}")
    conn.commit()
