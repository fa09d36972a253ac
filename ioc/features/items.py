"""Feature queries (OGC API – Features): build the SQL, run it, stream the bytes.

PostgreSQL writes every output record — a GeoJSON feature (``ST_AsGeoJSON`` and ``to_json`` of
a row of catalog-named columns), an RS-prefixed GeoJSON text sequence record, or a CSV line —
and hands it over as ``bytea``, so Python only joins bytes. Pages of up to
:data:`FETCH_ROWS_MAX` features are read in one round trip; bigger pages and unbounded exports
through a server-side cursor inside a transaction, :data:`CURSOR_BATCH` features at a time: a
10,000-feature page is never whole in Python memory.

``numberMatched``: without filters it is the registry's count (exact as of the last publish);
with ``bbox``/``datetime``/``filter`` it is counted exactly when the layer has at most
:data:`EXACT_COUNT_MAX` features and omitted on larger layers — never an estimate, because
Part 1 requires the value to be exact when present.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import asyncpg

from ioc.addresses.lookup import address_code_filter
from ioc.catalog.layers import Layer
from ioc.db.history import HISTORY_SCHEMA, history_ident
from ioc.db.identifiers import quote_ident
from ioc.errors import FeatureNotFound, InvalidParameter, QueryTimeout
from ioc.features import cql2_sql
from ioc.features.binds import ALIAS, Binds, attribute_or_400, column
from ioc.features.crs import CRS, CRS84, BBox, prefilter_bounds

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
EXACT_COUNT_MAX = 50_000
FETCH_ROWS_MAX = 2_000  # pages up to this size: one fetch; bigger ones and exports: a cursor
CURSOR_BATCH = 500  # features per cursor round trip (and per streamed chunk)

FORMATS = ("geojson", "geojsonseq", "csv")


@dataclass(frozen=True)
class ItemsQuery:
    """What a client asked of ``/items``, validated against the layer."""

    bboxes: tuple[BBox, ...] = ()
    interval: tuple[datetime | date | None, datetime | date | None] | None = None
    filter: Any = None  # pygeofilter AST
    filter_crs: CRS = CRS84
    limit: int | None = DEFAULT_LIMIT  # None: the whole (filtered) collection, for exports
    offset: int = 0
    sortby: tuple[tuple[str, bool], ...] = ()  # (attribute, descending)
    properties: tuple[str, ...] | None = None  # None: every attribute
    crs: CRS = CRS84
    address: str | None = None  # digital address code: only features linked to it
    at: datetime | None = None  # the features as they were then (a layer with history)
    at_by_feature: bool | None = None  # how 'at' reads the history (None: by the bbox)

    @property
    def filtered(self) -> bool:
        return bool(
            self.bboxes or self.interval or self.filter is not None or self.address or self.at
        )


@dataclass
class Page:
    """Counters of a page being streamed; ``returned``/``has_next`` are final at the end."""

    matched: int | None = None
    returned: int = 0
    has_next: bool = False


# --- parameters ------------------------------------------------------------------------------


def capped(q: ItemsQuery, cap: int | None) -> tuple[ItemsQuery, bool]:
    """The query bounded to ``cap`` features (an anonymous caller's most per answer; None:
    no bound), and whether the bound cut what was asked (an export, or a larger ``limit``)."""
    if cap is None or (q.limit is not None and q.limit <= cap):
        return q, False
    return replace(q, limit=cap), True


def _moment(text: str) -> datetime | date:
    """An RFC 3339 date-time (UTC when the offset is missing) or a full date."""
    text = text.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(
            f"'{text}' is not an RFC 3339 date-time or date in 'datetime'.", parameter="datetime"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_datetime(text: str) -> tuple[datetime | date | None, datetime | date | None]:
    """``datetime``: an instant, or an interval ``start/end`` with ``..`` or empty open ends."""
    if "/" not in text:
        instant = _moment(text)
        return instant, instant
    start_text, _, end_text = text.partition("/")
    if "/" in end_text:
        raise InvalidParameter("'datetime' has more than one '/'.", parameter="datetime")
    start = None if start_text.strip() in ("", "..") else _moment(start_text)
    end = None if end_text.strip() in ("", "..") else _moment(end_text)
    if start is not None and end is not None and _as_utc(start) > _as_utc(end, end=True):
        raise InvalidParameter(
            "'datetime': the interval starts after it ends.", parameter="datetime"
        )
    return start, end


def _as_utc(value: datetime | date, *, end: bool = False) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value + timedelta(days=1 if end else 0), datetime.min.time(), UTC)


def parse_sortby(text: str, layer: Layer) -> tuple[tuple[str, bool], ...]:
    """``sortby=+a,-b``: attribute names, each checked against the catalog."""
    keys: list[tuple[str, bool]] = []
    for raw in text.split(","):
        item = raw.strip()
        # A '+' decodes to a space in query strings, so a leading space also means ascending.
        descending = item.startswith("-")
        name = item.lstrip("+-").strip()
        if not name:
            raise InvalidParameter("'sortby' has an empty entry.", parameter="sortby")
        keys.append((attribute_or_400(layer, name, "sortby").name, descending))
    return tuple(keys)


def parse_properties(text: str, layer: Layer) -> tuple[str, ...]:
    """``properties=a,b``: the attributes to return, each checked; empty means none."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return tuple(dict.fromkeys(attribute_or_400(layer, n, "properties").name for n in names))


