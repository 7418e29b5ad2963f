"""Sending prepared enqueues (see :mod:`._batch`) and reading their jobs back.

A keyed job that a worker locks while it is being replaced makes graphile-worker's add_job(s)
return no job for it (docs/schema.md §2), and the Rust crate's add_job raises SQLSTATE GWNOR:
the call is retried where the library owns the transaction, and raises :class:`JobKeyRaceError`
inside the caller's (whose transaction the crate's error has aborted).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, cast

import psycopg
from psycopg import errors as pg_errors

from ._batch import Batch, Statement, check_batch_texts, check_texts
from ._connector import Connector, client_encoding, codec, wrap_exceptions
from ._cursors import LibraryCursor
from ._cursors import cursor as _cursor
from ._errors import DatabaseError, JobKeyRaceError
from ._rows import ID, Row, label_rows, labelled, names_to_look_up, single_job
from ._templates import catalog
from ._transactions import atomic
from ._types import Job, JobSpec

logger = logging.getLogger("graphile_worker_utils")

#: How many times an enqueue is retried after losing the job-key race (docs/schema.md §2) when the
#: library owns the transaction.
KEY_RACE_ATTEMPTS = 3
_KEY_RACE_MARKER = "graphile_worker_utils: job key race"
#: The SQLSTATE with which the Rust crate's add_job reports the job-key race.
RUST_KEY_RACE_SQLSTATE = "GWNOR"
# Without a job key, add_job(s) returns fewer jobs than asked only when its own statements
# cannot see the rows it writes: row level security (on, without policies, on graphile-worker's
# private tables) for a role that neither owns them nor bypasses it.
_INVISIBLE_ROWS = (
    "{what}: the database scheduled fewer jobs than asked although no job key was given; the"
    " role cannot see the rows it writes. Row level security is on for graphile-worker's"
    " _private_* tables: use a role that owns them or has BYPASSRLS, or add policies that let"
    " it read and write them (README, 'Least privilege')"
)
#: How many rows of a batch's result are turned into jobs at a time.
FETCH_SLICE = 2000
# Whether psycopg's libpq can stream a result in chunks (libpq 17 or later).
_CHUNKS = psycopg.capabilities.has_stream_chunked()


def check_params(conn: psycopg.Connection[Any], texts: Any) -> None:
    """Refuse text parameters that ``conn``'s client encoding cannot carry (see
    :func:`._batch.check_texts`); nothing to do on a UTF-8 connection."""
    text_codec = codec(conn)
    if text_codec is not None:
        check_texts(text_codec, client_encoding(conn), texts)


def add_job(connector: Connector, params: dict[str, Any], spec: JobSpec) -> Job:
    """Run the add_job operation with ``params`` (see :func:`._batch.job_params`)."""
    query = catalog.render("add_job", connector.schema)
    for attempt in range(1, KEY_RACE_ATTEMPTS + 1):
        target = connector.target
        if isinstance(target, psycopg.Connection):
            # A caller's connection: no context manager to enter (a single enqueue's
            # client time is counted in microseconds; README "Performance").
            conn, owned = connector.callers(target)
            job = _add_job_on(conn, owned, connector, query, params, spec, attempt)
        else:
            with connector.connection(single_statement=True) as (conn, owned):
                job = _add_job_on(conn, owned, connector, query, params, spec, attempt)
        if job is not None:
            return job
        logger.info("add_job: retrying after a job key race")
    raise AssertionError("unreachable")  # pragma: no cover


def _add_job_on(
    conn: psycopg.Connection[Any],
    owned: bool,
    connector: Connector,
    query: bytes,
    params: dict[str, Any],
    spec: JobSpec,
    attempt: int,
) -> Job | None:
    """One attempt of :func:`add_job` on ``conn``: the job, or None to try again."""
    encoding = conn.info.encoding
    if encoding != "utf-8":
        check_params(conn, params.items())
    cur = connector.cursors.get(conn, encoding)
    row, raised = _send_one(cur, connector.schema, query, params)
    identifier = params["identifier"]
    if row is not None and row[ID] is not None:
        return single_job(row, identifier, spec.queue_name)
    if spec.job_key is None and raised is None:
        raise DatabaseError(_INVISIBLE_ROWS.format(what=f"add_job {identifier!r}"))
    if not owned or attempt == KEY_RACE_ATTEMPTS:
        raise JobKeyRaceError(
            f"add_job {identifier!r} with job_key {spec.job_key!r}: a worker locked"
            " the existing job while it was being replaced, so nothing was"
            " scheduled; retry the call" + _aborted(raised, owned)
        ) from raised
    return None


def _send_one(
    cur: LibraryCursor, schema: str, query: bytes, params: dict[str, Any]
) -> tuple[Any, psycopg.Error | None]:
    """add_job's row, or the error with which graphile_worker_rs's add_job reports the job-key
    race (SQLSTATE GWNOR) where graphile-worker returns a row of nulls. ``cur`` is kept for
    the next call (see CursorCache), so ``query`` must be the catalog's own object."""
    with wrap_exceptions("add_job", schema):
        try:
            cur.execute(query, params, binary=True)
            return cur.fetchone(), None
        except psycopg.Error as error:
            if error.sqlstate != RUST_KEY_RACE_SQLSTATE:
                raise
            return None, error


