"""Job keys (docs/schema.md §2): what REPLACE, PRESERVE_RUN_AT and UNSAFE_DEDUPE do to an existing
job with the same key, whatever state it is in, and how the library handles the job-key race.

The matrix runs through both entry points (``add_raw_job`` and ``add_raw_jobs``) where the mode
allows it: they call different database functions, and the contract is the same.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    DatabaseError,
    InvalidJobSpec,
    Job,
    JobKeyMode,
    JobKeyRaceError,
    JobSpec,
    RawJobSpec,
    WorkerUtils,
)
from graphile_worker_utils._batch import statement_runs as _statement_runs
from tests._helpers import enqueue, table
from tests._job_keys import (
    KEY,
    LOCKED,
    PENDING,
    PERMANENTLY_FAILED,
    RETRYING,
    T_NEW,
    T_OLD,
    assert_rescheduled_after_the_race,
    existing_job,
    job_row,
    job_rows,
    race_for_key,
    replacement,
    update_job,
)

Connection = psycopg.Connection[Any]

REPLACING_MODES = pytest.mark.parametrize(
    "mode", [JobKeyMode.REPLACE, JobKeyMode.PRESERVE_RUN_AT], ids=["replace", "preserve_run_at"]
)
BOTH_ENTRY_POINTS = pytest.mark.parametrize("via", ["add_raw_job", "add_raw_jobs"])


# --------------------------------------------------------------------------------------------
# Helpers


def assert_has_new_values(job: Job, run_at: dt.datetime = T_NEW) -> None:
    assert job.key == KEY
    assert job.payload == {"v": "new"}
    assert job.run_at == run_at
    assert job.priority == 2
    assert job.max_attempts == 7
    assert job.flags == ["new"]
    assert job.attempts == 0
    assert job.last_error is None
    assert job.task_identifier == "send_invoice"
    assert job.queue_name == "billing"


# --------------------------------------------------------------------------------------------
# REPLACE


@BOTH_ENTRY_POINTS
def test_replace_updates_a_pending_job_in_place(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)

    new = enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(JobKeyMode.REPLACE))

    assert new.id == old.id
    assert new.revision == 1
    assert_has_new_values(new)
    (row,) = job_rows(conn, schema)
    assert row["id"] == old.id
    assert row["revision"] == 1
    assert row["payload"] == {"v": "new"}
    assert row["run_at"] == T_NEW
    assert row["flags"] == {"new": True}


@BOTH_ENTRY_POINTS
def test_replace_resets_a_retrying_job_to_a_fresh_pending_job(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = existing_job(utils, conn, schema, RETRYING)

    new = enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(JobKeyMode.REPLACE))

    assert new.id == old.id
    assert new.revision == 1
    assert_has_new_values(new)
    (row,) = job_rows(conn, schema)
    assert (row["attempts"], row["last_error"], row["run_at"]) == (0, None, T_NEW)


@BOTH_ENTRY_POINTS
def test_replace_is_the_default_job_key_mode(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = existing_job(utils, conn, schema, RETRYING)

    new = enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(None))

    assert (new.id, new.revision) == (old.id, 1)
    assert_has_new_values(new)


@BOTH_ENTRY_POINTS
def test_every_replace_increments_the_revision(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)

    enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(JobKeyMode.REPLACE))
    new = enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(JobKeyMode.REPLACE))

    assert (new.id, new.revision) == (old.id, 2)
    assert [row["revision"] for row in job_rows(conn, schema)] == [2]


@REPLACING_MODES
@BOTH_ENTRY_POINTS
def test_replacing_a_locked_job_detaches_it_and_creates_a_new_job(
    utils: WorkerUtils, conn: Connection, schema: str, via: str, mode: JobKeyMode
) -> None:
    old = existing_job(utils, conn, schema, LOCKED)

    new = enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(mode))

    assert new.id != old.id
    assert new.revision == 0
    assert_has_new_values(new)
    detached, created = job_rows(conn, schema)
    assert detached["id"] == old.id
    # It finishes the run it is in and is never retried: no key, no attempts left.
    assert detached["key"] is None
    assert detached["attempts"] == detached["max_attempts"] == 5
    assert detached["locked_by"] == "worker-1"
    assert detached["payload"] == {"v": "old"}
    assert detached["run_at"] == T_OLD
    assert detached["revision"] == 0
    assert created["id"] == new.id
    assert (created["key"], created["revision"], created["attempts"]) == (KEY, 0, 0)
    assert created["locked_at"] is None


@REPLACING_MODES
@BOTH_ENTRY_POINTS
def test_replacing_a_permanently_failed_job_detaches_it_and_creates_a_new_job(
    utils: WorkerUtils, conn: Connection, schema: str, via: str, mode: JobKeyMode
) -> None:
    old = existing_job(utils, conn, schema, PERMANENTLY_FAILED)

    new = enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(mode))

    assert new.id != old.id
    assert new.revision == 0
    assert_has_new_values(new)
    detached, created = job_rows(conn, schema)
    assert detached["id"] == old.id
    assert detached["key"] is None
    assert detached["attempts"] == detached["max_attempts"] == 5
    assert detached["last_error"] == "dead"
    assert detached["payload"] == {"v": "old"}
    assert created["id"] == new.id
    assert (created["key"], created["revision"], created["attempts"]) == (KEY, 0, 0)


def test_a_detached_job_is_updated_at_the_time_it_was_detached(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    old = existing_job(utils, conn, schema, LOCKED)
    update_job(conn, schema, old.id, "updated_at = now() - interval '1 day'")
    before = conn.execute("select now()").fetchone()[0]  # type: ignore[index]

    utils.add_raw_job("send_invoice", {"v": "new"}, replacement(JobKeyMode.REPLACE))

    assert job_row(conn, schema, old.id)["updated_at"] >= before


# --------------------------------------------------------------------------------------------
# PRESERVE_RUN_AT


@BOTH_ENTRY_POINTS
def test_preserve_run_at_keeps_the_run_at_of_a_pending_job(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)

    new = enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(JobKeyMode.PRESERVE_RUN_AT))

    assert (new.id, new.revision) == (old.id, 1)
    assert_has_new_values(new, run_at=T_OLD)
    (row,) = job_rows(conn, schema)
    assert row["run_at"] == T_OLD


@BOTH_ENTRY_POINTS
def test_preserve_run_at_keeps_the_run_at_when_no_new_run_at_is_given(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)

    new = enqueue(
        utils,
        via,
        "send_invoice",
        {"v": "new"},
        replacement(JobKeyMode.PRESERVE_RUN_AT, run_at=None),
    )

    assert (new.id, new.run_at) == (old.id, T_OLD)


@BOTH_ENTRY_POINTS
def test_preserve_run_at_takes_the_new_run_at_of_a_retrying_job(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = existing_job(utils, conn, schema, RETRYING)

    new = enqueue(utils, via, "send_invoice", {"v": "new"}, replacement(JobKeyMode.PRESERVE_RUN_AT))

    # Only a job that has not been attempted keeps its run_at; a retrying one is replaced.
    assert (new.id, new.revision) == (old.id, 1)
    assert_has_new_values(new, run_at=T_NEW)
    (row,) = job_rows(conn, schema)
    assert (row["run_at"], row["attempts"], row["last_error"]) == (T_NEW, 0, None)


def keyed(key: str, mode: JobKeyMode | None, n: int = 0, **fields: Any) -> RawJobSpec:
    return RawJobSpec("a", {"n": n}, JobSpec(job_key=key, job_key_mode=mode, **fields))


def run_ats(conn: Connection, schema: str) -> dict[str | None, dt.datetime]:
    return {row["key"]: row["run_at"] for row in job_rows(conn, schema)}


def test_each_keyed_job_of_a_batch_follows_its_own_job_key_mode(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    for key in ("k1", "k2", "k4", "k5"):
        utils.add_raw_job("a", {}, JobSpec(job_key=key, run_at=T_OLD))

    jobs = utils.add_raw_jobs(
        [
            keyed("k1", JobKeyMode.REPLACE, run_at=T_NEW),
            keyed("k2", JobKeyMode.PRESERVE_RUN_AT, run_at=T_NEW),
            keyed("k3", JobKeyMode.PRESERVE_RUN_AT, run_at=T_NEW),  # new: takes its run_at
            keyed("k4", None, run_at=T_NEW),  # None is REPLACE
            keyed("k5", JobKeyMode.PRESERVE_RUN_AT, run_at=T_NEW),
        ]
    )

    expected = {"k1": T_NEW, "k2": T_OLD, "k3": T_NEW, "k4": T_NEW, "k5": T_OLD}
    assert {job.key: job.run_at for job in jobs} == expected
    assert run_ats(conn, schema) == expected


def test_a_keyless_preserve_run_at_in_a_batch_changes_no_other_job(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    # graphile-worker takes PRESERVE_RUN_AT for a whole add_jobs call: sent as one flag, this
    # keyless spec used to keep the old run_at of the keyed job it has nothing to do with.
    old = utils.add_raw_job("a", {}, JobSpec(job_key="k1", run_at=T_OLD))

    jobs = utils.add_raw_jobs(
        [
            RawJobSpec("a", {"n": 0}, JobSpec(job_key_mode=JobKeyMode.PRESERVE_RUN_AT)),
            keyed("k1", None, 1, run_at=T_NEW),
        ]
    )

    by_n = {job.payload["n"]: job for job in jobs}
    assert (by_n[1].id, by_n[1].run_at) == (old.id, T_NEW)
    assert by_n[0].key is None
    assert run_ats(conn, schema)["k1"] == T_NEW


def test_a_batch_of_mixed_modes_is_all_or_nothing(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    # Only the database knows the last job is bad: a constraint added for the test. The
    # replacement of k1 went in an earlier statement of the same transaction.
    old = utils.add_raw_job("a", {"n": 0}, JobSpec(job_key="k1", run_at=T_OLD))
    conn.execute(
        sql.SQL(
            "alter table {} add constraint no_poison check (payload::text <> '{{\"n\":-1}}')"
        ).format(table(schema, "_private_jobs"))
    )

    with pytest.raises(DatabaseError, match="no_poison"):
        utils.add_raw_jobs(
            [
                keyed("k1", JobKeyMode.REPLACE, 1, run_at=T_NEW),
                keyed("k2", JobKeyMode.PRESERVE_RUN_AT, -1),
            ]
        )

    (row,) = job_rows(conn, schema)
    assert (row["id"], row["run_at"], row["payload"], row["revision"]) == (
        old.id,
        T_OLD,
        {"n": 0},
        0,
    )


def test_a_batch_of_mixed_modes_joins_the_callers_transaction(
    utils: WorkerUtils, conn: Connection, schema: str, caller_conn: Connection
) -> None:
    utils.add_raw_job("a", {}, JobSpec(job_key="k1", run_at=T_OLD))
    caller_conn.execute("select 1")

    jobs = WorkerUtils(caller_conn, schema=schema).add_raw_jobs(
        [
            keyed("k1", JobKeyMode.PRESERVE_RUN_AT, run_at=T_NEW),
            keyed("k2", JobKeyMode.REPLACE, run_at=T_NEW),
        ]
    )

    assert {job.key: job.run_at for job in jobs} == {"k1": T_OLD, "k2": T_NEW}
    assert caller_conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    caller_conn.rollback()
    assert run_ats(conn, schema) == {"k1": T_OLD}


P, R, NOKEY = True, False, None  # a keyed PRESERVE_RUN_AT job, a keyed REPLACE one, keyless


@pytest.mark.parametrize(
    ("preserve", "limit", "runs"),
    [
        pytest.param([], 3, [], id="empty"),
        pytest.param([NOKEY] * 4, 10, [(0, 4, False)], id="keyless"),
        pytest.param([NOKEY, P, NOKEY, P], 10, [(0, 4, True)], id="keyless-joins-preserve"),
        pytest.param([P, NOKEY, R, NOKEY], 10, [(0, 2, True), (2, 4, False)], id="mixed"),
        pytest.param([R, P, R], 10, [(0, 1, False), (1, 2, True), (2, 3, False)], id="alternate"),
        pytest.param([P] * 5, 2, [(0, 2, True), (2, 4, True), (4, 5, True)], id="slices"),
        pytest.param([NOKEY, NOKEY, R, P], 2, [(0, 2, False), (2, 3, False), (3, 4, True)]),
    ],
)
def test_a_batch_is_split_into_runs_that_agree_on_preserve_run_at(
    preserve: list[bool | None], limit: int, runs: list[tuple[int, int, bool]]
) -> None:
    assert _statement_runs(preserve, limit) == runs


def test_a_batch_without_preserve_run_at_replaces_every_run_at(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    utils.add_raw_job("a", {}, JobSpec(job_key="k1", run_at=T_OLD))
    utils.add_raw_job("a", {}, JobSpec(job_key="k2", run_at=T_OLD))

    utils.add_raw_jobs(
        [
            RawJobSpec(
                "a", {}, JobSpec(job_key="k1", run_at=T_NEW, job_key_mode=JobKeyMode.REPLACE)
            ),
            RawJobSpec("a", {}, JobSpec(job_key="k2", run_at=T_NEW)),
        ]
    )

    assert {row["key"]: row["run_at"] for row in job_rows(conn, schema)} == {
        "k1": T_NEW,
        "k2": T_NEW,
    }


# --------------------------------------------------------------------------------------------
# UNSAFE_DEDUPE


@pytest.mark.parametrize("state", [PENDING, RETRYING, LOCKED, PERMANENTLY_FAILED])
def test_unsafe_dedupe_keeps_the_existing_job_whatever_its_state_and_bumps_its_revision(
    utils: WorkerUtils, conn: Connection, schema: str, state: str
) -> None:
    old = existing_job(utils, conn, schema, state)
    before = job_row(conn, schema, old.id)

    new = utils.add_raw_job("send_invoice", {"v": "new"}, replacement(JobKeyMode.UNSAFE_DEDUPE))

    assert new.id == old.id
    assert new.revision == 1
    assert new.payload == {"v": "old"}
    assert new.run_at == T_OLD
    assert (new.priority, new.max_attempts, new.flags) == (1, 5, ["old"])
    assert new.attempts == before["attempts"]
    assert new.last_error == before["last_error"]
    assert new.locked_by == before["locked_by"]
    assert new.key == KEY
    (after,) = job_rows(conn, schema)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"revision", "updated_at"}


def test_unsafe_dedupe_inserts_a_job_when_none_has_the_key(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    new = utils.add_raw_job("send_invoice", {"v": "new"}, replacement(JobKeyMode.UNSAFE_DEDUPE))

    assert new.revision == 0
    assert_has_new_values(new)
    assert [row["id"] for row in job_rows(conn, schema)] == [new.id]


def test_unsafe_dedupe_returns_the_existing_job_labelled_with_its_own_task_and_queue(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)

    new = utils.add_raw_job(
        "other_task",
        {},
        JobSpec(job_key=KEY, queue_name="other_queue", job_key_mode=JobKeyMode.UNSAFE_DEDUPE),
    )

    assert new.id == old.id
    assert (new.task_identifier, new.queue_name) == ("send_invoice", "billing")


# --------------------------------------------------------------------------------------------
# Payload merging


@BOTH_ENTRY_POINTS
def test_replace_concatenates_array_payloads_old_elements_first(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = utils.add_raw_job("digest", [1, {"a": 2}], JobSpec(job_key=KEY))

    new = enqueue(utils, via, "digest", [3, "x"], JobSpec(job_key=KEY))

    assert new.id == old.id
    assert new.payload == [1, {"a": 2}, 3, "x"]
    assert job_row(conn, schema, old.id)["payload"] == [1, {"a": 2}, 3, "x"]


@BOTH_ENTRY_POINTS
def test_replace_merges_arrays_again_on_every_replace(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    utils.add_raw_job("digest", [1], JobSpec(job_key=KEY))

    enqueue(utils, via, "digest", [2], JobSpec(job_key=KEY))
    new = enqueue(utils, via, "digest", [3], JobSpec(job_key=KEY))

    assert new.payload == [1, 2, 3]


@pytest.mark.parametrize(
    ("old_payload", "new_payload"),
    [({"a": 1}, [2]), ([1], {"b": 2}), ([1], "text"), ("text", [1])],
    ids=["object-then-array", "array-then-object", "array-then-string", "string-then-array"],
)
@BOTH_ENTRY_POINTS
def test_replace_takes_the_new_payload_unless_both_are_arrays(
    utils: WorkerUtils,
    conn: Connection,
    schema: str,
    via: str,
    old_payload: Any,
    new_payload: Any,
) -> None:
    old = utils.add_raw_job("digest", old_payload, JobSpec(job_key=KEY))

    new = enqueue(utils, via, "digest", new_payload, JobSpec(job_key=KEY))

    assert new.payload == new_payload
    assert job_row(conn, schema, old.id)["payload"] == new_payload


def test_a_new_job_replacing_a_locked_one_does_not_inherit_its_array_payload(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    old = utils.add_raw_job("digest", [1], JobSpec(job_key=KEY))
    update_job(conn, schema, old.id, "locked_at = now(), locked_by = 'worker-1'")

    new = utils.add_raw_job("digest", [2], JobSpec(job_key=KEY))

    assert new.id != old.id
    assert new.payload == [2]
    assert job_row(conn, schema, old.id)["payload"] == [1]


# --------------------------------------------------------------------------------------------
# One key across task identifiers and queues


@BOTH_ENTRY_POINTS
def test_replace_moves_a_keyed_job_to_a_new_task_identifier_and_queue(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = utils.add_raw_job("task_a", {}, JobSpec(job_key=KEY, queue_name="queue_a"))

    new = enqueue(utils, via, "task_b", {}, JobSpec(job_key=KEY, queue_name="queue_b"))

    assert new.id == old.id
    assert (new.task_identifier, new.queue_name) == ("task_b", "queue_b")
    row = job_row(conn, schema, old.id)
    assert (row["task_identifier"], row["queue_name"]) == ("task_b", "queue_b")
    assert (new.task_id, new.job_queue_id) == (row["task_id"], row["job_queue_id"])


@BOTH_ENTRY_POINTS
def test_replace_moves_a_keyed_job_to_an_existing_task_identifier_and_queue(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    utils.add_raw_job("task_b", {}, JobSpec(queue_name="queue_b"))
    old = utils.add_raw_job("task_a", {}, JobSpec(job_key=KEY, queue_name="queue_a"))

    new = enqueue(utils, via, "task_b", {}, JobSpec(job_key=KEY, queue_name="queue_b"))

    assert new.id == old.id
    assert (new.task_identifier, new.queue_name) == ("task_b", "queue_b")
    row = job_row(conn, schema, old.id)
    assert (row["task_identifier"], row["queue_name"]) == ("task_b", "queue_b")


@BOTH_ENTRY_POINTS
def test_replace_without_a_queue_takes_the_job_out_of_its_queue(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    old = utils.add_raw_job("task_a", {}, JobSpec(job_key=KEY, queue_name="queue_a"))

    new = enqueue(utils, via, "task_a", {}, JobSpec(job_key=KEY))

    assert new.id == old.id
    assert (new.queue_name, new.job_queue_id) == (None, None)
    assert job_row(conn, schema, old.id)["job_queue_id"] is None


# --------------------------------------------------------------------------------------------
# The job-key race: a worker locks the keyed job between add_jobs' detach step and its insert


def test_add_raw_job_losing_the_key_race_in_a_callers_transaction_raises_job_key_race_error(
    utils: WorkerUtils, conn: Connection, caller_conn: Connection, schema: str, pg_dsn: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)
    in_transaction = utils.using(caller_conn)

    outcome = race_for_key(
        pg_dsn,
        schema,
        KEY,
        lambda: in_transaction.add_raw_job("send_invoice", {"v": "new"}, replacement(None)),
    )

    assert outcome.result is None, f"expected JobKeyRaceError, got {outcome.result!r}"
    assert isinstance(outcome.error, JobKeyRaceError), repr(outcome.error)
    assert KEY in str(outcome.error)
    caller_conn.rollback()
    (row,) = job_rows(conn, schema)
    assert (row["id"], row["key"], row["locked_by"]) == (old.id, KEY, "racing-worker")


def test_add_raw_job_losing_the_key_race_on_an_autocommit_connection_is_retried(
    utils: WorkerUtils, conn: Connection, schema: str, pg_dsn: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)

    with psycopg.connect(pg_dsn, autocommit=True) as own_conn:
        racing = WorkerUtils(own_conn, schema=schema)
        outcome = race_for_key(
            pg_dsn,
            schema,
            KEY,
            lambda: racing.add_raw_job("send_invoice", {"v": "new"}, replacement(None)),
        )

    assert outcome.error is None, repr(outcome.error)
    assert_rescheduled_after_the_race(conn, schema, old, outcome.result)


def test_add_raw_job_losing_the_key_race_on_a_pool_is_retried(
    utils: WorkerUtils, conn: Connection, pool: ConnectionPool[Any], schema: str, pg_dsn: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)
    pooled = WorkerUtils(pool, schema=schema)

    outcome = race_for_key(
        pg_dsn,
        schema,
        KEY,
        lambda: pooled.add_raw_job("send_invoice", {"v": "new"}, replacement(None)),
    )

    assert outcome.error is None, repr(outcome.error)
    assert_rescheduled_after_the_race(conn, schema, old, outcome.result)


def test_add_raw_jobs_losing_the_key_race_in_a_callers_transaction_raises_job_key_race_error(
    utils: WorkerUtils, conn: Connection, caller_conn: Connection, schema: str, pg_dsn: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)
    in_transaction = utils.using(caller_conn)
    batch = [
        RawJobSpec("send_invoice", {"v": "new"}, replacement(None)),
        RawJobSpec("unkeyed", {"v": "other"}),
    ]

    outcome = race_for_key(pg_dsn, schema, KEY, lambda: in_transaction.add_raw_jobs(batch))

    assert outcome.result is None, f"expected JobKeyRaceError, got {outcome.result!r}"
    assert isinstance(outcome.error, JobKeyRaceError), repr(outcome.error)
    assert isinstance(outcome.error.__cause__, psycopg.Error)
    caller_conn.rollback()
    assert [row["id"] for row in job_rows(conn, schema)] == [old.id]


def test_add_raw_jobs_losing_the_key_race_with_autocommit_writes_nothing_then_retries(
    utils: WorkerUtils, conn: Connection, schema: str, pg_dsn: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)
    batch = [
        RawJobSpec("send_invoice", {"v": "new"}, replacement(None)),
        RawJobSpec("unkeyed", {"v": "other"}),
    ]

    with psycopg.connect(pg_dsn, autocommit=True) as own_conn:
        racing = WorkerUtils(own_conn, schema=schema)
        outcome = race_for_key(pg_dsn, schema, KEY, lambda: racing.add_raw_jobs(batch))

    assert outcome.error is None, repr(outcome.error)
    by_key = {job.key: job for job in outcome.result}
    assert set(by_key) == {KEY, None}
    # The lost attempt failed as a whole: the unkeyed job exists once, not twice.
    assert [row["payload"] for row in job_rows(conn, schema)].count({"v": "other"}) == 1
    rows = {row["id"]: row for row in job_rows(conn, schema)}
    assert set(rows) == {old.id, by_key[KEY].id, by_key[None].id}
    assert (rows[old.id]["key"], rows[old.id]["locked_by"]) == (None, "racing-worker")
    assert rows[old.id]["attempts"] == rows[old.id]["max_attempts"]
    assert rows[by_key[KEY].id]["payload"] == {"v": "new"}


def test_add_raw_jobs_losing_the_key_race_on_a_pool_is_retried(
    utils: WorkerUtils, conn: Connection, pool: ConnectionPool[Any], schema: str, pg_dsn: str
) -> None:
    old = existing_job(utils, conn, schema, PENDING)
    pooled = WorkerUtils(pool, schema=schema)

    outcome = race_for_key(
        pg_dsn,
        schema,
        KEY,
        lambda: pooled.add_raw_jobs([RawJobSpec("send_invoice", {"v": "new"}, replacement(None))]),
    )

    assert outcome.error is None, repr(outcome.error)
    (new,) = outcome.result
    assert_rescheduled_after_the_race(conn, schema, old, new)


# --------------------------------------------------------------------------------------------
# What the database refuses about keys is refused before it is asked


def test_two_specs_with_the_same_key_in_a_batch_are_refused_before_any_sql(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    with pytest.raises(InvalidJobSpec, match="job_key") as raised:
        utils.add_raw_jobs(
            [RawJobSpec("a", {}, JobSpec(job_key=KEY)), RawJobSpec("b", {}, JobSpec(job_key=KEY))]
        )

    assert not isinstance(raised.value, DatabaseError)
    assert "jobs[1]" in str(raised.value)
    assert job_rows(conn, schema) == []
