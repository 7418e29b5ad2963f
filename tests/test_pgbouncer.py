"""Behind PgBouncer in transaction pooling mode (README "PgBouncer").

Each test starts its own PgBouncer (``tests/_pgbouncer.py``) in front of the test server with
``default_pool_size = 1``: two client connections then share one server connection, so a
prepared statement that one client leaves on it is seen by the other, and one that a client
prepared is gone if its next transaction lands on another server connection. psycopg prepares a
statement on the server once it has run it ``prepare_threshold`` times (5 by default); with
``prepare_threshold=None`` it never does, and the library must not either.

PgBouncer 1.21 added ``max_prepared_statements``, with which PgBouncer itself tracks protocol
prepared statements and re-prepares them on whichever server connection a client gets; older
releases (Debian 12 ships 1.18) refuse the setting. The last tests assert what the installed
release does.

These tests need the ``pgbouncer`` binary: without it they skip, except on CI (``CI=true``)
where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    CleanupTask,
    GraphileWorkerError,
    JobSpec,
    RawJobSpec,
    RescheduleOptions,
    WorkerUtils,
)
from tests._helpers import ci_requires_everything
from tests._job_keys import (
    KEY,
    PENDING,
    assert_rescheduled_after_the_race,
    existing_job,
    race_for_key,
    replacement,
)
from tests._pgbouncer import (
    PREPARED_STATEMENTS_SINCE,
    PgBouncer,
    find_pgbouncer,
    pgbouncer_version,
    running_pgbouncer,
)
from tests._server import PgServer

Connection = psycopg.Connection[Any]
ALL_CLEANUP_TASKS = (
    CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS,
    CleanupTask.GC_TASK_IDENTIFIERS,
    CleanupTask.GC_JOB_QUEUES,
)
ENQUEUES = 50
DUPLICATE_PREPARED_STATEMENT = "42P05"  # psycopg.errors.DuplicatePreparedStatement


@pytest.fixture(scope="module")
def pgbouncer_binary() -> str:
    binary = find_pgbouncer()
    if binary is None:
        reason = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if ci_requires_everything():
            pytest.fail(
                f"{reason}; CI is set, so the PgBouncer tests may not be skipped", pytrace=False
            )
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="module")
def installed_version(pgbouncer_binary: str) -> tuple[int, ...]:
    return pgbouncer_version(pgbouncer_binary)


@pytest.fixture
def start_pgbouncer(
    pg_server: PgServer, pgbouncer_binary: str
) -> Iterator[Callable[..., PgBouncer]]:
    """Starts PgBouncers (transaction pooling) in front of the test server; all stopped after."""
    with ExitStack() as stack:

        def start(pool_size: int = 1, **settings: str) -> PgBouncer:
            return stack.enter_context(
                running_pgbouncer(
                    pg_server, binary=pgbouncer_binary, pool_size=pool_size, settings=settings
                )
            )

        yield start


def two_clients(
    stack: ExitStack, bouncer: PgBouncer, **connect_kwargs: Any
) -> tuple[Connection, Connection]:
    return (
        stack.enter_context(psycopg.connect(bouncer.dsn, autocommit=True, **connect_kwargs)),
        stack.enter_context(psycopg.connect(bouncer.dsn, autocommit=True, **connect_kwargs)),
    )


def server_pid(conn: Connection) -> int:
    (pid,) = conn.execute("select pg_backend_pid()").fetchone()  # type: ignore[misc]
    return int(pid)


def prepared_statements(conn: Connection) -> list[str]:
    """The statements prepared on the server connection this client's next query runs on."""
    return [
        row[0] for row in conn.execute("select statement from pg_prepared_statements order by name")
    ]


def count(conn: Connection, schema: str, name: str = "_private_jobs") -> int:
    query = sql.SQL("select count(*) from {}.{}").format(
        sql.Identifier(schema), sql.Identifier(name)
    )
    (n,) = conn.execute(query).fetchone()  # type: ignore[misc]
    return int(n)


