"""From spans to answers: the best interpretations of a query (street, ward and house number, not
overlapping) and the indexed lookups in ``ioc.addresses`` (probes) that answer them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ioc.addresses.parsing import (
    Query,
)
from ioc.addresses.registry import (
    ADDRESS_COLUMNS,
    ADDRESS_JOINS,
)
from ioc.addresses.vocabulary import (
    Span,
)

DISTRICT_BONUS = 0.05  # a 2019 ward whose district is also named in the query
MIN_SCORE = 0.2


@dataclass
class Interpretation:
    """One reading of the query: at most a street, a ward (2025 or 2019) and the house number."""

    street: Span | None
    ward: Span | None
    house: str | None
    names_part: float  # explained words from names (and the district bonus)
    score: float
    tag: int = 0
    rank_key: tuple = field(default=(), repr=False)


_KIND_PRIORITY = {"ward": 2, "ward_2019": 1}


def _district_named(q: Query, span: Span) -> bool:
    district = span.name.district
    if not district:
        return False
    words = q.tokens
    for i in range(len(words) - len(district) + 1):
        if (i >= span.end or i + len(district) <= span.start) and tuple(
            words[i : i + len(district)]
        ) == district:
            return True
    return False


def interpret(q: Query, spans: list[Span], limit: int) -> list[Interpretation]:
    """The best interpretations of a query, best first: the ``limit`` best (street, ward)
    readings, each twice when the query has a house number (with it, then without it, so that
    a house number absent from the registry still leaves the street's other houses)."""

    def top(kinds: tuple[str, ...]) -> list[Span]:
        found = [s for s in spans if s.name.kind in kinds]
        found.sort(
            key=lambda s: (s.contribution, s.quality, _KIND_PRIORITY.get(s.name.kind, 0), s.name.n),
            reverse=True,
        )
        return found[:5]

    weight = max(q.weight, 1)
    combos = []
    for street in [None, *top(("street",))]:
        for ward in [None, *top(("ward", "ward_2019"))]:
            if street is None and ward is None:
                continue
            if street and ward and street.start < ward.end and ward.start < street.end:
                continue
            names = sum(s.contribution for s in (street, ward) if s)
            if ward is not None and _district_named(q, ward):
                names += DISTRICT_BONUS * weight
            if (names + (1 if q.house else 0)) / weight < MIN_SCORE:
                continue
            quality = sum(s.quality for s in (street, ward) if s)
            priority = _KIND_PRIORITY.get(ward.name.kind, 0) if ward else 0
            popularity = sum(s.name.n for s in (street, ward) if s)
            fields = sum(x is not None for x in (street, ward))
            combos.append(
                ((round(names, 6), fields, quality, priority, popularity), street, ward, names)
            )
    combos.sort(key=lambda c: c[0], reverse=True)
    out = []
    for rank, street, ward, names in combos[:limit]:
        for house in [q.house, None] if q.house else [None]:
            item = Interpretation(
                street, ward, house, names, (names + (1 if house else 0)) / weight
            )
            item.rank_key = (round(item.score, 6), *rank)
            out.append(item)
    out.sort(key=lambda it: it.rank_key, reverse=True)
    return out


_FILTERS = {
    "w": "{t}.ward_code = p.w",
    "w19": "{t}.ward_code_2019 = p.w19",
    "s": "{t}.street_key = p.s",
    "h": "{t}.house_key = p.h",
}
_BITS = {"w": 8, "w19": 4, "s": 2, "h": 1}
NEAR_CANDIDATES = 1000
VALID = "({t}.valid_to IS NULL OR {t}.valid_to >= current_date)"


def _shape_fields(shape: int) -> list[str]:
    return [f for f, bit in _BITS.items() if shape & bit]


def _index_order(fields: list[str]) -> str:
    """ORDER BY continuing the btree index the equality filters start (see 0003_addresses.sql):
    the scan reads the first rows in index order and stops, whatever the size of the ward."""
    if "h" in fields:
        rest: list[str] = []
    elif "w" in fields or "w19" in fields:
        rest = ["a.house_key"] if "s" in fields else ["a.street_key", "a.house_key"]
    else:
        rest = ["a.house_key"]
    return ", ".join([*rest, "a.code"])


def _probe_fields(it: Interpretation) -> dict[str, str | None]:
    ward = it.ward.name if it.ward else None
    return {
        "w": ward.key if ward and ward.kind == "ward" else None,
        "w19": ward.key if ward and ward.kind == "ward_2019" else None,
        "s": it.street.name.key if it.street else None,
        "h": it.house,
    }


def probes_sql(shapes: Iterable[int], *, near: bool, bbox: bool) -> str:
    """One statement answering every probe, a branch per probe shape.

    Each branch takes the first rows of its btree index (bounded work, however large the ward
    or street). With ``near``, it also takes the probe's rows among the NEAR_CANDIDATES
    addresses nearest to the point (one KNN scan for all probes): a KNN scan filtered by ward
    would walk the whole city when the point is far from the ward.
    Parameters: $1-$6 probe columns, $7 rows per probe, [$8 $9 near], [bbox after them].
    """
    first = 10 if near else 8
    box = f"ST_MakeEnvelope(${first}, ${first + 1}, ${first + 2}, ${first + 3}, 4326)"
    branches = []
    for shape in sorted(set(shapes)):
        fields = _shape_fields(shape)
        where = [_FILTERS[f] for f in fields]
        index_part = " AND ".join(
            [w.format(t="a") for w in where]
            + [VALID.format(t="a")]
            + ([f"a.geom && {box}"] if bbox else [])
        )
        part = (
            f"(SELECT a.code FROM ioc.addresses a WHERE {index_part}"
            f" ORDER BY {_index_order(fields)} LIMIT $7)"
        )
        if near:
            near_part = " AND ".join(
                [w.format(t="n") for w in where] + ([f"n.geom && {box}"] if bbox else [])
            )
            part = (
                f"(SELECT n.code FROM near_set n WHERE {near_part} ORDER BY n.d, n.code"
                f" LIMIT $7) UNION {part}"
            )
        # The shape number is a constant of this module, never user input.
        branches.append(
            f"SELECT p.tag, x.code FROM probes p CROSS JOIN LATERAL ({part}) x"
            f" WHERE p.shape = {int(shape)}"
        )
    near_cte = (
        (
            " near_set AS MATERIALIZED (SELECT a.code, a.ward_code, a.ward_code_2019, a.street_key,"
            " a.house_key, a.geom, a.geom <-> ST_SetSRID(ST_MakePoint($8, $9), 4326) AS d"
            f" FROM ioc.addresses a WHERE {VALID.format(t='a')}"
            " ORDER BY a.geom <-> ST_SetSRID(ST_MakePoint($8, $9), 4326)"
            f" LIMIT {NEAR_CANDIDATES}),"
        )
        if near
        else ""
    )
    return (
        "WITH probes AS (SELECT * FROM unnest($1::int[], $2::int[], $3::text[], $4::text[],"
        " $5::text[], $6::text[]) AS p(tag, shape, w, w19, s, h)),"
        f"{near_cte} hits AS ({' UNION ALL '.join(branches)})"
        f" SELECT hits.tag, {ADDRESS_COLUMNS} FROM hits"
        f" JOIN ioc.addresses a ON a.code = hits.code {ADDRESS_JOINS}"
    )


async def fetch_probes(
    conn,
    probes: list[Interpretation],
    per_probe: int,
    bbox: tuple[float, float, float, float] | None = None,
    near: tuple[float, float] | None = None,
) -> list[Any]:
    """Rows answering each probe (``tag``): up to ``per_probe`` in index order, and with
    ``near`` up to as many among the addresses nearest to it."""
    if not probes:
        return []
    cols: dict[str, list[Any]] = {k: [] for k in ("tag", "shape", *_BITS)}
    for it in probes:
        fields = _probe_fields(it)
        cols["tag"].append(it.tag)
        cols["shape"].append(sum(bit for f, bit in _BITS.items() if fields[f]))
        for f in _BITS:
            cols[f].append(fields[f])
    sql = probes_sql(cols["shape"], near=near is not None, bbox=bbox is not None)
    args = [cols[k] for k in ("tag", "shape", *_BITS)]
    return await conn.fetch(sql, *args, per_probe, *(near or ()), *(bbox or ()))
