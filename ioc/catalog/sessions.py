"""Map sessions: a random token per browser sign-in that stands for an API key on safe
requests, so that a wall screen (which cannot send a header) reads internal layers.

The cookie never holds the key itself. Only the token's SHA-256 is stored (like keys: a
256-bit random token needs no stretching); a session ends when it expires, when it is closed,
or when its key is revoked (every look-up joins the key's ``revoked_at``).
"""

from __future__ import annotations

import secrets

from ioc.catalog.access import Principal
from ioc.catalog.keys import hash_key, principal_of
from ioc.db.connection import Pool

OPEN_SQL = (
    "INSERT INTO ioc.map_sessions (token_hash, key_id, expires_at)"
    " VALUES ($1, $2, now() + make_interval(hours => $3))"
)
# Expired rows are deleted when a session opens: no timer, and the table stays as small as the
# number of live sessions.
PURGE_SQL = "DELETE FROM ioc.map_sessions WHERE expires_at <= now()"
RESOLVE_SQL = (
    "SELECT k.id, k.role, k.department FROM ioc.map_sessions s"
    " JOIN ioc.api_keys k ON k.id = s.key_id"
    " WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL"
)
CLOSE_SQL = "DELETE FROM ioc.map_sessions WHERE token_hash = $1"


async def open_session(pool: Pool, key_id: int, hours: int) -> str:
    """Store a new session of key ``key_id`` lasting ``hours``; return its token (shown once)."""
    token = secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(PURGE_SQL)
        await conn.execute(OPEN_SQL, hash_key(token), key_id, hours)
    return token


async def resolve_session(pool: Pool, token: str) -> Principal | None:
    """The principal of a live session (not expired, key not revoked), or None."""
    row = await pool.fetchrow(RESOLVE_SQL, hash_key(token))
    return None if row is None else principal_of(row)


async def close_session(pool: Pool, token: str) -> bool:
    """Delete a session; False when there was none."""
    return await pool.execute(CLOSE_SQL, hash_key(token)) == "DELETE 1"
