"""Text for people and JSON for programs: jobs, durations, one-line messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt

    from graphile_worker_utils import Job

    from ._context import Context


def one_line(text: str) -> str:
    """Join a multi-line message (libpq's, typically) into one line."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _iso(value: dt.datetime | None) -> str | None:
    import datetime as dt

    if value is None:
        return None
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def job_to_json(job: Job, *, payload: bool = True) -> dict[str, Any]:
    """A job as a JSON-ready dict (datetimes as ISO 8601 UTC, the state by its value, null
    where the library does not know it); without ``payload``, no ``payload`` key (for jobs
    listed without their payloads)."""
    document = {
        "id": job.id,
        "task_identifier": job.task_identifier,
        "queue_name": job.queue_name,
        "state": None if job.state is None else job.state.value,
        "payload": job.payload if payload else None,
        "priority": job.priority,
        "run_at": _iso(job.run_at),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "last_error": job.last_error,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "key": job.key,
        "locked_at": _iso(job.locked_at),
        "locked_by": job.locked_by,
        "revision": job.revision,
        "flags": job.flags,
    }
    if not payload:
        del document["payload"]
    return document


def job_line(job: Job) -> str:
    """A job as one line of text."""
    parts = [
        f"job {job.id}",
        f"task={job.task_identifier}",
        f"queue={job.queue_name or '-'}",
        f"run_at={_iso(job.run_at)}",
        f"attempts={job.attempts}/{job.max_attempts}",
        f"priority={job.priority}",
    ]
    if job.key is not None:
        parts.append(f"key={job.key}")
    if job.locked_by is not None:
        parts.append(f"locked_by={job.locked_by}")
    if job.last_error is not None:
        parts.append(f"last_error={one_line(job.last_error)}")
    return " ".join(parts)


def print_jobs(ctx: Context, jobs: Sequence[Job], *, as_json: bool) -> None:
    """Print jobs, one per line, as text or JSON."""
    import json

    for job in jobs:
        ctx.out(json.dumps(job_to_json(job)) if as_json else job_line(job))


def format_age(seconds: float | None) -> str:
    """A duration for people: 45s, 12m03s, 3h12m, 2d04h."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
