"""Single enqueues against bare psycopg, and one large batch's memory against the JSON it sends.

Usage (from the repository root, after the README's set-up)::

    python benchmarks/single.py [--rounds 5] [--count 2000] [--dsn postgresql://...]

The database follows the tests' rules: ``--dsn``, else ``GRAPHILE_WORKER_TEST_DSN``, else a
throwaway embedded PostgreSQL (the ``test`` extra). ``benchmarks/enqueue.py`` calls
:func:`single_rows` and :func:`memory_row` for its table.

- ``add_raw_job`` ``count`` times inside one caller transaction, against bare psycopg running
  the same ``add_job`` statement (``prepare=True``, binary results, one cursor, the payload
  already encoded) on the same connection: once with psycopg's default ``prepare_threshold``
  and once with ``prepare_threshold=None`` (PgBouncer's setting; psycopg then prepares
  nothing, whatever ``prepare=True`` says). The two contenders alternate within each round,
  the first one alternating between rounds; medians of ``rounds``. Wall time includes the
  server's work and the machine's noise; the client's CPU time (``time.process_time``) shows
  the library's own share more steadily.
- One ``add_raw_jobs`` of 200,000 jobs in a fresh process: peak RSS growth during the call
  against the JSON text the call sends (the specs and payloads documents, counted exactly).

Nothing here is a pass/fail assertion: timings on shared machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import database, payload  # noqa: E402
from graphile_worker_utils import WorkerUtils  # noqa: E402
from graphile_worker_utils._templates import catalog  # noqa: E402

Row = tuple[str, str, str, str]
IDENTIFIER = "bench_task"
MEMORY_JOBS = 200_000


Timing = tuple[float, float]  # (wall seconds, client CPU seconds)


def _timed(action: Callable[[], Any]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def _interleaved(
    rounds: int, reset: Callable[[], None], contenders: list[Callable[[], Any]]
) -> list[Timing]:
    """Median (wall, CPU) of each contender over ``rounds``, the order rotating every round."""
    times: list[list[Timing]] = [[] for _ in contenders]
    for round_ in range(rounds):
        for offset in range(len(contenders)):
            index = (round_ + offset) % len(contenders)
            reset()
            times[index].append(_timed(contenders[index]))
    return [
        (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
        for runs in times
    ]


ADD_JOB_PARAMETERS = (
    "identifier",
    "payload",
    "queue_name",
    "run_at",
    "max_attempts",
    "job_key",
    "priority",
    "flags",
    "job_key_mode",
)
THRESHOLDS = (("default prepare_threshold", 5), ("prepare_threshold=None", None))


def _contenders(
    conn: psycopg.Connection[Any], schema: str, payloads: list[dict[str, Any]]
) -> list[Callable[[], None]]:
    """The library and bare psycopg, each enqueueing ``payloads`` in one transaction."""
    utils = WorkerUtils(conn, schema=schema)
    query = catalog.render("add_job", schema)
    params: dict[str, Any] = dict.fromkeys(ADD_JOB_PARAMETERS)
    params["identifier"] = IDENTIFIER
    texts = [json.dumps(p, separators=(",", ":")) for p in payloads]

    def ours() -> None:
        with conn.transaction():
            for p in payloads:
                utils.add_raw_job(IDENTIFIER, p)

    def bare() -> None:
        with conn.transaction(), conn.cursor() as cur:
            for text in texts:
                cur.execute(query, {**params, "payload": text}, prepare=True, binary=True)
                cur.fetchone()

    return [ours, bare]


def single_rows(dsn: str, schema: str, rounds: int, count: int = 2_000) -> list[Row]:
    """``add_raw_job`` x ``count`` in a caller's transaction against bare psycopg (prepared),
    with the default ``prepare_threshold`` and with None; ``schema`` is migrated and its jobs
    are truncated between runs."""
    rows: list[Row] = []
    payloads = [payload(i) for i in range(count)]
    truncate = sql.SQL("truncate {}._private_jobs").format(sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True) as admin:
        for label, threshold in THRESHOLDS:
            with psycopg.connect(dsn, autocommit=True, prepare_threshold=threshold) as conn:
                contenders = _contenders(conn, schema, payloads)
                (o, oc), (b, bc) = _interleaved(rounds, lambda: admin.execute(truncate), contenders)
            per_job = 1e6 / count
            rows.append(
                (
                    f"add_raw_job x{count:,} in a transaction, {label}",
                    f"{o * per_job:,.0f} us/job (client CPU {oc * per_job:,.0f} us)",
                    f"bare psycopg, prepared: {b * per_job:,.0f} us/job"
                    f" (client CPU {bc * per_job:,.0f} us)",
                    f"library overhead {100 * (o / b - 1):+.1f}%"
                    f" (client CPU {(oc - bc) * per_job:+,.0f} us/job)",
                )
            )
        admin.execute(truncate)
    return rows


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, threading
    sys.path.insert(0, sys.argv[3])
    import psycopg
    from graphile_worker_utils import RawJobSpec, WorkerUtils
    from graphile_worker_utils._batch import Enqueue, prepare_batch
    from graphile_worker_utils._payload import dumps
    dsn, schema, count = sys.argv[1], sys.argv[2], int(sys.argv[4])
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    def payload(i):
        return {"user_id": i, "email": f"user{i}@example.com", "action": "send_welcome_email",
                "locale": "en-GB", "attempt": 1}
    specs = [RawJobSpec("bench_task", payload(i)) for i in range(count)]
    estimate = sum(len(dumps(s.payload)) + 40 for s in specs)  # the README's earlier measure
    with psycopg.connect(dsn, autocommit=True) as conn:
        utils = WorkerUtils(conn, schema=schema)
        utils.add_raw_jobs(specs[:10])  # warm up: templates, imports, prepared state
        # The current RSS sampled during the call: ru_maxrss would include the RSS of the
        # benchmark process this one was forked from (Linux keeps it across exec).
        before = peak = rss()
        done = threading.Event()
        def sample():
            global peak
            while not done.wait(0.01):
                peak = max(peak, rss())
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        jobs = utils.add_raw_jobs(specs)
        peak = max(peak, rss())
        done.set()
        sampler.join()
        assert len(jobs) == count
    del jobs
    # What the call sent: its statements' specs and payloads documents (UTF-8, here ASCII),
    # counted afterwards so as not to disturb the measure.
    batch = prepare_batch(specs, Enqueue(hooks=(), json_dumps=None, trace=None, now=None))
    sent = sum(len(s.params["specs"]) + len(s.params["payloads"]) for s in batch.statements)
    print(json.dumps({"growth": peak - before, "sent": sent, "estimate": estimate}))
    """
)


