"""What one request may cost: the size of its body, per route family, enforced while it is read;
and the total time of a streamed answer.

The body limit is plain ASGI in front of the routes: a ``Content-Length`` over the limit is
answered 413 before the application runs, and a chunked body is counted as it arrives — the
first chunk past the limit stops the reading and the 413 goes out with ``Connection: close``,
so the server never takes in the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse

from api.errors import error_response
from ioc.addresses.geocode import max_upload_bytes
from ioc.config import Settings
from ioc.errors import QueryTimeout, UploadTooLarge

log = logging.getLogger("ioc.api")

# Room for the multipart framing (boundaries, part headers) around a geocoding CSV.
MULTIPART_OVERHEAD = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised into the application by ``receive`` when the body passes its limit. An
    HTTPException because FastAPI re-raises those unchanged from body parsing (any other
    exception becomes a 400 there); the app's own answer to it is replaced by the 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"The request body is larger than this route's limit of {limit:,} bytes."


def content_length(scope) -> int | None:
    """The declared body size (None when absent or malformed: the server rejects those)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _chunked(scope) -> bool:
    """Whether a request without Content-Length may have a body: in HTTP/1.1 only when chunked
    (without either header there is none, RFC 9112 §6.3); in HTTP/2 always (DATA frames)."""
    if not scope.get("http_version", "1.1").startswith("1"):
        return True
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


class BodyLimit:
    """Per-route body limits: publishing uploads ``IOC_UPLOAD_MAX_BYTES`` (their router
    counts them as it writes them to a file, so only the declared size is checked here),
    batch geocoding the CSV size its row limit allows, every other route
    ``IOC_REQUEST_BODY_MAX_BYTES`` (JSON queries, saved queries, manifests)."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.default = settings.server.request_body_max_bytes
        self.upload = settings.publish.upload_max_bytes
        self.geocode = max_upload_bytes(settings.addresses.geocode_max_rows)

    def limit(self, scope) -> tuple[int, bool]:
        """(limit, counted here) of the route family of the request."""
        path = scope["path"]
        if path.startswith("/layers/") and path.endswith("/data"):
            return self.upload, False
        if path == "/addresses/geocode":
            multipart = any(
                k == b"content-type" and v.lower().startswith(b"multipart/")
                for k, v in scope["headers"]
            )
            return self.geocode + (MULTIPART_OVERHEAD if multipart else 0), True
        return self.default, True

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, counted = self.limit(scope)
        declared = content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(limit, scope, receive, send)
            return
        if not counted or declared == 0 or (declared is None and not _chunked(scope)):
            await self.app(scope, receive, send)  # no body to count (most GETs)
            return
        received = 0
        exceeded = started = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to a body it could not read whole: ours goes out
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
        if exceeded and not started:
            await _refuse(limit, scope, receive, send)


async def _refuse(limit: int, scope, receive, send) -> None:
    """413 with the app's error body; the connection closes, the rest is never read."""
    response = error_response(UploadTooLarge(too_large_message(limit)), scope["path"])
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


# --- time ----------------------------------------------------------------------------------


def deadline_in(seconds: float) -> float:
    """The event-loop time ``seconds`` from now (for :func:`within` and
    :class:`TimedStreamingResponse`)."""
    return asyncio.get_running_loop().time() + seconds


def _timeout(seconds: float) -> QueryTimeout:
    return QueryTimeout(
        f"The answer would take longer than {seconds:g} s: narrow it with "
        "bbox, filter or limit, or page with offset."
    )


@asynccontextmanager
async def within(deadline: float, seconds: float) -> AsyncIterator[None]:
    """Work before the first byte of an answer, bounded by ``deadline``: past it the work is
    cancelled (a running query too) and the caller gets a 503."""
    try:
        async with asyncio.timeout_at(deadline):
            yield
    except TimeoutError:
        raise _timeout(seconds) from None


class TimedStreamingResponse(StreamingResponse):
    """A streamed answer that ends by ``deadline``, however slowly the client reads.

    Past the deadline the stream is cut: the database work is cancelled and the connection
    closed without the final chunk, so every HTTP client reports an incomplete body instead of
    taking a truncated CSV or GeoJSON sequence for a whole one. A 503 when nothing was sent yet.
    """

    def __init__(self, content, *, deadline: float, seconds: float, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.deadline = deadline
        self.seconds = seconds

    async def __call__(self, scope, receive, send) -> None:
        started = False

        async def watched_send(message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout_at(self.deadline):
                await super().__call__(scope, receive, watched_send)
        except TimeoutError:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            log.warning(
                "answer cut off at its time bound",
                extra={"path": scope["path"], "seconds": self.seconds},
            )
            if not started:
                await error_response(_timeout(self.seconds), scope["path"])(scope, receive, send)
