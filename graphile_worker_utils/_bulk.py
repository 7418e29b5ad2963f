"""Preparing bulk enqueues: an iterable of jobs, read lazily in chunks; pure, no I/O.

Each chunk is checked, hooked and encoded like a batch of :func:`._batch.prepare_batch`
(the same per-job checks, trace and hooks, in input order), into two kinds of statement
parameters: the keyless jobs as columns for the fast path (``sql/bulk_add_keyless_jobs``),
and the keyed ones (or every job, where the fast path does not apply) as add_jobs documents
(``sql/bulk_add_keyed_jobs``). Jobs are named by their position in the whole input
(``jobs[i]``), and job keys are checked across chunks: memory grows with keyed jobs only.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ._batch import (
    BATCH_SLICE,
    Enqueue,
    _preserve_flag,
    spec_element,
    statement_runs,
    unencodable_field,
)
from ._errors import ConfigurationError, GraphileWorkerError, InvalidJobSpec
from ._hooks import run_hooks, with_trace
from ._payload import JsonDumps, array_element_at, dumps, encode_payload, encode_payloads
from ._types import JobSpec

#: How many jobs :meth:`WorkerUtils.bulk_add_raw_jobs` reads, prepares and sends at a time.
DEFAULT_CHUNK_SIZE = 10_000
#: The largest chunk: one statement of a million jobs costs the server 0.5 to 1 GB.
MAX_CHUNK_SIZE = 100_000


def check_chunk_size(value: object) -> int:
    """``value`` if it is an int within 1..MAX_CHUNK_SIZE, else ConfigurationError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"chunk_size: expected an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_CHUNK_SIZE:
        raise ConfigurationError(
            f"chunk_size: {value} is outside the allowed range 1..{MAX_CHUNK_SIZE}"
        )
    return int(value)


def iterate(jobs: object, expected: str) -> Iterator[Any]:
    """An iterator over ``jobs``; InvalidJobSpec when it is no iterable (a str counts as none)."""
    if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Iterable):
        raise InvalidJobSpec(f"jobs: expected an iterable of {expected}, got {type(jobs).__name__}")
    try:
        return iter(jobs)
    except Exception as error:
        message = f"jobs: iterating it raised {type(error).__name__}: {error}"
        raise InvalidJobSpec(message) from error


def chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to ``size`` items, read as they are needed; an exception raised by the
    input becomes InvalidJobSpec (as :func:`._types.check_items` does for a batch)."""
    while True:
        try:
            chunk = list(itertools.islice(items, size))
        except GraphileWorkerError:
            raise  # bulk_add_jobs' own checks of typed tasks, already naming the item
        except Exception as error:
            raise InvalidJobSpec(
                f"jobs: iterating it raised {type(error).__name__}: {error}"
            ) from error
        if not chunk:
            return
        yield chunk


@attrs.frozen
class Keyless:
    """The keyless jobs of a chunk as columns (the parameters of bulk_add_keyless_jobs), the
    distinct names (bulk_add_names'), and where each job is in the input (for messages)."""

    params: dict[str, Any]
    names: dict[str, Any]
    positions: list[int]


@attrs.frozen
class Keyed:
    """One bulk_add_keyed_jobs statement: its parameters, and its jobs' input positions."""

    params: dict[str, Any]
    positions: list[int]
    keys: int


@attrs.frozen
class Chunk:
    """A prepared chunk: its keyless columns (None: none, or no fast path) and its add_jobs
    statements, each all of a run of jobs that agree on PRESERVE_RUN_AT."""

    keyless: Keyless | None
    keyed: list[Keyed]
    count: int


class _Kinds:
    """The distinct kinds of keyless job (task, spec) of a chunk, and each job's kind."""

    def __init__(self, now: dt.datetime | None) -> None:
        self.now = now
        self.numbers: dict[tuple[str, int], int] = {}
        self.specs: list[JobSpec] = []  # kept alive, so that id() keys stay unique
        self.columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        self.jobs: list[int] = []

    def add(self, identifier: str, spec: JobSpec) -> None:
        key = (identifier, id(spec))
        number = self.numbers.get(key)
        if number is None:
            number = self.numbers[key] = len(self.numbers) + 1
            self.specs.append(spec)
            run_at = spec.run_at if spec.run_at is not None else self.now
            flags = None if spec.flags is None else dumps(list(spec.flags))
            values = (identifier, spec.queue_name, run_at, spec.max_attempts, spec.priority, flags)
            for column, value in zip(self.columns, values, strict=True):
                column.append(value)
        self.jobs.append(number)

    def params(self, payloads: str) -> dict[str, Any]:
        identifiers, queue_names, run_at, max_attempts, priorities, flags = self.columns
        return {
            "kind_identifiers": identifiers,
            "kind_queue_names": queue_names,
            "kind_run_at": run_at,
            "kind_max_attempts": max_attempts,
            "kind_priorities": priorities,
            "kind_flags": flags,
            # As text: the server parses it faster than psycopg adapts a list of ints.
            "job_kinds": "{" + ",".join(map(str, self.jobs)) + "}",
            "payloads": payloads,
            "count": len(self.jobs),
        }

    def names(self) -> dict[str, Any]:
        identifiers, queue_names = self.columns[0], self.columns[1]
        return {
            "identifiers": sorted(set(identifiers)),
            "queue_names": sorted({name for name in queue_names if name is not None}),
            "count": len(self.jobs),
        }


def prepare_chunk(
    jobs: list[Any], start: int, enqueue: Enqueue, keys: dict[str, int], *, fast: bool
) -> Chunk:
    """Check, hook and encode one chunk whose first job is ``jobs[start]`` of the input.

    ``keys`` (key: position) holds the keys of the chunks before and gets this chunk's; a
    key seen before is refused. ``fast``: keyless jobs go to the fast path's columns.
    """
    hooks, trace = enqueue.hooks, enqueue.trace
    kinds = _Kinds(enqueue.now)
    keyless_payloads: list[Any] = []
    keyless_positions: list[int] = []
    preserve: list[bool | None] = []
    elements: list[dict[str, Any]] = []
    payloads: list[Any] = []
    positions: list[int] = []
    spec_fields: dict[int, dict[str, Any]] = {}
    for position, job in enumerate(jobs, start):
        flag = _preserve_flag(position, job, keys)
        spec = job.spec
        payload = with_trace(job.payload, trace)
        if hooks:
            payload = run_hooks(hooks, job.identifier, payload, spec)
        # No payload is the database's default, an empty object.
        payload = {} if payload is None else payload
        if fast and flag is None:
            kinds.add(job.identifier, spec)
            keyless_payloads.append(payload)
            keyless_positions.append(position)
            continue
        fields = spec_fields.get(id(spec))
        if fields is None:
            fields = spec_fields[id(spec)] = spec_element(spec, enqueue.now)
        elements.append({"identifier": job.identifier, **fields})
        payloads.append(payload)
        positions.append(position)
        preserve.append(flag)
    keyless = None
    if keyless_positions:
        encoded = _encode(keyless_payloads, keyless_positions, enqueue.json_dumps)
        keyless = Keyless(kinds.params(encoded), kinds.names(), keyless_positions)
    keyed = [
        _keyed(elements, payloads, positions, preserve, run, enqueue.json_dumps)
        for run in statement_runs(preserve, BATCH_SLICE)
    ]
    return Chunk(keyless, keyed, len(jobs))


def _keyed(
    elements: list[dict[str, Any]],
    payloads: list[Any],
    positions: list[int],
    preserve: list[bool | None],
    run: tuple[int, int, bool],
    json_dumps: JsonDumps | None,
) -> Keyed:
    begin, end, preserve_run_at = run
    where = positions[begin:end]
    params = {
        "specs": dumps(elements[begin:end]),
        "payloads": _encode(payloads[begin:end], where, json_dumps),
        "preserve_run_at": preserve_run_at,
        "count": end - begin,
    }
    keys = sum(flag is not None for flag in preserve[begin:end])
    params["keyed"] = keys > 0
    return Keyed(params, where, keys)


def _encode(payloads: list[Any], positions: list[int], json_dumps: JsonDumps | None) -> str:
    """The payloads as one JSON array; a payload that cannot be encoded is named by its
    position in the input."""
    try:
        return encode_payloads(payloads, json_dumps)
    except InvalidJobSpec:
        for payload, position in zip(payloads, positions, strict=True):
            encode_payload(payload, json_dumps, f"jobs[{position}].payload")
        raise


def unencodable_job(
    documents: dict[str, Any], positions: list[int], codec: str
) -> tuple[str, UnicodeEncodeError] | None:
    """The first job of a statement whose text ``codec`` cannot encode, as ``jobs[i].field``
    with the error; None when all of it can be sent."""
    for key in ("specs", "payloads"):
        document = documents.get(key)
        if document is None:
            continue
        try:
            document.encode(codec)
        except UnicodeEncodeError as error:
            index, element = array_element_at(document, error.start)
            field = "payload" if key == "payloads" else unencodable_field(element, codec)
            return f"jobs[{positions[index]}].{field}", error
    return None
