"""Running queries: limits per role, the statement, and the answer as GeoJSON, CSV or GeoPackage.

Each query runs in a read-only transaction with ``SET LOCAL statement_timeout`` for the
caller's role (``IOC_QUERY_TIMEOUT_<ROLE>_S``) and the city's time zone, so that time buckets
and timestamps read as Vietnamese local time. At most the role's row cap comes back
(``IOC_QUERY_ROWS_<ROLE>``); the answer says when it was truncated. GeoJSON and CSV records
are written by PostgreSQL (as for ``/items``) and streamed from a server-side cursor; a
GeoPackage is written with pyogrio to a temporary file, then streamed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from ioc import media
from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.db.connection import Pool
from ioc.db.identifiers import quote_ident
from ioc.errors import InvalidParameter, QueryTimeout
from ioc.features.items import prepend
from ioc.query import units
from ioc.query.analysis import CITY_TZ_NAME, GEOM, ID, ORD, Plan, analyse, resolve
from ioc.query.model import QueryDoc, QuerySettings, limits_for
from ioc.query.sql import Compiled, build

MEDIA_TYPES = {"geojson": media.GEOJSON, "csv": media.CSV_UTF8, "gpkg": media.GEOPACKAGE}
EXTENSIONS = {"geojson": "geojson", "csv": "csv", "gpkg": "gpkg"}
BATCH = 1000  # rows per cursor round trip


@dataclass
class Outcome:
    """Counters of an answer being produced; final once the stream has ended."""

    returned: int = 0
    truncated: bool = False
    columns: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Answer:
    """A query's answer: media type, a file name for downloads, and the bytes."""

    media_type: str
    filename: str
    chunks: AsyncIterator[bytes]
    outcome: Outcome


def plan_query(
    doc: QueryDoc,
    catalog: Catalog,
    principal: Principal,
    settings: QuerySettings,
    *,
    job: bool = False,
) -> tuple[Plan, int]:
    """Check a document for a caller: (plan, statement timeout in ms). 400/401/404 here."""
    timeout_ms, max_rows = limits_for(settings, principal, job=job)
    return analyse(doc, catalog, principal, max_rows, settings), timeout_ms


async def open_session(conn, timeout_ms: int) -> None:
    """Inside a transaction: the role's statement timeout, city time for timestamps, and
    plans made for the actual values (a generic plan cannot know that one time range keeps 1 %
    of a million reports and another all of them)."""
    await conn.execute(
        "SELECT set_config('statement_timeout', $1, true),"
        " set_config('TimeZone', $2, true),"
        " set_config('plan_cache_mode', 'force_custom_plan', true)",
        str(int(timeout_ms)),
        CITY_TZ_NAME,
    )


async def compile_plan(conn, plan: Plan, settings: QuerySettings) -> Compiled:
    """Resolve the plan's address and ward targets and write its statement."""
    await resolve(conn, plan, min_features=settings.membership_min_features)
    return build(plan)