# --- SQL -------------------------------------------------------------------------------------


def _geometry_out(layer: Layer, crs: CRS) -> str:
    """The geometry in the output CRS; EPSG:4326 is latitude first (Part 2 /req/crs/ogc-crs)."""
    sql = column(layer, layer.geometry_column)
    if crs.srid != layer.srid:
        sql = f"ST_Transform({sql}, {int(crs.srid)})"
    return f"ST_FlipCoordinates({sql})" if crs.lat_lon else sql


def _property_names(layer: Layer, q: ItemsQuery) -> list[str]:
    return list(q.properties) if q.properties is not None else [a.name for a in layer.attributes]


def _feature_sql(layer: Layer, q: ItemsQuery, fmt: str) -> str:
    """One output record as text: a GeoJSON feature, an RS-prefixed feature or a CSV line."""
    geom = _geometry_out(layer, q.crs)
    if fmt == "csv":
        values = [column(layer, layer.id_column)] + [
            column(layer, n) for n in _property_names(layer, q)
        ]
        values.append(f"ST_AsText({geom}, {q.crs.precision + 2})")
        # RFC 4180: every non-null value quoted, quotes doubled; NULL is an empty field.
        cells = [f"""COALESCE('"' || replace(({v})::text, '"', '""') || '"', '')""" for v in values]
        return " || ',' || ".join(cells) + " || E'\\r\\n'"
    properties = "p" if _property_names(layer, q) else "'{}'::json"
    feature = (
        """'{"type":"Feature","id":' || to_json("""
        f"""{column(layer, layer.id_column)})::text || ',"geometry":' || """
        f"""COALESCE(ST_AsGeoJSON({geom}, {q.crs.precision}), 'null') || """
        f"""',"properties":' || to_json({properties})::text || '}}'"""
    )
    return f"E'\\x1e' || {feature} || E'\\n'" if fmt == "geojsonseq" else feature


def _lateral_properties(layer: Layer, q: ItemsQuery) -> str:
    """A one-row LATERAL whose column aliases are the property names: to_json(p) keys come from
    catalog identifiers, never from SQL string literals."""
    names = _property_names(layer, q)
    if not names:
        return ""
    cols = ", ".join(f"{column(layer, n)} AS {quote_ident(n)}" for n in names)
    return f" CROSS JOIN LATERAL (SELECT {cols}) p"


def _by_feature(q: ItemsQuery) -> bool:
    """``at`` read feature by feature (:func:`_states_at`) rather than by the states begun
    before the instant (the valid_from or GiST index), as :func:`at_plan` chose; unplanned,
    by feature unless there is a bbox."""
    if q.at is None:
        return False
    return q.at_by_feature if q.at_by_feature is not None else not q.bboxes


