"""The one table from domain errors to HTTP statuses, and the JSON error body."""

from __future__ import annotations

import logging

import asyncpg
import psycopg2
import psycopg2.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.openapi import document_errors
from ioc import errors
from ioc.addresses.registry import TooManyRows

STATUS: dict[type[errors.IocError], int] = {
    errors.InvalidParameter: 400,
    errors.NotAuthenticated: 401,
    errors.Forbidden: 403,
    errors.LayerNotFound: 404,
    errors.FeatureNotFound: 404,
    errors.HistoryNotKept: 404,
    errors.PreviewNotFound: 404,
    errors.Conflict: 409,
    errors.PreconditionFailed: 412,
    errors.TooManyWrites: 429,
    errors.DatabaseUnavailable: 503,
    errors.PostGISMissing: 503,
    errors.MigrationError: 503,
    errors.ClusterError: 503,
    errors.ConfigError: 500,
    errors.QueryTimeout: 503,
    errors.UploadRejected: 422,
    errors.UploadTooLarge: 413,
    TooManyRows: 413,
}

log = logging.getLogger("ioc.api")


def status_of(exc: errors.IocError) -> int:
    """The HTTP status of a domain error (most specific class wins)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(code: str, description: str, parameter: str | None = None) -> dict[str, str]:
    """OGC API exception body (``code``, ``description``) plus the offending parameter."""
    body = {"code": code, "description": description}
    if parameter:
        body["parameter"] = parameter
    return body


# The database went away under a request (restart, failover, terminated backend): the caller
# may retry, so it is a 503 rather than a 500.
CONNECTION_ERRORS = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # A node being demoted in a failover answers writes read-only until clients move on.
    asyncpg.ReadOnlySQLTransactionError,
    # The same for the domain's psycopg2 connections (writes, publishing): a backend ended by
    # a failover or restart, a connection already closed, a read-only node.
    psycopg2.InterfaceError,
    psycopg2.errors.AdminShutdown,
    psycopg2.errors.CrashShutdown,
    psycopg2.errors.CannotConnectNow,
    psycopg2.errors.ReadOnlySqlTransaction,
)


def domain_error(exc: Exception) -> errors.IocError | None:
    """The domain error an exception stands for, or None when it is a bug."""
    if isinstance(exc, errors.IocError):
        return exc
    if isinstance(exc, psycopg2.errors.QueryCanceled):  # an OperationalError, not a lost link
        return errors.QueryTimeout("The database took too long to answer; try again later.")
    if isinstance(exc, CONNECTION_ERRORS) or (
        # "server closed the connection unexpectedly" has no SQLSTATE: the link itself broke.
        isinstance(exc, psycopg2.OperationalError) and exc.pgcode is None
    ):
        return errors.DatabaseUnavailable(
            "The database connection was lost; try again in a moment."
        )
    return None


# A 401 names both ways to send a key, one challenge per field (some clients read only the
# first challenge of a field): Basic first, so that QGIS and GDAL/curl retry with their
# credentials (the key as the password), then Bearer.
CHALLENGES = [
    (b"www-authenticate", b'Basic realm="ioc", charset="UTF-8"'),
    (b"www-authenticate", b'Bearer realm="ioc"'),
]


def error_response(exc: Exception, path: str = "") -> JSONResponse:
    """The JSON answer of an exception raised while serving a request (also used by the
    plain-ASGI tile fast path, which runs outside FastAPI's handlers)."""
    domain = domain_error(exc)
    if domain is None:
        log.error("unhandled error", exc_info=exc, extra={"path": path})
        return JSONResponse(
            error_body(
                "ServerError",
                "An unexpected error occurred; it has been logged with the request id.",
            ),
            status_code=500,
        )
    status = status_of(domain)
    body: dict = error_body(type(domain).__name__, domain.message, domain.parameter)
    if isinstance(domain, errors.UploadRejected) and domain.report:
        body["report"] = domain.report
    response = JSONResponse(body, status_code=status)
    if status == 401:
        response.raw_headers.extend(CHALLENGES)
    if isinstance(domain, errors.TooManyWrites):
        response.headers["Retry-After"] = str(domain.retry_after)
    return response


def install(app: FastAPI) -> None:
    """Register the handlers on the app, and document their answers in its OpenAPI."""
    document_errors(app)

    @app.exception_handler(errors.IocError)
    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, request.url.path)

    for cls in CONNECTION_ERRORS:  # handled, not re-raised like an unexpected exception
        app.add_exception_handler(cls, _domain)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
        parameter = ".".join(loc) or None
        message = (
            f"Invalid value for '{parameter}': {first.get('msg', 'invalid')}."
            if parameter
            else f"Invalid request: {first.get('msg', 'invalid')}."
        )
        return JSONResponse(error_body("InvalidParameter", message, parameter), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "NotFound" if exc.status_code == 404 else "HTTPError"
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, request.url.path)
