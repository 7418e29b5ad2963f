"""Several graphile-worker schemas in one database: what each migration notifies, and who hears.

graphile-worker's ``worker:migrate`` channel is per database and its payload names no schema,
so every pool of every schema of the database takes a breaking notice as its own and shuts
down. A fresh install must send none (no worker can serve a schema that had no revision);
upgrades of an existing schema notify as graphile-worker does. ``demo`` on a user's database
refuses one where pools are listening, unless ``--yes``.

Each test gets a database of its own (notifications cross schemas, and other tests share the
server). Whether a notification was sent is checked with a sentinel sent afterwards: PostgreSQL
delivers notifications in commit order, so whatever arrives before the sentinel is everything
that was committed before it, and no test waits a fixed time for "nothing".
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from graphile_worker_utils import MigrationReport, WorkerUtils
from graphile_worker_utils.cli import ExitCode
from tests._cli import assert_one_line_error, clean_env, run
from tests._helpers import Database, drop_role, unique_name
from tests._node import GraphileWorker
from tests._server import PgServer
from tests._worker import WAIT_TIMEOUT, NodeWorker, Workers

Conn = psycopg.Connection[Any]
CHANNEL = "worker:migrate"
# What graphile-worker 0.18.0 sends per revision (JSON.stringify({migrationNumber, breaking})).
NOTICE_19 = '{"migrationNumber":19,"breaking":true}'
NOTICE_20 = '{"migrationNumber":20,"breaking":false}'


@pytest.fixture
def database(fresh_database: Database) -> Database:
    """An empty database of this test's own (``fresh_database``): notifications cross schemas."""
    return fresh_database


@pytest.fixture
def tenant_workers(database: Database, graphile_worker: GraphileWorker) -> Iterator[Workers]:
    """Real graphile-worker pools on ``database``, stopped (or killed) at teardown."""
    started = Workers(graphile_worker.node, database)
    try:
        yield started
    finally:
        started.close()


def send_sentinel(conn: Conn) -> str:
    """Send a notice no worker acts on (no ``breaking``) on the channel; its payload."""
    payload = json.dumps({"sentinel": uuid.uuid4().hex})
    conn.execute("select pg_notify(%s, %s)", [CHANNEL, payload])
    return payload


def notices_before_sentinel(listener: Conn, sender: Conn) -> list[str]:
    """The ``worker:migrate`` payloads committed before now, as ``listener`` received them."""
    sentinel = send_sentinel(sender)
    payloads: list[str] = []
    for notice in listener.notifies(timeout=WAIT_TIMEOUT):
        if notice.payload == sentinel:
            return payloads
        payloads.append(notice.payload)
    raise AssertionError(f"the sentinel notice never arrived; before it: {payloads}")


def pool_notices_before_sentinel(pool: NodeWorker, sender: Conn, after: int) -> list[str]:
    """The ``worker:migrate`` payloads the pool heard since report ``after``, up to now."""
    sentinel = send_sentinel(sender)
    seen = pool.wait_event(
        "notification",
        where=lambda report: report["payload"] == sentinel,
        after=after,
        what="expected the pool to hear the sentinel notice (it should still be running)",
    )
    return [
        report["payload"]
        for report in pool.reports[after : pool.position(seen)]
        if report["event"] == "notification" and report["channel"] == CHANNEL
    ]


def listening(database: Database) -> Conn:
    connection = database.connect()
    connection.execute(sql.SQL("listen {}").format(sql.Identifier(CHANNEL)))
    return connection


def demo_schemas(conn: Conn) -> list[str]:
    rows = conn.execute("select nspname from pg_namespace where nspname like 'gwu\\_demo\\_%'")
    return [row[0] for row in rows]


def demo(database: Database, *args: str, dsn: str | None = None) -> Any:
    """``DATABASE_URL=… graphile-worker-utils demo``, as the README shows it."""
    return run("demo", *args, env=clean_env(DATABASE_URL=dsn or database.dsn))


