"""Plain ASGI middleware: the request context (a request id, one structured log line) and
the cached-tile fast path.

Written as raw ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
wraps every response in extra tasks and streams, which cost more than a cached tile.
"""

from __future__ import annotations

import logging
import os
import time

from ioc.access import ANONYMOUS, can_read
from ioc.logs import request_id
from tiles.render import MAX_ZOOM, tile_answer

log = logging.getLogger("ioc.api")


class RequestContextMiddleware:
    """Take ``X-Request-ID`` from the client (or make one), echo it, log the request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((v.decode("latin-1")[:64] for k, v in scope["headers"] if k == b"x-request-id"),
                   None) or os.urandom(8).hex()
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()),
                                      (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={
                    "request_id": rid, "method": scope["method"], "path": scope["path"],
                    "status": status, "ms": round((time.perf_counter() - started) * 1000, 1)})


class CachedTileMiddleware:
    """Serve anonymous requests for public tiles already in the in-process cache straight from
    ASGI, without routing and dependency resolution (which cost more than the tile itself).

    Everything else — callers with a key or a session, non-public or unknown layers, cache
    misses, a catalog due for its freshness check, malformed paths — goes on to the app, which
    answers exactly as before. The answer is built by the same function as the app's.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path.startswith("/tiles/") and path.endswith(".pbf"):
                answer = self._cached(scope)
                if answer is not None:
                    status, headers, body = answer
                    raw = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                           for k, v in headers.items()]
                    if status == 200:
                        raw.append((b"content-length", str(len(body)).encode()))
                    await send({"type": "http.response.start", "status": status, "headers": raw})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _cached(scope) -> tuple[int, dict[str, str], bytes] | None:
        headers = dict(scope["headers"])
        if b"authorization" in headers or b"ioc_session" in headers.get(b"cookie", b""):
            return None
        state = scope["app"].state
        service = getattr(state, "tiles", None)
        watcher = getattr(state, "catalog_watcher", None)
        if service is None or watcher is None or watcher.due():
            return None
        parts = scope["path"][len("/tiles/"):-len(".pbf")].split("/")
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            return None
        ids, (z, x, y) = parts[0], (int(p) for p in parts[1:])
        if not (0 <= z <= MAX_ZOOM and 0 <= x < 1 << z and 0 <= y < 1 << z):
            return None
        layers = []
        for layer_id in dict.fromkeys(ids.split(",")):
            layer = state.catalog.find(layer_id)
            if layer is None or not can_read(ANONYMOUS, layer):
                return None  # unknown or not public: the app decides (404, partial tile)
            layers.append(layer)
        tile = service.memory_tile(layers, z, x, y)
        if tile is None:
            return None
        return tile_answer(tile, True, service.settings.max_age,
                           headers.get(b"if-none-match", b"").decode("latin-1"),
                           headers.get(b"accept-encoding", b"").decode("latin-1"))
