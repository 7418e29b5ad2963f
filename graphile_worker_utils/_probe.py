"""One direct connection before :meth:`WorkerUtils.connect` opens its pool.

A pool retries failed connections in the background and reports only a timeout, so a wrong
role or database, or a refused port, would wait the whole ``wait_timeout`` and hide
PostgreSQL's reason in psycopg_pool's log. One plain connection first fails at once with that
reason, and a server that never answers is given up within ``wait_timeout``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from contextlib import suppress
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ._errors import DatabaseError

#: psycopg (like libpq) waits at least this long per connection attempt.
_MIN_CONNECT_TIMEOUT = 2


def masked(message: str, secrets: list[str]) -> str:
    """``message`` with every secret in it replaced by asterisks."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "********")
    return message


def _passwords(conninfo: str, kwargs: dict[str, Any]) -> list[str]:
    # libpq does not quote passwords in its messages; masked anyway, should one ever appear.
    found = [os.environ.get("PGPASSWORD", "")]
    with suppress(psycopg.Error):
        found.append(str(conninfo_to_dict(conninfo, **kwargs).get("password") or ""))
    return found


def probe(conninfo: str, wait_timeout: float, kwargs: dict[str, Any]) -> float:
    """Open and close one connection, within ``wait_timeout`` seconds; return the seconds left.

    Raises :class:`DatabaseError` with PostgreSQL's (or the network's) reason when it fails,
    and when no answer came in time.
    """
    started = time.monotonic()
    outcome: list[BaseException | None] = []
    # The attempt runs in a thread so that the wait is bounded by wait_timeout itself, not
    # by psycopg's whole seconds (2 at least, for each address a host name resolves to).
    # psycopg's own timeout is set a second beyond ours, so that wait_timeout always decides
    # (with equal timeouts either could fire first, and the message would vary).
    timeout = max(_MIN_CONNECT_TIMEOUT, math.ceil(wait_timeout) + 1)
    options = {**kwargs, "connect_timeout": timeout}
    thread = threading.Thread(
        target=_attempt, args=(conninfo, options, outcome), name="graphile_worker_utils-probe"
    )
    thread.daemon = True
    thread.start()
    thread.join(wait_timeout)
    if not outcome:
        raise DatabaseError(
            f"could not connect to the database within {wait_timeout:g} s: the server did not"
            " answer"
        )
    error = outcome[0]
    if isinstance(error, psycopg.ProgrammingError):
        # A conninfo psycopg cannot parse; its message may quote any part of it.
        raise DatabaseError(
            "could not connect to the database: psycopg refused the connection string or an"
            f" option ({type(error).__name__}; details left out, they may quote a password)"
        ) from None
    if isinstance(error, psycopg.Error):
        reason = masked(str(error), _passwords(conninfo, kwargs))
        raise DatabaseError(f"could not connect to the database: {reason}") from error
    if error is not None:
        raise error
    return wait_timeout - (time.monotonic() - started)


def _attempt(conninfo: str, options: dict[str, Any], outcome: list[BaseException | None]) -> None:
    try:
        psycopg.connect(conninfo, **options).close()
    except BaseException as error:
        outcome.append(error)
    else:
        outcome.append(None)
