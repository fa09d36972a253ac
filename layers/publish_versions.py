"""Versions, restore and audit of published layers (step 3 of ``layers.publish`` and its undo).

Each publish or restore is recorded as a new version in ``ioc.layer_versions`` with a snapshot
table in schema ``versions`` (the last ``KEEP_VERSIONS`` are kept), and one ``ioc.audit`` record.
"""

from __future__ import annotations

import json
from typing import Any

from ioc.catalog.access import Principal, can_write
from ioc.catalog.layers import Layer
from ioc.db.connection import PgConn
from ioc.db.identifiers import qualified
from ioc.errors import Forbidden, VersionNotFound
from ioc.events import log as events
from layers import registry
from layers.publish_staging import PublishReport

KEEP_VERSIONS = 5


def principal_label(principal: Principal | str) -> str:
    return principal if isinstance(principal, str) else principal.label


def snapshot_table(cur, layer: Layer, version: int) -> str:
    name = f"{layer.id[:50]}__v{version}"
    cur.execute(f"DROP TABLE IF EXISTS {qualified('versions', name)}")
    cur.execute(f"CREATE TABLE {qualified('versions', name)} AS SELECT * FROM {layer.table_sql}")
    return name


def record_version(
    cur,
    layer: Layer,
    version: int,
    snapshot: str,
    operation: str,
    count: int,
    checksum: str | None,
    principal: str,
    restored_from: int | None = None,
) -> None:
    cur.execute(
        "INSERT INTO ioc.layer_versions (layer_id, version, snapshot, operation, restored_from,"
        " feature_count, checksum, principal) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (layer_id, version) DO NOTHING",
        (layer.id, version, snapshot, operation, restored_from, count, checksum, principal),
    )


def lock_and_version(cur, layer: Layer, principal: str) -> int:
    """Lock the registry row (serialises publishes of a layer); snapshot the first version."""
    cur.execute(
        "SELECT version, feature_count FROM ioc.layers WHERE id = %s FOR UPDATE", (layer.id,)
    )
    version, count = cur.fetchone()
    cur.execute(
        "SELECT 1 FROM ioc.layer_versions WHERE layer_id = %s AND version = %s", (layer.id, version)
    )
    if cur.fetchone() is None:
        snapshot = snapshot_table(cur, layer, version)
        record_version(cur, layer, version, snapshot, "seed", count, None, principal)
    return version


def write_audit(
    cur,
    principal: Principal | str,
    action: str,
    layer_id: str,
    version: int | None,
    counts: dict[str, Any],
    checksum: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit record: who, when (now), what, counts, checksum."""
    cur.execute(
        "INSERT INTO ioc.audit (principal, key_id, action, layer_id, version, counts, checksum,"
        " detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            principal_label(principal),
            getattr(principal, "key_id", None),
            action,
            layer_id,
            version,
            json.dumps(counts),
            checksum,
            json.dumps(detail or {}, ensure_ascii=False),
        ),
    )


def prune_versions(cur, layer: Layer, keep: int) -> None:
    cur.execute(
        "SELECT version, snapshot FROM ioc.layer_versions WHERE layer_id = %s"
        " ORDER BY version DESC OFFSET %s",
        (layer.id, keep),
    )
    for version, snapshot in cur.fetchall():
        if snapshot:
            cur.execute(f"DROP TABLE IF EXISTS {qualified('versions', snapshot)}")
            cur.execute(
                "UPDATE ioc.layer_versions SET snapshot = NULL WHERE layer_id = %s AND"
                " version = %s",
                (layer.id, version),
            )


def restore_version(
    conn: PgConn, layer: Layer, version: int, principal: Principal | str
) -> PublishReport:
    """Make an earlier version the live data again (recorded as a new version)."""
    if isinstance(principal, Principal) and not can_write(principal, layer):
        raise Forbidden(f"You may not restore layer '{layer.id}'.")
    label = principal_label(principal)
    report = PublishReport(layer=layer.id, mode="restore")
    try:
        with conn.cursor() as cur:
            current = lock_and_version(cur, layer, label)
            cur.execute(
                "SELECT snapshot FROM ioc.layer_versions WHERE layer_id = %s AND version = %s",
                (layer.id, version),
            )
            row = cur.fetchone()
            if row is None or row[0] is None:
                raise VersionNotFound(
                    f"Layer '{layer.id}' has no kept version {version}.", parameter="version"
                )
            cur.execute(f"DELETE FROM {layer.table_sql}")
            cur.execute(
                f"INSERT INTO {layer.table_sql} SELECT * FROM {qualified('versions', row[0])}"
            )
            report.version = current + 1
            report.feature_count = registry.update_stats(cur, layer.id)
            report.accepted = report.feature_count
            record_version(
                cur,
                layer,
                report.version,
                row[0],
                "restore",
                report.feature_count,
                None,
                label,
                restored_from=version,
            )
            write_audit(
                cur,
                principal,
                "layer.restore",
                layer.id,
                report.version,
                {"feature_count": report.feature_count},
                detail={"restored_from": version},
            )
            events.record_event(
                cur, layer.id, "layer.restore", report.version, count=report.feature_count
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return report


def list_versions(conn: PgConn, layer: Layer) -> list[dict[str, Any]]:
    """Kept and past versions of a layer, newest first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT version, operation, restored_from, feature_count, checksum, principal,"
            " created_at, snapshot IS NOT NULL FROM ioc.layer_versions WHERE layer_id = %s"
            " ORDER BY version DESC",
            (layer.id,),
        )
        rows = cur.fetchall()
    conn.rollback()
    keys = (
        "version",
        "operation",
        "restored_from",
        "feature_count",
        "checksum",
        "principal",
        "created_at",
        "restorable",
    )
    return [dict(zip(keys, row, strict=True)) for row in rows]
