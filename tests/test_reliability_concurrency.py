"""Reliability under concurrency (issue 7): many migrators released at the same moment, and
many threads enqueueing through one shared ``WorkerUtils`` over a pool."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from psycopg import sql
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    Continue,
    GraphileWorkerError,
    Job,
    JobKeyMode,
    JobKeyRaceError,
    JobSpec,
    RawJobSpec,
    WorkerUtils,
)
from tests._catalog import diff, snapshot
from tests._helpers import REPO_ROOT, Database
from tests._node import NODE_DIR, GraphileWorker, node_env
from tests._reliability import NODE_GATE_JS, PYTHON_MIGRATOR, Finished, ProcessGroup, StartGate

Conn = psycopg.Connection[Any]
UTC = dt.timezone.utc

# -- many migrators at once ------------------------------------------------------------------

PYTHON_MIGRATORS = 16
NODE_MIGRATORS = 2
GATE_KEY = 70_007
BREAKING = {1, 3, 11, 13, 14, 16, 19}
SCHEMA = "graphile_worker"


@dataclass(frozen=True)
class MigrationRun:
    python: list[tuple[int, bool, tuple[int, ...]]]  # (revision, installed, applied) each
    node: list[Finished]


def wait_for_lock_waiters(conn: Conn, relation: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "select count(*) from pg_locks where relation = to_regclass(%s) and not granted",
            [relation],
        ).fetchone()
        if row is not None and row[0] >= count:
            return
        assert time.monotonic() < deadline, f"{row} sessions wait on {relation}, not {count}"
        time.sleep(0.02)


def race_migrators(
    database: Database, graphile_worker: GraphileWorker, *, pile_up: bool = False
) -> MigrationRun:
    """Start 16 Python migrators (half on a connection, half on a pool of their own) and two
    graphile-worker 0.18.0 ``--schema-only`` processes; release them all at the same moment
    once every one waits at the gate; return what each did. Any failure fails the test.

    ``pile_up`` (a schema that has a migrations table and revisions left to apply): the
    migrations table is also locked against inserts until the two Node migrators and one of
    ours (the others wait on our advisory lock) are all blocked inserting the same next
    revision; then all three are let go at once and all but one collide on it."""
    with contextlib.ExitStack() as stack:
        gate = stack.enter_context(StartGate(database.dsn, GATE_KEY))
        group = stack.enter_context(ProcessGroup())
        holder = stack.enter_context(psycopg.connect(database.dsn))
        if pile_up:
            holder.execute(
                sql.SQL("lock table {}.migrations in exclusive mode").format(sql.Identifier(SCHEMA))
            )
        for index in range(PYTHON_MIGRATORS):
            style = "pool" if index % 2 else "conn"
            group.spawn(
                [
                    sys.executable,
                    "-c",
                    PYTHON_MIGRATOR,
                    database.dsn,
                    str(GATE_KEY),
                    database.dsn,
                    SCHEMA,
                    style,
                ],
                cwd=REPO_ROOT,
            )
        for _ in range(NODE_MIGRATORS):
            group.spawn(
                [
                    graphile_worker.node,
                    "-e",
                    NODE_GATE_JS,
                    str(NODE_DIR),
                    str(graphile_worker.cli("0.18.0")),
                    database.node_dsn,
                    str(GATE_KEY),
                    "-c",
                    database.node_dsn,
                    "-s",
                    SCHEMA,
                    "--schema-only",
                ],
                cwd=NODE_DIR,
                env=node_env(),
            )
        gate.wait_for(PYTHON_MIGRATORS + NODE_MIGRATORS, group, timeout=90)
        gate.open()
        if pile_up:
            with psycopg.connect(database.dsn, autocommit=True) as watcher:
                wait_for_lock_waiters(watcher, f"{SCHEMA}.migrations", 1 + NODE_MIGRATORS)
            holder.rollback()
        results = group.finish(timeout=120)
    failures = [(r.args[-5:], r.returncode, r.stdout, r.stderr) for r in results if r.returncode]
    assert failures == []
    python = []
    for result in results[:PYTHON_MIGRATORS]:
        revision, installed, *applied_text = result.stdout.split()
        applied = applied_text[0] if applied_text else ""
        python.append(
            (int(revision), installed == "1", tuple(int(i) for i in applied.split(",") if i))
        )
    return MigrationRun(python, results[PYTHON_MIGRATORS:])


def migration_rows(conn: Conn) -> list[tuple[int, bool]]:
    query = sql.SQL("select id, breaking from {}.migrations order by id").format(
        sql.Identifier(SCHEMA)
    )
    return [(row[0], row[1]) for row in conn.execute(query)]


def assert_reference_schema(database: Database, reference: dict[str, Any]) -> None:
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        assert migration_rows(conn) == [(i, i in BREAKING) for i in range(1, 21)]
        assert diff(reference, snapshot(conn, SCHEMA), left_name="0.18.0", right_name="ours") == []


def applied_at_most_once(run: MigrationRun) -> collections.Counter[int]:
    counts = collections.Counter(i for _, _, applied in run.python for i in applied)
    assert [i for i, n in counts.items() if n > 1] == [], counts
    return counts


@pytest.mark.slow
def test_sixteen_python_and_two_node_migrators_released_together_build_the_reference_schema(
    fresh_database: Database,
    graphile_worker: GraphileWorker,
    reference_catalog: dict[str, Any],
) -> None:
    run = race_migrators(fresh_database, graphile_worker)
    assert [revision for revision, _, _ in run.python] == [20] * PYTHON_MIGRATORS
    counts = applied_at_most_once(run)
    installers = [applied for _, installed, applied in run.python if installed]
    # Either one of ours installed the revision-20 shape (rows 1..20 in one go) or a Node
    # migrator did (and ours then found nothing to do, or applied what Node had not yet).
    assert len(installers) <= 1
    if installers:
        assert installers[0] == tuple(range(1, 21))
        assert set(counts) == set(range(1, 21))
    assert_reference_schema(fresh_database, reference_catalog)


@pytest.mark.slow
@pytest.mark.parametrize(("version", "revision"), [("0.16.6", 18), ("0.18.0", 20)])
def test_migrators_released_together_on_a_schema_node_created_first_end_at_the_reference(
    fresh_database: Database,
    graphile_worker: GraphileWorker,
    reference_catalog: dict[str, Any],
    version: str,
    revision: int,
) -> None:
    graphile_worker.migrate(version, fresh_database.node_dsn, SCHEMA)
    run = race_migrators(fresh_database, graphile_worker, pile_up=revision < 20)
    assert [r for r, _, _ in run.python] == [20] * PYTHON_MIGRATORS
    assert not any(installed for _, installed, _ in run.python)
    counts = applied_at_most_once(run)
    # Only the revisions above Node's were left to apply, by us or by the Node migrators.
    assert set(counts) <= set(range(revision + 1, 21))
    assert_reference_schema(fresh_database, reference_catalog)


# -- many threads enqueueing through one WorkerUtils -------------------------------------------

THREADS = 8
SINGLE_CALLS_PER_THREAD = 700
BATCH_JOBS_PER_THREAD = 1800
MAX_BATCH = 150
TOTAL_JOBS = THREADS * (SINGLE_CALLS_PER_THREAD + BATCH_JOBS_PER_THREAD)  # 20 000
SHARED_KEYS = [f"key-{i:03d}" for i in range(240)]
HOT_KEYS = SHARED_KEYS[:8]  # one of each thread's batch keys, hammered by every thread
TASKS = ("mail", "sms", "push", "report", "resize", "index")  # created by the race itself
QUEUES = (None, "q-a", "q-b", "q-c")
SINGLE_MODES = (None, JobKeyMode.REPLACE, JobKeyMode.PRESERVE_RUN_AT, JobKeyMode.UNSAFE_DEDUPE)
SINGLE_MODE_WEIGHTS = (20, 35, 25, 20)  # None here: an unkeyed job
BASE_RUN_AT = dt.datetime(2031, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sent:
    """One job as an enqueue call sent it."""

    call: int
    index: int
    thread: int
    key: str | None
    mode: JobKeyMode | None  # REPLACE, PRESERVE_RUN_AT or UNSAFE_DEDUPE for keyed jobs
    identifier: str
    queue_name: str | None
    run_at: dt.datetime
    priority: int


@dataclass
class Record:
    """What one thread sent, what came back, and the spans its calls ran in."""

    sent: list[tuple[Sent, Job]] = field(default_factory=list)
    spans: dict[int, tuple[str, str]] = field(default_factory=dict)  # call -> trace, span
    errors: list[BaseException] = field(default_factory=list)


def thread_plan(rng: random.Random) -> list[int]:
    """Call sizes of one thread: 700 single calls and batches totalling 1800 jobs, shuffled."""
    sizes = [1] * SINGLE_CALLS_PER_THREAD
    left = BATCH_JOBS_PER_THREAD
    while left:
        size = min(left, rng.randint(2, MAX_BATCH))
        sizes.append(-size)  # negative: a batch (add_raw_jobs), even of one job
        left -= size
    rng.shuffle(sizes)
    return sizes


def enqueue(
    utils: WorkerUtils, thread: int, start: threading.Barrier, tracer: Any, record: Record
) -> None:
    rng = random.Random(thread)
    # Concurrent batches take many row locks each, in the order of add_jobs's join: two
    # batches sharing keys could deadlock (PostgreSQL's 40P01, not a library fault). So a
    # thread's batches use only its own share of the keys; its single calls use any key.
    own_keys = [key for i, key in enumerate(SHARED_KEYS) if i % THREADS == thread]
    try:
        start.wait(timeout=60)
        for number, size in enumerate(thread_plan(rng), start=1):
            call = thread * 100_000 + number
            run_at = BASE_RUN_AT + dt.timedelta(seconds=call)
            with tracer.start_as_current_span("enqueue") as span:
                context = span.get_span_context()
                record.spans[call] = (
                    format(context.trace_id, "032x"),
                    format(context.span_id, "016x"),
                )
                if size == 1:
                    mode = rng.choices(SINGLE_MODES, SINGLE_MODE_WEIGHTS)[0]
                    key = None
                    if mode is not None:
                        key = rng.choice(HOT_KEYS if rng.random() < 0.15 else SHARED_KEYS)
                    sent = Sent(
                        call,
                        0,
                        thread,
                        key,
                        mode,
                        rng.choice(TASKS),
                        rng.choice(QUEUES),
                        run_at,
                        rng.randint(-5, 5),
                    )
                    job = utils.add_raw_job(
                        sent.identifier,
                        {"call": call, "index": 0, "thread": thread},
                        JobSpec(
                            queue_name=sent.queue_name,
                            run_at=run_at,
                            priority=sent.priority,
                            job_key=key,
                            job_key_mode=mode,
                        ),
                    )
                    record.sent.append((sent, job))
                    continue
                identifier, queue_name = rng.choice(TASKS), rng.choice(QUEUES)
                keys = iter(rng.sample(own_keys, len(own_keys)))
                batch = []
                for index in range(-size):
                    key = next(keys, None) if rng.random() < 0.5 else None
                    # A keyed spec replaces (mode REPLACE, or None: the default).
                    batch.append(
                        Sent(
                            call,
                            index,
                            thread,
                            key,
                            JobKeyMode.REPLACE if key else None,
                            identifier,
                            queue_name,
                            run_at + dt.timedelta(microseconds=index),
                            rng.randint(-5, 5),
                        )
                    )
                specs = [
                    RawJobSpec(
                        s.identifier,
                        {"call": call, "index": s.index, "thread": thread},
                        JobSpec(
                            queue_name=s.queue_name,
                            run_at=s.run_at,
                            priority=s.priority,
                            job_key=s.key,
                            job_key_mode=rng.choice((None, JobKeyMode.REPLACE)) if s.key else None,
                        ),
                    )
                    for s in batch
                ]
                jobs = utils.add_raw_jobs(specs)
                assert len(jobs) == len(batch), (call, len(jobs), len(batch))
                by_index = {job.payload["index"]: job for job in jobs}
                assert sorted(by_index) == list(range(len(batch))), call
                record.sent.extend((s, by_index[s.index]) for s in batch)
    except BaseException as error:  # reported by the test
        record.errors.append(error)
        start.abort()


@dataclass
class KeyState:
    id: int
    call: int
    index: int
    identifier: str
    queue_name: str | None
    run_at: dt.datetime
    priority: int
    revision: int


def replay(events: list[tuple[Sent, Job]]) -> list[KeyState]:
    """The states one key went through, replaying its calls in the order PostgreSQL applied
    them: each call bumped the row's revision under the row lock, so the revision a call got
    back is its place in that order (0 for the call that inserted the row)."""
    ordered = sorted(events, key=lambda event: event[1].revision)
    assert [job.revision for _, job in ordered] == list(range(len(ordered))), (
        "revisions returned for one key are not 0..n-1: a call was lost or applied twice",
        [(sent.call, sent.mode, job.revision) for sent, job in ordered],
    )
    states: list[KeyState] = []
    for sent, job in ordered:
        new = KeyState(
            job.id,
            sent.call,
            sent.index,
            sent.identifier,
            sent.queue_name,
            sent.run_at,
            sent.priority,
            job.revision,
        )
        if states:
            old = states[-1]
            if sent.mode is JobKeyMode.UNSAFE_DEDUPE:
                # Deduplicated: the existing job stays as it is, only its revision moves.
                new = KeyState(
                    old.id,
                    old.call,
                    old.index,
                    old.identifier,
                    old.queue_name,
                    old.run_at,
                    old.priority,
                    job.revision,
                )
            elif sent.mode is JobKeyMode.PRESERVE_RUN_AT:
                new.run_at = old.run_at  # attempts are 0 here: no worker ran it
        states.append(new)
    return states


def job_state(job: Job) -> KeyState:
    return KeyState(
        job.id,
        job.payload["call"],
        job.payload["index"],
        job.task_identifier,
        job.queue_name,
        job.run_at,
        job.priority,
        job.revision,
    )


def stored_jobs(conn: Conn, schema: str) -> list[dict[str, Any]]:
    query = sql.SQL(
        "select j.id, j.key, j.payload, t.identifier, q.queue_name, j.run_at, j.priority,"
        " j.revision, j.attempts from {s}._private_jobs j"
        " join {s}._private_tasks t on t.id = j.task_id"
        " left join {s}._private_job_queues q on q.id = j.job_queue_id"
    ).format(s=sql.Identifier(schema))
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(query).fetchall()


def counting_hook() -> tuple[Callable[..., Continue], Callable[[], int]]:
    """A hook that marks each payload with the thread that scheduled it, and counts calls."""
    lock = threading.Lock()
    calls = [0]

    def hook(identifier: str, payload: Any, spec: JobSpec) -> Continue:
        with lock:
            calls[0] += 1
        return Continue({**payload, "hooked_by": threading.current_thread().name})

    return hook, lambda: calls[0]


@pytest.mark.slow
def test_eight_threads_sharing_one_pooled_worker_utils_lose_no_job_and_keep_keys_consistent(
    pg_dsn: str, conn: Conn, schema: str
) -> None:
    WorkerUtils(conn, schema=schema).migrate()
    hook, hook_calls = counting_hook()
    tracer = TracerProvider().get_tracer("tests.test_reliability_concurrency")
    records = [Record() for _ in range(THREADS)]
    # Fewer connections than threads: calls also wait for each other's connections. The
    # schema is new, so the threads also race to render and cache its statements.
    with ConnectionPool(pg_dsn, min_size=2, max_size=6, timeout=60, open=True) as pool:
        utils = WorkerUtils(pool, schema=schema, hooks=[hook])
        start = threading.Barrier(THREADS)
        threads = [
            threading.Thread(
                target=enqueue,
                args=(utils, t, start, tracer, records[t]),
                name=f"enqueuer-{t}",
                daemon=True,
            )
            for t in range(THREADS)
        ]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240 - (time.monotonic() - began))
        assert not any(thread.is_alive() for thread in threads), "enqueuers still running"

    errors = [error for record in records for error in record.errors]
    assert not [e for e in errors if isinstance(e, JobKeyRaceError)], "no worker locks rows"
    assert errors == [], [f"{type(e).__name__}: {e}" for e in errors[:5]]
    assert all(not isinstance(e, GraphileWorkerError) for e in errors)
    sent = [pair for record in records for pair in record.sent]
    spans = {call: ids for record in records for call, ids in record.spans.items()}
    assert len(sent) == TOTAL_JOBS
    assert hook_calls() == TOTAL_JOBS  # once per job, no call lost, none run twice

    rows = stored_jobs(conn, schema)
    # Every stored payload carries the hook's mark and the span of the very call that wrote
    # it, made by the thread that made that call (context and hooks do not leak across).
    for row in rows:
        payload = row["payload"]
        assert payload["hooked_by"] == f"enqueuer-{payload['thread']}", row
        trace_id, span_id = spans[payload["call"]]
        assert (payload["_trace"]["trace_id"], payload["_trace"]["span_id"]) == (
            trace_id,
            span_id,
        ), row
        assert payload["call"] // 100_000 == payload["thread"], row

    # Unkeyed jobs: exactly one row per job sent, as sent, and as returned.
    unkeyed_sent = {(s.call, s.index): (s, job) for s, job in sent if s.key is None}
    unkeyed_rows = collections.Counter(
        (row["payload"]["call"], row["payload"]["index"]) for row in rows if row["key"] is None
    )
    assert [k for k, n in unkeyed_rows.items() if n > 1] == []
    assert set(unkeyed_rows) == set(unkeyed_sent)
    for row in rows:
        if row["key"] is None:
            s, job = unkeyed_sent[(row["payload"]["call"], row["payload"]["index"])]
            assert (
                row["id"],
                row["identifier"],
                row["queue_name"],
                row["run_at"],
                row["priority"],
                row["revision"],
            ) == (job.id, s.identifier, s.queue_name, s.run_at, s.priority, 0)
            assert (job.task_identifier, job.queue_name) == (s.identifier, s.queue_name)

    # Keyed jobs: one row per key; replaying each key's calls in the order the database
    # applied them gives every returned job and the final row.
    by_key: dict[str, list[tuple[Sent, Job]]] = collections.defaultdict(list)
    for s, job in sent:
        if s.key is not None:
            assert job.key == s.key
            by_key[s.key].append((s, job))
    keyed_rows = {row["key"]: row for row in rows if row["key"] is not None}
    assert set(keyed_rows) == set(by_key)
    modes = collections.Counter(s.mode for events in by_key.values() for s, _ in events)
    assert min(modes.values()) > 500, modes  # every mode really took part
    contended = 0
    for key, events in by_key.items():
        states = replay(events)
        for (_, job), state in zip(
            sorted(events, key=lambda e: e[1].revision), states, strict=True
        ):
            assert job_state(job) == state, (key, job)
        row = keyed_rows[key]
        final = states[-1]
        assert (
            row["id"],
            row["payload"]["call"],
            row["payload"]["index"],
            row["identifier"],
            row["queue_name"],
            row["run_at"],
            row["priority"],
            row["revision"],
        ) == (
            final.id,
            final.call,
            final.index,
            final.identifier,
            final.queue_name,
            final.run_at,
            final.priority,
            final.revision,
        ), key
        contended += len({s.thread for s, _ in events}) > 1
    assert contended == len(by_key)  # every key was written by several threads
    assert len(rows) == len(unkeyed_sent) + len(by_key)
