"""Maintenance: ``remove-job``, ``complete``, ``fail``, ``reschedule``, ``unlock-workers`` and
``cleanup``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._context import open_utils
from ._exit_codes import PROG, CliError, ExitCode
from ._options import (
    _add_json_option,
    _aware_datetime,
    _duration,
    _job_id,
    _seconds,
    add_command,
    format_duration,
)
from ._render import print_jobs

if TYPE_CHECKING:
    from graphile_worker_utils import Job

    from ._context import Context
    from ._options import Commands


def register(commands: Commands) -> None:
    """Add the maintenance commands to the command line."""
    _register_job_commands(commands)
    _register_cleanup(commands)


def _register_job_commands(commands: Commands) -> None:
    # The commands that act on given jobs.
    remove_job = add_command(
        commands, "remove-job", "remove the job with a job key", handler=cmd_remove_job
    )
    remove_job.add_argument("job_key", metavar="KEY")
    _add_json_option(remove_job)

    complete = add_command(
        commands,
        "complete",
        "delete jobs as if they had succeeded (locked ones skipped)",
        handler=cmd_complete,
    )
    complete.add_argument("job_ids", metavar="ID", nargs="+", type=_job_id)
    _add_json_option(complete)

    fail = add_command(
        commands, "fail", "mark jobs permanently failed (locked ones skipped)", handler=cmd_fail
    )
    fail.add_argument("job_ids", metavar="ID", nargs="+", type=_job_id)
    fail.add_argument("--reason", help="their last_error (default 'Manually marked as failed')")
    _add_json_option(fail)

    reschedule = add_command(
        commands,
        "reschedule",
        "change when and how jobs run (locked ones skipped; unset options kept)",
        handler=cmd_reschedule,
    )
    reschedule.add_argument("job_ids", metavar="ID", nargs="+", type=_job_id)
    reschedule.add_argument(
        "--run-at",
        type=_aware_datetime,
        metavar="ISO8601",
        help="when they may run next, with a UTC offset (2030-01-31T09:00:00+01:00)",
    )
    reschedule.add_argument(
        "--priority", type=int, help="their priority (lower runs first; -32768..32767)"
    )
    reschedule.add_argument(
        "--attempts",
        type=int,
        help="attempts already made (0 gives a failed job all its attempts again)",
    )
    reschedule.add_argument(
        "--max-attempts", type=int, help="attempts before a job fails for good (1..32767)"
    )
    _add_json_option(reschedule)


def _register_cleanup(commands: Commands) -> None:
    # The commands that release or delete what workers leave behind.
    unlock = add_command(
        commands,
        "unlock-workers",
        "release the jobs and queues locked by crashed workers",
        "Release the jobs and queues locked by these workers (the locked_by values; 'pool-...'"
        "\nfor graphile-worker 0.17+). Unlocking a live worker lets its jobs run twice.",
        handler=cmd_unlock_workers,
    )
    unlock.add_argument("worker_ids", metavar="WORKER_ID", nargs="+")

    cleanup = add_command(
        commands,
        "cleanup",
        "delete permanently failed jobs and unused task identifiers and queues",
        "Run maintenance, always in this order, and print what it removed:\n"
        "  DELETE_PERMANENTLY_FAILED_JOBS (alias DELETE_PERMAFAILED_JOBS)\n"
        "  GC_TASK_IDENTIFIERS  (keep the identifiers your workers serve: --keep-task)\n"
        "  GC_JOB_QUEUES\n"
        "--older-than applies to DELETE_PERMANENTLY_FAILED_JOBS, and needs it.",
        handler=cmd_cleanup,
    )
    cleanup.add_argument(
        "--task",
        dest="tasks",
        action="append",
        type=_cleanup_tasks,
        required=True,
        metavar="TASK",
        help="a cleanup task (repeatable, or comma-separated)",
    )
    cleanup.add_argument(
        "--keep-task",
        dest="keep",
        action="append",
        default=[],
        metavar="IDENTIFIER",
        help="a task identifier GC_TASK_IDENTIFIERS must keep (repeatable)",
    )
    cleanup.add_argument(
        "--busy-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long the garbage collections wait for a moment when no transaction that"
        " enqueues is open (default 5); then exit 11, nothing collected",
    )
    cleanup.add_argument(
        "--older-than",
        type=_duration,
        metavar="DURATION",
        help="DELETE_PERMANENTLY_FAILED_JOBS deletes only the jobs whose last activity (the"
        " later of updated_at and run_at) is longer ago than this (7d, 12h, 1h30m; units s, m,"
        " h, d): the newer ones stay for inspection",
    )
    _add_json_option(cleanup)


_CLEANUP_TASK_NAMES = {
    "DELETE_PERMANENTLY_FAILED_JOBS": "DELETE_PERMANENTLY_FAILED_JOBS",
    "DELETE_PERMAFAILED_JOBS": "DELETE_PERMANENTLY_FAILED_JOBS",  # graphile-worker's spelling
    "GC_TASK_IDENTIFIERS": "GC_TASK_IDENTIFIERS",
    "GC_JOB_QUEUES": "GC_JOB_QUEUES",
}


def _cleanup_tasks(text: str) -> list[str]:
    """argparse type: cleanup task names, comma-separated, any case, ``-`` for ``_``."""
    names = []
    for part in text.split(","):
        name = part.strip().upper().replace("-", "_")
        if name not in _CLEANUP_TASK_NAMES:
            allowed = ", ".join(sorted(set(_CLEANUP_TASK_NAMES.values())))
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not one of {allowed}")
        names.append(_CLEANUP_TASK_NAMES[name])
    return names


def cmd_remove_job(ctx: Context) -> int:
    """``remove-job KEY``."""
    import json

    with open_utils(ctx) as (utils, _):
        job = _library_call(lambda: utils.remove_job(ctx.args.job_key))
    if job is None:
        if ctx.args.json:
            ctx.out(json.dumps(None))
        else:
            ctx.out(f"no job has key {ctx.args.job_key!r}; nothing removed")
        return ExitCode.OK
    if not ctx.args.json:
        ctx.out("removed:" if job.locked_at is None else "running; detached (no retry):")
    print_jobs(ctx, [job], as_json=ctx.args.json)
    return ExitCode.OK


def _skipped_note(ctx: Context, verb: str, ids: Sequence[int], jobs: Sequence[Job]) -> None:
    done = {job.id for job in jobs}
    skipped = [str(i) for i in dict.fromkeys(ids) if i not in done]
    ctx.note(
        f"{verb} {len(done)} of {len(dict.fromkeys(ids))} jobs"
        + (f"; skipped (unknown or locked): {', '.join(skipped)}" if skipped else "")
    )


def _library_call(call: Any) -> Any:
    # Spec errors of maintenance commands come from command-line values: bad arguments.
    from graphile_worker_utils import InvalidJobSpec

    try:
        return call()
    except InvalidJobSpec as error:
        raise CliError(ExitCode.USAGE, str(error)) from error


def cmd_complete(ctx: Context) -> int:
    """``complete IDS...``."""
    with open_utils(ctx) as (utils, _):
        jobs = _library_call(lambda: utils.complete_jobs(ctx.args.job_ids))
    print_jobs(ctx, jobs, as_json=ctx.args.json)
    _skipped_note(ctx, "completed", ctx.args.job_ids, jobs)
    return ExitCode.OK


def cmd_fail(ctx: Context) -> int:
    """``fail IDS... [--reason TEXT]``."""
    with open_utils(ctx) as (utils, _):
        jobs = _library_call(lambda: utils.permanently_fail_jobs(ctx.args.job_ids, ctx.args.reason))
    print_jobs(ctx, jobs, as_json=ctx.args.json)
    _skipped_note(ctx, "failed", ctx.args.job_ids, jobs)
    return ExitCode.OK


def cmd_reschedule(ctx: Context) -> int:
    """``reschedule IDS... [--run-at --priority --attempts --max-attempts]``."""
    from graphile_worker_utils import InvalidJobSpec, RescheduleOptions

    args = ctx.args
    try:
        options = RescheduleOptions(
            run_at=args.run_at,
            priority=args.priority,
            attempts=args.attempts,
            max_attempts=args.max_attempts,
        )
    except InvalidJobSpec as error:
        raise CliError(ExitCode.USAGE, f"{error} (see {PROG} reschedule --help)") from error
    with open_utils(ctx) as (utils, _):
        jobs = _library_call(lambda: utils.reschedule_jobs(args.job_ids, options))
    print_jobs(ctx, jobs, as_json=args.json)
    _skipped_note(ctx, "rescheduled", args.job_ids, jobs)
    return ExitCode.OK


def cmd_unlock_workers(ctx: Context) -> int:
    """``unlock-workers WORKER_IDS...``."""
    with open_utils(ctx) as (utils, _):
        _library_call(lambda: utils.force_unlock_workers(ctx.args.worker_ids))
    ctx.out(
        f"released the jobs and queues locked by {len(ctx.args.worker_ids)} worker(s):"
        f" {', '.join(ctx.args.worker_ids)}"
    )
    return ExitCode.OK


_CLEANUP_DESCRIPTIONS = {
    "DELETE_PERMANENTLY_FAILED_JOBS": "permanently failed jobs",
    "GC_TASK_IDENTIFIERS": "unused task identifiers",
    "GC_JOB_QUEUES": "unused job queues",
}


def cmd_cleanup(ctx: Context) -> int:
    """``cleanup --task ... [--keep-task ...]``: prints what it removed."""
    import json

    from graphile_worker_utils import CleanupTask

    args = ctx.args
    names = [name for group in args.tasks for name in group]
    tasks = [CleanupTask[name] for name in dict.fromkeys(names)]
    if args.older_than is not None and CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS not in tasks:
        raise CliError(
            ExitCode.USAGE,
            "--older-than applies to DELETE_PERMANENTLY_FAILED_JOBS only: add"
            f" --task DELETE_PERMANENTLY_FAILED_JOBS (see {PROG} cleanup --help)",
        )
    with open_utils(ctx) as (utils, _):
        removed = _library_call(
            lambda: utils.cleanup(
                tasks, args.keep, busy_timeout=args.busy_timeout, older_than=args.older_than
            )
        )
    if args.json:
        ctx.out(json.dumps({task.name: count for task, count in removed.items()}))
        return ExitCode.OK
    for task, count in removed.items():
        what = _CLEANUP_DESCRIPTIONS[task.name]
        if task is CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS and args.older_than is not None:
            what += f" last active more than {format_duration(args.older_than)} ago"
        ctx.out(f"{task.name}: deleted {count} {what}")
    return ExitCode.OK
