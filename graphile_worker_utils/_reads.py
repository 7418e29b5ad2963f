"""The read side: find jobs by id, by key or by filters, and the workers holding locks.

Arguments are checked by pure functions (:func:`list_query`, :func:`job_id_param` ...) before
any SQL; :func:`read` runs one statement and writes nothing. On a pool each read is one
statement in autocommit (nothing to commit); on the caller's connection it joins whatever
transaction is open, and sees that transaction's own uncommitted jobs.

What the indexes can do for :meth:`WorkerUtils.list_jobs`. graphile-worker's jobs table has a
primary key on ``id``, a unique index on ``key``, and two partial indexes on
``(priority, run_at)`` over the available jobs (``is_available``: unlocked with attempts left)
for the workers' pick. A page is in id order, so it walks the primary key from ``after_id`` and
stops at ``limit`` matching rows: a dense filter costs little, a rare one (a task with few jobs,
``locked_by``, ``running`` when a few jobs run among a million) reads every row from
``after_id`` to the end. Measured on 1,000,000 jobs (benchmarks/reads.py, a quiet 2-core
machine): a page of a common state, task or queue 1-2 ms; by a task with 50 jobs 0.21 s and by
``locked_by`` 0.22 s (the whole table read); ``running`` 0.04 s (three fifths of it read);
:meth:`WorkerUtils.locked_workers` 0.11 s (every job read). No index of graphile-worker's
holds ``task_id``, ``job_queue_id``, ``locked_by`` or ``locked_at`` in an order that could
serve them. The partial indexes cannot serve the states either: a job with a stale lock (over
four hours) is ready, retrying, scheduled or permanently failed, yet it is not
``is_available``, and only reading the locked rows finds it. We do not add indexes to
graphile-worker's schema; benchmarks/reads.py measures each case.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import attrs

from ._connector import Connector, wrap_exceptions
from ._cursors import cursor as _cursor
from ._cursors import instant
from ._enqueue import check_params
from ._errors import InvalidJobSpec
from ._hooks import operation_span
from ._public import public
from ._rows import Row, jobs_from_rows
from ._templates import catalog
from ._types import (
    BIGINT_MAX,
    BIGINT_MIN,
    MAX_IDENTIFIER_LENGTH,
    MAX_JOB_KEY_LENGTH,
    MAX_QUEUE_NAME_LENGTH,
    Job,
    JobState,
    check_duration,
    check_int,
    check_items,
    check_text,
)

#: The largest page :meth:`WorkerUtils.list_jobs` returns.
MAX_PAGE = 10_000

_STATE_ORDER = tuple(JobState)


@public
@attrs.frozen(kw_only=True)
class LockedWorker:
    """A worker id holding locks on jobs or queues (:meth:`WorkerUtils.locked_workers`)."""

    #: The ``locked_by`` value: graphile-worker 0.17+ writes its pool id (``pool-…``).
    worker_id: str
    #: How many jobs it locks (stale locks included).
    job_count: int
    #: How many queues it locks (stale locks included).
    queue_count: int
    #: Its oldest lock on a job or queue (UTC).
    oldest_locked_at: dt.datetime


@attrs.frozen
class ListQuery:
    """A checked list_jobs call: its statement parameters and its template clauses."""

    params: dict[str, Any]
    clauses: dict[str, Any]


def job_id_param(job_id: object) -> dict[str, Any]:
    """get_job's parameters: ``job_id`` a bigint."""
    return {"job_id": check_int("job_id", job_id, BIGINT_MIN, BIGINT_MAX)}


def job_key_param(job_key: object) -> dict[str, Any]:
    """get_job_by_key's parameters: ``job_key`` a key graphile-worker could store."""
    return {"job_key": check_text("job_key", job_key, MAX_JOB_KEY_LENGTH)}


def _texts(field: str, value: object, limit: int) -> list[str] | None:
    if value is None:
        return None
    return [
        check_text(f"{field}[{index}]", item, limit)
        for index, item in enumerate(check_items(value, field, "str"))
    ]


def state_values(states: object) -> tuple[str, ...] | None:
    """The JobState values wanted, in JobState's order, each once (None: every state)."""
    if states is None:
        return None
    wanted = set()
    for index, state in enumerate(check_items(states, "states", "JobState")):
        try:
            wanted.add(JobState(state))
        except ValueError:
            allowed = ", ".join(repr(member.value) for member in JobState)
            raise InvalidJobSpec(f"states[{index}]: {state!r} is not one of {allowed}") from None
    if len(wanted) == len(_STATE_ORDER):
        return None  # every state: no filter
    return tuple(state.value for state in _STATE_ORDER if state in wanted)


def list_query(
    *,
    task_identifiers: object,
    queue_names: object,
    states: object,
    locked_by: object,
    after_id: object,
    limit: object,
    include_payload: object,
) -> ListQuery:
    """list_jobs' arguments checked, as parameters and clauses; raises InvalidJobSpec naming
    the field and the limit."""
    tasks = _texts("task_identifiers", task_identifiers, MAX_IDENTIFIER_LENGTH)
    queues = _texts("queue_names", queue_names, MAX_QUEUE_NAME_LENGTH)
    worker = None if locked_by is None else check_text("locked_by", locked_by)
    after = 0 if after_id is None else check_int("after_id", after_id, 0, BIGINT_MAX)
    if not isinstance(include_payload, bool):
        raise InvalidJobSpec(
            f"include_payload: expected a bool, got {type(include_payload).__name__}"
        )
    params = {
        "after_id": after,
        "limit": check_int("limit", limit, 1, MAX_PAGE),
        "task_identifiers": tasks,
        "queue_names": queues,
        "locked_by": worker,
    }
    clauses = {
        "tasks": tasks is not None,
        "queues": queues is not None,
        "locked_by": worker is not None,
        "states": state_values(states),
        "without_payload": not include_payload,
    }
    return ListQuery(params, clauses)


def older_than_param(older_than: object) -> dict[str, Any]:
    """locked_workers' parameters: ``older_than`` None or a timedelta of zero or more."""
    return {"older_than": check_duration("older_than", older_than)}


def read(connector: Connector, operation: str, params: dict[str, Any], **clauses: Any) -> list[Row]:
    """The rows of ``operation``'s one statement: nothing written, nothing committed."""
    query = catalog.render(operation, connector.schema, **clauses)
    with (
        operation_span(operation, connector.schema, enqueue=False),
        connector.connection(single_statement=True) as (conn, _),
    ):
        check_params(conn, params.items())
        with wrap_exceptions(operation, connector.schema), _cursor(conn) as cur:
            cur.execute(query, params, binary=True)
            return cur.fetchall()


def one_job(rows: list[Row]) -> Job | None:
    """The job of a lookup's rows, None without any."""
    return jobs_from_rows(rows)[0] if rows else None


def locked_workers_from_rows(rows: Iterable[Row]) -> list[LockedWorker]:
    """The workers of the locked_workers operation's rows (timestamps in microseconds)."""
    return [
        LockedWorker(
            worker_id=worker_id,
            job_count=int(jobs),
            queue_count=int(queues),
            oldest_locked_at=instant(oldest),
        )
        for worker_id, jobs, queues, oldest in rows
    ]
