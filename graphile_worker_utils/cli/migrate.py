"""``migrate``: create or upgrade graphile-worker's schema, or only say where it stands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._context import migrate_hint, open_utils
from ._exit_codes import PROG, ExitCode
from ._options import add_command

if TYPE_CHECKING:
    from ._context import Context
    from ._options import Commands


def register(commands: Commands) -> None:
    """Add ``migrate`` to the command line."""
    migrate = add_command(
        commands,
        "migrate",
        "create or upgrade graphile-worker's schema (safe beside workers migrating too)",
        handler=cmd_migrate,
    )
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing; say whether the schema is current (exit 0), missing (5), behind"
        " (6) or ahead with a breaking revision (7)",
    )


def cmd_migrate(ctx: Context) -> int:
    """``migrate`` and ``migrate --check``."""
    from graphile_worker_utils import LATEST_REVISION, SchemaState

    with open_utils(ctx, check_schema=False) as (utils, _):
        schema = utils.schema
        if ctx.args.check:
            status = utils.schema_status()
            state = status.state
            if state is SchemaState.CURRENT:
                ctx.out(f"current: schema {schema!r} is at revision {status.revision}")
                return ExitCode.OK
            if state is SchemaState.AHEAD_COMPATIBLE:
                ctx.out(
                    f"ahead-compatible: schema {schema!r} is at revision {status.revision},"
                    f" newer than {LATEST_REVISION} but without a newer breaking revision"
                )
                return ExitCode.OK
            if state is SchemaState.MISSING:
                ctx.out(f"missing: schema {schema!r} is not installed; run `{PROG} migrate`")
                return ExitCode.SCHEMA_MISSING
            if state is SchemaState.BEHIND:
                revision = status.revision or 0
                ctx.out(
                    f"behind: schema {schema!r} is at revision {revision}, older than"
                    f" {LATEST_REVISION}; {migrate_hint(revision)}"
                )
                return ExitCode.SCHEMA_BEHIND
            ctx.out(
                f"ahead-incompatible: schema {schema!r} has breaking revision"
                f" {status.breaking_revision}, newer than {LATEST_REVISION}; upgrade"
                " graphile-worker-utils"
            )
            return ExitCode.SCHEMA_INCOMPATIBLE
        report = utils.migrate()
        if report.installed:
            ctx.out(f"installed schema {schema!r} at revision {report.revision}")
        elif report.applied:
            applied = ", ".join(str(r) for r in report.applied)
            ctx.out(f"migrated schema {schema!r} to revision {report.revision} (applied {applied})")
        else:
            ctx.out(f"schema {schema!r} is already at revision {report.revision}")
        return ExitCode.OK
