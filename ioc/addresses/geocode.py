"""Free-text address search and batch geocoding: diacritic-insensitive, typo-tolerant, ranked.

Two stages, because a trigram scan of a million address texts takes about a second even with a
GIN index (measured; common syllables such as "thanh" select a third of the rows, see
docs/addresses.md):

1. The query is read against the *vocabulary* of the registry — its street names, 2025 wards and
   2019 wards (``ioc.address_names``, a few thousand rows, kept in memory and reloaded when the
   registry version changes). Every name found in the query, spelled with or without diacritics,
   with at most one typo per syllable, or cut short at the end, becomes a *span* of the query.
2. The best *interpretations* (a street span, a ward span and the house number, not
   overlapping) become *probes*, each answered by one indexed lookup in ``ioc.addresses`` (btree on
   ward/street/house; with ``near``, one KNN scan around the point).

Scores are the share of the query's words explained by the match (1.0 = everything).

The stages live in ``parsing`` (the query), ``vocabulary`` (names and spans) and ``probes``
(interpretations and lookups); this module ranks the hits and geocodes CSV files.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ioc.addresses.normalise import fold
from ioc.addresses.parsing import (
    Query,
    parse_query,
)
from ioc.addresses.probes import (
    Interpretation,
    fetch_probes,
    interpret,
)
from ioc.addresses.registry import (
    TooManyRows,
    address_feature,
    address_properties,
)
from ioc.addresses.vocabulary import (
    _fallback_spans,
    vocabulary,
)
from ioc.errors import InvalidParameter

NEAR_WEIGHT = 0.1  # a result 0 m away gains 0.1, one 1 km away 0.05


# --- search --------------------------------------------------------------------------------


@dataclass
class Hit:
    """One ranked result."""

    row: Any
    score: float
    level: str
    matched: dict[str, Any]
    distance_m: float | None = None


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Equirectangular distance; within a city it is within 0.1 % of the geodesic one."""
    mean_lat = math.radians((a[1] + b[1]) / 2)
    dx = math.radians(b[0] - a[0]) * math.cos(mean_lat)
    dy = math.radians(b[1] - a[1])
    return 6_371_008.8 * math.hypot(dx, dy)


def _hits(
    q: Query, interps: list[Interpretation], rows: list[Any], near: tuple[float, float] | None
) -> list[Hit]:
    by_tag = {it.tag: it for it in interps}
    best: dict[str, tuple[tuple, Hit]] = {}
    weight = max(q.weight, 1)
    for row in rows:
        it = by_tag[row["tag"]]
        house_hit = bool(q.house and row["house_key"] == q.house)
        score = min(1.0, (it.names_part + (1 if house_hit else 0)) / weight)
        level = "address" if house_hit else ("street" if it.street else "ward")
        distance = _distance_m(near, (row["lon"], row["lat"])) if near else None
        boost = NEAR_WEIGHT / (1 + distance / 1000) if distance is not None else 0.0
        matched = {
            "street": it.street.name.label if it.street else None,
            "ward": it.ward.name.label if it.ward else None,
            "ward_kind": it.ward.name.kind if it.ward else None,
            "house_number": house_hit,
        }
        hit = Hit(row, round(score, 3), level, matched, distance)
        key = (score + boost, -interps.index(it), -(distance or 0.0))
        if row["code"] not in best or best[row["code"]][0] < key:
            best[row["code"]] = (key, hit)
    ranked = sorted(best.values(), key=lambda kv: kv[1].row["code"])  # ties: by code
    ranked.sort(key=lambda kv: kv[0], reverse=True)
    return [hit for _, hit in ranked]


async def search_addresses(
    conn,
    text: str,
    *,
    near: tuple[float, float] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    limit: int = 10,
) -> list[Hit]:
    """Addresses best matching a free text, best first (``near`` biases, ``bbox`` filters)."""
    q = parse_query(text)
    vocab = await vocabulary(conn)
    spans = vocab.spans(q)
    if not spans:
        spans = await _fallback_spans(conn, vocab, q)
    interps = interpret(q, spans, limit=6)
    for k, it in enumerate(interps):
        it.tag = k
    rows = await fetch_probes(conn, interps, limit, bbox, near)
    return _hits(q, interps, rows, near)[:limit]


def hit_feature(hit: Hit, base_url: str = "") -> dict[str, Any]:
    """A search result as a GeoJSON Feature (score, match level, what matched)."""
    extra: dict[str, Any] = {"score": hit.score, "match_level": hit.level, "matched": hit.matched}
    if hit.distance_m is not None:
        extra["distance_m"] = round(hit.distance_m, 1)
    return address_feature(hit.row, base_url, **extra)


