"""Read benchmark: get_job, get_job_by_key, list_jobs and locked_workers on 1,000,000 jobs, each
next to a bare psycopg SELECT of the same rows.

Usage (from the repository root, after the README's set-up)::

    python benchmarks/reads.py [--rounds 5] [--jobs 1000000] [--dsn postgresql://...]

The database is the test suite's: ``--dsn``, else ``GRAPHILE_WORKER_TEST_DSN``, else a throwaway
embedded PostgreSQL (the ``test`` extra). The jobs are written straight into graphile-worker's
tables of a throwaway schema (one set-based INSERT after migrate(), then VACUUM ANALYZE): 21
tasks (one rare), half of the jobs in 10 queues, a third keyed, and every state (running jobs
locked by 5 workers, a few stale locks). Each case runs ours and the bare SELECT interleaved,
round by round; the table shows the median time per call, the library's overhead, and where the
plan reads graphile-worker's jobs table (the scan node, its index, and the rows it read in one
EXPLAIN ANALYZE), so that a scan of the table shows. Nothing here is a pass/fail assertion:
timings on shared machines are noisy. The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import database  # noqa: E402
from graphile_worker_utils import JobState, WorkerUtils  # noqa: E402
from graphile_worker_utils._reads import list_query  # noqa: E402
from graphile_worker_utils._templates import catalog  # noqa: E402

Row = tuple[str, str, str, str, str]

# One INSERT ... SELECT builds every job. Buckets of i (spread over the ids by a multiplier)
# choose the state: 0.05% running (5 workers), 0.01% stale locks (5 hours old), 10%
# permanently failed, 8% retrying, 25% scheduled, the rest ready.
_NAMES = """
insert into {s}._private_tasks (identifier)
select 'task_' || lpad(n::text, 2, '0') from generate_series(1, 20) as n
union all select 'rare_task';
insert into {s}._private_job_queues (queue_name)
select 'queue_' || n from generate_series(0, 9) as n;
insert into {s}._private_job_queues (queue_name, locked_at, locked_by)
values ('queue_busy', now() - interval '3 minutes', 'pool-1');
"""
_JOBS = """
insert into {s}._private_jobs (
  task_id, job_queue_id, payload, priority, run_at, attempts, max_attempts, last_error,
  created_at, updated_at, key, locked_at, locked_by
)
select
  case when i %% 20000 = 0 then 21 else 1 + i %% 20 end,
  case when i %% 2 = 0 then null else 1 + (i / 2) %% 10 end,
  json_build_object('user_id', i, 'email', 'user' || i || '@example.com',
                    'action', 'send_welcome_email', 'locale', 'en-GB', 'attempt', 1),
  (i %% 3) - 1,
  case
    when b >= 1800 and b < 4300 then now() + (i %% 1000) * interval '1 minute'
    when b >= 1000 and b < 1800 then now() + (1 + i %% 100) * interval '1 hour'
    else now() - (i %% 5000) * interval '1 second'
  end,
  case when b < 6 then 1 when b < 1000 then 25 when b < 1800 then 1 + b %% 5 else 0 end,
  25,
  case when b >= 6 and b < 1800 then 'Error: boom ' || i end,
  now() - interval '10 days',
  now() - (b %% 14) * interval '1 day',
  case when i %% 3 = 0 then 'key-' || i end,
  case when b < 5 then now() - (i %% 60) * interval '1 second'
       when b < 6 then now() - interval '5 hours' end,
  case when b < 5 then 'pool-' || (i %% 5) when b < 6 then 'pool-dead' end
from generate_series(1, %(jobs)s::int) as i,
     lateral (select ((i::bigint * 7919) %% 10000)::int as b) as bucket;
"""

# What a person writes by hand: the same columns and rows as ours, no state, nothing else.
_BARE_COLUMNS = """
select j.id, j.task_id, j.job_queue_id, {payload}, j.priority, j.run_at, j.attempts,
  j.max_attempts, j.last_error, j.created_at, j.updated_at, j.key, j.locked_at, j.locked_by,
  j.revision, j.flags, t.identifier, q.queue_name
