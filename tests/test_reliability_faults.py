"""Reliability under faults (issue 7): a backend terminated mid-statement, a server restarted
under an idle pool, statement and lock timeouts, and a caller's failed transaction. Each fault
surfaces as a clear library error with the psycopg error as ``__cause__``, writes nothing, and
leaves the pool (or a new connection) able to carry on."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import pq, sql
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    CleanupTask,
    ConnectionStateError,
    DatabaseError,
    JobSpec,
    RawJobSpec,
    RescheduleOptions,
    WorkerUtils,
)
from tests._helpers import unique_name
from tests._reliability import BackendTerminator, PrivateServer, private_server

Conn = psycopg.Connection[Any]
BIG_BATCH = 100_000


def count_jobs(conn: Conn, schema: str, identifier: str | None = None) -> int:
    query = sql.SQL(
        "select count(*) from {s}._private_jobs j join {s}._private_tasks t on t.id = j.task_id"
        " where %(identifier)s::text is null or t.identifier = %(identifier)s"
    ).format(s=sql.Identifier(schema))
    row = conn.execute(query, {"identifier": identifier}).fetchone()
    assert row is not None
    return int(row[0])


def big_batch(identifier: str, size: int = BIG_BATCH, pad: int = 0) -> list[RawJobSpec]:
    return [RawJobSpec(identifier, {"n": n, "pad": "x" * pad}) for n in range(size)]


# -- a backend terminated while its statement runs -------------------------------------------


@pytest.mark.slow
def test_backend_terminated_mid_batch_through_a_pool_raises_database_error_and_pool_recovers(
    pg_dsn: str, conn: Conn, migrated: str
) -> None:
    application_name = unique_name("app_")
    # One connection only: the call after the fault must get a replacement from the pool.
    with ConnectionPool(
        pg_dsn,
        min_size=1,
        max_size=1,
        kwargs={"application_name": application_name},
        timeout=30,
        open=True,
    ) as pool:
        utils = WorkerUtils(pool, schema=migrated)
        terminator = BackendTerminator(
            pg_dsn, application_name, ".add_jobs(", after=1.0, timeout=60
        )
        terminator.start()
        try:
            # PostgreSQL's FATAL "terminating connection" or libpq's "server closed the
            # connection ... terminated abnormally" (on its own line), whichever arrives first.
            with pytest.raises(DatabaseError, match=r"(?s)add_jobs .*terminat") as info:
                utils.add_raw_jobs(big_batch("bulk"))
        finally:
            terminator.stop()
        assert terminator.error is None
        assert terminator.terminated_pid is not None  # killed 1 s into the call's transaction
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert count_jobs(conn, migrated, "bulk") == 0  # none of the batch was written

        after = utils.add_raw_job("after", {"n": 1})
        batch = utils.add_raw_jobs(big_batch("after", 10))
        assert after.id is not None and len(batch) == 10
        with pool.connection() as pooled:
            pid = pooled.execute("select pg_backend_pid()").fetchone()
        assert pid is not None and pid[0] != terminator.terminated_pid
    assert count_jobs(conn, migrated) == 11


@pytest.mark.slow
@pytest.mark.parametrize("autocommit", [False, True], ids=["in_transaction", "autocommit"])
def test_backend_terminated_mid_batch_on_a_caller_connection_raises_database_error(
    pg_dsn: str, conn: Conn, migrated: str, autocommit: bool
) -> None:
    application_name = unique_name("app_")
    with psycopg.connect(
        pg_dsn, autocommit=autocommit, application_name=application_name
    ) as caller:
        utils = WorkerUtils(caller, schema=migrated)
        utils.add_raw_job("before", {"n": 0})  # in the caller's transaction, if it has one
        terminator = BackendTerminator(
            pg_dsn, application_name, ".add_jobs(", after=1.0, timeout=60
        )
        terminator.start()
        try:
            with pytest.raises(DatabaseError, match=r"(?s)add_jobs .*terminat") as info:
                utils.add_raw_jobs(big_batch("bulk"))
        finally:
            terminator.stop()
        assert terminator.error is None and terminator.terminated_pid is not None
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert caller.closed
        # The dead connection is refused clearly, before anything is attempted on it.
        with pytest.raises(ConnectionStateError, match="closed"):
            utils.add_raw_job("later")
    assert count_jobs(conn, migrated, "bulk") == 0
    # An open transaction died with its connection; an autocommit one had committed.
    assert count_jobs(conn, migrated, "before") == (1 if autocommit else 0)
    with psycopg.connect(pg_dsn, autocommit=autocommit) as fresh:
        WorkerUtils(fresh, schema=migrated).add_raw_job("later")
        fresh.commit()
    assert count_jobs(conn, migrated, "later") == 1


# -- PostgreSQL restarted while a pool is idle -----------------------------------------------


@pytest.fixture(scope="module")
def own_server() -> Iterator[PrivateServer]:
    """A server of this module alone (never the shared one: other tests use it)."""
    with private_server() as server:
        yield server


@pytest.fixture
def own_schema(own_server: PrivateServer) -> Iterator[str]:
    name = f"gw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(own_server.dsn, autocommit=True) as admin:
        WorkerUtils(admin, schema=name).migrate()
    yield name
    with psycopg.connect(own_server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(name)))


@pytest.mark.slow
def test_pool_opened_by_connect_survives_a_postgresql_restart_while_idle(
    own_server: PrivateServer, own_schema: str
) -> None:
    with WorkerUtils.connect(own_server.dsn, schema=own_schema, min_size=2, max_size=2) as utils:
        utils.add_raw_job("before")
        postmaster = own_server.postmaster_pid()
        own_server.restart()  # both pooled connections are dropped by the server
        assert own_server.postmaster_pid() != postmaster
        # The pool checks a connection before lending it, so not even the first call fails.
        first = utils.add_raw_job("after", {"n": 1})
        second = utils.add_raw_job("after", {"n": 2})
        assert second.id > first.id
    with psycopg.connect(own_server.dsn, autocommit=True) as check:
        assert count_jobs(check, own_schema) == 3


@pytest.mark.slow
def test_plain_pool_without_check_fails_once_per_dropped_connection_after_a_restart(
    own_server: PrivateServer, own_schema: str
) -> None:
    with ConnectionPool(own_server.dsn, min_size=1, max_size=1, open=True) as pool:
        pool.wait(timeout=10)
        utils = WorkerUtils(pool, schema=own_schema)
        utils.add_raw_job("before")
        own_server.restart()
        # Without check=ConnectionPool.check_connection the pool lends the connection the
        # server dropped: the first call fails, clearly, with the server's reason as cause.
        # The pool then discards that connection, so the next call gets a new one. (A pool
        # of N idle connections fails up to N calls this way: use WorkerUtils.connect, or
        # pass check=ConnectionPool.check_connection to your own pool.)
        with pytest.raises(DatabaseError, match=r"add_job .*terminating connection") as info:
            utils.add_raw_job("after", {"n": 1})
        assert isinstance(info.value.__cause__, pg_errors.AdminShutdown)
        utils.add_raw_job("after", {"n": 2})
    with psycopg.connect(own_server.dsn, autocommit=True) as check:
        assert count_jobs(check, own_schema, "after") == 1


# -- timeouts --------------------------------------------------------------------------------


@pytest.fixture
def locked_key(pg_dsn: str, conn: Conn, migrated: str) -> Iterator[str]:
    """A keyed job whose row another session holds ``for update`` (no worker lock: a plain
    row lock, e.g. an admin's transaction), released at teardown."""
    WorkerUtils(conn, schema=migrated).add_raw_job("keyed", {"v": 1}, JobSpec(job_key="held"))
    with psycopg.connect(pg_dsn) as holder:
        holder.execute(
            sql.SQL("select id from {}._private_jobs where key = 'held' for update").format(
                sql.Identifier(migrated)
            )
        )
        yield "held"
        holder.rollback()


def keyed_call(kind: str) -> Callable[[WorkerUtils, str], object]:
    if kind == "add_raw_job":
        return lambda utils, key: utils.add_raw_job("keyed", {"v": 2}, JobSpec(job_key=key))
    return lambda utils, key: utils.add_raw_jobs(
        [RawJobSpec("keyed", {"v": 2}, JobSpec(job_key=key)), RawJobSpec("other", {"v": 3})]
    )


def assert_untouched(conn: Conn, schema: str) -> None:
    rows = conn.execute(
        sql.SQL("select payload, revision from {}._private_jobs").format(sql.Identifier(schema))
    ).fetchall()
    assert rows == [({"v": 1}, 0)]


@pytest.mark.parametrize("kind", ["add_raw_job", "add_raw_jobs"])
def test_lock_timeout_on_a_row_locked_keyed_job_raises_database_error_naming_it(
    pg_dsn: str, conn: Conn, migrated: str, locked_key: str, kind: str
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as caller:
        caller.execute("set lock_timeout = '200ms'")
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="lock timeout") as info:
            keyed_call(kind)(WorkerUtils(caller, schema=migrated), locked_key)
        assert time.monotonic() - started < 10
        assert isinstance(info.value.__cause__, pg_errors.LockNotAvailable)
    assert_untouched(conn, migrated)


@pytest.mark.parametrize("kind", ["add_raw_job", "add_raw_jobs"])
def test_statement_timeout_while_waiting_on_a_row_lock_raises_database_error_naming_it(
    pg_dsn: str, conn: Conn, migrated: str, locked_key: str, kind: str
) -> None:
    with psycopg.connect(pg_dsn) as caller:  # a caller's transaction this time
        caller.execute("set statement_timeout = '200ms'")
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="statement timeout") as info:
            keyed_call(kind)(WorkerUtils(caller, schema=migrated), locked_key)
        assert time.monotonic() - started < 10
        assert isinstance(info.value.__cause__, pg_errors.QueryCanceled)
        assert caller.info.transaction_status == pq.TransactionStatus.INERROR
        caller.rollback()
    assert_untouched(conn, migrated)


