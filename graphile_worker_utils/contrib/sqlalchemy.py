"""SQLAlchemy (and Flask-SQLAlchemy): a :class:`~graphile_worker_utils.WorkerUtils` in the
transaction a ``Session`` or ``Connection`` has open.

With the ``postgresql+psycopg`` dialect the Session's connection is a psycopg 3 connection
underneath; jobs enqueued on it are committed by ``session.commit()`` with the ORM's own
writes, or rolled back with them::

    from graphile_worker_utils.contrib.sqlalchemy import worker_utils

    with Session(engine) as session, session.begin():
        user = User(email="ada@example.com")
        session.add(user)
        worker_utils(session).add_raw_job("send_welcome", {"user_id": user.id})
    # the user and the job exist together, or neither does

``worker_utils(session)`` flushes pending ORM changes first, as any query through the Session
would (when ``session.autoflush`` is on, its default): so ``user.id`` above is already set when
the payload is built. The library never commits, rolls back or closes SQLAlchemy's connection.

Needs SQLAlchemy >= 2.0 on the ``postgresql+psycopg`` dialect (psycopg 3, synchronous).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.orm import Session, scoped_session

from .._client import WorkerUtils
from .._connector import Connector
from .._errors import ConnectionStateError
from .._hooks import BeforeScheduleHook
from .._payload import JsonDumps
from . import DEFAULT_SCHEMA, UnsupportedDatabaseError

__all__ = ["DEFAULT_SCHEMA", "UnsupportedDatabaseError", "worker_utils"]

_ASYNC_HINT = (
    "graphile_worker_utils is synchronous: use a Session or Connection of a synchronous engine,"
    " create_engine('postgresql+psycopg://...')"
)


def worker_utils(
    session_or_connection: Session | Connection | scoped_session[Any],
    *,
    schema: str = DEFAULT_SCHEMA,
    use_local_time: bool = False,
    hooks: Sequence[BeforeScheduleHook] = (),
    json_dumps: JsonDumps | None = None,
) -> WorkerUtils:
    """A ``WorkerUtils`` on the psycopg connection under a SQLAlchemy Session or Connection,
    in the transaction SQLAlchemy has open there (begun now if none is, as a query would).

    ``session.commit()`` / ``rollback()`` (or ``connection.commit()`` / ``rollback()``)
    decide what happens to the jobs; the library never commits, rolls back or closes the
    connection. Call this where you enqueue rather than keeping the result around: once the
    Session's transaction ends SQLAlchemy gives its connection back to the pool, and the result
    then raises ``ConnectionStateError`` before sending anything. (One made on a
    ``Connection`` begins that Connection's next transaction, as ``execute()`` would.)

    A Session (or ``scoped_session``, such as Flask-SQLAlchemy's ``db.session``) is flushed
    first when ``session.autoflush`` is on, as a query through it would be, so ids of objects
    added before the call are set. With ``autoflush=False`` or inside ``session.no_autoflush``
    call ``session.flush()`` yourself before reading such ids. With several binds, pass
    ``session.connection(bind_arguments=...)`` instead of the Session.

    Example::

        with Session(engine) as session, session.begin():
            order = Order(total=42)
            session.add(order)
            worker_utils(session).add_raw_job("send_receipt", {"order_id": order.id})

    Parameters:
        session_or_connection: a ``Session``, a ``scoped_session`` or a ``Connection``.
        schema: graphile-worker's schema; default ``"graphile_worker"``.
        use_local_time, hooks, json_dumps: as for :class:`WorkerUtils`.

    Raises:
        UnsupportedDatabaseError: an engine that is not PostgreSQL, or runs on another driver
            than psycopg 3 (psycopg2, pg8000, asyncpg, ...); an ``AsyncSession`` or
            ``AsyncConnection``; anything that is not a Session or Connection.
    """
    connection = _sqlalchemy_connection(session_or_connection)
    driver_connection = connection.connection.driver_connection
    if not isinstance(driver_connection, psycopg.Connection):
        raise UnsupportedDatabaseError(
            f"the connection under this engine is a {type(driver_connection).__module__}."
            f"{type(driver_connection).__qualname__}, not a psycopg.Connection; {_ASYNC_HINT}"
        )
    utils = WorkerUtils(
        driver_connection,
        schema=schema,
        use_local_time=use_local_time,
        hooks=hooks,
        json_dumps=json_dumps,
    )
    utils._connector = _SQLAlchemyConnector(connection, driver_connection, utils.schema)
    return utils


class _SQLAlchemyConnector(Connector):
    """The psycopg connection under one SQLAlchemy ``Connection``, for as long as that
    Connection holds it: a pooled connection handed back must not be used behind the pool."""

    __slots__ = ("sqlalchemy_connection",)

    def __init__(
        self, connection: Connection, driver_connection: psycopg.Connection[Any], schema: str
    ) -> None:
        super().__init__(driver_connection, schema)
        self.sqlalchemy_connection = connection

    def callers(self, target: psycopg.Connection[Any]) -> tuple[psycopg.Connection[Any], bool]:
        held = self.sqlalchemy_connection
        if held.closed or held.invalidated or held.connection.driver_connection is not self.target:
            raise ConnectionStateError(
                "the SQLAlchemy transaction this WorkerUtils was made in has ended and its"
                " connection went back to the pool; nothing was sent: call worker_utils(session)"
                " again where you enqueue"
            )
        if not held.in_transaction():
            held.begin()  # as the Connection's own next execute() would
        return super().callers(target)


def _sqlalchemy_connection(target: object) -> Connection:
    """The ``Connection`` of ``target``'s transaction, begun if none is; checked first."""
    if isinstance(target, scoped_session):
        target = target()
    if isinstance(target, Session):
        _check_dialect(target.get_bind().dialect)
        if target.autoflush:
            target.flush()
        return target.connection()
    if isinstance(target, Connection):
        _check_dialect(target.dialect)
        if not target.in_transaction():
            target.begin()  # what the Connection's next execute() would do (autobegin)
        return target
    raise UnsupportedDatabaseError(_not_a_session(target))


def _not_a_session(target: object) -> str:
    kind = f"{type(target).__module__}.{type(target).__qualname__}"
    if type(target).__module__.startswith("sqlalchemy.ext.asyncio"):
        return f"{kind} is asynchronous; {_ASYNC_HINT}"
    if isinstance(target, Engine):
        return (
            "session_or_connection: an Engine has no transaction to join; pass a Session, or"
            " the Connection of 'with engine.begin() as connection:'"
        )
    return f"session_or_connection: expected a Session, scoped_session or Connection, got {kind}"


def _check_dialect(dialect: Dialect) -> None:
    name = f"{dialect.name}+{dialect.driver}"
    if dialect.name != "postgresql":
        raise UnsupportedDatabaseError(
            f"the engine is {name!r}; graphile-worker needs PostgreSQL: use an engine URL"
            " that starts with postgresql+psycopg://"
        )
    if dialect.is_async or dialect.driver == "psycopg_async":
        raise UnsupportedDatabaseError(f"the engine is {name!r}, asynchronous; {_ASYNC_HINT}")
    if dialect.driver != "psycopg":
        raise UnsupportedDatabaseError(
            f"the engine is {name!r}, not psycopg 3; graphile_worker_utils needs psycopg 3:"
            " use an engine URL that starts with postgresql+psycopg:// (pip install psycopg)"
        )