# --- batch geocoding -----------------------------------------------------------------------

ADDRESS_HEADERS = ("address", "dia_chi", "diachi")
GEOCODE_FIELDS = (
    "id",
    "address",
    "code",
    "lon",
    "lat",
    "ward_code",
    "ward_name",
    "ward_code_2019",
    "matched_address",
    "score",
    "match_level",
)


def max_upload_bytes(max_rows: int) -> int:
    """The largest CSV accepted: 1 kB a row is far more than an address needs."""
    return max_rows * 1024


def read_geocode_csv(data: bytes, max_rows: int) -> list[tuple[str, str]]:
    """(id, address) rows of an uploaded CSV: an ``address`` column, an optional ``id``."""
    if len(data) > max_upload_bytes(max_rows):
        raise TooManyRows(
            f"Tệp lớn hơn {max_upload_bytes(max_rows) // 1024:,} kB / the CSV is "
            f"larger than {max_upload_bytes(max_rows) // 1024:,} kB: split it.",
            parameter="file",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidParameter(
            "Tệp CSV phải mã hoá UTF-8 / the CSV must be UTF-8.", parameter="file"
        ) from None
    reader = csv.reader(io.StringIO(text))
    header = [fold(h).replace(" ", "_") for h in next(reader, [])]
    column = next((header.index(h) for h in ADDRESS_HEADERS if h in header), None)
    if column is None:
        raise InvalidParameter(
            "Tệp CSV cần cột 'address' / the CSV needs an 'address' column.", parameter="file"
        )
    id_column = header.index("id") if "id" in header else None
    rows: list[tuple[str, str]] = []
    for n, record in enumerate(reader, start=1):
        if not any(cell.strip() for cell in record):
            continue
        if len(rows) >= max_rows:
            raise TooManyRows(
                f"Tệp có hơn {max_rows:,} dòng / the CSV has more than {max_rows:,} "
                "rows: split it into smaller files.",
                parameter="file",
            )
        address = record[column].strip() if column < len(record) else ""
        ident = (
            record[id_column].strip()
            if id_column is not None and id_column < len(record)
            else str(n)
        )
        rows.append((ident, address))
    if not rows:
        raise InvalidParameter(
            "Tệp CSV không có dòng dữ liệu / the CSV has no rows.", parameter="file"
        )
    return rows


async def geocode_rows(
    conn, rows: Sequence[tuple[str, str]], chunk: int = 2000
) -> list[dict[str, Any]]:
    """The best address for each (id, text): code, lon/lat, wards, score; empty when none."""
    vocab = await vocabulary(conn)
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        queries: list[Query | None] = []
        probes: list[Interpretation] = []
        owner: dict[int, int] = {}
        for k, (_, text) in enumerate(part):
            try:
                q = parse_query(text)
            except InvalidParameter:
                queries.append(None)
                continue
            queries.append(q)
            spans = vocab.spans(q) or await _fallback_spans(conn, vocab, q)
            for it in interpret(q, spans, limit=2):
                it.tag = len(probes)
                owner[it.tag] = k
                probes.append(it)
        fetched = await fetch_probes(conn, probes, 1)
        per_row: dict[int, list[Any]] = defaultdict(list)
        for r in fetched:
            per_row[owner[r["tag"]]].append(r)
        for k, (ident, text) in enumerate(part):
            parsed = queries[k]
            mine = [p for p in probes if owner[p.tag] == k]
            hits = _hits(parsed, mine, per_row[k], None) if parsed is not None else []
            out.append(_geocode_record(ident, text, hits[0] if hits else None))
    return out


def _geocode_record(ident: str, text: str, hit: Hit | None) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(GEOCODE_FIELDS)
    record.update({"id": ident, "address": text, "score": 0.0, "match_level": "none"})
    if hit is not None:
        props = address_properties(hit.row)
        record.update(
            {
                "code": hit.row["code"],
                "lon": round(hit.row["lon"], 7),
                "lat": round(hit.row["lat"], 7),
                "ward_code": hit.row["ward_code"],
                "ward_name": hit.row["ward_label"],
                "ward_code_2019": hit.row["ward_code_2019"],
                "matched_address": props["address"],
                "score": hit.score,
                "match_level": hit.level,
            }
        )
    return record


def geocode_csv(records: list[dict[str, Any]]) -> str:
    """Batch geocoding results as CSV text (UTF-8, header first)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=GEOCODE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    return buffer.getvalue()
