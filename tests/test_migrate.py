"""migrate() and schema_status(): docs/schema.md §4, against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import (
    BREAKING_REVISIONS,
    LATEST_REVISION,
    IncompatibleSchemaError,
    InvalidSchemaName,
    SchemaState,
    SchemaTooOldError,
    UnsupportedServerError,
    WorkerUtils,
)
from graphile_worker_utils._migrations import _check, _Revisions
from tests._catalog import diff, snapshot
from tests._helpers import REPO_ROOT, Database
from tests._node import GraphileWorker
from tests._server import PgServer

Conn = psycopg.Connection[Any]
EXPECTED_BREAKING = {1, 3, 11, 13, 14, 16, 19}


def migration_rows(conn: Conn, schema: str) -> list[tuple[int, bool]]:
    query = sql.SQL("select id, breaking from {}.migrations order by id").format(
        sql.Identifier(schema)
    )
    return [(row[0], row[1]) for row in conn.execute(query)]


def expected_rows(upto: int = LATEST_REVISION) -> list[tuple[int, bool]]:
    return [(i, i in EXPECTED_BREAKING) for i in range(1, upto + 1)]


def make_migrations_table(conn: Conn, schema: str, ids: range, *, breaking_column: bool) -> None:
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL("create schema {}").format(ident))
    if breaking_column:
        conn.execute(
            sql.SQL(
                "create table {}.migrations (id int primary key, ts timestamptz not null"
                " default now(), breaking boolean not null default false)"
            ).format(ident)
        )
        conn.execute(
            sql.SQL(
                "insert into {}.migrations (id, breaking)"
                " select i, i = any(%s) from unnest(%s::int[]) i"
            ).format(ident),
            [sorted(EXPECTED_BREAKING), list(ids)],
        )
    else:
        conn.execute(
            sql.SQL(
                "create table {}.migrations"
                " (id int primary key, ts timestamptz not null default now())"
            ).format(ident)
        )
        conn.execute(
            sql.SQL("insert into {}.migrations (id) select unnest(%s::int[])").format(ident),
            [list(ids)],
        )


def test_breaking_revisions_match_the_contract() -> None:
    assert set(BREAKING_REVISIONS) == EXPECTED_BREAKING
    assert LATEST_REVISION == 20


def test_fresh_schema_ends_at_revision_20_with_breaking_flags(conn: Conn, schema: str) -> None:
    report = WorkerUtils(conn, schema=schema).migrate()
    assert report.applied == tuple(range(1, 21))
    assert report.revision == 20
    assert report.installed
    assert migration_rows(conn, schema) == expected_rows()


def test_status_of_a_missing_then_current_schema(conn: Conn, schema: str) -> None:
    utils = WorkerUtils(conn, schema=schema)
    before = utils.schema_status()
    assert before.state is SchemaState.MISSING
    assert before.revision is None
    assert before.can_migrate
    utils.migrate()
    after = utils.schema_status()
    assert (after.state, after.revision, after.breaking_revision) == (SchemaState.CURRENT, 20, 19)


def test_schema_status_writes_nothing(conn: Conn, schema: str) -> None:
    WorkerUtils(conn, schema=schema).schema_status()
    found = conn.execute("select 1 from pg_namespace where nspname = %s", [schema]).fetchone()
    assert found is None


def test_rerunning_migrate_is_a_no_op(conn: Conn, schema: str) -> None:
    utils = WorkerUtils(conn, schema=schema)
    utils.migrate()
    query = sql.SQL("select id, ts from {}.migrations order by id").format(sql.Identifier(schema))
    before = conn.execute(query).fetchall()
    catalog_before = snapshot(conn, schema)
    report = utils.migrate()
    assert report.applied == ()
    assert report.revision == 20
    assert not report.installed
    assert conn.execute(query).fetchall() == before
    assert diff(catalog_before, snapshot(conn, schema)) == []


def test_newer_breaking_revision_is_refused_naming_both_numbers(conn: Conn, schema: str) -> None:
    utils = WorkerUtils(conn, schema=schema)
    utils.migrate()
    conn.execute(
        sql.SQL("insert into {}.migrations (id, breaking) values (21, true)").format(
            sql.Identifier(schema)
        )
    )
    assert utils.schema_status().state is SchemaState.AHEAD_INCOMPATIBLE
    assert not utils.schema_status().can_migrate
    with pytest.raises(IncompatibleSchemaError, match=r"breaking revision 21.*revision 20") as info:
        utils.migrate()
    assert (info.value.database_revision, info.value.known_revision) == (21, 20)
    assert migration_rows(conn, schema)[-1] == (21, True)


def test_newer_non_breaking_revision_warns_and_carries_on(conn: Conn, schema: str) -> None:
    utils = WorkerUtils(conn, schema=schema)
    utils.migrate()
    conn.execute(
        sql.SQL("insert into {}.migrations (id, breaking) values (21, false)").format(
            sql.Identifier(schema)
        )
    )
    assert utils.schema_status().state is SchemaState.AHEAD_COMPATIBLE
    with pytest.warns(UserWarning, match=r"revision 21, newer than revision 20"):
        report = utils.migrate()
    assert report.applied == ()
    assert report.revision == 21


def test_schema_below_16_is_refused_with_upgrade_advice(conn: Conn, schema: str) -> None:
    make_migrations_table(conn, schema, range(1, 15), breaking_column=True)
    utils = WorkerUtils(conn, schema=schema)
    status = utils.schema_status()
    assert (status.state, status.revision, status.can_migrate) == (SchemaState.BEHIND, 14, False)
    with pytest.raises(SchemaTooOldError, match=r"revision 14.*graphile-worker 0\.16 or newer"):
        utils.migrate()
    assert migration_rows(conn, schema) == expected_rows(14)


def test_very_old_migrations_table_gets_its_breaking_column_then_is_refused(
    conn: Conn, schema: str
) -> None:
    make_migrations_table(conn, schema, range(1, 11), breaking_column=False)
    with pytest.raises(SchemaTooOldError, match="revision 10"):
        WorkerUtils(conn, schema=schema).migrate()
    # As graphile-worker's own migrator does, the known breaking ids are flagged.
    assert migration_rows(conn, schema) == expected_rows(10)


def test_postgresql_below_12_is_refused() -> None:
    # No PostgreSQL 11 server can be started here; the decision is tested on the value the
    # server reports (server_version_num), which the tests below read from the real server.
    old = _Revisions(
        server_version_num=110022,
        revision=None,
        breaking_revision=None,
        has_breaking_column=False,
        has_migrations_table=False,
    )
    with pytest.raises(UnsupportedServerError, match=r"110022.*PostgreSQL 12"):
        _check(old, "graphile_worker")


def test_status_reports_the_real_server_version(conn: Conn, schema: str) -> None:
    status = WorkerUtils(conn, schema=schema).schema_status()
    assert status.server_version_num == conn.info.server_version
    assert status.server_version_num >= 120000


def test_migrate_inside_a_caller_transaction_is_undone_by_its_rollback(
    pg_dsn: str, schema: str
) -> None:
    with psycopg.connect(pg_dsn) as caller:
        caller.execute("select 1")  # the caller's transaction is open
        report = WorkerUtils(caller, schema=schema).migrate()
        assert report.revision == 20
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        caller.rollback()
        gone = caller.execute("select 1 from pg_namespace where nspname = %s", [schema])
        assert gone.fetchone() is None


def test_migrate_on_an_idle_non_autocommit_connection_leaves_the_commit_to_the_caller(
    pg_dsn: str, schema: str, conn: Conn
) -> None:
    with psycopg.connect(pg_dsn) as caller:
        WorkerUtils(caller, schema=schema).migrate()
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert WorkerUtils(conn, schema=schema).schema_status().state is SchemaState.MISSING
        caller.commit()
    assert WorkerUtils(conn, schema=schema).schema_status().state is SchemaState.CURRENT


def test_migrate_from_a_pool(pg_dsn: str, schema: str, conn: Conn) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(pg_dsn, min_size=1, max_size=1) as pool:
        assert WorkerUtils(pool, schema=schema).migrate().revision == 20
    assert migration_rows(conn, schema) == expected_rows()


@pytest.mark.parametrize(
    "odd",
    ['x"; drop table y; --', "it's $gw$ odd $$", "Schéma ünïcode 🐘", "with space", "x" * 55],
)
def test_odd_schema_names_are_quoted_not_pasted(conn: Conn, odd: str) -> None:
    name = f"{odd}{uuid.uuid4().hex[:8]}"  # unique, so parallel sessions never collide
    try:
        assert WorkerUtils(conn, schema=name).migrate().revision == 20
        assert migration_rows(conn, name) == expected_rows()
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("select id from {}.add_job('t')").format(ident))
        rows = conn.execute(sql.SQL("select task_identifier from {}.jobs").format(ident))
        assert rows.fetchall() == [("t",)]
        assert conn.execute("select to_regclass('y')").fetchone() == (None,)
    finally:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def test_schema_name_over_63_bytes_is_refused_not_truncated(conn: Conn) -> None:
    with pytest.raises(InvalidSchemaName, match="over PostgreSQL's limit of 63"):
        WorkerUtils(conn, schema="é" * 32)


# -- upgrades from what graphile-worker left ------------------------------------------------


@pytest.mark.parametrize(("version", "revision"), [("0.16.6", 18), ("0.17.3", 19)])
def test_schema_left_by_older_graphile_worker_is_upgraded_to_20(
    conn: Conn,
    schema: str,
    node_dsn: str,
    graphile_worker: GraphileWorker,
    version: str,
    revision: int,
) -> None:
    graphile_worker.migrate(version, node_dsn, schema)
    utils = WorkerUtils(conn, schema=schema)
    assert utils.schema_status().revision == revision
    report = utils.migrate()
    assert report.applied == tuple(range(revision + 1, 21))
    assert migration_rows(conn, schema) == expected_rows()


def test_rust_crate_revision_19_counts_as_19(
    conn: Conn, schema: str, node_dsn: str, graphile_worker: GraphileWorker
) -> None:
    # The Rust crate (0.11.3+) records its own row 19 with breaking = false.
    graphile_worker.migrate("0.17.3", node_dsn, schema)
    conn.execute(
        sql.SQL("update {}.migrations set breaking = false where id = 19").format(
            sql.Identifier(schema)
        )
    )
    utils = WorkerUtils(conn, schema=schema)
    status = utils.schema_status()
    assert (status.state, status.revision, status.breaking_revision) == (
        SchemaState.BEHIND,
        19,
        16,
    )
    assert utils.migrate().applied == (20,)
    rows = migration_rows(conn, schema)
    assert rows[18] == (19, False)
    assert [r[0] for r in rows] == list(range(1, 21))


def test_revision_16_schema_is_upgraded_through_17_and_18(
    conn: Conn,
    schema: str,
    node_dsn: str,
    graphile_worker: GraphileWorker,
    reference_catalog: dict[str, Any],
) -> None:
    # No released graphile-worker stops at 16; rebuild that state from 0.16.6's revision 18:
    # no jobs view, and a notifying insert trigger on _private_jobs (what 18 removed).
    graphile_worker.migrate("0.16.6", node_dsn, schema)
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL("delete from {}.migrations where id > 16").format(ident))
    conn.execute(sql.SQL("drop view {}.jobs").format(ident))
    conn.execute(
        sql.SQL(
            "create function {}.tg_jobs__notify_new_jobs() returns trigger language plpgsql as"
            " $$ begin perform pg_notify('jobs:insert', ''); return new; end; $$"
        ).format(ident)
    )
    conn.execute(
        sql.SQL(
            "create trigger _900_notify_worker after insert on {}._private_jobs"
            " for each statement execute procedure {}.tg_jobs__notify_new_jobs()"
        ).format(ident, ident)
    )
    report = WorkerUtils(conn, schema=schema).migrate()
    assert report.applied == (17, 18, 19, 20)
    assert (
        diff(reference_catalog, snapshot(conn, schema), left_name="0.18.0", right_name="ours") == []
    )


# -- many migrators at once -----------------------------------------------------------------

_MIGRATOR = textwrap.dedent(
    """
    import sys, psycopg
    from graphile_worker_utils import WorkerUtils
    barrier_dsn, dsn, schema = sys.argv[1:4]
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Wait on an advisory lock the test holds, so that every process starts together.
        conn.execute("select pg_advisory_lock_shared(4242)")
        report = WorkerUtils(conn, schema=schema).migrate()
        print(report.revision, len(report.applied))
    """
)


def test_many_processes_migrating_at_once_all_succeed(
    fresh_database: Database,
    pg_server: PgServer,
    graphile_worker: GraphileWorker,
    reference_catalog: dict[str, Any],
) -> None:
    schema = "graphile_worker"
    with psycopg.connect(fresh_database.dsn, autocommit=True) as gate:
        gate.execute("select pg_advisory_lock(4242)")
        pythons = [
            subprocess.Popen(
                [sys.executable, "-c", _MIGRATOR, fresh_database.dsn, fresh_database.dsn, schema],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        # Let them all queue on the gate, then release them with two Node migrators.
        deadline = 30
        for _ in range(deadline * 20):
            waiting = gate.execute(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted"
            ).fetchone()
            if waiting and waiting[0] >= len(pythons):
                break
            time.sleep(0.05)
        nodes = [
            subprocess.Popen(
                [
                    graphile_worker.node,
                    str(graphile_worker.cli("0.18.0")),
                    "-c",
                    fresh_database.node_dsn,
                    "-s",
                    schema,
                    "--schema-only",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        gate.execute("select pg_advisory_unlock(4242)")
        results = [(p, *p.communicate(timeout=120)) for p in pythons + nodes]
    failures = [(p.args[-3:], p.returncode, err) for p, _, err in results if p.returncode != 0]  # type: ignore[index]
    assert failures == []
    installs = [out.split() for p, out, _ in results[: len(pythons)]]
    assert all(revision == "20" for revision, _ in installs)
    with psycopg.connect(fresh_database.dsn, autocommit=True) as conn:
        assert migration_rows(conn, schema) == expected_rows()
        assert (
            diff(reference_catalog, snapshot(conn, schema), left_name="0.18.0", right_name="ours")
            == []
        )
