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
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ioc.addresses.normalise import fold
from ioc.addresses.registry import (
    ADDRESS_COLUMNS,
    ADDRESS_JOINS,
    META_KEY,
    TooManyRows,
    address_feature,
    address_properties,
)
from ioc.errors import InvalidParameter

EXACT, FUZZY, PREFIX = 1.0, 0.75, 0.6
NEAR_WEIGHT = 0.1  # a result 0 m away gains 0.1, one 1 km away 0.05
DISTRICT_BONUS = 0.05  # a 2019 ward whose district is also named in the query
MIN_SCORE = 0.2
FALLBACK_SIMILARITY = 0.5  # trigram similarity of the whole query to a name
MAX_QUERY_CHARS = 300
_HOUSE = re.compile(r"^\d+[a-z]?(?:/\d+[a-z]?)*$")
_SEGMENTS = re.compile(r"[,;|\n]+")

# Words that never identify a place here, removed before matching (longest first).
STOP_PHRASES = tuple(
    tuple(p.split())
    for p in (
        "thanh pho ho chi minh",
        "tp ho chi minh",
        "ho chi minh",
        "tp hcm",
        "tphcm",
        "hcm",
        "viet nam",
        "vietnam",
    )
)
# Unit words: kept (a numbered ward is "phuong 8") but not counted as words to explain.
ADMIN_WORDS = tuple(
    tuple(p.split())
    for p in ("thi tran", "dac khu", "so nha", "phuong", "p", "xa", "x", "tt", "duong", "d")
)
# A district word makes the following words of its segment (at most 3) optional: districts no
# longer exist since July 2025 and only help to tell apart numbered 2019 wards.
DISTRICT_WORDS = tuple(
    tuple(p.split()) for p in ("thanh pho", "thi xa", "quan", "huyen", "q", "tp", "tx")
)
# Sub-ward units with a number ("tổ 5", "khu phố 3", "ấp 2") are not in the registry.
SUBUNIT_WORDS = tuple(tuple(p.split()) for p in ("khu pho", "kp", "to", "ap"))


def street_tokens(name: str) -> tuple[str, ...]:
    """Words of a street name as ioc.street_key keys it ('Đường Lê Lợi' → le loi)."""
    tokens = fold(name).split()
    if len(tokens) > 1 and tokens[0] == "duong" and tokens[1] != "so":
        tokens = tokens[1:]
    return tuple(tokens)


def ward_tokens(name: str) -> tuple[str, ...]:
    """Words of a ward name; numbered wards keep their unit word ('Phường 8' → phuong 8)."""
    tokens = fold(name).split()
    for prefix in (("phuong",), ("xa",), ("thi", "tran"), ("dac", "khu"), ("ward",)):
        if tuple(tokens[: len(prefix)]) == prefix and len(tokens) > len(prefix):
            rest = tokens[len(prefix) :]
            return ("phuong", *rest) if rest[0].isdigit() else tuple(rest)
    return ("phuong", *tokens) if tokens and tokens[0].isdigit() else tuple(tokens)


def district_tokens(name: str | None) -> tuple[str, ...]:
    tokens = fold(name or "").split()
    for prefix in (("quan",), ("huyen",), ("thanh", "pho"), ("district",)):
        if tuple(tokens[: len(prefix)]) == prefix:
            return tuple(tokens[len(prefix) :])
    return tuple(t for t in tokens if t != "district")


# --- the query -----------------------------------------------------------------------------


@dataclass
class Query:
    """A folded query: words, their segment (commas separate), which words need explaining."""

    text: str
    tokens: list[str]
    segment: list[int]
    required: list[bool]
    house: str | None

    @property
    def weight(self) -> int:
        """Words to explain, the house number included."""
        return sum(self.required) + (1 if self.house else 0)


def _starts(tokens: list[str], i: int, phrases: Iterable[tuple[str, ...]]) -> int:
    for phrase in phrases:
        if tuple(tokens[i : i + len(phrase)]) == phrase:
            return len(phrase)
    return 0


def parse_query(text: str) -> Query:
    """Split, fold and mark a free-text address; InvalidParameter when nothing is left."""
    text = (text or "").strip()
    if not text:
        raise InvalidParameter("Thiếu từ khoá tìm kiếm / the search text is empty.", parameter="q")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidParameter(
            f"Từ khoá quá dài / the search text is longer than {MAX_QUERY_CHARS} characters.",
            parameter="q",
        )
    tokens: list[str] = []
    segment: list[int] = []
    for k, part in enumerate(_SEGMENTS.split(text)):
        words = fold(part).split()
        i = 0
        while i < len(words):
            n = _starts(words, i, STOP_PHRASES)
            if n:
                i += n
                continue
            tokens.append(words[i])
            segment.append(k)
            i += 1
    required = [True] * len(tokens)
    house = None
    start = _starts(tokens, 0, (("so", "nha"), ("so",)))
    if len(tokens) > start + 1 and _HOUSE.match(tokens[start]):
        house = tokens[start]
        del tokens[: start + 1], segment[: start + 1], required[: start + 1]
    i = 0
    while i < len(tokens):
        n = _starts(tokens, i, SUBUNIT_WORDS)
        if n and i + n < len(tokens) and tokens[i + n][0].isdigit():
            for k in range(i, i + n + 1):
                required[k] = False
            i += n + 1
            continue
        n = _starts(tokens, i, DISTRICT_WORDS)
        if n:
            end = i + n
            while end < len(tokens) and end < i + n + 3 and segment[end] == segment[i]:
                end += 1
            for k in range(i, end):
                required[k] = False
            i = end
            continue
        n = _starts(tokens, i, ADMIN_WORDS)
        for k in range(i, i + n):
            required[k] = False
        i += max(n, 1)
    if not tokens and house is None:
        raise InvalidParameter(
            "Từ khoá không chứa tên đường hay phường / the search text names no street or ward.",
            parameter="q",
        )
    return Query(text, tokens, segment, required, house)


