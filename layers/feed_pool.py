"""Database connections kept open between writes: feed batches (layers.feed) and single-item
writes (layers.items_write).

A fresh connection costs a backend start plus, on its first geometry, the loading of PostGIS
and the layer's CRS into that backend: 30-55 ms, a third of a 500-feature batch and nearly all
of a one-feature PATCH, under the layer's write lock. So connections are kept (a few per
database) and checked before reuse.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from ioc.db.connection import PgConn, connect
from ioc.settings import DatabaseSettings

MAX_IDLE = 4  # per database: writes of one layer are serialised anyway
_idle: dict[str, queue.SimpleQueue[PgConn]] = {}


def _alive(conn: PgConn) -> bool:
    """Whether an idle connection still talks to its server (one gone after a restart or a
    terminated backend reads as closed here, without a round trip)."""
    if conn.closed:
        return False
    try:
        conn.poll()
    except psycopg2.Error:
        conn.close()
        return False
    return True


@contextmanager
def pooled(settings: DatabaseSettings) -> Iterator[PgConn]:
    """A connection to the settings' database, kept for the next batch when it is left idle
    (committed or rolled back) and healthy; the caller ends its transaction."""
    idle = _idle.setdefault(settings.dsn(), queue.SimpleQueue())
    conn: PgConn | None = None
    while conn is None:
        try:
            candidate = idle.get_nowait()
        except queue.Empty:
            conn = connect(settings)
            break
        if _alive(candidate):
            conn = candidate
    try:
        yield conn
    finally:
        idle_now = (
            not conn.closed
            and conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        )
        if idle_now and idle.qsize() < MAX_IDLE:
            idle.put(conn)
        else:
            conn.close()
