"""The key cache against the real key table: only known keys are kept, least recently used
evicted first, so a flood of random keys can never push out an operator's key."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from ioc.catalog import keys
from ioc.db.connection import create_pool


@pytest.fixture(scope="module")
def run(db_settings) -> Iterator:
    """Run a coroutine with a real asyncpg pool (passed as its first argument)."""
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(create_pool(db_settings))
    yield lambda fn, *args: loop.run_until_complete(fn(pool, *args))
    loop.run_until_complete(pool.close())
    loop.close()


def _revoke(db, *secrets_: str) -> None:
    """Revoke keys in the database: from now on only a cache still knows them."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE ioc.api_keys SET revoked_at = now() WHERE key_hash = ANY(%s)",
            ([keys.hash_key(s) for s in secrets_],),
        )
    db.commit()


def test_a_flood_of_random_keys_never_evicts_a_known_one(run, make_key, db):
    cache = keys.KeyCache(ttl=3600)
    known = make_key("operator")

    async def flood(pool) -> list:
        first = await cache.resolve(pool, known)
        unknown = [
            await cache.resolve(pool, keys.KEY_PREFIX + secrets.token_urlsafe(32))
            for _ in range(5000)
        ]
        return [first, *unknown]

    first, *unknown = run(flood)
    assert first is not None and first.role == "operator"
    assert not any(unknown) and len(cache) == 1  # unknown keys were looked up, never kept
    _revoke(db, known)  # the database no longer answers for it: only the cache can
    assert run(cache.resolve, known) == first


def test_least_recently_used_known_key_goes_first(run, make_key, db):
    cache = keys.KeyCache(ttl=3600, size=2)
    a, b, c = (make_key("analyst") for _ in range(3))

    async def use(pool) -> None:
        for key in (a, b, a, c):  # b is the least recently used when c arrives
            assert await cache.resolve(pool, key) is not None

    run(use)
    assert len(cache) == 2
    _revoke(db, a, b, c)
    assert run(cache.resolve, b) is None  # evicted: asked the database, which says revoked
    assert run(cache.resolve, a) is not None and run(cache.resolve, c) is not None


def test_expired_entries_are_looked_up_again(run, make_key, db):
    cache = keys.KeyCache(ttl=0)  # every entry is already stale when read
    key = make_key("operator")
    assert run(cache.resolve, key) is not None
    _revoke(db, key)
    assert run(cache.resolve, key) is None and len(cache) == 0
