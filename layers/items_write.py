"""Writing single features (OGC API – Features Part 4): create, replace, update, delete.

Every write runs in one transaction that locks the layer's registry row (as a publish does),
checks the geometry in a staging table with the publish's own checks (type, validity, city
extent, CRS with the VN-2000 shift), coerces properties with the publish's conversions,
changes the live rows, bumps the layer version (tiles and collection ETags key on it) and
its count and extent without a recount, records the version and writes an audit row, then
re-links only the written features to digital addresses. Versions of item writes keep no
snapshot (not restorable). ``If-Match`` is checked under that lock against the feature's own
content digest (``ioc.features.items.digest_sql``, the one its ETag carries), so a write to
another feature never makes it stale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg2

from ioc.catalog.access import Principal
from ioc.catalog.layers import Layer
from ioc.db.connection import PgConn
from ioc.db.identifiers import quote_ident
from ioc.errors import FeatureNotFound, InvalidParameter, PreconditionFailed, UploadRejected
from ioc.events import log as events
from ioc.features.binds import ALIAS, column
from ioc.features.crs import CRS84, parse_crs
from ioc.features.items import digest_sql, tag_digests
from layers import registry
from layers.feed_pool import pooled
from layers.publish_staging import _coerce, create_staging, validate_geometry
from layers.publish_versions import lock_and_version, principal_label, record_version, write_audit
from layers.publishing import PublishingSettings, after_publish, check_can_write

Operation = Literal["create", "replace", "update", "delete"]


@dataclass
class WriteResult:
    """What a write did: the ids it touched and the layer's new version."""

    ids: list[str] = field(default_factory=list)
    version: int = 0


@dataclass
class _Feature:
    properties: dict[str, Any]
    geometry: dict[str, Any] | None


def _features(body: Any, many: bool) -> list[_Feature]:
    """The features of a GeoJSON Feature (or FeatureCollection when ``many``)."""
    if not isinstance(body, dict):
        raise InvalidParameter("The body must be a GeoJSON Feature.", parameter="body")
    if many and body.get("type") == "FeatureCollection":
        found = body.get("features")
        if not isinstance(found, list) or not found:
            raise InvalidParameter(
                "The FeatureCollection has no 'features' array.", parameter="body"
            )
        return [_feature(f, i) for i, f in enumerate(found)]
    return [_feature(body, None)]


def _feature(doc: Any, index: int | None, patch: bool = False) -> _Feature:
    where = f"feature {index}" if index is not None else "the feature"
    if not isinstance(doc, dict) or doc.get("type", "Feature" if patch else None) != "Feature":
        raise InvalidParameter(f"{where.capitalize()} is not a GeoJSON Feature.", parameter="body")
    props, geom = doc.get("properties") or {}, doc.get("geometry")
    if not isinstance(props, dict):
        raise InvalidParameter(f"'properties' of {where} must be an object.", parameter="body")
    if geom is not None and not isinstance(geom, dict):
        raise InvalidParameter(f"'geometry' of {where} must be an object.", parameter="body")
    return _Feature(props, geom)


def _values(layer: Layer, props: dict[str, Any], where: str, full: bool) -> dict[str, Any]:
    """Properties coerced to the attributes' types (a full set when ``full``: absent = NULL)."""
    known = {a.name: a for a in layer.attributes}
    unknown = [k for k in props if k not in known and k != layer.id_column]
    if unknown:
        raise UploadRejected(
            f"{where.capitalize()} has properties that layer '{layer.id}' does not know: "
            f"{', '.join(unknown[:10])}.",
            {"unknown_fields": unknown[:10]},
        )
    out: dict[str, Any] = {}
    for attr in layer.attributes:
        if attr.name not in props and not full:
            continue
        try:
            value = _coerce(attr, props.get(attr.name))
        except ValueError as exc:
            raise UploadRejected(f"{where.capitalize()}: {exc}.") from None
        if value is None and attr.required:
            raise UploadRejected(f"{where.capitalize()}: required property '{attr.name}' is empty.")
        out[attr.name] = value
    return out


def _stage(cur, layer: Layer, geometries: list[dict[str, Any]], content_crs: str | None) -> str:
    """Stage the geometries (row = index) and run the publish's checks; 422 on the first bad."""
    crs = parse_crs(content_crs, parameter="Content-Crs", storage_srid=layer.srid, default=CRS84)
    table = create_staging(cur, layer)
    geom = "ST_GeomFromGeoJSON(%s)"
    if crs.lat_lon:  # Part 2: coordinates in the CRS's axis order (EPSG:4326 is lat, lon)
        geom = f"ST_FlipCoordinates({geom})"
    for row, doc in enumerate(geometries):
        cur.execute("SAVEPOINT geojson")
        try:
            cur.execute(
                f"INSERT INTO {table} (_row, geom_src) VALUES (%s, {geom})", (row, json.dumps(doc))
            )
        except psycopg2.Error:
            cur.execute("ROLLBACK TO SAVEPOINT geojson")
            raise UploadRejected(f"Geometry {row} is not valid GeoJSON.") from None
    validate_geometry(cur, table, layer, crs.srid, "reject")
    cur.execute(f"SELECT _row, _reason FROM {table} WHERE _reason IS NOT NULL ORDER BY _row")
    bad = cur.fetchall()
    if bad:
        reasons = [{"row": row, "reason": reason} for row, reason in bad]
        where = f"feature {bad[0][0]}" if len(geometries) > 1 else "the feature"
        raise UploadRejected(
            f"The geometry of {where} is refused: {bad[0][1]} (nothing was written).",
            {"reasons": reasons},
        )
    return table


