"""Publishing as the API and the command line use it: access checks, limits, connections,
and the hooks that follow a publish (catalog refresh is the caller's; tiles key on versions)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from ioc.addresses.index import link_layer, unlink_layer
from ioc.addresses.registry import AddressSettings
from ioc.catalog.access import Principal, can_create_in, can_write
from ioc.catalog.layers import Layer
from ioc.db.connection import PgConn, connection
from ioc.errors import Forbidden, InvalidParameter, NotAuthenticated
from ioc.events import log as events
from ioc.settings import DatabaseSettings, PublishSettings
from layers import ingest, registry
from layers.publish import publish_file
from layers.publish_staging import PublishOptions, PublishReport
from layers.publish_versions import list_versions, restore_version, write_audit

log = logging.getLogger("ioc.publishing")


def check_can_write(principal: Principal, layer: Layer) -> None:
    """Forbidden unless the principal may change the layer (the caller can already read it)."""
    if not principal.authenticated:
        raise NotAuthenticated("Publishing needs an API key: send 'Authorization: Bearer KEY'.")
    if not can_write(principal, layer):
        raise Forbidden(
            f"You may not change layer '{layer.id}': it belongs to the "
            f"'{layer.department}' department."
        )


class PublishingSettings(Protocol):
    """The settings groups publishing reads: an ``ioc.config.Settings`` (which this layer
    cannot import) is one."""

    database: DatabaseSettings
    publish: PublishSettings
    addresses: AddressSettings


def limits(settings: PublishingSettings) -> ingest.IngestLimits:
    """Upload limits from the settings."""
    return ingest.IngestLimits(
        max_bytes=settings.publish.upload_max_bytes,
        max_features=settings.publish.upload_max_features,
        max_uncompressed=settings.publish.upload_max_uncompressed,
    )


def publish_upload(
    settings: PublishingSettings,
    layer: Layer,
    path: Path,
    principal: Principal | str,
    *,
    mode: Literal["replace", "append"] = "replace",
    filename: str | None = None,
    fmt: str | None = None,
    crs: str | None = None,
    invalid: str = "reject",
    partial: bool = False,
    ignore_unknown: bool = False,
    progress=None,
) -> PublishReport:
    """Publish one file to one layer (replace or append)."""
    options = PublishOptions(
        mode=mode,
        crs=crs,
        format=fmt,
        invalid=invalid,  # type: ignore[arg-type]
        partial=partial,
        ignore_unknown=ignore_unknown,
    )
    with connection(settings.database) as conn:
        report = publish_file(
            conn,
            layer,
            path,
            filename or path.name,
            principal,
            options,
            limits(settings),
            progress,
            settings.publish.keep_versions,
        )
        after_publish(conn, layer, settings.addresses)
    log.info(
        "layer published",
        extra={
            "layer": layer.id,
            "version": report.version,
            "accepted": report.accepted,
            "mode": mode,
        },
    )
    return report


def after_publish(
    conn: PgConn, layer: Layer, settings: AddressSettings, *, ids: Sequence[str] | None = None
) -> None:
    """Work that follows a change of a layer's data: re-link point features to the digital
    addresses they stand at — the whole layer, or only the features ``ids`` names (the
    layer's id column values of the features a write touched)."""
    if layer.geometry_type not in ("Point", "MultiPoint"):
        return
    fids = None
    if ids is not None:  # ids of a non-integer id column are never linked (link_layer says)
        fids = [int(i) for i in ids if i.lstrip("-").isdigit()]
    link_layer(conn, layer, settings, fids)
    conn.commit()


def versions(
    settings: PublishingSettings, layer: Layer, principal: Principal
) -> list[dict[str, Any]]:
    """The layer's versions (anyone who may read the layer may see its history)."""
    with connection(settings.database) as conn:
        rows = list_versions(conn, layer)
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    return rows


def restore(
    settings: PublishingSettings, layer: Layer, version: int, principal: Principal
) -> PublishReport:
    """Restore a kept version."""
    check_can_write(principal, layer)
    with connection(settings.database) as conn:
        report = restore_version(conn, layer, version, principal)
        after_publish(conn, layer, settings.addresses)
    return report


def create(settings: PublishingSettings, document: dict[str, Any], principal: Principal) -> str:
    """Create a layer from a manifest document; returns its id."""
    from layers.manifest import LayerManifest

    try:
        manifest = LayerManifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise InvalidParameter(
            f"Invalid manifest at '{where}': {first['msg']}.", parameter=where
        ) from exc
    if not principal.authenticated:
        raise NotAuthenticated(
            "Creating layers needs an API key: send 'Authorization: Bearer KEY'."
        )
    if not can_create_in(principal, manifest.department):
        raise Forbidden(f"You may not create layers for the '{manifest.department}' department.")
    with connection(settings.database) as conn:  # the layer and its audit row commit together
        registry.create_layer(conn, manifest, commit=False)
        _audit(conn, principal, "layer.create", manifest.id)
    return manifest.id


def delete(settings: PublishingSettings, layer: Layer, principal: Principal) -> None:
    """Soft-delete a layer: the registry change, the address links, the change event and the
    audit row in one transaction (all or nothing)."""
    check_can_write(principal, layer)
    with connection(settings.database) as conn:  # closed uncommitted on error: rolled back
        registry.soft_delete(conn, layer.id)
        unlink_layer(conn, layer.id)
        with conn.cursor() as cur:
            write_audit(cur, principal, "layer.delete", layer.id, None, {})
            events.record_event(cur, layer.id, "layer.delete", None)  # last: see its doc
        conn.commit()


def _audit(conn: PgConn, principal: Principal, action: str, layer_id: str) -> None:
    with conn.cursor() as cur:
        write_audit(cur, principal, action, layer_id, None, {})
    conn.commit()
