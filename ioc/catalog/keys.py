"""API keys: created once and shown once, stored only as a SHA-256 hash.

Keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from ioc.catalog.access import KEY_ROLES, Principal
from ioc.db.connection import PgConn, Pool
from ioc.errors import InvalidParameter

KEY_PREFIX = "ioc_"


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the secret itself)."""

    id: int
    prefix: str
    role: str
    department: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: PgConn, role: str, department: str | None = None, label: str = "") -> str:
    """Store a new key for ``role`` and return it (the only time it is visible)."""
    if role not in KEY_ROLES:
        raise InvalidParameter(f"Unknown role '{role}': use one of {', '.join(KEY_ROLES)}.")
    if role == "publisher" and not department:
        raise InvalidParameter(
            "A publisher key needs --department (the department it publishes for)."
        )
    if role != "publisher" and department:
        raise InvalidParameter("Only publisher keys are bound to a department.")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ioc.api_keys (key_hash, prefix, role, department, label)"
            " VALUES (%s, %s, %s, %s, %s)",
            (hash_key(key), key[:10], role, department, label),
        )
    conn.commit()
    return key


def list_keys(conn: PgConn) -> list[ApiKey]:
    """Every key, newest first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, prefix, role, department, label, created_at, revoked_at"
            " FROM ioc.api_keys ORDER BY id DESC"
        )
        rows = cur.fetchall()
    conn.rollback()
    return [ApiKey(*row) for row in rows]


def revoke_key(conn: PgConn, key_id: int) -> bool:
    """Revoke a key; False when there is no such active key."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ioc.api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (key_id,),
        )
        changed = cur.rowcount == 1
    conn.commit()
    return changed


RESOLVE_SQL = (
    "SELECT id, role, department FROM ioc.api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
)


def principal_of(row) -> Principal:
    """The principal of an ``api_keys`` row (id, role, department)."""
    return Principal(role=row["role"], department=row["department"], key_id=row["id"])


async def resolve_key(pool: Pool, key: str) -> Principal | None:
    """The principal of an active key, or None (asyncpg pool)."""
    row = await pool.fetchrow(RESOLVE_SQL, hash_key(key))
    return None if row is None else principal_of(row)


def resolve_key_sync(conn: PgConn, key: str) -> Principal | None:
    """The principal of an active key, or None (psycopg2: commands such as the MQTT bridge)."""
    from psycopg2.extras import RealDictCursor

    with conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute(RESOLVE_SQL.replace("$1", "%s"), (hash_key(key),))
        row = cur.fetchone()
    conn.rollback()
    return None if row is None else principal_of(row)


Lookup = Callable[[object, str], Awaitable[Principal | None]]


class KeyCache:
    """Principals of known secrets (API keys, or map-session tokens with another ``lookup``)
    remembered for ``ttl`` seconds, so that a stream of tile requests from one operator does
    not query the key table each time. A revoked key stops working within ``ttl`` seconds.

    Only secrets that resolve are kept, least recently used evicted first: a flood of random
    keys costs one indexed look-up each and can never push a known key out (a cache that also
    stored unknown keys and emptied itself when full let anyone evict everyone).
    """

    def __init__(self, ttl: float = 10.0, size: int = 1024, lookup: Lookup = resolve_key) -> None:
        self.ttl = ttl
        self.size = size
        self.lookup = lookup
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def resolve(self, pool: Pool, secret: str) -> Principal | None:
        """Like ``lookup`` (:func:`resolve_key` by default), cached for known secrets."""
        now = time.monotonic()
        hit = self._entries.get(secret)
        if hit is not None:
            if hit[0] > now:
                self._entries.move_to_end(secret)
                return hit[1]
            del self._entries[secret]
        principal = await self.lookup(pool, secret)
        if principal is not None:
            self._entries[secret] = (now + self.ttl, principal)
            self._entries.move_to_end(secret)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return principal

    def forget(self, secret: str) -> None:
        """Drop a secret (a closed session) so this process stops accepting it at once."""
        self._entries.pop(secret, None)
