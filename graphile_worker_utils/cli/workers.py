"""``workers``: the workers that hold locks, to find crashed ones before ``unlock-workers``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._context import open_utils
from ._exit_codes import PROG, ExitCode
from ._job_views import workers_document, workers_table
from ._options import _duration, add_command, format_duration

if TYPE_CHECKING:
    from ._context import Context
    from ._options import Commands

WORKERS_DESCRIPTION = f"""\
List the workers that lock jobs or queues (their locked_by values, 'pool-...' for
graphile-worker 0.17+), how many of each, and their oldest lock, oldest first. A worker that
crashed keeps its locks: its jobs do not run again until graphile-worker's 4-hour lock window
has passed, and its queues stay blocked as long. Release them with
`{PROG} unlock-workers WORKER_ID`, but only for a worker you know is gone: a live
worker's jobs would then run twice. Locks older than 4 hours count here although
graphile-worker already ignores them (`jobs` no longer shows their jobs as running). Lock ages
are by this machine's clock."""


def register(commands: Commands) -> None:
    """Add ``workers`` to the command line."""
    workers = add_command(
        commands,
        "workers",
        "workers holding job and queue locks, oldest first (find crashed ones)",
        WORKERS_DESCRIPTION,
        handler=cmd_workers,
    )
    workers.add_argument(
        "--older-than",
        type=_duration,
        metavar="DURATION",
        help="only workers whose oldest lock is older than this: 90s, 15m, 1h30m, 2d",
    )
    workers.add_argument(
        "--json", action="store_true", help='print one JSON document: {"generated_at", "workers"}'
    )


def cmd_workers(ctx: Context) -> int:
    """``workers [--older-than DURATION] [--json]``."""
    import datetime as dt
    import json

    older_than = ctx.args.older_than
    with open_utils(ctx) as (utils, _):
        workers = utils.locked_workers(older_than=older_than)
    now = dt.datetime.now(dt.timezone.utc)
    if ctx.args.json:
        ctx.out(json.dumps(workers_document(workers, now), indent=2))
        return ExitCode.OK
    if not workers and older_than is not None:
        ctx.out(f"(no worker holds a lock older than {format_duration(older_than)})")
        return ExitCode.OK
    for line in workers_table(workers, now):
        ctx.out(line)
    if workers:
        ctx.note(
            f"{PROG}: note: `{PROG} unlock-workers WORKER_ID` releases a crashed worker's"
            " locks; never a live worker's: its jobs would run twice"
        )
    return ExitCode.OK
