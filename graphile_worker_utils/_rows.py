"""Job rows to :class:`Job` values: pure, no I/O.

The statements that return jobs select ``sql/fragments/job_columns.sql.j2``; :data:`JOB_COLUMNS`
names its columns in order, and ``tests/test_unit_rows.py`` checks that they match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ._cursors import instant
from ._types import Job, JobState

Row = tuple[Any, ...]

#: The columns of ``sql/fragments/job_columns.sql.j2``, in order.
JOB_COLUMNS = (
    "id",
    "task_id",
    "job_queue_id",
    "payload",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "last_error",
    "created_at",
    "updated_at",
    "key",
    "locked_at",
    "locked_by",
    "revision",
    "flags",
    "task_identifier",
    "queue_name",
    "state",
)
ID = JOB_COLUMNS.index("id")
TASK_ID = JOB_COLUMNS.index("task_id")
JOB_QUEUE_ID = JOB_COLUMNS.index("job_queue_id")
#: The task's name, null when the statement's own call created the task (outside its snapshot).
TASK_IDENTIFIER = JOB_COLUMNS.index("task_identifier")
#: The queue's name, null outside any queue and when the statement's own call created it.
QUEUE_NAME = JOB_COLUMNS.index("queue_name")

# JobState by value: a dict lookup is several times faster than JobState(value), and takes
# the null of a deleted job to None.
_STATES: dict[str | None, JobState] = {state.value: state for state in JobState}


def job_from_row(
    row: Row,
    task_identifier: str,
    queue_name: str | None,
    at: Callable[[int], dt.datetime] = instant,
) -> Job:
    """The job of one row, with its task and queue names given (see :func:`labelled`)."""
    # In the order of JOB_COLUMNS; unpacking is the fastest way to read a row.
    (
        id_,
        task_id,
        job_queue_id,
        payload_json,
        priority,
        run_at,
        attempts,
        max_attempts,
        last_error,
        created_at,
        updated_at,
        key,
        locked_at,
        locked_by,
        revision,
        flags,
        _,
        _,
        state,
    ) = row
    # Our cursors load timestamptz as microseconds (see _cursors.instant). A new job's three
    # instants are mostly one (now()): made into a datetime once.
    created = at(created_at)
    return Job(
        id_,
        task_identifier,
        queue_name,
        payload_json,
        priority,
        created if run_at == created_at else at(run_at),
        attempts,
        max_attempts,
        last_error,
        created,
        created if updated_at == created_at else at(updated_at),
        key,
        None if locked_at is None else at(locked_at),
        locked_by,
        revision,
        None if flags is None else list(flags),
        task_id,
        job_queue_id,
        _STATES.get(state),
    )


def jobs_from_rows(rows: Iterable[Row]) -> list[Job]:
    """Maintenance results: the jobs' tasks and queues existed before the statement."""
    return [job_from_row(row, row[TASK_IDENTIFIER], row[QUEUE_NAME]) for row in rows]


def single_job(row: Row, identifier: str, queue_name: str | None) -> Job:
    """The job add_job returned for ``identifier`` and ``queue_name`` (the spec's).

    A name the statement's join could not see belongs to a task or queue this very call
    created: the one the caller named.
    """
    queue = row[QUEUE_NAME]
    if queue is None and row[JOB_QUEUE_ID] is not None:
        queue = queue_name
    return job_from_row(row, row[TASK_IDENTIFIER] or identifier, queue)


def _instants() -> Callable[[int], dt.datetime]:
    # The jobs of one statement mostly share their timestamps (now() of the transaction):
    # each distinct one becomes one datetime, instead of three per job.
    instants: dict[int, dt.datetime] = {}

    def at(micros: int) -> dt.datetime:
        value = instants.get(micros)
        if value is None:
            value = instants[micros] = instant(micros)
        return value

    return at


@attrs.define
class Labelling:
    """The jobs of one add_jobs statement, and what is known of their tasks' and queues' names.

    ``unnamed`` are the positions of jobs whose row could not name its task or queue: the
    statement created them, so they are outside its snapshot.
    """

    jobs: list[Job] = attrs.field(factory=list)
    unnamed: list[int] = attrs.field(factory=list)
    task_names: dict[int, str] = attrs.field(factory=dict)
    queue_names: dict[int, str] = attrs.field(factory=dict)


def label_rows(chunks: Iterable[Iterable[Row]]) -> Labelling:
    """Jobs from an add_jobs result, read a chunk of rows at a time (so that a large batch
    never holds every row tuple beside every job); names known from the rows are kept."""
    result = Labelling()
    jobs, unnamed = result.jobs, result.unnamed
    task_names, queue_by_id = result.task_names, result.queue_names
    at = _instants()
    # Positions as locals: this loop runs once per job of every batch.
    task_at, queue_at, task_id_at, queue_id_at = TASK_IDENTIFIER, QUEUE_NAME, TASK_ID, JOB_QUEUE_ID
    for rows in chunks:
        for row in rows:
            task_name, queue_name = row[task_at], row[queue_at]
            if task_name is None or (queue_name is None and row[queue_id_at] is not None):
                unnamed.append(len(jobs))
            else:
                # Every row carries its own copy of the names: the jobs share the first one.
                task_name = task_names.setdefault(row[task_id_at], task_name)
                if queue_name is not None:
                    queue_name = queue_by_id.setdefault(row[queue_id_at], queue_name)
            jobs.append(job_from_row(row, task_name, queue_name, at))
    return result


def names_to_look_up(
    labelling: Labelling, identifiers: set[str], queue_names: set[str]
) -> tuple[list[int], list[int]]:
    """The task ids and queue ids whose names must be read from the database (sorted).

    Every spec made a row, so the names (of ``identifiers`` and ``queue_names``, the batch's)
    that no row resolved are exactly the ones this call created; one new name needs no
    lookup (it is recorded in ``labelling``), several do.
    """
    jobs, task_names, queue_by_id = labelling.jobs, labelling.task_names, labelling.queue_names
    missing_tasks = {jobs[i].task_id for i in labelling.unnamed} - task_names.keys()
    missing_queues: set[int] = set()
    for i in labelling.unnamed:
        queue_id = jobs[i].job_queue_id
        if queue_id is not None and queue_id not in queue_by_id:
            missing_queues.add(queue_id)
    new_tasks = identifiers - set(task_names.values())
    new_queues = queue_names - set(queue_by_id.values())
    if len(missing_tasks) == len(new_tasks) == 1:
        task_names[missing_tasks.pop()] = new_tasks.pop()
    if len(missing_queues) == len(new_queues) == 1:
        queue_by_id[missing_queues.pop()] = new_queues.pop()
    return sorted(missing_tasks), sorted(missing_queues)


def labelled(labelling: Labelling, names: Iterable[tuple[bool, int, str]] = ()) -> list[Job]:
    """The jobs, each unnamed one given its task and queue names; ``names`` are the rows of
    the job_names operation: ``(is_queue, id, name)``."""
    for is_queue, name_id, name in names:
        (labelling.queue_names if is_queue else labelling.task_names)[name_id] = name
    jobs = labelling.jobs
    for i in labelling.unnamed:
        job = jobs[i]
        queue_id = job.job_queue_id
        jobs[i] = attrs.evolve(
            job,
            task_identifier=labelling.task_names[job.task_id],
            queue_name=None if queue_id is None else labelling.queue_names[queue_id],
        )
    return jobs
