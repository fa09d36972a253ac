"""Saved queries as derived layers.

An analyst saves a query with an id, titles and an access level; its result becomes the table
``data."<id>"`` (``fid``, one column per result column, ``geom`` in EPSG:4326 with a GiST
index), registered in ``ioc.layers`` with origin ``derived`` and a manifest generated from the
result columns. From then on it is a layer like the others: features, tiles, the catalog.

Refreshing recomputes it in one transaction — lock, recompute as its owner, replace the rows,
recount, bump the layer version (tile caches key on it), audit — on demand
(``POST /query/saved/{id}/refresh``) or every ``every`` (the job runner of the API process
refreshes due queries). A derived layer can never be more open than what it was computed from:
its access level is at least the strictest of the layers the query reads, and a restricted one
belongs to the department that owns the restricted sources.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from ioc.catalog.access import Principal, can_read
from ioc.catalog.layers import Catalog
from ioc.db.identifiers import qualified, quote_ident
from ioc.db.tables import DATA_SCHEMA, PG_TYPES
from ioc.errors import (
    Conflict,
    Forbidden,
    InvalidParameter,
    IocError,
    LayerNotFound,
    NotAuthenticated,
)
from ioc.query.analysis import GEOM, ORD, Plan
from ioc.query.model import LAYER_ID, QueryDoc, QuerySettings, parse_query
from ioc.query.runner import compile_plan, db_error, open_session, plan_query
from ioc.query.sql import Compiled

log = logging.getLogger("ioc.derived")

ACCESS_RANK = {"public": 0, "internal": 1, "restricted": 2}
SAVER_ROLES = ("analyst", "publisher", "admin")
DEFAULT_DEPARTMENT = "science_tech"  # the department that runs the IOC
_EVERY = re.compile(r"^\s*(\d{1,6})\s*(s|m|min|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}
_TYPES = ("Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon")


class Localized(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vi: str = Field(min_length=1, max_length=200)
    en: str = Field(min_length=1, max_length=200)


class SaveRequest(BaseModel):
    """A query to keep as a derived layer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "flood_reports_by_ward",
                    "access": "internal",
                    "every": "1h",
                    "title": {"vi": "Phản ánh ngập theo phường", "en": "Flood reports by ward"},
                    "query": {
                        "source": "reports_1022",
                        "filter": "category = 'ngập nước'",
                        "group_by": [{"ward": "current"}],
                        "aggregates": [{"op": "count"}],
                    },
                }
            ]
        },
    )

    id: str = Field(pattern=LAYER_ID, description='The new layer\'s id (table data."<id>").')
    title: Localized
    description: Localized | None = None
    access: Literal["public", "internal", "restricted"]
    every: int | str | None = Field(
        default=None,
        description=(
            "Refresh interval: seconds, or '30m', '2h', '1d'; none: refresh on demand only."
        ),
    )
    query: QueryDoc