def _check_target(cur, layer: Layer, feature_id: str | None, if_match: str | None) -> None:
    """404 for an unknown feature; 412 when ``If-Match`` names none of its current states.
    The caller holds the layer lock, so the feature cannot change before its write."""
    cur.execute("SAVEPOINT target")
    try:
        cur.execute(
            f"SELECT {digest_sql(layer)} FROM {layer.table_sql} {ALIAS}"
            f" WHERE {column(layer, layer.id_column)} = %s",
            (feature_id,),
        )
        found = cur.fetchone()
    except psycopg2.DataError:  # an id that cannot be of the id column's type
        cur.execute("ROLLBACK TO SAVEPOINT target")
        found = None
    if found is None:
        raise FeatureNotFound(
            f"Collection '{layer.id}' has no feature '{feature_id}'.", parameter="featureId"
        )
    wanted = tag_digests(if_match)
    if wanted is not None and "*" not in wanted and found[0] not in wanted:
        raise PreconditionFailed(
            f"Feature '{feature_id}' changed since that ETag was issued (If-Match): "
            "fetch it again and retry with its new ETag."
        )


def _assignments(layer: Layer, values: dict[str, Any]) -> tuple[list[str], list[Any]]:
    return [f"{quote_ident(k)} = %s" for k in values], list(values.values())


def write(
    settings: PublishingSettings,
    layer: Layer,
    principal: Principal,
    op: Operation,
    *,
    body: Any = None,
    feature_id: str | None = None,
    content_crs: str | None = None,
    if_match: str | None = None,
) -> WriteResult:
    """One Part 4 operation in one transaction (all or nothing for a FeatureCollection)."""
    check_can_write(principal, layer)
    if op == "update":
        feats = [_feature(body, None, patch=True)]
    else:
        feats = _features(body, many=op == "create") if op != "delete" else []
    values = [
        _values(
            layer, f.properties, f"feature {i}" if len(feats) > 1 else "the feature", op != "update"
        )
        for i, f in enumerate(feats)
    ]
    if op == "update":  # merge patch: only the properties named (null removes → NULL)
        values[0] = {k: v for k, v in values[0].items() if k in feats[0].properties}
    # A kept connection: a fresh one costs a backend start and, on its first geometry, loading
    # PostGIS and the CRS (30-55 ms, under the layer's write lock).
    with pooled(settings.database) as conn:
        try:
            result = _apply(
                conn, layer, principal, op, feats, values, feature_id, content_crs, if_match
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        after_publish(conn, layer, settings.addresses, ids=result.ids)  # only those written
    return result


def _apply(
    conn: PgConn,
    layer: Layer,
    principal: Principal,
    op: Operation,
    feats: list[_Feature],
    values: list[dict[str, Any]],
    feature_id: str | None,
    content_crs: str | None,
    if_match: str | None,
) -> WriteResult:
    label = principal_label(principal)
    ident, geom_col = quote_ident(layer.id_column), quote_ident(layer.geometry_column)
    with conn.cursor() as cur:
        current = lock_and_version(cur, layer, label)
        if op != "create":
            _check_target(cur, layer, feature_id, if_match)
        geometries = [f.geometry for f in feats if f.geometry is not None]
        if op in ("create", "replace"):
            missing = [i for i, f in enumerate(feats) if f.geometry is None]
            if missing:
                raise UploadRejected(f"Feature {missing[0]} has no geometry.")
        table = _stage(cur, layer, geometries, content_crs) if geometries else None
        staged = f"(SELECT geom FROM {table} WHERE _row = %s)"
        ids: list[str] = []
        bbox: events.Bbox | None = None  # the touched features' extent, before and after
        if op == "create":
            for row, vals in enumerate(values):
                cols = [quote_ident(k) for k in vals] + [geom_col]
                cur.execute(
                    f"INSERT INTO {layer.table_sql} ({', '.join(cols)}) VALUES "
                    f"({', '.join(['%s'] * len(vals))}, {staged}) RETURNING {ident}::text",
                    (*vals.values(), row),
                )
                new = cur.fetchone()
                assert new is not None  # RETURNING of an INSERT of one row
                ids.append(new[0])
        else:
            sets, params = _assignments(layer, values[0] if values else {})
            if table is not None:
                sets.append(f"{geom_col} = {staged}")
                params.append(0)
            sql = (
                f"DELETE FROM {layer.table_sql} WHERE {ident} = %s"
                if op == "delete"
                else f"UPDATE {layer.table_sql} SET {', '.join(sets) or f'{ident} = {ident}'}"
                f" WHERE {ident} = %s"
            )
            where = f"{layer.table_sql} WHERE {ident} = %s"
            bbox = events.fetch_extent(cur, events.extent_sql(geom_col, where), [feature_id])
            cur.execute(sql, (*params, feature_id))  # it exists: _check_target, under the lock
            ids.append(str(feature_id))
        placed = None  # where the written geometries are: the layer's extent covers them
        if table is not None:
            placed = events.fetch_extent(cur, events.extent_sql("geom", table))
            bbox = events.union(bbox, placed)
            cur.execute(f"DROP TABLE {table}")
        version = current + 1
        added = {"create": len(ids), "delete": -1}.get(op, 0)
        count = registry.bump_stats(cur, layer.id, added, placed)  # no recount of the layer
        record_version(cur, layer, version, None, f"item.{op}", count, None, label)  # type: ignore[arg-type]  # no snapshot
        write_audit(
            cur,
            principal,
            f"item.{op}",
            layer.id,
            version,
            {"features": len(ids)},
            detail={"ids": ids[:100]},
        )
        events.record_event(cur, layer.id, f"item.{op}", version, ids, bbox=bbox)
    return WriteResult(ids=ids, version=version)
