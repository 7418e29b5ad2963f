"""Every error a caller can meet is a library error (README, "Errors"), raised before anything
is sent: input of the wrong shape, an iterable that raises, a closed pool, text the
connection's client encoding cannot carry, a hook that breaks the contract.

"Nothing was sent" is observed on a non-autocommit connection: its first statement would open
a transaction, so it must still be IDLE after the refusal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
import psycopg
import pytest
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolClosed

import graphile_worker_utils
from graphile_worker_utils import (
    CleanupTask,
    ConnectionStateError,
    GraphileWorkerError,
    HookError,
    InvalidJobSpec,
    JobSpec,
    RawJobSpec,
    WorkerUtils,
)
from graphile_worker_utils._client import BATCH_SLICE
from tests._helpers import job_count

Connection = psycopg.Connection[Any]
IDLE = pq.TransactionStatus.IDLE


@attrs.frozen
class SendEmail:
    IDENTIFIER: ClassVar[str] = "send_email"
    to: str


@pytest.fixture
def latin1_conn(pg_dsn: str, utils: WorkerUtils) -> Iterator[Connection]:
    """As ``idle_conn``, with client_encoding LATIN1 (no '€', no CJK)."""
    with psycopg.connect(pg_dsn, client_encoding="LATIN1") as connection:
        assert connection.info.parameter_status("client_encoding") == "LATIN1"
        yield connection


def assert_nothing_sent(caller: Connection, conn: Connection, schema: str) -> None:
    assert caller.info.transaction_status == IDLE, "a statement was sent"
    assert job_count(conn, schema) == 0


# --------------------------------------------------------------------------------------------
# Input of the wrong shape


@pytest.mark.parametrize(
    ("jobs", "got"), [(None, "NoneType"), (5, "int"), ("abc", "str"), (b"x", "bytes")]
)
def test_add_raw_jobs_refuses_what_is_not_an_iterable_of_jobs(
    idle_conn: Connection, conn: Connection, schema: str, jobs: Any, got: str
) -> None:
    with pytest.raises(
        InvalidJobSpec, match=rf"^jobs: expected an iterable of RawJobSpec, got {got}$"
    ):
        WorkerUtils(idle_conn, schema=schema).add_raw_jobs(jobs)
    assert_nothing_sent(idle_conn, conn, schema)


def test_add_jobs_refuses_what_is_not_an_iterable_of_tasks(
    idle_conn: Connection, conn: Connection, schema: str
) -> None:
    with pytest.raises(InvalidJobSpec, match=r"^tasks: expected an iterable of .*got NoneType$"):
        WorkerUtils(idle_conn, schema=schema).add_jobs(None)  # type: ignore[arg-type]
    assert_nothing_sent(idle_conn, conn, schema)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_add_jobs_refuses_a_tuple_that_is_not_a_task_spec_pair(
    idle_conn: Connection, conn: Connection, schema: str, size: int
) -> None:
    bad = (SendEmail(to="b"), None, None, None)[:size]
    with pytest.raises(
        InvalidJobSpec,
        match=rf"^jobs\[1\]: expected a task or a \(task, spec\) pair, got a tuple of {size}"
        r" items?$",
    ):
        WorkerUtils(idle_conn, schema=schema).add_jobs([SendEmail(to="a"), bad])  # type: ignore[list-item]
    assert_nothing_sent(idle_conn, conn, schema)


class Boom(Exception):
    pass


def raising_after(first: Any) -> Iterator[Any]:
    yield first
    raise Boom("the source failed")


ITERATING_CALLS: dict[str, Callable[[WorkerUtils], object]] = {
    "add_raw_jobs": lambda u: u.add_raw_jobs(raising_after(RawJobSpec("a"))),
    "add_jobs": lambda u: u.add_jobs(raising_after(SendEmail(to="a"))),
    "complete_jobs": lambda u: u.complete_jobs(raising_after(1)),
    "permanently_fail_jobs": lambda u: u.permanently_fail_jobs(raising_after(1)),
    "reschedule_jobs": lambda u: u.reschedule_jobs(raising_after(1)),
    "force_unlock_workers": lambda u: u.force_unlock_workers(raising_after("w")),
    "cleanup": lambda u: u.cleanup(raising_after(CleanupTask.GC_JOB_QUEUES)),
    "cleanup_keep": lambda u: u.cleanup(task_identifiers_to_keep=raising_after("a")),
}
ITERATED_FIELDS = {
    "add_raw_jobs": "jobs",
    "add_jobs": "tasks",
    "force_unlock_workers": "worker_ids",
    "cleanup": "tasks",
    "cleanup_keep": "task_identifiers_to_keep",
}


@pytest.mark.parametrize("call", ITERATING_CALLS)
def test_an_iterable_argument_that_raises_is_a_library_error_and_nothing_is_sent(
    idle_conn: Connection, conn: Connection, schema: str, call: str
) -> None:
    field = ITERATED_FIELDS.get(call, "job_ids")
    with pytest.raises(
        InvalidJobSpec, match=rf"^{field}: iterating it raised Boom: the source"
    ) as info:
        ITERATING_CALLS[call](WorkerUtils(idle_conn, schema=schema))
    assert isinstance(info.value.__cause__, Boom)
    assert_nothing_sent(idle_conn, conn, schema)


def test_a_custom_json_dumps_raising_anything_is_invalid_job_spec_naming_the_job(
    idle_conn: Connection, conn: Connection, schema: str
) -> None:
    def dumps(value: Any) -> str:
        if value == {"bad": True}:
            raise KeyError("no encoder for this")
        return "{}"

    utils = WorkerUtils(idle_conn, schema=schema, json_dumps=dumps)
    with pytest.raises(InvalidJobSpec, match=r"^payload: .*KeyError"):
        utils.add_raw_job("a", {"bad": True})
    with pytest.raises(InvalidJobSpec, match=r"^jobs\[1\]\.payload: .*KeyError"):
        utils.add_raw_jobs([RawJobSpec("a", {}), RawJobSpec("a", {"bad": True})])
    assert_nothing_sent(idle_conn, conn, schema)


# --------------------------------------------------------------------------------------------
# A closed pool


OPERATIONS: dict[str, Callable[[WorkerUtils], object]] = {
    "migrate": lambda u: u.migrate(),
    "schema_status": lambda u: u.schema_status(),
    "add_raw_job": lambda u: u.add_raw_job("a"),
    "add_raw_jobs": lambda u: u.add_raw_jobs([RawJobSpec("a"), RawJobSpec("b")]),
    "remove_job": lambda u: u.remove_job("k"),
    "complete_jobs": lambda u: u.complete_jobs([1]),
    "cleanup": lambda u: u.cleanup(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_instance_used_after_its_connect_block_ended_raises_connection_state_error(
    pg_dsn: str, utils: WorkerUtils, conn: Connection, schema: str, operation: str
) -> None:
    with WorkerUtils.connect(pg_dsn, schema=schema) as owning:
        pass

    with pytest.raises(ConnectionStateError, match=r"pool .* is closed .*connect\(\) block"):
        OPERATIONS[operation](owning)
    assert job_count(conn, schema) == 0


def test_a_pool_closed_while_an_operation_waits_for_a_connection_is_a_connection_state_error(
    pg_dsn: str, utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    pool: ConnectionPool[Any] = ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True)
    held = pool.getconn()  # the only connection: the operation below has to wait
    outcome: list[BaseException] = []

    def enqueue() -> None:
        try:
            WorkerUtils(pool, schema=schema).add_raw_job("a")
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=enqueue)
    waiter.start()
    try:
        while pool.get_stats().get("requests_waiting", 0) == 0 and waiter.is_alive():
            time.sleep(0.01)
        pool.close()
    finally:
        waiter.join()
        held.close()
    (error,) = outcome
    assert isinstance(error, ConnectionStateError), repr(error)
    assert isinstance(error.__cause__, PoolClosed)
    assert job_count(conn, schema) == 0


# --------------------------------------------------------------------------------------------
# Text the connection's client encoding cannot carry


@pytest.mark.parametrize("text", ["€", "漢字"], ids=["euro", "cjk"])
@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("identifier", lambda t: ("a" + t, {}, None)),
        ("payload", lambda t: ("a", {"note": "price " + t}, None)),
        ("queue_name", lambda t: ("a", {}, JobSpec(queue_name=t))),
        ("job_key", lambda t: ("a", {}, JobSpec(job_key=t))),
        (r"flags\[1\]", lambda t: ("a", {}, JobSpec(flags=["ok", t]))),
    ],
    ids=["identifier", "payload", "queue_name", "job_key", "flags"],
)
def test_add_raw_job_refuses_text_the_client_encoding_cannot_carry_before_any_sql(
    latin1_conn: Connection, conn: Connection, schema: str, field: str, make: Any, text: str
) -> None:
    identifier, payload, spec = make(text)
    with pytest.raises(InvalidJobSpec, match=rf"^{field}: .*{text[0]}.*client_encoding is LATIN1"):
        WorkerUtils(latin1_conn, schema=schema).add_raw_job(identifier, payload, spec)
    assert_nothing_sent(latin1_conn, conn, schema)


@pytest.mark.parametrize(
    ("position", "bad", "field"),
    [
        (1, RawJobSpec("a", {"p": ["x", "€"]}), r"jobs\[1\]\.payload"),
        (2, RawJobSpec("a漢", {}), r"jobs\[2\]\.identifier"),
        (0, RawJobSpec("a", {}, JobSpec(queue_name="€")), r"jobs\[0\]\.queue_name"),
        (1, RawJobSpec("a", {}, JobSpec(flags=["€"])), r"jobs\[1\]\.flags"),
        (BATCH_SLICE + 1, RawJobSpec("a", {"p": "漢"}), rf"jobs\[{BATCH_SLICE + 1}\]\.payload"),
    ],
    ids=["payload", "identifier", "queue_name", "flags", "second-slice"],
)
def test_add_raw_jobs_refuses_text_the_client_encoding_cannot_carry_naming_the_job(
    latin1_conn: Connection, conn: Connection, schema: str, position: int, bad: Any, field: str
) -> None:
    # Good jobs carry LATIN1 text, which is sent as it is.
    jobs = [RawJobSpec("é", {"i": i, "s": "ü"}) for i in range(max(3, position + 1))]
    jobs[position] = bad
    with pytest.raises(InvalidJobSpec, match=rf"^{field}: .*client_encoding is LATIN1"):
        WorkerUtils(latin1_conn, schema=schema).add_raw_jobs(jobs)
    assert_nothing_sent(latin1_conn, conn, schema)


MAINTENANCE_WITH_TEXT: dict[str, tuple[str, Callable[[WorkerUtils], object]]] = {
    "remove_job": ("job_key", lambda u: u.remove_job("€")),
    "permanently_fail_jobs": ("reason", lambda u: u.permanently_fail_jobs([1], "€")),
    "force_unlock_workers": (r"worker_ids\[1\]", lambda u: u.force_unlock_workers(["w", "€"])),
    "cleanup": (
        r"task_identifiers_to_keep\[0\]",
        lambda u: u.cleanup([CleanupTask.GC_TASK_IDENTIFIERS], ["€"]),
    ),
}


@pytest.mark.parametrize("operation", MAINTENANCE_WITH_TEXT)
def test_maintenance_refuses_text_the_client_encoding_cannot_carry_before_any_sql(
    latin1_conn: Connection, conn: Connection, schema: str, operation: str
) -> None:
    field, call = MAINTENANCE_WITH_TEXT[operation]
    with pytest.raises(InvalidJobSpec, match=rf"^{field}: '€' .*client_encoding is LATIN1"):
        call(WorkerUtils(latin1_conn, schema=schema))
    assert latin1_conn.info.transaction_status == IDLE


def test_a_client_encoding_set_during_the_session_is_the_one_checked(
    idle_conn: Connection, conn: Connection, schema: str
) -> None:
    idle_conn.execute("set client_encoding to 'LATIN1'")
    idle_conn.commit()  # SET on a non-autocommit connection opened a transaction
    with pytest.raises(InvalidJobSpec, match=r"^payload: '€'"):
        WorkerUtils(idle_conn, schema=schema).add_raw_job("a", {"p": "€"})
    assert_nothing_sent(idle_conn, conn, schema)


def test_a_non_ascii_schema_on_a_latin1_connection_is_refused_before_any_sql(
    pg_dsn: str,
) -> None:
    with psycopg.connect(pg_dsn, client_encoding="LATIN1") as latin1:
        with pytest.raises(ConnectionStateError, match=r"schema 'tâches' .*LATIN1"):
            WorkerUtils(latin1, schema="tâches").schema_status()
        assert latin1.info.transaction_status == IDLE


# --------------------------------------------------------------------------------------------
# Hooks that break the contract


def test_a_hook_returning_none_is_a_hook_error_naming_the_hook(
    idle_conn: Connection, conn: Connection, schema: str
) -> None:
    def forgot_to_return(identifier: str, payload: Any, spec: JobSpec) -> Any:
        return None

    utils = WorkerUtils(idle_conn, schema=schema, hooks=[forgot_to_return])
    with pytest.raises(HookError, match=r"forgot_to_return returned NoneType for job 'a'") as info:
        utils.add_raw_jobs([RawJobSpec("a")])
    assert isinstance(info.value, TypeError)
    assert_nothing_sent(idle_conn, conn, schema)


@pytest.mark.parametrize(
    ("hooks", "pattern"),
    [
        (None, r"^hooks: expected a sequence of callables, got NoneType$"),
        ([print, 3], r"^hooks\[1\]: 3 is not callable$"),
    ],
    ids=["none", "not-callable"],
)
def test_hooks_that_cannot_be_called_are_refused_at_construction(
    conn: Connection, hooks: Any, pattern: str
) -> None:
    with pytest.raises(HookError, match=pattern):
        WorkerUtils(conn, hooks=hooks)


def test_hook_error_is_exported_and_documented() -> None:
    assert "HookError" in graphile_worker_utils.__all__
    assert graphile_worker_utils.HookError is HookError
    assert issubclass(HookError, GraphileWorkerError) and issubclass(HookError, TypeError)
    assert HookError.__doc__


# -- arguments of the constructor, connect() and using() ---------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WorkerUtils("postgresql://db/app"), r"^conn_or_pool: expected a psycopg\."),  # type: ignore[arg-type]
        (lambda: WorkerUtils(None), r"^conn_or_pool: expected .* got NoneType$"),  # type: ignore[arg-type]
        (
            lambda: WorkerUtils.connect("", wait_timeout=None),  # type: ignore[arg-type]
            r"^wait_timeout: expected a number of seconds, got NoneType$",
        ),
        (lambda: WorkerUtils.connect("", wait_timeout=-1), r"^wait_timeout: must be .* got -1$"),
        (
            lambda: WorkerUtils.connect("", wait_timeout=float("nan")),
            r"^wait_timeout: must be a finite number",
        ),
    ],
    ids=["a str", "None", "wait_timeout None", "wait_timeout -1", "wait_timeout nan"],
)
def test_arguments_it_cannot_work_with_are_configuration_errors(
    make: Callable[[], Any], message: str
) -> None:
    with pytest.raises(graphile_worker_utils.ConfigurationError, match=message) as info:
        make()
    assert isinstance(info.value, TypeError)


def test_a_json_dumps_that_is_not_callable_and_using_a_non_connection_are_refused(
    idle_conn: Connection,
) -> None:
    with pytest.raises(graphile_worker_utils.ConfigurationError, match=r"^json_dumps: "):
        WorkerUtils(idle_conn, json_dumps="json.dumps")  # type: ignore[arg-type]
    utils = WorkerUtils(idle_conn)
    with pytest.raises(
        graphile_worker_utils.ConfigurationError, match=r"^conn: expected a psycopg"
    ):
        utils.using("postgresql://db/app")  # type: ignore[arg-type]