def every_seconds(value: int | str | None, settings: QuerySettings) -> int | None:
    """The refresh interval in seconds; 400 when malformed or too short."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidParameter(
            "'every' is a number of seconds or '30m', '2h', '1d'.", parameter="every"
        )
    if isinstance(value, int):
        seconds = value
    else:
        match = _EVERY.match(value)
        if match is None:
            raise InvalidParameter(
                f"'every' must be seconds or like '30m', '2h', '1d', not {value[:40]!r}.",
                parameter="every",
            )
        seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    if not settings.saved_min_every_s <= seconds <= 366 * 86_400:
        raise InvalidParameter(
            f"'every' must be between {settings.saved_min_every_s} s and 366 days.",
            parameter="every",
        )
    return seconds


def check_saver(principal: Principal) -> None:
    if not principal.authenticated or principal.key_id is None:
        raise NotAuthenticated("Saving queries needs an API key: send 'Authorization: Bearer KEY'.")
    if principal.role not in SAVER_ROLES:
        raise Forbidden("Saving queries as layers is for analysts, publishers and admins.")


def department_for(plan: Plan, principal: Principal, access: str) -> str:
    """The owning department of a derived layer; 400/403 when the access level would show
    the sources to people who may not read them."""
    strictest = max(plan.layers, key=lambda layer: ACCESS_RANK[layer.access])
    if ACCESS_RANK[access] < ACCESS_RANK[strictest.access]:
        raise InvalidParameter(
            f"The query reads the {strictest.access} layer '{strictest.id}': the derived layer "
            f"must be {strictest.access} or stricter.",
            parameter="access",
        )
    departments = {layer.department for layer in plan.layers if layer.access == "restricted"}
    if access != "restricted":
        return principal.department or DEFAULT_DEPARTMENT
    if len(departments) > 1:
        raise InvalidParameter(
            "The query combines restricted layers of several departments: "
            "it cannot be saved as one department's layer.",
            parameter="access",
        )
    department = next(iter(departments), principal.department)
    if principal.role == "admin":
        return department or DEFAULT_DEPARTMENT
    if principal.role != "publisher" or department != principal.department:
        raise Forbidden(
            "A restricted layer belongs to a department: only its publishers (or "
            "an admin) may save one."
        )
    return department or DEFAULT_DEPARTMENT


def _cadence(seconds: int | None) -> str:
    if seconds is None:
        return "static"
    for limit, name in ((3600, "hourly"), (86_400, "daily"), (7 * 86_400, "weekly")):
        if seconds <= limit:
            return name
    return "monthly"


def _geometry_type(compiled: Compiled) -> str:
    return compiled.geometry_type if compiled.geometry_type in _TYPES else "Geometry"


def manifest_of(
    request: SaveRequest,
    plan: Plan,
    compiled: Compiled,
    department: str,
    every: int | None,
    principal: Principal,
) -> dict[str, Any]:
    """The derived layer's manifest, from the request and the result columns."""
    source = plan.source
    names = {c.name: c for c in compiled.columns}
    times = [c.name for c in compiled.columns if c.type in ("date", "timestamp")]
    time_attribute = (
        source.time_column if source.time_column in names else (times[0] if times else None)
    )
    unit_only = compiled.kind == "groups" and plan.unit is not None and len(plan.doc.group_by) == 1
    if compiled.kind == "features":
        style = dict(source.style or {})
        if style.get("by") not in names:
            style.pop("by", None)
            style["legend"] = [
                {"label": request.title.model_dump(), "color": style.get("color", "#3388ff")}
            ]
        zoom = {"min": source.zoom_min, "max": source.zoom_max}
    else:
        style = {
            "color": "#54278f",
            "fill": "#9e9ac8",
            "opacity": 0.6,
            "width": 0.8,
            "legend": [{"label": request.title.model_dump(), "color": "#9e9ac8"}],
        }
        zoom = {"min": 8, "max": 18}
    licences = sorted(
        {f"{layer.id}: {layer.source.get('licence', 'unknown')}" for layer in plan.layers}
    )
    description = (
        request.description.model_dump()
        if request.description
        else {
            "vi": f"Kết quả truy vấn đã lưu trên lớp '{source.id}'.",
            "en": f"Result of a saved query over layer '{source.id}'.",
        }
    )
    return {
        "id": request.id,
        "title": request.title.model_dump(),
        "description": description,
        "domain": "derived",
        "department": department,
        "keywords": ["truy vấn đã lưu", "saved query", *sorted({la.id for la in plan.layers})],
        "geometry": {"type": _geometry_type(compiled), "srid": 4326},
        "access": request.access,
        "cadence": _cadence(every),
        "source": {
            "name": f"Truy vấn đã lưu / Saved query ({principal.label})",
            "licence": "; ".join(licences),
        },
        "id_attribute": plan.unit.out_code if unit_only and plan.unit else None,
        "time_attribute": time_attribute,
        "zoom": zoom,
        "attributes": [c.as_attribute() for c in compiled.columns],
        "style": style,
    }


