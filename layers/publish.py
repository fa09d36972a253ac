"""Publishing a layer's data safely: stage, validate, swap in one transaction, keep versions.

1. The upload is streamed into an UNLOGGED table in schema ``staging`` (never the live table).
2. Rows are validated: attribute types and required fields against the catalog, geometry type,
   validity (rejected, or repaired on request), the city's extent, duplicate ids.
3. One transaction replaces or appends the live rows, snapshots the result as a new version in
   schema ``versions``, bumps the layer version (tile caches key on it) and writes the audit
   record. Any failure before the commit leaves the live layer exactly as it was; an orphaned
   staging table is dropped on the next publish.

Steps 1 and 2 are ``layers.publish_staging``; versions, restore and audit
``layers.publish_versions``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ioc.catalog.access import Principal, can_write
from ioc.catalog.layers import Layer
from ioc.db.connection import PgConn
from ioc.db.identifiers import qualified, quote_ident
from ioc.errors import Forbidden, InvalidParameter, UploadRejected
from ioc.events import log as events
from layers import ingest, registry
from layers.crs_detect import resolve_srid
from layers.inference import attribute_name
from layers.publish_staging import (
    PublishOptions,
    PublishReport,
    create_staging,
    drop_orphans,
    load_rows,
    map_fields,
    summarise,
    validate_geometry,
)
from layers.publish_versions import (
    KEEP_VERSIONS,
    lock_and_version,
    principal_label,
    prune_versions,
    record_version,
    snapshot_table,
    write_audit,
)


def _columns(layer: Layer) -> str:
    return ", ".join(
        [quote_ident(a.name) for a in layer.attributes] + [quote_ident(layer.geometry_column)]
    )


def publish_file(
    conn: PgConn,
    layer: Layer,
    path: Path,
    filename: str,
    principal: Principal | str,
    options: PublishOptions | None = None,
    limits: ingest.IngestLimits | None = None,
    progress: Callable[[int], None] | None = None,
    keep_versions: int = KEEP_VERSIONS,
) -> PublishReport:
    """Validate an uploaded file and make it the layer's data (replace or append), atomically."""
    options = options or PublishOptions()
    limits = limits or ingest.IngestLimits()
    if isinstance(principal, Principal) and not can_write(principal, layer):
        raise Forbidden(f"You may not publish to layer '{layer.id}'.")
    source = ingest.open_source(path, filename, fmt=options.format, limits=limits)
    try:
        return _publish_source(
            conn, layer, path, source, principal, options, limits, progress, keep_versions
        )
    finally:
        source.close()


def _publish_source(
    conn: PgConn,
    layer: Layer,
    path: Path,
    source: ingest.Source,
    principal: Principal | str,
    options: PublishOptions,
    limits: ingest.IngestLimits,
    progress: Callable[[int], None] | None,
    keep_versions: int,
) -> PublishReport:
    table, report = stage_source(conn, layer, path, source, options, limits, progress)
    try:
        check_accepted(report, options.partial)
        swap_staged(conn, layer, table, report, principal, options.mode, keep_versions)
    except BaseException:
        conn.rollback()
        raise
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.commit()
    return report


def stage_source(
    conn: PgConn,
    layer: Layer,
    path: Path,
    source: ingest.Source,
    options: PublishOptions,
    limits: ingest.IngestLimits,
    progress: Callable[[int], None] | None = None,
    rename: str | None = None,
) -> tuple[str, PublishReport]:
    """Steps 1 and 2: the upload loaded into a staging table and validated there, committed;
    returns the table (the caller drops it) and the report. ``rename`` names the table (a
    preview kept for later, out of reach of ``drop_orphans``)."""
    report = PublishReport(layer=layer.id, mode=options.mode)
    report.source_srid = resolve_srid(source.crs, explicit=options.crs)
    report.checksum = ingest.file_checksum(path)
    # Fields match attributes by their folded names ('Tên đường' is ten_duong), the names a
    # layer created from a file took (layers.inference); plain names fold to themselves.
    folded = {attribute_name(f): f for f in reversed(source.fields)}
    mapping = {
        folded[k]: v for k, v in map_fields(list(folded), layer, options.ignore_unknown).items()
    }
    drop_orphans(conn, layer)
    with conn.cursor() as cur:
        table = create_staging(cur, layer)
        if rename:
            cur.execute(f"ALTER TABLE {table} RENAME TO {quote_ident(rename)}")
            table = qualified("staging", rename)
    conn.commit()
    try:
        with conn.cursor() as cur:
            report.received = load_rows(cur, table, layer, source, mapping, limits, progress)
            validate_geometry(cur, table, layer, report.source_srid, options.invalid)
            summarise(cur, table, report)
        conn.commit()
    except BaseException:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.commit()
        raise
    return table, report


def check_accepted(report: PublishReport, partial: bool) -> None:
    """UploadRejected (with the report) unless the validated upload may be published."""
    if report.accepted == 0:
        raise UploadRejected(
            "No feature of the upload is valid; nothing was published.", report.as_dict()
        )
    if report.rejected and not partial:
        raise UploadRejected(
            f"{report.rejected} of {report.received} features are invalid; nothing was "
            "published (fix them, or pass partial=true to publish the valid ones).",
            report.as_dict(),
        )


def swap_staged(
    conn: PgConn,
    layer: Layer,
    table: str,
    report: PublishReport,
    principal: Principal | str,
    mode: str,
    keep_versions: int,
) -> None:
    """Step 3: the staged rows become the layer's data, versioned and audited; commits."""
    label = principal_label(principal)
    cols = _columns(layer)
    staged = ", ".join([quote_ident(a.name) for a in layer.attributes] + ["geom"])
    with conn.cursor() as cur:
        current = lock_and_version(cur, layer, label)
        if mode == "replace":
            cur.execute(f"DELETE FROM {layer.table_sql}")
        cur.execute(
            f"INSERT INTO {layer.table_sql} ({cols}) SELECT {staged} FROM {table}"
            f" WHERE _reason IS NULL ORDER BY _row"
        )
        report.version = current + 1
        report.feature_count = registry.update_stats(cur, layer.id)
        snapshot = snapshot_table(cur, layer, report.version)
        record_version(
            cur, layer, report.version, snapshot, mode, report.feature_count, report.checksum, label
        )
        write_audit(
            cur,
            principal,
            f"layer.{mode}",
            layer.id,
            report.version,
            {
                "received": report.received,
                "accepted": report.accepted,
                "repaired": report.repaired,
                "rejected": report.rejected,
                "feature_count": report.feature_count,
            },
            report.checksum,
        )
        prune_versions(cur, layer, keep_versions)
        events.record_event(
            cur, layer.id, f"layer.{mode}", report.version, count=report.feature_count
        )
    conn.commit()


def parse_bool(value: str | bool | None, name: str) -> bool:
    """A boolean query/option value, or InvalidParameter."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise InvalidParameter(f"'{name}' must be true or false.", parameter=name)