def _states_at(layer: Layer, at: str) -> str:
    """The state each feature had at the bound instant ``at``: a loose index scan of the
    history's (fid, valid_from) index. Each distinct id is found by one probe past the
    previous one, then its latest state begun by the instant (one more probe) counts if it
    had not ended by then — a few index probes per feature, not a read of every state
    begun before the instant (most of a long history). Ties on valid_from (a state opened
    and closed within one clock tick) are all checked: only a non-empty one contains it.
    OFFSET 0 keeps the lookup a per-id probe: flattened, the planner hashes the whole
    history when it expects few open states (a late instant)."""
    hist, fid = history_ident(layer.table), quote_ident(layer.id_column)
    return (
        f"(WITH RECURSIVE ids(id) AS ((SELECT h.{fid} FROM {hist} h ORDER BY h.{fid} LIMIT 1)"
        f" UNION ALL SELECT (SELECT h.{fid} FROM {hist} h WHERE h.{fid} > ids.id"
        f" ORDER BY h.{fid} LIMIT 1) FROM ids WHERE ids.id IS NOT NULL)"
        f" SELECT s.* FROM ids CROSS JOIN LATERAL (SELECT h.* FROM {hist} h"
        f" WHERE h.{fid} = ids.id AND h.valid_from = (SELECT max(m.valid_from) FROM {hist} m"
        f" WHERE m.{fid} = ids.id AND m.valid_from <= {at}) AND h.valid_to > {at} OFFSET 0) s)"
    )


# A feature's probes (three index descents, ~13 µs) cost about as much as this many states
# read by the bbox path (0.8 µs each on 10 k states, tens on 1 M states of fixed sensors):
# low, because the by-feature cost is bounded and the bbox path's is not.
STATES_PER_PROBE = 4


async def at_plan(pool, layer: Layer, q: ItemsQuery) -> ItemsQuery:
    """``q`` with how ``at`` reads the history: feature by feature unless the planner expects
    fewer states begun by the instant (in the bbox, if any) than the features' probes cost —
    an early instant, a small box, a big layer with few states a feature, whose states path
    also stops at the page in id order. Without statistics: by feature unless there is a bbox."""
    if q.at is None or q.at_by_feature is not None:
        return q
    binds = Binds()
    conditions = [f"{ALIAS}.valid_from <= {binds.add(q.at, 'timestamptz')}"]
    if q.bboxes:
        conditions.append("(" + " OR ".join(_bbox_sql(layer, b, binds) for b in q.bboxes) + ")")
    hist = history_ident(layer.table)
    estimate = (
        f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {hist} {ALIAS} WHERE {' AND '.join(conditions)}"
    )
    # n_distinct < 0 is a fraction of the rows (PostgreSQL's convention in pg_stats).
    distinct = (
        "SELECT CASE WHEN s.n_distinct < 0 THEN -s.n_distinct * c.reltuples ELSE s.n_distinct"
        " END FROM pg_class c JOIN pg_stats s ON s.schemaname = $1 AND s.tablename = c.relname"
        " AND s.attname = $2 WHERE c.oid = to_regclass($3)"
    )
    try:
        async with pool.acquire() as conn:
            features = await conn.fetchval(distinct, HISTORY_SCHEMA, layer.id_column, hist)
            if features is None:  # never analysed
                return q
            plan = await conn.fetchval(estimate, *binds.values)
    except asyncpg.PostgresError as exc:
        raise _db_error(exc, q) from exc
    if isinstance(plan, str):  # a pool without the app's json codec hands over the text
        plan = json.loads(plan)
    states = plan[0]["Plan"]["Plan Rows"]
    return replace(q, at_by_feature=states > STATES_PER_PROBE * features)


