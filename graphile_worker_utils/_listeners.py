"""Who would hear graphile-worker's notifications in a database: the command line's ``demo``
refuses a database where graphile-worker pools may be running (``sql/demo_listeners.sql.j2``
says how a pool is recognised, and what stays unseen)."""

from __future__ import annotations

from typing import Any

import attrs
import psycopg

from ._connector import wrap_exceptions
from ._cursors import cursor
from ._templates import catalog


@attrs.frozen
class Listeners:
    """Sessions of the current database, other than the caller's, that listen on
    graphile-worker's channels (``pids``), and how many sessions this role may not see."""

    pids: tuple[int, ...]
    unseen: int


def database_listeners(conn: psycopg.Connection[Any], schema: str) -> Listeners:
    """The listeners on ``conn``'s database, read from ``pg_stat_activity``."""
    with wrap_exceptions("database_listeners", schema), cursor(conn) as cur:
        cur.execute(catalog.render("demo_listeners", schema))
        row = cur.fetchone()
    pids, unseen = (row[0], row[1]) if row else ([], 0)
    return Listeners(tuple(pids), int(unseen))
