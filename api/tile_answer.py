"""The HTTP answer of a tile: status, cache headers by access level, ETag/304, 204 when empty,
gzip passed through when the client takes it. Shared by the tile router and the fast path of
``api/middleware.py``; the tile itself comes from ``tiles.render`` (which knows no HTTP)."""

from __future__ import annotations

from isal import igzip

from api.encoding import accepts_gzip
from ioc.media import MVT
from tiles.render import Tile
from tiles.settings import TileSettings
from tiles.versions import Freshness

# Cache-Control of a public tile asked for by a versioned URL (tiles.versions, docs/scaling.md):
# kept for ever while the tile is what the version says; else revalidated at every use.
YEAR = 31536000
VERSIONED: dict[Freshness, str] = {
    "current": f"public, max-age={YEAR}, immutable",
    "unknown": "public, no-cache",
}


def tile_answer(
    tile: Tile,
    public: bool,
    settings: TileSettings,
    if_none_match: str,
    accept_encoding: str,
    freshness: Freshness | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a tile: headers by access level (and, for a versioned URL,
    by ``freshness``), ETag/304, 204 when empty, gzip passed through when the client accepts
    it."""
    headers = {"ETag": tile.etag, "Content-Type": MVT}
    if settings.debug_headers:
        # Where the tile came from tells a caller whether someone else fetched it lately.
        headers["X-Tile-Cache"] = tile.source
    if public:
        default = f"public, max-age={settings.max_age}"
        headers["Cache-Control"] = VERSIONED.get(freshness, default) if freshness else default
        headers["Vary"] = "Accept-Encoding"
    else:
        # Never stored by shared caches; the answer depends on who asks.
        headers["Cache-Control"] = "private, no-store"
        headers["Vary"] = "Authorization, Accept-Encoding"
    if tile.truncated:
        headers["X-Tile-Truncated"] = ",".join(tile.truncated)
    if tile.etag in if_none_match:
        return 304, headers, b""
    if tile.empty:
        return 204, headers, b""
    if accepts_gzip(accept_encoding):
        headers["Content-Encoding"] = "gzip"
        return 200, headers, tile.data
    return 200, headers, igzip.decompress(tile.data)