@pytest.mark.slow
def test_statement_timeout_on_a_large_batch_through_a_pool_writes_nothing_and_pool_goes_on(
    pg_dsn: str, conn: Conn, migrated: str
) -> None:
    with ConnectionPool(
        pg_dsn,
        min_size=1,
        max_size=1,
        kwargs={"options": "-c statement_timeout=100"},
        timeout=30,
        open=True,
    ) as pool:
        utils = WorkerUtils(pool, schema=migrated)
        # 1 kB payloads: a statement of this batch takes several times the 100 ms allowed.
        with pytest.raises(DatabaseError, match=r"add_jobs .*statement timeout") as info:
            utils.add_raw_jobs(big_batch("bulk", 20_000, pad=1000))
        assert isinstance(info.value.__cause__, pg_errors.QueryCanceled)
        assert count_jobs(conn, migrated, "bulk") == 0
        assert len(utils.add_raw_jobs(big_batch("small", 5))) == 5
    assert count_jobs(conn, migrated) == 5


# -- a caller's transaction that has already failed -------------------------------------------

OPERATIONS: dict[str, Callable[[WorkerUtils], object]] = {
    "add_raw_job": lambda u: u.add_raw_job("t", {"a": 1}),
    "add_raw_job_keyed": lambda u: u.add_raw_job("t", None, JobSpec(job_key="k")),
    "add_raw_jobs": lambda u: u.add_raw_jobs([RawJobSpec("t", {"a": 1}), RawJobSpec("u")]),
    "remove_job": lambda u: u.remove_job("k"),
    "complete_jobs": lambda u: u.complete_jobs([1]),
    "permanently_fail_jobs": lambda u: u.permanently_fail_jobs([1], "why"),
    "reschedule_jobs": lambda u: u.reschedule_jobs([1], RescheduleOptions(priority=1)),
    "force_unlock_workers": lambda u: u.force_unlock_workers(["w"]),
    "cleanup": lambda u: u.cleanup(list(CleanupTask)),
    "migrate": lambda u: u.migrate(),
    "schema_status": lambda u: u.schema_status(),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_failed_caller_transaction_raises_connection_state_error_and_sends_nothing(
    pg_dsn: str, conn: Conn, migrated: str, operation: str
) -> None:
    call = OPERATIONS[operation]
    with psycopg.connect(pg_dsn) as caller, tempfile.TemporaryFile() as wire:
        utils = WorkerUtils(caller, schema=migrated)
        with pytest.raises(psycopg.errors.DivisionByZero):
            caller.execute("select 1 / 0")
        # libpq's own trace of every message the connection sends or receives.
        caller.pgconn.trace(wire.fileno())
        try:
            with pytest.raises(
                ConnectionStateError,
                match=r"transaction has already failed"
                r".*roll it back",
            ):
                call(utils)
        finally:
            caller.pgconn.untrace()
        assert os.fstat(wire.fileno()).st_size == 0  # not one byte went to the server
        assert caller.info.transaction_status == pq.TransactionStatus.INERROR
        caller.rollback()
        call(utils)  # the same call is fine once the caller has rolled back
        caller.rollback()
    assert count_jobs(conn, migrated) == 0
