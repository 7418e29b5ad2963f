"""The library's own cursors: the same results whatever the caller's connection is set up with.

A caller's connection may carry a row factory (``dict_row``...), a cursor factory
(``ClientCursor``), loaders and dumpers of its own (Django loads ``jsonb`` as text and
timestamps as naive datetimes), and any session ``TimeZone``. Our cursors take none of that:
they return tuples, bind parameters on the server, and adapt values with psycopg's built-in
adapters plus two loaders of ours (jsonb in the client encoding; binary timestamptz as its
microseconds, see :func:`instant`). Nothing is changed on the connection itself.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import threading
from typing import Any

import psycopg
from psycopg import postgres, pq
from psycopg.abc import AdaptContext
from psycopg.adapt import AdaptersMap, Buffer, Loader
from psycopg.rows import tuple_row
from psycopg.types import array
from psycopg.types.numeric import Int8BinaryLoader

_UTC = dt.timezone.utc
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=_UTC)
_timedelta = dt.timedelta
_loads = json.loads


def instant(micros: int) -> dt.datetime:
    """A binary timestamptz (microseconds since 2000-01-01 UTC, as our cursors load it) as an
    aware datetime in ``datetime.timezone.utc``."""
    try:
        # Positional timedelta arguments: a third faster than microseconds=.
        return _PG_EPOCH + _timedelta(0, 0, micros)
    except OverflowError:
        # 'infinity' / '-infinity', or a date beyond what Python represents.
        return (
            dt.datetime.max.replace(tzinfo=_UTC)
            if micros > 0
            else dt.datetime.min.replace(tzinfo=_UTC)
        )


class JsonbBinaryLoader(Loader):
    """jsonb decoded from the connection's client encoding: psycopg's own loader assumes
    UTF-8, and fails after the statement ran on a LATIN1 connection."""

    format = pq.Format.BINARY

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        encoding = self.connection.info.encoding if self.connection else "utf-8"
        self._encoding = None if codecs.lookup(encoding).name == "utf-8" else encoding

    def load(self, data: Buffer) -> Any:
        text = bytes(data[1:])  # after the jsonb format's version byte
        return _loads(text if self._encoding is None else text.decode(self._encoding))


def _builtin_adapters() -> AdaptersMap:
    # psycopg's defaults, built afresh rather than copied from psycopg.adapters, so that
    # adapters an application registered globally do not reach our statements either.
    adapters = AdaptersMap(types=postgres.types)
    postgres.register_default_adapters(adapters)
    array.register_all_arrays(adapters)
    adapters.register_loader("jsonb", JsonbBinaryLoader)
    # Binary timestamptz is an int8 of microseconds: psycopg's C int8 loader reads it several
    # times faster than any timestamptz loader, and instant() makes it a datetime in
    # timezone.utc whatever the session's TimeZone (psycopg's own loader gives a ZoneInfo
    # in any zone but 'UTC'). A batch converts each distinct instant once.
    adapters.register_loader("timestamptz", Int8BinaryLoader)
    return adapters


_ADAPTERS = _builtin_adapters()


class LibraryCursor(psycopg.Cursor[tuple[Any, ...]]):
    """A server-binding cursor returning tuples, adapting with :func:`_builtin_adapters`
    (binary timestamptz comes back as an int: see :func:`instant`)."""

    __slots__ = ("_library_adapters",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        super().__init__(conn, row_factory=tuple_row)
        # psycopg adapts through the context's ``adapters`` (the AdaptContext protocol):
        # overriding it keeps the connection's own loaders and dumpers out of our statements.
        self._library_adapters = AdaptersMap(_ADAPTERS)

    @property
    def adapters(self) -> AdaptersMap:
        return self._library_adapters


def cursor(conn: psycopg.Connection[Any]) -> LibraryCursor:
    """A cursor of ours on ``conn`` (see the module documentation); the caller closes it."""
    return LibraryCursor(conn)


class CursorCache:
    """Library cursors kept for reuse: one per connection, per thread, per client encoding.

    A new cursor costs a third of a single enqueue's client time: psycopg builds its adapters
    afresh and looks up a dumper per parameter and a loader per column on its first execute.
    A kept cursor keeps them, as long as each execute passes the same query object.

    The cache belongs to the object that already holds the connection (a ``Connector``), so
    it never keeps a connection alive that its caller dropped. psycopg connections are
    thread-safe and cursors are not: each thread has its own. psycopg's dumpers read the
    client encoding once, when made: a cursor is only reused while the connection's encoding
    is the one it was made for. A cursor of a closed connection is never handed out, and is
    dropped when another is made. Nothing is changed on the connection; its row factory,
    adapters and prepare threshold are read by psycopg at each execute, or not at all.
    """

    __slots__ = ("_local",)

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, conn: psycopg.Connection[Any], encoding: str) -> LibraryCursor:
        """This thread's cursor on ``conn`` (made now if there is none yet, or it cannot be
        reused); ``encoding``: ``conn.info.encoding`` now."""
        try:
            cursors: dict[int, tuple[LibraryCursor, str]] = self._local.cursors
        except AttributeError:
            cursors = self._local.cursors = {}
        # Keyed by id(): the entry holds the connection, so no other can take its id.
        entry = cursors.get(id(conn))
        if entry is not None and entry[1] == encoding and not entry[0].closed:
            return entry[0]
        for key in [key for key, (cur, _) in cursors.items() if cur.connection.closed]:
            del cursors[key]
        cur = LibraryCursor(conn)
        cursors[id(conn)] = (cur, encoding)
        return cur