def _aborted(raised: psycopg.Error | None, owned: bool) -> str:
    # Unlike graphile-worker's row of nulls, the crate's error aborts the caller's transaction.
    if raised is None or owned:
        return ""
    return (
        f" (graphile_worker_rs raised SQLSTATE {RUST_KEY_RACE_SQLSTATE}, which aborted your"
        " transaction: roll it back and retry in a new one)"
    )


def add_jobs(connector: Connector, batch: Batch) -> list[Job]:
    """Run a prepared batch: all its statements in one transaction, all or nothing."""
    for attempt in range(1, KEY_RACE_ATTEMPTS + 1):
        single = len(batch.statements) == 1
        with connector.connection(single_statement=single) as (conn, owned):
            text_codec = codec(conn)
            if text_codec is not None:
                check_batch_texts(text_codec, client_encoding(conn), batch)
            race = None
            with wrap_exceptions("add_jobs", connector.schema):
                try:
                    with nullcontext() if single else atomic(conn, owned=owned):
                        # Only a keyed batch in a transaction of ours is ever sent again.
                        keep = owned and bool(batch.keys)
                        return _run_batch(conn, connector.schema, batch, keep_sent=keep)
                except pg_errors.InvalidTextRepresentation as error:
                    if _KEY_RACE_MARKER not in str(error):
                        raise
                    race = error
            assert race is not None
            _refuse_race(race, batch, owned=owned, last=attempt == KEY_RACE_ATTEMPTS)
        logger.info("add_jobs: retrying after a job key race (%s)", race)
    raise AssertionError("unreachable")  # pragma: no cover


def _refuse_race(error: psycopg.Error, batch: Batch, *, owned: bool, last: bool) -> None:
    """Raise for a lost job-key race unless the batch is to be retried."""
    if not batch.keys:
        raise DatabaseError(
            _INVISIBLE_ROWS.format(what=f"add_jobs ({batch.count} jobs)")
        ) from error
    if not owned or last:
        raise JobKeyRaceError(
            f"add_jobs: a worker locked the existing job of one of the {len(batch.keys)} keyed"
            " specs while it was being replaced; the statement failed and wrote nothing; retry"
            " the call" + ("" if owned else " in a new transaction")
        ) from error


def _run_batch(
    conn: psycopg.Connection[Any], schema: str, batch: Batch, *, keep_sent: bool
) -> list[Job]:
    """Send the batch's statements and build their jobs. Unless ``keep_sent`` (for a retry),
    each statement's JSON is dropped from the batch once sent, before its jobs are built."""
    query = catalog.render("add_jobs", schema)
    result: list[Job] = []
    with _cursor(conn) as cur:
        for statement in batch.statements:
            with _sent(cur, query, statement.params) as rows:
                if not keep_sent:
                    statement.forget_params()
                result.extend(_label(cur, schema, statement, rows))
    return result


@contextmanager
def _sent(
    cur: LibraryCursor, query: bytes, params: dict[str, Any]
) -> Iterator[Iterable[Iterable[Row]]]:
    """Run ``query``; its rows, a slice at a time. With libpq 17 or later (outside a
    pipeline) the server sends them in chunks, so the client never holds a whole
    10,000-row result beside the jobs built from it."""
    if not _CHUNKS or cur.connection.pgconn.pipeline_status:
        cur.execute(query, params, binary=True)
        yield iter(lambda: cur.fetchmany(FETCH_SLICE), [])
        return
    rows = cast(
        "Generator[Row, None, None]", cur.stream(query, params, binary=True, size=FETCH_SLICE)
    )
    # A stream holds the connection's lock until it ends: it is closed, whatever happens,
    # before anything else (a savepoint's rollback) is sent.
    try:
        first = next(rows, None)  # sends the statement; raises what the server raised
        yield () if first is None else ((first,), rows)
    finally:
        rows.close()


def _label(
    cur: LibraryCursor, schema: str, statement: Statement, rows: Iterable[Iterable[Row]]
) -> list[Job]:
    """Jobs from the add_jobs result, naming tasks and queues the call itself created."""
    labelling = label_rows(rows)
    if not labelling.unnamed:
        return labelling.jobs
    task_ids, queue_ids = names_to_look_up(labelling, statement.identifiers, statement.queue_names)
    if not task_ids and not queue_ids:
        return labelled(labelling)
    cur.execute(catalog.render("job_names", schema), {"task_ids": task_ids, "queue_ids": queue_ids})
    return labelled(labelling, cur.fetchall())
