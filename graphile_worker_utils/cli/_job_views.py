"""What the read commands print: the ``jobs`` table and document, ``show``'s page of one job,
and the ``workers`` table and document. Pure functions of the library's values, so that they
are tested without a database (tests/test_unit_cli_views.py)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from ._render import _iso, format_age, job_to_json

if TYPE_CHECKING:
    import datetime as dt

    from graphile_worker_utils import Job, LockedWorker

#: JobState's values, for ``--state`` (the library is not imported before a command runs;
#: tests/test_unit_cli_views.py checks that they match).
STATE_NAMES = ("ready", "scheduled", "running", "retrying", "permanently_failed")
#: How much of a last error the ``jobs`` table shows (``show`` prints all of it).
ERROR_WIDTH = 60

# Control characters other than newline and tab: a job's text comes from whoever added or ran
# it, and must neither break a table nor send escape sequences to the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group(0))[1:-1]  # \x1b, \r, ...


def cell(value: object) -> str:
    """A value as one line of text: ``-`` for None, control characters and line breaks
    escaped (``\\n``, ``\\x1b``)."""
    if value is None:
        return "-"
    text = str(value).replace("\n", "\\n").replace("\t", "\\t")
    return _CONTROL.sub(_escape, text)


def block(text: str) -> str:
    """Multi-line text for a page: line breaks and tabs kept, other control characters
    escaped."""
    return _CONTROL.sub(_escape, text.replace("\r\n", "\n"))


def short_error(text: str | None, width: int = ERROR_WIDTH) -> str:
    """A last error cut to its first non-blank line and ``width`` characters (``...`` marks a
    cut): a stack trace's first line is its message."""
    if text is None:
        return "-"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = cell(lines[0]) if lines else ""
    if len(first) > width:
        return first[: width - 3] + "..."
    return first + (" ..." if len(lines) > 1 else "")


def timestamp(value: dt.datetime | None) -> str:
    """A datetime for a table: ISO 8601 UTC to the second."""
    text = _iso(value.replace(microsecond=0) if value is not None else None)
    return "-" if text is None else text


def aligned(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> list[str]:
    """Rows of cells as lines of aligned columns (the columns in ``right`` right-aligned)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            text.rjust(widths[i]) if i in right else text.ljust(widths[i])
            for i, text in enumerate(row)
        ).rstrip()
        for row in rows
    ]


# -- jobs --------------------------------------------------------------------------------------

JOBS_HEADERS = ("ID", "TASK", "QUEUE", "STATE", "ATTEMPTS", "RUN AT", "KEY", "LAST ERROR")


def jobs_table(jobs: Sequence[Job]) -> list[str]:
    """The ``jobs`` table: one line per job under a header; ``(no jobs)`` when there is none."""
    if not jobs:
        return ["(no jobs)"]
    rows = [list(JOBS_HEADERS)]
    for job in jobs:
        rows.append(
            [
                str(job.id),
                cell(job.task_identifier),
                cell(job.queue_name),
                cell(None if job.state is None else job.state.value),
                f"{job.attempts}/{job.max_attempts}",
                timestamp(job.run_at),
                cell(job.key),
                short_error(job.last_error),
            ]
        )
    return aligned(rows, right={0, 4})


def next_after(jobs: Sequence[Job], limit: int) -> int | None:
    """The ``--after`` of the next page: the last id when the page is full (more jobs may
    follow), else None (this was the last page)."""
    return jobs[-1].id if jobs and len(jobs) >= limit else None


def jobs_document(jobs: Sequence[Job], limit: int) -> dict[str, Any]:
    """The ``jobs --json`` document: the jobs (without payloads) and ``next_after``."""
    return {
        "jobs": [job_to_json(job, payload=False) for job in jobs],
        "next_after": next_after(jobs, limit),
    }


# -- show --------------------------------------------------------------------------------------


def job_page(job: Job) -> list[str]:
    """``show``'s text: every field on its own line, then the payload pretty-printed and the
    whole last error."""
    import json

    fields = job_to_json(job, payload=False)
    last_error = fields.pop("last_error")
    flags = fields["flags"]
    fields["flags"] = None if flags is None else ", ".join(flags)
    lines = [f"job {job.id}"]
    lines += aligned([[f"  {name}", cell(value)] for name, value in fields.items() if name != "id"])
    lines.append("payload:")
    lines += ["  " + line for line in json.dumps(job.payload, indent=2).splitlines()]
    if last_error is None:
        lines.append("last_error: -")
    else:
        lines.append("last_error:")
        lines += ["  " + line for line in block(last_error).split("\n")]
    return lines


# -- workers -----------------------------------------------------------------------------------

WORKERS_HEADERS = ("WORKER", "JOBS", "QUEUES", "OLDEST LOCK", "LOCK AGE")


def _lock_age(worker: LockedWorker, now: dt.datetime) -> float:
    return max(0.0, (now - worker.oldest_locked_at).total_seconds())


def workers_table(workers: Sequence[LockedWorker], now: dt.datetime) -> list[str]:
    """The ``workers`` table, lock ages as of ``now``; ``(no locked workers)`` if none."""
    if not workers:
        return ["(no locked workers)"]
    rows = [list(WORKERS_HEADERS)]
    for worker in workers:
        rows.append(
            [
                cell(worker.worker_id),
                str(worker.job_count),
                str(worker.queue_count),
                timestamp(worker.oldest_locked_at),
                format_age(_lock_age(worker, now)),
            ]
        )
    return aligned(rows, right={1, 2, 4})


def workers_document(workers: Sequence[LockedWorker], now: dt.datetime) -> dict[str, Any]:
    """The ``workers --json`` document, lock ages in seconds as of ``now``."""
    return {
        "generated_at": _iso(now),
        "workers": [
            {
                "worker_id": worker.worker_id,
                "job_count": worker.job_count,
                "queue_count": worker.queue_count,
                "oldest_locked_at": _iso(worker.oldest_locked_at),
                "lock_age_seconds": round(_lock_age(worker, now), 3),
            }
            for worker in workers
        ],
    }
