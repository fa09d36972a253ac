"""API keys: created once and shown once, stored only as a SHA-256 hash.

Keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from ioc.access import KEY_ROLES, Principal
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


def create_key(conn, role: str, department: str | None = None, label: str = "") -> str:
    """Store a new key for ``role`` and return it (the only time it is visible)."""
    if role not in KEY_ROLES:
        raise InvalidParameter(f"Unknown role '{role}': use one of {', '.join(KEY_ROLES)}.")
    if role == "publisher" and not department:
        raise InvalidParameter("A publisher key needs --department (the department it publishes for).")
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


def list_keys(conn) -> list[ApiKey]:
    """Every key, newest first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, prefix, role, department, label, created_at, revoked_at"
            " FROM ioc.api_keys ORDER BY id DESC"
        )
        rows = cur.fetchall()
    conn.rollback()
    return [ApiKey(*row) for row in rows]


def revoke_key(conn, key_id: int) -> bool:
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


async def resolve_key(pool, key: str) -> Principal | None:
    """The principal of an active key, or None (asyncpg pool)."""
    row = await pool.fetchrow(RESOLVE_SQL, hash_key(key))
    if row is None:
        return None
    return Principal(role=row["role"], department=row["department"], key_id=row["id"])


class KeyCache:
    """Resolved keys remembered for a few seconds, so that a stream of tile requests from one
    operator does not query the key table each time. A revoked key stops working within
    ``ttl`` seconds."""

    def __init__(self, ttl: float = 10.0, size: int = 1024) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    async def resolve(self, pool, key: str) -> Principal | None:
        """Like :func:`resolve_key`, cached."""
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await resolve_key(pool, key)
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (now + self.ttl, principal)
        return principal
