"""Preparing enqueues: values in, statement parameters out; pure, no I/O.

Every job is checked, run through the hooks and encoded here, before any SQL is sent, so that
a bad job anywhere in a batch is refused with nothing written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import attrs

from ._errors import InvalidJobSpec
from ._hooks import BeforeScheduleHook, run_hooks, with_trace
from ._payload import JsonDumps, array_element_at, dumps, encode_payload, encode_payloads
from ._types import (
    DEFAULT_SPEC,
    MAX_IDENTIFIER_LENGTH,
    JobKeyMode,
    JobSpec,
    RawJobSpec,
    check_text,
)

#: The most jobs :meth:`WorkerUtils.add_raw_jobs` sends in one statement.
BATCH_SLICE = 10_000


@attrs.frozen(kw_only=True)
class Enqueue:
    """What every job of one enqueue call shares."""

    hooks: Sequence[BeforeScheduleHook]
    json_dumps: JsonDumps | None
    #: The caller's trace (``_trace`` for dict payloads), or None.
    trace: dict[str, Any] | None
    #: The run_at of jobs without one (``use_local_time``), or None: the database's now().
    now: dt.datetime | None


@attrs.frozen
class Statement:
    """One add_jobs statement of a batch: its parameters, the task identifiers and queue
    names its jobs name, and the position of its first job in the batch."""

    params: dict[str, Any]
    identifiers: set[str]
    queue_names: set[str]
    start: int

    def forget_params(self) -> None:
        """Drop the parameters (the JSON documents) once sent, when the statement will not be
        sent again: the memory goes back before its jobs are built."""
        self.params.clear()


@attrs.frozen
class Batch:
    """A checked, encoded batch: its statements, its size, and its job keys (key: index)."""

    statements: list[Statement]
    count: int
    keys: dict[str, int]


def job_params(identifier: object, payload: Any, spec: object, enqueue: Enqueue) -> dict[str, Any]:
    """The parameters of the add_job operation for one job, checked, hooked and encoded."""
    identifier = check_text("identifier", identifier, max_length=MAX_IDENTIFIER_LENGTH)
    if spec is None:
        spec = DEFAULT_SPEC
    elif not isinstance(spec, JobSpec):
        raise InvalidJobSpec(f"spec: expected a JobSpec or None, got {type(spec).__name__}")
    payload = with_trace(payload, enqueue.trace)
    if enqueue.hooks:
        payload = run_hooks(enqueue.hooks, identifier, payload, spec)
    run_at = spec.run_at if spec.run_at is not None else enqueue.now
    return {
        "identifier": identifier,
        "payload": None if payload is None else encode_payload(payload, enqueue.json_dumps),
        "queue_name": spec.queue_name,
        "run_at": run_at,
        "max_attempts": spec.max_attempts,
        "job_key": spec.job_key,
        "priority": spec.priority,
        "flags": None if spec.flags is None else list(spec.flags),
        "job_key_mode": None if spec.job_key_mode is None else spec.job_key_mode.value,
    }


def _preserve_flag(index: int, job: object, keys: dict[str, int]) -> bool | None:
    """Check one job of a batch; its PRESERVE_RUN_AT wish, None when it has no key."""
    if not isinstance(job, RawJobSpec):
        raise InvalidJobSpec(f"jobs[{index}]: expected a RawJobSpec, got {type(job).__name__}")
    spec = job.spec
    mode = spec.job_key_mode
    if mode is JobKeyMode.UNSAFE_DEDUPE:
        raise InvalidJobSpec(
            f"jobs[{index}].job_key_mode: UNSAFE_DEDUPE works for single jobs only"
            " (add_raw_job), not in a batch"
        )
    key = spec.job_key
    if key is None:
        return None
    first = keys.setdefault(key, index)
    if first != index:
        raise InvalidJobSpec(
            f"jobs[{index}].job_key: {key!r} is also the key of jobs[{first}];"
            " keys must be unique within a batch"
        )
    return mode is JobKeyMode.PRESERVE_RUN_AT


def prepare_batch(jobs: list[Any], enqueue: Enqueue, limit: int = BATCH_SLICE) -> Batch:
    """Check, hook and encode ``jobs`` (RawJobSpecs) into statements of at most ``limit``."""
    hooks = enqueue.hooks
    preserve: list[bool | None] = []  # per job: PRESERVE_RUN_AT asked; None: no key
    keys: dict[str, int] = {}
    # Specs are often shared between jobs, and so are identifiers: each (identifier, spec)
    # pair is encoded once, and a statement's specs document joins the shared texts.
    elements: dict[tuple[str, int], _Element] = {}
    element_of: list[_Element] = []
    payloads: list[Any] = []
    for index, job in enumerate(jobs):
        preserve.append(_preserve_flag(index, job, keys))
        spec = job.spec
        payload = with_trace(job.payload, enqueue.trace)
        if hooks:
            payload = run_hooks(hooks, job.identifier, payload, spec)
        element = elements.get((job.identifier, id(spec)))
        if element is None:
            element = elements[job.identifier, id(spec)] = _element(job.identifier, spec, enqueue)
        element_of.append(element)
        # No payload is the database's default, an empty object.
        payloads.append({} if payload is None else payload)
    statements = [
        _statement(element_of, payloads, start, stop, preserve_run_at, enqueue.json_dumps)
        for start, stop, preserve_run_at in statement_runs(preserve, limit)
    ]
    return Batch(statements, len(element_of), keys)


class _Element(NamedTuple):
    """One (identifier, spec) pair: its element of the specs document, and its names."""

    text: str
    identifier: str
    queue_name: str | None


def _element(identifier: str, spec: JobSpec, enqueue: Enqueue) -> _Element:
    fields = spec_element(spec, enqueue.now)
    return _Element(dumps({"identifier": identifier, **fields}), identifier, spec.queue_name)


def _statement(
    element_of: list[_Element],
    payloads: list[Any],
    start: int,
    stop: int,
    preserve_run_at: bool,
    json_dumps: JsonDumps | None,
) -> Statement:
    # Up to BATCH_SLICE jobs go in one statement. A larger batch is sent a slice at a time
    # inside one transaction (still all or nothing), so that neither side ever holds the whole
    # result twice. So is a batch whose keyed jobs differ on PRESERVE_RUN_AT, which the
    # database takes per statement: each job then follows its own mode.
    part = set(element_of[start:stop])
    return Statement(
        {
            "specs": "[" + ",".join([element.text for element in element_of[start:stop]]) + "]",
            "payloads": encode_payloads(payloads[start:stop], json_dumps, start),
            "preserve_run_at": preserve_run_at,
            "count": stop - start,
        },
        {element.identifier for element in part},
        {element.queue_name for element in part if element.queue_name is not None},
        start,
    )


def statement_runs(preserve: list[bool | None], limit: int) -> list[tuple[int, int, bool]]:
    """Split a batch into runs of consecutive jobs, ``(start, stop, preserve_run_at)``, of at
    most ``limit`` jobs whose keyed jobs agree on PRESERVE_RUN_AT (None: keyless, any run)."""
    runs: list[tuple[int, int, bool]] = []
    start, current = 0, None
    for index, flag in enumerate(preserve):
        differs = flag is not None and current is not None and flag != current
        if index - start == limit or differs:
            runs.append((start, index, bool(current)))
            start, current = index, None
        if flag is not None:
            current = flag
    if start < len(preserve):
        runs.append((start, len(preserve), bool(current)))
    return runs


def spec_element(spec: JobSpec, run_at: dt.datetime | None) -> dict[str, Any]:
    """The spec's part of one element of the add_jobs JSON document (``run_at``: the default
    when the spec has none). None fields are left out: a JSON null would become the json
    value 'null', not SQL NULL, for the payload."""
    fields: dict[str, Any] = {}
    if spec.queue_name is not None:
        fields["queue_name"] = spec.queue_name
    if spec.run_at is not None:
        run_at = spec.run_at
    if run_at is not None:
        fields["run_at"] = run_at.isoformat()
    if spec.max_attempts is not None:
        fields["max_attempts"] = spec.max_attempts
    if spec.job_key is not None:
        fields["job_key"] = spec.job_key
    if spec.priority is not None:
        fields["priority"] = spec.priority
    if spec.flags is not None:
        fields["flags"] = list(spec.flags)
    return fields


# -- text the connection's client encoding cannot carry ----------------------------------------


def unencodable(encoding: str, field: str, error: UnicodeEncodeError) -> InvalidJobSpec:
    """The error for text of ``field`` that ``encoding`` (a client_encoding) cannot carry."""
    text = error.object[error.start : error.end]
    return InvalidJobSpec(
        f"{field}: {text!r} cannot be sent on this connection, whose client_encoding is"
        f" {encoding} (psycopg encodes text parameters in it); nothing was written. Use a UTF8"
        " connection for such text"
    )


def check_texts(codec: str, encoding: str, texts: Iterable[tuple[str, Any]]) -> None:
    """Refuse text ``codec`` cannot encode, before any statement: psycopg would raise
    UnicodeEncodeError part-way (after a batch's first slices). ``texts``: (field, value),
    a value a str, a list of str, or anything else (not text, not checked)."""
    for field, value in texts:
        for index, text in enumerate(value if isinstance(value, list) else [value]):
            try:
                if isinstance(text, str):
                    text.encode(codec)
            except UnicodeEncodeError as error:
                name = f"{field}[{index}]" if isinstance(value, list) else field
                raise unencodable(encoding, name, error) from None


def check_batch_texts(codec: str, encoding: str, batch: Batch) -> None:
    """:func:`check_texts` for add_jobs' documents, naming the job and the field."""
    for statement in batch.statements:
        for key in ("specs", "payloads"):
            document = statement.params[key]
            try:
                document.encode(codec)
            except UnicodeEncodeError as error:
                index, element = array_element_at(document, error.start)
                field = "payload" if key == "payloads" else unencodable_field(element, codec)
                name = f"jobs[{statement.start + index}].{field}"
                raise unencodable(encoding, name, error) from None


def unencodable_field(element: dict[str, Any], codec: str) -> str:
    """The field of a spec element whose value ``codec`` cannot encode."""
    for field, value in element.items():
        try:
            dumps(value).encode(codec)
        except UnicodeEncodeError:
            return field
    return "spec"  # pragma: no cover - the element held the text that failed
