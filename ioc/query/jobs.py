"""Long queries as jobs, and the background runner of the API process.

``POST /query/jobs`` checks the document at once (400/404 right away), stores it in
``ioc.query_jobs`` and returns 202. A :class:`JobRunner` — one asyncio task per API process,
started by the app's lifespan — claims queued jobs (``FOR UPDATE SKIP LOCKED``, so several
worker processes share the queue), runs each with the job limits (``IOC_QUERY_TIMEOUT_JOB_S``,
``IOC_QUERY_ROWS_JOB``) as its owner, writes the answer to ``IOC_QUERY_JOB_DIR`` and records
status, phase and progress. A job belongs to the API key that submitted it: any other caller
gets 404, as for a job that does not exist.

The same runner does the housekeeping of the query service: saved queries whose ``every`` is
due are refreshed, unit-membership caches are built and kept fresh, expired job results are
deleted. Jobs left 'running' by a process that died go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.db.connection import Pool
from ioc.errors import Conflict, FeatureNotFound, IocError, NotAuthenticated
from ioc.query import units
from ioc.query.model import QueryDoc, QuerySettings, parse_query
from ioc.query.runner import EXTENSIONS, MEDIA_TYPES, plan_query, want_membership, write_query

log = logging.getLogger("ioc.jobs")

HEARTBEAT_STALE_S = 90  # a running job whose process has not been heard of for this long


class JobNotFound(FeatureNotFound):
    """No such job, or not the caller's (the same answer)."""


def owner_of(principal: Principal) -> int:
    """The API key that owns a caller's jobs; anonymous callers have none (401)."""
    if principal.key_id is None:
        raise NotAuthenticated("Query jobs need an API key: send 'Authorization: Bearer KEY'.")
    return principal.key_id


