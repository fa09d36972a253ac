"""Plain ASGI middleware: the request context (a request id, one structured log line) and
the tile fast path.

Written as raw ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
wraps every response in extra tasks and streams, which cost more than a cached tile.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from urllib.parse import parse_qs

from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware

from api.encoding import accepts_gzip
from api.errors import error_response
from api.tile_answer import tile_answer
from ioc.catalog.access import ANONYMOUS
from ioc.logs import request_id
from tiles.render import MAX_ZOOM, all_public, resolve_layers
from tiles.versions import judge, parse_version

log = logging.getLogger("ioc.api")


# Request ids: a random prefix per process and a counter. Unique without a getrandom system
# call per request; uvicorn's workers are spawned (a fresh import each), so no two share it.
_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits, unique within and across server processes."""
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFF:08x}"


# Routes whose answers are the same whoever asks; every other answer depends on the caller
# (the layers they may read) and gets the caching rule of ``caching_headers``.
CALLER_INDEPENDENT = (
    "/healthz",
    "/readyz",
    "/conformance",
    "/tileMatrixSets",
    "/openapi.json",
    "/docs",
    "/redoc",
    "/static/",
)
PRIVATE = b"private, no-store"
ANONYMOUS_CACHE = b"public, max-age=60"
CACHEABLE_STATUS = frozenset((200, 203, 204, 206, 304))
VARY = ("Authorization", "Cookie")


def has_credentials(headers) -> bool:
    """True when a request carries a key (any Authorization) or a map-session cookie."""
    for name, value in headers:
        if name == b"authorization" or (name == b"cookie" and b"ioc_session=" in value):
            return True
    return False


def caching_headers(headers: list, credentials: bool, method: str, status: int) -> list:
    """The answer's headers under the caching rule of caller-dependent routes.

    With credentials: ``private, no-store`` whatever the route said (a shared cache must never
    keep, nor a browser store, what a key may read). Anonymous: the route's own
    ``Cache-Control`` (a ``private, no-store`` stays), else ``public, max-age=60`` for a
    successful GET. Both: ``Vary: Authorization, Cookie``, so a cache never hands an anonymous
    answer to a caller with a key, nor the other way round — except an anonymous answer that
    its route marked ``public`` without varying on ``Authorization``: it said the answer is
    the same for every caller (a tile of public layers), and shared caches may keep one copy.
    """
    vary: list[str] = []
    cache = None
    kept = []
    for name, value in headers:
        if name == b"vary":
            vary += [v.strip() for v in value.decode("latin-1").split(",") if v.strip()]
        elif name == b"cache-control":
            cache = value
        else:
            kept.append((name, value))
    seen = {v.lower() for v in vary}
    if (
        not credentials
        and cache is not None
        and cache.startswith(b"public")
        and "authorization" not in seen
    ):
        return headers
    if credentials:
        cache = PRIVATE
    elif cache is None and method in ("GET", "HEAD") and status in CACHEABLE_STATUS:
        cache = ANONYMOUS_CACHE
    if cache is not None:
        kept.append((b"cache-control", cache))
    vary += [v for v in VARY if v.lower() not in seen]
    kept.append((b"vary", ", ".join(vary).encode("latin-1")))
    return kept