from {s}._private_jobs as j
join {s}._private_tasks as t on t.id = j.task_id
left join {s}._private_job_queues as q on q.id = j.job_queue_id
"""
_NOT_RUNNING = "(j.locked_at is null or j.locked_at <= now() - interval '4 hours')"
_BARE_STATES = {
    "ready": f"{_NOT_RUNNING} and j.attempts < j.max_attempts and j.run_at <= now()",
    "scheduled": f"{_NOT_RUNNING} and j.attempts <= 0 and j.run_at > now()",
    "running": "j.locked_at > now() - interval '4 hours'",
    "retrying": f"{_NOT_RUNNING} and j.attempts > 0 and j.attempts < j.max_attempts"
    " and j.run_at > now()",
    "permanently_failed": f"{_NOT_RUNNING} and j.attempts >= j.max_attempts",
}


def timed_calls(action: Callable[[int], Any], calls: int) -> float:
    """Seconds per call of ``action(n)`` over ``calls`` calls."""
    started = time.perf_counter()
    for n in range(calls):
        action(n)
    return (time.perf_counter() - started) / calls


def interleaved(rounds: int, contenders: list[Callable[[], float]]) -> list[float]:
    """The median of each contender over ``rounds``, the order rotating every round."""
    times: list[list[float]] = [[] for _ in contenders]
    for round_ in range(rounds):
        for offset in range(len(contenders)):
            index = (round_ + offset) % len(contenders)
            times[index].append(contenders[index]())
    return [statistics.median(values) for values in times]


def build(conn: psycopg.Connection[Any], schema: str, jobs: int) -> float:
    started = time.perf_counter()
    WorkerUtils(conn, schema=schema).migrate()
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL(_NAMES).format(s=ident))
    conn.execute(sql.SQL(_JOBS).format(s=ident), {"jobs": jobs})
    for table in ("_private_jobs", "_private_tasks", "_private_job_queues"):
        conn.execute(sql.SQL("vacuum analyze {}.{}").format(ident, sql.Identifier(table)))
    return time.perf_counter() - started


def scan_of_jobs(conn: psycopg.Connection[Any], query: bytes, params: dict[str, Any]) -> str:
    """Where one EXPLAIN ANALYZE of ``query`` reads the jobs table: its plan's top node, the
    scan node and index, and the rows it read (returned plus removed by its filter)."""
    with conn.cursor() as cur:
        cur.execute(b"explain (analyze, format json) " + query, params)
        row = cur.fetchone()
    assert row is not None
    document = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    top = document[0]["Plan"]
    found: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "_private_jobs":
            found.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(top)
    scans = []
    for node in found:
        index = f" {node['Index Name']}" if "Index Name" in node else ""
        # Per loop (a parallel scan's workers are its loops): returned plus filtered out.
        per_loop = int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
        read = per_loop * int(node.get("Actual Loops", 1))
        scans.append(f"{node['Node Type']}{index}, {read:,} rows read")
    return f"{top['Node Type']} > " + "; ".join(scans)


def run(dsn: str, rounds: int, jobs: int) -> None:
    schema = f"gwu_bench_reads_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(schema)
    conn = psycopg.connect(dsn, autocommit=True)
    rows: list[Row] = []
    try:
        seconds = build(conn, schema, jobs)
        rows.append(
            (
                f"build {jobs:,} jobs (INSERT ... SELECT, VACUUM ANALYZE)",
                f"{seconds:.1f} s",
                "",
                "",
                "",
            )
        )
        utils = WorkerUtils(conn, schema=schema)
        rows.extend(lookup_rows(conn, utils, ident, rounds, jobs))
        rows.extend(list_rows(conn, utils, schema, rounds, jobs))
        rows.append(available_row(conn, schema, rounds))
        rows.append(locked_workers_row(conn, utils, schema, rounds))
    finally:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(ident))
        conn.close()
    print_table(dsn, rows)


def bare(conn: psycopg.Connection[Any], query: sql.Composable, params: dict[str, Any]) -> int:
    with conn.cursor(binary=True) as cur:
        cur.execute(query, params, prepare=True)
        return len(cur.fetchall())


def lookup_rows(
    conn: psycopg.Connection[Any],
    utils: WorkerUtils,
    ident: sql.Identifier,
    rounds: int,
    jobs: int,
) -> list[Row]:
    ids = random.Random(1).sample(range(1, jobs + 1), 200)
    keys = [f"key-{3 * n}" for n in random.Random(2).sample(range(1, jobs // 3), 200)]
    columns = sql.SQL(_BARE_COLUMNS).format(s=ident, payload=sql.SQL("j.payload::text"))
    by_id = columns + sql.SQL("where j.id = %(id)s")
    by_key = columns + sql.SQL("where j.key = %(key)s")
    assert utils.get_job(ids[0]) is not None and utils.get_job_by_key(keys[0]) is not None
    result = []
    for name, ours, theirs, plan_query, params in (
        (
            "get_job (200 random ids)",
            lambda n: utils.get_job(ids[n]),
            lambda n: bare(conn, by_id, {"id": ids[n]}),
            catalog.render("get_job", utils.schema),
            {"job_id": ids[0]},
        ),
        (
            "get_job_by_key (200 random keys)",
            lambda n: utils.get_job_by_key(keys[n]),
            lambda n: bare(conn, by_key, {"key": keys[n]}),
            catalog.render("get_job_by_key", utils.schema),
            {"job_key": keys[0]},
        ),
    ):
        o, b = interleaved(
            rounds,
            [lambda: timed_calls(ours, len(ids)), lambda: timed_calls(theirs, len(ids))],  # noqa: B023
        )
        result.append(row(name, o, b, scan_of_jobs(conn, plan_query, params)))
    return result


def list_cases(jobs: int) -> list[tuple[str, dict[str, Any], str]]:
    """(name, list_jobs arguments, the bare query's WHERE after ``j.id > after``)."""
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("no filter, first page", {}, "true"),
        ("no filter, deep page (after_id 90%)", {"after_id": jobs * 9 // 10}, "true"),
        ("with payloads (include_payload)", {"include_payload": True}, "true"),
        ("task_07 (5% of jobs)", {"task_identifiers": ["task_07"]}, "t.identifier = 'task_07'"),
        ("rare_task (50 jobs)", {"task_identifiers": ["rare_task"]}, "t.identifier = 'rare_task'"),
        ("queue_3 (5% of jobs)", {"queue_names": ["queue_3"]}, "q.queue_name = 'queue_3'"),
        ("locked_by pool-1 (100 jobs)", {"locked_by": "pool-1"}, "j.locked_by = 'pool-1'"),
    ]
    for state in JobState:
        cases.append((f"state {state.value}", {"states": [state]}, _BARE_STATES[state.value]))
    return cases


def list_rows(
    conn: psycopg.Connection[Any], utils: WorkerUtils, schema: str, rounds: int, jobs: int
) -> list[Row]:
    ident = sql.Identifier(schema)
    result = []
    for name, arguments, where in list_cases(jobs):
        payload = "j.payload::text" if arguments.get("include_payload") else "null::text"
        bare_query = sql.SQL(_BARE_COLUMNS).format(s=ident, payload=sql.SQL(payload)) + sql.SQL(
            "where j.id > %(after)s and " + where + " order by j.id limit 100"
        )
        after = arguments.get("after_id", 0)
        ours_count = len(utils.list_jobs(**arguments))
        bare_count = bare(conn, bare_query, {"after": after})
        assert ours_count == bare_count, (name, ours_count, bare_count)
        calls = 5
        o, b = interleaved(
            rounds,
            [
                lambda: timed_calls(lambda _: utils.list_jobs(**arguments), calls),  # noqa: B023
                lambda: timed_calls(lambda _: bare(conn, bare_query, {"after": after}), calls),  # noqa: B023
            ],
        )
        query = list_query(
            **{
                "task_identifiers": None,
                "queue_names": None,
                "states": None,
                "locked_by": None,
                "after_id": None,
                "limit": 100,
                "include_payload": False,
                **arguments,
            }
        )
        statement = catalog.render("list_jobs", schema, **query.clauses)
        plan = scan_of_jobs(conn, statement, query.params)
        result.append(row(f"list_jobs, {name}: {ours_count} jobs", o, b, plan))
    return result


def available_row(conn: psycopg.Connection[Any], schema: str, rounds: int) -> Row:
    """What the partial index over available jobs (jobs_main_index) would give a "ready"
    page: a bare query only, since it misses the jobs whose lock is stale."""
    where = "j.is_available and j.run_at <= now()"
    query = sql.SQL(_BARE_COLUMNS).format(
        s=sql.Identifier(schema), payload=sql.SQL("null::text")
    ) + sql.SQL("where j.id > 0 and " + where + " order by j.id limit 100")
    (b,) = interleaved(rounds, [lambda: timed_calls(lambda _: bare(conn, query, {}), 5)])
    plan = scan_of_jobs(conn, query.as_string(conn).encode(), {})
    return (
        "bare only: ready as is_available (misses stale locks)",
        "",
        f"bare psycopg {b * 1000:,.2f} ms",
        "",
        plan,
    )


def locked_workers_row(
    conn: psycopg.Connection[Any], utils: WorkerUtils, schema: str, rounds: int
) -> Row:
    statement = catalog.render("locked_workers", schema)
    by_hand = sql.SQL(statement.decode())
    o, b = interleaved(
        rounds,
        [
            lambda: timed_calls(lambda _: utils.locked_workers(), 3),
            lambda: timed_calls(lambda _: bare(conn, by_hand, {"older_than": None}), 3),
        ],
    )
    count = len(utils.locked_workers())
    return row(
        f"locked_workers: {count} workers",
        o,
        b,
        scan_of_jobs(conn, statement, {"older_than": None}),
    )


def row(name: str, ours: float, theirs: float, plan: str) -> Row:
    return (
        name,
        f"{ours * 1000:,.2f} ms",
        f"bare psycopg {theirs * 1000:,.2f} ms",
        f"overhead {100 * (ours / theirs - 1):+.0f}%",
        plan,
    )


def print_table(dsn: str, rows: list[Row]) -> None:
    with psycopg.connect(dsn) as conn:
        server = conn.execute("show server_version").fetchone()
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" PostgreSQL {server[0] if server else '?'}, psycopg {psycopg.__version__}"
    )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row_ in rows:
        cells = (cell.ljust(width) for cell, width in zip(row_, widths, strict=True))
        print(" | ".join(cells).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: the tests' rules)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to build")
    args = parser.parse_args()
    with database(args.dsn) as dsn:
        run(dsn, args.rounds, args.jobs)


if __name__ == "__main__":
    main()
