"""Reading a free-text address query: segments, folded words, the house number, and which words
need explaining (unit, district and sub-ward words do not). See ``ioc.addresses.geocode``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ioc.addresses.normalise import fold
from ioc.errors import InvalidParameter

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
    text = _checked(text)
    tokens, segment = _words(text)
    required = [True] * len(tokens)
    house = None
    start = _starts(tokens, 0, (("so", "nha"), ("so",)))
    if len(tokens) > start + 1 and _HOUSE.match(tokens[start]):
        house = tokens[start]
        del tokens[: start + 1], segment[: start + 1], required[: start + 1]
    _mark_optional(tokens, segment, required)
    if not tokens and house is None:
        raise InvalidParameter(
            "Từ khoá không chứa tên đường hay phường / the search text names no street or ward.",
            parameter="q",
        )
    return Query(text, tokens, segment, required, house)


def _checked(text: str) -> str:
    """The stripped text; InvalidParameter when it is empty or too long."""
    text = (text or "").strip()
    if not text:
        raise InvalidParameter("Thiếu từ khoá tìm kiếm / the search text is empty.", parameter="q")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidParameter(
            f"Từ khoá quá dài / the search text is longer than {MAX_QUERY_CHARS} characters.",
            parameter="q",
        )
    return text


def _words(text: str) -> tuple[list[str], list[int]]:
    """Folded words without the stop phrases, and the segment (comma-separated part) of each."""
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
    return tokens, segment


def _mark_optional(tokens: list[str], segment: list[int], required: list[bool]) -> None:
    """Unmark the words that need no explaining: numbered sub-wards, districts, unit words."""
    i = 0
    while i < len(tokens):
        n = _starts(tokens, i, SUBUNIT_WORDS)
        if n and i + n < len(tokens) and tokens[i + n][0].isdigit():
            end = i + n + 1  # "tổ 5": the unit word and its number
        elif n := _starts(tokens, i, DISTRICT_WORDS):
            end = i + n
            while end < len(tokens) and end < i + n + 3 and segment[end] == segment[i]:
                end += 1
        else:
            n = _starts(tokens, i, ADMIN_WORDS)
            end = i + n
        for k in range(i, end):
            required[k] = False
        i = max(end, i + 1)
