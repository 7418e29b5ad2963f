"""Single enqueues reuse one library cursor per connection and thread (README "Performance"):
that cursor must never show through. Threads sharing a connection, a caller reconfiguring its
connection after the first enqueue, closed and replaced connections (Django, pools), the
caller's prepared statements, DEALLOCATE ALL, migrations and ``prepare_threshold=None``
(PgBouncer) all leave the results as they would be with a new cursor per call.

Tests that look at the server's prepared statements connect to the server itself
(``pg_server.dsn``); the others use ``pg_dsn``, which goes through PgBouncer (with
``prepare_threshold=None``) when the suite runs through it.
"""

from __future__ import annotations

import datetime as dt
import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import pq, sql
from psycopg.adapt import Loader
from psycopg.rows import dict_row

from graphile_worker_utils import ConnectionStateError, Job, JobSpec, WorkerUtils
from tests._helpers import job_count
from tests._node import GraphileWorker
from tests._server import PgServer

Connection = psycopg.Connection[Any]
UTC = dt.timezone.utc
RUN_AT = dt.datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
THREADS = 6
PER_THREAD = 40


@pytest.fixture
def server_conn(pg_server: PgServer, migrated: str) -> Iterator[Connection]:
    """A caller's connection (not autocommit) straight to the server, with psycopg's default
    prepare_threshold (5); ``migrated`` is installed. Closed, never committed."""
    connection = psycopg.connect(pg_server.dsn)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def switch_often() -> Iterator[None]:
    """Threads switch every microsecond (instead of 5 ms) during the test."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def prepared(conn: Connection) -> dict[str, str]:
    """The statements prepared on ``conn``'s server session: name -> text."""
    with conn.cursor() as cur:
        cur.execute("select name, statement from pg_prepared_statements")
        return {str(name): str(statement) for name, statement in cur.fetchall()}


def enqueue_some(utils: WorkerUtils, count: int, tag: str) -> list[Job]:
    """``count`` jobs of one shape (one prepared variant), each checked against its input."""
    jobs = [utils.add_raw_job(f"task_{tag}", {"tag": tag, "n": n}) for n in range(count)]
    assert [(job.task_identifier, job.payload) for job in jobs] == [
        (f"task_{tag}", {"tag": tag, "n": n}) for n in range(count)
    ]
    return jobs


# --------------------------------------------------------------------------------------------
# Threads


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "caller_transaction"])
def test_threads_sharing_one_connection_each_get_their_own_jobs_back(
    pg_dsn: str, migrated: str, autocommit: bool, switch_often: None
) -> None:
    # psycopg connections are thread-safe, cursors are not: a cursor shared between threads
    # would hand one thread the row another thread's statement returned. Frequent thread
    # switches make that show at once.
    with psycopg.connect(pg_dsn, autocommit=autocommit) as conn:
        utils = WorkerUtils(conn, schema=migrated)
        start = threading.Barrier(THREADS)
        results: dict[int, list[Job]] = {}
        errors: list[BaseException] = []

        def work(thread: int) -> None:
            try:
                start.wait()
                results[thread] = [
                    utils.add_raw_job(
                        f"thread_{thread}", {"thread": thread, "n": n}, JobSpec(priority=thread)
                    )
                    for n in range(PER_THREAD)
                ]
            except BaseException as error:  # reported below, with the thread's jobs
                errors.append(error)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for t in range(THREADS):
            assert [(j.task_identifier, j.payload, j.priority) for j in results[t]] == [
                (f"thread_{t}", {"thread": t, "n": n}, t) for n in range(PER_THREAD)
            ]
        ids = [job.id for jobs in results.values() for job in jobs]
        assert len(set(ids)) == THREADS * PER_THREAD
        if not autocommit:
            conn.commit()
        assert job_count(conn, migrated) == THREADS * PER_THREAD


# --------------------------------------------------------------------------------------------
# The caller reconfigures its connection after the first enqueue


class _Marker:
    pass


class _MarkingBinary(Loader):
    format = pq.Format.BINARY

    def load(self, data: Any) -> _Marker:
        return _Marker()


