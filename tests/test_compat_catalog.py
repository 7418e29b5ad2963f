"""Our migrations build exactly the catalog graphile-worker 0.18.0 builds.

Every test compares a catalog snapshot (tests/_catalog.py: declarations, not function bodies)
with the reference: a schema that graphile-worker 0.18.0's own ``--schema-only`` installed on
the same server. Fresh installs and upgrades from what older workers leave behind must all
land on that reference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import LATEST_REVISION, SchemaState, WorkerUtils
from tests._catalog import assert_same_catalog, snapshot
from tests._node import GRAPHILE_WORKER_REVISIONS, GraphileWorker
from tests._server import PgServer

Connection = psycopg.Connection[Any]


def migration_rows(conn: Connection, schema: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        sql.SQL("select id, breaking from {}.migrations order by id").format(sql.Identifier(schema))
    ).fetchall()


def test_latest_revision_is_the_one_graphile_worker_0_18_installs() -> None:
    assert LATEST_REVISION == GRAPHILE_WORKER_REVISIONS["0.18.0"] == 20


def test_fresh_migrate_builds_the_catalog_graphile_worker_0_18_builds(
    conn: Connection, schema: str, reference_catalog: dict[str, Any]
) -> None:
    report = WorkerUtils(conn, schema=schema).migrate()

    assert report.revision == LATEST_REVISION
    ours = snapshot(conn, schema)
    assert_same_catalog(
        reference_catalog, ours, left_name="graphile-worker 0.18.0", right_name="ours"
    )


def test_fresh_schema_has_no_triggers(conn: Connection, schema: str) -> None:
    WorkerUtils(conn, schema=schema).migrate()

    assert snapshot(conn, schema)["triggers"] == {}


@pytest.mark.parametrize("version", ["0.16.6", "0.17.3"])
def test_migrate_upgrades_an_older_graphile_worker_schema_to_the_0_18_catalog(
    version: str,
    conn: Connection,
    schema: str,
    pg_server: PgServer,
    graphile_worker: GraphileWorker,
    reference_catalog: dict[str, Any],
) -> None:
    graphile_worker.migrate(version, pg_server.node_dsn, schema)
    revision = GRAPHILE_WORKER_REVISIONS[version]
    assert migration_rows(conn, schema)[-1][0] == revision
    utils = WorkerUtils(conn, schema=schema)
    assert utils.schema_status().state is SchemaState.BEHIND

    report = utils.migrate()

    assert tuple(report.applied) == tuple(range(revision + 1, LATEST_REVISION + 1))
    assert report.revision == LATEST_REVISION
    assert_same_catalog(
        reference_catalog,
        snapshot(conn, schema),
        left_name="graphile-worker 0.18.0",
        right_name=f"graphile-worker {version} + ours",
    )


def test_migrate_upgrades_a_rust_crate_revision_19_and_keeps_its_non_breaking_row(
    conn: Connection,
    schema: str,
    pg_server: PgServer,
    graphile_worker: GraphileWorker,
    reference_catalog: dict[str, Any],
) -> None:
    # The Rust crate (0.11.3+) records its own revision 19 as non-breaking; this is the same
    # schema as Node 0.17.3's revision 19 apart from that flag.
    graphile_worker.migrate("0.17.3", pg_server.node_dsn, schema)
    conn.execute(
        sql.SQL("update {}.migrations set breaking = false where id = 19").format(
            sql.Identifier(schema)
        )
    )

    report = WorkerUtils(conn, schema=schema).migrate()

    assert tuple(report.applied) == (20,)
    assert (19, False) in migration_rows(conn, schema)
    expected = copy.deepcopy(reference_catalog)
    expected["migrations"][18] = [19, False]
    assert_same_catalog(
        expected,
        snapshot(conn, schema),
        left_name="graphile-worker 0.18.0 with a non-breaking 19",
        right_name="rust-like 19 + ours",
    )


def test_migrate_on_a_schema_graphile_worker_0_18_installed_applies_nothing(
    conn: Connection,
    schema: str,
    pg_server: PgServer,
    graphile_worker: GraphileWorker,
    reference_catalog: dict[str, Any],
) -> None:
    graphile_worker.migrate("0.18.0", pg_server.node_dsn, schema)
    utils = WorkerUtils(conn, schema=schema)
    assert utils.schema_status().state is SchemaState.CURRENT

    report = utils.migrate()

    assert tuple(report.applied) == ()
    assert report.revision == LATEST_REVISION
    assert_same_catalog(
        reference_catalog,
        snapshot(conn, schema),
        left_name="graphile-worker 0.18.0",
        right_name="0.18.0 + ours",
    )


def test_two_schemas_of_one_database_migrate_independently(
    conn: Connection, make_schema: Callable[[], str], reference_catalog: dict[str, Any]
) -> None:
    first, second = make_schema(), make_schema()

    WorkerUtils(conn, schema=first).migrate()
    WorkerUtils(conn, schema=second).migrate()

    assert_same_catalog(reference_catalog, snapshot(conn, first), right_name=first)
    assert_same_catalog(reference_catalog, snapshot(conn, second), right_name=second)
