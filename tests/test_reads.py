"""The read side against real PostgreSQL: get_job, get_job_by_key, list_jobs, locked_workers,
the JobState of every returned job, and cleanup's older_than. (graphile-worker's own locks and
failures: test_interop_reads.py; older and Rust schemas: test_reads_schemas.py.)"""

from __future__ import annotations

import copy
import datetime as dt
import pickle
from collections.abc import Callable
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import pq, sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    CleanupTask,
    InvalidJobSpec,
    Job,
    JobSpec,
    JobState,
    PayloadNotLoadedError,
    RawJobSpec,
    RescheduleOptions,
    SchemaMissingError,
    WorkerUtils,
)

Conn = psycopg.Connection[Any]
UTC = dt.timezone.utc
PAST = dt.datetime(2000, 1, 1, tzinfo=UTC)
FUTURE = dt.datetime(2100, 1, 1, tzinfo=UTC)


def execute(conn: Conn, schema: str, statement: str, *params: Any) -> None:
    conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)), params)


def set_job(conn: Conn, schema: str, job_id: int, assignments: str) -> None:
    execute(conn, schema, "update {s}._private_jobs set " + assignments + " where id = %s", job_id)


def seed_states(utils: WorkerUtils, conn: Conn, schema: str) -> dict[str, tuple[int, JobState]]:
    """One job per case, by name, with the state it must read: every state, and the edges of
    the four-hour lock window and of the attempts."""
    cases: dict[str, tuple[str, JobState]] = {
        "ready": ("", JobState.READY),
        "scheduled": ("run_at = '2100-01-01'", JobState.SCHEDULED),
        "retrying": ("attempts = 1, run_at = '2100-01-01'", JobState.RETRYING),
        "retry_due": ("attempts = 3", JobState.READY),
        "running": ("locked_at = now(), locked_by = 'w1', attempts = 1", JobState.RUNNING),
        "running_3h59": (
            "locked_at = now() - interval '3 hours 59 minutes', locked_by = 'w1', attempts = 1",
            JobState.RUNNING,
        ),
        "running_last_attempt": (
            "locked_at = now(), locked_by = 'w1', attempts = max_attempts",
            JobState.RUNNING,
        ),
        "failed": ("attempts = max_attempts, last_error = 'boom'", JobState.PERMANENTLY_FAILED),
        "stale_ready": (
            "locked_at = now() - interval '4 hours 1 minute', locked_by = 'gone', attempts = 1",
            JobState.READY,
        ),
        "stale_retrying": (
            "locked_at = now() - interval '5 hours', locked_by = 'gone', attempts = 2,"
            " run_at = '2100-01-01'",
            JobState.RETRYING,
        ),
        "stale_scheduled": (
            "locked_at = now() - interval '5 hours', locked_by = 'gone', run_at = '2100-01-01'",
            JobState.SCHEDULED,
        ),
        "stale_failed": (
            "locked_at = now() - interval '1 day', locked_by = 'gone', attempts = max_attempts",
            JobState.PERMANENTLY_FAILED,
        ),
    }
    seeded = {}
    for name, (assignments, state) in cases.items():
        job = utils.add_raw_job(name, {"case": name}, JobSpec(queue_name=f"q_{name}"))
        if assignments:
            set_job(conn, schema, job.id, assignments)
        seeded[name] = (job.id, state)
    return seeded


def ids(jobs: list[Job]) -> list[int]:
    return [job.id for job in jobs]


# -- states ------------------------------------------------------------------------------------


