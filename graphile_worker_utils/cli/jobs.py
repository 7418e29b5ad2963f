"""Reading jobs: ``jobs`` lists them a page at a time, ``show`` prints one whole."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._context import open_utils
from ._exit_codes import PROG, CliError, ExitCode
from ._job_views import STATE_NAMES, job_page, jobs_document, jobs_table, next_after
from ._options import _bounded_int, _job_id, add_command

if TYPE_CHECKING:
    from ._context import Context
    from ._options import Commands

#: The largest page ``list_jobs`` serves.
MAX_LIMIT = 10_000

JOBS_DESCRIPTION = """\
List jobs by id, a page at a time (--limit, default 100), with their state, attempts, next
run and last error (its first line; `show ID` prints all of it). Filters combine: a job is
listed if it matches one of each option given. A full page ends with how to ask for the next
one (`--after ID`; in JSON, "next_after"). Payloads are left out: `show` prints them.

states: ready (due), scheduled (not due yet, never attempted), running (locked less than 4
hours ago), retrying (failed, attempts left, waiting for its run_at), permanently_failed
(attempts used up). Retry failed jobs with
`reschedule ID... --attempts 0 --run-at $(date -u +%FT%TZ)`, drop them with `complete ID...`."""

SHOW_DESCRIPTION = """\
Print every field of one job, its payload pretty-printed and its whole last error. A job that
does not exist (never added, or completed or removed since) exits 12."""


def register(commands: Commands) -> None:
    """Add ``jobs`` and ``show`` to the command line."""
    jobs = add_command(
        commands,
        "jobs",
        "list jobs by id with their state and last error; filters, pages",
        JOBS_DESCRIPTION,
        handler=cmd_jobs,
    )
    jobs.add_argument(
        "--task",
        dest="task_identifiers",
        action="append",
        metavar="IDENTIFIER",
        help="only this task (repeatable)",
    )
    jobs.add_argument(
        "--queue",
        dest="queue_names",
        action="append",
        metavar="QUEUE",
        help="only this queue (repeatable)",
    )
    jobs.add_argument(
        "--state",
        dest="states",
        action="append",
        type=_state,
        choices=STATE_NAMES,
        help="only jobs in this state (repeatable): %(choices)s",
        metavar="STATE",
    )
    jobs.add_argument("--locked-by", metavar="WORKER_ID", help="only jobs this worker locks")
    jobs.add_argument(
        "--after", type=_job_id, metavar="ID", help="only jobs with a larger id (the next page)"
    )
    jobs.add_argument(
        "--limit",
        type=_bounded_int(1, MAX_LIMIT),
        default=100,
        metavar="N",
        help=f"at most N jobs (1..{MAX_LIMIT:_}, default 100)",
    )
    jobs.add_argument(
        "--json", action="store_true", help='print one JSON document: {"jobs", "next_after"}'
    )

    show = add_command(
        commands,
        "show",
        "print one job whole: payload, last error",
        SHOW_DESCRIPTION,
        handler=cmd_show,
    )
    which = show.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", metavar="JOB_ID", nargs="?", type=_job_id, help="the job's id")
    which.add_argument("--key", dest="job_key", metavar="KEY", help="the job with this job key")
    show.add_argument("--json", action="store_true", help="print the job as one JSON object")


#: The library's argument names, and the options that give them (for its error messages).
_OPTIONS = {
    "task_identifiers": "--task",
    "queue_names": "--queue",
    "states": "--state",
    "locked_by": "--locked-by",
    "after_id": "--after",
    "limit": "--limit",
    "job_key": "--key",
    "job_id": "JOB_ID",
}


@contextmanager
def _options_checked() -> Iterator[None]:
    """The library's refusal of an argument (an empty --task, a --key over 512 characters) as
    a usage error naming the option."""
    from graphile_worker_utils import InvalidJobSpec

    try:
        yield
    except InvalidJobSpec as error:
        message = str(error)
        name, colon, rest = message.partition(":")
        option = _OPTIONS.get(name.split("[")[0])
        if colon and option:
            message = f"{option}:{rest}"
        raise CliError(ExitCode.USAGE, message) from error


def _state(text: str) -> str:
    """argparse type: a state name, any case, ``-`` for ``_`` (then checked by choices)."""
    return text.strip().lower().replace("-", "_")


def cmd_jobs(ctx: Context) -> int:
    """``jobs [--task ...] [--queue ...] [--state ...] [--locked-by W] [--after ID]``."""
    import json

    args = ctx.args
    with open_utils(ctx) as (utils, _), _options_checked():
        jobs = utils.list_jobs(
            task_identifiers=args.task_identifiers,
            queue_names=args.queue_names,
            states=args.states,
            locked_by=args.locked_by,
            after_id=args.after,
            limit=args.limit,
        )
    if args.json:
        ctx.out(json.dumps(jobs_document(jobs, args.limit), indent=2))
        return ExitCode.OK
    lines = jobs_table(jobs)
    if not jobs and args.after is not None:
        lines = [f"(no jobs after id {args.after})"]
    for line in lines:
        ctx.out(line)
    after = next_after(jobs, args.limit)
    if after is not None:
        ctx.stdout.flush()  # the note after the table, also when stdout is a pipe
        ctx.note(
            f"{PROG}: note: {len(jobs)} jobs shown (--limit {args.limit}); more may follow:"
            f" add --after {after} for the next page"
        )
    return ExitCode.OK


def cmd_show(ctx: Context) -> int:
    """``show JOB_ID`` or ``show --key KEY``."""
    import json

    from ._render import job_to_json

    args = ctx.args
    with open_utils(ctx) as (utils, _), _options_checked():
        if args.job_key is not None:
            job = utils.get_job_by_key(args.job_key)
            which = f"key {args.job_key!r}"
        else:
            job = utils.get_job(args.job_id)
            which = f"id {args.job_id}"
    if job is None:
        raise CliError(
            ExitCode.NOT_FOUND, f"no job has {which} (never added, or completed or removed since)"
        )
    if args.json:
        ctx.out(json.dumps(job_to_json(job), indent=2))
    else:
        for line in job_page(job):
            ctx.out(line)
    return ExitCode.OK
