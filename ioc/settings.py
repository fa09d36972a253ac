"""Settings from the environment (``IOC_`` prefix), grouped by concern.

Composed with the domains' groups into ``ioc.config.Settings``, built once by
:func:`ioc.config.get_settings` and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")


def _config() -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix="IOC_", env_file=".env", extra="ignore")


class DatabaseSettings(BaseSettings):
    """Where the database is: an existing PostGIS (``DATABASE_URL``) or the managed cluster."""

    model_config = _config()

    url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "IOC_DATABASE_URL"),
        description="PostgreSQL URL of an existing PostGIS; unset = the project-managed cluster.",
    )
    db_name: str = Field(default="ioc", description="Database name in the managed cluster.")
    db_role: str = Field(
        default="ioc",
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="The role ioc connects as in the managed cluster: it owns the database and "
        "is no superuser (docs/security.md).",
    )
    pg_dir: Path = Field(default=PROJECT_ROOT / "var" / "pg", description="Managed cluster home.")
    pg_port: int = Field(default=54329, ge=1024, le=65535)
    pg_bindir: Path | None = Field(default=None, description="PostgreSQL binaries (auto-detected).")
    pool_min: int = Field(default=2, ge=1)
    pool_max: int = Field(default=10, ge=1)
    statement_timeout_ms: int = Field(default=30_000, ge=100)
    replica_urls: Annotated[list[str], NoDecode] = Field(
        default=[],
        validation_alias=AliasChoices("DATABASE_REPLICA_URLS", "IOC_DATABASE_REPLICA_URLS"),
        description="Streaming replicas of DATABASE_URL (comma-separated URLs, or one HAProxy "
        "replica port) for the reads that tolerate lag (docs/scaling.md); empty = every read "
        "on the primary.",
    )
    replica_lag_budget_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How far behind the primary a replica may be and still answer reads; "
        "beyond it reads go to the primary.",
    )
    replica_check_seconds: float = Field(
        default=0.5, gt=0, le=60, description="How often each replica's lag is measured."
    )

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("replica_urls")
    @classmethod
    def _postgres_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("postgresql://", "postgres://")):
                raise ValueError(
                    "each replica URL must start with postgresql:// (a comma separates them)"
                )
        return value

    @property
    def managed(self) -> bool:
        """True when ioc runs its own PostGIS cluster under ``var/``."""
        return not self.url

    @property
    def socket_dir(self) -> Path:
        return self.pg_dir / "run"

    def dsn(self, database: str | None = None) -> str:
        """The libpq/asyncpg URL of the database (``database`` overrides the name)."""
        if self.url:
            if database is None:
                return self.url
            base, _, query = self.url.partition("?")
            base = base.rsplit("/", 1)[0] + "/" + database
            return f"{base}?{query}" if query else base
        return self._socket_dsn(self.db_role, database)

    def superuser_dsn(self, database: str | None = None) -> str:
        """The managed cluster's superuser, for creating the role, databases and extensions
        only (ioc.db.roles); with ``DATABASE_URL`` the same as :meth:`dsn`."""
        if self.url:
            return self.dsn(database)
        return self._socket_dsn("postgres", database)

    def _socket_dsn(self, user: str, database: str | None) -> str:
        # Unix socket only: the managed cluster does not listen on TCP.
        return (
            f"postgresql://{user}@/{database or self.db_name}"
            f"?host={self.socket_dir}&port={self.pg_port}"
        )


class ServerSettings(BaseSettings):
    """HTTP server."""

    model_config = _config()

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    catalog_check_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How often a process looks for registry changes made "
        "by other processes (publishes, registrations).",
    )
    public_url: str | None = Field(
        default=None, description="Base URL used in links when behind a proxy."
    )
    run_as: str = Field(
        default="ioc",
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="System user that 'ioc serve' serves as when started as root ('root' "
        "keeps root: not recommended). Ignored when not started as root.",
    )
    request_body_max_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="Largest request body of every route except the "
        "uploads (publishing: IOC_UPLOAD_MAX_BYTES; batch geocoding: IOC_ADDRESS_GEOCODE_MAX_ROWS "
        "kB): JSON queries, saved queries, manifests. Refused with 413 while it is read.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=["*"],
        description="Web origins whose pages may read ioc's answers (CORS), comma-separated, "
        "e.g. 'https://bando.example.vn'. '*' (the default) lets any site's map read what an "
        "anonymous caller, or the API key it sends, may read: cookies are never accepted "
        "across origins. Empty turns CORS off.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_only(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"'{origin}' is not a web origin (scheme://host[:port], no path) nor '*'"
                )
        return value


class DataSettings(BaseSettings):
    """Real open data of the city used to build the demo city (optional)."""

    model_config = _config()

    data_dir: Path | None = Field(default=None, description="Folder of real city data files.")
    seed_scale: Literal["demo", "city"] = "demo"

    @field_validator("data_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value


class PublishSettings(BaseSettings):
    """Limits and policy for department uploads."""

    model_config = _config()

    upload_max_bytes: int = Field(default=1 << 30, ge=1024, description="Largest upload (bytes).")
    upload_max_features: int = Field(default=2_000_000, ge=1)
    upload_max_uncompressed: int = Field(
        default=4 << 30, ge=1024, description="Largest total size inside a zip."
    )
    keep_versions: int = Field(default=5, ge=1, description="Data versions kept per layer.")
    preview_minutes: int = Field(
        default=30,
        ge=1,
        le=1440,
        description="How long a dry run's preview may still be published (minutes).",
    )
    events_retention_hours: float = Field(
        default=72, gt=0, description="How long change events are kept for resuming clients."
    )
    events_client_buffer: int = Field(
        default=256,
        ge=1,
        description="Change events a /events client may fall behind by (not reading) before "
        "its stream sends where to resume (Last-Event-ID) and ends.",
    )
    write_rate_per_second: float = Field(
        default=50,
        ge=0,
        description="Writes (item writes and feed batches of POST/PUT/PATCH/DELETE "
        "/collections/{id}/items) one API key may make per second on average, counted by each "
        "server process (every worker and replica counts on its own); past it 429 with "
        "Retry-After. 0 = no limit.",
    )
    write_burst: int = Field(
        default=100,
        ge=1,
        description="Writes one API key may make at once before IOC_WRITE_RATE_PER_SECOND "
        "holds it back.",
    )


class FeatureSettings(BaseSettings):
    """OGC API – Features answers (``IOC_FEATURES_*``): what one request may take."""

    model_config = SettingsConfigDict(env_prefix="IOC_FEATURES_", env_file=".env", extra="ignore")

    anonymous_max_features: int = Field(
        default=10_000,
        ge=1,
        description="Most features one answer gives an anonymous caller "
        "(exports included); the answer then links the rest (Link: rel=next).",
    )
    export_max_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Longest time one items answer (a page or an export) may "
        "take from the request to its last byte; past it the answer is cut off, never ended as "
        "if complete.",
    )


@dataclass
class CoreSettings:
    """The shared kernel's settings groups; ``ioc.config.Settings`` adds the domains' groups
    (tiles, maps, addresses, queries), which this bottom layer cannot import."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    data: DataSettings = field(default_factory=DataSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