def memory_row(dsn: str, schema: str, jobs: int = MEMORY_JOBS) -> Row:
    """Peak RSS growth of one ``add_raw_jobs`` of ``jobs`` jobs (a fresh process) against the
    JSON it sends; ``schema`` is migrated, and keeps the jobs."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, dsn, schema, str(ROOT), str(jobs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures = json.loads(out)
    growth, sent, estimate = figures["growth"], figures["sent"], figures["estimate"]
    return (
        f"add_raw_jobs, {jobs:,} jobs in one call",
        f"RSS growth {growth / 2**20:,.1f} MiB (peak, sampled)",
        f"JSON sent {sent / 2**20:,.1f} MiB",
        f"{growth / sent:.2f}x the JSON sent ({growth / estimate:.2f}x the earlier estimate"
        f" of {estimate / 2**20:,.1f} MiB)",
    )


def run(dsn: str, rounds: int, count: int) -> list[Row]:
    """Both measures on a schema of their own, dropped afterwards."""
    schema = f"gwu_bench_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(schema)
    with psycopg.connect(dsn, autocommit=True) as admin:
        try:
            WorkerUtils(admin, schema=schema).migrate()
            rows = single_rows(dsn, schema, rounds, count)
            rows.append(memory_row(dsn, schema))
        finally:
            admin.execute(sql.SQL("drop schema if exists {} cascade").format(ident))
    return rows


def print_rows(rows: list[Row]) -> None:
    """The rows as an aligned table."""
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(" | ".join(cells).rstrip())


def main() -> None:
    """Run both measures and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: the tests' rules)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--count", type=int, default=2_000, help="single enqueues per run")
    args = parser.parse_args()
    with database(args.dsn) as dsn:
        print_rows(run(dsn, args.rounds, args.count))


if __name__ == "__main__":
    main()