def _uuid(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except (ValueError, TypeError, AttributeError):
        raise JobNotFound(f"There is no job '{job_id}'.", parameter="jobId") from None


def _iso(value: datetime | None) -> str | None:
    return (
        value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if value
        else None
    )


def job_doc(row: Any) -> dict[str, Any]:
    """A job as the API shows it (the owner's view)."""
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "phase": row["phase"],
        "progress": round(float(row["progress"]), 3),
        "format": row["format"],
        "rows_expected": row["rows_expected"],
        "rows_written": row["rows_written"],
        "truncated": row["truncated"],
        "bytes": row["bytes"],
        "error": row["error"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "expires_at": _iso(row["expires_at"]),
        "query": row["query"],
    }


INSERT_SQL = """
INSERT INTO ioc.query_jobs (owner_key_id, owner, owner_role, owner_department, query, format)
VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING *
"""


async def submit(
    pool: Pool, catalog: Catalog, principal: Principal, doc: QueryDoc, settings: QuerySettings
) -> dict[str, Any]:
    """Queue a query for its caller; it is checked now, so a bad one never becomes a job."""
    owner = owner_of(principal)
    plan_query(doc, catalog, principal, settings, job=True)
    active = await pool.fetchval(
        "SELECT count(*) FROM ioc.query_jobs WHERE owner_key_id = $1"
        " AND status IN ('queued', 'running')",
        owner,
    )
    if active >= settings.jobs_per_owner:
        raise Conflict(
            f"You already have {active} queued or running jobs (at most "
            f"{settings.jobs_per_owner}); wait for one to finish or cancel one."
        )
    document = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    row = await pool.fetchrow(
        INSERT_SQL,
        owner,
        principal.label,
        principal.role,
        principal.department,
        document,
        doc.format,
    )
    return job_doc(row)


async def get_job(pool: Pool, principal: Principal, job_id: str) -> dict[str, Any]:
    """A job of the caller's (404 for anyone else's)."""
    row = await pool.fetchrow(
        "SELECT * FROM ioc.query_jobs WHERE id = $1 AND owner_key_id = $2",
        _uuid(job_id),
        owner_of(principal),
    )
    if row is None:
        raise JobNotFound(f"There is no job '{job_id}'.", parameter="jobId")
    return job_doc(row)


async def list_jobs(pool: Pool, principal: Principal, limit: int = 50) -> list[dict[str, Any]]:
    """The caller's jobs, newest first."""
    rows = await pool.fetch(
        "SELECT * FROM ioc.query_jobs WHERE owner_key_id = $1 ORDER BY created_at DESC LIMIT $2",
        owner_of(principal),
        limit,
    )
    return [job_doc(row) for row in rows]


async def result_file(pool: Pool, principal: Principal, job_id: str) -> tuple[Path, str, str]:
    """(path, media type, file name) of a finished job's answer; 409 while it is not ready."""
    job = await get_job(pool, principal, job_id)
    if job["status"] != "succeeded":
        raise Conflict(
            f"Job '{job_id}' is {job['status']}: its result is not available.", parameter="jobId"
        )
    path = await pool.fetchval(
        "SELECT result_path FROM ioc.query_jobs WHERE id = $1", _uuid(job_id)
    )
    if not path or not Path(path).exists():
        raise JobNotFound(f"The result of job '{job_id}' has expired.", parameter="jobId")
    source = job["query"].get("source", "query")
    return (
        Path(path),
        MEDIA_TYPES[job["format"]],
        f"{source}-{job_id[:8]}.{EXTENSIONS[job['format']]}",
    )


async def cancel(
    pool: Pool, principal: Principal, job_id: str, keep_hours: float
) -> dict[str, Any]:
    """Cancel a queued or running job (a running one stops at its next heartbeat)."""
    await get_job(pool, principal, job_id)
    row = await pool.fetchrow(
        "UPDATE ioc.query_jobs SET status = 'cancelled', phase = 'done', finished_at = now(),"
        " expires_at = now() + make_interval(secs => $2) WHERE id = $1"
        " AND status IN ('queued', 'running') RETURNING *",
        _uuid(job_id),
        keep_hours * 3600,
    )
    if row is None:
        return await get_job(pool, principal, job_id)
    return job_doc(row)


# --- the runner -------------------------------------------------------------------------------

CLAIM_SQL = """
UPDATE ioc.query_jobs SET status = 'running', phase = 'planning', started_at = now(),
       heartbeat_at = now(), worker = $1
WHERE id = (SELECT id FROM ioc.query_jobs WHERE status = 'queued' ORDER BY created_at
            FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING *
"""


class JobRunner:
    """Runs query jobs and the query service's housekeeping in an API process."""

    def __init__(
        self,
        pool,
        settings: QuerySettings,
        *,
        get_catalog: Callable[[], Catalog],
        housekeeping_s: float = 15.0,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.get_catalog = get_catalog
        self.housekeeping_s = housekeeping_s
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: dict[uuid.UUID, asyncio.Task] = {}
        self._chores: asyncio.Task | None = None
        self._last_chores = 0.0

    def start(self) -> None:
        self.settings.job_dir.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._loop(), name="ioc-query-runner")

    async def stop(self) -> None:
        """Stop claiming; interrupted jobs go back to the queue for another process."""
        tasks = [t for t in (self._task, self._chores, *self._running.values()) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._running:
            with contextlib.suppress(Exception):
                await self.pool.execute(
                    "UPDATE ioc.query_jobs SET status = 'queued', phase = 'queued', progress = 0,"
                    " worker = NULL WHERE id = ANY($1) AND status = 'running'",
                    list(self._running),
                )

    def wake(self) -> None:
        """Look for work now (a job was just submitted in this process)."""
        self._wake.set()

    async def _loop(self) -> None:
        try:
            await self._recover()
        except Exception:
            log.exception("query runner could not re-queue interrupted jobs")
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("query runner tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
            self._wake.clear()

    async def _recover(self) -> None:
        await self.pool.execute(
            "UPDATE ioc.query_jobs SET status = 'queued', phase = 'queued', progress = 0,"
            " worker = NULL WHERE status = 'running' AND heartbeat_at < now() - make_interval("
            "secs => $1)",
            float(HEARTBEAT_STALE_S),
        )

    async def _tick(self) -> None:
        for job_id, task in list(self._running.items()):
            if task.done():
                del self._running[job_id]
        if self._running:
            cancelled = await self.pool.fetch(
                "UPDATE ioc.query_jobs SET heartbeat_at = now() WHERE id = ANY($1)"
                " RETURNING id, status",
                list(self._running),
            )
            for row in cancelled:
                if row["status"] == "cancelled":
                    self._running[row["id"]].cancel()
        while len(self._running) < self.settings.job_concurrency:
            row = await self.pool.fetchrow(CLAIM_SQL, self.name)
            if row is None:
                break
            self._running[row["id"]] = asyncio.create_task(self._run(row))
        if (
            self._chores is None or self._chores.done()
        ) and time.monotonic() - self._last_chores >= self.housekeeping_s:
            self._last_chores = time.monotonic()
            self._chores = asyncio.create_task(self.housekeeping())

    async def _progress(
        self, job_id: uuid.UUID, phase: str, rows: int, expected: int | None
    ) -> None:
        if phase == "querying":
            share = 0.1
        else:  # writing: rows against the planner's estimate (unknown: halfway)
            share = 0.1 + 0.85 * min(1.0, rows / expected) if expected else 0.5
        await self.pool.execute(
            "UPDATE ioc.query_jobs SET phase = $2, rows_written = $3, rows_expected = $4,"
            " progress = $5, heartbeat_at = now() WHERE id = $1 AND status = 'running'",
            job_id,
            phase,
            rows,
            expected,
            share,
        )

    async def _run(self, row: Any) -> None:
        job_id = row["id"]
        fmt = row["format"]
        final = self.settings.job_dir / f"{job_id}.{EXTENSIONS[fmt]}"
        partial = final.with_suffix(final.suffix + ".part")
        keep = self.settings.job_keep_hours * 3600
        last = [0.0]

        async def progress(phase: str, rows: int, expected: int | None) -> None:
            if phase == "writing" and time.monotonic() - last[0] < 1.0:
                return
            last[0] = time.monotonic()
            await self._progress(job_id, phase, rows, expected)

        try:
            principal = await self._owner(row)
            doc = parse_query(row["query"])
            plan, timeout_ms = plan_query(
                doc, self.get_catalog(), principal, self.settings, job=True
            )
            await want_membership(self.pool, plan, self.settings)
            outcome = await write_query(
                self.pool, plan, self.settings, timeout_ms, fmt, partial, progress
            )
            partial.replace(final)
            await self.pool.execute(
                "UPDATE ioc.query_jobs SET status = 'succeeded', phase = 'done', progress = 1,"
                " rows_written = $2, truncated = $3, bytes = $4, result_path = $5,"
                " finished_at = now(), expires_at = now() + make_interval(secs => $6)"
                " WHERE id = $1 AND status = 'running'",
                job_id,
                outcome.returned,
                outcome.truncated,
                final.stat().st_size,
                str(final),
                keep,
            )
        except asyncio.CancelledError:
            partial.unlink(missing_ok=True)
            raise
        except Exception as exc:
            partial.unlink(missing_ok=True)
            message = (
                exc.message
                if isinstance(exc, IocError)
                else "An unexpected error occurred; it has been logged."
            )
            if not isinstance(exc, IocError):
                log.exception("query job failed", extra={"job": str(job_id)})
            await self.pool.execute(
                "UPDATE ioc.query_jobs SET status = 'failed', phase = 'done', error = $2,"
                " finished_at = now(), expires_at = now() + make_interval(secs => $3)"
                " WHERE id = $1 AND status = 'running'",
                job_id,
                message,
                keep,
            )

    async def _owner(self, row: Any) -> Principal:
        """The job's owner, as long as the key is still active."""
        active = await self.pool.fetchval(
            "SELECT revoked_at IS NULL FROM ioc.api_keys WHERE id = $1", row["owner_key_id"]
        )
        if not active:
            raise NotAuthenticated("The API key that submitted this job has been revoked.")
        return Principal(
            role=row["owner_role"], department=row["owner_department"], key_id=row["owner_key_id"]
        )

    async def housekeeping(self) -> None:
        """Due saved queries, unit-membership caches, expired results."""
        from ioc.query import saved_refresh

        try:
            # Refreshed layers have new versions: the app's catalog watcher reloads them.
            await saved_refresh.refresh_due(self.pool, self.get_catalog(), self.settings)
            await units.maintain(
                self.pool,
                self.get_catalog(),
                max_age_s=self.settings.membership_max_age_s,
                timeout_ms=int(self.settings.membership_timeout_s * 1000),
            )
            await self.prune()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("query housekeeping failed")

    async def prune(self) -> int:
        """Delete expired jobs and their files."""
        rows = await self.pool.fetch(
            "DELETE FROM ioc.query_jobs WHERE expires_at < now() RETURNING result_path"
        )
        for row in rows:
            if row["result_path"]:
                Path(row["result_path"]).unlink(missing_ok=True)
        return len(rows)
