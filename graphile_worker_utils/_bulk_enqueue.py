"""Sending bulk enqueues (see :mod:`._bulk`): every chunk in one transaction, counts back.

Keyless jobs take a fast path of our own statements where they write exactly what the
schema's ``add_jobs`` would (:func:`fast_path_applies`); keyed jobs, and every job elsewhere,
go through ``add_jobs``. The whole call is one transaction where the library owns it, and a
savepoint inside the caller's: an error anywhere (a bad job at position 900,001, the input
raising, the server refusing) leaves nothing of the call behind.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from ._batch import BATCH_SLICE, Enqueue, unencodable
from ._bulk import Chunk, chunks, prepare_chunk, unencodable_job
from ._connector import Connector, client_encoding, codec, database_error, wrap_exceptions
from ._cursors import LibraryCursor
from ._cursors import cursor as _cursor
from ._errors import DatabaseError, GraphileWorkerError, JobKeyRaceError
from ._templates import catalog, dollar_tag, quote_identifier
from ._transactions import atomic
from ._types import JobKeyMode, RawJobSpec

#: The fingerprint (see :func:`add_jobs_fingerprint`) of graphile-worker 0.18.0's own
#: revision-20 ``add_jobs``, as its migrator installs it; ours is computed from our template.
GRAPHILE_WORKER_ADD_JOBS_FINGERPRINTS = frozenset(
    {"0f093d597c1f1d200b595e547b6488b011cdf32f5e2a30ffc9b31d260773d07c"}
)
_SCHEMA_PLACEHOLDER = "{schema}"


def add_jobs_fingerprint(body: str, schema: str) -> str:
    """The SHA-256 (hex) of an ``add_jobs`` body with the quoted schema name taken out, as
    ``sql/bulk_fast_path.sql.j2`` computes it on the server."""
    normalised = body.replace(quote_identifier(schema), _SCHEMA_PLACEHOLDER)
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def our_add_jobs_body(schema: str) -> str:
    """The body of the ``add_jobs`` function this library installs on ``schema``."""
    text = catalog.render("schema/add_jobs", schema).decode("utf-8")
    return text.split(dollar_tag(schema))[1]


def fingerprints(schema: str) -> list[str]:
    """The fingerprints of the ``add_jobs`` bodies the fast path writes exactly like."""
    ours = add_jobs_fingerprint(our_add_jobs_body(schema), schema)
    return sorted({ours, *GRAPHILE_WORKER_ADD_JOBS_FINGERPRINTS})


def fast_path_applies(cur: LibraryCursor, schema: str) -> bool:
    """Whether the keyless fast path writes what ``schema``'s add_jobs would (see
    ``sql/bulk_fast_path.sql.j2``): a revision-20 add_jobs, ours or graphile-worker's."""
    params = {"schema_name": schema, "fingerprints": fingerprints(schema)}
    cur.execute(catalog.render("bulk_fast_path", schema), params)
    row = cur.fetchone()
    return bool(row and row[0])


def bulk_add(
    connector: Connector,
    items: Iterator[Any],
    chunk_size: int,
    enqueue: Enqueue,
    fast_path: Callable[[LibraryCursor, str], bool] = fast_path_applies,
) -> int:
    """Prepare and send ``items`` (RawJobSpecs) ``chunk_size`` at a time, all or nothing;
    return how many jobs were scheduled. Empty input sends nothing."""
    pending = chunks(items, chunk_size)
    first = next(pending, None)
    if first is None:
        return 0
    # One chunk read ahead: a call that fits in one chunk, where the library owns the
    # transaction, needs no BEGIN/COMMIT: its statements go in one pipeline with one Sync,
    # which PostgreSQL runs as one implicit transaction (all of it or none).
    following = next(pending, None)
    one_chunk = following is None
    sender = _Sender(connector.schema, enqueue, fast_path)
    # The chunks read so far are held by the stream only, each let go once it is sent.
    stream = itertools.chain([first] if following is None else [first, following], pending)
    del following
    with connector.connection(single_statement=one_chunk) as (conn, owned):
        sender.text_codec = codec(conn)
        sender.encoding = client_encoding(conn) if sender.text_codec else ""
        implicit = one_chunk and owned and (_PIPELINES or _one_keyed_statement(first))
        with wrap_exceptions("bulk_add_jobs", connector.schema, sender.error):
            if implicit:
                with _pipeline(conn) as pipeline, _cursor(conn) as cur:
                    sender.pipeline = pipeline
                    sender.send(cur, first)
                return sender.total
            del first
            # The transaction (or savepoint) is opened and closed outside pipeline mode: a
            # Ctrl-C then never meets psycopg's transaction bookkeeping half-way in a pipeline.
            with atomic(conn, owned=owned), _pipeline(conn) as pipeline, _cursor(conn) as cur:
                sender.pipeline = pipeline
                for chunk in stream:
                    sender.send(cur, chunk)
                    del chunk  # not held while the next one is read
    return sender.total