def _source(layer: Layer, q: ItemsQuery, binds: Binds) -> str:
    """The layer's table, or for ``at`` its history (the same columns): each feature's
    state then (:func:`_states_at`), or the whole history table (:func:`_where` picks)."""
    if q.at is None:
        return layer.table_sql
    if _by_feature(q):
        return _states_at(layer, binds.add(q.at, "timestamptz"))
    return history_ident(layer.table)


def _where(layer: Layer, q: ItemsQuery, binds: Binds) -> str:
    """The WHERE conditions: at, bbox, datetime, filter — all values bound."""
    conditions = []
    if q.at is not None and not _by_feature(q):
        # The states valid then, [valid_from, valid_to) containing the instant, among those
        # the bbox's GiST index finds (valid_to is in no index: closing a state stays HOT).
        at = binds.add(q.at, "timestamptz")
        conditions.append(f"{ALIAS}.valid_from <= {at} AND {ALIAS}.valid_to > {at}")
    if q.bboxes:
        conditions.append("(" + " OR ".join(_bbox_sql(layer, b, binds) for b in q.bboxes) + ")")
    if q.interval:
        conditions.append(_interval_sql(layer, q.interval, binds))
    if q.filter is not None:
        conditions.append(cql2_sql.compile_filter(q.filter, layer, binds, q.filter_crs))
    if q.address:
        conditions.append(
            address_code_filter(
                layer, binds.add(layer.id, "text"), binds.add(q.address, "text"), ALIAS
            )
        )
    return " AND ".join(conditions) or "TRUE"


def _bbox_sql(layer: Layer, bbox: BBox, binds: Binds) -> str:
    """Features whose geometry intersects the box, tested in the box's own CRS (its edges are
    straight there); an ``&&`` pre-filter in the layer's SRID keeps the GiST index in use."""
    geom = column(layer, layer.geometry_column)

    def envelope(values: tuple[float, ...], srid: int) -> str:
        corners = ", ".join(binds.add(float(v), "double precision") for v in values)
        return f"ST_MakeEnvelope({corners}, {int(srid)})"

    if bbox.srid == layer.srid:
        # ST_Intersects, not a bare &&: the index compares float4 boxes, which admits
        # points up to a metre outside the box.
        return f"ST_Intersects({geom}, {envelope(bbox.values, bbox.srid)})"
    try:
        box = prefilter_bounds(bbox.values, bbox.srid, layer.srid)
    except ValueError as exc:
        raise InvalidParameter(
            f"'bbox' lies outside the area of its CRS: {exc}.", parameter="bbox"
        ) from None
    if box is None:  # nothing of the box lies where the layer's CRS is meaningful
        return "FALSE"
    return (
        f"({geom} && {envelope(box, layer.srid)} AND "
        f"ST_Intersects(ST_Transform({geom}, {int(bbox.srid)}), "
        f"{envelope(bbox.values, bbox.srid)}))"
    )


def _interval_sql(layer: Layer, interval: tuple[Any, Any], binds: Binds) -> str:
    """``datetime`` on the layer's time attribute; intervals are closed (Part 1, 7.15.4)."""
    attribute = layer.attribute(layer.time_column) if layer.time_column else None
    if attribute is None or attribute.type not in ("date", "timestamp"):
        raise InvalidParameter(
            f"Collection '{layer.id}' has no date or time attribute to filter with 'datetime'.",
            parameter="datetime",
        )
    col = column(layer, attribute.name)
    start, end = interval
    cast = "date" if attribute.type == "date" else "timestamptz"

    def value(v: datetime | date, *, is_end: bool) -> Any:
        if cast == "date" or isinstance(v, datetime):
            return v
        return _as_utc(v, end=is_end)

    parts = []
    if start is not None and start == end and isinstance(start, datetime):
        return f"{col} = {binds.add(start, 'timestamptz')}"
    if start is not None:
        parts.append(f"{col} >= {binds.add(value(start, is_end=False), cast)}")
    if end is not None:
        # A whole date as the end covers that day: < next midnight.
        strict = cast == "timestamptz" and not isinstance(end, datetime)
        parts.append(f"{col} {'<' if strict else '<='} {binds.add(value(end, is_end=True), cast)}")
    return "(" + " AND ".join(parts) + ")" if parts else "TRUE"


