"""``status``: jobs per task and queue, and the locked queues, as a table or JSON: the
library's :meth:`WorkerUtils.status` report as a document (:func:`status_document`) and as
text (:func:`status_table`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._context import open_utils
from ._exit_codes import ExitCode
from ._options import add_command
from ._render import _iso, format_age

if TYPE_CHECKING:
    from graphile_worker_utils import StatusReport

    from ._context import Context
    from ._options import Commands


def register(commands: Commands) -> None:
    """Add ``status`` to the command line."""
    status = add_command(
        commands,
        "status",
        "jobs per task and queue: ready, scheduled, running, retrying, failed; locked queues",
        handler=cmd_status,
    )
    status.add_argument(
        "--task",
        dest="task_identifiers",
        action="append",
        metavar="IDENTIFIER",
        help="only this task (repeatable)",
    )
    status.add_argument(
        "--queue",
        dest="queue_names",
        action="append",
        metavar="QUEUE",
        help="only this queue (repeatable)",
    )
    status.add_argument("--json", action="store_true", help="print one JSON document")


def status_document(report: StatusReport) -> dict[str, Any]:
    """The ``status --json`` document of a :meth:`WorkerUtils.status` report."""
    from graphile_worker_utils import JobState

    return {
        "schema": report.schema,
        "revision": report.revision,
        "generated_at": _iso(report.generated_at),
        "groups": [
            {
                "task_identifier": group.task_identifier,
                "queue_name": group.queue_name,
                **{state.value: group.counts[state] for state in JobState},
                "oldest_ready_age_seconds": group.oldest_ready_age_seconds,
                "queue_locked_by": group.queue_locked_by,
                "queue_locked_at": _iso(group.queue_locked_at),
            }
            for group in report.groups
        ],
        "totals": {state.value: report.totals[state] for state in JobState},
        "locked_queues": [
            {
                "queue_name": queue.queue_name,
                "locked_by": queue.locked_by,
                "locked_at": _iso(queue.locked_at),
                "has_jobs": queue.has_jobs,
            }
            for queue in report.locked_queues
        ],
    }


# The document's count keys, in the table's column order (JobState's values).
_COUNTS = ("ready", "scheduled", "running", "retrying", "permanently_failed")


def status_table(document: dict[str, Any]) -> list[str]:
    """The ``status`` document as an aligned text table (and the locked queues below it)."""
    headers = [
        "TASK",
        "QUEUE",
        "READY",
        "SCHEDULED",
        "RUNNING",
        "RETRYING",
        "FAILED",
        "OLDEST READY",
        "QUEUE LOCKED BY",
    ]
    table = [headers]
    for group in document["groups"]:
        table.append(
            [
                group["task_identifier"],
                group["queue_name"] or "-",
                *(str(group[name]) for name in _COUNTS),
                format_age(group["oldest_ready_age_seconds"]),
                group["queue_locked_by"] or "-",
            ]
        )
    totals = document["totals"]
    table.append(["total", "", *(str(totals[name]) for name in _COUNTS), "", ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    numeric = {2, 3, 4, 5, 6}
    lines = [
        f"schema {document['schema']} (revision {document['revision']})",
    ]
    for row in table:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    if not document["groups"]:
        lines.append("(no jobs)")
    locked = document["locked_queues"]
    if locked:
        lines.append("locked queues:")
        for queue in locked:
            stale = "" if queue["has_jobs"] else " (no jobs: a lock left behind)"
            lines.append(
                f"  {queue['queue_name']}  locked by {queue['locked_by']} since"
                f" {queue['locked_at']}{stale}"
            )
    return lines


def cmd_status(ctx: Context) -> int:
    """``status [--json]``."""
    import json

    with open_utils(ctx) as (utils, _):
        report = utils.status(
            task_identifiers=ctx.args.task_identifiers, queue_names=ctx.args.queue_names
        )
    document = status_document(report)
    if ctx.args.json:
        ctx.out(json.dumps(document, indent=2))
    else:
        for line in status_table(document):
            ctx.out(line)
    return ExitCode.OK