def _table_sql(layer_id: str, compiled: Compiled) -> list[str]:
    table = qualified(DATA_SCHEMA, layer_id)
    columns = ["fid bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"]
    for column in compiled.columns:
        if column.name in ("fid", "geom"):
            raise InvalidParameter(
                f"A result column cannot be named '{column.name}' in a layer: rename it with 'as'.",
                parameter="query",
            )
        columns.append(f"{quote_ident(column.name)} {PG_TYPES.get(column.type, 'text')}")
    columns.append(f"geom geometry({_geometry_type(compiled)}, 4326) NOT NULL")
    return [
        f"CREATE TABLE {table} ({', '.join(columns)})",
        f"CREATE INDEX {quote_ident(layer_id[:50] + '_geom_gist')} ON {table} USING gist (geom)",
    ]


async def _fill(conn, layer_id: str, compiled: Compiled) -> tuple[int, bool]:
    """Insert the result rows (in order); (rows kept, truncated at the row cap)."""
    table = qualified(DATA_SCHEMA, layer_id)
    names = [quote_ident(c.name) for c in compiled.columns]
    geometry = f"r.{GEOM}"
    if _geometry_type(compiled).startswith("Multi"):
        geometry = f"ST_Multi({geometry})"
    values = ", ".join([f"r.{n}" for n in names] + [geometry])
    await conn.execute(
        f"INSERT INTO {table} ({', '.join([*names, 'geom'])}) SELECT {values} "
        f"FROM ({compiled.sql}) r WHERE r.{GEOM} IS NOT NULL ORDER BY r.{ORD}",
        *compiled.args,
    )
    count = await conn.fetchval(f"SELECT count(*) FROM {table}")
    if count > compiled.limit:  # the statement reads one row more than the cap, to tell
        await conn.execute(f"DELETE FROM {table} WHERE fid = (SELECT max(fid) FROM {table})")
        return count - 1, True
    return count, False


STATS_SQL = """
WITH s AS (SELECT count(*) AS n, ST_Extent(geom) AS e FROM {table})
UPDATE ioc.layers SET feature_count = s.n,
    extent = CASE WHEN s.e IS NULL THEN NULL
                  ELSE ARRAY[ST_XMin(s.e), ST_YMin(s.e), ST_XMax(s.e), ST_YMax(s.e)] END,
    last_update = now(), updated_at = now(), version = version + $2,
    metadata = metadata || $3::jsonb
FROM s WHERE id = $1 RETURNING version, feature_count
"""


async def update_stats(conn, layer_id: str, *, bump: bool, metadata: dict[str, Any]):
    """Recount and re-extent a derived layer (EPSG:4326) in the caller's transaction: the
    asyncpg twin of ``layers.registry.update_stats``."""
    return await conn.fetchrow(
        STATS_SQL.format(table=qualified(DATA_SCHEMA, layer_id)),
        layer_id,
        1 if bump else 0,
        metadata,
    )


async def audit(
    conn,
    principal: Principal | str,
    action: str,
    layer_id: str,
    version: int,
    counts: dict[str, Any],
    detail: dict[str, Any] | None = None,
) -> None:
    """An audit record, as ``layers.publish.write_audit`` writes them."""
    label = principal if isinstance(principal, str) else principal.label
    key_id = None if isinstance(principal, str) else principal.key_id
    await conn.execute(
        "INSERT INTO ioc.audit (principal, key_id, action, layer_id, version, counts, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)",
        label,
        key_id,
        action,
        layer_id,
        version,
        counts,
        detail or {},
    )


REGISTER_SQL = """
INSERT INTO ioc.layers (id, schema_name, table_name, geometry_column, id_column, geometry_type,
    srid, title_vi, title_en, description_vi, description_en, domain, department, access, cadence,
    origin, manifest)
VALUES ($1, $2, $1, 'geom', 'fid', $3, 4326, $4, $5, $6, $7, 'derived', $8, $9, $10, 'derived',
    $11::jsonb)
"""