def _keyless(job: Any) -> bool:
    spec = getattr(job, "spec", None)
    return getattr(spec, "job_key", None) is None


def _one_keyed_statement(jobs: list[Any]) -> bool:
    """Whether ``jobs`` make one add_jobs statement: all keyed, agreeing on PRESERVE_RUN_AT."""
    if len(jobs) > BATCH_SLICE or not all(isinstance(job, RawJobSpec) for job in jobs):
        return False
    if any(job.spec.job_key is None for job in jobs):
        return False
    return len({job.spec.job_key_mode is JobKeyMode.PRESERVE_RUN_AT for job in jobs}) == 1


#: Whether libpq has pipeline mode (14+; psycopg's binary package ships one that has).
_PIPELINES = psycopg.Pipeline.is_supported()


@contextmanager
def _pipeline(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Pipeline | None]:
    """Statements are queued, and a chunk is prepared while the server runs the one before;
    errors surface at the next sync, still inside the transaction."""
    if not _PIPELINES:  # pragma: no cover - libpq < 14
        yield None
        return
    try:
        with conn.pipeline() as pipeline:
            yield pipeline
    except psycopg.Error as error:
        # A Ctrl-C while the pipeline syncs makes psycopg fail to leave pipeline mode ("cannot
        # exit pipeline mode while busy"); the caller must see the interrupt, as it would
        # without a pipeline, not a database error.
        interrupt = error.__context__
        if isinstance(interrupt, BaseException) and not isinstance(interrupt, Exception):
            raise interrupt from None
        raise


class _Sender:
    """The state of one bulk call: the fast-path decision, the keys seen, the count."""

    def __init__(
        self,
        schema: str,
        enqueue: Enqueue,
        fast_path: Callable[[LibraryCursor, str], bool],
    ) -> None:
        self.schema = schema
        self.enqueue = enqueue
        self.fast_path = fast_path
        self.fast: bool | None = None  # decided when the first keyless job comes
        self.keys: dict[str, int] = {}
        self.total = 0
        self.text_codec: str | None = None
        self.encoding = ""
        self.pipeline: psycopg.Pipeline | None = None

    def send(self, cur: LibraryCursor, chunk: list[Any]) -> None:
        if self.fast is None and any(map(_keyless, chunk)):
            # Text in another client encoding is checked per document: add_jobs only.
            self.fast = self.text_codec is None and self.fast_path(cur, self.schema)
        prepared = prepare_chunk(chunk, self.total, self.enqueue, self.keys, fast=bool(self.fast))
        if self.text_codec is not None:
            for statement in prepared.keyed:
                found = unencodable_job(statement.params, statement.positions, self.text_codec)
                if found is not None:
                    raise unencodable(self.encoding, *found) from None
        if self.pipeline is not None and self.total:
            self.pipeline.sync()  # the chunk before is done (or raises) before this one is sent
        _send(cur, self.schema, prepared)
        self.total += prepared.count

    def error(self, error: psycopg.Error) -> GraphileWorkerError:
        """The library error for a statement's failure (the marked ones of the templates)."""
        text = str(error)
        if _RACE_MARKER in text:
            return JobKeyRaceError(
                "bulk_add_jobs: a worker locked the existing job of a keyed job while it was"
                " being replaced; nothing of this call was kept (the input may be an"
                " iterator, so it is not retried): retry the call"
            )
        if _INVISIBLE_MARKER in text:
            return DatabaseError(_INVISIBLE_ROWS)
        return database_error("bulk_add_jobs", self.schema, error)


def _send(cur: LibraryCursor, schema: str, chunk: Chunk) -> None:
    """Send one prepared chunk's statements (each fails if it schedules fewer jobs)."""
    keyless = chunk.keyless
    if keyless is not None:
        cur.execute(catalog.render("bulk_add_names", schema), keyless.names, binary=True)
        cur.execute(catalog.render("bulk_add_keyless_jobs", schema), keyless.params, binary=True)
    query = catalog.render("bulk_add_keyed_jobs", schema)
    for statement in chunk.keyed:
        cur.execute(query, statement.params, binary=True)


_RACE_MARKER = "graphile_worker_utils: job key race"
_INVISIBLE_MARKER = "graphile_worker_utils: rows not visible"
# As _enqueue's: without a key, fewer rows than sent means the role cannot see what it wrote.
_INVISIBLE_ROWS = (
    "bulk_add_jobs: the database scheduled fewer jobs than asked although no job key was"
    " given; the role cannot see the rows it writes. Row level security is on for"
    " graphile-worker's _private_* tables: use a role that owns them or has BYPASSRLS, or add"
    " policies that let it read and write them (README, 'Least privilege'); nothing of this"
    " call was kept"
)
