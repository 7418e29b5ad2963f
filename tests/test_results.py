"""What operations return, and what the maintenance operations do (docs/schema.md §2 and §3)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.rows import dict_row

from graphile_worker_utils import (
    CleanupTask,
    Job,
    JobSpec,
    RawJobSpec,
    RescheduleOptions,
    WorkerUtils,
)
from tests._helpers import enqueue, table

Connection = psycopg.Connection[Any]
UTC = dt.timezone.utc
RUN_AT = dt.datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Helpers


def rows(conn: Connection, schema: str, name: str = "_private_jobs") -> dict[int, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute(sql.SQL("select * from {}").format(table(schema, name))).fetchall()
    return {row["id"]: row for row in found}


def names(conn: Connection, schema: str, name: str) -> set[str]:
    column = "identifier" if name == "_private_tasks" else "queue_name"
    query = sql.SQL("select {} from {}").format(sql.Identifier(column), table(schema, name))
    return {row[0] for row in conn.execute(query)}


def lock_job(
    conn: Connection, schema: str, job_id: int, by: str = "worker-1", age: str = "0 seconds"
) -> None:
    conn.execute(
        sql.SQL(
            "update {} set locked_at = now() - %s::interval, locked_by = %s where id = %s"
        ).format(table(schema, "_private_jobs")),
        [age, by, job_id],
    )


def lock_queue(conn: Connection, schema: str, queue_name: str, by: str = "worker-1") -> None:
    conn.execute(
        sql.SQL("update {} set locked_at = now(), locked_by = %s where queue_name = %s").format(
            table(schema, "_private_job_queues")
        ),
        [by, queue_name],
    )


def assert_aware_utc(value: dt.datetime | None) -> None:
    assert isinstance(value, dt.datetime), value
    assert value.tzinfo is not None
    assert value.utcoffset() == dt.timedelta(0), value


def assert_all_datetimes_aware_utc(job: Job) -> None:
    for value in (job.run_at, job.created_at, job.updated_at):
        assert_aware_utc(value)
    if job.locked_at is not None:
        assert_aware_utc(job.locked_at)


BOTH_ENTRY_POINTS = pytest.mark.parametrize("via", ["add_raw_job", "add_raw_jobs"])


# --------------------------------------------------------------------------------------------
# Datetimes


@BOTH_ENTRY_POINTS
@pytest.mark.parametrize("timezone", ["America/New_York", "Asia/Kolkata", "UTC"])
def test_enqueued_jobs_have_aware_utc_datetimes_whatever_the_session_timezone(
    utils: WorkerUtils, conn: Connection, via: str, timezone: str
) -> None:
    conn.execute(sql.SQL("set timezone to {}").format(sql.Literal(timezone)))

    job = enqueue(utils, via, "a", {}, JobSpec(run_at=RUN_AT))

    assert_all_datetimes_aware_utc(job)
    assert job.run_at == RUN_AT
    assert job.run_at.replace(tzinfo=None) == RUN_AT.replace(tzinfo=None)


@BOTH_ENTRY_POINTS
def test_a_run_at_given_in_another_offset_comes_back_as_the_same_instant_in_utc(
    utils: WorkerUtils, conn: Connection, via: str
) -> None:
    conn.execute("set timezone to 'America/New_York'")
    tokyo = RUN_AT.astimezone(dt.timezone(dt.timedelta(hours=9)))

    job = enqueue(utils, via, "a", {}, JobSpec(run_at=tokyo))

    assert job.run_at == tokyo
    assert job.run_at.utcoffset() == dt.timedelta(0)
    assert job.run_at.hour == RUN_AT.hour


def test_a_default_run_at_is_the_database_clock_in_utc(
    utils: WorkerUtils, conn: Connection
) -> None:
    conn.execute("set timezone to 'America/New_York'")
    (before,) = conn.execute("select now()").fetchone()  # type: ignore[misc]

    job = utils.add_raw_job("a", {})

    assert_aware_utc(job.run_at)
    assert job.run_at >= before
    assert abs(job.run_at - job.created_at) < dt.timedelta(seconds=1)


def test_maintenance_results_have_aware_utc_datetimes(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    conn.execute("set timezone to 'America/New_York'")
    first, second, third = (utils.add_raw_job("a", {}, JobSpec(job_key=f"k{i}")) for i in range(3))
    lock_job(conn, schema, third.id)

    results = [
        *utils.reschedule_jobs([first.id], RescheduleOptions(run_at=RUN_AT)),
        *utils.permanently_fail_jobs([first.id]),
        *utils.complete_jobs([second.id]),
    ]
    removed = utils.remove_job("k2")

    assert removed is not None and removed.locked_at is not None
    for job in [*results, removed]:
        assert_all_datetimes_aware_utc(job)
    assert results[0].run_at == RUN_AT


def test_results_ignore_loaders_the_caller_registered_on_its_connection(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    # Django registers its own loaders (jsonb as text, naive datetimes); results must not care.
    class AsText(Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode()

    for name in ("timestamptz", "json", "jsonb"):
        conn.adapters.register_loader(name, AsText)
    conn.execute("set timezone to 'America/New_York'")

    job = utils.add_raw_job("a", {"n": [1, 2]}, JobSpec(run_at=RUN_AT, flags=["f"]))
    (batched,) = utils.add_raw_jobs([RawJobSpec("a", {"n": 3}, JobSpec(flags=["g"]))])
    (rescheduled,) = utils.reschedule_jobs([job.id], RescheduleOptions(priority=3))

    assert (job.payload, job.flags, job.run_at) == ({"n": [1, 2]}, ["f"], RUN_AT)
    assert (batched.payload, batched.flags) == ({"n": 3}, ["g"])
    assert rescheduled.payload == {"n": [1, 2]}
    for result in (job, batched, rescheduled):
        assert_all_datetimes_aware_utc(result)


# --------------------------------------------------------------------------------------------
# Flags and the rest of the row


@BOTH_ENTRY_POINTS
def test_flags_come_back_as_the_names_given(utils: WorkerUtils, via: str) -> None:
    given = ["zeta", "alpha", "a-much-longer-flag", "m"]

    job = enqueue(utils, via, "a", {}, JobSpec(flags=given))

    assert job.flags is not None
    assert sorted(job.flags) == sorted(given)
    assert all(isinstance(flag, str) for flag in job.flags)


@BOTH_ENTRY_POINTS
@pytest.mark.parametrize("flags", [None, []], ids=["none", "empty"])
def test_no_flags_come_back_as_none(utils: WorkerUtils, via: str, flags: list[str] | None) -> None:
    job = enqueue(utils, via, "a", {}, JobSpec(flags=flags))

    assert job.flags is None


@BOTH_ENTRY_POINTS
def test_a_returned_job_is_the_stored_row(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    job = enqueue(
        utils,
        via,
        "report",
        {"n": 1},
        JobSpec(
            queue_name="reports",
            run_at=RUN_AT,
            priority=-5,
            max_attempts=3,
            job_key="monthly",
            flags=["slow"],
        ),
    )

    row = rows(conn, schema)[job.id]
    assert job.task_id == row["task_id"]
    assert job.job_queue_id == row["job_queue_id"]
    assert (job.payload, job.priority, job.run_at) == (row["payload"], -5, row["run_at"])
    assert (job.attempts, job.max_attempts, job.last_error) == (0, 3, None)
    assert (job.created_at, job.updated_at) == (row["created_at"], row["updated_at"])
    assert (job.key, job.locked_at, job.locked_by, job.revision) == ("monthly", None, None, 0)
    assert (job.task_identifier, job.queue_name) == ("report", "reports")
    assert job.is_permanently_failed is False


# --------------------------------------------------------------------------------------------
# remove_job


def test_remove_job_returns_none_for_an_unknown_key(utils: WorkerUtils) -> None:
    utils.add_raw_job("a", {}, JobSpec(job_key="known"))

    assert utils.remove_job("unknown") is None


def test_remove_job_deletes_an_unlocked_job_and_returns_it(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {"x": 1}, JobSpec(job_key="k", queue_name="q"))
    other = utils.add_raw_job("a", {}, JobSpec(job_key="other"))

    removed = utils.remove_job("k")

    assert removed is not None
    assert (removed.id, removed.key, removed.payload) == (job.id, "k", {"x": 1})
    assert (removed.task_identifier, removed.queue_name) == ("a", "q")
    assert set(rows(conn, schema)) == {other.id}


def test_remove_job_on_a_locked_job_detaches_it_instead_of_deleting_it(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {}, JobSpec(job_key="k", max_attempts=4))
    lock_job(conn, schema, job.id)

    removed = utils.remove_job("k")

    assert removed is not None
    assert removed.id == job.id
    assert removed.key is None
    assert removed.attempts == removed.max_attempts == 4
    assert removed.locked_by == "worker-1"
    row = rows(conn, schema)[job.id]
    assert (row["key"], row["attempts"], row["locked_by"]) == (None, 4, "worker-1")
    assert utils.remove_job("k") is None


def test_remove_job_treats_a_lock_older_than_four_hours_as_released(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {}, JobSpec(job_key="k"))
    lock_job(conn, schema, job.id, age="4 hours 1 minute")

    removed = utils.remove_job("k")

    assert removed is not None and removed.id == job.id
    assert rows(conn, schema) == {}


# --------------------------------------------------------------------------------------------
# complete_jobs, permanently_fail_jobs, reschedule_jobs


def test_complete_jobs_deletes_the_given_jobs_and_returns_them(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    first, second, untouched = (utils.add_raw_job("a", {"i": i}) for i in range(3))

    completed = utils.complete_jobs([first.id, second.id])

    assert sorted(job.id for job in completed) == sorted([first.id, second.id])
    assert all(job.task_identifier == "a" for job in completed)
    assert set(rows(conn, schema)) == {untouched.id}


def test_complete_jobs_skips_locked_jobs(utils: WorkerUtils, conn: Connection, schema: str) -> None:
    free, locked = utils.add_raw_job("a", {}), utils.add_raw_job("a", {})
    lock_job(conn, schema, locked.id)

    completed = utils.complete_jobs([free.id, locked.id])

    assert [job.id for job in completed] == [free.id]
    assert set(rows(conn, schema)) == {locked.id}


def test_complete_jobs_treats_a_lock_older_than_four_hours_as_released(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    stale = utils.add_raw_job("a", {})
    lock_job(conn, schema, stale.id, age="5 hours")

    assert [job.id for job in utils.complete_jobs([stale.id])] == [stale.id]
    assert rows(conn, schema) == {}


def test_complete_jobs_ignores_unknown_ids(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {})

    completed = utils.complete_jobs([job.id + 1000, job.id, -1])

    assert [done.id for done in completed] == [job.id]
    assert utils.complete_jobs([job.id + 1000]) == []


def test_permanently_fail_jobs_marks_them_failed_with_the_default_reason(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {}, JobSpec(max_attempts=6))

    (failed,) = utils.permanently_fail_jobs([job.id])

    assert failed.id == job.id
    assert failed.attempts == failed.max_attempts == 6
    assert failed.last_error == "Manually marked as failed"
    assert failed.is_permanently_failed
    row = rows(conn, schema)[job.id]
    assert (row["attempts"], row["last_error"]) == (6, "Manually marked as failed")
    assert row["updated_at"] >= job.updated_at


def test_permanently_fail_jobs_records_a_custom_reason(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {})

    (failed,) = utils.permanently_fail_jobs([job.id], reason="customer cancelled")

    assert failed.last_error == "customer cancelled"
    assert rows(conn, schema)[job.id]["last_error"] == "customer cancelled"


def test_permanently_fail_jobs_skips_locked_jobs_and_ignores_unknown_ids(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    free, locked = utils.add_raw_job("a", {}), utils.add_raw_job("a", {})
    lock_job(conn, schema, locked.id)

    failed = utils.permanently_fail_jobs([free.id, locked.id, locked.id + 1000])

    assert [job.id for job in failed] == [free.id]
    assert rows(conn, schema)[locked.id]["attempts"] == 0
    assert rows(conn, schema)[locked.id]["last_error"] is None


def test_permanently_fail_jobs_treats_a_lock_older_than_four_hours_as_released(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    stale = utils.add_raw_job("a", {})
    lock_job(conn, schema, stale.id, age="5 hours")

    assert [job.id for job in utils.permanently_fail_jobs([stale.id])] == [stale.id]


@pytest.mark.parametrize(
    ("options", "column", "value"),
    [
        (RescheduleOptions(run_at=RUN_AT), "run_at", RUN_AT),
        (RescheduleOptions(priority=-7), "priority", -7),
        (RescheduleOptions(attempts=3), "attempts", 3),
        (RescheduleOptions(max_attempts=11), "max_attempts", 11),
    ],
    ids=["run_at", "priority", "attempts", "max_attempts"],
)
def test_reschedule_jobs_changes_only_the_given_option(
    utils: WorkerUtils,
    conn: Connection,
    schema: str,
    options: RescheduleOptions,
    column: str,
    value: Any,
) -> None:
    job = utils.add_raw_job(
        "a", {}, JobSpec(run_at=dt.datetime(2035, 1, 1, tzinfo=UTC), priority=2, max_attempts=9)
    )
    before = rows(conn, schema)[job.id]

    (rescheduled,) = utils.reschedule_jobs([job.id], options)

    after = rows(conn, schema)[job.id]
    assert getattr(rescheduled, column) == value
    assert after[column] == value
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {column, "updated_at"}


def test_reschedule_jobs_without_options_changes_only_updated_at(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {}, JobSpec(priority=2))
    conn.execute(
        sql.SQL("update {} set updated_at = now() - interval '1 hour' where id = %s").format(
            table(schema, "_private_jobs")
        ),
        [job.id],
    )
    before = rows(conn, schema)[job.id]

    (rescheduled,) = utils.reschedule_jobs([job.id])

    after = rows(conn, schema)[job.id]
    assert {name for name in after if after[name] != before[name]} == {"updated_at"}
    assert rescheduled.updated_at > before["updated_at"]


def test_reschedule_jobs_skips_locked_jobs_and_ignores_unknown_ids(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    free, locked = utils.add_raw_job("a", {}), utils.add_raw_job("a", {})
    lock_job(conn, schema, locked.id)

    rescheduled = utils.reschedule_jobs(
        [free.id, locked.id, free.id + 1000], RescheduleOptions(priority=9)
    )

    assert [job.id for job in rescheduled] == [free.id]
    assert rows(conn, schema)[locked.id]["priority"] == 0


def test_reschedule_jobs_treats_a_lock_older_than_four_hours_as_released(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    stale = utils.add_raw_job("a", {})
    lock_job(conn, schema, stale.id, age="5 hours")

    rescheduled = utils.reschedule_jobs([stale.id], RescheduleOptions(priority=9))

    assert [job.priority for job in rescheduled] == [9]


# --------------------------------------------------------------------------------------------
# force_unlock_workers


def test_force_unlock_workers_frees_the_jobs_and_queues_of_the_given_workers_only(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    jobs = {
        worker: utils.add_raw_job("a", {}, JobSpec(queue_name=f"q-{worker}"))
        for worker in ("w1", "w2", "w3")
    }
    for worker, job in jobs.items():
        lock_job(conn, schema, job.id, by=worker)
        lock_queue(conn, schema, f"q-{worker}", by=worker)

    assert utils.force_unlock_workers(["w1", "w2", "nobody"]) is None  # type: ignore[func-returns-value]

    job_locks = {row["locked_by"] for row in rows(conn, schema).values()}
    assert job_locks == {None, "w3"}
    assert rows(conn, schema)[jobs["w3"].id]["locked_at"] is not None
    assert all(
        row["locked_at"] is None
        for job_id, row in rows(conn, schema).items()
        if job_id != jobs["w3"].id
    )
    queues = rows(conn, schema, "_private_job_queues")
    assert {row["queue_name"]: row["locked_by"] for row in queues.values()} == {
        "q-w1": None,
        "q-w2": None,
        "q-w3": "w3",
    }
    assert all((row["locked_at"] is None) == (row["locked_by"] is None) for row in queues.values())


# --------------------------------------------------------------------------------------------
# cleanup


def permanently_failed_job(
    utils: WorkerUtils, identifier: str, queue_name: str | None = None
) -> Job:
    job = utils.add_raw_job(identifier, {}, JobSpec(queue_name=queue_name))
    (failed,) = utils.permanently_fail_jobs([job.id])
    return failed


def test_cleanup_returns_how_many_rows_each_task_removed(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    permanently_failed_job(utils, "dead_a", "queue_a")
    permanently_failed_job(utils, "dead_b")
    live = utils.add_raw_job("live", {}, JobSpec(queue_name="queue_live"))

    removed = utils.cleanup(list(CleanupTask))

    assert removed == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 2,
        CleanupTask.GC_TASK_IDENTIFIERS: 2,
        CleanupTask.GC_JOB_QUEUES: 1,
    }
    assert set(rows(conn, schema)) == {live.id}
    assert names(conn, schema, "_private_tasks") == {"live"}
    assert names(conn, schema, "_private_job_queues") == {"queue_live"}


def test_cleanup_runs_its_tasks_in_the_fixed_order_whatever_order_they_are_given_in(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    permanently_failed_job(utils, "dead", "dead_queue")

    removed = utils.cleanup(
        [
            CleanupTask.GC_JOB_QUEUES,
            CleanupTask.GC_TASK_IDENTIFIERS,
            CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS,
        ]
    )

    # The job goes first, so its task and queue are unused by the time they are collected.
    assert removed == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: 1,
        CleanupTask.GC_JOB_QUEUES: 1,
    }
    assert names(conn, schema, "_private_tasks") == set()
    assert names(conn, schema, "_private_job_queues") == set()


def test_cleanup_gc_task_identifiers_with_deleting_failed_jobs_removes_their_task(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    permanently_failed_job(utils, "dead")

    removed = utils.cleanup(
        [CleanupTask.GC_TASK_IDENTIFIERS, CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS]
    )

    assert removed == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: 1,
    }
    assert names(conn, schema, "_private_tasks") == set()


def test_cleanup_by_default_collects_job_queues_only(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    failed = permanently_failed_job(utils, "dead")
    done = utils.add_raw_job("done", {}, JobSpec(queue_name="empty_queue"))
    utils.complete_jobs([done.id])

    assert utils.cleanup() == {CleanupTask.GC_JOB_QUEUES: 1}
    assert set(rows(conn, schema)) == {failed.id}
    assert names(conn, schema, "_private_tasks") == {"dead", "done"}


def test_cleanup_deleting_permanently_failed_jobs_keeps_locked_and_live_ones(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    failed = permanently_failed_job(utils, "a")
    failed_but_running = permanently_failed_job(utils, "a")
    lock_job(conn, schema, failed_but_running.id)
    live = utils.add_raw_job("a", {})

    removed = utils.cleanup([CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS])

    assert removed == {CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1}
    assert set(rows(conn, schema)) == {failed_but_running.id, live.id}
    assert failed.id not in rows(conn, schema)


def test_cleanup_gc_task_identifiers_keeps_used_tasks_and_the_keep_list(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    utils.add_raw_job("used", {})
    unused = utils.add_raw_jobs(
        [
            RawJobSpec("served_by_a_worker", {}),
            RawJobSpec("also_served", {}),
            RawJobSpec("forgotten", {}),
        ]
    )
    utils.complete_jobs([job.id for job in unused])

    removed = utils.cleanup(
        [CleanupTask.GC_TASK_IDENTIFIERS],
        task_identifiers_to_keep=["served_by_a_worker", "also_served", "not_a_task"],
    )

    assert removed == {CleanupTask.GC_TASK_IDENTIFIERS: 1}
    assert names(conn, schema, "_private_tasks") == {"used", "served_by_a_worker", "also_served"}


def test_cleanup_gc_job_queues_skips_locked_queues(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    done = utils.add_raw_jobs(
        [
            RawJobSpec("a", {}, JobSpec(queue_name="locked_queue")),
            RawJobSpec("a", {}, JobSpec(queue_name="free_queue")),
        ]
    )
    utils.complete_jobs([job.id for job in done])
    lock_queue(conn, schema, "locked_queue")

    removed = utils.cleanup([CleanupTask.GC_JOB_QUEUES])

    assert removed == {CleanupTask.GC_JOB_QUEUES: 1}
    assert names(conn, schema, "_private_job_queues") == {"locked_queue"}


def test_cleanup_gc_job_queues_deletes_unused_queues_while_some_jobs_have_no_queue(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    # The NULL trap: "id not in (select job_queue_id …)" is never true once a null is in there.
    utils.add_raw_job("a", {})
    in_use = utils.add_raw_job("a", {}, JobSpec(queue_name="in_use"))
    done = utils.add_raw_job("a", {}, JobSpec(queue_name="unused"))
    utils.complete_jobs([done.id])

    removed = utils.cleanup([CleanupTask.GC_JOB_QUEUES])

    assert removed == {CleanupTask.GC_JOB_QUEUES: 1}
    assert names(conn, schema, "_private_job_queues") == {"in_use"}
    assert in_use.id in rows(conn, schema)


def test_cleanup_with_nothing_to_do_reports_zero_for_each_task(utils: WorkerUtils) -> None:
    utils.add_raw_job("a", {}, JobSpec(queue_name="q"))

    assert utils.cleanup(list(CleanupTask)) == {task: 0 for task in CleanupTask}
