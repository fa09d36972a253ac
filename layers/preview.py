"""Dry runs: an upload validated and compared with the live layer, nothing published.

A dry run stages the upload as a publish does (``layers.publish.stage_source``) and answers the
report plus what would change against the live data (features added, removed, modified) and
the new data's extent. Kept for a while as a *preview* — the staging table
``staging."_preview_<sha256(token)>"``, whose comment holds who made it, for which layer, the
layer's version then, the report and when it expires — it can be drawn on a map and published
without sending the file again. The table *is* the preview: publishing or discarding it is one
DROP, an expired one is dropped when the next preview is made, and nothing but the holder of
the token (the same API key, or an admin) can use it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2.errors

from ioc.catalog.access import Principal
from ioc.catalog.layers import Layer
from ioc.db.connection import PgConn, scalar
from ioc.db.identifiers import qualified, quote_ident
from ioc.errors import Conflict, PreviewNotFound
from layers.publish_staging import PublishReport

PREFIX = "_preview_"
FEATURE_LIMIT = 10_000  # features a preview map gets (the report counts them all)


@dataclass
class Preview:
    """A kept dry run (its table's comment, decoded)."""

    table: str
    layer: str
    manifest: dict[str, Any] | None  # the new layer's manifest; None for a new version
    mode: str
    partial: bool
    key_id: int | None
    principal: str
    live_version: int
    expires_at: datetime
    report: dict[str, Any]


def _table_name(token: str) -> str:
    # The name holds a digest of the token, never the token: reading pg_tables gives no access.
    return PREFIX + hashlib.sha256(token.encode()).hexdigest()[:40]


def preview_table_name() -> tuple[str, str]:
    """A new preview token and the staging table name that goes with it."""
    token = secrets.token_urlsafe(24)
    return token, _table_name(token)


def changes(cur, table: str, layer: Layer, mode: str, new: bool) -> dict[str, int]:
    """Features the staged upload adds, removes and modifies against the live table.

    Matched by the layer's id attribute; without one, identical rows (attributes and geometry)
    are unchanged and every other row counts as added or removed."""
    cur.execute(f"SELECT count(*) FROM {table} WHERE _reason IS NULL")
    accepted = scalar(cur)
    if new or mode == "append":
        return {"added": accepted, "removed": 0, "modified": 0, "unchanged": 0}
    attrs = [quote_ident(a.name) for a in layer.attributes]
    live_geom = quote_ident(layer.geometry_column)
    if layer.id_attribute:
        ident = quote_ident(layer.id_attribute)
        row_s = ", ".join([f"s.{a}" for a in attrs] + ["ST_AsEWKB(s.geom)"])
        row_l = ", ".join([f"l.{a}" for a in attrs] + [f"ST_AsEWKB(l.{live_geom})"])
        cur.execute(
            f"""SELECT count(*) FILTER (WHERE l.{ident} IS NULL),
                       count(*) FILTER (WHERE l.{ident} IS NOT NULL
                                        AND ({row_s}) IS DISTINCT FROM ({row_l}))
                FROM {table} s LEFT JOIN {layer.table_sql} l ON l.{ident} = s.{ident}
                WHERE s._reason IS NULL"""
        )
        added, modified = cur.fetchone()
        cur.execute(
            f"""SELECT count(*) FROM {layer.table_sql} l WHERE NOT EXISTS
                (SELECT 1 FROM {table} s WHERE s._reason IS NULL AND s.{ident} = l.{ident})"""
        )
        removed = scalar(cur)
        return {
            "added": added,
            "removed": removed,
            "modified": modified,
            "unchanged": accepted - added - modified,
        }
    digest_s = "md5(row(" + ", ".join([*attrs, "ST_AsEWKB(geom)"]) + ")::text)"
    digest_l = "md5(row(" + ", ".join([*attrs, f"ST_AsEWKB({live_geom})"]) + ")::text)"
    cur.execute(
        f"""WITH s AS (SELECT {digest_s} AS h, count(*) AS n FROM {table}
                       WHERE _reason IS NULL GROUP BY 1),
                 l AS (SELECT {digest_l} AS h, count(*) AS n FROM {layer.table_sql} GROUP BY 1)
            SELECT coalesce(sum(least(s.n, l.n)), 0), (SELECT coalesce(sum(n), 0) FROM l)
            FROM s JOIN l USING (h)"""
    )
    same, live = cur.fetchone()
    return {"added": accepted - same, "removed": live - same, "modified": 0, "unchanged": same}


def extent(cur, table: str) -> list[float] | None:
    """The accepted features' WGS 84 extent."""
    cur.execute(
        f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT"
        f" ST_Extent(ST_Transform(geom, 4326)) AS e FROM {table} WHERE _reason IS NULL) t"
    )
    row = cur.fetchone()
    return None if row is None or row[0] is None else [round(v, 7) for v in row]


def keep(
    conn: PgConn,
    table: str,
    token: str,
    *,
    layer: Layer,
    manifest: dict[str, Any] | None,
    mode: str,
    partial: bool,
    principal: Principal,
    minutes: int,
    report: dict[str, Any],
) -> dict[str, Any]:
    """Describe the staged ``table`` as a preview in its comment; returns token and expiry."""
    expires = datetime.now(UTC) + timedelta(minutes=minutes)
    meta = {
        "layer": layer.id,
        "manifest": manifest,
        "mode": mode,
        "partial": partial,
        "key_id": principal.key_id,
        "principal": principal.label,
        "live_version": layer.version,
        "expires_at": expires.isoformat(),
        "report": report,
    }
    with conn.cursor() as cur:
        cur.execute(f"COMMENT ON TABLE {table} IS %s", (json.dumps(meta, ensure_ascii=False),))
    conn.commit()
    return {"token": token, "expires_at": expires.isoformat(), "minutes": minutes}


def purge_expired(conn: PgConn) -> int:
    """Drop previews past their time (when a new one is made: no timer)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT tablename, obj_description(format('staging.%%I', tablename)::regclass,"
            " 'pg_class') FROM pg_tables WHERE schemaname = 'staging' AND tablename LIKE %s",
            (PREFIX.replace("_", r"\_") + "%",),
        )
        dropped = 0
        for name, comment in cur.fetchall():
            meta = json.loads(comment) if comment else {}
            expires = meta.get("expires_at")
            if expires is None or datetime.fromisoformat(expires) <= datetime.now(UTC):
                cur.execute(f"DROP TABLE IF EXISTS {qualified('staging', name)}")
                dropped += 1
    conn.commit()
    return dropped


_GONE = (
    "There is no preview with this token: it expired, was published or discarded, or "
    "belongs to another key; upload the file again."
)


def load(conn: PgConn, token: str, principal: Principal, *, lock: bool = False) -> Preview:
    """The preview of ``token`` for this caller; ``lock`` holds it for this transaction (a
    second publish of the same preview waits, then finds it gone)."""
    name = _table_name(token)
    table = qualified("staging", name)
    with conn.cursor() as cur:
        try:
            if lock:
                cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            cur.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (f"staging.{name}",))
            comment = scalar(cur)
        except psycopg2.errors.UndefinedTable:
            conn.rollback()
            comment = None
    if not comment:
        raise PreviewNotFound(_GONE, parameter="token")
    meta = json.loads(comment)
    preview = Preview(
        table=table,
        layer=meta["layer"],
        manifest=meta.get("manifest"),
        mode=meta["mode"],
        partial=bool(meta.get("partial")),
        key_id=meta.get("key_id"),
        principal=meta.get("principal", ""),
        live_version=int(meta.get("live_version", 0)),
        expires_at=datetime.fromisoformat(meta["expires_at"]),
        report=meta.get("report", {}),
    )
    if preview.expires_at <= datetime.now(UTC):
        raise PreviewNotFound(_GONE, parameter="token")
    if principal.role != "admin" and (
        principal.key_id is None or principal.key_id != preview.key_id
    ):
        raise PreviewNotFound(_GONE, parameter="token")
    return preview


def features(conn: PgConn, preview: Preview, limit: int = FEATURE_LIMIT) -> dict[str, Any]:
    """The preview's accepted features as GeoJSON (WGS 84, at most ``limit``), with ``_row``
    (the file's row number) and ``_repaired``."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT json_build_object('type', 'FeatureCollection',
                  'numberMatched', (SELECT count(*) FROM {preview.table} WHERE _reason IS NULL),
                  'features', coalesce(json_agg(json_build_object('type', 'Feature',
                      'geometry', ST_AsGeoJSON(ST_Transform(geom, 4326), 7)::json,
                      'properties', to_jsonb(t) - 'geom' - 'geom_src' - '_reason')), '[]'))
                FROM (SELECT * FROM {preview.table} WHERE _reason IS NULL
                      ORDER BY _row LIMIT %s) t""",
            (limit,),
        )
        doc = scalar(cur)
    conn.rollback()
    doc["numberReturned"] = len(doc["features"])
    return doc


def check_current(preview: Preview, version: int) -> None:
    """Conflict when the live layer changed since the preview was made (its diff is stale)."""
    if version != preview.live_version:
        raise Conflict(
            f"Layer '{preview.layer}' changed since this preview (version "
            f"{preview.live_version} → {version}): preview the file again.",
            parameter="token",
        )


def report_of(preview: Preview) -> PublishReport:
    """The preview's validation report, as a publish report to complete."""
    fields = PublishReport.__dataclass_fields__
    return PublishReport(**{k: v for k, v in preview.report.items() if k in fields})


def drop(conn: PgConn, preview: Preview) -> None:
    """Discard a preview (in the caller's transaction when it has one open)."""
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {preview.table}")
