"""What every subcommand works with: the settings, the connection, the schema check, the
masking of passwords and where to print."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from ._exit_codes import PROG, CliError, ExitCode
from ._interrupts import InterruptGate
from ._render import one_line

if TYPE_CHECKING:
    import psycopg

    from graphile_worker_utils import WorkerUtils

DEFAULT_SCHEMA = "graphile_worker"
#: Seconds to wait for the server when neither the connection string nor PGCONNECT_TIMEOUT
#: says: libpq's own default is to wait for ever, which a cron job should not.
DEFAULT_CONNECT_TIMEOUT = 10
#: libpq variables that configure a connection on their own (the ``demo`` then uses it).
PG_CONNECTION_VARIABLES = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSERVICE",
    "PGSERVICEFILE",
)

# -- masking -----------------------------------------------------------------------------------

_PASSWORD_KEYWORD = re.compile(r"""(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'"]+)""", re.I)
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)", re.I)
_MASK = "***"


class Masker:
    """Removes passwords from text before it is printed.

    Knows the password of the connection string and ``$PGPASSWORD``, and blanks anything shaped
    like ``password=...`` or ``postgresql://user:...@`` whatever its value.
    """

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        """Mask ``secret`` wherever it appears (very short ones only in the shapes above, so
        that masking a one-letter password does not shred every message)."""
        if secret and len(secret) >= 3:
            self._secrets.add(secret)

    def add_from_conninfo(self, conninfo: str) -> None:
        """Learn the password of a connection string (URI or key=value), if it has one."""
        try:
            from psycopg.conninfo import conninfo_to_dict

            self.add(str(conninfo_to_dict(conninfo).get("password") or ""))
        except Exception:  # a malformed string: the patterns still catch its password
            pass
        match = _URI_PASSWORD.search(conninfo)
        if match:
            from urllib.parse import unquote

            self.add(match.group(2))
            self.add(unquote(match.group(2)))

    def __call__(self, text: str) -> str:
        """``text`` without the passwords this masker knows or can recognise."""
        text = _URI_PASSWORD.sub(lambda m: m.group(1) + _MASK + m.group(3), text)
        text = _PASSWORD_KEYWORD.sub(lambda m: m.group(1) + _MASK, text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, _MASK)
        return text


# -- settings ----------------------------------------------------------------------------------


def resolve_conninfo(args: argparse.Namespace) -> str:
    """--connection, else $DATABASE_URL, else "" (libpq reads the PG* variables)."""
    conninfo: str | None = args.connection
    if conninfo is None:
        conninfo = os.environ.get("DATABASE_URL") or ""
    return conninfo


def resolve_schema(args: argparse.Namespace) -> str:
    """--schema, else $GRAPHILE_WORKER_SCHEMA, else graphile_worker."""
    schema: str | None = args.schema
    if schema is None:
        schema = os.environ.get("GRAPHILE_WORKER_SCHEMA") or DEFAULT_SCHEMA
    return schema


def connection_configured(args: argparse.Namespace) -> bool:
    """Whether a connection was configured (option, DATABASE_URL or a PG* variable)."""
    return bool(
        args.connection
        or os.environ.get("DATABASE_URL")
        or any(os.environ.get(name) for name in PG_CONNECTION_VARIABLES)
    )


# -- output ------------------------------------------------------------------------------------


class Context:
    """What every subcommand gets: the arguments, the masker, and where to print."""

    def __init__(
        self, args: argparse.Namespace, masker: Masker, interrupts: InterruptGate | None = None
    ) -> None:
        self.args = args
        self.masker = masker
        self.interrupts = interrupts or InterruptGate()
        self.debug: bool = bool(args.debug)
        self.stdout: IO[str] = sys.stdout
        self.stderr: IO[str] = sys.stderr
        #: Set when a reader closed stdout early (``| head``): nothing more is printed there.
        self.stdout_closed = False
        self.stderr_closed = False

    def out(self, line: str = "") -> None:
        """Print a line of results on stdout.

        Raises BrokenPipeError once, when the reader has gone (main() ends quietly then, as a
        tool killed by SIGPIPE would); later calls, from cleanup code, print nothing.
        """
        if self.stdout_closed:
            return
        try:
            print(line, file=self.stdout)
        except BrokenPipeError:
            self.stdout_closed = True
            silence(self.stdout)
            raise

    def note(self, line: str) -> None:
        """Print a line of information on stderr (masked); nothing once stderr's reader has
        gone (a note is no result: the command carries on)."""
        if self.stderr_closed:
            return
        try:
            print(self.masker(line), file=self.stderr)
        except BrokenPipeError:
            self.stderr_closed = True
            silence(self.stderr)

    def log(self, line: str) -> None:
        """Print a --debug line on stderr (masked)."""
        if self.debug:
            self.note(f"{PROG}: debug: {line}")


