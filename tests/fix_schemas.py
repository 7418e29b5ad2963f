"""Fixture plugin: isolated schemas and databases, each dropped at teardown even when the test
fails. Their names start with ``tests._helpers.NAME_PREFIX``, which the end-of-session sweep
(``fix_server.pg_server``) checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from graphile_worker_utils import WorkerUtils
from tests._helpers import Database, drop_schema, make_database, unique_name
from tests._server import PgServer


@pytest.fixture
def make_schema(pg_server: PgServer) -> Iterator[Callable[[], str]]:
    """A factory of unique schema names (not created); every one is dropped at teardown."""
    names: list[str] = []

    def make() -> str:
        names.append(unique_name())
        return names[-1]

    yield make
    for name in names:
        drop_schema(pg_server, name)


@pytest.fixture
def schema(make_schema: Callable[[], str]) -> str:
    """A unique schema name, not created; dropped (cascade) at teardown."""
    return make_schema()


@pytest.fixture
def migrated(conn: psycopg.Connection[Any], schema: str) -> str:
    """``schema``, installed by the library (``utils`` is the same with a ``WorkerUtils``)."""
    WorkerUtils(conn, schema=schema).migrate()
    return schema


@pytest.fixture
def fresh_database(pg_server: PgServer) -> Iterator[Database]:
    """A new empty database (from template0), dropped with whoever is connected at teardown."""
    with make_database(pg_server) as database:
        yield database
