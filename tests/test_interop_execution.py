"""What graphile-worker 0.18.0 does with the jobs the library enqueues: queues, priority and
run_at, retries, flags, job keys, transactions and LISTEN/NOTIFY, the application's clock.

Each test enqueues from Python (WorkerUtils) on its own schema, lets the real worker run the
jobs (tests/node/harness.js), and checks the worker's reports and the database in one place.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time

import psycopg

from graphile_worker_utils import (
    CleanupTask,
    JobSpec,
    RawJobSpec,
    RescheduleOptions,
    WorkerUtils,
)
from tests._worker import Interop, NodeWorker, Report, overlaps, ran_job_ids, wait_until

UTC = dt.timezone.utc


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def epoch_ms(moment: dt.datetime) -> float:
    return moment.timestamp() * 1000


def reschedule_now(interop: Interop, job_id: int) -> None:
    """Make a failed job due again at once (instead of graphile-worker's exp(attempts) s
    backoff); it must be unlocked by then."""
    (job,) = interop.utils.reschedule_jobs([job_id], RescheduleOptions(run_at=utcnow()))
    assert job.id == job_id and job.locked_at is None, (
        f"job {job_id}: expected reschedule_jobs to move the unlocked job, got {job}"
    )


# -- queues ---------------------------------------------------------------------------------


def test_jobs_of_one_queue_never_overlap_across_two_worker_processes(interop: Interop) -> None:
    tasks = {"slow": {"sleep_ms": 120}}
    first = interop.start(tasks, concurrency=3, name="first")
    second = interop.start(tasks, concurrency=3, name="second")
    queues = ["alpha", "beta", "gamma"]
    jobs = interop.utils.add_raw_jobs(
        [
            RawJobSpec("slow", {"queue": queue, "n": n}, JobSpec(queue_name=queue))
            for n in range(4)
            for queue in queues
        ]
    )
    queue_of = {job.id: job.queue_name for job in jobs}

    def all_ended() -> list[Report] | None:
        ends = {r["job_id"]: r for w in (first, second) for r in w.events("end")}
        return list(ends.values()) if set(queue_of) <= set(ends) else None

    ends = wait_until(all_ended, 20, f"expected jobs {sorted(queue_of)} to run")

    for end in ends:
        job_id = end["job_id"]
        assert end["queue_name"] == queue_of[job_id], (
            f"job {job_id}: expected the worker to see queue {queue_of[job_id]!r},"
            f" got {end['queue_name']!r}"
        )
        assert end["error"] is None, f"job {job_id}: expected success, got {end['error']!r}"
    for a, b in itertools.combinations(ends, 2):
        if a["queue_name"] == b["queue_name"]:
            assert not overlaps(a, b), (
                f"jobs {a['job_id']} and {b['job_id']} of queue {a['queue_name']!r} ran at the"
                f" same time ({a['started_at']:.0f}-{a['ended_at']:.0f} on {a['locked_by']},"
                f" {b['started_at']:.0f}-{b['ended_at']:.0f} on {b['locked_by']}):"
                " expected a queue's jobs to run one at a time"
            )
    # The check above means something only if the workers really ran jobs side by side.
    assert {e["locked_by"] for e in ends} == {first.pool_id, second.pool_id}, (
        "expected both worker processes to run jobs of the queues,"
        f" got runs by {sorted({e['locked_by'] for e in ends})}"
    )
    assert any(
        overlaps(a, b)
        for a, b in itertools.combinations(ends, 2)
        if a["queue_name"] != b["queue_name"]
    ), "expected jobs of different queues to run concurrently at least once"


# -- order and time ---------------------------------------------------------------------------


def test_priority_orders_execution(interop: Interop) -> None:
    run_at = utcnow() - dt.timedelta(minutes=1)  # one run_at for all: only priority differs
    priorities = [3, -5, 0, 10, -1, 7]
    jobs = [
        interop.utils.add_raw_job("rec", {"priority": p}, JobSpec(priority=p, run_at=run_at))
        for p in priorities
    ]
    # Expected from what was asked for, not from what came back.
    expected = [job.id for _, job in sorted(zip(priorities, jobs, strict=True))]

    worker = interop.start({"rec": {}}, mode="runOnce")
    worker.wait_exit(20)

    assert ran_job_ids(worker) == expected, (
        f"expected jobs to run by priority (lowest first) as {expected}"
        f" (priorities {sorted(priorities)}),"
        f" got {ran_job_ids(worker)}"
    )


def test_run_at_orders_execution_within_a_priority(interop: Interop) -> None:
    now = utcnow()
    minutes_ago = [3, 9, 1, 5, 7]
    jobs = [
        interop.utils.add_raw_job(
            "rec", {"minutes_ago": m}, JobSpec(run_at=now - dt.timedelta(minutes=m))
        )
        for m in minutes_ago
    ]
    expected = [job.id for _, job in sorted(zip(minutes_ago, jobs, strict=True), reverse=True)]

    worker = interop.start({"rec": {}}, mode="runOnce")
    worker.wait_exit(20)

    assert ran_job_ids(worker) == expected, (
        f"expected jobs to run oldest run_at first as {expected}, got {ran_job_ids(worker)}"
    )


def test_a_future_run_at_is_not_run_early(interop: Interop) -> None:
    worker = interop.start({"rec": {}})
    run_at = utcnow() + dt.timedelta(seconds=1.5)
    future = interop.utils.add_raw_job("rec", {"when": "future"}, JobSpec(run_at=run_at))
    mark = worker.mark()
    now_job = interop.utils.add_raw_job("rec", {"when": "now"})

    worker.wait_completed(now_job.id)
    started = worker.wait_started(future.id, timeout=10)

    # Same machine, same clock; 20 ms of slack for the two processes' clock readings.
    assert started["started_at"] >= epoch_ms(run_at) - 20, (
        f"job {future.id}: started at {started['started_at']:.0f} ms,"
        f" {epoch_ms(run_at) - started['started_at']:.0f} ms before its run_at"
        f" {run_at.isoformat()}"
    )
    # And not running it earlier was the worker's decision: it kept looking meanwhile.
    looked = [
        r for r in worker.reports[mark:] if r["event"] == "poll_empty" and r["t"] < epoch_ms(run_at)
    ]
    assert len(looked) >= 2, (
        f"job {future.id}: expected the worker to poll (and pass it over) before its run_at,"
        f" it polled {len(looked)} times"
    )


# -- retries ----------------------------------------------------------------------------------


def test_a_job_that_fails_twice_then_succeeds_is_retried_and_then_deleted(
    interop: Interop,
) -> None:
    worker = interop.start({"flaky": {"fail_times": 2}})
    job = interop.utils.add_raw_job("flaky", {"n": 1}, JobSpec(max_attempts=5))

    for attempt in (1, 2):
        done = worker.wait_completed(job.id, attempts=attempt)
        assert done["error"], f"job {job.id}: expected attempt {attempt} to fail"
        row = interop.wait_unlocked(job.id, attempts=attempt)
        assert row["last_error"] and "fails attempt" in row["last_error"], (
            f"job {job.id}: expected the failure recorded as last_error, got {row['last_error']!r}"
        )
        assert row["run_at"] > utcnow(), (
            f"job {job.id}: expected graphile-worker to back off the retry, run_at {row['run_at']}"
        )
        reschedule_now(interop, job.id)

    done = worker.wait_completed(job.id, attempts=3)
    assert done["error"] is None, f"job {job.id}: expected attempt 3 to succeed, got {done}"
    interop.wait_deleted(job.id)
    assert [r["attempts"] for r in worker.events("start", job.id)] == [1, 2, 3], (
        f"job {job.id}: expected exactly three runs"
    )


def test_a_job_that_always_fails_ends_permanently_failed_and_cleanup_deletes_it(
    interop: Interop,
) -> None:
    worker = interop.start({"doomed": {"always_fail": True}})
    job = interop.utils.add_raw_job("doomed", {"n": 1}, JobSpec(max_attempts=2))

    interop.wait_unlocked(job.id, attempts=1)
    reschedule_now(interop, job.id)
    row = interop.wait_unlocked(job.id, attempts=2)
    assert row["attempts"] == row["max_attempts"] == 2, (
        f"job {job.id}: expected it permanently failed (attempts = max_attempts = 2), got {row}"
    )
    assert row["last_error"] and "always fails" in row["last_error"], (
        f"job {job.id}: expected the last failure as last_error, got {row['last_error']!r}"
    )
    # Even when due, a permanently failed job is not run again.
    interop.utils.reschedule_jobs([job.id], RescheduleOptions(run_at=utcnow()))
    worker.wait_polls(3, after=worker.mark())
    assert len(worker.events("start", job.id)) == 2, (
        f"job {job.id}: expected no third run of a permanently failed job"
    )

    removed = interop.utils.cleanup([CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS])

    assert removed == {CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1}, (
        f"job {job.id}: expected cleanup to delete the one permanently failed job, got {removed}"
    )
    assert interop.job_row(job.id) is None, f"job {job.id}: still there after cleanup"


# -- flags ------------------------------------------------------------------------------------


def test_forbidden_flags_leave_flagged_jobs_untouched_while_others_run(interop: Interop) -> None:
    worker = interop.start({"rec": {}}, forbidden_flags=["maintenance"])
    utils = interop.utils
    forbidden = [
        utils.add_raw_job("rec", {"n": 1}, JobSpec(flags=["maintenance"])),
        utils.add_raw_job("rec", {"n": 2}, JobSpec(flags=["other", "maintenance"])),
    ]
    allowed = [
        utils.add_raw_job("rec", {"n": 3}, JobSpec(flags=["other"])),
        utils.add_raw_job("rec", {"n": 4}),
    ]

    for job in allowed:
        worker.wait_completed(job.id)
    worker.wait_polls(3, after=worker.mark())

    for job in forbidden:
        assert not worker.events("start", job.id), (
            f"job {job.id} (flags {job.flags}): ran on a worker that forbids 'maintenance'"
        )
        row = interop.job_row(job.id)
        assert row is not None, f"job {job.id} (flags {job.flags}): expected it still queued"
        assert (row["attempts"], row["locked_at"], row["last_error"]) == (0, None, None), (
            f"job {job.id} (flags {job.flags}): expected it untouched, got {row}"
        )
        assert sorted(row["flags"]) == sorted(job.flags or []), (
            f"job {job.id}: expected flags {job.flags}, got {row['flags']}"
        )
    # A worker that forbids nothing runs them.
    other = interop.start({"rec": {}}, mode="runOnce", name="unrestricted")
    other.wait_exit(20)
    assert sorted(ran_job_ids(other)) == sorted(job.id for job in forbidden), (
        f"expected a worker without forbidden flags to run {[j.id for j in forbidden]},"
        f" got {ran_job_ids(other)}"
    )


# -- job keys ---------------------------------------------------------------------------------


def test_replacing_the_key_of_a_running_job_creates_a_new_job_and_both_run(
    interop: Interop,
) -> None:
    worker = interop.start({"hold": {"block": True}})
    old = interop.utils.add_raw_job("hold", {"version": 1}, JobSpec(job_key="report:7"))
    worker.wait_started(old.id)

    new = interop.utils.add_raw_job("hold", {"version": 2}, JobSpec(job_key="report:7"))

    assert new.id != old.id, (
        f"job {old.id} is running: expected replacing key 'report:7' to create a new job,"
        f" got the same id {new.id}"
    )
    assert (new.key, new.payload, new.attempts) == ("report:7", {"version": 2}, 0), (
        f"job {new.id}: expected the new job to hold the key and the new payload, got {new}"
    )
    detached = interop.job_row(old.id)
    assert detached is not None and detached["key"] is None, (
        f"job {old.id}: expected the running job to lose its key, got {detached}"
    )
    worker.release(old.id)
    worker.wait_completed(old.id)
    started = worker.wait_started(new.id)
    worker.release(new.id)
    worker.wait_completed(new.id)

    assert started["payload"] == {"version": 2}, (
        f"job {new.id}: expected the replacement to run with payload version 2, got {started}"
    )
    assert worker.events("end", old.id)[0]["payload"] == {"version": 1}, (
        f"job {old.id}: expected the running job to finish with its own payload"
    )
    assert ran_job_ids(worker) == [old.id, new.id], (
        f"expected both jobs to run once each, got runs {ran_job_ids(worker)}"
    )
    interop.wait_deleted(old.id)
    interop.wait_deleted(new.id)


def test_removing_a_running_job_stops_its_retries(interop: Interop) -> None:
    worker = interop.start({"hold": {"block": True}})
    job = interop.utils.add_raw_job("hold", {}, JobSpec(job_key="sync:1", max_attempts=5))
    worker.wait_started(job.id)

    removed = interop.utils.remove_job("sync:1")

    assert removed is not None and removed.id == job.id, (
        f"job {job.id}: expected remove_job('sync:1') to return it, got {removed}"
    )
    assert removed.key is None and removed.attempts == removed.max_attempts == 5, (
        f"job {job.id}: expected the running job detached with no attempts left, got {removed}"
    )
    assert removed.locked_by == worker.pool_id, (
        f"job {job.id}: expected it still locked by {worker.pool_id}, got {removed.locked_by}"
    )
    worker.release(job.id, outcome="fail")
    done = worker.wait_completed(job.id)
    assert done["error"], f"job {job.id}: expected the released run to fail"
    interop.wait_unlocked(job.id, attempts=5)
    # Due or not, it must never run again.
    interop.utils.reschedule_jobs([job.id], RescheduleOptions(run_at=utcnow()))
    worker.wait_polls(3, after=worker.mark())

    assert len(worker.events("start", job.id)) == 1, (
        f"job {job.id}: removed while running, it failed and was retried"
        f" ({len(worker.events('start', job.id))} runs): expected no retry"
    )
    row = interop.job_row(job.id)
    assert row is not None and row["attempts"] == row["max_attempts"] and row["key"] is None, (
        f"job {job.id}: expected it left permanently failed, got {row}"
    )


# -- transactions and LISTEN/NOTIFY -----------------------------------------------------------


def insert_notifications(worker: NodeWorker, after: int = 0) -> list[Report]:
    return [r for r in worker.events("notification")[after:] if r["channel"] == "jobs:insert"]


def test_a_rolled_back_enqueue_leaves_the_worker_nothing_to_run(interop: Interop) -> None:
    worker = interop.start({"rec": {}}, poll_interval_ms=60_000)
    with psycopg.connect(interop.database.dsn) as conn:
        utils = WorkerUtils(conn, schema=interop.schema)
        rolled_back = utils.add_raw_job("rec", {"n": "rolled back"})
        conn.rollback()
        marker = utils.add_raw_job("rec", {"n": "committed"})
        conn.commit()

    done = worker.wait_completed(marker.id)
    worker.wait_polls(1, after=worker.position(done))  # it looked again after the marker

    assert ran_job_ids(worker) == [marker.id], (
        f"expected only job {marker.id} (committed) to run, not job {rolled_back.id}"
        f" (rolled back); ran {ran_job_ids(worker)}"
    )
    assert interop.job_row(rolled_back.id) is None, f"job {rolled_back.id} survived the rollback"
    assert len(insert_notifications(worker)) == 1, (
        "expected the worker to be notified of the committed job only, got"
        f" {[r['payload'] for r in insert_notifications(worker)]}"
    )


def test_a_committed_enqueue_is_picked_up_through_listen_notify(interop: Interop) -> None:
    # With a 60 s poll interval, only the jobs:insert notification can wake the worker.
    worker = interop.start({"rec": {}}, poll_interval_ms=60_000)
    with psycopg.connect(interop.database.dsn) as conn:
        job = WorkerUtils(conn, schema=interop.schema).add_raw_job("rec", {"n": 1})
        conn.execute("select pg_sleep(0.3)")  # hold the transaction open a moment
        assert not worker.events("start", job.id), f"job {job.id} ran before it was committed"
        committing_at = time.time() * 1000
        conn.commit()
        committed_at = time.time() * 1000

    started = worker.wait_started(job.id, timeout=10)

    assert started["started_at"] - committed_at < 3000, (
        f"job {job.id}: started {started['started_at'] - committed_at:.0f} ms after the commit;"
        " expected a LISTEN/NOTIFY wake-up within 3 s (the poll interval is 60 s)"
    )
    notified = [r["t"] for r in insert_notifications(worker)]
    assert notified and min(notified) >= committing_at, (
        f"job {job.id}: expected one jobs:insert notification, at the commit"
        f" ({committing_at:.0f}), got them at {notified}"
    )


# -- the application's clock ------------------------------------------------------------------


def test_use_local_time_takes_run_at_from_the_application_not_the_transactions_now(
    interop: Interop,
) -> None:
    with psycopg.connect(interop.database.dsn) as conn:
        (transaction_now,) = conn.execute("select now()").fetchone() or (None,)
        conn.execute("select pg_sleep(0.3)")  # now() stays frozen at the transaction's start
        local = WorkerUtils(conn, schema=interop.schema, use_local_time=True)
        database = WorkerUtils(conn, schema=interop.schema)
        before = utcnow()
        job = local.add_raw_job("rec", {"clock": "application"})
        after = utcnow()
        control = database.add_raw_job("rec", {"clock": "database"})
        conn.commit()

    assert before <= job.run_at <= after, (
        f"job {job.id}: expected run_at from the application's clock, between"
        f" {before.isoformat()} and {after.isoformat()}, got {job.run_at.isoformat()}"
        f" (the transaction's now() is {transaction_now})"
    )
    assert control.run_at == transaction_now, (
        f"job {control.id}: expected run_at = the transaction's now() without use_local_time,"
        f" got {control.run_at}"
    )
    worker = interop.start({"rec": {}}, mode="runOnce")
    worker.wait_exit(20)
    assert sorted(ran_job_ids(worker)) == sorted([job.id, control.id]), (
        f"expected the worker to run jobs {job.id} and {control.id}, ran {ran_job_ids(worker)}"
    )


def test_the_worker_honours_the_run_at_the_application_gave(interop: Interop) -> None:
    # An application clock an hour behind or ahead of the database's, given explicitly.
    utils = WorkerUtils(interop.conn, schema=interop.schema, use_local_time=True)
    now = utcnow()
    hour = dt.timedelta(hours=1)
    ahead = utils.add_raw_job("rec", {"clock": "ahead"}, JobSpec(run_at=now + hour))
    present = utils.add_raw_job("rec", {"clock": "local"})
    behind = utils.add_raw_job("rec", {"clock": "behind"}, JobSpec(run_at=now - hour))

    worker = interop.start({"rec": {}}, mode="runOnce")
    worker.wait_exit(20)

    assert ran_job_ids(worker) == [behind.id, present.id], (
        f"expected job {behind.id} (run_at an hour ago) then job {present.id} (run_at now),"
        f" and not job {ahead.id} (run_at in an hour); ran {ran_job_ids(worker)}"
    )
    row = interop.job_row(ahead.id)
    assert row is not None and row["attempts"] == 0 and row["run_at"] == ahead.run_at, (
        f"job {ahead.id}: expected it waiting, untouched, for {ahead.run_at}; got {row}"
    )
