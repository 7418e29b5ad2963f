"""Batches: add_raw_jobs and add_jobs enqueue many jobs in one statement, and every returned job
carries its own task identifier and queue name, whatever order the database returns rows in."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, ClassVar

import attrs
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from graphile_worker_utils import InvalidJobSpec, Job, JobSpec, RawJobSpec, WorkerUtils
from tests._helpers import Database, table

Connection = psycopg.Connection[Any]
UTC = dt.timezone.utc


def view_labels(conn: Connection, schema: str) -> dict[int, tuple[str, str | None]]:
    """(task_identifier, queue_name) of every job, by id, from the ``jobs`` view."""
    rows = conn.execute(
        sql.SQL("select id, task_identifier, queue_name from {}").format(table(schema, "jobs"))
    ).fetchall()
    return {job_id: (identifier, queue) for job_id, identifier, queue in rows}


def stored_ids(conn: Connection, schema: str, name: str) -> dict[str, int]:
    column = "identifier" if name == "_private_tasks" else "queue_name"
    rows = conn.execute(
        sql.SQL("select {}, id from {}").format(sql.Identifier(column), table(schema, name))
    ).fetchall()
    return dict(rows)


def assert_labelled_like_the_database(conn: Connection, schema: str, jobs: list[Job]) -> None:
    in_database = view_labels(conn, schema)
    tasks = stored_ids(conn, schema, "_private_tasks")
    queues = stored_ids(conn, schema, "_private_job_queues")
    for job in jobs:
        assert (job.task_identifier, job.queue_name) == in_database[job.id], job
        assert job.task_id == tasks[job.task_identifier]
        assert job.job_queue_id == (None if job.queue_name is None else queues[job.queue_name])


def assert_batch_labelled_as_planned(
    utils: WorkerUtils, conn: Connection, schema: str, plan: list[tuple[str, str | None]]
) -> None:
    """Enqueue one job per (identifier, queue) of ``plan`` in one batch; check every label."""
    jobs = utils.add_raw_jobs(
        RawJobSpec(identifier, {"i": i}, JobSpec(queue_name=queue))
        for i, (identifier, queue) in enumerate(plan)
    )
    for job in jobs:
        assert (job.task_identifier, job.queue_name) == plan[job.payload["i"]]
    assert_labelled_like_the_database(conn, schema, jobs)


def make_existing(utils: WorkerUtils, identifiers: list[str], queues: list[str]) -> None:
    """Create tasks and queues (through jobs that are then completed)."""
    jobs = [RawJobSpec(identifier, {}) for identifier in identifiers]
    jobs += [RawJobSpec(identifiers[0], {}, JobSpec(queue_name=queue)) for queue in queues]
    utils.complete_jobs([job.id for job in utils.add_raw_jobs(jobs)])


# --------------------------------------------------------------------------------------------
# Labels


def test_every_job_of_a_mixed_batch_gets_its_own_task_and_queue_even_out_of_input_order(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    make_existing(utils, ["existing_a", "existing_b"], ["existing_q"])
    identifiers = ["existing_a", "new_a", "existing_b", "new_b", "new_c"]
    queues: list[str | None] = [None, "existing_q", "new_q1", "new_q2"]
    expected = {i: (identifiers[i % 5], queues[i % 4]) for i in range(60)}
    batch = [
        RawJobSpec(identifier, {"i": i}, JobSpec(queue_name=queue, priority=i % 7))
        for i, (identifier, queue) in expected.items()
    ]

    jobs = utils.add_raw_jobs(batch)

    order = [job.payload["i"] for job in jobs]
    assert sorted(order) == list(range(60))
    assert order != list(range(60)), "this case needs rows returned out of input order"
    for job in jobs:
        assert (job.task_identifier, job.queue_name) == expected[job.payload["i"]]
        assert job.priority == job.payload["i"] % 7
    assert_labelled_like_the_database(conn, schema, jobs)


@pytest.mark.parametrize(
    ("new_identifiers", "new_queues"),
    [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1), (1, 2), (2, 2), (3, 0), (0, 3)],
    ids=lambda n: str(n),
)
def test_a_batch_is_labelled_whatever_number_of_tasks_and_queues_it_creates(
    utils: WorkerUtils, conn: Connection, schema: str, new_identifiers: int, new_queues: int
) -> None:
    make_existing(utils, ["old_task"], ["old_queue"])
    identifiers = ["old_task"] + [f"new_task_{n}" for n in range(new_identifiers)]
    queues: list[str | None] = [None, "old_queue"] + [f"new_queue_{n}" for n in range(new_queues)]
    expected = {
        i: (identifiers[i % len(identifiers)], queues[(i // 2) % len(queues)]) for i in range(24)
    }

    jobs = utils.add_raw_jobs(
        RawJobSpec(identifier, {"i": i}, JobSpec(queue_name=queue))
        for i, (identifier, queue) in expected.items()
    )

    assert len(jobs) == 24
    for job in jobs:
        assert (job.task_identifier, job.queue_name) == expected[job.payload["i"]]
    assert_labelled_like_the_database(conn, schema, jobs)


def test_a_batch_with_exactly_one_new_identifier_is_labelled_correctly(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    make_existing(utils, ["old_a", "old_b"], ["old_q"])
    plan = [("old_a", None), ("solo", "old_q"), ("old_b", None), ("solo", None), ("old_a", "old_q")]

    assert_batch_labelled_as_planned(utils, conn, schema, plan)


def test_a_batch_into_an_empty_schema_is_labelled_correctly(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    plan = [("t1", "q1"), ("t2", "q2"), ("t1", None), ("t3", "q1")]

    assert_batch_labelled_as_planned(utils, conn, schema, plan)


def test_a_batch_in_a_callers_transaction_is_labelled_like_what_it_will_commit(
    utils: WorkerUtils, pg_dsn: str, schema: str
) -> None:
    with psycopg.connect(pg_dsn) as caller:
        caller.execute("select 1")
        jobs = WorkerUtils(caller, schema=schema).add_raw_jobs(
            RawJobSpec(f"task_{i % 3}", {"i": i}, JobSpec(queue_name=f"queue_{i % 2}"))
            for i in range(9)
        )
        assert_labelled_like_the_database(caller, schema, jobs)
        caller.rollback()


def test_a_batch_through_a_pool_is_labelled_correctly(
    utils: WorkerUtils, conn: Connection, pg_dsn: str, schema: str
) -> None:
    with ConnectionPool(pg_dsn, min_size=1, max_size=1) as pool:
        jobs = WorkerUtils(pool, schema=schema).add_raw_jobs(
            RawJobSpec(f"task_{i % 3}", {"i": i}, JobSpec(queue_name=f"queue_{i % 4}"))
            for i in range(12)
        )

    for job in jobs:
        i = job.payload["i"]
        assert (job.task_identifier, job.queue_name) == (f"task_{i % 3}", f"queue_{i % 4}")
    assert_labelled_like_the_database(conn, schema, jobs)


def test_each_job_of_a_batch_gets_its_own_spec(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    at = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    specs = {
        "k0": JobSpec(job_key="k0", priority=-3, max_attempts=2, run_at=at, flags=["x"]),
        "k1": JobSpec(job_key="k1", queue_name="q", run_at=at + dt.timedelta(days=1)),
        "k2": JobSpec(job_key="k2", max_attempts=9, priority=4),
    }

    jobs = utils.add_raw_jobs(RawJobSpec("t", {"key": key}, spec) for key, spec in specs.items())

    by_key = {job.key: job for job in jobs}
    assert set(by_key) == set(specs)
    assert (by_key["k0"].priority, by_key["k0"].max_attempts) == (-3, 2)
    assert (by_key["k0"].run_at, by_key["k0"].flags) == (at, ["x"])
    assert (by_key["k1"].queue_name, by_key["k1"].run_at) == ("q", at + dt.timedelta(days=1))
    assert (by_key["k1"].priority, by_key["k1"].max_attempts, by_key["k1"].flags) == (0, 25, None)
    assert (by_key["k2"].priority, by_key["k2"].max_attempts) == (4, 9)
    for job in jobs:
        assert job.payload == {"key": job.key}
    rows = conn.execute(
        sql.SQL("select key, priority, max_attempts, run_at from {}").format(
            table(schema, "_private_jobs")
        )
    ).fetchall()
    assert {row[0]: row[1:] for row in rows} == {
        job.key: (job.priority, job.max_attempts, job.run_at) for job in jobs
    }


def test_use_local_time_gives_every_unscheduled_job_of_a_batch_one_run_at_from_the_app_clock(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    explicit = dt.datetime(2031, 1, 1, tzinfo=UTC)
    local = WorkerUtils(conn, schema=schema, use_local_time=True)
    before = dt.datetime.now(UTC)

    jobs = local.add_raw_jobs(
        [
            RawJobSpec("a", {"n": 1}),
            RawJobSpec("b", {"n": 2}, JobSpec(run_at=explicit)),
            RawJobSpec("a", {"n": 3}, JobSpec(queue_name="q")),
        ]
    )

    after = dt.datetime.now(UTC)
    run_ats = {job.payload["n"]: job.run_at for job in jobs}
    assert run_ats[2] == explicit
    assert run_ats[1] == run_ats[3]
    assert before <= run_ats[1] <= after


def test_a_batch_notifies_workers_once_with_its_size(fresh_database: Database) -> None:
    # A database of its own: notification channels are shared by every schema of a database.
    with (
        psycopg.connect(fresh_database.dsn, autocommit=True) as owner,
        psycopg.connect(fresh_database.dsn, autocommit=True) as listener,
    ):
        worker_utils = WorkerUtils(owner)
        worker_utils.migrate()
        listener.execute('listen "jobs:insert"')

        worker_utils.add_raw_jobs(RawJobSpec("a", {"i": i}) for i in range(5))

        received = list(listener.notifies(timeout=2.0, stop_after=2))
    assert [json.loads(n.payload)["count"] for n in received] == [5]


# --------------------------------------------------------------------------------------------
# Empty input


def test_an_empty_batch_returns_an_empty_list_without_touching_the_connection(
    pg_dsn: str, schema: str
) -> None:
    closed = psycopg.connect(pg_dsn, autocommit=True)
    closed.close()
    worker_utils = WorkerUtils(closed, schema=schema)

    assert worker_utils.add_raw_jobs([]) == []
    assert worker_utils.add_raw_jobs(iter(())) == []
    assert worker_utils.add_jobs([]) == []


def test_an_empty_batch_does_not_borrow_a_connection_from_the_pool(
    pg_dsn: str, schema: str
) -> None:
    never_opened: ConnectionPool[Any] = ConnectionPool(pg_dsn, open=False)
    worker_utils = WorkerUtils(never_opened, schema=schema)

    assert worker_utils.add_raw_jobs([]) == []
    assert worker_utils.add_jobs([]) == []


def test_an_empty_batch_sends_no_statement(utils: WorkerUtils, pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn) as caller:
        assert WorkerUtils(caller, schema=schema).add_raw_jobs([]) == []

        # A non-autocommit connection opens a transaction on its first statement.
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# --------------------------------------------------------------------------------------------
# Typed tasks


@attrs.frozen
class SendEmail:
    IDENTIFIER: ClassVar[str] = "send_email"
    to: str
    subject: str = "hello"


@dataclasses.dataclass(frozen=True)
class ResizeImage:
    IDENTIFIER: ClassVar[str] = "resize_image"
    url: str
    width: int


class NoIdentifier:
    pass


def test_add_jobs_enqueues_attrs_tasks_with_their_fields_as_payload(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    (job,) = utils.add_jobs([SendEmail("ada@example.com")])

    assert job.task_identifier == "send_email"
    assert job.payload == {"to": "ada@example.com", "subject": "hello"}
    assert view_labels(conn, schema) == {job.id: ("send_email", None)}


def test_add_jobs_enqueues_dataclass_tasks_with_their_fields_as_payload(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    (job,) = utils.add_jobs([ResizeImage("https://example.com/a.png", 640)])

    assert job.task_identifier == "resize_image"
    assert job.payload == {"url": "https://example.com/a.png", "width": 640}
    assert view_labels(conn, schema) == {job.id: ("resize_image", None)}


def test_add_jobs_takes_bare_tasks_and_task_spec_pairs_in_one_call(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    jobs = utils.add_jobs(
        [
            SendEmail("ada"),
            (ResizeImage("u", 10), JobSpec(queue_name="images", priority=5)),
            (SendEmail("bob", subject="hi"), None),
            ResizeImage("v", 20),
        ]
    )

    by_payload = {json.dumps(job.payload, sort_keys=True): job for job in jobs}
    ada = by_payload[json.dumps({"subject": "hello", "to": "ada"}, sort_keys=True)]
    u = by_payload[json.dumps({"url": "u", "width": 10}, sort_keys=True)]
    bob = by_payload[json.dumps({"subject": "hi", "to": "bob"}, sort_keys=True)]
    v = by_payload[json.dumps({"url": "v", "width": 20}, sort_keys=True)]
    assert (ada.task_identifier, ada.queue_name, ada.priority) == ("send_email", None, 0)
    assert (u.task_identifier, u.queue_name, u.priority) == ("resize_image", "images", 5)
    assert (bob.task_identifier, bob.queue_name) == ("send_email", None)
    assert (v.task_identifier, v.queue_name) == ("resize_image", None)
    assert_labelled_like_the_database(conn, schema, jobs)


def test_add_job_enqueues_one_typed_task(utils: WorkerUtils, conn: Connection, schema: str) -> None:
    job = utils.add_job(SendEmail("ada"), JobSpec(queue_name="mail", job_key="welcome:ada"))

    assert (job.task_identifier, job.queue_name, job.key) == ("send_email", "mail", "welcome:ada")
    assert job.payload == {"to": "ada", "subject": "hello"}
    assert view_labels(conn, schema) == {job.id: ("send_email", "mail")}


def test_add_jobs_refuses_a_task_without_an_identifier_and_writes_nothing(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    with pytest.raises(InvalidJobSpec, match=r"jobs\[1\].*IDENTIFIER"):
        utils.add_jobs([SendEmail("ada"), NoIdentifier()])  # type: ignore[list-item]

    assert view_labels(conn, schema) == {}
