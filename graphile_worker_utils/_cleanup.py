"""The steps of :meth:`WorkerUtils.cleanup`, safe against enqueues running at the same moment.

graphile-worker's ``add_job(s)`` reuses an existing task or queue row without locking it, so a
garbage collection that deletes such a row while an enqueuing transaction is open leaves that
transaction's job pointing at nothing (workers never run it; the ``jobs`` view hides it). Every
enqueue does hold ROW EXCLUSIVE on ``_private_tasks`` and ``_private_job_queues`` until its
transaction ends; the collections lock those tables against it (``sql/cleanup_lock.sql.j2``)
without ever queueing for the lock, and retry while it is taken.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from ._cursors import cursor as _cursor
from ._errors import CleanupBusyError, ConnectionStateError, InvalidJobSpec
from ._templates import catalog
from ._transactions import atomic
from ._types import CleanupTask, check_items, check_text

logger = logging.getLogger("graphile_worker_utils")

T = TypeVar("T")

#: How long :meth:`WorkerUtils.cleanup` retries, by default, while open enqueuing transactions
#: keep the tables of its garbage collections busy (seconds).
CLEANUP_BUSY_TIMEOUT = 5.0
# Waits between attempts double from the first to the cap: short enqueues are outwaited
# quickly, long ones are not polled hard.
_FIRST_WAIT = 0.005
_MAX_WAIT = 0.25

# The garbage collections, in graphile-worker's order, with their cleanup_lock clauses.
Collection = tuple[CleanupTask, str, dict[str, bool]]
_COLLECTIONS: tuple[Collection, ...] = (
    (CleanupTask.GC_TASK_IDENTIFIERS, "cleanup_gc_task_identifiers", {"tasks": True}),
    (CleanupTask.GC_JOB_QUEUES, "cleanup_gc_job_queues", {}),
)


def wanted_tasks(tasks: object) -> set[CleanupTask]:
    """The cleanup tasks named by ``tasks`` (members, values or member names)."""
    wanted = set()
    for index, task in enumerate(check_items(tasks, "tasks", "CleanupTask")):
        try:
            by_name = CleanupTask.__members__.get(task) if isinstance(task, str) else None
            wanted.add(by_name or CleanupTask(task))
        except (ValueError, TypeError):
            allowed = ", ".join(task.name for task in CleanupTask)
            raise InvalidJobSpec(f"tasks[{index}]: {task!r} is not one of {allowed}") from None
    return wanted


def keep_list(identifiers: object) -> list[str]:
    """The task identifiers that ``GC_TASK_IDENTIFIERS`` must keep, checked."""
    field = "task_identifiers_to_keep"
    return [
        check_text(f"{field}[{index}]", identifier)
        for index, identifier in enumerate(check_items(identifiers, field, "str"))
    ]


def busy_timeout_seconds(value: object) -> float:
    """``busy_timeout`` as seconds: a finite number, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJobSpec(
            f"busy_timeout: expected a number of seconds, got {type(value).__name__}"
        )
    if not math.isfinite(value) or value < 0:
        raise InvalidJobSpec(f"busy_timeout: must be a finite number of seconds >= 0, got {value}")
    return float(value)


