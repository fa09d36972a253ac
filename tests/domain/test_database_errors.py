"""What a request answers when the database goes away under it (a failover, a restart): the
real psycopg2 errors of those moments become a 503 the caller may retry, never a 500."""

from __future__ import annotations

import psycopg2
import pytest

from api.errors import domain_error, status_of
from ioc import errors


def _raised(action) -> Exception:
    with pytest.raises(psycopg2.Error) as caught:
        action()
    return caught.value


def test_a_write_on_a_node_being_demoted_is_a_503(db_settings):
    """A demoted primary answers writes read-only until the clients move to the new one."""
    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = on")
            conn.commit()
            error = _raised(lambda: cur.execute("CREATE TEMP TABLE t (i int)"))
    finally:
        conn.close()
    found = domain_error(error)
    assert isinstance(found, errors.DatabaseUnavailable) and status_of(found) == 503


def test_a_backend_ended_by_the_server_is_a_503(db_settings, db):
    """The backend is terminated (what a stopping primary does to its sessions): the next
    statement fails, and so does one on the closed connection."""
    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            (pid,) = cur.fetchone()
        conn.commit()
        with db.cursor() as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        db.commit()
        first = _raised(lambda: conn.cursor().execute("SELECT 1"))
        second = _raised(lambda: conn.cursor().execute("SELECT 1"))
    finally:
        conn.close()
    for error in (first, second):
        found = domain_error(error)
        assert isinstance(found, errors.DatabaseUnavailable), repr(error)
        assert status_of(found) == 503


def test_a_statement_timeout_is_a_timeout_not_a_lost_connection(db_settings):
    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = '50ms'")
            error = _raised(lambda: cur.execute("SELECT pg_sleep(2)"))
    finally:
        conn.close()
    assert isinstance(domain_error(error), errors.QueryTimeout)


def test_a_bug_stays_a_500(db_settings):
    conn = psycopg2.connect(db_settings.dsn())
    try:
        with conn.cursor() as cur:
            error = _raised(lambda: cur.execute("SELECT no_such_column FROM ioc.layers"))
    finally:
        conn.close()
    assert domain_error(error) is None
