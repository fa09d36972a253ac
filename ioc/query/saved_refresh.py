"""Reading, refreshing, scheduling and deleting saved queries (derived layers).

Refreshing recomputes a derived layer in one transaction — lock, recompute as its owner,
replace the rows, recount, bump the layer version (tile caches key on it), audit — on demand
(``POST /query/saved/{id}/refresh``) or every ``every`` (the job runner of the API process
refreshes due queries, ``refresh_due``). Saving is ``ioc.query.saved``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg

from ioc.catalog.access import Principal, can_read
from ioc.catalog.layers import Catalog
from ioc.db.connection import Pool
from ioc.db.identifiers import qualified
from ioc.db.tables import DATA_SCHEMA
from ioc.errors import Conflict, Forbidden, IocError, LayerNotFound
from ioc.query.model import LAYER_ID, QuerySettings, parse_query
from ioc.query.runner import compile_plan, db_error, open_session, plan_query
from ioc.query.saved import department_for
from ioc.query.saved_table import audit, check_columns, fill, update_stats

log = logging.getLogger("ioc.derived")


async def _saved_row(pool: Pool, layer_id: str):
    return await pool.fetchrow(
        "SELECT s.*, l.access, l.department, l.version, l.feature_count, l.title_vi, l.title_en"
        " FROM ioc.saved_queries s JOIN ioc.layers l ON l.id = s.layer_id"
        " WHERE s.layer_id = $1 AND l.deleted_at IS NULL",
        layer_id,
    )


async def _visible_row(pool: Pool, catalog: Catalog, principal: Principal, layer_id: str):
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


async def get_saved(pool: Pool, catalog: Catalog, principal: Principal, layer_id: str) -> dict:
    """A saved query the caller may read (404 otherwise)."""
    return saved_doc(await _visible_row(pool, catalog, principal, layer_id))


async def list_saved(pool: Pool, catalog: Catalog, principal: Principal) -> list[dict[str, Any]]:
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


async def _owner(pool: Pool, row: Any) -> Principal:
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
    pool: Pool,
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
    pool: Pool, catalog: Catalog, row: Any, settings: QuerySettings, principal: Principal | None
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
            await check_columns(conn, layer_id, compiled)
            await conn.execute(f"DELETE FROM {qualified(DATA_SCHEMA, layer_id)}")
            rows, truncated = await fill(conn, layer_id, compiled)
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


DUE_SQL = """
UPDATE ioc.saved_queries SET next_refresh_at = now() + every
WHERE layer_id = (SELECT s.layer_id FROM ioc.saved_queries s JOIN ioc.layers l
                  ON l.id = s.layer_id AND l.deleted_at IS NULL
                  WHERE s.next_refresh_at <= now() ORDER BY s.next_refresh_at
                  FOR UPDATE OF s SKIP LOCKED LIMIT 1)
RETURNING layer_id
"""


async def refresh_due(
    pool: Pool, catalog: Catalog, settings: QuerySettings, limit: int = 20
) -> int:
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


async def delete(pool: Pool, catalog: Catalog, principal: Principal, layer_id: str) -> None:
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