def db_error(exc: Exception) -> Exception:
    """A database error caused by the query, as a domain error; others stay bugs (500)."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return QueryTimeout(
            "The query took longer than your role allows: narrow it (filter, "
            "time range, limit) or run it as a job (POST /query/jobs)."
        )
    if isinstance(exc, asyncpg.DataError | asyncpg.UndefinedFunctionError):
        return InvalidParameter(f"The database rejected a value of the query: {exc}.")
    if isinstance(exc, asyncpg.InternalServerError) and (
        "transform" in str(exc) or "GEOS" in str(exc) or "geometry" in str(exc).lower()
    ):
        return InvalidParameter(f"PostGIS could not evaluate the query's geometries: {exc}.")
    return exc


# --- serialisation -----------------------------------------------------------------------------


def _properties(compiled: Compiled) -> str:
    """A one-row LATERAL whose column names are the result columns (catalog identifiers or
    validated aliases), so ``to_json(p)`` keys never come from SQL string literals."""
    if not compiled.columns:
        return ""
    cols = ", ".join(f"r.{quote_ident(c.name)} AS {quote_ident(c.name)}" for c in compiled.columns)
    return f" CROSS JOIN LATERAL (SELECT {cols}) p"


def _ident(compiled: Compiled) -> str:
    return f"r.{ID}" if compiled.kind == "features" else f"COALESCE(r.{ID}, r.{ORD}::text)"


def geojson_sql(compiled: Compiled) -> str:
    """One GeoJSON feature per row, as UTF-8 bytes."""
    props = "to_json(p)::text" if compiled.columns else "'{}'"
    feature = (
        f"""'{{"type":"Feature","id":' || to_json({_ident(compiled)})::text || """
        f"""',"geometry":' || COALESCE(ST_AsGeoJSON(r.{GEOM}, 7), 'null') || """
        f"""',"properties":' || {props} || '}}'"""
    )
    return (
        f"SELECT convert_to({feature}, 'UTF8') FROM ({compiled.sql}) r{_properties(compiled)}"
        f" ORDER BY r.{ORD}"
    )


def csv_sql(compiled: Compiled) -> str:
    """One CSV record per row (RFC 4180: values quoted, quotes doubled, NULL empty); features
    carry their geometry as WKT in a last column."""
    values = [f"r.{quote_ident(c.name)}" for c in compiled.columns]
    if compiled.kind == "features":
        values.insert(0, f"r.{ID}")
        if compiled.geometry_type:
            values.append(f"ST_AsText(r.{GEOM}, 9)")
    cells = [f"""COALESCE('"' || replace(({v})::text, '"', '""') || '"', '')""" for v in values]
    line = " || ',' || ".join(cells) + " || E'\\r\\n'"
    return f"SELECT convert_to({line}, 'UTF8') FROM ({compiled.sql}) r ORDER BY r.{ORD}"


def csv_header(compiled: Compiled) -> bytes:
    names = [c.name for c in compiled.columns]
    if compiled.kind == "features":
        names = ["id", *names] + (["geometry"] if compiled.geometry_type else [])
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(names)
    return out.getvalue().encode()


def rows_sql(compiled: Compiled) -> str:
    """The rows with the geometry as WKB (GeoPackage, derived layers)."""
    cols = ", ".join(
        [f"r.{ID}"]
        + [f"r.{quote_ident(c.name)}" for c in compiled.columns]
        + [f"ST_AsBinary(r.{GEOM}) AS {GEOM}"]
    )
    return f"SELECT {cols} FROM ({compiled.sql}) r ORDER BY r.{ORD}"


def column_doc(compiled: Compiled) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "type": c.type,
            "label": {"vi": c.label_vi, "en": c.label_en},
            **({"unit": c.unit} if c.unit else {}),
        }
        for c in compiled.columns
    ]


def _tail(outcome: Outcome, limit: int) -> bytes:
    tail = {
        "numberReturned": outcome.returned,
        "truncated": outcome.truncated,
        "limit": limit,
        "timeStamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    return b"]," + orjson.dumps(tail)[1:]


async def _records(
    conn,
    sql: str,
    args: list[Any],
    limit: int,
    outcome: Outcome,
    progress: Callable[[int], Awaitable[None]] | None = None,
) -> AsyncIterator[list[Any]]:
    """Batches of rows from a cursor (inside the caller's transaction), cut at ``limit``."""
    cursor = await conn.cursor(sql, *args)
    while True:
        rows = await cursor.fetch(BATCH)
        if not rows:
            return
        if outcome.returned + len(rows) > limit:
            outcome.truncated = True
            rows = rows[: limit - outcome.returned]
        outcome.returned += len(rows)
        if rows:
            yield rows
        if progress is not None:
            await progress(outcome.returned)
        if outcome.truncated:
            return


async def _text_chunks(
    conn, compiled: Compiled, fmt: str, outcome: Outcome, progress=None
) -> AsyncIterator[bytes]:
    """GeoJSON or CSV bytes of a compiled query (inside the caller's transaction)."""
    sql = csv_sql(compiled) if fmt == "csv" else geojson_sql(compiled)
    records = _records(conn, sql, compiled.args, compiled.limit, outcome, progress)
    batch = await anext(records, None)  # the statement's errors surface before any byte
    if fmt == "csv":
        yield csv_header(compiled)
    else:
        head = {"type": "FeatureCollection", "columns": outcome.columns}
        yield orjson.dumps(head)[:-1] + b',"features":['
    sep = b"" if fmt == "csv" else b","
    first = True
    while batch is not None:
        body = sep.join(row[0] for row in batch)
        yield body if first or not sep else sep + body
        first = False
        batch = await anext(records, None)
    if fmt != "csv":
        yield _tail(outcome, compiled.limit)


async def _gpkg(
    conn, compiled: Compiled, path: Path, layer_name: str, outcome: Outcome, progress=None
) -> None:
    """Write the rows to a GeoPackage (pyogrio, in a worker thread)."""
    rows: list[Any] = []
    async for batch in _records(
        conn, rows_sql(compiled), compiled.args, compiled.limit, outcome, progress
    ):
        rows.extend(batch)
    await asyncio.to_thread(write_gpkg, compiled, rows, path, layer_name)


def write_gpkg(compiled: Compiled, rows: list[Any], path: Path, layer_name: str) -> None:
    """A GeoPackage of rows (``__ioc_id``, columns, WKB); EPSG:4326."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    names = [c.name for c in compiled.columns]
    data = {name: [row[i + 1] for row in rows] for i, name in enumerate(names)}
    frame = pd.DataFrame(data, columns=names)
    # Typed columns, whatever the Python values (GeoPackage keeps timestamps in UTC).
    for column in compiled.columns:
        if column.type == "timestamp":
            frame[column.name] = pd.to_datetime(frame[column.name], utc=True)
        elif column.type == "date":
            frame[column.name] = pd.to_datetime(frame[column.name])
        elif column.type == "number":
            frame[column.name] = pd.to_numeric(frame[column.name]).astype("float64")
        elif column.type == "integer":
            frame[column.name] = pd.array(frame[column.name], dtype="Int64")
        elif column.type == "boolean":
            frame[column.name] = pd.array(frame[column.name], dtype="boolean")
    geometry = shapely.from_wkb([None if row[-1] is None else bytes(row[-1]) for row in rows])
    if "id" not in names:
        frame.insert(0, "id", [row[0] for row in rows])
    gdf = gpd.GeoDataFrame(frame, geometry=list(geometry), crs="EPSG:4326")
    kwargs = {"geometry_type": compiled.geometry_type} if compiled.geometry_type else {}
    gdf.to_file(path, layer=layer_name, driver="GPKG", engine="pyogrio", **kwargs)


async def _file_chunks(path: Path, size: int = 1 << 16) -> AsyncIterator[bytes]:
    try:
        with path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, size):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


# --- running -----------------------------------------------------------------------------------


async def run_query(
    pool: Pool, catalog: Catalog, principal: Principal, doc: QueryDoc, settings: QuerySettings
) -> Answer:
    """Run a query for a caller and return its answer, already started: errors (bad values,
    unknown codes, timeouts) surface here, before a byte is sent."""
    plan, timeout_ms = plan_query(doc, catalog, principal, settings)
    await want_membership(pool, plan, settings)
    outcome = Outcome()
    stream = _stream(pool, plan, settings, timeout_ms, doc.format, outcome)
    first = await stream.__anext__()
    name = f"{plan.source.id}-query.{EXTENSIONS[doc.format]}"
    return Answer(MEDIA_TYPES[doc.format], name, prepend(first, stream), outcome)


async def want_membership(pool: Pool, plan: Plan, settings: QuerySettings) -> None:
    """Ask for the unit-membership cache of a large layer (built by the job runner)."""
    if plan.unit_layer is not None and units.cacheable(
        plan.source, settings.membership_min_features
    ):
        await units.request(pool, plan.source, plan.unit_layer)


async def _stream(
    pool: Pool, plan: Plan, settings: QuerySettings, timeout_ms: int, fmt: str, outcome: Outcome
) -> AsyncIterator[bytes]:
    path: Path | None = None
    async with pool.acquire() as conn:
        try:
            async with conn.transaction(readonly=True):
                await open_session(conn, timeout_ms)
                compiled = await compile_plan(conn, plan, settings)
                outcome.columns = column_doc(compiled)
                if fmt == "gpkg":
                    path = _temp_path(".gpkg")
                    await _gpkg(conn, compiled, path, plan.source.id, outcome)
                else:
                    async for chunk in _text_chunks(conn, compiled, fmt, outcome):
                        yield chunk
        except asyncpg.PostgresError as exc:
            if path is not None:
                path.unlink(missing_ok=True)
            raise db_error(exc) from exc
    if path is not None:  # the connection is back in the pool while the file streams
        async for chunk in _file_chunks(path):
            yield chunk


def _temp_path(suffix: str) -> Path:
    handle, name = tempfile.mkstemp(prefix="ioc-query-", suffix=suffix)
    os.close(handle)
    os.unlink(name)  # GDAL creates the file itself
    return Path(name)


async def write_query(
    pool: Pool,
    plan: Plan,
    settings: QuerySettings,
    timeout_ms: int,
    fmt: str,
    path: Path,
    progress: Callable[[str, int, int | None], Awaitable[None]],
) -> Outcome:
    """Run a query into a file (jobs); ``progress(phase, rows, expected)`` along the way."""
    outcome = Outcome()
    async with pool.acquire() as conn:
        try:
            async with conn.transaction(readonly=True):
                await open_session(conn, timeout_ms)
                compiled = await compile_plan(conn, plan, settings)
                outcome.columns = column_doc(compiled)
                expected = await estimate_rows(conn, compiled)
                await progress("querying", 0, expected)

                async def rows_done(n: int) -> None:
                    await progress("writing", n, expected)

                if fmt == "gpkg":
                    await _gpkg(conn, compiled, path, plan.source.id, outcome, rows_done)
                else:
                    with path.open("wb") as handle:
                        async for chunk in _text_chunks(conn, compiled, fmt, outcome, rows_done):
                            await asyncio.to_thread(handle.write, chunk)
        except asyncpg.PostgresError as exc:
            raise db_error(exc) from exc
    return outcome


async def estimate_rows(conn, compiled: Compiled) -> int | None:
    """The planner's estimate of the rows (for a job's progress), capped at the limit."""
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {compiled.sql}", *compiled.args)
    if isinstance(plan, str):
        plan = orjson.loads(plan)
    try:
        return min(int(plan[0]["Plan"]["Plan Rows"]), compiled.limit)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


async def explain_query(
    pool: Pool,
    catalog: Catalog,
    principal: Principal,
    doc: QueryDoc,
    settings: QuerySettings,
    *,
    analyze: bool = False,
) -> str:
    """The plan of a query's statement as text (tests, and operators tuning indexes)."""
    plan, timeout_ms = plan_query(doc, catalog, principal, settings)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await open_session(conn, timeout_ms)
        compiled = await compile_plan(conn, plan, settings)
        option = "ANALYZE, BUFFERS" if analyze else "COSTS"
        rows = await conn.fetch(f"EXPLAIN ({option}) {compiled.sql}", *compiled.args)
    return "\n".join(row[0] for row in rows)


async def fetch_rows(
    conn, plan: Plan, settings: QuerySettings, *, geojson: bool = False
) -> tuple[Compiled, list[Any]]:
    """All rows of a small query (statistics), inside the caller's session; with ``geojson``
    the geometry comes as GeoJSON text instead of WKB."""
    compiled = await compile_plan(conn, plan, settings)
    if geojson:
        cols = ", ".join(
            [f"r.{ID}"]
            + [f"r.{quote_ident(c.name)}" for c in compiled.columns]
            + [f"ST_AsGeoJSON(r.{GEOM}, 6) AS {GEOM}"]
        )
        sql = f"SELECT {cols} FROM ({compiled.sql}) r ORDER BY r.{ORD}"
    else:
        sql = rows_sql(compiled)
    try:
        rows = await conn.fetch(sql, *compiled.args)
    except asyncpg.PostgresError as exc:
        raise db_error(exc) from exc
    return compiled, rows
