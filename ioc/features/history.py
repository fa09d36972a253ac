"""A layer's past: the features at an instant (``items?at=``) and one feature's states
(``items/{featureId}/history``), read from ``history.<layer id>`` (``ioc.db.history``).

What can be answered: instants from the moment the layer started keeping history, and no
older than its retention (closed states are pruned after ``retention_days``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import asyncpg

from ioc.catalog.layers import Layer
from ioc.db.history import history_ident
from ioc.db.identifiers import quote_ident
from ioc.errors import FeatureNotFound, HistoryNotKept, InvalidParameter, IocError
from ioc.features.binds import ALIAS, Binds, column
from ioc.features.crs import CRS, CRS84
from ioc.features.items import Page, _as_utc, _db_error, _geometry_out

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d:\d\d)?")


def retention_days(layer: Layer) -> int | None:
    """How many days the layer keeps replaced states; None when it keeps no history."""
    spec = layer.manifest.get("history")
    return int(spec["retention_days"]) if isinstance(spec, dict) else None


def _not_kept(layer: Layer, error: type[IocError] = InvalidParameter) -> IocError:
    """'at' on such a layer is a 400; its …/history a 404 (HistoryNotKept)."""
    parameter = "at" if error is InvalidParameter else None
    return error(
        f"Collection '{layer.id}' keeps no history: its manifest declares no "
        "'history: {retention_days: N}'.",
        parameter=parameter,
    )


def parse_instant(text: str) -> datetime:
    """An RFC 3339 date-time with its offset (UTC when it has none), or a 400 on ``at``."""
    value = text.strip()
    if not _RFC3339.fullmatch(value):
        raise InvalidParameter(
            f"'{text}' is not an RFC 3339 date-time (e.g. 2025-07-01T08:00:00+07:00) in 'at'.",
            parameter="at",
        )
    try:
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(
            f"'{text}' is not a valid date-time in 'at'.", parameter="at"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _kept_since(pool, layer: Layer) -> datetime:
    """The earliest instant whose states are all kept: history's start or the retention cut."""
    days = retention_days(layer)
    started = await pool.fetchval(
        "SELECT started_at FROM ioc.layer_history WHERE layer_id = $1", layer.id
    )
    if days is None or started is None:
        raise _not_kept(layer)
    return max(started, datetime.now(UTC) - timedelta(days=days))


async def instant(pool, layer: Layer, text: str) -> datetime:
    """``at``: a date-time the layer's history can answer (400 otherwise, saying why)."""
    if retention_days(layer) is None:
        raise _not_kept(layer)
    # A future instant answers the present (a client's clock may run ahead of the server's).
    moment = min(parse_instant(text), datetime.now(UTC))
    since = await _kept_since(pool, layer)
    if moment < since:
        raise InvalidParameter(
            f"Collection '{layer.id}' keeps its past for {retention_days(layer)} days and from "
            f"{since.isoformat(timespec='seconds')} on: 'at' is earlier than that.",
            parameter="at",
        )
    return moment


def _state_sql(layer: Layer, crs: CRS) -> str:
    """One state as a GeoJSON feature: the attributes, then its validity interval."""
    return (
        """'{"type":"Feature","id":' || to_json("""
        f"""{column(layer, layer.id_column)})::text || ',"geometry":' || """
        f"""COALESCE(ST_AsGeoJSON({_geometry_out(layer, crs)}, {crs.precision}), 'null') || """
        f"""',"properties":' || to_json(p)::text || '}}'"""
    )


def _states_from(layer: Layer) -> str:
    """The history table, each state's properties (attributes, then interval) as ``p``."""
    names = [a.name for a in layer.attributes]
    cols = [f"{column(layer, n)} AS {quote_ident(n)}" for n in names]
    interval = [
        f"{ALIAS}.valid_from AS valid_from",
        f"NULLIF({ALIAS}.valid_to, 'infinity') AS valid_to",  # null: the current state
    ]
    return (
        f"{history_ident(layer.table)} {ALIAS}"
        f" CROSS JOIN LATERAL (SELECT {', '.join(cols + interval)}) p"
    )


async def feature_history(
    pool,
    layer: Layer,
    feature_id: str,
    interval: tuple[datetime | date | None, datetime | date | None] | None,
    limit: int,
    offset: int = 0,
    crs: CRS = CRS84,
) -> tuple[Page, list[bytes]]:
    """A page of one feature's states, oldest first; only those overlapping ``interval``.
    FeatureNotFound when the layer never had that feature (as far as history is kept)."""
    if retention_days(layer) is None:
        raise _not_kept(layer, HistoryNotKept)
    missing = FeatureNotFound(
        f"Collection '{layer.id}' has no history of feature '{feature_id}'.",
        parameter="featureId",
    )
    if not re.fullmatch(r"-?[0-9]{1,18}", feature_id):  # history layers' ids are bigint fid
        raise missing
    binds = Binds()
    where = [f"{column(layer, layer.id_column)} = {binds.add(int(feature_id), 'bigint')}"]
    start, end = interval or (None, None)
    if start is not None:  # states that were still valid at the start …
        where.append(f"{ALIAS}.valid_to > {binds.add(_as_utc(start), 'timestamptz')}")
    if end is not None:  # … or began by the end
        where.append(f"{ALIAS}.valid_from <= {binds.add(_as_utc(end, end=True), 'timestamptz')}")
    conditions = " AND ".join(where)
    sql = (
        f"SELECT convert_to({_state_sql(layer, crs)}, 'UTF8') FROM {_states_from(layer)}"
        f" WHERE {conditions}"
        f" ORDER BY {ALIAS}.valid_from LIMIT {binds.add(limit + 1, 'bigint')}"
        f" OFFSET {binds.add(offset, 'bigint')}"
    )
    table = history_ident(layer.table)
    any_state = f"SELECT EXISTS (SELECT 1 FROM {table} {ALIAS} WHERE {where[0]})"
    try:
        async with pool.acquire() as conn:
            if not await conn.fetchval(any_state, *binds.values[:1]):
                raise missing
            count = f"SELECT count(*) FROM {table} {ALIAS} WHERE {conditions}"
            matched = await conn.fetchval(count, *binds.values[: len(where)])
            rows = await conn.fetch(sql, *binds.values)
    except asyncpg.PostgresError as exc:
        raise _db_error(exc) from exc
    page = Page(matched=matched, returned=min(len(rows), limit), has_next=len(rows) > limit)
    return page, [row[0] for row in rows[:limit]]
