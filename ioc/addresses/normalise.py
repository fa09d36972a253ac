"""Folding of Vietnamese text for matching: the Python twin of the database's ``ioc.search_key``.

Below both the registry and the geocoder, which compare names folded.
"""

from __future__ import annotations

import re
import unicodedata

_FOLD = re.compile(r"[^a-z0-9/]+")
_D = str.maketrans({"đ": "d", "Đ": "D", "ð": "d", "Ð": "D"})


def fold(text: str) -> str:
    """Lower-case ASCII words ('Đường Tân Định' → 'duong tan dinh'): Python twin of ioc.search_key."""
    # đ/Đ (and the look-alike Icelandic ð/Ð found in OSM names) do not decompose under NFKD.
    text = text.translate(_D)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _FOLD.sub(" ", text.lower()).strip()
