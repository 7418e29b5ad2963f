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
from typing import Any

import psycopg

from ._batch import Enqueue, unencodable
from ._bulk import Chunk, chunks, prepare_chunk, unencodable_job
from ._connector import Connector, client_encoding, codec, wrap_exceptions
from ._cursors import LibraryCursor
from ._cursors import cursor as _cursor
from ._errors import DatabaseError, JobKeyRaceError
from ._templates import catalog, dollar_tag, quote_identifier
from ._transactions import atomic

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
    schema = connector.schema
    with connector.connection() as (conn, owned):
        text_codec = codec(conn)
        with (
            wrap_exceptions("bulk_add_jobs", schema),
            atomic(conn, owned=owned),
            _cursor(conn) as cur,
        ):
            # Text in another client encoding is checked per document: add_jobs only.
            fast = text_codec is None and fast_path(cur, schema)
            keys: dict[str, int] = {}
            total = start = 0
            for chunk in itertools.chain([first], pending):
                prepared = prepare_chunk(chunk, start, enqueue, keys, fast=fast)
                if text_codec is not None:
                    _check_texts(conn, text_codec, prepared)
                total += _send(cur, schema, prepared)
                start += len(chunk)
    return total


def _check_texts(conn: psycopg.Connection[Any], text_codec: str, chunk: Chunk) -> None:
    for statement in chunk.keyed:
        found = unencodable_job(statement.params, statement.positions, text_codec)
        if found is not None:
            raise unencodable(client_encoding(conn), *found) from None


def _send(cur: LibraryCursor, schema: str, chunk: Chunk) -> int:
    """Send one prepared chunk; the number of jobs scheduled (always the chunk's size)."""
    keyless = chunk.keyless
    if keyless is not None:
        cur.execute(catalog.render("bulk_add_names", schema), keyless.names, binary=True)
        cur.execute(catalog.render("bulk_add_keyless_jobs", schema), keyless.params, binary=True)
        if cur.rowcount != len(keyless.positions):
            raise DatabaseError(_INVISIBLE_ROWS.format(count=len(keyless.positions)))
    query = catalog.render("bulk_add_keyed_jobs", schema)
    for statement in chunk.keyed:
        cur.execute(query, statement.params, binary=True)
        row = cur.fetchone()
        scheduled = row[0] if row else 0
        sent = len(statement.positions)
        if scheduled == sent:
            continue
        if not statement.keys:
            raise DatabaseError(_INVISIBLE_ROWS.format(count=sent))
        raise JobKeyRaceError(
            "bulk_add_jobs: a worker locked the existing job of one of the"
            f" {statement.keys} keyed jobs of jobs[{statement.positions[0]}.."
            f"{statement.positions[-1]}] while it was being replaced; nothing of this call was"
            " kept (the input may be an iterator, so it is not retried): retry the call"
        )
    return chunk.count


# As _enqueue's: without a key, fewer rows than sent means the role cannot see what it wrote.
_INVISIBLE_ROWS = (
    "bulk_add_jobs ({count} jobs of a chunk): the database scheduled fewer jobs than asked"
    " although no job key was given; the role cannot see the rows it writes. Row level"
    " security is on for graphile-worker's _private_* tables: use a role that owns them or has"
    " BYPASSRLS, or add policies that let it read and write them (README, 'Least privilege');"
    " nothing of this call was kept"
)
