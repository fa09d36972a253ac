"""Feed ingest: a batch of features, one per line, upserted by the layer's ``id_attribute``.

A sensor gateway or a sector system posts GeoJSON text sequences (RFC 8142: each record starts
with RS, 0x1E) or newline-delimited GeoJSON to the items endpoint. The whole batch is one
transaction under the layer's registry lock (``lock_and_version``, which serialises every
write of a layer): lines are parsed and their properties coerced here, then COPYed into one
staging table where the publish's own geometry checks run set-based; one UPDATE … FROM staging
(of the features a line changes: a line equal to the stored feature is ``unchanged``) and one
INSERT … WHERE NOT EXISTS apply the good lines. One version, one audit row, one change event
(none when nothing changed). A bad line is reported with its number and reason; ``atomic`` turns any bad line into a
refusal of the whole batch.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import reduce
from typing import Any

import orjson
import psycopg2

from ioc.catalog.access import Principal
from ioc.catalog.layers import Layer
from ioc.db.connection import PgConn
from ioc.db.identifiers import quote_ident
from ioc.errors import InvalidParameter, UploadRejected
from ioc.events import log as events
from ioc.features.crs import CRS84, parse_crs
from ioc.media import GEOJSON_SEQ, NDJSON
from layers import registry
from layers.feed_pool import pooled
from layers.publish_staging import _coerce, _csv_value, create_staging, validate_geometry
from layers.publish_versions import lock_and_version, principal_label, record_version, write_audit
from layers.publishing import PublishingSettings, after_publish, check_can_write
from layers.upload_check import excerpt

MEDIA_TYPES = (GEOJSON_SEQ, NDJSON)
OPERATION = "feed.upsert"
RS = b"\x1e"
MAX_FAILED = 1000  # lines listed in a report; ``received - applied`` counts them all


@dataclass
class FeedReport:
    """What a batch did (the answer's body)."""

    received: int = 0
    applied: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # good lines identical to the stored feature: not written
    failed: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0

    def document(self) -> dict[str, Any]:
        """The JSON answer."""
        return asdict(self)


@dataclass
class _Line:
    number: int
    reason: str | None = None
    geojson: str | None = None
    values: list[Any] = field(default_factory=list)


def split_lines(body: bytes, media_type: str) -> Iterator[tuple[int, bytes]]:
    """(1-based number, text) of each non-blank record: a physical line of NDJSON, the n-th
    RS-introduced record of a GeoJSON text sequence (RFC 7464 lets empty records be skipped)."""
    if media_type == GEOJSON_SEQ:
        head, *records = body.split(RS)
        if head.strip():  # text before the first RS: still a record, numbered first
            records.insert(0, head)
        chunks = (r for r in records if r.strip())
        yield from enumerate(chunks, start=1)
        return
    for number, text in enumerate(body.split(b"\n"), start=1):
        if text.strip():
            yield number, text


def _parse(layer: Layer, known: set[str], number: int, text: bytes) -> _Line:
    """One line's coerced values and geometry text, or its reason (``known``: the property
    names the layer accepts)."""
    line = _Line(number)
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        line.reason = f"not JSON: {excerpt(text.decode('utf-8', 'replace').strip())}"
        return line
    if not isinstance(doc, dict) or doc.get("type") != "Feature":
        line.reason = "not a GeoJSON Feature"
        return line
    props, geometry = doc.get("properties") or {}, doc.get("geometry")
    if not isinstance(props, dict):
        line.reason = "'properties' is not an object"
        return line
    unknown = [k for k in props if k not in known]
    if unknown:
        shown = ", ".join(excerpt(k) for k in unknown[:5])
        line.reason = f"properties that layer '{layer.id}' does not know: {shown}"
        return line
    key = layer.id_attribute
    if key and _blank(props.get(key)):
        line.reason = f"no value for '{key}', the id features are upserted by"
        return line
    try:
        line.values = [_csv_value(_coerce(attr, props.get(attr.name))) for attr in layer.attributes]
    except ValueError as exc:
        line.reason = str(exc)
        return line
    attrs = zip(layer.attributes, line.values, strict=True)
    empty = [a.name for a, v in attrs if a.required and v is None]
    if empty:
        line.reason = f"required property '{empty[0]}' is empty"
        return line
    if geometry is not None and not isinstance(geometry, dict):
        line.reason = "'geometry' is not an object"
        return line
    line.geojson = orjson.dumps(geometry).decode() if geometry is not None else None
    return line


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def ingest(
    settings: PublishingSettings,
    layer: Layer,
    principal: Principal,
    body: bytes,
    *,
    media_type: str,
    atomic: bool = False,
    content_crs: str | None = None,
) -> FeedReport:
    """Upsert a feed batch in one transaction; bad lines are reported (``atomic``: refused)."""
    check_can_write(principal, layer)
    crs = parse_crs(content_crs, parameter="Content-Crs", storage_srid=layer.srid, default=CRS84)
    known = {a.name for a in layer.attributes} | {layer.id_column}
    lines = [_parse(layer, known, n, text) for n, text in split_lines(body, media_type)]
    if not lines:
        raise InvalidParameter("The feed has no features: send one GeoJSON Feature a line.")
    with pooled(settings.database) as conn:
        try:
            report, placed = _apply(conn, layer, principal, lines, crs, atomic)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        if placed:  # new or moved features: a reading at the same place keeps its link
            after_publish(conn, layer, settings.addresses, ids=placed)
    return report


def _stage(cur, layer: Layer, lines: list[_Line], crs) -> str:
    """COPY the lines into a staging table, read their GeoJSON and run the publish's checks."""
    table = create_staging(cur, layer)
    # _written: the line changed the layer (the event's places are those lines' places).
    cur.execute(
        f"ALTER TABLE {table} ADD COLUMN _geojson text,"
        " ADD COLUMN _written boolean NOT NULL DEFAULT false"
    )
    columns = ["_row", "_reason", "_geojson", *[quote_ident(a.name) for a in layer.attributes]]
    copy = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
    blank = [None] * len(layer.attributes)  # a refused line's values are not kept
    rows = [[n.number, n.reason, n.geojson, *(n.values or blank)] for n in lines]
    cur.execute("SAVEPOINT feed_copy")
    try:
        cur.copy_expert(copy, _csv(rows))
    except psycopg2.DataError:  # a value the database refuses (a NUL, a number past bigint)
        cur.execute("ROLLBACK TO SAVEPOINT feed_copy")
        _copy_one_by_one(cur, copy, rows, blank)
    _read_geojson(cur, table, crs.lat_lon)
    validate_geometry(cur, table, layer, crs.srid, "reject")
    return table


def _csv(rows: list[list[Any]]) -> io.StringIO:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    buffer.seek(0)
    return buffer


def _copy_one_by_one(cur, copy: str, rows: list[list[Any]], blank: list[None]) -> None:
    """The COPY again, a line at a time under savepoints: a line the database refuses is
    staged with the database's reason instead of its values."""
    for row in rows:
        cur.execute("SAVEPOINT feed_copy")
        try:
            cur.copy_expert(copy, _csv([row]))
        except psycopg2.DataError as exc:
            cur.execute("ROLLBACK TO SAVEPOINT feed_copy")
            reason = (str(exc).strip().splitlines() or ["refused"])[0][:200]  # echoes the value
            cur.copy_expert(
                copy, _csv([[row[0], f"a value the database refuses: {reason}", None, *blank]])
            )


def _read_geojson(cur, table: str, lat_lon: bool) -> None:
    """geom_src from each line's GeoJSON: one statement; only when PostGIS refuses one of them,
    line by line (under savepoints) to name the refused lines."""
    geom = "ST_GeomFromGeoJSON(_geojson)"
    if lat_lon:  # Part 2: coordinates in the CRS's axis order (EPSG:4326 is lat, lon)
        geom = f"ST_FlipCoordinates({geom})"
    pending = "_reason IS NULL AND _geojson IS NOT NULL"
    cur.execute("SAVEPOINT feed_geojson")
    try:
        cur.execute(f"UPDATE {table} SET geom_src = {geom} WHERE {pending}")
        return
    except psycopg2.Error:
        cur.execute("ROLLBACK TO SAVEPOINT feed_geojson")
    cur.execute(f"SELECT _row FROM {table} WHERE {pending}")
    for (row,) in cur.fetchall():
        cur.execute("SAVEPOINT feed_geojson")
        try:
            cur.execute(f"UPDATE {table} SET geom_src = {geom} WHERE _row = %s", (row,))
        except psycopg2.Error:
            cur.execute("ROLLBACK TO SAVEPOINT feed_geojson")
            cur.execute(
                f"UPDATE {table} SET _reason = 'geometry is not valid GeoJSON' WHERE _row = %s",
                (row,),
            )


def _apply(
    conn: PgConn,
    layer: Layer,
    principal: Principal,
    lines: list[_Line],
    crs,
    atomic: bool,
) -> tuple[FeedReport, list[str]]:
    label = principal_label(principal)
    report = FeedReport(received=len(lines))
    with conn.cursor() as cur:
        current = lock_and_version(cur, layer, label)
        report.version = current
        table = _stage(cur, layer, lines, crs)
        cur.execute(f"SELECT _row, _reason FROM {table} WHERE _reason IS NOT NULL ORDER BY _row")
        failed = cur.fetchall()
        report.failed = [{"line": n, "reason": r} for n, r in failed[:MAX_FAILED]]
        if failed and atomic:
            first = failed[0]
            raise UploadRejected(
                f"Line {first[0]} is refused: {first[1]} (atomic: nothing was applied).",
                report.document(),
            )
        if len(failed) == len(lines):
            return report, []
        old, moved, updated = _update(cur, layer, table)
        created = _insert(cur, layer, table)
        report.updated, report.created = len(updated), len(created)
        report.applied = len(lines) - len(failed)
        report.unchanged = max(report.applied - report.updated - report.created, 0)
        if not (updated or created):  # nothing to write: no version, event or history
            cur.execute(f"DROP TABLE {table}")
            return report, []
        # The places the batch touched, per ~500 m cell: the tile caches of every process drop
        # only the tiles these meet (one extent of a city-wide batch would meet most of them).
        new = events.fetch_boxes(cur, "geom", f"{table} WHERE _reason IS NULL AND _written")
        report.version = current + 1
        count = registry.bump_stats(cur, layer.id, len(created), _cover(new))
        cur.execute(f"DROP TABLE {table}")
        ids = updated + created
        record_version(cur, layer, report.version, None, OPERATION, count, None, label)  # type: ignore[arg-type]  # no snapshot
        counts = {
            k: getattr(report, k)
            for k in ("received", "applied", "created", "updated", "unchanged")
        }
        write_audit(cur, principal, OPERATION, layer.id, report.version, counts)
        bbox = _cover(old + new)
        events.record_event(
            cur, layer.id, OPERATION, report.version, ids, bbox=bbox, boxes=old + new
        )
    return report, moved + created


def _cover(boxes: list[events.Bbox]) -> events.Bbox | None:
    """The box covering ``boxes`` (None for none)."""
    return reduce(events.union, boxes, None)


def _update(cur, layer: Layer, table: str) -> tuple[list[events.Bbox], list[str], list[str]]:
    """Replace the features whose id a good line names: (the old places of those that moved,
    the ids of those that moved, the ids of all)."""
    if not layer.id_attribute:
        return [], [], []
    key, geom = quote_ident(layer.id_attribute), quote_ident(layer.geometry_column)
    ident = quote_ident(layer.id_column)
    moving = (
        f"{layer.table_sql} t JOIN {table} s ON t.{key} = s.{key}"
        f" WHERE s._reason IS NULL AND NOT t.{geom} = s.geom"  # PostGIS 3: exact coordinates
    )
    old = events.fetch_boxes(cur, f"t.{geom}", moving)
    moved: list[str] = []
    if old:
        cur.execute(f"SELECT t.{ident}::text FROM {moving}")
        moved = [r[0] for r in cur.fetchall()]
    names = [quote_ident(a.name) for a in layer.attributes]
    sets = ", ".join(f"{n} = s.{n}" for n in names)
    # A line equal to the stored feature is not written: history, the low-zoom triggers and
    # the tile caches pay only for changes (geometry = is exact coordinates in PostGIS 3).
    mine = ", ".join(f"t.{n}" for n in [*names, geom])
    theirs = ", ".join(f"s.{n}" for n in [*names, "geom"])
    cur.execute(
        f"WITH up AS (UPDATE {layer.table_sql} t SET {sets}, {geom} = s.geom FROM {table} s"
        f" WHERE s._reason IS NULL AND t.{key} = s.{key} AND ({mine}) IS DISTINCT FROM ({theirs})"
        f" RETURNING t.{ident}::text AS id, s._row),"
        f" mark AS (UPDATE {table} w SET _written = true FROM up WHERE w._row = up._row)"
        " SELECT id FROM up"
    )
    return old, moved, [r[0] for r in cur.fetchall()]


def _insert(cur, layer: Layer, table: str) -> list[str]:
    """Insert the good lines whose id is not in the layer (every good line without an
    id_attribute); their new ids."""
    columns = [quote_ident(a.name) for a in layer.attributes]
    missing = ""
    if layer.id_attribute:
        key = quote_ident(layer.id_attribute)
        missing = f" AND NOT EXISTS (SELECT 1 FROM {layer.table_sql} t WHERE t.{key} = s.{key})"
    cur.execute(
        f"WITH s AS (UPDATE {table} s SET _written = true WHERE s._reason IS NULL{missing}"
        f" RETURNING s.*) INSERT INTO {layer.table_sql} ({', '.join(columns)}, "
        f"{quote_ident(layer.geometry_column)}) SELECT {', '.join(f's.{c}' for c in columns)},"
        f" s.geom FROM s ORDER BY s._row RETURNING {quote_ident(layer.id_column)}::text"
    )
    return [r[0] for r in cur.fetchall()]
