"""Load generators written in C, for the benchmarks where the client's own cost matters.

On these machines the load generator, the server and PostgreSQL share two cores, so every
microsecond a client spends per request is taken from the contenders. A Python client spends
tens of microseconds on each HTTP request and each PostgreSQL query; the C tools spend a few:

- **wrk** (Debian's package; ``make bench`` installs it) drives the HTTP servers: its
  keep-alive connections share one walk through a list of paths, each taking the next path
  when it is free;
- **pgbench** (shipped with PostgreSQL's server package) drives PostgreSQL alone with the same
  statements, prepared: each client walks the whole list, starting at its own offset.

A measured run is a number of **rounds**: in one round every path (or job) is requested once
per client, so both sides do exactly the same work whatever the speed of each tile. A run of a
fixed time would not: tiles cost from a fraction of a millisecond to hundreds, and a pgbench
client walking its own share of the list gets the same CPU as the others, so the shares of
cheap tiles would run more often; a time limit also cuts the last walk through the list at a
point that depends on the speed. Warm-ups, where the mix does not matter, run for a time.

Both report the requests done and the 50th and 99th latency percentiles. They only target the
loopback interface and the project's own database.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import LOOPBACK, libpq_url, percentile_ms
from ioc.db.cluster import find_bindir
from ioc.errors import ClusterError
from ioc.settings import DatabaseSettings

# The longest a run of rounds may take.
MAX_RUN_SECONDS = 1800
# One wrk thread drives every connection: a second would take a core from the servers.
WRK_SCRIPT = r"""
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local i = 0
wrk.headers["Accept-Encoding"] = "gzip"
local authorization = os.getenv("BENCH_AUTHORIZATION") or ""
if authorization ~= "" then wrk.headers["Authorization"] = authorization end
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
-- A run of a fixed number of requests: stop the thread at the last answer, and interrupt
-- wrk's main thread, which otherwise waits out -d before it reports (LuaJIT's FFI).
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
if limit > 0 then
  local ffi = require("ffi")
  ffi.cdef("int kill(int pid, int sig); int getpid(void);")
  local answered = 0
  response = function(status, headers, body)
    answered = answered + 1
    if answered == limit then
      wrk.thread:stop()
      ffi.C.kill(ffi.C.getpid(), 2)
    end
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Run:
    """What one timed run did: requests, seconds, latency percentiles (ms) and errors."""

    name: str
    count: float
    seconds: float
    p50: float
    p99: float
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def combine(name: str, runs: Sequence[Run]) -> Run:
    """Several runs of one contender as one: summed requests and time; the percentiles of the
    runs are averaged weighted by their requests (each run only reports its own)."""
    count = sum(r.count for r in runs)
    weight = count or 1
    return Run(
        name,
        count,
        sum(r.seconds for r in runs),
        sum(r.p50 * r.count for r in runs) / weight,
        sum(r.p99 * r.count for r in runs) / weight,
        sum(r.errors for r in runs),
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "wrk is not installed: run 'make bench' (it installs Debian's wrk) or "
            "'apt-get install wrk'."
        )
    return found