async def save(
    pool, catalog: Catalog, principal: Principal, request: SaveRequest, settings: QuerySettings
) -> dict[str, Any]:
    """Materialise a query as a new derived layer (one transaction); Conflict if the id is
    taken. The caller reloads the catalog."""
    check_saver(principal)
    every = every_seconds(request.every, settings)
    plan, timeout_ms = plan_query(request.query, catalog, principal, settings, job=True)
    department = department_for(plan, principal, request.access)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await open_session(conn, timeout_ms)
            taken = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM ioc.layers WHERE id = $1)"
                " OR to_regclass($2) IS NOT NULL",
                request.id,
                qualified(DATA_SCHEMA, request.id),
            )
            if taken:  # one sentence whatever takes it (as POST /layers): a layer the caller
                # sees, one hidden from them, a bare table — no restricted layer's existence leaks
                raise Conflict(
                    f"The id '{request.id}' is not available; choose another.", parameter="id"
                )
            compiled = await compile_plan(conn, plan, settings)
            if compiled.geometry_type is None:
                raise InvalidParameter(
                    "A layer needs geometries: return features, or group by "
                    "ward or district, with geometry true.",
                    parameter="query",
                )
            for statement in _table_sql(request.id, compiled):
                await conn.execute(statement)
            rows, truncated = await _fill(conn, request.id, compiled)
            manifest = manifest_of(request, plan, compiled, department, every, principal)
            await conn.execute(
                REGISTER_SQL,
                request.id,
                DATA_SCHEMA,
                manifest["geometry"]["type"],
                request.title.vi,
                request.title.en,
                manifest["description"]["vi"],
                manifest["description"]["en"],
                department,
                request.access,
                manifest["cadence"],
                json.dumps(manifest, ensure_ascii=False),
            )
            stats = await update_stats(
                conn, request.id, bump=False, metadata={"truncated": truncated}
            )
            document = request.query.model_dump(mode="json", by_alias=True, exclude_none=True)
            await conn.execute(
                "INSERT INTO ioc.saved_queries (layer_id, query, owner_key_id, owner, owner_role,"
                " owner_department, every, next_refresh_at, last_refresh_at) VALUES ($1, $2::jsonb,"
                " $3, $4, $5, $6, $7, now() + $7, now())",
                request.id,
                document,
                principal.key_id,
                principal.label,
                principal.role,
                principal.department,
                timedelta(seconds=every) if every else None,
            )
            await audit(
                conn,
                principal,
                "layer.derive",
                request.id,
                stats["version"],
                {"feature_count": rows, "truncated": truncated},
            )
    except asyncpg.PostgresError as exc:
        raise db_error(exc) from exc
    log.info("derived layer saved", extra={"layer": request.id, "rows": rows})
    return {
        "id": request.id,
        "version": stats["version"],
        "feature_count": rows,
        "truncated": truncated,
        "access": request.access,
        "department": department,
        "every": every,
    }


async def _saved_row(pool, layer_id: str):
    return await pool.fetchrow(
        "SELECT s.*, l.access, l.department, l.version, l.feature_count, l.title_vi, l.title_en"
        " FROM ioc.saved_queries s JOIN ioc.layers l ON l.id = s.layer_id"
        " WHERE s.layer_id = $1 AND l.deleted_at IS NULL",
        layer_id,
    )


async def _visible_row(pool, catalog: Catalog, principal: Principal, layer_id: str):
    row = await _saved_row(pool, layer_id) if re.match(LAYER_ID, layer_id) else None
    if row is None or not can_read(principal, _Guard(row["access"], row["department"])):
        raise LayerNotFound(f"There is no saved query '{layer_id}'.", parameter="id")
    return row


class _Guard:
    def __init__(self, access: str, department: str) -> None:
        self.access = access
        self.department = department


