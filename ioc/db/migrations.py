"""Versioned SQL migrations from ``sql/NNNN_name.sql``.

Each file is applied once, in its own transaction, and recorded in ``ioc.schema_migrations``.
Re-running applies nothing. A database that records a version this code does not know is
"ahead of the code" and is refused. PostGIS must be available and at least ``MIN_POSTGIS``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ioc.errors import MigrationError, PostGISMissing

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MIN_POSTGIS = (3, 1)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# One lock id for all ioc migrations, so two processes never migrate at once.
_LOCK_ID = 0x10C0_0001

BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS ioc;
CREATE TABLE IF NOT EXISTS ioc.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    """Where a database stands against the code."""

    applied: list[int]
    pending: list[Migration]
    ahead: list[int]

    @property
    def current(self) -> bool:
        return not self.pending and not self.ahead

    @property
    def version(self) -> int:
        return max(self.applied, default=0)


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The migrations shipped with the code, in order."""
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError("Two migration files share a version number in sql/.")
    return found


def _applied_versions(cur) -> list[int]:
    cur.execute("SELECT to_regclass('ioc.schema_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return []
    cur.execute("SELECT version FROM ioc.schema_migrations ORDER BY version")
    return [row[0] for row in cur.fetchall()]


def compare(applied: list[int], migrations: list[Migration]) -> MigrationState:
    """Where applied versions stand against the code's migrations."""
    known = {m.version for m in migrations}
    done = set(applied)
    return MigrationState(
        applied=sorted(applied),
        pending=[m for m in migrations if m.version not in done],
        ahead=[v for v in applied if v not in known],
    )


def state(conn, migrations: list[Migration] | None = None) -> MigrationState:
    """Compare the database's recorded migrations with the code's (psycopg2 connection)."""
    with conn.cursor() as cur:
        applied = _applied_versions(cur)
    conn.rollback()
    return compare(applied, discover() if migrations is None else migrations)


APPLIED_SQL = (
    "SELECT coalesce(array_agg(version ORDER BY version), '{}') FROM ioc.schema_migrations"
)


async def state_async(pool) -> MigrationState:
    """The same comparison over an asyncpg pool (for start-up and /readyz)."""
    exists = await pool.fetchval("SELECT to_regclass('ioc.schema_migrations') IS NOT NULL")
    applied = list(await pool.fetchval(APPLIED_SQL)) if exists else []
    return compare(applied, discover())


POSTGIS_VERSION_SQL = "SELECT extversion FROM pg_extension WHERE extname = 'postgis'"


def check_postgis(conn) -> str:
    """Return the PostGIS version available to the database, or raise PostGISMissing."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'postgis'),"
            " (SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'))"
        )
        version = cur.fetchone()[0]
    conn.rollback()
    if version is None:
        raise PostGISMissing(
            "PostGIS is not installed on the database server: install postgresql-15-postgis-3 "
            "(make setup does it) or point DATABASE_URL at a PostGIS database."
        )
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if parts < MIN_POSTGIS:
        raise PostGISMissing(
            f"PostGIS {version} is too old: ioc needs {MIN_POSTGIS[0]}.{MIN_POSTGIS[1]} or newer."
        )
    return version


def migrate(conn, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply pending migrations (each in its own transaction); return those applied now."""
    migrations = discover() if migrations is None else migrations
    check_postgis(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
    conn.commit()
    try:
        with conn.cursor() as cur:
            cur.execute(BOOTSTRAP)
        conn.commit()
        current = state(conn, migrations)
        if current.ahead:
            raise MigrationError(
                f"The database has migration(s) {current.ahead} that this version of ioc does not "
                "know: it is ahead of the code; upgrade ioc instead of serving it."
            )
        done = []
        for migration in current.pending:
            try:
                with conn.cursor() as cur:
                    cur.execute(migration.sql)
                    cur.execute(
                        "INSERT INTO ioc.schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                conn.commit()
            except Exception as exc:
                conn.rollback()
                raise MigrationError(
                    f"Migration {migration.path.name} failed and was rolled back: "
                    f"{str(exc).strip().splitlines()[0]}"
                ) from exc
            done.append(migration)
        return done
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
        conn.commit()