# -- what migrate() notifies ------------------------------------------------------------------


def test_fresh_installs_send_no_migration_notice(database: Database) -> None:
    with listening(database) as listener, database.connect() as conn:
        assert WorkerUtils(conn, schema="tenant_b").migrate().installed
        conn.execute("create schema tenant_c")  # exists, and so does an empty migrations table
        conn.execute("create table tenant_c.migrations (id int primary key)")
        assert WorkerUtils(conn, schema="tenant_c").migrate().installed
        with psycopg.connect(database.dsn) as caller:  # the caller's transaction commits it
            assert WorkerUtils(caller, schema="tenant_d").migrate().installed
            caller.commit()
        done = run("migrate", "-c", database.dsn, "-s", "tenant_e")
        assert done.returncode == 0, done.stderr
        assert "installed schema 'tenant_e' at revision 20" in done.stdout

        assert notices_before_sentinel(listener, conn) == []


def test_racing_fresh_installs_send_nothing_and_only_one_installs(database: Database) -> None:
    schema = "tenant_race"
    key = "select hashtextextended('graphile_worker_utils.migrate:' || %s, 0)"
    reports: list[MigrationReport] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            with database.connect() as own:
                reports.append(WorkerUtils(own, schema=schema).migrate())
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    with listening(database) as listener, database.connect() as gate:
        row = gate.execute(key, [schema]).fetchone()
        assert row is not None
        gate.execute("select pg_advisory_lock(%s)", [row[0]])
        threads = [threading.Thread(target=migrate) for _ in range(2)]
        for thread in threads:
            thread.start()
        wait_for_lock_waiters(gate, 2)
        gate.execute("select pg_advisory_unlock(%s)", [row[0]])
        for thread in threads:
            thread.join(WAIT_TIMEOUT)
        assert errors == []
        assert sorted((r.installed, r.applied, r.revision) for r in reports) == [
            (False, (), 20),
            (True, tuple(range(1, 21)), 20),
        ]
        assert notices_before_sentinel(listener, gate) == []


def wait_for_lock_waiters(conn: Conn, count: int) -> None:
    """Poll pg_locks until ``count`` sessions wait for an advisory lock in this database."""
    query = (
        "select count(*) from pg_locks where locktype = 'advisory' and not granted"
        " and database = (select oid from pg_database where datname = current_database())"
    )
    for _ in range(int(WAIT_TIMEOUT / 0.02)):
        row = conn.execute(query).fetchone()
        if row and row[0] >= count:
            return
        conn.execute("select pg_sleep(0.02)")
    raise AssertionError(f"expected {count} migrators waiting on the lock")


def test_an_upgrade_from_18_notifies_each_revision_as_graphile_worker_does(
    database: Database, graphile_worker: GraphileWorker
) -> None:
    for schema in ("ours", "theirs"):
        graphile_worker.migrate("0.16.6", database.node_dsn, schema)
    with listening(database) as listener, database.connect() as conn:
        assert WorkerUtils(conn, schema="ours").migrate().applied == (19, 20)
        ours = notices_before_sentinel(listener, conn)
        graphile_worker.migrate("0.18.0", database.node_dsn, "theirs")
        theirs = notices_before_sentinel(listener, conn)
    assert theirs == [NOTICE_19, NOTICE_20], "graphile-worker 0.18.0's own upgrade from 18"
    assert ours == theirs


def test_an_upgrade_with_only_non_breaking_revisions_notifies_breaking_false(
    database: Database, graphile_worker: GraphileWorker
) -> None:
    graphile_worker.migrate("0.17.3", database.node_dsn, "tenant_19")
    with listening(database) as listener, database.connect() as conn:
        done = run("migrate", "-c", database.dsn, "-s", "tenant_19")
        assert done.returncode == 0, done.stderr
        assert "to revision 20 (applied 20)" in done.stdout
        assert notices_before_sentinel(listener, conn) == [NOTICE_20]