def saved_doc(row: Any) -> dict[str, Any]:
    every = row["every"]
    return {
        "id": row["layer_id"],
        "title": {"vi": row["title_vi"], "en": row["title_en"]},
        "access": row["access"],
        "department": row["department"],
        "owner": row["owner"],
        "every": int(every.total_seconds()) if every else None,
        "version": row["version"],
        "feature_count": row["feature_count"],
        "last_refresh_at": row["last_refresh_at"].isoformat() if row["last_refresh_at"] else None,
        "next_refresh_at": row["next_refresh_at"].isoformat() if row["next_refresh_at"] else None,
        "last_error": row["last_error"],
        "query": row["query"],
    }


async def get_saved(pool, catalog: Catalog, principal: Principal, layer_id: str) -> dict:
    """A saved query the caller may read (404 otherwise)."""
    return saved_doc(await _visible_row(pool, catalog, principal, layer_id))


async def list_saved(pool, catalog: Catalog, principal: Principal) -> list[dict[str, Any]]:
    """Saved queries whose layers the caller may read."""
    rows = await pool.fetch(
        "SELECT s.*, l.access, l.department, l.version, l.feature_count, l.title_vi, l.title_en"
        " FROM ioc.saved_queries s JOIN ioc.layers l ON l.id = s.layer_id"
        " WHERE l.deleted_at IS NULL ORDER BY s.layer_id"
    )
    return [saved_doc(r) for r in rows if can_read(principal, _Guard(r["access"], r["department"]))]


def _may_manage(principal: Principal, row: Any) -> None:
    if principal.role != "admin" and (
        principal.key_id is None or principal.key_id != row["owner_key_id"]
    ):
        raise Forbidden("Only the owner of a saved query (or an admin) may refresh or delete it.")


async def _owner(pool, row: Any) -> Principal:
    if row["owner_key_id"] is not None:
        active = await pool.fetchval(
            "SELECT revoked_at IS NULL FROM ioc.api_keys WHERE id = $1", row["owner_key_id"]
        )
        if not active:
            raise Forbidden("The API key that saved this query has been revoked: save it again.")
    return Principal(
        role=row["owner_role"], department=row["owner_department"], key_id=row["owner_key_id"]
    )


async def refresh(
    pool,
    catalog: Catalog,
    layer_id: str,
    settings: QuerySettings,
    principal: Principal | None = None,
) -> dict[str, Any]:
    """Recompute a derived layer as its owner and bump its version; ``principal`` None is the
    scheduler. A failure is recorded in ``last_error`` and leaves the layer as it was."""
    if principal is not None:
        row = await _visible_row(pool, catalog, principal, layer_id)
        _may_manage(principal, row)
    else:
        row = await _saved_row(pool, layer_id)
        if row is None:
            raise LayerNotFound(f"There is no saved query '{layer_id}'.", parameter="id")
    try:
        result = await _recompute(pool, catalog, row, settings, principal)
    except IocError as exc:
        await pool.execute(
            "UPDATE ioc.saved_queries SET last_error = $2 WHERE layer_id = $1",
            layer_id,
            exc.message,
        )
        raise
    log.info("derived layer refreshed", extra={"layer": layer_id, **result})
    return result