def retry_while_busy(
    attempt: Callable[[], T],
    deadline: float,
    on_busy: Callable[[float], None],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``attempt`` until it does not raise LockNotAvailable, waiting between calls (the
    wait doubles, within bounds); past ``deadline`` (``clock`` time), re-raise the last one.

    One call is always made. ``on_busy(wait)`` is told of each wait before it starts.
    """
    wait = _FIRST_WAIT
    while True:
        try:
            return attempt()
        except pg_errors.LockNotAvailable:
            remaining = deadline - clock()
            if remaining <= 0:
                raise
            on_busy(min(wait, remaining))
            sleep(min(wait, remaining))
            wait = min(wait * 2, _MAX_WAIT)


def run_cleanup(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    owned: bool,
    wanted: set[CleanupTask],
    keep: list[str],
    busy_timeout: float,
    older_than: dt.timedelta | None = None,
) -> dict[CleanupTask, int]:
    """Run the ``wanted`` tasks on ``conn`` in graphile-worker's order; return the counts.

    ``older_than`` keeps the permanently failed jobs active more recently than that (see
    ``sql/cleanup_delete_permanently_failed_jobs.sql.j2``).

    Where the library owns the transaction, each step is a short transaction of its own;
    inside the caller's, the whole run is one savepoint (an error leaves nothing behind).
    """
    removed: dict[CleanupTask, int] = {}
    collections = [entry for entry in _COLLECTIONS if entry[0] in wanted]
    with nullcontext() if owned else atomic(conn, owned=False):
        if collections and not owned:
            _require_read_committed(conn)
        if CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS in wanted:
            with atomic(conn, owned=owned), _cursor(conn) as cur:
                cur.execute(
                    catalog.render("cleanup_delete_permanently_failed_jobs", schema),
                    {"older_than": older_than},
                )
                removed[CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS] = _count(cur)
        if collections:
            removed.update(_collect(conn, schema, owned, collections, keep, busy_timeout, removed))
    return removed


def _count(cur: psycopg.Cursor[tuple[Any, ...]]) -> int:
    (count,) = cur.fetchone() or (0,)
    return int(count)


def _require_read_committed(conn: psycopg.Connection[Any]) -> None:
    # A REPEATABLE READ or SERIALIZABLE snapshot taken before an enqueue committed shows its
    # queue and task unused: deleting them would orphan the job, lock or no lock.
    with _cursor(conn) as cur:
        cur.execute("select current_setting('transaction_isolation')")
        (isolation,) = cur.fetchone() or ("",)
    if isolation != "read committed":
        raise ConnectionStateError(
            f"cleanup: the caller's transaction is {isolation}; GC_TASK_IDENTIFIERS and"
            " GC_JOB_QUEUES need READ COMMITTED (an older snapshot can miss jobs enqueued"
            " since, and delete the task or queue they use). Run them outside the"
            " transaction, or in a READ COMMITTED one"
        )


def _collect(
    conn: psycopg.Connection[Any],
    schema: str,
    owned: bool,
    collections: list[Collection],
    keep: list[str],
    busy_timeout: float,
    removed: dict[CleanupTask, int],
) -> dict[CleanupTask, int]:
    """The garbage collections: candidates read without locks, then one short transaction
    that locks the tables (NOWAIT, retried until ``busy_timeout``) and deletes them."""
    counts = dict.fromkeys((task for task, _, _ in collections), 0)
    candidates = _candidates(conn, schema, owned, collections, keep)
    todo = [entry for entry in collections if candidates[entry[0]]]
    if not todo:
        return counts
    names = ", ".join(task.name for task, _, _ in todo)

    def attempt() -> dict[CleanupTask, int]:
        with atomic(conn, owned=owned), _cursor(conn) as cur:
            for _, _, clauses in todo:
                cur.execute(catalog.render("cleanup_lock", schema, **clauses))
            for task, operation, _ in todo:
                cur.execute(catalog.render(operation, schema), {"candidates": candidates[task]})
                counts[task] = _count(cur)
        return counts

    def on_busy(wait: float) -> None:
        logger.debug("cleanup on schema %r: %s busy, retrying in %.3f s", schema, names, wait)

    try:
        return retry_while_busy(attempt, time.monotonic() + busy_timeout, on_busy)
    except pg_errors.LockNotAvailable as error:
        raise CleanupBusyError(
            f"cleanup on schema {schema!r}: {names} not run: transactions that enqueue (or"
            f" another cleanup) kept their tables busy for {busy_timeout:g} s (busy_timeout);"
            " they deleted nothing. Run cleanup when no long transaction that enqueues is"
            " open, or with a longer busy_timeout",
            tasks=tuple(task for task, _, _ in todo),
            removed=dict(removed) if owned else {},
        ) from error


def _candidates(
    conn: psycopg.Connection[Any],
    schema: str,
    owned: bool,
    collections: list[Collection],
    keep: list[str],
) -> dict[CleanupTask, list[int]]:
    """The ids each collection would delete, read without locking anything: with none, the
    collection needs no lock at all."""
    found = {}
    with atomic(conn, owned=owned), _cursor(conn) as cur:
        for task, operation, _ in collections:
            cur.execute(catalog.render(operation, schema, candidates=True), {"keep": keep})
            found[task] = [row[0] for row in cur.fetchall()]
    return found
