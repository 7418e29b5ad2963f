"""``status``: jobs per task and queue, and the locked queues, as a table or JSON.

Fetching (:func:`fetch_status`) is apart from the document (:func:`status_document`) and its
text (:func:`status_table`), so that the fetching can move into the library on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._context import open_utils
from ._exit_codes import ExitCode
from ._options import add_command
from ._render import _iso, format_age

if TYPE_CHECKING:
    import psycopg

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


STATUS_COUNTS = ("ready", "scheduled", "running", "retrying", "permanently_failed")


def fetch_status(
    conn: psycopg.Connection[Any],
    schema: str,
    task_identifiers: Sequence[str] | None = None,
    queue_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of the ``status`` template (see sql/status.sql.j2), as dicts."""
    from psycopg.rows import dict_row

    from graphile_worker_utils._templates import catalog

    query = catalog.render("status", schema)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            query,
            {
                "task_identifiers": None if task_identifiers is None else list(task_identifiers),
                "queue_names": None if queue_names is None else list(queue_names),
            },
        )
        return list(cur.fetchall())


def status_document(
    schema: str, revision: int | None, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``status --json`` document."""
    import datetime as dt

    groups = []
    locked_queues = []
    totals = dict.fromkeys(STATUS_COUNTS, 0)
    for row in rows:
        if row["queue_locked_at"] is not None:
            locked_queues.append(
                {
                    "queue_name": row["queue_name"],
                    "locked_by": row["queue_locked_by"],
                    "locked_at": _iso(row["queue_locked_at"]),
                    "has_jobs": row["task_identifier"] is not None,
                }
            )
        if row["task_identifier"] is None:
            continue
        for name in STATUS_COUNTS:
            totals[name] += row[name]
        groups.append(
            {
                "task_identifier": row["task_identifier"],
                "queue_name": row["queue_name"],
                **{name: row[name] for name in STATUS_COUNTS},
                "oldest_ready_age_seconds": row["oldest_ready_age_seconds"],
                "queue_locked_by": row["queue_locked_by"],
                "queue_locked_at": _iso(row["queue_locked_at"]),
            }
        )
    # A queue holding several tasks appears once per task; list each locked queue once.
    seen: dict[str, dict[str, Any]] = {}
    for queue in locked_queues:
        seen.setdefault(queue["queue_name"], queue)
    return {
        "schema": schema,
        "revision": revision,
        "generated_at": _iso(dt.datetime.now(dt.timezone.utc)),
        "groups": groups,
        "totals": totals,
        "locked_queues": list(seen.values()),
    }


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
                *(str(group[name]) for name in STATUS_COUNTS),
                format_age(group["oldest_ready_age_seconds"]),
                group["queue_locked_by"] or "-",
            ]
        )
    totals = document["totals"]
    table.append(["total", "", *(str(totals[name]) for name in STATUS_COUNTS), "", ""])
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

    with open_utils(ctx) as (utils, conn):
        revision = utils.schema_status().revision
        rows = fetch_status(
            conn,
            utils.schema,
            ctx.args.task_identifiers,
            ctx.args.queue_names,
        )
    document = status_document(utils.schema, revision, rows)
    if ctx.args.json:
        ctx.out(json.dumps(document, indent=2))
    else:
        for line in status_table(document):
            ctx.out(line)
    return ExitCode.OK
