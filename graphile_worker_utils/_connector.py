"""How operations reach PostgreSQL, and how its errors become the library's.

A :class:`Connector` is the caller's connection or a pool, and says for each operation which
connection to use and whether the library owns its transaction (a pool's connection, or an
autocommit connection outside a transaction). What the operations do with it lives elsewhere.
:func:`wrap_exceptions` is the one place where psycopg errors become library errors.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Union

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from ._cursors import CursorCache
from ._errors import ConnectionStateError, DatabaseError, GraphileWorkerError, SchemaMissingError
from ._probe import probe

ConnectionOrPool = Union["psycopg.Connection[Any]", "ConnectionPool[Any]"]

# What the server says when the schema lacks graphile-worker's tables or functions.
_SCHEMA_MISSING = (
    pg_errors.UndefinedFunction,
    pg_errors.UndefinedTable,
    pg_errors.UndefinedObject,
    pg_errors.InvalidSchemaName,
)


def database_error(operation: str, schema: str, error: psycopg.Error) -> DatabaseError:
    """The library error for a psycopg ``error`` raised by ``operation`` on ``schema``."""
    if isinstance(error, _SCHEMA_MISSING):
        return SchemaMissingError(
            f"{operation}: schema {schema!r} is missing graphile-worker's tables or"
            f" functions (run migrate() first): {error}"
        )
    return DatabaseError(f"{operation} on schema {schema!r} failed: {error}")


@contextmanager
def wrap_exceptions(
    operation: str,
    schema: str,
    wrap: Callable[[psycopg.Error], GraphileWorkerError] | None = None,
) -> Iterator[None]:
    """Raise a psycopg error out of the block as a library error, the psycopg one as its cause:
    :func:`database_error`'s, or ``wrap(error)`` for an operation with its own error type."""
    try:
        yield
    except psycopg.Error as error:
        raise (wrap(error) if wrap else database_error(operation, schema, error)) from error


def codec(conn: psycopg.Connection[Any]) -> str | None:
    """The codec psycopg encodes text parameters with on ``conn``; None for UTF-8."""
    encoding = conn.info.encoding
    return None if codecs.lookup(encoding).name == "utf-8" else encoding


def client_encoding(conn: psycopg.Connection[Any]) -> str:
    """``conn``'s client_encoding as the server names it, for messages."""
    return str(conn.info.parameter_status("client_encoding"))


def _check_schema_encoding(conn: psycopg.Connection[Any], schema: str) -> None:
    # Statements are sent as UTF-8 with the schema name in them; a connection in another
    # client encoding would read a non-ASCII name as other characters.
    if not schema.isascii() and codec(conn) is not None:
        raise ConnectionStateError(
            f"schema {schema!r} is not ASCII and this connection's client_encoding is"
            f" {client_encoding(conn)}; use a UTF8 connection"
        )


def new_pool(
    conninfo: str, *, min_size: int, max_size: int, connect_kwargs: dict[str, Any]
) -> ConnectionPool[Any]:
    """A pool for :meth:`WorkerUtils.connect`, not opened yet (see :func:`start_pool`)."""
    return ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs=connect_kwargs,
        # A connection a restarted server dropped is replaced, not handed out.
        check=ConnectionPool.check_connection,
        name="graphile_worker_utils",
        open=False,
    )


def start_pool(
    pool: ConnectionPool[Any], conninfo: str, wait_timeout: float, connect_kwargs: dict[str, Any]
) -> None:
    """Open ``pool`` once one plain connection succeeded (that one fails at once with
    PostgreSQL's reason), and wait for its first connection; closed again on failure."""
    # Fail here, clearly and at once, rather than at the first operation or after a wait
    # that hides the reason in psycopg_pool's log.
    left = probe(conninfo, wait_timeout, connect_kwargs)
    try:
        pool.open()
        pool.wait(timeout=max(left, 0.0))
    except PoolTimeout as error:
        pool.close()
        raise DatabaseError(
            f"the pool could not open a connection within {wait_timeout:g} s, although a"
            " first connection did (psycopg_pool's log has the reason)"
        ) from error
    except BaseException:
        pool.close()
        raise


class Connector:
    """The caller's connection or a pool, for one schema: hands out the connection each
    operation runs on, and says whether the library owns its transaction."""

    __slots__ = ("cursors", "owns_pool", "schema", "target")

    def __init__(self, target: ConnectionOrPool, schema: str, *, owns_pool: bool = False) -> None:
        self.target = target
        self.schema = schema
        self.owns_pool = owns_pool
        #: Cursors kept for single enqueues on the target's connections (see CursorCache).
        self.cursors = CursorCache()

    def close(self) -> None:
        """Close the pool if this connector opened it; otherwise do nothing."""
        if self.owns_pool and isinstance(self.target, ConnectionPool):
            self.target.close()

    @contextmanager
    def connection(
        self, *, single_statement: bool = False
    ) -> Iterator[tuple[psycopg.Connection[Any], bool]]:
        """The connection to use, and whether the library owns its transaction.

        ``single_statement``: the operation sends one statement, which a pool's connection
        then runs in autocommit (one round trip instead of three).
        """
        target = self.target
        if isinstance(target, ConnectionPool):
            with self._pooled(target, single_statement) as conn:
                _check_schema_encoding(conn, self.schema)
                yield conn, True
            return
        yield self.callers(target)

    def callers(self, target: psycopg.Connection[Any]) -> tuple[psycopg.Connection[Any], bool]:
        """The caller's connection ``target`` (checked: open, its transaction not failed) and
        whether the library owns its transaction; for :meth:`connection`, and for single
        statements that skip its context manager."""
        if target.closed:
            raise ConnectionStateError("the connection is closed")
        status = target.pgconn.transaction_status
        if status == pq.TransactionStatus.INERROR:
            raise ConnectionStateError(
                "the connection's transaction has already failed (an earlier statement raised);"
                " roll it back before using graphile_worker_utils on it"
            )
        _check_schema_encoding(target, self.schema)
        return target, target.autocommit and status == pq.TransactionStatus.IDLE

    @contextmanager
    def _pooled(
        self, pool: ConnectionPool[Any], single_statement: bool
    ) -> Iterator[psycopg.Connection[Any]]:
        # The operations turn their own database errors into library errors; what arrives
        # here comes from the pool itself, before any statement of ours was sent.
        try:
            with pool.connection() as conn:
                if not single_statement or conn.autocommit:
                    yield conn
                    return
                # The pool's setting is put back before the connection returns to it.
                conn.autocommit = True
                try:
                    yield conn
                finally:
                    with suppress(psycopg.Error):
                        conn.autocommit = False
        except PoolTimeout as error:
            raise DatabaseError(
                f"no connection from the pool {pool.name!r} within {pool.timeout:g} s"
                f" (is the database reachable?): {error}"
            ) from error
        except PoolClosed as error:
            ended = " (its WorkerUtils.connect() block ended)" if self.owns_pool else ""
            raise ConnectionStateError(
                f"the pool {pool.name!r} is closed{ended}; nothing was sent"
            ) from error
        except psycopg.Error as error:
            raise DatabaseError(f"the pool {pool.name!r} failed: {error}") from error
