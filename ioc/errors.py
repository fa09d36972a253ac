"""Domain errors. Only ``api/errors.py`` maps them to HTTP statuses."""

from __future__ import annotations


class IocError(Exception):
    """Base of every error ioc reports to a user; the message is one clear sentence."""

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter


class DatabaseUnavailable(IocError):
    """The database cannot be reached."""


class PostGISMissing(IocError):
    """PostGIS is absent or too old."""


class MigrationError(IocError):
    """Migrations cannot be applied, or the database is ahead of the code."""


class ClusterError(IocError):
    """The project-managed PostgreSQL cluster cannot be started or stopped."""


class ConfigError(IocError):
    """A setting (an ``IOC_*`` variable) or a configuration file is wrong: a start-up error."""


class LayerNotFound(IocError):
    """Unknown layer, or one the caller may not read (the same answer on purpose)."""


class FeatureNotFound(IocError):
    """Unknown feature id in a layer."""


class InvalidParameter(IocError):
    """A request parameter is malformed or out of range."""


class NotAuthenticated(IocError):
    """An API key was sent but is unknown or revoked."""


class Forbidden(IocError):
    """The caller may read the layer but not change it."""


class Conflict(IocError):
    """The request conflicts with what is stored (e.g. an existing id)."""


class PreconditionFailed(IocError):
    """An ``If-Match`` names a state of the resource that is no longer current."""


class TooManyWrites(IocError):
    """An API key writes faster than its rate; ``retry_after`` seconds until the next may go."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueryTimeout(IocError):
    """A query ran past the statement timeout (too broad a request, or an overloaded server)."""


class UploadRejected(IocError):
    """An upload failed validation; ``report`` says which rows and why."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class UploadTooLarge(IocError):
    """An upload exceeds the size or feature limits."""


class HistoryNotKept(IocError):
    """The past of a layer whose manifest declares no history was asked for."""


class VersionNotFound(FeatureNotFound):
    """A layer version that does not exist or is no longer kept."""


class PreviewNotFound(IocError):
    """A dry-run preview that is unknown, expired, already published or another key's."""