def _order(layer: Layer, q: ItemsQuery) -> str:
    keys = [f"{column(layer, name)} {'DESC' if desc else 'ASC'}" for name, desc in q.sortby]
    keys.append(column(layer, layer.id_column))  # a total order: stable pages
    return ", ".join(keys)


def _page_clause(q: ItemsQuery, binds: Binds) -> str:
    """LIMIT one more than asked (to know whether a next page exists) and OFFSET."""
    sql = ""
    if q.limit is not None:
        sql += f" LIMIT {binds.add(q.limit + 1, 'bigint')}"
    if q.offset:
        sql += f" OFFSET {binds.add(q.offset, 'bigint')}"
    return sql


def items_sql(layer: Layer, q: ItemsQuery, fmt: str = "geojson") -> tuple[str, list[Any]]:
    """One row per feature, already serialised by PostgreSQL as ``bytea`` (no decoding in
    Python), in a total order; ``limit + 1`` rows at most."""
    binds = Binds()
    source = _source(layer, q, binds)
    where = _where(layer, q, binds)
    sql = (
        f"SELECT convert_to({_feature_sql(layer, q, fmt)}, 'UTF8') "
        f"FROM {source} {ALIAS}{_lateral_properties(layer, q)} WHERE {where} "
        f"ORDER BY {_order(layer, q)}{_page_clause(q, binds)}"
    )
    return sql, binds.values


def count_sql(layer: Layer, q: ItemsQuery) -> tuple[str, list[Any]]:
    """The exact number of matching features."""
    binds = Binds()
    source = _source(layer, q, binds)
    where = _where(layer, q, binds)
    return f"SELECT count(*) FROM {source} {ALIAS} WHERE {where}", binds.values


def feature_sql(layer: Layer, crs: CRS) -> str:
    """One feature by id (``$1``, typed by PostgreSQL from the id column), and the digest of
    its content (:func:`digest_sql`)."""
    q = ItemsQuery(crs=crs)
    return (
        f"SELECT convert_to({_feature_sql(layer, q, 'geojson')}, 'UTF8'), {digest_sql(layer)} "
        f"FROM {layer.table_sql} {ALIAS}{_lateral_properties(layer, q)} "
        f"WHERE {column(layer, layer.id_column)} = $1"
    )


def csv_header(layer: Layer, q: ItemsQuery) -> bytes:
    """The CSV header line (names from the catalog, CSV-quoted by Python's csv module)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(
        [layer.id_column, *_property_names(layer, q), "geometry"]
    )
    return out.getvalue().encode()


# --- running ---------------------------------------------------------------------------------


def _db_error(exc: Exception, q: ItemsQuery | None = None) -> Exception:
    """A database error caused by the request, as a domain error; others stay bugs (500)."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return QueryTimeout("The query took too long: narrow it with bbox, filter or limit.")
    parameter = "filter" if q is not None and q.filter is not None else None
    if isinstance(exc, asyncpg.DataError | asyncpg.UndefinedFunctionError):
        return InvalidParameter(f"The database rejected a value: {exc}.", parameter=parameter)
    if isinstance(exc, asyncpg.InternalServerError) and "transform" in str(exc):
        return InvalidParameter(
            f"The features cannot be transformed to the requested CRS: {exc}.", parameter="crs"
        )
    return exc


def where_sql(layer: Layer, q: ItemsQuery, binds: Binds) -> str:
    """The WHERE conditions of ``q`` (bbox, datetime, filter, address) for other feature
    queries over the same rows (grid aggregates), values bound in ``binds``."""
    return _where(layer, q, binds)


def db_error(exc: Exception, q: ItemsQuery | None = None) -> Exception:
    """A database error caused by the request as a domain error (others stay bugs)."""
    return _db_error(exc, q)


def _needs_count(layer: Layer, q: ItemsQuery) -> bool:
    """Count when the registry's number will not do and the layer is small enough."""
    return (q.filtered or layer.cadence == "realtime") and layer.feature_count <= EXACT_COUNT_MAX


