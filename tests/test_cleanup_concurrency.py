"""cleanup() against enqueues running at the same moment (hardening issue, item 4).

graphile-worker's add_job(s) reuses an existing task or queue row without locking it. A
collection that deleted such a row while the enqueuing transaction was open left the job
pointing at nothing: workers never ran it, and the ``jobs`` view hid it. Each test drives real
sessions: an enqueuer that stays open, cleanup on another connection, and a monitor that reads
pg_locks to know who waits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import psycopg
import pytest
from psycopg import IsolationLevel, pq, sql
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    CleanupBusyError,
    CleanupTask,
    ConnectionStateError,
    InvalidJobSpec,
    JobSpec,
    WorkerUtils,
)
from graphile_worker_utils._cleanup import busy_timeout_seconds, retry_while_busy
from tests._helpers import table
from tests._worker import wait_until

Connection = psycopg.Connection[Any]
GC_QUEUES = [CleanupTask.GC_JOB_QUEUES]
GC_TASKS = [CleanupTask.GC_TASK_IDENTIFIERS]
# Each garbage collection, with a spec whose job uses the row it would delete.
EACH_COLLECTION = pytest.mark.parametrize(
    ("tasks", "spec"),
    [
        pytest.param(GC_QUEUES, JobSpec(queue_name="q"), id="GC_JOB_QUEUES"),
        pytest.param(GC_TASKS, JobSpec(), id="GC_TASK_IDENTIFIERS"),
    ],
)
TABLES = ("_private_tasks", "_private_job_queues")  # what the collections lock
# Long enough never to run out while a test holds an enqueuer open; the tests end it sooner.
PATIENT = 120.0
WAIT = 60.0  # seconds a test waits for a session before failing (never reached when correct)


# --------------------------------------------------------------------------------------------
# Helpers


def unused_task_and_queue(utils: WorkerUtils, identifier: str, queue_name: str) -> None:
    """A task row and a queue row that exist with no job using them."""
    job = utils.add_raw_job(identifier, {}, JobSpec(queue_name=queue_name))
    utils.complete_jobs([job.id])


def runnable(conn: Connection, schema: str, job_id: int) -> tuple[str, str | None] | None:
    """(task identifier, queue name) of the job as workers find it: its task row and, when it
    has one, its queue row exist (a worker's get_job needs both); None otherwise."""
    row = conn.execute(
        sql.SQL(
            "select task.identifier, queue.queue_name, job.job_queue_id from {} as job"
            " join {} as task on task.id = job.task_id"
            " left join {} as queue on queue.id = job.job_queue_id where job.id = %s"
        ).format(
            table(schema, "_private_jobs"),
            table(schema, "_private_tasks"),
            table(schema, "_private_job_queues"),
        ),
        [job_id],
    ).fetchone()
    if row is None or (row[2] is not None and row[1] is None):
        return None
    return row[0], row[1]


def in_jobs_view(conn: Connection, schema: str, job_id: int) -> tuple[str, str | None] | None:
    row = conn.execute(
        sql.SQL("select task_identifier, queue_name from {} where id = %s").format(
            table(schema, "jobs")
        ),
        [job_id],
    ).fetchone()
    return None if row is None else (row[0], row[1])


def lock_waiters(monitor: Connection, schema: str, *names: str) -> int:
    """How many sessions wait for a lock on these tables of ``schema`` (no backend pids:
    PgBouncer makes them up)."""
    row = monitor.execute(
        "select count(*) from pg_locks where not granted and relation = any(%s::regclass[])",
        [[f"{sql.Identifier(schema).as_string(monitor)}.{name}" for name in names]],
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass
class Background:
    """A call run in a thread; ``done`` is set when it returns or raises."""

    call: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as error:  # handed to the test thread by outcome()
            self.error = error
        finally:
            self.done.set()

    def outcome(self) -> Any:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), f"{self.call} still runs after {WAIT} s"
        if self.error is not None:
            raise self.error
        return self.result


@contextlib.contextmanager
def retries_seen() -> Iterator[threading.Event]:
    """An event set when cleanup logs that it waits to retry."""
    seen = threading.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage():
                seen.set()

    logger = logging.getLogger("graphile_worker_utils")
    handler, previous = Handler(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@pytest.fixture
def enqueuer(pg_dsn: str) -> Iterator[Connection]:
    """A second session whose transaction the test keeps open; rolled back at teardown."""
    with psycopg.connect(pg_dsn) as connection:
        yield connection
        connection.rollback()


@pytest.fixture
def other(pg_dsn: str) -> Iterator[Connection]:
    """A third session, autocommit."""
    with psycopg.connect(pg_dsn, autocommit=True) as connection:
        yield connection


# --------------------------------------------------------------------------------------------
# (1), (4) The job enqueued during cleanup stays runnable


@EACH_COLLECTION
def test_a_job_enqueued_while_cleanup_runs_keeps_its_task_and_queue(
    utils: WorkerUtils,
    pool: ConnectionPool[Any],
    conn: Connection,
    enqueuer: Connection,
    schema: str,
    tasks: list[CleanupTask],
    spec: JobSpec,
) -> None:
    unused_task_and_queue(utils, "t", "q")
    job = WorkerUtils(enqueuer, schema=schema).add_raw_job("t", {"n": 1}, spec)

    with retries_seen() as retrying:
        cleanup = Background(lambda: WorkerUtils(pool, schema=schema).cleanup(tasks))
        wait_until(
            lambda: retrying.is_set() or cleanup.done.is_set(),
            WAIT,
            "cleanup to retry or return",
        )
        enqueuer.commit()  # while cleanup waits to retry (or after it returned, before the fix)
        removed = cleanup.outcome()

    assert runnable(conn, schema, job.id) == ("t", spec.queue_name)
    assert in_jobs_view(conn, schema, job.id) == ("t", spec.queue_name)
    assert removed == {tasks[0]: 0}


@EACH_COLLECTION
def test_cleanup_that_runs_out_of_busy_time_raises_and_deletes_nothing(
    utils: WorkerUtils,
    conn: Connection,
    enqueuer: Connection,
    schema: str,
    tasks: list[CleanupTask],
    spec: JobSpec,
) -> None:
    unused_task_and_queue(utils, "t", "q")
    job = WorkerUtils(enqueuer, schema=schema).add_raw_job("t", {}, spec)

    with pytest.raises(CleanupBusyError, match=rf"{tasks[0].name} not run.*busy_timeout") as busy:
        utils.cleanup(tasks, busy_timeout=0)

    assert busy.value.tasks == (tasks[0],)
    assert busy.value.removed == {}
    assert isinstance(busy.value.__cause__, pg_errors.LockNotAvailable)
    enqueuer.commit()
    assert runnable(conn, schema, job.id) == ("t", spec.queue_name)
    assert utils.cleanup(tasks, busy_timeout=0) == {tasks[0]: 0}


def test_busy_cleanup_reports_the_failed_jobs_it_already_deleted(
    utils: WorkerUtils, conn: Connection, enqueuer: Connection, schema: str
) -> None:
    failed = utils.add_raw_job("dead", {})
    utils.permanently_fail_jobs([failed.id])
    unused_task_and_queue(utils, "t", "q")
    WorkerUtils(enqueuer, schema=schema).add_raw_job("t", {}, JobSpec(queue_name="q"))

    with pytest.raises(CleanupBusyError) as busy:
        utils.cleanup(list(CleanupTask), busy_timeout=0)

    assert busy.value.tasks == (CleanupTask.GC_TASK_IDENTIFIERS, CleanupTask.GC_JOB_QUEUES)
    assert busy.value.removed == {CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1}
    assert in_jobs_view(conn, schema, failed.id) is None


@EACH_COLLECTION
def test_a_row_deleted_between_the_enqueues_two_steps_is_not_lost(
    utils: WorkerUtils,
    conn: Connection,
    enqueuer: Connection,
    other: Connection,
    schema: str,
    tasks: list[CleanupTask],
    spec: JobSpec,
) -> None:
    # add_jobs looks the task and queue up in early statements and inserts the job, joining
    # them by name, in a later one. A collection committed in between left the job without
    # its queue (outside the queue's one-at-a-time order), or dropped the job (the task join
    # found nothing, which the library then reported as a row level security problem).
    unused_task_and_queue(utils, "t", "q")
    other.execute("begin")
    other.execute(sql.SQL("lock table {} in share mode").format(table(schema, "_private_jobs")))
    enqueue = Background(lambda: WorkerUtils(enqueuer, schema=schema).add_raw_job("t", {}, spec))
    try:
        wait_until(lambda: lock_waiters(conn, schema, "_private_jobs"), WAIT, "the enqueue to wait")
        with pytest.raises(CleanupBusyError):
            utils.cleanup(tasks, busy_timeout=0)
    finally:
        other.execute("commit")
    job = enqueue.outcome()
    enqueuer.commit()

    assert (job.task_identifier, job.queue_name) == ("t", spec.queue_name)
    assert runnable(conn, schema, job.id) == ("t", spec.queue_name)


# --------------------------------------------------------------------------------------------
# (2) Enqueuers never wait behind cleanup


def test_an_enqueue_is_not_held_up_while_cleanup_retries(
    utils: WorkerUtils,
    pool: ConnectionPool[Any],
    conn: Connection,
    enqueuer: Connection,
    other: Connection,
    schema: str,
) -> None:
    unused_task_and_queue(utils, "t", "q")
    first = WorkerUtils(enqueuer, schema=schema).add_raw_job("t", {}, JobSpec(queue_name="q"))
    with retries_seen() as retrying:
        cleanup = Background(
            lambda: WorkerUtils(pool, schema=schema).cleanup(
                list(CleanupTask), busy_timeout=PATIENT
            )
        )
        assert retrying.wait(WAIT), "cleanup did not retry while an enqueuer was open"

        second = Background(
            lambda: WorkerUtils(other, schema=schema).add_raw_job(
                "t2", {}, JobSpec(queue_name="q2")
            )
        )
        wait_until(
            lambda: second.done.is_set() or lock_waiters(conn, schema, *TABLES),
            WAIT,
            "the second enqueue to finish or wait",
        )
        assert lock_waiters(conn, schema, *TABLES) == 0
        assert not cleanup.done.is_set()  # still retrying: the first enqueuer is open
        later = second.outcome()
        enqueuer.commit()
        removed = cleanup.outcome()

    assert removed == dict.fromkeys(CleanupTask, 0)
    assert runnable(conn, schema, first.id) == ("t", "q")
    assert runnable(conn, schema, later.id) == ("t2", "q2")


def test_an_enqueue_waits_only_until_the_cleanup_that_holds_the_lock_ends(
    utils: WorkerUtils, conn: Connection, caller_conn: Connection, enqueuer: Connection, schema: str
) -> None:
    # Inside a caller's transaction the lock lasts until the caller ends it. The enqueue that
    # waited then sees the deletion and writes the queue and task again.
    unused_task_and_queue(utils, "t", "q")
    removed = WorkerUtils(caller_conn, schema=schema).cleanup([*GC_TASKS, *GC_QUEUES])
    assert removed == {CleanupTask.GC_TASK_IDENTIFIERS: 1, CleanupTask.GC_JOB_QUEUES: 1}
    enqueue = Background(
        lambda: WorkerUtils(enqueuer, schema=schema).add_raw_job("t", {}, JobSpec(queue_name="q"))
    )
    wait_until(lambda: lock_waiters(conn, schema, *TABLES), WAIT, "the enqueue to wait")

    caller_conn.commit()
    job = enqueue.outcome()
    enqueuer.commit()

    assert runnable(conn, schema, job.id) == ("t", "q")
    assert in_jobs_view(conn, schema, job.id) == ("t", "q")


# --------------------------------------------------------------------------------------------
# (3) Nothing else changes


def test_with_nothing_to_collect_cleanup_takes_no_lock_and_never_waits(
    utils: WorkerUtils, conn: Connection, enqueuer: Connection, schema: str
) -> None:
    utils.add_raw_job("t", {}, JobSpec(queue_name="q"))  # committed: t and q are in use
    WorkerUtils(enqueuer, schema=schema).add_raw_job("t", {}, JobSpec(queue_name="q"))

    assert utils.cleanup([*GC_TASKS, *GC_QUEUES], busy_timeout=0) == {
        CleanupTask.GC_TASK_IDENTIFIERS: 0,
        CleanupTask.GC_JOB_QUEUES: 0,
    }


def test_without_enqueuers_cleanup_deletes_what_it_always_did(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    unused_task_and_queue(utils, "old", "old_q")
    kept = utils.add_raw_job("live", {}, JobSpec(queue_name="live_q"))
    unused_task_and_queue(utils, "kept", "kept_q")

    removed = utils.cleanup([*GC_QUEUES, *GC_TASKS], ["kept"], busy_timeout=0)

    assert removed == {CleanupTask.GC_TASK_IDENTIFIERS: 1, CleanupTask.GC_JOB_QUEUES: 2}
    assert {
        row[0]
        for row in conn.execute(
            sql.SQL("select identifier from {}").format(table(schema, "_private_tasks"))
        )
    } == {"live", "kept"}
    assert runnable(conn, schema, kept.id) == ("live", "live_q")


def test_cleanup_reads_its_counts_whatever_row_factory_the_connection_has(
    pg_dsn: str, utils: WorkerUtils, schema: str
) -> None:
    unused_task_and_queue(utils, "t", "q")
    failed = utils.add_raw_job("dead", {})
    utils.permanently_fail_jobs([failed.id])
    with psycopg.connect(pg_dsn, autocommit=True, row_factory=dict_row) as dict_conn:
        removed = WorkerUtils(dict_conn, schema=schema).cleanup(list(CleanupTask))
        assert dict_conn.row_factory is dict_row

    assert removed == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: 2,
        CleanupTask.GC_JOB_QUEUES: 1,
    }


# --------------------------------------------------------------------------------------------
# (5) The caller's transaction


def test_a_busy_table_does_not_abort_the_callers_transaction(
    utils: WorkerUtils, conn: Connection, caller_conn: Connection, enqueuer: Connection, schema: str
) -> None:
    failed = utils.add_raw_job("dead", {})
    utils.permanently_fail_jobs([failed.id])
    unused_task_and_queue(utils, "t", "q")
    busy = WorkerUtils(enqueuer, schema=schema).add_raw_job("t", {}, JobSpec(queue_name="q"))
    mine = WorkerUtils(caller_conn, schema=schema).add_raw_job("mine", {})

    with pytest.raises(CleanupBusyError) as raised:
        WorkerUtils(caller_conn, schema=schema).cleanup(list(CleanupTask), busy_timeout=0)

    assert raised.value.removed == {}  # the run left nothing in the caller's transaction
    assert caller_conn.info.transaction_status == pq.TransactionStatus.INTRANS
    caller_conn.commit()
    enqueuer.commit()
    assert in_jobs_view(conn, schema, mine.id) == ("mine", None)
    assert in_jobs_view(conn, schema, failed.id) == ("dead", None)
    assert runnable(conn, schema, busy.id) == ("t", "q")


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_collections_refuse_a_callers_transaction_above_read_committed(
    utils: WorkerUtils, conn: Connection, caller_conn: Connection, schema: str, isolation: str
) -> None:
    # An older snapshot does not show jobs enqueued since it was taken: their task and queue
    # would look unused.
    unused_task_and_queue(utils, "t", "q")
    caller_conn.execute(f"set transaction isolation level {isolation}")
    caller_conn.execute("select 1")
    job = utils.add_raw_job("t", {}, JobSpec(queue_name="q"))

    with pytest.raises(ConnectionStateError, match=rf"is {isolation}.*READ COMMITTED"):
        WorkerUtils(caller_conn, schema=schema).cleanup([*GC_TASKS, *GC_QUEUES])

    assert caller_conn.info.transaction_status == pq.TransactionStatus.INTRANS
    caller_conn.commit()
    assert runnable(conn, schema, job.id) == ("t", "q")


def test_a_pool_whose_transactions_are_repeatable_read_still_collects(
    pg_dsn: str, utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    # Where the library owns the transaction, its first statement is the lock: the snapshot
    # the delete reads comes after it, whatever the isolation level.
    unused_task_and_queue(utils, "old", "old_q")
    job = utils.add_raw_job("live", {}, JobSpec(queue_name="live_q"))

    def repeatable_read(connection: Connection) -> None:
        connection.isolation_level = IsolationLevel.REPEATABLE_READ

    with ConnectionPool(pg_dsn, min_size=1, configure=repeatable_read, open=True) as pool:
        removed = WorkerUtils(pool, schema=schema).cleanup([*GC_TASKS, *GC_QUEUES])

    assert removed == {CleanupTask.GC_TASK_IDENTIFIERS: 1, CleanupTask.GC_JOB_QUEUES: 1}
    assert runnable(conn, schema, job.id) == ("live", "live_q")


# --------------------------------------------------------------------------------------------
# Pure logic: the retry loop and the busy_timeout check


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def busy_until(clock: FakeClock, free_at: float) -> Callable[[], str]:
    def attempt() -> str:
        if clock.now < free_at:
            raise pg_errors.LockNotAvailable("busy")
        return "done"

    return attempt


def test_retry_while_busy_doubles_its_waits_up_to_a_cap() -> None:
    clock = FakeClock()
    told: list[float] = []

    result = retry_while_busy(
        busy_until(clock, 1.0), 10.0, told.append, clock=lambda: clock.now, sleep=clock.sleep
    )

    assert result == "done"
    assert clock.slept == told
    assert clock.slept[:4] == [0.005, 0.01, 0.02, 0.04]
    assert max(clock.slept) == 0.25
    assert all(b == min(a * 2, 0.25) for a, b in pairwise(clock.slept))


def test_retry_while_busy_gives_up_at_the_deadline_with_the_last_lock_error() -> None:
    clock = FakeClock()

    with pytest.raises(pg_errors.LockNotAvailable):
        retry_while_busy(
            busy_until(clock, 99.0), 1.0, lambda _: None, clock=lambda: clock.now, sleep=clock.sleep
        )

    assert sum(clock.slept) == pytest.approx(1.0)  # the last wait is cut to the deadline


def test_retry_while_busy_with_no_time_tries_once_and_never_sleeps() -> None:
    clock = FakeClock()

    with pytest.raises(pg_errors.LockNotAvailable):
        retry_while_busy(
            busy_until(clock, 1.0), 0.0, lambda _: None, clock=lambda: clock.now, sleep=clock.sleep
        )
    assert clock.slept == []
    assert retry_while_busy(lambda: 7, 0.0, lambda _: None, sleep=clock.sleep) == 7


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "busy_timeout: expected a number of seconds, got str"),
        (True, "busy_timeout: expected a number of seconds, got bool"),
        (-1, "busy_timeout: must be a finite number of seconds >= 0, got -1"),
        (float("inf"), "busy_timeout: must be a finite number of seconds >= 0, got inf"),
        (float("nan"), "busy_timeout: must be a finite number of seconds >= 0, got nan"),
    ],
)
def test_busy_timeout_is_checked(value: object, message: str) -> None:
    with pytest.raises(InvalidJobSpec, match=f"^{message}$"):
        busy_timeout_seconds(value)


def test_busy_timeout_accepts_zero_and_whole_seconds() -> None:
    assert busy_timeout_seconds(0) == 0.0
    assert busy_timeout_seconds(3) == 3.0