async def _recompute(
    pool, catalog: Catalog, row: Any, settings: QuerySettings, principal: Principal | None
) -> dict[str, Any]:
    layer_id = row["layer_id"]
    owner = await _owner(pool, row)
    doc = parse_query(row["query"])
    plan, timeout_ms = plan_query(doc, catalog, owner, settings, job=True)
    department_for(plan, owner, row["access"])  # the sources may have become stricter
    try:
        async with pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    "SELECT 1 FROM ioc.saved_queries WHERE layer_id = $1 FOR UPDATE NOWAIT",
                    layer_id,
                )
            except asyncpg.LockNotAvailableError:
                raise Conflict(f"Saved query '{layer_id}' is being refreshed.") from None
            await open_session(conn, timeout_ms)
            compiled = await compile_plan(conn, plan, settings)
            await _check_columns(conn, layer_id, compiled)
            await conn.execute(f"DELETE FROM {qualified(DATA_SCHEMA, layer_id)}")
            rows, truncated = await _fill(conn, layer_id, compiled)
            stats = await update_stats(conn, layer_id, bump=True, metadata={"truncated": truncated})
            await conn.execute(
                "UPDATE ioc.saved_queries SET last_refresh_at = now(), last_error = NULL,"
                " next_refresh_at = CASE WHEN every IS NULL THEN NULL ELSE now() + every END"
                " WHERE layer_id = $1",
                layer_id,
            )
            await audit(
                conn,
                principal or "scheduler",
                "layer.refresh",
                layer_id,
                stats["version"],
                {"feature_count": rows, "truncated": truncated},
            )
    except asyncpg.PostgresError as exc:
        raise db_error(exc) from exc
    return {
        "id": layer_id,
        "version": stats["version"],
        "feature_count": rows,
        "truncated": truncated,
    }


async def _check_columns(conn, layer_id: str, compiled: Compiled) -> None:
    """The result still has the table's columns (a source layer's schema may have changed)."""
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
        " to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attname NOT IN ('fid', 'geom')"
        " ORDER BY attnum",
        qualified(DATA_SCHEMA, layer_id),
    )
    have = [(name, kind) for name, kind in rows]
    want = [
        (
            c.name,
            {"timestamptz": "timestamp with time zone"}.get(
                PG_TYPES.get(c.type, "text"), PG_TYPES.get(c.type, "text")
            ),
        )
        for c in compiled.columns
    ]
    if have != want:
        raise InvalidParameter(
            f"The result columns of saved query '{layer_id}' changed (a source "
            "layer's schema changed?): save it again under a new id.",
            parameter="query",
        )


DUE_SQL = """
UPDATE ioc.saved_queries SET next_refresh_at = now() + every
WHERE layer_id = (SELECT s.layer_id FROM ioc.saved_queries s JOIN ioc.layers l
                  ON l.id = s.layer_id AND l.deleted_at IS NULL
                  WHERE s.next_refresh_at <= now() ORDER BY s.next_refresh_at
                  FOR UPDATE OF s SKIP LOCKED LIMIT 1)
RETURNING layer_id
"""


async def refresh_due(pool, catalog: Catalog, settings: QuerySettings, limit: int = 20) -> int:
    """Refresh the saved queries whose time has come (claimed one at a time, so that several
    processes share them); returns how many were refreshed."""
    done = 0
    for _ in range(limit):
        layer_id = await pool.fetchval(DUE_SQL)
        if layer_id is None:
            break
        try:
            await refresh(pool, catalog, layer_id, settings)
            done += 1
        except IocError as exc:
            log.warning("scheduled refresh failed", extra={"layer": layer_id, "error": exc.message})
    return done


async def delete(pool, catalog: Catalog, principal: Principal, layer_id: str) -> None:
    """Remove a saved query: its layer leaves the catalog (soft delete), its table is dropped."""
    row = await _visible_row(pool, catalog, principal, layer_id)
    _may_manage(principal, row)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM ioc.saved_queries WHERE layer_id = $1", layer_id)
        await conn.execute(
            "UPDATE ioc.layers SET deleted_at = now(), updated_at = now(),"
            " version = version + 1 WHERE id = $1",
            layer_id,
        )
        await conn.execute(f"DROP TABLE IF EXISTS {qualified(DATA_SCHEMA, layer_id)}")
        await audit(conn, principal, "layer.delete", layer_id, row["version"] + 1, {})


def parse_save(data: Any) -> SaveRequest:
    """A save request from JSON; InvalidParameter naming the first bad field."""
    from pydantic import ValidationError

    try:
        return SaveRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidParameter(
            f"Invalid saved query at '{where}': {first.get('msg')}.", parameter=where
        ) from None
