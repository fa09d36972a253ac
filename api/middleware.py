"""Request context as plain ASGI middleware: a request id and one structured log line.

Written as raw ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
wraps every response in extra tasks and streams, which cost more than a cached tile.
"""

from __future__ import annotations

import logging
import os
import time

from ioc.logs import request_id

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