def enqueue_and_maintain(first: WorkerUtils, second: WorkerUtils) -> None:
    """50 enqueues, a batch each and every maintenance operation, alternating two clients.

    Every statement runs on both clients, most more than psycopg's default threshold of 5
    times, so a statement prepared on the shared server connection by one client collides
    with the other's.
    """
    clients = (first, second)
    jobs = [
        clients[i % 2].add_raw_job(
            "send_email",
            {"i": i},
            JobSpec(queue_name=f"q{i % 3}", job_key=f"k{i}" if i % 5 == 0 else None),
        )
        for i in range(ENQUEUES)
    ]
    assert [(job.task_identifier, job.payload) for job in jobs] == [
        ("send_email", {"i": i}) for i in range(ENQUEUES)
    ]
    assert [job.queue_name for job in jobs] == [f"q{i % 3}" for i in range(ENQUEUES)]
    batches = [
        utils.add_raw_jobs(
            [
                RawJobSpec("batch", {"client": c, "n": n}, JobSpec(queue_name="bq"))
                for n in range(10)
            ]
        )
        for c, utils in enumerate(clients)
    ]
    assert [[job.payload for job in batch] for batch in batches] == [
        [{"client": c, "n": n} for n in range(10)] for c in range(2)
    ]
    ids = [job.id for job in jobs]

    completed = first.complete_jobs(ids[0:5]) + second.complete_jobs(ids[5:10])
    assert sorted(job.id for job in completed) == ids[0:10]
    failed = first.permanently_fail_jobs(ids[10:15], "first") + second.permanently_fail_jobs(
        ids[15:20], "second"
    )
    assert sorted(job.id for job in failed) == ids[10:20]
    assert {job.last_error for job in failed} == {"first", "second"}
    rescheduled = first.reschedule_jobs(
        ids[20:25], RescheduleOptions(priority=3)
    ) + second.reschedule_jobs(ids[25:30], RescheduleOptions(priority=4))
    assert sorted((job.id, job.priority) for job in rescheduled) == (
        [(i, 3) for i in ids[20:25]] + [(i, 4) for i in ids[25:30]]
    )
    removed = [first.remove_job("k30"), second.remove_job("k35"), first.remove_job("nope")]
    assert [job and job.id for job in removed] == [ids[30], ids[35], None]
    first.force_unlock_workers(["worker-1"])
    second.force_unlock_workers(["worker-2"])
    assert first.cleanup(ALL_CLEANUP_TASKS) == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 10,
        CleanupTask.GC_TASK_IDENTIFIERS: 0,
        CleanupTask.GC_JOB_QUEUES: 0,
    }
    assert second.cleanup(ALL_CLEANUP_TASKS) == dict.fromkeys(ALL_CLEANUP_TASKS, 0)


