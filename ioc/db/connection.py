"""Connections: psycopg2 for commands and bulk loading, an asyncpg pool for the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import asyncpg
import psycopg2
import psycopg2.extensions

from ioc.errors import DatabaseUnavailable
from ioc.settings import DatabaseSettings

# The two database worlds, visibly different in signatures: a blocking psycopg2 connection for
# commands, migrations and bulk loading; an asyncpg pool for the API.
PgConn: TypeAlias = psycopg2.extensions.connection
Pool: TypeAlias = asyncpg.Pool


def _unavailable(settings: DatabaseSettings, exc: Exception) -> DatabaseUnavailable:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if settings.managed:
        return DatabaseUnavailable(
            f"The database is not running ({detail}): start it with 'ioc db start' "
            "or point DATABASE_URL at an existing PostGIS."
        )
    return DatabaseUnavailable(f"Cannot connect to DATABASE_URL: {detail}.")


def connect(settings: DatabaseSettings, database: str | None = None) -> PgConn:
    """A psycopg2 connection, or DatabaseUnavailable with one clear sentence."""
    try:
        return psycopg2.connect(
            settings.dsn(database), connect_timeout=5, application_name="ioc-cli"
        )
    except psycopg2.OperationalError as exc:
        raise _unavailable(settings, exc) from exc


def scalar(cur: psycopg2.extensions.cursor) -> Any:
    """The one value of a statement that always answers one row (count, EXISTS, RETURNING
    of an upsert)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("The statement answered no row.")
    return row[0]


@contextmanager
def connection(settings: DatabaseSettings) -> Iterator[PgConn]:
    """psycopg2 connection closed on exit."""
    conn = connect(settings)
    try:
        yield conn
    finally:
        conn.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing beyond asyncpg's own (roll back an open transaction, drop
    listeners). The default also sends ``RESET ALL; CLOSE ALL; UNLISTEN *; SELECT
    pg_advisory_unlock_all()`` on every release — one more round trip per request, a fifth of
    an average tile's database time. The API never leaves session state behind: it sets
    options with ``set_config(..., true)`` (transaction-local), opens cursors only inside
    transactions, and takes no advisory lock or LISTEN (tested)."""


async def create_pool(settings: DatabaseSettings, application_name: str = "ioc-api") -> Pool:
    """The API's connection pool (or a replica's: ioc.db.routing); statement timeout set per
    connection."""
    try:
        return await asyncpg.create_pool(
            settings.dsn(),
            min_size=settings.pool_min,
            max_size=max(settings.pool_max, settings.pool_min),
            init=_init_connection,
            reset=_keep_session,
            timeout=10,
            server_settings={
                "application_name": application_name,
                "statement_timeout": str(settings.statement_timeout_ms),
            },
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise _unavailable(settings, exc) from exc


def sibling_settings(name: str, base: DatabaseSettings) -> DatabaseSettings:
    """Settings of another database on the same server as ``base`` (tests, benchmarks)."""
    if base.managed:
        return base.model_copy(update={"db_name": name})
    return base.model_copy(update={"url": base.dsn(name)})


def create_database(name: str, base: DatabaseSettings) -> DatabaseSettings:
    """Create a database on the server of ``base`` when it is missing and return its settings
    (the server must be running). In the managed cluster it is made ready for ioc's role
    (ioc.db.cluster.ensure_database); with DATABASE_URL, that URL's user creates it."""
    from psycopg2 import sql as pgsql

    from ioc.db import cluster

    settings = sibling_settings(name, base)
    if base.managed:
        cluster.ensure_database(settings)
        return settings
    admin = connect(base, "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    finally:
        admin.close()
    return settings


def create_migrated(name: str, base: DatabaseSettings) -> DatabaseSettings:
    """:func:`create_database`, then migrate it (as the role ioc serves as)."""
    from ioc.db import migrations

    settings = create_database(name, base)
    with connection(settings) as conn:
        migrations.migrate(conn)
    return settings
