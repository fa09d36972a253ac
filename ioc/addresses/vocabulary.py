"""The vocabulary of the address registry: its street and ward names (``ioc.address_names``), kept
in memory per registry version, and the spans of a query each name explains (with or without
diacritics, one typo per syllable, or cut short at the end).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ioc.addresses.normalise import fold
from ioc.addresses.parsing import (
    Query,
)
from ioc.addresses.registry import (
    META_KEY,
)

EXACT, FUZZY, PREFIX = 1.0, 0.75, 0.6


FALLBACK_SIMILARITY = 0.5  # trigram similarity of the whole query to a name


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