def database_error_code(error: BaseException) -> str | None:
    """The SQLSTATE of the first psycopg error in ``error``'s chain (the library wraps them)."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, psycopg.Error) and current.sqlstate:
            return current.sqlstate
        current = current.__cause__ or current.__context__
    return None


# --------------------------------------------------------------------------------------------
# prepare_threshold=None: everything works through one multiplexed server connection


def test_enqueues_a_batch_and_maintenance_work_through_one_shared_server_connection(
    start_pgbouncer: Callable[..., PgBouncer], admin: Connection, schema: str
) -> None:
    bouncer = start_pgbouncer(pool_size=1)
    with ExitStack() as stack:
        a, b = two_clients(stack, bouncer, prepare_threshold=None)
        first, second = WorkerUtils(a, schema=schema), WorkerUtils(b, schema=schema)
        # PgBouncer hands both clients the one server connection it has.
        assert server_pid(a) == server_pid(b)
        assert first.migrate().installed

        enqueue_and_maintain(first, second)

        assert server_pid(a) == server_pid(b)
        # Nothing was prepared on it: neither by psycopg nor by the library.
        assert prepared_statements(a) == []
    assert count(admin, schema) == ENQUEUES + 20 - 10 - 10 - 2
    assert count(admin, schema, "_private_tasks") == 2
    assert count(admin, schema, "_private_job_queues") == 4


def test_a_pool_and_a_callers_transaction_work_through_one_shared_server_connection(
    start_pgbouncer: Callable[..., PgBouncer], admin: Connection, schema: str
) -> None:
    bouncer = start_pgbouncer(pool_size=1)
    with (
        ConnectionPool(
            bouncer.dsn, min_size=2, max_size=2, kwargs={"prepare_threshold": None}
        ) as pool,
        WorkerUtils.connect(bouncer.dsn, schema=schema, prepare_threshold=None) as owning,
        psycopg.connect(bouncer.dsn, prepare_threshold=None) as caller,
    ):
        pooled = WorkerUtils(pool, schema=schema)
        pooled.migrate()
        for i in range(10):
            (pooled if i % 2 else owning).add_raw_job("pooled", {"i": i})
        # The caller's transaction holds the server connection until it ends; a rollback
        # takes its jobs with it.
        in_transaction = owning.using(caller)
        in_transaction.add_raw_jobs([RawJobSpec("rolled_back", {"n": n}) for n in range(3)])
        caller.rollback()
        for i in range(6):
            in_transaction.add_raw_job("committed", {"i": i})
        caller.commit()
        with caller.cursor() as cur:
            assert cur.execute("select count(*) from pg_prepared_statements").fetchone() == (0,)
        caller.rollback()
    assert count(admin, schema) == 16


def test_the_key_race_retry_works_through_pgbouncer(
    start_pgbouncer: Callable[..., PgBouncer],
    pg_server: PgServer,
    admin: Connection,
    schema: str,
) -> None:
    # The locker and the monitor of the race go straight to the server (the harness needs real
    # backend pids, which PgBouncer hides); the racing enqueue goes through PgBouncer.
    bouncer = start_pgbouncer(pool_size=2)
    with ConnectionPool(
        bouncer.dsn, min_size=1, max_size=1, kwargs={"prepare_threshold": None}
    ) as pool:
        pooled = WorkerUtils(pool, schema=schema)
        pooled.migrate()
        old = existing_job(pooled, admin, schema, PENDING)

        outcome = race_for_key(
            pg_server.dsn,
            schema,
            KEY,
            lambda: pooled.add_raw_job("send_invoice", {"v": "new"}, replacement(None)),
        )

    assert outcome.error is None, repr(outcome.error)
    assert_rescheduled_after_the_race(admin, schema, old, outcome.result)


# --------------------------------------------------------------------------------------------
# psycopg's default prepare_threshold


def test_the_default_prepare_threshold_fails_through_transaction_pooling(
    start_pgbouncer: Callable[..., PgBouncer], installed_version: tuple[int, ...], schema: str
) -> None:
    # Without PgBouncer's own prepared-statement support (none before 1.21; switched off here
    # on newer ones), psycopg's statement "_pg3_0", prepared by the first client on the shared
    # server connection, is already there when the second client prepares its own "_pg3_0".
    settings = {}
    if installed_version >= PREPARED_STATEMENTS_SINCE:
        settings["max_prepared_statements"] = "0"
    bouncer = start_pgbouncer(pool_size=1, **settings)
    with ExitStack() as stack:
        a, b = two_clients(stack, bouncer)
        assert a.prepare_threshold is not None  # psycopg's default (5)
        first, second = WorkerUtils(a, schema=schema), WorkerUtils(b, schema=schema)
        first.migrate()
        for i in range(10):
            first.add_raw_job("send_email", {"i": i})
        assert any("add_job" in statement for statement in prepared_statements(a))

        with pytest.raises((GraphileWorkerError, psycopg.Error)) as caught:
            for i in range(10):
                second.add_raw_job("send_email", {"i": i})
        assert database_error_code(caught.value) == DUPLICATE_PREPARED_STATEMENT, repr(caught.value)


def test_what_the_installed_pgbouncer_does_with_max_prepared_statements(
    start_pgbouncer: Callable[..., PgBouncer],
    installed_version: tuple[int, ...],
    admin: Connection,
    schema: str,
) -> None:
    if installed_version < PREPARED_STATEMENTS_SINCE:
        # PgBouncer < 1.21 does not know the setting and refuses to start with it: there is
        # no way to keep psycopg's prepared statements behind it in transaction pooling mode.
        with pytest.raises(RuntimeError, match=r"unknown parameter: pgbouncer/max_prepared_"):
            start_pgbouncer(pool_size=1, max_prepared_statements="200")
        return
    # PgBouncer >= 1.21 prepares each client's statements on the server connection it gets,
    # under names of its own: psycopg's default threshold works.
    bouncer = start_pgbouncer(pool_size=1, max_prepared_statements="200")
    with ExitStack() as stack:
        a, b = two_clients(stack, bouncer)
        assert a.prepare_threshold is not None
        first, second = WorkerUtils(a, schema=schema), WorkerUtils(b, schema=schema)
        assert server_pid(a) == server_pid(b)
        first.migrate()
        enqueue_and_maintain(first, second)
    assert count(admin, schema) == ENQUEUES + 20 - 10 - 10 - 2
