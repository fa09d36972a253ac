"""Dry runs, previews and layers created from a file, as the API, the page and the command line
use them (connections, access, settings); the SQL is in ``layers.preview`` and
``layers.publish``, the reading of files in ``layers.inference``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ioc.catalog.access import Principal, can_create_in
from ioc.catalog.layers import Catalog, Layer
from ioc.db.connection import PgConn, connection
from ioc.db.identifiers import quote_ident
from ioc.errors import (
    Forbidden,
    InvalidParameter,
    NotAuthenticated,
    PreviewNotFound,
    UploadRejected,
)
from layers import ingest, preview, registry
from layers.inference import (
    Inference,
    InferredAttribute,
    NewLayerFields,
    build_manifest,
    infer_source,
    virtual_layer,
)
from layers.publish import check_accepted, stage_source, swap_staged
from layers.publish_staging import PublishOptions
from layers.publish_versions import write_audit
from layers.publishing import PublishingSettings, after_publish, check_can_write, limits

Progress = Callable[[int], None] | None


def _stage(
    conn: PgConn,
    settings: PublishingSettings,
    layer: Layer,
    path: Path,
    filename: str,
    options: PublishOptions,
    *,
    new: bool,
    keep_for: Principal | None,
    extra: dict[str, Any],
    progress: Progress = None,
) -> dict[str, Any]:
    """Stage and validate an upload, compare it with the live layer; keep it as a preview for
    ``keep_for`` (else drop it). Nothing live is touched."""
    token, name = preview.preview_table_name() if keep_for else (None, None)
    source = ingest.open_source(path, filename, fmt=options.format, limits=limits(settings))
    try:
        table, report = stage_source(
            conn, layer, path, source, options, limits(settings), progress, rename=name
        )
    finally:
        source.close()
    try:
        with conn.cursor() as cur:
            changes = preview.changes(cur, table, layer, options.mode, new)
            extent = preview.extent(cur, table)
        conn.commit()
        doc = {
            **report.as_dict(),
            "dry_run": True,
            "live_version": None if new else layer.version,
            "changes": changes,
            "extent": extent,
            **extra,
        }
        if keep_for is not None and token is not None:
            doc["preview"] = preview.keep(
                conn,
                table,
                token,
                layer=layer,
                manifest=extra.get("manifest"),
                mode=options.mode,
                partial=options.partial,
                principal=keep_for,
                minutes=settings.publish.preview_minutes,
                report={
                    **report.as_dict(),
                    "inference": extra.get("inference"),
                    "filename": filename,
                    "fields": extra.get("fields"),
                },
            )
            return doc
    except BaseException:
        conn.rollback()
        keep_for = None
        raise
    finally:
        if keep_for is None:
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            conn.commit()
    return doc


def dry_run(
    settings: PublishingSettings,
    layer: Layer,
    path: Path,
    principal: Principal | str,
    options: PublishOptions,
    *,
    filename: str,
    progress: Progress = None,
) -> dict[str, Any]:
    """The report of an upload to ``layer`` and what it would change; kept as a preview when
    the caller has an API key (the command line gets the report only)."""
    if isinstance(principal, Principal):
        check_can_write(principal, layer)
    keep_for = principal if isinstance(principal, Principal) else None
    with connection(settings.database) as conn:
        preview.purge_expired(conn)
        return _stage(
            conn,
            settings,
            layer,
            path,
            filename,
            options,
            new=False,
            keep_for=keep_for,
            extra={},
            progress=progress,
        )


def _check_creator(principal: Principal | str, fields: NewLayerFields) -> NewLayerFields:
    """The fields with the department settled: a publisher's own, or the one an admin (or the
    command line) names."""
    if isinstance(principal, str):
        department = fields.department
    else:
        if not principal.authenticated:
            raise NotAuthenticated(
                "Creating layers needs an API key: send 'Authorization: Bearer KEY'."
            )
        department = fields.department or principal.department
    if not department:
        raise InvalidParameter(
            "Say which department owns the new layer: 'department' is missing.",
            parameter="department",
        )
    if isinstance(principal, Principal) and not can_create_in(principal, department):
        raise Forbidden(f"You may not create layers for the '{department}' department.")
    return replace(fields, department=department)


def create_from_file(
    settings: PublishingSettings,
    path: Path,
    principal: Principal | str,
    fields: NewLayerFields,
    options: PublishOptions,
    *,
    filename: str,
    dry_run: bool = False,
    progress: Progress = None,
) -> dict[str, Any]:
    """Infer a layer from the file and create it with the file as its data (one sentence for a
    missing or wrong field); with ``dry_run``, the inference, the report and a preview only
    (the fields may then wait until the preview is published)."""
    fields = _check_creator(principal, fields)
    source = ingest.open_source(path, filename, fmt=options.format, limits=limits(settings))
    try:
        inference = infer_source(source, crs=options.crs, limits=limits(settings))
    finally:
        source.close()
    if dry_run:
        # The person confirms the fields on the preview: until then the domain is a stand-in.
        draft = replace(fields, domain=fields.domain or "planning")
        manifest = build_manifest(inference, draft, filename=filename)
    else:
        manifest = build_manifest(inference, fields, filename=filename)
    layer = virtual_layer(manifest)
    extra = {
        "fields": asdict(fields),
        "inference": inference.as_dict(),
        "manifest": manifest.model_dump(mode="json", exclude_none=True),
    }
    # Without a dry run the file still goes through a preview, kept for this call only: one
    # way from a staged upload to a new layer.
    owner = _as_principal(principal)
    with connection(settings.database) as conn:
        preview.purge_expired(conn)
        doc = _stage(
            conn,
            settings,
            layer,
            path,
            filename,
            replace(options, mode="replace"),
            new=True,
            # A command line's dry run has no one to come back for its preview.
            keep_for=owner if isinstance(principal, Principal) or not dry_run else None,
            extra=extra,
            progress=progress,
        )
    if dry_run:
        return doc
    token = doc["preview"]["token"]
    try:
        done = publish(settings, token, principal, Catalog(), fields)
    except BaseException:
        discard(settings, token, owner, missing_ok=True)
        raise
    return {**done, "inference": extra["inference"]}


def _inference_of(preview_doc: dict[str, Any]) -> Inference:
    data = dict(preview_doc)
    data["attributes"] = [InferredAttribute(**a) for a in data["attributes"]]
    return Inference(**data)


def _check_unique(conn: PgConn, table: str, attribute: str | None) -> None:
    """UploadRejected when the chosen id attribute repeats (or is empty) in the staged rows."""
    if not attribute:
        return
    ident = quote_ident(attribute)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT _row, left({ident}::text, 40) FROM {table} WHERE _reason IS NULL AND"
            f" ({ident} IS NULL OR {ident} IN (SELECT {ident} FROM {table}"
            f" WHERE _reason IS NULL GROUP BY 1 HAVING count(*) > 1)) ORDER BY _row LIMIT 1"
        )
        row = cur.fetchone()
    if row is not None:
        what = "is empty" if row[1] is None else f"repeats the value '{row[1]}'"
        raise UploadRejected(
            f"'{attribute}' cannot be the id: row {row[0]} {what}; choose another attribute.",
            {"id_attribute": attribute, "row": row[0]},
        )


def publish(
    settings: PublishingSettings,
    token: str,
    principal: Principal | str,
    catalog: Catalog,
    fields: NewLayerFields | None = None,
) -> dict[str, Any]:
    """Publish a kept preview: a new version of its layer, or the new layer it describes
    (with the confirmed ``fields``). Conflict when the layer changed since the dry run."""
    with connection(settings.database) as conn:
        kept = preview.load(conn, token, _as_principal(principal), lock=True)
        report = preview.report_of(kept)
        check_accepted(report, kept.partial)
        if kept.manifest is None:
            layer = catalog.get(kept.layer, _as_principal(principal))
            check_can_write(_as_principal(principal), layer)
            with conn.cursor() as cur:
                cur.execute("SELECT version FROM ioc.layers WHERE id = %s FOR UPDATE", (layer.id,))
                row = cur.fetchone()
            preview.check_current(kept, row[0] if row else -1)
            created = False
        else:
            inference = _inference_of(kept.report["inference"])
            confirmed = _check_creator(principal, _confirmed(kept, fields))
            manifest = build_manifest(
                inference, confirmed, filename=kept.report.get("filename") or "upload"
            )
            _check_unique(conn, kept.table, manifest.id_attribute)
            # The registry row, the table and the first data commit together (in swap_staged):
            # a failed swap leaves no empty layer behind, and the preview stays publishable.
            registry.create_layer(conn, manifest, commit=False)
            layer = virtual_layer(manifest)
            with conn.cursor() as cur:
                write_audit(cur, principal, "layer.create", layer.id, None, {})
            created = True
        swap_staged(
            conn, layer, kept.table, report, principal, kept.mode, settings.publish.keep_versions
        )
        preview.drop(conn, kept)
        conn.commit()
        after_publish(conn, layer, settings.addresses)
    return {**report.as_dict(), "created": created, "layer": layer.id}


def _confirmed(kept: preview.Preview, given: NewLayerFields | None) -> NewLayerFields:
    """The fields sent with the dry run, overridden by those confirmed at publishing."""
    fields = NewLayerFields(**(kept.report.get("fields") or {}))
    if given is not None:
        chosen = {k: v for k, v in asdict(given).items() if v is not None}
        fields = replace(fields, **chosen)
    return fields


def _as_principal(principal: Principal | str) -> Principal:
    return principal if isinstance(principal, Principal) else Principal(role="admin")


def discard(
    settings: PublishingSettings, token: str, principal: Principal, *, missing_ok: bool = False
) -> None:
    """Drop a preview before it expires."""
    with connection(settings.database) as conn:
        try:
            kept = preview.load(conn, token, principal, lock=True)
        except PreviewNotFound:
            if missing_ok:
                return
            raise
        preview.drop(conn, kept)
        conn.commit()


def describe(settings: PublishingSettings, token: str, principal: Principal) -> dict[str, Any]:
    """A kept preview: its report, layer, mode and expiry."""
    with connection(settings.database) as conn:
        kept = preview.load(conn, token, principal)
        conn.rollback()
    return {
        **kept.report,
        "layer": kept.layer,
        "new": kept.manifest is not None,
        "mode": kept.mode,
        "live_version": kept.live_version,
        "expires_at": kept.expires_at.isoformat(),
    }


def features(settings: PublishingSettings, token: str, principal: Principal) -> dict[str, Any]:
    """The preview's features as GeoJSON (for the preview map)."""
    with connection(settings.database) as conn:
        return preview.features(conn, preview.load(conn, token, principal))


def audit_trail(
    settings: PublishingSettings, layer: Layer, principal: Principal, limit: int = 100
) -> list[dict[str, Any]]:
    """The layer's audit records, newest first (for those who may change the layer)."""
    check_can_write(principal, layer)
    with connection(settings.database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT at, principal, action, version, counts, checksum, detail FROM ioc.audit"
            " WHERE layer_id = %s ORDER BY at DESC, id DESC LIMIT %s",
            (layer.id, limit),
        )
        rows = cur.fetchall()
    keys = ("at", "principal", "action", "version", "counts", "checksum", "detail")
    trail = [dict(zip(keys, row, strict=True)) for row in rows]
    for entry in trail:
        entry["at"] = entry["at"].isoformat()
        for name in ("counts", "detail"):
            if isinstance(entry[name], str):
                entry[name] = json.loads(entry[name])
    return trail