class RequestContextMiddleware:
    """Take ``X-Request-ID`` from the client (or make one), echo it, log the request; add
    ``headers`` (fixed ones every answer carries, such as CORS for any origin); apply the
    caching rule of answers that depend on the caller (``caching_headers``)."""

    def __init__(self, app, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.app = app
        self.headers = tuple(headers)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = (
            next(
                (v.decode("latin-1")[:64] for k, v in scope["headers"] if k == b"x-request-id"),
                None,
            )
            or new_request_id()
        )
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        method = scope["method"]
        dependent = not scope["path"].startswith(CALLER_INDEPENDENT)
        credentials = dependent and has_credentials(scope["headers"])

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if dependent:
                    headers = caching_headers(headers, credentials, method, status)
                message["headers"] = [
                    *headers,
                    *self.headers,
                    (b"x-request-id", rid.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    extra={
                        "request_id": rid,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )


# CORS: request headers a web map on another origin may send, response headers it may read.
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-None-Match",
    "If-Match",
    "X-Request-ID",
)
CORS_EXPOSED_HEADERS = (
    "ETag",
    "Location",
    "Content-Crs",
    "X-Request-ID",
    "X-Tile-Truncated",
    "X-Tile-Cache",
    "Link",
    "OGC-NumberMatched",
)
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
CORS_MAX_AGE = 600


def with_cors(app, origins: Sequence[str]) -> tuple[object, tuple[tuple[bytes, bytes], ...]]:
    """The app behind CORS for ``origins``, and the headers every answer then carries.

    Never with credentials: the map session cookie stays with ioc's own pages. When any origin
    may read (``*``), every answer says so, whoever asks: the answer is the same for every
    origin, so it needs no ``Vary: Origin`` and no look at the request's headers (Starlette's
    middleware does both on every request: 15 % of a cached tile's cost). A list of origins
    goes to Starlette's middleware, which answers each origin its own.
    """
    if not origins:
        return app, ()
    if "*" not in origins:
        return CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=CORS_MAX_AGE,
        ), ()
    return Preflight(app), (
        (b"access-control-allow-origin", b"*"),
        (b"access-control-expose-headers", ", ".join(CORS_EXPOSED_HEADERS).encode()),
    )


class Preflight:
    """Answer CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``) when any
    origin may read; the request context adds ``Access-Control-Allow-Origin``. The browser
    checks the method and headers it asked for against these lists."""

    HEADERS = [
        (b"access-control-allow-methods", ", ".join(CORS_METHODS).encode()),
        (b"access-control-allow-headers", ", ".join(CORS_REQUEST_HEADERS).encode()),
        (b"access-control-max-age", str(CORS_MAX_AGE).encode()),
        (b"vary", b"Access-Control-Request-Method, Access-Control-Request-Headers"),
    ]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "OPTIONS"
            and any(k == b"access-control-request-method" for k, _ in scope["headers"])
        ):
            await send(
                {"type": "http.response.start", "status": 204, "headers": list(self.HEADERS)}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


class WeightedGZipMiddleware(GZipMiddleware):
    """Starlette's gzip for the app's answers, reading ``Accept-Encoding`` weights: it only
    looks for the word "gzip", so ``gzip;q=0`` (gzip refused) would get gzip."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            value = next((v for k, v in scope["headers"] if k == b"accept-encoding"), b"")
            text = value.decode("latin-1")
            if "gzip" in text and not accepts_gzip(text):
                scope = {
                    **scope,
                    "headers": [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"],
                }
        await super().__call__(scope, receive, send)


class HeadAsGet:
    """Answer HEAD exactly like GET, without the body (RFC 9110 §9.3.2): FastAPI routes GET
    only, so a HEAD of a style, a tile or a page would otherwise be a 405. The headers
    (Content-Length, ETag, caching) are the GET answer's."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_head(message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_head)


class TileFastPath:
    """Serve anonymous requests for public tiles straight from ASGI, in front of FastAPI's
    middleware stack, routing and dependency resolution (which cost more than a cached tile,
    and a third of an uncached one's server time).

    Tiles are fetched by the same ``TileService.get_tile`` as the app's handlers (memory, disk,
    then one database round trip) and answered by the same ``tile_answer``. Everything else — callers with a key
    or a session, non-public or unknown layers, malformed or out-of-range paths — goes on to
    the app, which answers exactly as before.
    """

    def __init__(self, app, owner) -> None:
        self.app = app
        self.owner = owner  # the application whose state (pool, catalog, tiles) is used

    async def __call__(self, scope, receive, send) -> None:
        request = _anonymous_tile(scope) if scope["type"] == "http" else None
        if request is None:
            await self.app(scope, receive, send)
            return
        ids, z, x, y, headers = request
        state = self.owner.state
        try:
            catalog = await state.current_catalog()
            if not all_public(catalog, ids):  # the app decides: 404, or a partial tile
                tile = None
            else:
                # A memory hit returns before get_tile's first await.
                layers = resolve_layers(catalog, ANONYMOUS, ids)
                pool = state.read_pool(layer.id for layer in layers)  # docs/scaling.md
                query = scope.get("query_string", b"")
                version = parse_version(parse_qs(query.decode("latin-1")).get("v", ()))
                tile = await state.tiles.get_tile(pool, layers, z, x, y)
                state.tile_sources[tile.source] += 1  # cache hits and misses (/metrics)
                # A versioned URL (docs/scaling.md): immutable while the tile is as of it.
                freshness = judge(state.tiles, layers, version, tile, z, x, y) if version else None
        except Exception as exc:  # noqa: BLE001 — answered like the app's handlers would
            await error_response(exc, scope["path"])(scope, receive, send)
            return
        if tile is None:
            await self.app(scope, receive, send)
            return
        status, answer, body = tile_answer(
            tile,
            True,
            state.tiles.settings,
            headers.get(b"if-none-match", b"").decode("latin-1"),
            headers.get(b"accept-encoding", b"").decode("latin-1"),
            freshness,
        )
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.items()]
        if status == 200:
            raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def _anonymous_tile(scope) -> tuple[str, int, int, int, dict[bytes, bytes]] | None:
    """(ids, z, x, y, headers) of an anonymous GET of a tile inside the tile matrix, by either
    tile path; None for anything else."""
    if scope["method"] != "GET":
        return None
    path: str = scope["path"]
    if path.startswith("/tiles/") and path.endswith(".pbf"):
        parts = path[len("/tiles/") : -len(".pbf")].split("/")
        if len(parts) != 4:
            return None
        ids, z, x, y = parts
    elif path.startswith("/collections/"):
        parts = path[len("/collections/") :].split("/")
        if len(parts) != 6 or parts[1:3] != ["tiles", "WebMercatorQuad"]:
            return None
        ids, z, y, x = parts[0], parts[3], parts[4], parts[5]  # tileMatrix/tileRow/tileCol
        if "," in ids:  # one collection per OGC path: the app answers 404, as for any bad id
            return None
    else:
        return None
    if not (z.isdigit() and x.isdigit() and y.isdigit()):
        return None
    zi, xi, yi = int(z), int(x), int(y)
    if not (zi <= MAX_ZOOM and xi < 1 << zi and yi < 1 << zi):
        return None
    headers = dict(scope["headers"])
    if b"authorization" in headers or b"ioc_session" in headers.get(b"cookie", b""):
        return None
    return ids, zi, xi, yi, headers
