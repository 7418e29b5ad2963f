"""Job-key fixtures in the database: a keyed job brought into a state as a worker would, its
replacement spec, and the job-key race (a worker locking the keyed job while an enqueue waits).
Used by test_job_keys.py, and by test_pgbouncer.py to run the race through PgBouncer."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from graphile_worker_utils import Job, JobKeyMode, JobSpec, WorkerUtils
from tests._helpers import table

Connection = psycopg.Connection[Any]

UTC = dt.timezone.utc
T_OLD = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
T_NEW = dt.datetime(2031, 6, 1, 8, 30, tzinfo=UTC)
KEY = "invoice:42"
WAIT_SECONDS = 15.0

# The states an existing keyed job can be in (docs/schema.md §1: a job with attempts = max_attempts
# is permanently failed; a locked one is being run by a worker).
PENDING, RETRYING, LOCKED, PERMANENTLY_FAILED = "pending", "retrying", "locked", "perm_failed"


def job_rows(conn: Connection, schema: str) -> list[dict[str, Any]]:
    """Every job row, with its task identifier and queue name, oldest id first."""
    query = sql.SQL(
        "select job.*, task.identifier as task_identifier, queue.queue_name"
        " from {jobs} as job"
        " join {tasks} as task on task.id = job.task_id"
        " left join {queues} as queue on queue.id = job.job_queue_id"
        " order by job.id"
    ).format(
        jobs=table(schema, "_private_jobs"),
        tasks=table(schema, "_private_tasks"),
        queues=table(schema, "_private_job_queues"),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


def job_row(conn: Connection, schema: str, job_id: int) -> dict[str, Any]:
    (row,) = [row for row in job_rows(conn, schema) if row["id"] == job_id]
    return row


def update_job(conn: Connection, schema: str, job_id: int, assignments: str) -> None:
    # ``assignments`` is test-authored SQL (never data), e.g. "attempts = 2".
    conn.execute(
        sql.SQL("update {} set " + assignments + " where id = %s").format(
            table(schema, "_private_jobs")
        ),
        [job_id],
    )


ORIGINAL_SPEC = JobSpec(
    queue_name="billing", run_at=T_OLD, priority=1, max_attempts=5, job_key=KEY, flags=["old"]
)


def existing_job(utils: WorkerUtils, conn: Connection, schema: str, state: str) -> Job:
    """A keyed job (payload {"v": "old"}) brought into ``state`` with SQL, as a worker would."""
    job = utils.add_raw_job("send_invoice", {"v": "old"}, ORIGINAL_SPEC)
    if state == RETRYING:
        update_job(conn, schema, job.id, "attempts = 2, last_error = 'boom'")
    elif state == LOCKED:
        update_job(conn, schema, job.id, "locked_at = now(), locked_by = 'worker-1', attempts = 1")
    elif state == PERMANENTLY_FAILED:
        update_job(conn, schema, job.id, "attempts = max_attempts, last_error = 'dead'")
    else:
        assert state == PENDING
    return job


def replacement(mode: JobKeyMode | None, run_at: dt.datetime | None = T_NEW) -> JobSpec:
    return JobSpec(
        queue_name="billing",
        run_at=run_at,
        priority=2,
        max_attempts=7,
        job_key=KEY,
        job_key_mode=mode,
        flags=["new"],
    )


@dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None


def wait_until_blocked_by(monitor: Connection, blocker_pid: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        (blocked,) = monitor.execute(
            "select count(*) from pg_stat_activity where %s = any(pg_blocking_pids(pid))",
            [blocker_pid],
        ).fetchone()  # type: ignore[misc]
        if blocked:
            return
        time.sleep(0.01)  # polling, not an assertion
    raise AssertionError(f"no session waited on the row lock within {WAIT_SECONDS} s")


def race_for_key(pg_dsn: str, schema: str, key: str, enqueue_call: Callable[[], Any]) -> Outcome:
    """Run ``enqueue_call`` (in a thread) while a worker locks the job with ``key``.

    A second session holds the keyed row with ``select … for update``; the enqueue, which sees
    the job as available, skips the detach step and blocks in its insert on that row lock.
    The second session then marks the job locked (as a worker does) and commits, so the
    insert's conflict update finds a locked row and schedules nothing.
    """
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.result = enqueue_call()
        except BaseException as error:  # handed to the test thread
            outcome.error = error

    thread = threading.Thread(target=run, name="enqueue-during-key-race", daemon=True)
    locker = psycopg.connect(pg_dsn)
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as monitor:
            held = locker.execute(
                sql.SQL("select id from {} where key = %s for update").format(
                    table(schema, "_private_jobs")
                ),
                [key],
            ).fetchall()
            assert len(held) == 1, "the race needs an existing job with the key"
            thread.start()
            wait_until_blocked_by(monitor, locker.info.backend_pid)
            locker.execute(
                sql.SQL(
                    "update {} set locked_at = now(), locked_by = 'racing-worker' where key = %s"
                ).format(table(schema, "_private_jobs")),
                [key],
            )
            locker.commit()
    finally:
        locker.rollback()  # releases the row if anything above failed, so the thread ends
        locker.close()
        if thread.ident is not None:
            thread.join(WAIT_SECONDS)
    assert not thread.is_alive(), "the enqueue did not finish after the row lock was released"
    return outcome


def assert_rescheduled_after_the_race(conn: Connection, schema: str, old: Job, new: Job) -> None:
    assert isinstance(new.id, int) and new.id != old.id
    assert (new.key, new.revision, new.payload) == (KEY, 0, {"v": "new"})
    rows = {row["id"]: row for row in job_rows(conn, schema)}
    assert set(rows) == {old.id, new.id}
    assert rows[old.id]["key"] is None
    assert rows[old.id]["attempts"] == rows[old.id]["max_attempts"]
    assert rows[old.id]["locked_by"] == "racing-worker"
    assert rows[new.id]["key"] == KEY
