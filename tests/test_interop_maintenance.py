"""Maintenance from Python on what the real graphile-worker 0.18.0 holds: force-unlocking a
killed worker, operations that skip a locked job, and GC of task identifiers under a running
worker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from graphile_worker_utils import CleanupTask, Job, JobSpec, RescheduleOptions
from tests._worker import Interop, ran_job_ids

UTC = dt.timezone.utc


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def queue_row(interop: Interop, name: str) -> dict[str, Any]:
    rows = [r for r in interop.table("_private_job_queues") if r["queue_name"] == name]
    assert len(rows) == 1, f"expected one queue {name!r}, got {rows}"
    return rows[0]


def task_rows(interop: Interop) -> dict[str, int]:
    return {r["identifier"]: r["id"] for r in interop.table("_private_tasks")}


# -- a killed worker --------------------------------------------------------------------------


def test_force_unlock_workers_frees_the_jobs_and_queue_of_a_killed_worker(
    interop: Interop,
) -> None:
    crashed = interop.start({"hold": {"block": True}}, name="crashed")
    job = interop.utils.add_raw_job("hold", {"n": 1}, JobSpec(queue_name="ledger"))
    behind = interop.utils.add_raw_job("hold", {"n": 2}, JobSpec(queue_name="ledger"))
    crashed.wait_started(job.id)
    pool_id = crashed.pool_id

    crashed.kill()  # SIGKILL mid-job: nothing is released

    row = interop.job_row(job.id)
    assert row is not None and row["locked_by"] == pool_id, (
        f"job {job.id}: expected it still locked by the killed worker {pool_id}, got {row}"
    )
    assert queue_row(interop, "ledger")["locked_by"] == pool_id, (
        f"queue 'ledger': expected it still locked by the killed worker {pool_id}"
    )
    survivor = interop.start({"hold": {}}, name="survivor")
    survivor.wait_polls(3, after=0)
    assert not survivor.events("start"), (
        f"expected jobs {job.id} and {behind.id} held by the killed worker's locks,"
        f" but the survivor ran {ran_job_ids(survivor)}"
    )

    interop.utils.force_unlock_workers([pool_id])

    survivor.wait_completed(job.id)
    survivor.wait_completed(behind.id)
    interop.wait_deleted(job.id)
    interop.wait_deleted(behind.id)
    assert ran_job_ids(survivor) == [job.id, behind.id], (
        f"expected the survivor to run job {job.id} then {behind.id} of queue 'ledger',"
        f" ran {ran_job_ids(survivor)}"
    )
    rerun = survivor.events("start", job.id)[0]
    assert rerun["attempts"] == 2, (
        f"job {job.id}: expected the rerun to count as attempt 2 (the killed run was 1),"
        f" got {rerun['attempts']}"
    )
    queue = queue_row(interop, "ledger")
    assert (queue["locked_by"], queue["locked_at"]) == (None, None), (
        f"queue 'ledger': expected it unlocked after the jobs ran, got {queue}"
    )


# -- operations skip the job a worker has locked ----------------------------------------------

Operation = Callable[[Interop, list[int]], list[Job]]
OPERATIONS: dict[str, tuple[Operation, Callable[[dict[str, Any]], bool]]] = {
    # operation, and what it did to the unlocked job (its row afterwards; None when deleted)
    "complete_jobs": (
        lambda i, ids: i.utils.complete_jobs(ids),
        lambda row: row is None,
    ),
    "permanently_fail_jobs": (
        lambda i, ids: i.utils.permanently_fail_jobs(ids, "stop it"),
        lambda row: row["attempts"] == row["max_attempts"] and row["last_error"] == "stop it",
    ),
    "reschedule_jobs": (
        lambda i, ids: i.utils.reschedule_jobs(ids, RescheduleOptions(priority=9, attempts=3)),
        lambda row: (row["priority"], row["attempts"]) == (9, 3),
    ),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_maintenance_skips_the_job_the_worker_has_locked(interop: Interop, operation: str) -> None:
    run, changed = OPERATIONS[operation]
    worker = interop.start({"hold": {"block": True}})
    running = interop.utils.add_raw_job("hold", {"n": "running"}, JobSpec(max_attempts=5))
    waiting = interop.utils.add_raw_job(
        "hold", {"n": "waiting"}, JobSpec(run_at=utcnow() + dt.timedelta(hours=1))
    )
    worker.wait_started(running.id)
    before = interop.job_row(running.id)

    result = run(interop, [running.id, waiting.id])

    assert [job.id for job in result] == [waiting.id], (
        f"{operation}([{running.id}, {waiting.id}]): expected only the unlocked job"
        f" {waiting.id} back, job {running.id} is locked by the worker; got"
        f" {[job.id for job in result]}"
    )
    assert interop.job_row(running.id) == before, (
        f"job {running.id}: expected {operation} to leave the locked job as it was"
        f" ({before}), got {interop.job_row(running.id)}"
    )
    assert changed(interop.job_row(waiting.id)), (  # type: ignore[arg-type]
        f"job {waiting.id}: expected {operation} to change the unlocked job,"
        f" got {interop.job_row(waiting.id)}"
    )
    worker.release(running.id)
    worker.wait_completed(running.id)
    interop.wait_deleted(running.id)  # the worker finished it normally
    assert len(worker.events("start", running.id)) == 1, f"job {running.id}: expected one run"


# -- GC of task identifiers under a running worker --------------------------------------------


def test_gc_task_identifiers_spares_the_keep_list_so_a_running_worker_still_runs_it(
    interop: Interop,
) -> None:
    worker = interop.start({"kept": {}})
    first = interop.utils.add_raw_job("kept", {"n": 1})
    worker.wait_completed(first.id)
    interop.wait_deleted(first.id)
    unused = interop.utils.add_raw_job("unused", {}, JobSpec(run_at=utcnow() + dt.timedelta(1)))
    interop.utils.complete_jobs([unused.id])
    tasks_before = task_rows(interop)

    removed = interop.utils.cleanup(
        [CleanupTask.GC_TASK_IDENTIFIERS], task_identifiers_to_keep=["kept"]
    )

    assert removed == {CleanupTask.GC_TASK_IDENTIFIERS: len(tasks_before) - 1}, (
        f"tasks {tasks_before}: expected GC to remove every unused identifier but 'kept',"
        f" got {removed}"
    )
    assert task_rows(interop) == {"kept": tasks_before["kept"]}, (
        f"expected only 'kept' left, with its id {tasks_before['kept']}; got {task_rows(interop)}"
    )
    second = interop.utils.add_raw_job("kept", {"n": 2})
    worker.wait_completed(second.id)
    interop.wait_deleted(second.id)


def test_gc_task_identifiers_hides_new_jobs_of_a_collected_identifier_until_restart(
    interop: Interop,
) -> None:
    worker = interop.start({"served": {}}, name="before-gc")
    first = interop.utils.add_raw_job("served", {"n": 1})
    worker.wait_completed(first.id)
    interop.wait_deleted(first.id)
    old_id = task_rows(interop)["served"]

    removed = interop.utils.cleanup([CleanupTask.GC_TASK_IDENTIFIERS])

    assert removed[CleanupTask.GC_TASK_IDENTIFIERS] >= 1 and "served" not in task_rows(interop), (
        f"expected GC without a keep-list to delete the unused identifier 'served', got"
        f" {removed}, tasks left {task_rows(interop)}"
    )
    mark = worker.mark()
    second = interop.utils.add_raw_job("served", {"n": 2})
    assert second.task_id != old_id, (
        f"job {second.id}: expected a new task id for 'served' (the old {old_id} was GC'd)"
    )
    worker.wait_polls(4, after=mark)  # notified and polling, the worker does not see it
    assert not worker.events("start", second.id), (
        f"job {second.id}: a running worker ran a job of an identifier GC'd under it;"
        " documented: such jobs are invisible to it until it restarts"
    )
    row = interop.job_row(second.id)
    assert row is not None and (row["attempts"], row["locked_at"]) == (0, None), (
        f"job {second.id}: expected it waiting, untouched, got {row}"
    )

    worker.stop()
    restarted = interop.start({"served": {}}, name="after-restart")

    restarted.wait_completed(second.id)
    interop.wait_deleted(second.id)
