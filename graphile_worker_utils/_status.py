"""What :meth:`WorkerUtils.status` reports: job counts per task and queue, and locked queues."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import psycopg

from ._cursors import cursor as _cursor
from ._cursors import instant
from ._migrations import schema_status
from ._public import public
from ._templates import catalog
from ._types import MAX_IDENTIFIER_LENGTH, MAX_QUEUE_NAME_LENGTH, JobState, check_items, check_text

#: The columns of ``sql/status.sql.j2``, in order.
STATUS_COLUMNS = (
    "task_identifier",
    "queue_name",
    "ready",
    "scheduled",
    "running",
    "retrying",
    "permanently_failed",
    "oldest_ready_age_seconds",
    "queue_locked_at",
    "queue_locked_by",
)


_STATES = tuple(state.value for state in JobState)


@public
@attrs.frozen(kw_only=True)
class StateCounts:
    """How many jobs are in each :class:`JobState` (the fields are named by its values)."""

    ready: int = 0
    scheduled: int = 0
    running: int = 0
    retrying: int = 0
    permanently_failed: int = 0

    def __getitem__(self, state: JobState) -> int:
        """The count of ``state`` (a :class:`JobState` or its value)."""
        count: int = getattr(self, JobState(state).value)
        return count

    def __add__(self, other: StateCounts) -> StateCounts:
        return StateCounts(**{state.value: self[state] + other[state] for state in JobState})

    @property
    def total(self) -> int:
        """Every job counted."""
        return sum(self[state] for state in JobState)


@public
@attrs.frozen(kw_only=True)
class StatusGroup:
    """The jobs of one task in one queue (or outside any queue)."""

    task_identifier: str
    #: The queue, None for jobs outside any queue.
    queue_name: str | None
    counts: StateCounts
    #: How long the longest-waiting ready job has been due (seconds); None with no ready job.
    oldest_ready_age_seconds: float | None
    #: The worker holding the queue, and since when (UTC); None when it is not locked.
    queue_locked_by: str | None
    queue_locked_at: dt.datetime | None


@public
@attrs.frozen(kw_only=True)
class LockedQueue:
    """A queue a worker holds locked."""

    queue_name: str
    locked_by: str | None
    #: When it was locked (UTC).
    locked_at: dt.datetime
    #: False for a lock left behind on a queue without any job.
    has_jobs: bool


@public
@attrs.frozen(kw_only=True)
class StatusReport:
    """The result of :meth:`WorkerUtils.status`: read-only, taken in one look."""

    schema: str
    #: The schema's newest recorded revision, None when there is none.
    revision: int | None
    #: When the report was made (this process's clock, UTC).
    generated_at: dt.datetime
    #: One group per (task, queue) with jobs, by task identifier then queue (None first).
    groups: tuple[StatusGroup, ...]
    #: Each locked queue once, in the order of ``groups`` (then those without jobs).
    locked_queues: tuple[LockedQueue, ...]

    @property
    def totals(self) -> StateCounts:
        """The counts of every group added up."""
        totals = StateCounts()
        for group in self.groups:
            totals += group.counts
        return totals


def status_filters(
    task_identifiers: Iterable[str] | None, queue_names: Iterable[str] | None
) -> dict[str, list[str] | None]:
    """The status operation's parameters, checked (None: no filter)."""
    params: dict[str, list[str] | None] = {}
    for field, value, limit in (
        ("task_identifiers", task_identifiers, MAX_IDENTIFIER_LENGTH),
        ("queue_names", queue_names, MAX_QUEUE_NAME_LENGTH),
    ):
        params[field] = (
            None
            if value is None
            else [
                check_text(f"{field}[{index}]", item, limit)
                for index, item in enumerate(check_items(value, field, "str"))
            ]
        )
    return params


def status_report(
    schema: str, revision: int | None, generated_at: dt.datetime, rows: Sequence[tuple[Any, ...]]
) -> StatusReport:
    """The report of the status operation's ``rows`` (:data:`STATUS_COLUMNS`, timestamps as
    our cursors load them: microseconds)."""
    groups = []
    locked: dict[str, LockedQueue] = {}
    for task, queue, *counts, age, locked_at_micros, locked_by in rows:
        locked_at = None if locked_at_micros is None else instant(locked_at_micros)
        # A queue holding several tasks appears once per task; listed once, at its first.
        if locked_at is not None and queue not in locked:
            locked[queue] = LockedQueue(
                queue_name=queue,
                locked_by=locked_by,
                locked_at=locked_at,
                has_jobs=task is not None,
            )
        if task is None:
            continue
        groups.append(
            StatusGroup(
                task_identifier=task,
                queue_name=queue,
                counts=StateCounts(**dict(zip(_STATES, counts, strict=True))),
                oldest_ready_age_seconds=age,
                queue_locked_by=locked_by,
                queue_locked_at=locked_at,
            )
        )
    return StatusReport(
        schema=schema,
        revision=revision,
        generated_at=generated_at,
        groups=tuple(groups),
        locked_queues=tuple(locked.values()),
    )


def read_status(
    conn: psycopg.Connection[Any], schema: str, filters: dict[str, list[str] | None]
) -> StatusReport:
    """The status of ``schema`` on ``conn`` (psycopg errors pass through)."""
    revision = schema_status(conn, schema).revision
    with _cursor(conn) as cur:
        cur.execute(catalog.render("status", schema), filters, binary=True)
        rows = cur.fetchall()
    return status_report(schema, revision, dt.datetime.now(dt.timezone.utc), rows)
