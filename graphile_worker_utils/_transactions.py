"""Joining the caller's transaction without ever ending it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

from ._cursors import cursor


@contextmanager
def atomic(conn: psycopg.Connection[Any], *, owned: bool) -> Iterator[None]:
    """Run a block atomically on ``conn``, without committing a transaction the caller owns.

    ``owned`` (a pool's connection, or an autocommit connection outside a transaction):
    BEGIN/COMMIT. Inside the caller's transaction: a savepoint. A non-autocommit connection
    that is idle has no transaction yet; psycopg's ``transaction()`` would BEGIN and COMMIT
    one there, so the caller's implicit transaction is opened first and a savepoint used.
    """
    if (
        not owned
        and not conn.autocommit
        and conn.info.transaction_status == pq.TransactionStatus.IDLE
    ):
        with cursor(conn) as cur:  # not conn.execute: the caller's cursor_factory is theirs
            cur.execute("select 1")
    with conn.transaction():
        yield
