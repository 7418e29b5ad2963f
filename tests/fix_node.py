"""Fixture plugin: the real graphile-worker releases (Node.js) as peers of the library.

``graphile_worker`` runs their command line (``tests/_node.py``); ``interop`` starts them as
workers on a schema the library migrated (``tests/_worker.py``), in ``interop_database``: one
database for all interop tests, since graphile-worker's channels are per database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import WorkerUtils
from tests._catalog import snapshot
from tests._helpers import Database, drop_schema, make_database, unique_name
from tests._node import LATEST_GRAPHILE_WORKER, GraphileWorker, peer_node
from tests._server import PgServer
from tests._worker import Interop, Workers


@pytest.fixture(scope="session")
def graphile_worker() -> GraphileWorker:
    """The graphile-worker CLIs on tests/node's Node 22, installed once per session with
    ``npm ci`` when needed.

    Without npm (to install them) this skips, except on CI (``CI=true``) where it fails.
    """
    return GraphileWorker(node=peer_node())


@pytest.fixture(scope="session")
def reference_catalog(pg_server: PgServer, graphile_worker: GraphileWorker) -> dict[str, Any]:
    """The catalog snapshot of a schema that graphile-worker 0.18.0 installed on this server."""
    name = unique_name("ref_")
    try:
        graphile_worker.migrate(LATEST_GRAPHILE_WORKER, pg_server.node_dsn, name)
        with psycopg.connect(pg_server.dsn, autocommit=True) as connection:
            return snapshot(connection, name)
    finally:
        drop_schema(pg_server, name)


@pytest.fixture(scope="session")
def interop_database(pg_server: PgServer) -> Iterator[Database]:
    """A database of its own for the interop tests, shared by them all, dropped at the end of
    the session (DROP DATABASE can take seconds on a busy server)."""
    with make_database(pg_server, "interop_") as database:
        yield database


@pytest.fixture
def interop(interop_database: Database, graphile_worker: GraphileWorker) -> Iterator[Interop]:
    """A fresh schema migrated by the library, in the interop database; every harness the
    test started is stopped (or killed) at teardown, then the schema is dropped."""
    schema = unique_name()
    workers = Workers(graphile_worker.node, interop_database)
    with interop_database.connect() as conn:
        utils = WorkerUtils(conn, schema=schema)
        utils.migrate()
        try:
            yield Interop(interop_database, schema, conn, utils, workers)
        finally:
            workers.close()
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