# --- the vocabulary ------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """A street or ward of the registry's vocabulary."""

    kind: str  # street | ward | ward_2019
    key: str  # street_key or ward code
    label: str
    tokens: tuple[str, ...]
    district: tuple[str, ...]
    n: int


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _one_edit(a: str, b: str) -> bool:
    """Damerau–Levenshtein distance exactly 1 (one substitution, insertion, deletion or swap)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def token_sim(name_token: str, query_token: str, last: bool) -> float:
    """How well a query word spells a name word: exact, one typo, or the start of it (last word)."""
    if name_token == query_token:
        return EXACT
    if not (name_token.isalpha() and query_token.isalpha()):  # numbers match exactly or not
        return 0.0
    if last and len(query_token) >= 2 and name_token.startswith(query_token):
        return PREFIX
    if (
        min(len(name_token), len(query_token)) >= 3
        and max(len(name_token), len(query_token)) >= 4
        and _one_edit(name_token, query_token)
    ):
        return FUZZY
    return 0.0


@dataclass
class Span:
    """A name found in the query: words [start, end) of the query."""

    name: Name
    start: int
    end: int
    quality: float  # mean similarity over the whole name (1 = exact and complete)
    contribution: float  # query words it explains (similarity-weighted, required words only)


class Vocabulary:
    """The registry's names, indexed by word; one-word names also by one-deletion variants and
    alphabetically (the only names a misspelt or unfinished word may reach on its own)."""

    def __init__(self, names: Sequence[Name]) -> None:
        self.names = list(names)
        self.by_key = {(n.kind, n.key): n for n in self.names}
        self.index: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.pairs: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        self.single: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(self.names):
            for j, token in enumerate(name.tokens):
                self.index[token].append((i, j))
                if j + 1 < len(name.tokens):
                    self.pairs[(token, name.tokens[j + 1])].append((i, j))
            if len(name.tokens) == 1:
                self.single[name.tokens[0]].append(i)
        self.deletes: dict[str, set[str]] = defaultdict(set)
        for token in self.single:
            if len(token) >= 4 and not any(c.isdigit() for c in token):
                for variant in _deletions(token):
                    self.deletes[variant].add(token)
        self.sorted_single = sorted(self.single)

    @classmethod
    def from_rows(cls, rows: Iterable[Any]) -> Vocabulary:
        names = []
        for r in rows:
            tokens = street_tokens(r["name"]) if r["kind"] == "street" else ward_tokens(r["name"])
            if tokens:
                names.append(
                    Name(
                        r["kind"],
                        r["key"],
                        r["label"],
                        tokens,
                        district_tokens(r["district"]),
                        r["n"],
                    )
                )
        return cls(names)

    def near_single(self, word: str, last: bool) -> list[str]:
        """Words of one-word names a query word may stand for: one typo away, or (the last
        word) their beginning."""
        found: set[str] = set()
        if any(c.isdigit() for c in word):
            return []
        if len(word) >= 3:
            candidates = set(self.deletes.get(word, ()))
            for variant in _deletions(word):
                candidates |= self.deletes.get(variant, set())
                if variant in self.single:
                    candidates.add(variant)
            found |= {c for c in candidates if token_sim(c, word, False) == FUZZY}
        if last and len(word) >= 3:
            k = bisect.bisect_left(self.sorted_single, word)
            for cand in self.sorted_single[k : k + 50]:
                if not cand.startswith(word):
                    break
                found.add(cand)
        found.discard(word)
        return sorted(found)

    def spans(self, q: Query) -> list[Span]:
        """Every name found in the query (all of it, or at least half of it and two words).

        A name of several words needs two aligned neighbouring words, one spelt right (see
        _align), so seeds are pairs of words, or a known word next to an unknown or unfinished
        one; only one-word names are reached through a typo or a prefix alone.
        """
        best: dict[tuple[int, int, int], Span] = {}
        # (name, diagonal, name word) already inside an aligned run, kept or not: another seed
        # on the same run would grow into the same run.
        done: set[tuple[int, int, int]] = set()
        last = len(q.tokens) - 1

        def grow(name_idx: int, i: int, j: int) -> None:
            diagonal = i - j
            if (name_idx, diagonal, j) in done:
                return
            j0, j1, span = self._align(q, self.names[name_idx], i, j)
            done.update((name_idx, diagonal, k) for k in range(j0, j1))
            if span is None:
                return
            key = (name_idx, span.start, span.end)
            if key not in best or best[key].quality < span.quality:
                best[key] = span

        words, segment = q.tokens, q.segment
        for i, word in enumerate(words):
            # Names of several words match on two neighbouring words, one of them spelt right:
            # seeds are pairs of words found next to each other in a name...
            if i < last and segment[i + 1] == segment[i]:
                for name_idx, j in self.pairs.get((word, words[i + 1]), ()):
                    grow(name_idx, i, j)
            # ...or, next to a word the vocabulary does not know (a typo) or the unfinished last
            # word, every name with the known word.
            if word in self.index and any(
                0 <= k <= last
                and segment[k] == segment[i]
                and (words[k] not in self.index or k == last)
                for k in (i - 1, i + 1)
            ):
                for name_idx, j in self.index[word]:
                    grow(name_idx, i, j)
            for name_idx in self.single.get(word, ()):
                grow(name_idx, i, 0)
            for token in self.near_single(word, i == last):
                for name_idx in self.single[token]:
                    grow(name_idx, i, 0)
        return [s for s in best.values() if s.contribution > 0]

    @staticmethod
    def _align(q: Query, name: Name, i: int, j: int) -> tuple[int, int, Span | None]:
        """Grow a one-word match at query word i / name word j into the longest aligned run:
        its name words [j0, j1) and the span, or None when the run is not a match."""
        tokens, words, segment = name.tokens, q.tokens, q.segment
        last = len(words) - 1
        first_sim = token_sim(tokens[j], words[i], i == last)
        if first_sim == 0:
            return j, j + 1, None
        sims = {j: first_sim}
        i0, j0 = i, j
        while i0 > 0 and j0 > 0 and segment[i0 - 1] == segment[i]:
            s = token_sim(tokens[j0 - 1], words[i0 - 1], False)
            if s == 0:
                break
            i0, j0 = i0 - 1, j0 - 1
            sims[j0] = s
        i1, j1 = i + 1, j + 1
        size = len(tokens)
        while i1 <= last and j1 < size and segment[i1] == segment[i]:
            s = token_sim(tokens[j1], words[i1], i1 == last)
            if s == 0:
                break
            sims[j1] = s
            i1, j1 = i1 + 1, j1 + 1
        # Part of a name is enough from half of it and two words on ("Minh Khai" for "Nguyễn Thị
        # Minh Khai"); one word of a two-word name ("Thạnh" of "Đông Thạnh") is not.
        if 2 * (j1 - j0) < size or j1 - j0 < min(size, 2):
            return j0, j1, None
        # Syllables one typo apart abound (minh/binh/linh, khai/thai): a name of several words
        # needs one of them spelled right.
        if size > 1 and max(sims.values()) < EXACT:
            return j0, j1, None
        completeness = (j1 - j0) / size
        explained = sum(sims[j0 + k] for k in range(i1 - i0) if q.required[i0 + k])
        return j0, j1, Span(name, i0, i1, sum(sims.values()) / size, explained * completeness)


# --- interpretations and probes -----------------------------------------------------------


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


# --- vocabulary cache ----------------------------------------------------------------------

_CACHE: dict[str, tuple[int, Vocabulary]] = {}
VOCABULARY_SQL = "SELECT kind, key, name, label, district, n FROM ioc.address_names"


async def vocabulary(conn) -> Vocabulary:
    """The vocabulary of this database, reloaded when the registry version changed."""
    row = await conn.fetchrow(
        "SELECT current_database() AS db, (SELECT (value ->> 'version')::int FROM ioc.meta"
        " WHERE key = $1) AS version",
        META_KEY,
    )
    version = row["version"] or 0
    cached = _CACHE.get(row["db"])
    if cached and cached[0] == version:
        return cached[1]
    vocab = Vocabulary.from_rows(await conn.fetch(VOCABULARY_SQL))
    _CACHE[row["db"]] = (version, vocab)
    return vocab


async def _fallback_spans(conn, vocab: Vocabulary, q: Query) -> list[Span]:
    """Names close to the whole query by trigram similarity (GIN index): beyond one typo."""
    text = " ".join(t for t, r in zip(q.tokens, q.required, strict=True) if r)
    if len(text) < 3:
        return []
    rows = await conn.fetch(
        "SELECT kind, key, similarity(search_text, $1) AS s FROM ioc.address_names"
        " WHERE search_text % $1 AND similarity(search_text, $1) >= $2"
        " ORDER BY s DESC, n DESC LIMIT 5",
        text,
        FALLBACK_SIMILARITY,
    )
    spans = []
    for r in rows:
        name = vocab.by_key.get((r["kind"], r["key"]))
        if name is not None:
            spans.append(Span(name, 0, len(q.tokens), r["s"], r["s"] * sum(q.required)))
    return spans


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
    rows = []
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
            q = queries[k]
            mine = [p for p in probes if owner[p.tag] == k]
            hits = _hits(q, mine, per_row[k], None) if q is not None else []
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
