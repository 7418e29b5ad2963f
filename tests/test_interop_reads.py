"""The read side on what the real graphile-worker 0.18.0 does: the locks it takes while a task
runs, the failures it writes back, the locks a killed worker leaves behind, and aged cleanup of
the failures it wrote."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from psycopg import sql

from graphile_worker_utils import CleanupTask, Job, JobSpec, JobState, LockedWorker
from tests._worker import Interop, wait_until


def read(interop: Interop, job_id: int) -> Job:
    job = interop.utils.get_job(job_id)
    assert job is not None, f"job {job_id}: expected it to exist"
    return job


def wait_job(interop: Interop, job_id: int, done: Callable[[Job], bool], what: str) -> Job:
    def check() -> Job | None:
        job = read(interop, job_id)
        return job if done(job) else None

    return wait_until(check, 10, f"job {job_id}: expected {what}")


def test_a_running_task_reads_running_then_its_failures_read_as_graphile_worker_wrote_them(
    interop: Interop,
) -> None:
    utils = interop.utils
    worker = interop.start({"slow": {"block": True}}, concurrency=2)
    last = utils.add_raw_job("slow", {"n": 1}, JobSpec(queue_name="q", max_attempts=1))
    retried = utils.add_raw_job("slow", {"n": 2}, JobSpec(max_attempts=3))
    worker.wait_started(last.id)
    worker.wait_started(retried.id)
    pool_id = worker.pool_id

    for job in (last, retried):
        running = read(interop, job.id)
        assert (running.state, running.locked_by, running.attempts) == (
            JobState.RUNNING,
            pool_id,
            1,
        ), running
    # The last attempt in progress reads running, not permanently failed.
    assert read(interop, last.id).attempts == read(interop, last.id).max_attempts
    both = sorted([last.id, retried.id])
    assert [job.id for job in utils.list_jobs(states=[JobState.RUNNING])] == both
    assert [job.id for job in utils.list_jobs(locked_by=pool_id)] == both
    assert utils.list_jobs(states=["ready", "retrying", "permanently_failed"]) == []
    (locker,) = utils.locked_workers()
    assert (locker.worker_id, locker.job_count, locker.queue_count) == (pool_id, 2, 1)
    assert utils.status().totals.running == 2

    worker.release(last.id, "fail")
    worker.release(retried.id, "fail")
    worker.wait_completed(last.id)
    worker.wait_completed(retried.id)
    worker.stop()  # nothing runs the retry meanwhile

    # graphile-worker keeps a finished job locked until its batch of failures is written.
    failed = wait_job(
        interop, last.id, lambda j: j.state is JobState.PERMANENTLY_FAILED, "permanently failed"
    )
    assert failed.locked_at is None and failed.last_error, failed
    assert [job.id for job in utils.list_jobs(states=["permanently_failed"])] == [last.id]
    again = wait_job(interop, retried.id, lambda j: j.locked_at is None, "unlocked")
    assert again.attempts == 1 and again.last_error and again.run_at > again.updated_at, again
    # Retrying while its back-off lasts (exp(1) s), ready once it has passed.
    row = interop.conn.execute("select now()").fetchone()
    assert row is not None
    expected = JobState.RETRYING if again.run_at > row[0] else JobState.READY
    assert read(interop, retried.id).state in (expected, JobState.READY)
    assert utils.locked_workers() == []


def test_a_killed_workers_locks_are_found_and_go_stale_after_four_hours(
    interop: Interop,
) -> None:
    utils = interop.utils
    crashed = interop.start({"hold": {"block": True}}, name="crashed")
    job = utils.add_raw_job("hold", {}, JobSpec(queue_name="ledger"))
    crashed.wait_started(job.id)
    pool_id = crashed.pool_id
    crashed.kill()  # SIGKILL: its locks stay

    assert read(interop, job.id).state is JobState.RUNNING
    (fresh,) = utils.locked_workers()
    assert (fresh.worker_id, fresh.job_count, fresh.queue_count) == (pool_id, 1, 1)
    assert utils.locked_workers(older_than=dt.timedelta(hours=1)) == []

    schema = sql.Identifier(interop.schema)
    for table in ("_private_jobs", "_private_job_queues"):
        interop.conn.execute(
            sql.SQL(
                "update {}.{} set locked_at = locked_at - interval '5 hours' where locked_by = %s"
            ).format(schema, sql.Identifier(table)),
            [pool_id],
        )
    stale = read(interop, job.id)
    assert (stale.state, stale.locked_by) == (JobState.READY, pool_id)
    assert [j.id for j in utils.list_jobs(states=["ready"], locked_by=pool_id)] == [job.id]
    (old,) = utils.locked_workers(older_than=dt.timedelta(hours=4))
    assert old == LockedWorker(
        worker_id=pool_id, job_count=1, queue_count=1, oldest_locked_at=old.oldest_locked_at
    )
    utils.force_unlock_workers([old.worker_id])
    assert utils.locked_workers() == []
    assert read(interop, job.id).state is JobState.READY


def test_aged_cleanup_keeps_a_job_added_long_ago_that_graphile_worker_failed_just_now(
    interop: Interop,
) -> None:
    # graphile-worker's failure leaves updated_at as the enqueue set it: an old job that fails
    # now must still count as a recent failure.
    utils = interop.utils
    worker = interop.start({"slow": {"block": True}})
    with interop.conn.transaction():  # the worker sees the job only once it is 30 days old
        job = utils.using(interop.conn).add_raw_job("slow", {}, JobSpec(max_attempts=1))
        interop.conn.execute(
            sql.SQL(
                "update {}._private_jobs set created_at = now() - interval '30 days',"
                " updated_at = now() - interval '30 days', run_at = now() - interval '30 days'"
                " where id = %s"
            ).format(sql.Identifier(interop.schema)),
            [job.id],
        )
    worker.wait_started(job.id)
    worker.release(job.id, "fail")
    worker.wait_completed(job.id)
    failed = wait_job(
        interop, job.id, lambda j: j.state is JobState.PERMANENTLY_FAILED, "permanently failed"
    )
    worker.stop()
    assert failed.updated_at < failed.created_at + dt.timedelta(days=1), failed

    task = CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS
    assert utils.cleanup([task], older_than=dt.timedelta(days=7)) == {task: 0}
    assert read(interop, job.id).last_error
    assert utils.cleanup([task]) == {task: 1}