def test_a_row_factory_and_loaders_set_after_the_first_enqueue_change_no_result(
    pg_dsn: str, migrated: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        utils = WorkerUtils(conn, schema=migrated)
        spec = JobSpec(queue_name="q", run_at=RUN_AT, flags=["f"], job_key="k", priority=2)
        first = utils.add_raw_job("task", {"n": 1}, spec)
        conn.row_factory = dict_row  # type: ignore[assignment]
        conn.cursor_factory = psycopg.ClientCursor
        for name in ("int8", "int4", "int2", "text", "timestamptz", "jsonb", "text[]"):
            conn.adapters.register_loader(name, _MarkingBinary)
        second = utils.add_raw_job("task", {"n": 1}, spec)
        assert (second.id, second.revision) == (first.id, first.revision + 1)  # replaced
        assert (second.task_identifier, second.queue_name) == ("task", "q")
        assert (second.payload, second.run_at, second.flags) == ({"n": 1}, RUN_AT, ["f"])
        assert (second.key, second.priority) == ("k", 2)
        assert isinstance(second.created_at, dt.datetime) and second.created_at.tzinfo is UTC
        # The caller's configuration is theirs, in force for their own statements.
        row: Any = conn.execute("select 1 as one").fetchone()
        assert row == {"one": 1}
        assert type(conn.cursor()) is psycopg.ClientCursor
        conn.rollback()


def test_a_client_encoding_changed_after_the_first_enqueue_is_followed(
    pg_dsn: str, migrated: str, admin: Connection
) -> None:
    # psycopg's dumpers read the client encoding once, when made: a cursor made for UTF8
    # would send LATIN1 text as UTF-8 bytes (mojibake) after a SET client_encoding.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        utils = WorkerUtils(conn, schema=migrated)
        utils.add_raw_job("caf\u00e9", {"v": "\u00e9t\u00e9"})
        conn.execute("set client_encoding to 'LATIN1'")
        job = utils.add_raw_job("caf\u00e9", {"v": "\u00e9t\u00e9"}, JobSpec(queue_name="\u00e0"))
        assert (job.task_identifier, job.payload, job.queue_name) == (
            "caf\u00e9",
            {"v": "\u00e9t\u00e9"},
            "\u00e0",
        )
        conn.execute("set client_encoding to 'UTF8'")
        utils.add_raw_job("caf\u00e9", {"v": "\u00e9t\u00e9"})
    query = sql.SQL(
        "select t.identifier, j.payload->>'v' from {s}._private_jobs j"
        " join {s}._private_tasks t on t.id = j.task_id"
    ).format(s=sql.Identifier(migrated))
    assert admin.execute(query).fetchall() == [("caf\u00e9", "\u00e9t\u00e9")] * 3


# --------------------------------------------------------------------------------------------
# Closed and replaced connections


def test_a_closed_connection_then_its_replacement_as_django_reconnects(
    pg_dsn: str, migrated: str
) -> None:
    first = psycopg.connect(pg_dsn)
    utils = WorkerUtils(first, schema=migrated)
    enqueue_some(utils, 3, "first")
    first.rollback()
    first.close()
    with pytest.raises(ConnectionStateError, match="closed"):
        utils.add_raw_job("after_close")
    with psycopg.connect(pg_dsn) as second:
        enqueue_some(utils.using(second), 3, "bound")
        enqueue_some(WorkerUtils(second, schema=migrated), 3, "new")
        second.commit()
        assert job_count(second, migrated) == 6


def test_no_connection_is_kept_alive_by_the_cursors_kept_for_it(pg_dsn: str, migrated: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        base = WorkerUtils(other, schema=migrated)
        conn = psycopg.connect(pg_dsn, autocommit=True)
        # Bound for one call (Django's and SQLAlchemy's helpers make one per call), on this
        # thread and on another that has ended since.
        enqueue_some(base.using(conn), 2, "bound")
        worker = threading.Thread(target=enqueue_some, args=(base.using(conn), 2, "thread"))
        worker.start()
        worker.join()
        # Kept by an instance for as long as that instance is.
        kept = WorkerUtils(conn, schema=migrated)
        enqueue_some(kept, 2, "kept")
        gone = weakref.ref(conn)
        conn.close()
        del conn, kept
        gc.collect()
        assert gone() is None
        enqueue_some(base, 2, "base")


def test_a_pool_replaces_a_connection_the_server_ended(
    pg_server: PgServer, migrated: str, admin: Connection
) -> None:
    with WorkerUtils.connect(pg_server.dsn, schema=migrated, min_size=1, max_size=1) as utils:
        enqueue_some(utils, 3, "before")
        pool = utils._target
        assert not isinstance(pool, psycopg.Connection)
        with pool.connection() as pooled:
            pid = pooled.info.backend_pid
        admin.execute("select pg_terminate_backend(%s)", [pid])
        enqueue_some(utils, 3, "after")
        with pool.connection() as pooled:
            assert pooled.info.backend_pid != pid
    assert job_count(admin, migrated) == 6


# --------------------------------------------------------------------------------------------
# Prepared statements


def test_prepare_threshold_none_prepares_nothing(pg_dsn: str, migrated: str) -> None:
    # PgBouncer in transaction mode (README): psycopg prepares nothing, and neither do we.
    with psycopg.connect(pg_dsn, prepare_threshold=None) as conn:
        utils = WorkerUtils(conn, schema=migrated)
        enqueue_some(utils, 12, "a")
        enqueue_some(utils.using(conn), 12, "b")
        assert prepared(conn) == {}
        conn.commit()
        assert job_count(conn, migrated) == 24


def test_the_callers_prepared_statements_are_left_as_they_were(
    server_conn: Connection, migrated: str
) -> None:
    conn, schema = server_conn, migrated
    conn.execute("prepare mine (int) as select $1 + 1")
    conn.execute("select %s::int * 2", [21], prepare=True)  # psycopg prepares it now
    before = prepared(conn)
    assert len(before) == 2
    utils = WorkerUtils(conn, schema=schema)
    enqueue_some(utils, 12, "a")
    after = prepared(conn)
    # Ours joined psycopg's own (after psycopg's threshold, as any statement does); nothing
    # of the caller's was deallocated or replaced.
    assert {name: after[name] for name in before} == before
    (ours,) = [text for name, text in after.items() if name not in before]
    assert ".add_job(" in ours
    assert conn.execute("execute mine (41)").fetchone() == (42,)
    assert conn.execute("select %s::int * 2", [21], prepare=True).fetchone() == (42,)
    enqueue_some(utils, 3, "b")
    conn.commit()
    assert job_count(conn, schema) == 15


@pytest.mark.parametrize(
    ("command", "autocommit"),
    [("deallocate all", False), ("deallocate all", True), ("discard all", True)],
)
def test_enqueues_go_on_after_the_caller_deallocates_everything(
    pg_server: PgServer, migrated: str, command: str, autocommit: bool
) -> None:
    with psycopg.connect(pg_server.dsn, autocommit=autocommit) as conn:
        utils = WorkerUtils(conn, schema=migrated)
        enqueue_some(utils, 8, "before")
        assert any(".add_job(" in text for text in prepared(conn).values())
        conn.execute(command)
        assert prepared(conn) == {}
        enqueue_some(utils, 8, "after")
        if not autocommit:
            conn.commit()
        assert job_count(conn, migrated) == 16


def test_enqueues_go_on_after_the_schema_is_dropped_and_installed_again(
    pg_server: PgServer, migrated: str, admin: Connection
) -> None:
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        utils = WorkerUtils(conn, schema=migrated)
        enqueue_some(utils, 8, "before")
        assert any(".add_job(" in text for text in prepared(conn).values())
        # Another session (a deploy) reinstalls the schema under the prepared statement.
        admin.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(migrated)))
        WorkerUtils(admin, schema=migrated).migrate()
        enqueue_some(utils, 8, "after")
        assert job_count(conn, migrated) == 8


def test_enqueues_go_on_when_another_session_upgrades_an_older_schema(
    pg_server: PgServer,
    schema: str,
    node_dsn: str,
    graphile_worker: GraphileWorker,
    admin: Connection,
) -> None:
    # graphile-worker 0.16.6 leaves revision 18; the library enqueues on it as it is.
    graphile_worker.migrate("0.16.6", node_dsn, schema)
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        utils = WorkerUtils(conn, schema=schema)
        enqueue_some(utils, 8, "at_18")
        assert WorkerUtils(admin, schema=schema).migrate().applied == (19, 20)
        enqueue_some(utils, 8, "at_20")
        assert job_count(conn, schema) == 16