def test_every_job_reads_its_state_edges_of_the_lock_window_included(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    seeded = seed_states(utils, conn, schema)
    for name, (job_id, state) in seeded.items():
        job = utils.get_job(job_id)
        assert job is not None and job.state is state, (name, job)
    listed = {job.task_identifier: job.state for job in utils.list_jobs()}
    assert listed == {name: state for name, (_, state) in seeded.items()}


@pytest.mark.parametrize("state", list(JobState))
def test_the_states_filter_returns_exactly_the_jobs_in_that_state(
    utils: WorkerUtils, conn: Conn, schema: str, state: JobState
) -> None:
    seeded = seed_states(utils, conn, schema)
    expected = sorted(job_id for job_id, wanted in seeded.values() if wanted is state)
    for states in ([state], [state.value], (s for s in [state, state])):
        jobs = utils.list_jobs(states=states)
        assert ids(jobs) == expected and {job.state for job in jobs} == {state}


def test_several_states_and_all_states(utils: WorkerUtils, conn: Conn, schema: str) -> None:
    seeded = seed_states(utils, conn, schema)
    wanted = {JobState.RUNNING, JobState.PERMANENTLY_FAILED}
    expected = sorted(job_id for job_id, state in seeded.values() if state in wanted)
    assert ids(utils.list_jobs(states=["permanently_failed", JobState.RUNNING])) == expected
    assert ids(utils.list_jobs(states=list(JobState))) == sorted(i for i, _ in seeded.values())
    assert utils.list_jobs(states=[]) == []


def test_status_counts_agree_with_list_jobs_by_state(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    seed_states(utils, conn, schema)
    totals = utils.status().totals
    for state in JobState:
        assert totals[state] == len(utils.list_jobs(states=[state])), state
    assert totals.total == len(utils.list_jobs())


# -- lookups -----------------------------------------------------------------------------------


def test_get_job_and_get_job_by_key_return_the_whole_job(utils: WorkerUtils) -> None:
    spec = JobSpec(queue_name="mail", job_key="k1", priority=3, max_attempts=7, flags=["f"])
    added = utils.add_raw_job("send", {"to": "ada", "n": [1, 2]}, spec)
    assert added.state is JobState.READY
    by_id = utils.get_job(added.id)
    assert by_id == added and by_id is not None
    assert by_id.payload == {"to": "ada", "n": [1, 2]}
    assert utils.get_job_by_key("k1") == added
    assert utils.get_job(added.id + 1000) is None
    assert utils.get_job_by_key("k2") is None


def test_a_job_whose_task_row_is_gone_is_not_found(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    # graphile-worker's jobs view hides it, and no worker runs it (docs/schema.md §1).
    job = utils.add_raw_job("orphan", {}, JobSpec(job_key="o"))
    execute(conn, schema, "delete from {s}._private_tasks where identifier = 'orphan'")
    assert utils.get_job(job.id) is None and utils.get_job_by_key("o") is None
    assert utils.list_jobs() == []


# -- filters and pages -------------------------------------------------------------------------


def test_filters_combine_with_and(utils: WorkerUtils, conn: Conn, schema: str) -> None:
    jobs = utils.add_raw_jobs(
        [
            RawJobSpec("send", {}, JobSpec(queue_name="mail")),
            RawJobSpec("send", {}, JobSpec(queue_name="bulk")),
            RawJobSpec("send"),
            RawJobSpec("report", {}, JobSpec(queue_name="mail")),
            RawJobSpec("report"),
        ]
    )
    by = {(job.task_identifier, job.queue_name): job.id for job in jobs}
    set_job(conn, schema, by[("send", "mail")], "locked_at = now(), locked_by = 'w1'")
    set_job(conn, schema, by[("report", None)], "locked_at = now(), locked_by = 'w1'")

    def listed(**filters: Any) -> set[tuple[str, str | None]]:
        jobs = utils.list_jobs(**filters)
        assert ids(jobs) == sorted(ids(jobs))
        return {(job.task_identifier, job.queue_name) for job in jobs}

    assert listed(task_identifiers=["send"]) == {("send", "mail"), ("send", "bulk"), ("send", None)}
    # A queue filter leaves out the jobs outside any queue.
    assert listed(queue_names=["mail"]) == {("send", "mail"), ("report", "mail")}
    assert listed(task_identifiers=["send"], queue_names=["mail", "bulk"]) == {
        ("send", "mail"),
        ("send", "bulk"),
    }
    assert listed(locked_by="w1") == {("send", "mail"), ("report", None)}
    assert listed(locked_by="w1", task_identifiers=["report"]) == {("report", None)}
    assert listed(states=["ready"], queue_names=["mail"]) == {("report", "mail")}
    assert listed(task_identifiers=["nope"]) == listed(queue_names=[]) == set()
    assert listed(locked_by="w2") == set()


def test_pages_cover_every_job_once_while_jobs_are_added(utils: WorkerUtils) -> None:
    first = utils.add_raw_jobs([RawJobSpec("t", {"n": n}) for n in range(230)])
    seen: list[int] = []
    added: list[int] = []
    after: int | None = None
    pages = 0
    while True:
        page = utils.list_jobs(after_id=after, limit=40)
        seen.extend(ids(page))
        pages += 1
        if len(page) < 40:
            break
        after = page[-1].id
        if pages <= 3:  # new jobs arrive while the pages are read
            added.extend(ids(utils.add_raw_jobs([RawJobSpec("t", {"late": pages})] * 5)))
    assert pages >= 6
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert set(seen) == set(ids(first)) | set(added)


def test_pages_with_a_filter_and_after_an_id(utils: WorkerUtils) -> None:
    jobs = utils.add_raw_jobs([RawJobSpec("a" if n % 3 else "b", {"n": n}) for n in range(90)])
    wanted = sorted(job.id for job in jobs if job.task_identifier == "b")
    pages = [utils.list_jobs(task_identifiers=["b"], limit=7)]
    while len(pages[-1]) == 7:
        pages.append(utils.list_jobs(task_identifiers=["b"], limit=7, after_id=pages[-1][-1].id))
    assert [job.id for page in pages for job in page] == wanted
    assert utils.list_jobs(after_id=max(ids(jobs))) == []
    assert ids(utils.list_jobs(after_id=0, limit=1)) == [min(ids(jobs))]


# -- payloads ----------------------------------------------------------------------------------


def test_listing_leaves_payloads_out_unless_asked(utils: WorkerUtils) -> None:
    added = utils.add_raw_job("t", {"big": "x" * 1000})
    (job,) = utils.list_jobs()
    assert job.payload_json is None
    with pytest.raises(PayloadNotLoadedError, match=rf"job {added.id}: its payload was not"):
        _ = job.payload
    assert attrs.evolve(job, payload_json=added.payload_json) == added
    duplicates: list[Callable[[Job], Job]] = [
        copy.copy,
        copy.deepcopy,
        lambda j: pickle.loads(pickle.dumps(j)),
    ]
    for duplicate in duplicates:
        twin = duplicate(job)
        assert twin == job
        with pytest.raises(PayloadNotLoadedError):
            _ = twin.payload
    (full,) = utils.list_jobs(include_payload=True)
    assert full == added and full.payload == {"big": "x" * 1000}


# -- transactions and pools --------------------------------------------------------------------


def test_reads_in_the_callers_transaction_see_its_jobs_and_commit_nothing(
    utils: WorkerUtils, idle_conn: Conn, conn: Conn
) -> None:
    idle_conn.row_factory = dict_row
    mine = utils.using(idle_conn)
    job = mine.add_raw_job("t", {}, JobSpec(job_key="uncommitted"))
    set_job(idle_conn, utils.schema, job.id, "locked_at = now(), locked_by = 'me'")
    got = mine.get_job(job.id)
    assert got is not None and (got.state, got.locked_by) == (JobState.RUNNING, "me")
    assert mine.get_job_by_key("uncommitted") == got
    assert ids(mine.list_jobs(states=["running"])) == [job.id]
    assert [w.worker_id for w in mine.locked_workers()] == ["me"]
    assert mine.status().totals.running == 1
    assert idle_conn.info.transaction_status == pq.TransactionStatus.INTRANS
    assert idle_conn.row_factory is dict_row
    # Nobody else sees it: nothing was committed.
    assert utils.get_job(job.id) is None and utils.list_jobs() == []
    idle_conn.rollback()
    assert mine.get_job(job.id) is None


def test_pool_reads_leave_no_transaction_open(
    pool: ConnectionPool[Any], utils: WorkerUtils
) -> None:
    job = utils.add_raw_job("t", {}, JobSpec(job_key="k"))
    pooled = WorkerUtils(pool, schema=utils.schema)
    assert pooled.get_job(job.id) == job and pooled.get_job_by_key("k") == job
    assert ids(pooled.list_jobs()) == [job.id]
    assert pooled.locked_workers() == []
    with pool.connection() as conn:
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.autocommit is False


# -- the state of jobs the other operations return ---------------------------------------------


def test_every_operation_returning_jobs_gives_their_state(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    ready = utils.add_raw_job("t", {}, JobSpec(job_key="ready"))
    later = utils.add_raw_job("t", {}, JobSpec(run_at=FUTURE))
    assert (ready.state, later.state) == (JobState.READY, JobState.SCHEDULED)
    batch = utils.add_raw_jobs([RawJobSpec("u", {}, JobSpec(run_at=FUTURE)), RawJobSpec("v")])
    assert {job.task_identifier: job.state for job in batch} == {
        "u": JobState.SCHEDULED,
        "v": JobState.READY,
    }
    (moved,) = utils.reschedule_jobs([ready.id], RescheduleOptions(run_at=FUTURE))
    assert moved.state is JobState.SCHEDULED
    (retry,) = utils.reschedule_jobs([ready.id], RescheduleOptions(attempts=2))
    assert retry.state is JobState.RETRYING
    (failed,) = utils.permanently_fail_jobs([later.id], "no")
    assert failed.state is JobState.PERMANENTLY_FAILED
    # Deleted jobs have no state.
    completed = utils.complete_jobs([job.id for job in batch])
    assert len(completed) == 2 and {job.state for job in completed} == {None}
    removed = utils.remove_job("ready")
    assert removed is not None and removed.state is None
    # A running job is detached, not deleted: it is still running.
    running = utils.add_raw_job("t", {}, JobSpec(job_key="running"))
    set_job(conn, schema, running.id, "locked_at = now(), locked_by = 'w'")
    detached = utils.remove_job("running")
    assert detached is not None and detached.state is JobState.RUNNING and detached.key is None
    assert utils.get_job(running.id) == attrs.evolve(detached)


# -- locked workers ----------------------------------------------------------------------------


def test_locked_workers_count_job_and_queue_locks_oldest_first(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    jobs = utils.add_raw_jobs([RawJobSpec("t", {}, JobSpec(queue_name=f"q{n}")) for n in range(5)])
    a1, a2, b1, _, _ = sorted(ids(jobs))
    for job_id in (a1, a2):
        set_job(conn, schema, job_id, "locked_at = now(), locked_by = 'a'")
    set_job(conn, schema, b1, "locked_at = now() - interval '5 hours', locked_by = 'b'")
    execute(
        conn,
        schema,
        "update {s}._private_job_queues set locked_by = q.by, locked_at = now() - q.age"
        " from (values ('q0', 'a', interval '2 hours'), ('q3', 'c', interval '10 minutes'))"
        " as q(name, by, age) where queue_name = q.name",
    )
    workers = utils.locked_workers()
    assert [(w.worker_id, w.job_count, w.queue_count) for w in workers] == [
        ("b", 1, 0),
        ("a", 2, 1),
        ("c", 0, 1),
    ]
    now = dt.datetime.now(UTC)
    ages = [now - w.oldest_locked_at for w in workers]
    assert ages[0] > dt.timedelta(hours=4, minutes=59) and ages[0] < dt.timedelta(
        hours=5, minutes=5
    )
    assert dt.timedelta(hours=1, minutes=59) < ages[1] < dt.timedelta(hours=2, minutes=5)
    assert all(w.oldest_locked_at.tzinfo is UTC for w in workers)

    def older(**delta: float) -> list[str]:
        return [w.worker_id for w in utils.locked_workers(older_than=dt.timedelta(**delta))]

    assert older(hours=1) == ["b", "a"]
    assert older(hours=4) == ["b"]
    assert older(hours=6) == []
    assert older(seconds=0) == ["b", "a", "c"]
    utils.force_unlock_workers(["b"])
    assert [w.worker_id for w in utils.locked_workers()] == ["a", "c"]


# -- aged cleanup ------------------------------------------------------------------------------


def test_cleanup_older_than_keeps_recent_failures(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    jobs = utils.add_raw_jobs([RawJobSpec("t", {"n": n}) for n in range(5)])
    old, week, recent, locked, ready = sorted(ids(jobs))
    for job_id, age in ((old, "10 days"), (week, "6 days"), (recent, "0 days")):
        set_job(
            conn,
            schema,
            job_id,
            f"attempts = max_attempts, updated_at = now() - interval '{age}',"
            f" run_at = now() - interval '{age}'",
        )
    set_job(
        conn,
        schema,
        locked,
        "attempts = max_attempts, updated_at = now() - interval '30 days',"
        " run_at = now() - interval '30 days', locked_at = now(), locked_by = 'w'",
    )
    task = CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS
    seven_days = dt.timedelta(days=7)
    assert utils.cleanup([task], older_than=seven_days) == {task: 1}
    assert utils.get_job(old) is None and utils.get_job(week) is not None
    # Only that task is aged: the collections run as before beside it.
    everything = [task, CleanupTask.GC_TASK_IDENTIFIERS, CleanupTask.GC_JOB_QUEUES]
    assert utils.cleanup(everything, older_than=seven_days)[task] == 0
    assert utils.cleanup([task], older_than=dt.timedelta(days=5)) == {task: 1}
    assert utils.cleanup([task], older_than=dt.timedelta(0)) == {task: 1}
    # The locked one (running its last attempt) and the ready one stay.
    assert sorted(ids(utils.list_jobs())) == [locked, ready]


# -- bad arguments -----------------------------------------------------------------------------

BAD_CALLS: list[tuple[Callable[[WorkerUtils], object], str]] = [
    (lambda u: u.get_job("1"), r"^job_id: expected an int, got str"),  # type: ignore[arg-type]
    (lambda u: u.get_job(2**63), r"^job_id: .* outside the allowed range"),
    (lambda u: u.get_job_by_key(""), r"^job_key: must not be empty"),
    (lambda u: u.get_job_by_key("k" * 513), r"^job_key: 513 characters, over the limit of 512"),
    (lambda u: u.list_jobs(limit=0), r"^limit: 0 is outside the allowed range 1\.\.10000"),
    (lambda u: u.list_jobs(limit=10_001), r"^limit: 10001 is outside"),
    (lambda u: u.list_jobs(limit=True), r"^limit: expected an int, got bool"),
    (lambda u: u.list_jobs(after_id=-1), r"^after_id: -1 is outside the allowed range 0\.\."),
    (lambda u: u.list_jobs(after_id=1.5), r"^after_id: expected an int, got float"),  # type: ignore[arg-type]
    (lambda u: u.list_jobs(states=["bogus"]), r"^states\[0\]: 'bogus' is not one of 'ready'"),
    (lambda u: u.list_jobs(states="ready"), r"^states: expected an iterable of JobState"),
    (lambda u: u.list_jobs(task_identifiers="t"), r"^task_identifiers: expected an iterable"),
    (lambda u: u.list_jobs(task_identifiers=["t", ""]), r"^task_identifiers\[1\]: must not be"),
    (lambda u: u.list_jobs(queue_names=["q" * 129]), r"^queue_names\[0\]: 129 characters"),
    (lambda u: u.list_jobs(locked_by=""), r"^locked_by: must not be empty"),
    (lambda u: u.list_jobs(include_payload=1), r"^include_payload: expected a bool, got int"),  # type: ignore[arg-type]
    (
        lambda u: u.locked_workers(older_than=dt.timedelta(seconds=-1)),
        r"^older_than: must be a duration >= 0",
    ),
    (lambda u: u.locked_workers(older_than=60), r"^older_than: expected a datetime\.timedelta"),  # type: ignore[arg-type]
    (
        lambda u: u.cleanup(older_than=dt.timedelta(days=-1)),
        r"^older_than: must be a duration >= 0",
    ),
    (lambda u: u.cleanup(older_than="7d"), r"^older_than: expected a datetime\.timedelta"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_arguments_are_refused_before_any_sql(
    conn: Conn, schema: str, call: Callable[[WorkerUtils], object], message: str
) -> None:
    # The schema does not exist: a statement sent would raise SchemaMissingError instead.
    with pytest.raises(InvalidJobSpec, match=message):
        call(WorkerUtils(conn, schema=schema))


def test_reads_on_a_missing_schema_raise_schema_missing_error(conn: Conn, schema: str) -> None:
    utils = WorkerUtils(conn, schema=schema)
    for call in (
        lambda: utils.get_job(1),
        lambda: utils.get_job_by_key("k"),
        lambda: utils.list_jobs(states=["running"], task_identifiers=["t"]),
        lambda: utils.locked_workers(),
    ):
        with pytest.raises(SchemaMissingError, match="run migrate"):
            call()
