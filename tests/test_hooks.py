"""Before-schedule hooks: continue with a (new) payload, skip, or fail; in order; before SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
import psycopg
import pytest
from psycopg import pq, sql

from graphile_worker_utils import (
    Continue,
    Fail,
    HookResult,
    JobScheduleFailed,
    JobScheduleSkipped,
    JobSpec,
    RawJobSpec,
    Skip,
    WorkerUtils,
)


@attrs.frozen
class SendEmail:
    IDENTIFIER: ClassVar[str] = "send_email"
    to: str


@pytest.fixture
def tx_conn(pg_dsn: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """A non-autocommit connection: its transaction status shows whether any SQL was sent.

    It depends on ``schema`` so that it is closed before the schema is dropped.
    """
    with psycopg.connect(pg_dsn) as connection:
        yield connection
        connection.rollback()


def stored(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, Any]]:
    """(task identifier, payload) of every job in the schema, oldest first."""
    query = sql.SQL(
        "select t.identifier, j.payload from {0}._private_jobs j"
        " join {0}._private_tasks t on t.id = j.task_id order by j.id"
    ).format(sql.Identifier(schema))
    return [(row[0], row[1]) for row in conn.execute(query)]


def task_identifiers(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    query = sql.SQL("select identifier from {}._private_tasks").format(sql.Identifier(schema))
    return [row[0] for row in conn.execute(query)]


def replace_with(payload: Any) -> Callable[[str, Any, JobSpec], HookResult]:
    def hook(identifier: str, old: Any, spec: JobSpec) -> HookResult:
        return Continue(payload)

    return hook


def skip(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
    return Skip("not today")


def fail(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
    return Fail("payloads must name a recipient")


def skip_send_email(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
    return Skip() if identifier == "send_email" else Continue(payload)


def fail_send_email(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
    return Fail("no email") if identifier == "send_email" else Continue(payload)


# -- one job ----------------------------------------------------------------------------------


def test_continue_with_a_new_payload_stores_the_replacement(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    utils = WorkerUtils(conn, schema=migrated, hooks=[replace_with({"replaced": True})])
    job = utils.add_raw_job("send_email", {"to": "ada@example.com"})
    assert job.payload == {"replaced": True}
    assert stored(conn, migrated) == [("send_email", {"replaced": True})]


def test_continue_with_the_same_payload_stores_it_unchanged(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    def keep(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        return Continue(payload)

    WorkerUtils(conn, schema=migrated, hooks=[keep]).add_raw_job("send_email", {"to": "ada"})
    assert stored(conn, migrated) == [("send_email", {"to": "ada"})]


def test_a_hook_receives_the_identifier_the_payload_and_the_spec(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    seen: list[tuple[str, Any, JobSpec]] = []

    def record(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        seen.append((identifier, payload, spec))
        return Continue(payload)

    spec = JobSpec(queue_name="mail", priority=3)
    WorkerUtils(conn, schema=migrated, hooks=[record]).add_raw_job(
        "send_email", {"to": "ada"}, spec
    )
    assert seen == [("send_email", {"to": "ada"}, spec)]


def test_skip_raises_job_schedule_skipped_and_writes_nothing(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    utils = WorkerUtils(conn, schema=migrated, hooks=[skip])
    with pytest.raises(JobScheduleSkipped, match="not today"):
        utils.add_raw_job("send_email", {"to": "ada"})
    assert stored(conn, migrated) == []
    assert task_identifiers(conn, migrated) == []


def test_fail_raises_job_schedule_failed_with_the_message_and_writes_nothing(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    utils = WorkerUtils(conn, schema=migrated, hooks=[fail])
    with pytest.raises(JobScheduleFailed, match="payloads must name a recipient"):
        utils.add_raw_job("send_email", {"to": "ada"})
    assert stored(conn, migrated) == []
    assert task_identifiers(conn, migrated) == []


@pytest.mark.parametrize(
    ("hook", "error"), [(skip, JobScheduleSkipped), (fail, JobScheduleFailed)], ids=["skip", "fail"]
)
def test_skip_and_fail_send_no_sql_at_all(
    tx_conn: psycopg.Connection[Any],
    migrated: str,
    hook: Callable[[str, Any, JobSpec], HookResult],
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        WorkerUtils(tx_conn, schema=migrated, hooks=[hook]).add_raw_job("send_email", {})
    # On a non-autocommit connection, any statement would have opened a transaction.
    assert tx_conn.info.transaction_status == pq.TransactionStatus.IDLE


# -- chains -----------------------------------------------------------------------------------


def test_hooks_run_in_order_and_each_sees_the_payload_of_the_one_before(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    seen: list[tuple[str, Any]] = []

    def first(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        seen.append(("first", payload))
        return Continue({**payload, "steps": ["first"]})

    def second(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        seen.append(("second", payload))
        return Continue({**payload, "steps": [*payload["steps"], "second"]})

    utils = WorkerUtils(conn, schema=migrated, hooks=[first, second])
    job = utils.add_raw_job("send_email", {"to": "ada"})
    assert seen == [("first", {"to": "ada"}), ("second", {"to": "ada", "steps": ["first"]})]
    assert job.payload == {"to": "ada", "steps": ["first", "second"]}
    assert stored(conn, migrated) == [("send_email", job.payload)]


def test_a_skip_stops_the_chain_before_later_hooks(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    later: list[Any] = []

    def after(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        later.append(payload)
        return Continue(payload)

    with pytest.raises(JobScheduleSkipped):
        WorkerUtils(conn, schema=migrated, hooks=[skip, after]).add_raw_job("send_email", {})
    assert later == []


# -- batches ----------------------------------------------------------------------------------


def test_hooks_run_on_every_job_of_a_batch_in_order(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    seen: list[tuple[str, Any]] = []

    def record(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        seen.append((identifier, payload))
        return Continue({**payload, "hooked": True})

    utils = WorkerUtils(conn, schema=migrated, hooks=[record])
    utils.add_raw_jobs(
        [RawJobSpec("a", {"n": 1}), RawJobSpec("b", {"n": 2}), RawJobSpec("c", {"n": 3})]
    )
    assert seen == [("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})]
    assert sorted(stored(conn, migrated)) == [
        ("a", {"n": 1, "hooked": True}),
        ("b", {"n": 2, "hooked": True}),
        ("c", {"n": 3, "hooked": True}),
    ]


@pytest.mark.parametrize(
    ("hook", "error"),
    [(skip_send_email, JobScheduleSkipped), (fail_send_email, JobScheduleFailed)],
    ids=["skip", "fail"],
)
def test_one_skip_or_fail_in_a_batch_aborts_the_whole_batch_before_any_sql(
    tx_conn: psycopg.Connection[Any],
    conn: psycopg.Connection[Any],
    migrated: str,
    hook: Callable[[str, Any, JobSpec], HookResult],
    error: type[Exception],
) -> None:
    utils = WorkerUtils(tx_conn, schema=migrated, hooks=[hook])
    batch = [
        RawJobSpec("resize_image", {"n": 1}),
        RawJobSpec("send_email", {"n": 2}),  # the last one: the others were already hooked
    ]
    with pytest.raises(error):
        utils.add_raw_jobs(batch)
    assert tx_conn.info.transaction_status == pq.TransactionStatus.IDLE  # no statement sent
    tx_conn.commit()
    assert stored(conn, migrated) == []
    assert task_identifiers(conn, migrated) == []


# -- every enqueue method ---------------------------------------------------------------------


def enqueue_raw_job(utils: WorkerUtils) -> None:
    utils.add_raw_job("send_email", {"to": "ada"})


def enqueue_raw_jobs(utils: WorkerUtils) -> None:
    utils.add_raw_jobs([RawJobSpec("send_email", {"to": "ada"})])


def enqueue_typed_job(utils: WorkerUtils) -> None:
    utils.add_job(SendEmail(to="ada"))


def enqueue_typed_jobs(utils: WorkerUtils) -> None:
    utils.add_jobs([(SendEmail(to="ada"), None)])


ENQUEUE_METHODS = pytest.mark.parametrize(
    "enqueue",
    [enqueue_raw_job, enqueue_raw_jobs, enqueue_typed_job, enqueue_typed_jobs],
    ids=["add_raw_job", "add_raw_jobs", "add_job", "add_jobs"],
)


@ENQUEUE_METHODS
def test_every_enqueue_method_stores_the_payload_a_hook_continued_with(
    conn: psycopg.Connection[Any], migrated: str, enqueue: Callable[[WorkerUtils], None]
) -> None:
    enqueue(WorkerUtils(conn, schema=migrated, hooks=[replace_with({"to": "bob"})]))
    assert stored(conn, migrated) == [("send_email", {"to": "bob"})]


@ENQUEUE_METHODS
def test_every_enqueue_method_raises_on_skip_and_writes_nothing(
    conn: psycopg.Connection[Any], migrated: str, enqueue: Callable[[WorkerUtils], None]
) -> None:
    with pytest.raises(JobScheduleSkipped):
        enqueue(WorkerUtils(conn, schema=migrated, hooks=[skip]))
    assert stored(conn, migrated) == []


@ENQUEUE_METHODS
def test_every_enqueue_method_raises_on_fail_and_writes_nothing(
    conn: psycopg.Connection[Any], migrated: str, enqueue: Callable[[WorkerUtils], None]
) -> None:
    with pytest.raises(JobScheduleFailed, match="payloads must name a recipient"):
        enqueue(WorkerUtils(conn, schema=migrated, hooks=[fail]))
    assert stored(conn, migrated) == []


def test_a_typed_task_reaches_the_hook_as_a_dict_of_its_fields(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    seen: list[Any] = []

    def record(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        seen.append((identifier, payload))
        return Continue(payload)

    WorkerUtils(conn, schema=migrated, hooks=[record]).add_job(SendEmail(to="ada"))
    # The same shape as a raw dict payload, so one hook serves both.
    assert seen == [("send_email", {"to": "ada"})]
    assert stored(conn, migrated) == [("send_email", {"to": "ada"})]


# -- bad hooks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "returned", [None, {"to": "ada"}, True, "continue"], ids=["None", "dict", "bool", "str"]
)
def test_a_hook_returning_anything_but_continue_skip_or_fail_raises_type_error(
    conn: psycopg.Connection[Any], migrated: str, returned: Any
) -> None:
    def bad(identifier: str, payload: Any, spec: JobSpec) -> Any:
        return returned

    utils = WorkerUtils(conn, schema=migrated, hooks=[bad])
    with pytest.raises(TypeError, match="expected Continue, Skip or Fail"):
        utils.add_raw_job("send_email", {"to": "ada"})
    assert stored(conn, migrated) == []
