"""What the admin's buttons do: one library call each, and the sentence that reports it.

Each function takes a :class:`~graphile_worker_utils.WorkerUtils` that the view made inside
``transaction.atomic()`` on Django's connection, and returns an :class:`Outcome`. The jobs
graphile-worker's functions skip (locked by a worker, or gone meanwhile) are reported as
skipped: the ids asked for minus the ids returned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import attrs

from ..._client import WorkerUtils
from ..._types import Job, RescheduleOptions

#: How many skipped ids a message names before it says "…".
_NAMED = 5


@attrs.frozen
class Outcome:
    """A message for the operator: ``success`` when everything asked was done, ``warning``
    when some or all of it was skipped; and what the admin's history records."""

    level: str
    text: str
    #: The primary keys (job ids, a worker id) of what was changed, as text.
    changed: tuple[str, ...] = ()
    #: The history's change message for each of them.
    history: str = ""


def count(number: int, noun: str) -> str:
    """``1 job``, ``3 jobs``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(job_id) for job_id in ids[:_NAMED])
    return shown + (", …" if len(ids) > _NAMED else "")


def summary(verb: str, asked: Sequence[int], done: Sequence[Job], history: str = "") -> Outcome:
    """``"3 jobs rescheduled, 1 skipped: locked by a worker or gone (job 17)"``."""
    done_ids = {job.id for job in done}
    changed = tuple(str(job_id) for job_id in asked if job_id in done_ids)
    skipped = [job_id for job_id in asked if job_id not in done_ids]
    text = f"{count(len(done_ids), 'job')} {verb}"
    if not skipped:
        return Outcome("success", text, changed, history)
    which = f"{'job' if len(skipped) == 1 else 'jobs'} {_ids(skipped)}"
    return Outcome(
        "warning",
        f"{text}, {len(skipped)} skipped: locked by a worker or gone ({which})",
        changed,
        history,
    )


def run_now(
    utils: WorkerUtils, job_ids: Sequence[int], *, reset_attempts: bool, now: dt.datetime
) -> Outcome:
    """Make the jobs due at ``now``; with ``reset_attempts`` their attempts start again at 0
    (a permanently failed job then runs again), else they keep their count."""
    options = RescheduleOptions(run_at=now, attempts=0 if reset_attempts else None)
    done = utils.reschedule_jobs(job_ids, options)
    verb = "rescheduled to run now" + (", attempts reset" if reset_attempts else "")
    history = "Run now" + (", attempts reset" if reset_attempts else "")
    return summary(verb, job_ids, done, history)


def permanently_fail(utils: WorkerUtils, job_ids: Sequence[int], reason: str | None) -> Outcome:
    """Mark the jobs permanently failed with ``reason`` as their last error."""
    done = utils.permanently_fail_jobs(job_ids, reason)
    history = f"Marked permanently failed: {reason or 'Manually marked as failed'}"
    return summary("marked permanently failed", job_ids, done, history[:1000])


def complete(utils: WorkerUtils, job_ids: Sequence[int]) -> Outcome:
    """Delete the jobs as if they had succeeded."""
    done = utils.complete_jobs(job_ids)
    return summary("completed (deleted)", job_ids, done, "Completed (deleted as succeeded)")


def remove(utils: WorkerUtils, job_key: str) -> Outcome:
    """Remove the job with ``job_key`` (a running one loses its key and its retries)."""
    job = utils.remove_job(job_key)
    if job is None:
        return Outcome("warning", f"No job has the key {job_key!r}: nothing removed")
    changed = (str(job.id),)
    if job.state is not None:  # not deleted: a worker is running it
        return Outcome(
            "warning",
            f"Job {job.id} (key {job_key!r}) is running: it keeps running this once, but lost"
            " its key and will not be retried",
            changed,
            f"Removed by key {job_key!r} while running: key and retries dropped",
        )
    return Outcome(
        "success", f"Job {job.id} (key {job_key!r}) removed", changed, f"Removed by key {job_key!r}"
    )


def unlock(utils: WorkerUtils, worker_id: str, *, jobs: int, queues: int) -> Outcome:
    """Release what ``worker_id`` holds (``jobs`` and ``queues``: what it held when asked)."""
    utils.force_unlock_workers([worker_id])
    released = f"{count(jobs, 'job')} and {count(queues, 'queue')} released"
    return Outcome(
        "success",
        f"Worker {worker_id!r} unlocked: {released}",
        (worker_id,),
        f"Unlocked: {released}",
    )
