"""Transactions: on a caller's connection the library joins the caller's transaction and never
ends or reconfigures it; on a pool each operation commits; batches are all or nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import abc, pq, sql
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    CleanupTask,
    ConnectionStateError,
    DatabaseError,
    InvalidJobSpec,
    JobKeyMode,
    JobSpec,
    RawJobSpec,
    SchemaState,
    WorkerUtils,
)
from tests._helpers import table

Connection = psycopg.Connection[Any]
IDLE = pq.TransactionStatus.IDLE
INTRANS = pq.TransactionStatus.INTRANS
INERROR = pq.TransactionStatus.INERROR
WAIT_SECONDS = 10.0


# --------------------------------------------------------------------------------------------
# Helpers and fixtures


def count(conn: Connection, schema: str, name: str = "_private_jobs") -> int:
    (n,) = conn.execute(sql.SQL("select count(*) from {}").format(table(schema, name))).fetchone()  # type: ignore[misc]
    return int(n)


def schema_exists(conn: Connection, schema: str) -> bool:
    row = conn.execute("select 1 from pg_namespace where nspname = %s", [schema]).fetchone()
    return row is not None


@pytest.fixture
def observer(pg_dsn: str, schema: str) -> Iterator[Connection]:
    """Another session, to see what is committed."""
    with psycopg.connect(pg_dsn, autocommit=True) as connection:
        yield connection


# --------------------------------------------------------------------------------------------
# A caller's connection: the caller's transaction


def test_a_job_enqueued_in_a_rolled_back_transaction_does_not_exist(
    utils: WorkerUtils, caller_conn: Connection, observer: Connection, schema: str
) -> None:
    WorkerUtils(caller_conn, schema=schema).add_raw_job("send_email", {"to": "ada"})
    caller_conn.rollback()

    assert count(observer, schema) == 0


def test_a_batch_enqueued_in_a_rolled_back_transaction_does_not_exist(
    utils: WorkerUtils, caller_conn: Connection, observer: Connection, schema: str
) -> None:
    WorkerUtils(caller_conn, schema=schema).add_raw_jobs(
        [RawJobSpec("a", {}), RawJobSpec("b", {}, JobSpec(queue_name="q"))]
    )
    caller_conn.rollback()

    assert count(observer, schema) == 0
    assert count(observer, schema, "_private_tasks") == 0
    assert count(observer, schema, "_private_job_queues") == 0


def test_a_job_is_invisible_to_other_sessions_until_the_caller_commits(
    utils: WorkerUtils, caller_conn: Connection, observer: Connection, schema: str
) -> None:
    job = WorkerUtils(caller_conn, schema=schema).add_raw_job("send_email", {})

    assert count(observer, schema) == 0
    caller_conn.commit()
    assert count(observer, schema) == 1
    assert observer.execute(
        sql.SQL("select id from {}").format(table(schema, "jobs"))
    ).fetchall() == [(job.id,)]


def test_a_job_enqueued_in_a_transaction_block_of_an_autocommit_connection_rolls_back_with_it(
    utils: WorkerUtils, conn: Connection, observer: Connection, schema: str
) -> None:
    with conn.transaction():
        utils.add_raw_job("send_email", {})
        assert count(observer, schema) == 0
        raise psycopg.Rollback()

    assert count(observer, schema) == 0


def test_a_job_enqueued_in_a_rolled_back_savepoint_goes_with_the_savepoint(
    utils: WorkerUtils, conn: Connection, observer: Connection, schema: str
) -> None:
    with conn.transaction():
        kept = utils.add_raw_job("kept", {})
        with conn.transaction():
            utils.add_raw_job("dropped", {})
            raise psycopg.Rollback()

    assert observer.execute(
        sql.SQL("select id, task_identifier from {}").format(table(schema, "jobs"))
    ).fetchall() == [(kept.id, "kept")]


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda u: u.add_raw_job("a", {}), id="add_raw_job"),
        pytest.param(lambda u: u.add_raw_jobs([RawJobSpec("a", {})]), id="add_raw_jobs"),
        pytest.param(lambda u: u.complete_jobs([1]), id="complete_jobs"),
        pytest.param(lambda u: u.remove_job("nope"), id="remove_job"),
        pytest.param(lambda u: u.cleanup(list(CleanupTask)), id="cleanup"),
        pytest.param(lambda u: u.migrate(), id="migrate"),
    ],
)
def test_an_operation_leaves_the_callers_open_transaction_open(
    utils: WorkerUtils,
    caller_conn: Connection,
    schema: str,
    operation: Callable[[WorkerUtils], object],
) -> None:
    caller_conn.execute("select 1")
    assert caller_conn.info.transaction_status == INTRANS

    operation(WorkerUtils(caller_conn, schema=schema))

    assert caller_conn.info.transaction_status == INTRANS
    assert caller_conn.autocommit is False
    assert not caller_conn.closed


def test_enqueue_on_an_idle_connection_opens_the_callers_transaction_without_committing_it(
    utils: WorkerUtils, caller_conn: Connection, observer: Connection, schema: str
) -> None:
    assert caller_conn.info.transaction_status == IDLE

    WorkerUtils(caller_conn, schema=schema).add_raw_job("a", {})

    assert caller_conn.info.transaction_status == INTRANS
    assert count(observer, schema) == 0


def test_cleanup_on_an_idle_connection_opens_the_callers_transaction_without_committing_it(
    utils: WorkerUtils, caller_conn: Connection, observer: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {}, JobSpec(max_attempts=1))
    utils.permanently_fail_jobs([job.id])
    assert caller_conn.info.transaction_status == IDLE

    removed = WorkerUtils(caller_conn, schema=schema).cleanup(
        [CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS]
    )

    assert removed == {CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1}
    assert caller_conn.info.transaction_status == INTRANS
    assert count(observer, schema) == 1


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactional"])
def test_enqueue_does_not_change_the_autocommit_flag(
    utils: WorkerUtils, pg_dsn: str, schema: str, autocommit: bool
) -> None:
    with psycopg.connect(pg_dsn, autocommit=autocommit) as connection:
        WorkerUtils(connection, schema=schema).add_raw_job("a", {})
        WorkerUtils(connection, schema=schema).add_raw_jobs([RawJobSpec("a", {})])

        assert connection.autocommit is autocommit
        connection.rollback()


def test_an_autocommit_connection_commits_each_enqueue_on_its_own(
    utils: WorkerUtils, observer: Connection, conn: Connection, schema: str
) -> None:
    utils.add_raw_job("a", {})

    assert conn.info.transaction_status == IDLE
    assert count(observer, schema) == 1


LOADER_TYPES = ["timestamptz", "timestamp", "json", "jsonb", "text", "int8"]


def loaders(conn: Connection) -> dict[tuple[str, pq.Format], type[abc.Loader] | None]:
    result: dict[tuple[str, pq.Format], type[abc.Loader] | None] = {}
    for name in LOADER_TYPES:
        info = conn.adapters.types[name]
        for fmt in (pq.Format.TEXT, pq.Format.BINARY):
            result[(name, fmt)] = conn.adapters.get_loader(info.oid, fmt)
    return result


def test_the_library_registers_no_adapters_on_the_callers_connection(
    utils: WorkerUtils, caller_conn: Connection, schema: str
) -> None:
    before = loaders(caller_conn)
    probe = "select '2020-01-02 03:04:05+00'::timestamptz, '{\"a\": 1}'::json, '[1]'::jsonb"
    types_before = [type(value) for value in caller_conn.execute(probe).fetchone()]  # type: ignore[union-attr]
    worker_utils = WorkerUtils(caller_conn, schema=schema)

    job = worker_utils.add_raw_job("a", {"x": 1}, JobSpec(job_key="k"))
    worker_utils.add_raw_jobs([RawJobSpec("b", {})])
    worker_utils.reschedule_jobs([job.id])
    worker_utils.remove_job("k")

    assert loaders(caller_conn) == before
    assert [type(value) for value in caller_conn.execute(probe).fetchone()] == types_before  # type: ignore[union-attr]


def test_the_callers_own_loaders_stay_in_force_on_its_connection(
    utils: WorkerUtils, caller_conn: Connection, schema: str
) -> None:
    class TimestamptzAsText(Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode()

    caller_conn.adapters.register_loader("timestamptz", TimestamptzAsText)

    WorkerUtils(caller_conn, schema=schema).add_raw_job("a", {})

    (value,) = caller_conn.execute("select '2020-01-02 03:04:05+00'::timestamptz").fetchone()  # type: ignore[misc]
    assert isinstance(value, str)


# --------------------------------------------------------------------------------------------
# A pool: each operation commits


def test_each_enqueue_through_a_pool_commits(
    pool: ConnectionPool[Any], observer: Connection, schema: str
) -> None:
    pooled = WorkerUtils(pool, schema=schema)

    pooled.add_raw_job("a", {})
    assert count(observer, schema) == 1
    pooled.add_raw_jobs([RawJobSpec("b", {}), RawJobSpec("c", {})])
    assert count(observer, schema) == 3


def test_each_maintenance_operation_through_a_pool_commits(
    pool: ConnectionPool[Any], observer: Connection, schema: str
) -> None:
    pooled = WorkerUtils(pool, schema=schema)
    first, second = pooled.add_raw_jobs([RawJobSpec("a", {}), RawJobSpec("b", {})])

    pooled.complete_jobs([first.id])
    assert count(observer, schema) == 1
    pooled.permanently_fail_jobs([second.id])
    pooled.cleanup([CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS])
    assert count(observer, schema) == 0


def test_a_pool_gets_its_connections_back_idle(pool: ConnectionPool[Any], schema: str) -> None:
    pooled = WorkerUtils(pool, schema=schema)
    pooled.add_raw_job("a", {})
    pooled.add_raw_jobs([RawJobSpec("a", {})])

    with pool.connection() as connection:
        assert connection.info.transaction_status == IDLE


# --------------------------------------------------------------------------------------------
# Batches: all or nothing


@pytest.fixture
def poison_check(utils: WorkerUtils, conn: Connection, schema: str) -> None:
    """A rule only the database knows: no job may carry the payload "poison"."""
    conn.execute(
        sql.SQL(
            "alter table {} add constraint no_poison check (payload::text <> '\"poison\"')"
        ).format(table(schema, "_private_jobs"))
    )


@pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])
def test_a_batch_the_database_refuses_one_job_of_writes_nothing(
    utils: WorkerUtils, conn: Connection, schema: str, poison_check: None, position: int
) -> None:
    batch = [RawJobSpec(f"task_{i}", {"i": i}, JobSpec(queue_name=f"q{i}")) for i in range(3)]
    batch[position] = RawJobSpec(f"task_{position}", "poison", JobSpec(queue_name="poisoned"))

    with pytest.raises(DatabaseError) as raised:
        utils.add_raw_jobs(batch)

    assert isinstance(raised.value.__cause__, psycopg.errors.CheckViolation)
    assert count(conn, schema) == 0
    assert count(conn, schema, "_private_tasks") == 0
    assert count(conn, schema, "_private_job_queues") == 0


def test_a_batch_the_database_refuses_through_a_pool_writes_nothing(
    pool: ConnectionPool[Any], conn: Connection, schema: str, poison_check: None
) -> None:
    with pytest.raises(DatabaseError):
        WorkerUtils(pool, schema=schema).add_raw_jobs(
            [RawJobSpec("a", {}), RawJobSpec("b", "poison")]
        )

    assert count(conn, schema) == 0


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(RawJobSpec("a", float("nan")), id="nan-payload"),
        pytest.param(RawJobSpec("a", {"x": object()}), id="unserializable-payload"),
        pytest.param(
            RawJobSpec("a", {}, JobSpec(job_key="k", job_key_mode=JobKeyMode.UNSAFE_DEDUPE)),
            id="unsafe-dedupe",
        ),
        pytest.param(RawJobSpec("a", {}, JobSpec(job_key="dup")), id="duplicate-key"),
    ],
)
def test_a_batch_with_a_bad_spec_raises_invalid_job_spec_and_writes_nothing(
    utils: WorkerUtils, conn: Connection, schema: str, bad: RawJobSpec
) -> None:
    batch = [RawJobSpec("ok", {}, JobSpec(job_key="dup")), RawJobSpec("ok", {}), bad]

    with pytest.raises(InvalidJobSpec, match=r"jobs\[2\]"):
        utils.add_raw_jobs(batch)

    assert count(conn, schema) == 0
    assert count(conn, schema, "_private_tasks") == 0


# --------------------------------------------------------------------------------------------
# using(conn): a pool-configured instance bound to a caller's connection


def test_using_binds_one_call_to_the_callers_transaction(
    pool: ConnectionPool[Any], caller_conn: Connection, observer: Connection, schema: str
) -> None:
    pooled = WorkerUtils(pool, schema=schema)

    pooled.using(caller_conn).add_raw_job("a", {})

    assert caller_conn.info.transaction_status == INTRANS
    assert count(observer, schema) == 0
    caller_conn.rollback()
    assert count(observer, schema) == 0


def test_using_as_a_with_block_neither_commits_nor_closes_the_connection(
    pool: ConnectionPool[Any], caller_conn: Connection, observer: Connection, schema: str
) -> None:
    pooled = WorkerUtils(pool, schema=schema)

    with pooled.using(caller_conn) as bound:
        bound.add_raw_job("a", {})
        bound.add_raw_jobs([RawJobSpec("b", {})])

    assert not caller_conn.closed
    assert caller_conn.info.transaction_status == INTRANS
    assert count(observer, schema) == 0
    caller_conn.commit()
    assert count(observer, schema) == 2


def test_leaving_a_using_block_leaves_the_pool_open(
    pg_dsn: str, caller_conn: Connection, utils: WorkerUtils, observer: Connection, schema: str
) -> None:
    with WorkerUtils.connect(pg_dsn, schema=schema) as owning:
        with owning.using(caller_conn):
            pass

        owning.add_raw_job("after", {})

    assert count(observer, schema) == 1


def test_using_keeps_the_instances_configuration(
    pool: ConnectionPool[Any], caller_conn: Connection, schema: str
) -> None:
    pooled = WorkerUtils(pool, schema=schema, json_dumps=lambda value: '{"dumped":true}')

    job = pooled.using(caller_conn).add_raw_job("a", {"ignored": 1})

    assert pooled.using(caller_conn).schema == schema
    assert job.payload == {"dumped": True}


# --------------------------------------------------------------------------------------------
# WorkerUtils.connect(dsn): an instance that owns its pool


def backends_named(observer: Connection, application_name: str) -> int:
    (n,) = observer.execute(
        "select count(*) from pg_stat_activity where application_name = %s", [application_name]
    ).fetchone()  # type: ignore[misc]
    return int(n)


def test_connect_opens_a_pool_that_commits_each_operation(
    pg_dsn: str, utils: WorkerUtils, observer: Connection, schema: str
) -> None:
    with WorkerUtils.connect(pg_dsn, schema=schema) as owning:
        owning.add_raw_job("a", {})
        assert count(observer, schema) == 1


def test_connect_closes_its_pool_when_the_with_block_ends(
    pg_dsn: str, utils: WorkerUtils, observer: Connection, schema: str
) -> None:
    name = f"gwu-test-{uuid.uuid4().hex[:12]}"

    with WorkerUtils.connect(pg_dsn, schema=schema, application_name=name) as owning:
        owning.add_raw_job("a", {})
        assert backends_named(observer, name) >= 1

    deadline = time.monotonic() + WAIT_SECONDS
    while backends_named(observer, name) and time.monotonic() < deadline:
        time.sleep(0.02)  # backends exit asynchronously after the client disconnects
    assert backends_named(observer, name) == 0
    with pytest.raises(Exception, match=r"(?i)closed"):
        owning.add_raw_job("b", {})


# --------------------------------------------------------------------------------------------
# Multi-statement operations inside a caller's transaction


def test_cleanup_inside_a_callers_transaction_is_rolled_back_with_it(
    utils: WorkerUtils, caller_conn: Connection, observer: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {}, JobSpec(queue_name="q"))
    utils.permanently_fail_jobs([job.id])
    caller_conn.execute("select 1")

    removed = WorkerUtils(caller_conn, schema=schema).cleanup(list(CleanupTask))
    assert removed == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: 1,
        CleanupTask.GC_JOB_QUEUES: 1,
    }
    caller_conn.rollback()

    assert count(observer, schema) == 1
    assert count(observer, schema, "_private_tasks") == 1
    assert count(observer, schema, "_private_job_queues") == 1


def test_cleanup_inside_a_transaction_block_of_an_autocommit_connection_rolls_back_with_it(
    utils: WorkerUtils, conn: Connection, observer: Connection, schema: str
) -> None:
    job = utils.add_raw_job("a", {})
    utils.permanently_fail_jobs([job.id])

    with conn.transaction():
        utils.cleanup([CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS])
        raise psycopg.Rollback()

    assert count(observer, schema) == 1


def test_migrate_inside_a_callers_transaction_is_rolled_back_with_it(
    caller_conn: Connection, observer: Connection, schema: str
) -> None:
    caller_conn.execute("select 1")

    report = WorkerUtils(caller_conn, schema=schema).migrate()
    assert report.revision == 20
    assert caller_conn.info.transaction_status == INTRANS
    assert not schema_exists(observer, schema)
    caller_conn.rollback()

    assert not schema_exists(observer, schema)
    assert WorkerUtils(observer, schema=schema).schema_status().state is SchemaState.MISSING


def test_migrate_on_an_idle_connection_is_committed_only_by_the_caller(
    caller_conn: Connection, observer: Connection, schema: str
) -> None:
    WorkerUtils(caller_conn, schema=schema).migrate()

    assert caller_conn.info.transaction_status == INTRANS
    assert not schema_exists(observer, schema)
    caller_conn.commit()
    assert WorkerUtils(observer, schema=schema).schema_status().state is SchemaState.CURRENT


# --------------------------------------------------------------------------------------------
# A connection that cannot run anything


OPERATIONS = [
    pytest.param(lambda u: u.add_raw_job("a", {}), id="add_raw_job"),
    pytest.param(lambda u: u.add_raw_jobs([RawJobSpec("a", {})]), id="add_raw_jobs"),
    pytest.param(lambda u: u.remove_job("k"), id="remove_job"),
    pytest.param(lambda u: u.complete_jobs([1]), id="complete_jobs"),
    pytest.param(lambda u: u.permanently_fail_jobs([1]), id="permanently_fail_jobs"),
    pytest.param(lambda u: u.reschedule_jobs([1]), id="reschedule_jobs"),
    pytest.param(lambda u: u.force_unlock_workers(["w"]), id="force_unlock_workers"),
    pytest.param(lambda u: u.cleanup(), id="cleanup"),
    pytest.param(lambda u: u.migrate(), id="migrate"),
]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_connection_in_a_failed_transaction_raises_connection_state_error(
    utils: WorkerUtils,
    caller_conn: Connection,
    schema: str,
    operation: Callable[[WorkerUtils], object],
) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        caller_conn.execute("select 1 / 0")

    with pytest.raises(ConnectionStateError) as raised:
        operation(WorkerUtils(caller_conn, schema=schema))

    message = str(raised.value)
    assert "failed" in message and "roll" in message
    assert caller_conn.info.transaction_status == INERROR  # the caller's to roll back


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_closed_connection_raises_connection_state_error(
    utils: WorkerUtils, pg_dsn: str, schema: str, operation: Callable[[WorkerUtils], object]
) -> None:
    closed = psycopg.connect(pg_dsn, autocommit=True)
    closed.close()

    with pytest.raises(ConnectionStateError, match="closed"):
        operation(WorkerUtils(closed, schema=schema))