def _registry_count(layer: Layer, q: ItemsQuery) -> int | None:
    if q.filtered or layer.cadence == "realtime":
        return None  # a live layer's registry count may lag behind inserts
    return layer.feature_count


async def stream_items(
    pool, layer: Layer, q: ItemsQuery, fmt: str = "geojson"
) -> tuple[Page, AsyncIterator[bytes]]:
    """Run a page (or, with ``limit=None``, an export) and return its counters and its bytes.

    The iterator is already started: errors in the SQL (bad values, timeouts) surface here,
    before any byte is sent, and the connection is released when it ends or is closed.
    """
    page = Page(matched=_registry_count(layer, q))
    q = await at_plan(pool, layer, q)
    sql, args = items_sql(layer, q, fmt)
    header = csv_header(layer, q) if fmt == "csv" else b""
    sep = b"," if fmt == "geojson" else b""
    if q.limit is not None and q.limit < FETCH_ROWS_MAX:
        stream = _fetched(pool, layer, q, sql, args, page, header, sep)
    else:
        stream = _cursor(pool, layer, q, sql, args, page, header, sep)
    first = await stream.__anext__()
    return page, prepend(first, stream)


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then the rest of an already started stream (which is closed with it)."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:  # closed early (client gone, time bound): the connection goes back now
        await rest.aclose()  # type: ignore[attr-defined]


def _take(rows: list[Any], q: ItemsQuery, page: Page) -> list[bytes]:
    """The rows that belong to the page; the (limit + 1)th only says a next page exists."""
    if q.limit is not None and page.returned + len(rows) > q.limit:
        page.has_next = True
        rows = rows[: q.limit - page.returned]
    page.returned += len(rows)
    return [row[0] for row in rows]


async def _fetched(
    pool,
    layer: Layer,
    q: ItemsQuery,
    sql: str,
    args: list[Any],
    page: Page,
    header: bytes,
    sep: bytes,
) -> AsyncIterator[bytes]:
    """A small page: one round trip (plus a count), the connection back in the pool at once."""
    try:
        async with pool.acquire() as conn:
            if _needs_count(layer, q):
                page.matched = await conn.fetchval(*_count(layer, q))
            rows = await conn.fetch(sql, *args)
    except asyncpg.PostgresError as exc:
        raise _db_error(exc, q) from exc
    yield header
    yield sep.join(_take(rows, q, page))


def _count(layer: Layer, q: ItemsQuery) -> list[Any]:
    sql, args = count_sql(layer, q)
    return [sql, *args]


async def _cursor(
    pool,
    layer: Layer,
    q: ItemsQuery,
    sql: str,
    args: list[Any],
    page: Page,
    header: bytes,
    sep: bytes,
) -> AsyncIterator[bytes]:
    """A big page or an export through a server-side cursor: CURSOR_BATCH features per round
    trip, and never more than that in Python memory."""
    async with pool.acquire() as conn:
        try:
            async with conn.transaction(readonly=True):
                if _needs_count(layer, q):
                    page.matched = await conn.fetchval(*_count(layer, q))
                cursor = await conn.cursor(sql, *args)
                rows = await cursor.fetch(CURSOR_BATCH)
                yield header
                while rows:
                    taken = _take(rows, q, page)
                    if taken:
                        body = sep.join(taken)
                        yield (sep + body) if sep and page.returned > len(taken) else body
                    if page.has_next:
                        break
                    rows = await cursor.fetch(CURSOR_BATCH)
        except asyncpg.PostgresError as exc:
            raise _db_error(exc, q) from exc


# --- one feature -----------------------------------------------------------------------------

_INT_RANGES = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
_id_types: dict[tuple[str, int], str] = {}  # (layer id, version) → PostgreSQL type of its id


