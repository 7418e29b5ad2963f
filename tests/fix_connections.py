"""Fixture plugin: connections as callers hold them, pools, and a ``WorkerUtils`` on them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from graphile_worker_utils import WorkerUtils
from tests._server import PgServer


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection to ``pg_dsn``, closed at teardown."""
    with psycopg.connect(pg_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def admin(pg_server: PgServer) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A superuser autocommit connection straight to the server (never through PgBouncer)."""
    with psycopg.connect(pg_server.dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def caller_conn(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A non-autocommit connection, as Django or a script holds one; closed, never committed."""
    connection = psycopg.connect(pg_dsn)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def idle_conn(
    utils: WorkerUtils, caller_conn: psycopg.Connection[tuple[Any, ...]]
) -> psycopg.Connection[tuple[Any, ...]]:
    """``caller_conn`` once ``schema`` is migrated (on ``conn``): it has sent nothing yet.

    Asked for after ``utils``, so it is closed before the schema is dropped.
    """
    return caller_conn


@pytest.fixture
def utils(conn: psycopg.Connection[tuple[Any, ...]], schema: str) -> WorkerUtils:
    """A ``WorkerUtils`` on ``conn`` (autocommit) with ``schema`` migrated."""
    worker_utils = WorkerUtils(conn, schema=schema)
    worker_utils.migrate()
    return worker_utils


@pytest.fixture
def pool(pg_dsn: str, utils: WorkerUtils) -> Iterator[ConnectionPool[Any]]:
    """A small pool on ``pg_dsn``; ``schema`` is migrated."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True) as connection_pool:
        yield connection_pool
