"""Saved queries as derived layers.

An analyst saves a query with an id, titles and an access level; its result becomes the table
``data."<id>"`` (``fid``, one column per result column, ``geom`` in EPSG:4326 with a GiST
index), registered in ``ioc.layers`` with origin ``derived`` and a manifest generated from the
result columns. From then on it is a layer like the others: features, tiles, the catalog.

A derived layer can never be more open than what it was computed from: its access level is at
least the strictest of the layers the query reads, and a restricted one belongs to the department
that owns the restricted sources. Refreshing, reading and deleting are
``ioc.query.saved_refresh``; the table's DDL, rows and statistics ``ioc.query.saved_table``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.db.connection import Pool
from ioc.db.identifiers import qualified
from ioc.db.tables import DATA_SCHEMA
from ioc.errors import Conflict, Forbidden, InvalidParameter, NotAuthenticated
from ioc.query.analysis import Plan
from ioc.query.model import LAYER_ID, QueryDoc, QuerySettings
from ioc.query.runner import compile_plan, db_error, open_session, plan_query
from ioc.query.saved_table import audit, fill, geometry_type, table_sql, update_stats
from ioc.query.sql import Compiled

log = logging.getLogger("ioc.derived")

ACCESS_RANK = {"public": 0, "internal": 1, "restricted": 2}
SAVER_ROLES = ("analyst", "publisher", "admin")
DEFAULT_DEPARTMENT = "science_tech"  # the department that runs the IOC
_EVERY = re.compile(r"^\s*(\d{1,6})\s*(s|m|min|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}


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
        "geometry": {"type": geometry_type(compiled), "srid": 4326},
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


REGISTER_SQL = """
INSERT INTO ioc.layers (id, schema_name, table_name, geometry_column, id_column, geometry_type,
    srid, title_vi, title_en, description_vi, description_en, domain, department, access, cadence,
    origin, manifest)
VALUES ($1, $2, $1, 'geom', 'fid', $3, 4326, $4, $5, $6, $7, 'derived', $8, $9, $10, 'derived',
    $11::jsonb)
"""


async def save(
    pool: Pool,
    catalog: Catalog,
    principal: Principal,
    request: SaveRequest,
    settings: QuerySettings,
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
            for statement in table_sql(request.id, compiled):
                await conn.execute(statement)
            rows, truncated = await fill(conn, request.id, compiled)
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