def wrk(
    name: str,
    base: str,
    paths: Sequence[str],
    connections: int,
    *,
    seconds: float | None = None,
    rounds: int | None = None,
    authorization: str = "",
) -> Run:
    """GET the paths in order, round and round, over ``connections`` keep-alive connections
    (gzip accepted; bodies are read, not decoded): for ``seconds``, or for ``rounds`` rounds,
    that is ``rounds × connections`` times every path (then ``seconds``, if given, is the
    most they may take). ``authorization`` is sent as the Authorization header."""
    if not base.startswith(f"http://{LOOPBACK}:"):
        raise ValueError("the load generator only targets the loopback interface")
    if seconds is None and rounds is None:
        raise ValueError("a run lasts either some seconds or some rounds")
    limit = rounds * connections * len(paths) if rounds else 0
    seconds = seconds or MAX_RUN_SECONDS
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as folder:
        script, listing = Path(folder, "paths.lua"), Path(folder, "paths.txt")
        script.write_text(WRK_SCRIPT)
        listing.write_text("\n".join(paths) + "\n")
        done = subprocess.run(
            [
                wrk_binary(),
                "-t1",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                base,
            ],
            env=dict(
                os.environ,
                BENCH_PATHS=str(listing),
                BENCH_LIMIT=str(limit),
                BENCH_AUTHORIZATION=authorization,
            ),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    found = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", done.stdout, re.M)
    if found is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    requests, micros, status_errors, io_errors, p50, p99 = map(int, found.groups())
    if requests < limit:  # requests lost to socket errors are never answered
        raise RuntimeError(
            f"{name}: {requests} of {limit} requests answered in "
            f"{micros / 1e6:.0f} s ({io_errors} socket errors)"
        )
    return Run(name, requests, micros / 1e6, p50 / 1000, p99 / 1000, status_errors + io_errors)


@dataclass(frozen=True)
class Job:
    """One query of the list: a statement and its three integer parameters."""

    statement: str
    z: int
    x: int
    y: int


def pgbench_script(jobs: Sequence[Job], clients: int) -> str:
    r"""A pgbench script in which every client walks the whole list, round and round, client k
    starting at job k × len(jobs) / clients (the clients spread over the list, as HTTP
    connections sharing one walk through it are).

    The tiles may be anywhere (the list is drawn where the data is): a binary tree of ``\if``
    on the job's index sets z, x, y and the statement's number in about log2(jobs)
    meta-commands, then one SQL command per distinct statement runs it, so each connection
    prepares each statement once.
    """
    statements = list(dict.fromkeys(job.statement for job in jobs))
    # k counts the client's transactions (-D k=0 starts it; variables outlive a transaction).
    lines = [rf"\set i (:client_id * {len(jobs)} / {clients} + :k) % {len(jobs)}", r"\set k :k + 1"]
    lines += _job_tree(jobs, statements, 0, len(jobs))
    for n, statement in enumerate(statements):
        keyword = r"\if" if n == 0 else r"\elif"
        lines += [f"{keyword} :s = {n}", _statement(statement) + ";"]
    lines.append(r"\endif")
    return "\n".join(lines) + "\n"


def _job_tree(jobs: Sequence[Job], statements: list[str], start: int, end: int) -> list[str]:
    """Meta-commands setting z, x, y and s for job :i, start <= :i < end."""
    if end - start == 1:
        job = jobs[start]
        s = statements.index(job.statement)
        return [rf"\set z {job.z}", rf"\set x {job.x}", rf"\set y {job.y}", rf"\set s {s}"]
    middle = (start + end) // 2
    return [
        rf"\if :i < {middle}",
        *_job_tree(jobs, statements, start, middle),
        r"\else",
        *_job_tree(jobs, statements, middle, end),
        r"\endif",
    ]


def _statement(sql: str) -> str:
    """The statement with $1 $2 $3 as pgbench variables, on one line."""
    if ";" in sql or re.search(r"(?<!:):[a-z]", sql):
        raise ValueError("statement text pgbench would misread")
    sql = sql.replace("$1", ":z").replace("$2", ":x").replace("$3", ":y")
    return " ".join(sql.split())


def pgbench_binary(settings: DatabaseSettings) -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    try:
        return str(find_bindir(settings) / "pgbench")
    except ClusterError as exc:
        raise SystemExit(
            "pgbench is not installed: it comes with PostgreSQL's server package (postgresql-15)."
        ) from exc


def pgbench(
    name: str,
    settings: DatabaseSettings,
    jobs: Sequence[Job],
    clients: int,
    free_jobs: int = 0,
    *,
    seconds: float | None = None,
    rounds: int | None = None,
    warm_rounds: int = 0,
) -> Run:
    """Run the jobs against PostgreSQL with ``clients`` connections, statements prepared once
    per connection: for ``seconds``, or for ``rounds`` rounds (each client runs the whole list
    ``rounds`` times). ``free_jobs`` requests per walk through the list cost no query (a
    server answers them itself) and are counted as done in no time.

    ``warm_rounds`` more rounds go first in the same connections and are not measured: a
    server's pooled connections have long since loaded their catalog caches and planned
    their prepared statements, and a short run's new connections would be charged for it."""
    if (seconds is None) == (rounds is None):
        raise ValueError("a run lasts either some seconds or some rounds")
    if rounds:
        length = ["-t", str((rounds + warm_rounds) * len(jobs))]
    else:
        length = ["-T", str(max(1, round(seconds or 0)))]
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as folder:
        path = Path(folder, "tiles.sql")
        path.write_text(pgbench_script(jobs, clients))
        # PG* variables of the caller's shell (PGOPTIONS …) would make the floor differ from ioc.
        done = subprocess.run(
            [
                pgbench_binary(settings),
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                "1",
                *length,
                "-f",
                str(path),
                "-D",
                "k=0",
                "-l",
                "--log-prefix",
                str(Path(folder, "log")),
                libpq_url(settings),
            ],
            capture_output=True,
            text=True,
            cwd=folder,
            timeout=(seconds or MAX_RUN_SECONDS) + 120,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed: {done.stderr[-1500:]}")
        # Per-transaction log lines: client, transaction, latency (µs), script, end (s, µs).
        log = [
            [int(field) for field in line.split()[:6]]
            for path in Path(folder).glob("log*")
            for line in path.read_text().splitlines()
        ]
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    if tps is None or not log:
        raise RuntimeError(f"pgbench ran no transaction: {done.stdout[-800:]}")
    if warm_rounds:
        latencies, measured = _measured(log, warm_rounds * len(jobs))
    else:
        latencies = [row[2] / 1e6 for row in log]
        measured = len(latencies) / float(tps.group(1))
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    latencies += [0.0] * round(len(latencies) * free_jobs / len(jobs))
    return Run(
        name,
        len(latencies),
        measured,
        percentile_ms(latencies, 0.5),
        percentile_ms(latencies, 0.99),
        int(failed.group(1)) if failed else 0,
    )


def _measured(log: Sequence[Sequence[int]], warm: int) -> tuple[list[float], float]:
    """The latencies (s) of the transactions that ended after every client had done its
    ``warm`` first ones, and the time from then to the last answer (pgbench's log rows)."""
    # pgbench numbers each client's transactions from 1.
    start = max(sec + usec / 1e6 for _, number, _, _, sec, usec in log if number == warm)
    ended = [(sec + usec / 1e6, latency / 1e6) for _, _, latency, _, sec, usec in log]
    latencies = [latency for end, latency in ended if end > start]
    return latencies, max(max(end for end, _ in ended) - start, 1e-6)