# -- real pools --------------------------------------------------------------------------------


def test_a_pool_keeps_running_while_other_schemas_are_installed_and_demo_runs(
    database: Database, tenant_workers: Workers
) -> None:
    with database.connect() as conn:
        utils = WorkerUtils(conn, schema="tenant_a")
        utils.migrate()
        pool = tenant_workers.start("tenant_a", {"rec": {}})
        start = pool.mark()

        WorkerUtils(conn, schema="tenant_b").migrate()
        assert run("migrate", "-c", database.dsn, "-s", "tenant_c").returncode == 0
        refused = demo(database)
        ran = demo(database, "--yes")

        assert pool_notices_before_sentinel(pool, conn, start) == []
        job = utils.add_raw_job("rec", {"after": "the installs and the demo"})
        pool.wait_completed(job.id)
        assert not pool.events("exit") and not pool.events("fatal"), pool.describe()

        line = assert_one_line_error(refused, ExitCode.USAGE)
        assert "1 session(s) listening on graphile-worker's channels" in line
        assert "--yes" in line
        assert f"demo on database {database.name!r}" in refused.stdout
        assert "gwu_demo_" in refused.stdout
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "going on as --yes says" in ran.stdout
        assert "dropped the scratch schema" in ran.stdout
        assert demo_schemas(conn) == []


def test_a_breaking_upgrade_of_the_pools_own_schema_still_shuts_it_down(
    database: Database, tenant_workers: Workers, graphile_worker: GraphileWorker
) -> None:
    graphile_worker.migrate("0.16.6", database.node_dsn, "tenant_a")
    pool = tenant_workers.start("tenant_a", {"rec": {}}, package="graphile-worker-0.16")
    start = pool.mark()

    done = run("migrate", "-c", database.dsn, "-s", "tenant_a")

    assert done.returncode == 0, done.stderr
    assert "to revision 20 (applied 19, 20)" in done.stdout
    pool.wait_event(
        "exit", after=start, what="expected the 0.16.6 pool to shut down on breaking revision 19"
    )
    heard = [
        r["payload"]
        for r in pool.reports[start:]
        if r["event"] == "notification" and r["channel"] == CHANNEL
    ]
    assert heard[:1] == [NOTICE_19], pool.describe()


# -- demo's guard ------------------------------------------------------------------------------


def test_demo_refuses_while_a_listener_is_on_and_runs_once_it_unlistened(
    database: Database,
) -> None:
    with database.connect() as pool_like, database.connect() as conn:
        # The statement a graphile-worker pool's listening connection runs, and nothing after.
        pool_like.execute('LISTEN "jobs:insert"; LISTEN "worker:migrate";')
        refused = demo(database)
        pool_like.execute('UNLISTEN "jobs:insert"; UNLISTEN "worker:migrate";')
        ran = demo(database)
        schemas = demo_schemas(conn)

    line = assert_one_line_error(refused, ExitCode.USAGE)
    assert "1 session(s) listening" in line and "--yes" in line
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "no graphile-worker pool is listening on this database" in ran.stdout
    assert schemas == []


@pytest.fixture
def plain_role(pg_server: PgServer) -> Iterator[Callable[[Database], str]]:
    """A login role without pg_read_all_stats: its connection string to a database."""
    name = unique_name("role_")
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create role {} login").format(sql.Identifier(name)))
    try:
        yield lambda database: make_conninfo(database.dsn, user=name)
    finally:
        drop_role(pg_server, name)


def test_demo_refuses_when_it_cannot_see_other_sessions(
    database: Database, plain_role: Callable[[Database], str]
) -> None:
    with database.connect():  # a superuser's session: its statements are hidden from the role
        refused = demo(database, dsn=plain_role(database))
    line = assert_one_line_error(refused, ExitCode.USAGE)
    assert "may not see" in line and "--yes" in line