def _typed_id(feature_id: str, type_name: str) -> Any:
    """The path's feature id as a value of the id column's type; ValueError if it cannot be."""
    if type_name in _INT_RANGES:
        if not re.fullmatch(r"-?[0-9]{1,20}", feature_id):
            raise ValueError(feature_id)
        value = int(feature_id)
        if not -_INT_RANGES[type_name] <= value < _INT_RANGES[type_name]:
            raise ValueError(feature_id)
        return value
    if type_name in ("float4", "float8"):
        return float(feature_id)
    if type_name == "numeric":
        try:
            return Decimal(feature_id)
        except InvalidOperation:
            raise ValueError(feature_id) from None
    if type_name == "uuid":
        return UUID(feature_id)
    if "\x00" in feature_id:
        raise ValueError(feature_id)
    return feature_id


async def get_feature(pool, layer: Layer, feature_id: str, crs: CRS = CRS84) -> tuple[bytes, str]:
    """One feature as GeoJSON bytes and its content digest (for :func:`item_etag`);
    FeatureNotFound when there is no such id."""
    sql = feature_sql(layer, crs)
    missing = FeatureNotFound(
        f"Collection '{layer.id}' has no feature '{feature_id}'.", parameter="featureId"
    )
    try:
        async with pool.acquire() as conn:
            key = (layer.id, layer.version)
            if key not in _id_types:
                statement = await conn.prepare(sql)
                _id_types[key] = statement.get_parameters()[0].name
            try:
                value = _typed_id(feature_id, _id_types[key])
            except ValueError:
                raise missing from None
            found = await conn.fetchrow(sql, value)
    except asyncpg.PostgresError as exc:
        raise _db_error(exc) from exc
    if found is None:
        raise missing
    return found[0], found[1]


def _hashed(*parts: object, params: list[tuple[str, str]], size: int) -> str:
    normalised = "&".join(f"{k}={v}" for k, v in sorted(params))
    text = "\x00".join(str(p) for p in (*parts, normalised))
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def etag(layer: Layer, representation: str, params: list[tuple[str, str]]) -> str:
    """A strong ETag: the layer's identity and version plus the normalised query."""
    digest = _hashed(
        layer.id, layer.version, layer.last_update, representation, params=params, size=32
    )
    return f'"{digest}"'


def digest_sql(layer: Layer) -> str:
    """SQL (over the layer's row ``t``) of the digest of one feature's content: its id,
    attributes and geometry. The same on any session, so the API's reads (asyncpg) and the
    writes' If-Match check (psycopg2) agree: jsonb text does not follow DateStyle, timestamps
    count as epoch seconds (timestamptz text follows TimeZone), numbers by their eight bytes
    (float text follows extra_float_digits), the geometry as EWKB. A ROW, not
    jsonb_build_array, which takes at most 100 arguments."""
    values = [column(layer, layer.id_column)]
    for attr in layer.attributes:
        value = column(layer, attr.name)
        if attr.type == "timestamp":
            value = f"extract(epoch FROM {value})"
        elif attr.type == "number":
            value = f"encode(float8send({value}::float8), 'hex')"
        values.append(value)
    geometry = column(layer, layer.geometry_column)
    return (
        f"md5(convert_to(to_jsonb(ROW({', '.join(values)}))::text, 'UTF8')"
        f" || coalesce(ST_AsEWKB({geometry}), ''::bytea))"
    )


def item_etag(layer: Layer, digest: str, representation: str, params: list[tuple[str, str]]) -> str:
    """A feature's strong ETag: its content digest (what ``If-Match`` on a write compares,
    :func:`tag_digests`), then the representation (format, CRS). Nothing of the layer's
    version: writing another feature of the layer leaves this one's ETag as it was."""
    return f'"{digest}.{_hashed(layer.id, representation, params=params, size=12)}"'


def tag_digests(header: str | None) -> set[str] | None:
    """The feature digests an ``If-Match`` names (``{"*"}`` for any); None when absent. A
    weak tag counts by its digest too: a proxy that compresses weakens the ETags it passes."""
    if header is None or not header.strip():
        return None
    tags = (t.strip().removeprefix("W/").strip('"') for t in header.split(","))
    return {t.split(".", 1)[0] for t in tags if t}
