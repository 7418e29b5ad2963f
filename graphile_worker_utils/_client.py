"""WorkerUtils: the blocking client over the template catalog."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Union

import psycopg
from psycopg_pool import ConnectionPool

from . import _migrations
from ._migrations import MigrationReport, SchemaStatus
from ._templates import validate_schema_name

ConnectionOrPool = Union["psycopg.Connection[Any]", "ConnectionPool[Any]"]


class WorkerUtils:
    """Enqueue and maintain graphile-worker jobs on a connection or a pool.

    With a ``psycopg.Connection``, every operation runs on it inside whatever transaction the
    caller has open; the library never commits, rolls back, closes or reconfigures it. With a
    ``psycopg_pool.ConnectionPool``, each operation borrows a connection and commits when it
    succeeds.

    Example::

        utils = WorkerUtils(conn, schema="graphile_worker")
        utils.migrate()
    """

    def __init__(self, conn_or_pool: ConnectionOrPool, *, schema: str = "graphile_worker") -> None:
        if not isinstance(conn_or_pool, (psycopg.Connection, ConnectionPool)):
            raise TypeError(
                "conn_or_pool: expected a psycopg.Connection or a psycopg_pool.ConnectionPool,"
                f" got {type(conn_or_pool).__name__}"
            )
        self._target = conn_or_pool
        self._schema = validate_schema_name(schema)

    @property
    def schema(self) -> str:
        """The graphile-worker schema this instance works on (unquoted)."""
        return self._schema

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if isinstance(self._target, ConnectionPool):
            with self._target.connection() as conn:
                yield conn
        else:
            yield self._target

    def migrate(self) -> MigrationReport:
        """Create or upgrade the schema to revision 20, as graphile-worker 0.18 would.

        Safe to run from many processes at once, and beside graphile-worker (Node.js) or the
        Rust crate migrating the same database. A fresh schema gets the revision-20 shape in
        one transaction; a schema at revision 16..19 gets each later revision in its own
        transaction (savepoints inside a caller's open transaction). Refuses a schema with a
        newer breaking revision (:class:`IncompatibleSchemaError`), a PostgreSQL older than 12
        (:class:`UnsupportedServerError`) and a schema older than revision 16
        (:class:`SchemaTooOldError`); warns and carries on past a newer non-breaking revision.
        """
        with self._connection() as conn:
            return _migrations.migrate(conn, self._schema)

    def schema_status(self) -> SchemaStatus:
        """Say whether the schema is missing, behind, current, or ahead; writes nothing."""
        with self._connection() as conn:
            return _migrations.schema_status(conn, self._schema)