def silence(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at /dev/null after its reader went away, so that what
    is still buffered, and the interpreter's flush at exit, go nowhere instead of failing
    (Python's "Note on SIGPIPE" recipe)."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # not a file (a StringIO in a host process): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


# -- connections -------------------------------------------------------------------------------


def describe_conninfo(conninfo: str, masker: Masker) -> str:
    """The connection string for --debug output, password masked ('' shows as the PG* vars)."""
    if not conninfo:
        variables = sorted(k for k in os.environ if k.startswith("PG") and k != "PGPASSWORD")
        return "libpq defaults and PG* variables (" + (", ".join(variables) or "none") + ")"
    return masker(conninfo)


def _connection_error(error: Exception, masker: Masker) -> CliError:
    """Classify a failure to connect: wrong credentials, or an unreachable server."""
    text = one_line(masker(str(error)))
    sqlstate = getattr(error, "sqlstate", None) or ""
    lowered = text.lower()
    auth_markers = (
        "password authentication failed",
        "authentication failed",
        "no password supplied",
        "pg_hba.conf",
        "password is required",
        'role "',
    )
    if sqlstate.startswith("28") or any(marker in lowered for marker in auth_markers):
        return CliError(ExitCode.AUTHENTICATION, f"authentication failed: {text}")
    return CliError(ExitCode.UNREACHABLE, f"cannot connect to the database: {text}")


@contextmanager
def connect(ctx: Context) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection from the resolved settings, closed at the end."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    conninfo = resolve_conninfo(ctx.args)
    ctx.masker.add_from_conninfo(conninfo)
    ctx.masker.add(os.environ.get("PGPASSWORD"))
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as error:
        raise CliError(
            ExitCode.USAGE, f"invalid connection string: {one_line(ctx.masker(str(error)))}"
        ) from error
    kwargs: dict[str, Any] = {"autocommit": True, "fallback_application_name": PROG}
    timeout = ctx.args.connect_timeout
    if (
        timeout is None
        and "connect_timeout" not in params
        and not os.environ.get("PGCONNECT_TIMEOUT")
    ):
        timeout = DEFAULT_CONNECT_TIMEOUT
    if timeout is not None:
        kwargs["connect_timeout"] = timeout
    ctx.log(f"connecting to {describe_conninfo(conninfo, ctx.masker)}")
    try:
        conn = psycopg.connect(conninfo, **kwargs)
    except psycopg.Error as error:
        raise _connection_error(error, ctx.masker) from error
    with conn:
        ctx.log(
            f"connected: server {conn.info.server_version}, user {conn.info.user!r},"
            f" database {conn.info.dbname!r}"
        )
        yield conn


def _worker_utils(ctx: Context, conn: psycopg.Connection[Any], schema: str) -> WorkerUtils:
    from graphile_worker_utils import InvalidSchemaName, WorkerUtils

    try:
        return WorkerUtils(conn, schema=schema)
    except InvalidSchemaName as error:
        raise CliError(ExitCode.USAGE, f"--schema: {error}") from error


# -- the schema --------------------------------------------------------------------------------


#: The oldest revision the library works on without migrating (graphile-worker 0.16's first).
OLDEST_WORKING_REVISION = 16


def release_of(revision: int) -> str:
    """The graphile-worker release that leaves a schema at ``revision`` (for messages)."""
    if revision < OLDEST_WORKING_REVISION:
        return "graphile-worker 0.15 (or older)"
    if revision < 18:
        return "a graphile-worker 0.16 pre-release"
    return {18: "graphile-worker 0.16", 19: "graphile-worker 0.17"}.get(
        revision, "graphile-worker 0.18"
    )


def pending_breaking(revision: int) -> list[int]:
    """The breaking revisions that migrating a schema at ``revision`` would apply."""
    from graphile_worker_utils import BREAKING_REVISIONS, LATEST_REVISION

    return [r for r in sorted(BREAKING_REVISIONS) if revision < r <= LATEST_REVISION]


def migrating_effect(revision: int) -> str:
    """What migrating a schema at ``revision`` would do to the workers running on it, after
    "would": a breaking revision makes them shut down, and refuse to start again."""
    breaking = pending_breaking(revision)
    if not breaking:
        return "apply only non-breaking revisions and stop no worker"
    numbers = ", ".join(str(r) for r in breaking)
    workers = release_of(revision).removeprefix("a ").removesuffix(" pre-release")
    return (
        f"apply breaking revision{'s' if len(breaking) > 1 else ''} {numbers} and stop the"
        f" {workers} workers (upgrade them to graphile-worker 0.17+ first)"
    )


def migrate_hint(revision: int) -> str:
    """How to bring a schema at ``revision`` (older than the latest) up to date, and what that
    would do to its workers."""
    if revision < OLDEST_WORKING_REVISION:
        return (
            f"run graphile-worker 0.16+ against it once, then `{PROG} migrate`; together they"
            f" would {migrating_effect(revision)}"
        )
    return f"run `{PROG} migrate`, which would {migrating_effect(revision)}"


def require_current_schema(ctx: Context, utils: WorkerUtils) -> None:
    """Refuse to work on a schema that is missing, older than revision 16, or incompatibly
    ahead; on revisions 16..19, which the library works on as they are, print a note."""
    from graphile_worker_utils import LATEST_REVISION, SchemaState

    status = utils.schema_status()
    schema = utils.schema
    ctx.log(f"schema {schema!r}: {status.state.value}, revision {status.revision}")
    if status.state is SchemaState.MISSING:
        raise CliError(
            ExitCode.SCHEMA_MISSING,
            f"schema {schema!r} is not installed (not migrated): run `{PROG} migrate` first",
        )
    if status.state is SchemaState.BEHIND:
        revision = status.revision or 0
        if revision < OLDEST_WORKING_REVISION:
            raise CliError(
                ExitCode.SCHEMA_BEHIND,
                f"schema {schema!r} is at revision {revision} ({release_of(revision)}), older"
                f" than revision {OLDEST_WORKING_REVISION} that {PROG} works on: "
                + migrate_hint(revision),
            )
        ctx.note(
            f"{PROG}: note: schema {schema!r} is at revision {revision}"
            f" ({release_of(revision)}); this works,"
            f" {'but' if pending_breaking(revision) else 'and'} `{PROG} migrate` would"
            f" {migrating_effect(revision)}"
        )
    if status.state is SchemaState.AHEAD_INCOMPATIBLE:
        raise CliError(
            ExitCode.SCHEMA_INCOMPATIBLE,
            f"schema {schema!r} has breaking revision {status.breaking_revision}, newer than"
            f" revision {LATEST_REVISION} that this graphile-worker-utils knows:"
            " upgrade graphile-worker-utils",
        )


@contextmanager
def open_utils(
    ctx: Context, *, check_schema: bool = True
) -> Iterator[tuple[WorkerUtils, psycopg.Connection[Any]]]:
    """A WorkerUtils on a fresh autocommit connection (and the connection), the schema
    checked first."""
    schema = resolve_schema(ctx.args)
    from graphile_worker_utils._templates import validate_schema_name

    try:
        validate_schema_name(schema)
    except ValueError as error:
        raise CliError(ExitCode.USAGE, f"--schema: {error}") from error
    with connect(ctx) as conn:
        utils = _worker_utils(ctx, conn, schema)
        if check_schema:
            require_current_schema(ctx, utils)
        yield utils, conn
