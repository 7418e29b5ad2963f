"""The ``graphile-worker-utils`` command line: migrations, enqueueing, maintenance, status, reading
jobs and locked workers, demo.

Meant for cron jobs and operators. Every failure is one line on stderr (a traceback only with
``--debug``) and a documented exit code (:class:`ExitCode`); passwords never reach the output.
Only ``argparse`` is imported at start-up: psycopg and the library are imported inside the
subcommands that need them.

Example::

    graphile-worker-utils -c postgresql://app@db/app migrate --check
    graphile-worker-utils cleanup --task DELETE_PERMANENTLY_FAILED_JOBS --task GC_JOB_QUEUES
    graphile-worker-utils status --json
    graphile-worker-utils jobs --state permanently_failed

The package is cut by command: each command module (:mod:`.migrate`, :mod:`.enqueue`,
:mod:`.maintenance`, :mod:`.status`, :mod:`.jobs`, :mod:`.workers`, :mod:`.demo`) registers its
subparser next to its handlers; the private modules (``_app``, ``_context``, ``_options``,
``_job_views``, ...) are what they share.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._app import _run, build_parser, parse_arguments
from ._context import (
    Context,
    Masker,
    connection_configured,
    open_utils,
    resolve_conninfo,
    resolve_schema,
)
from ._exit_codes import EXIT_CODES_HELP, PROG, CliError, ExitCode
from ._failures import classify, database_text
from ._interrupts import InterruptGate
from ._job_lines import JOB_LINE_FIELDS, parse_job_line
from ._job_lines import _batches as _batches
from ._job_lines import _decode_line as _decode_line
from ._job_lines import _input_lines as _input_lines
from ._render import format_age, job_line, job_to_json, one_line

__all__ = [
    "EXIT_CODES_HELP",
    "JOB_LINE_FIELDS",
    "PROG",
    "CliError",
    "Context",
    "ExitCode",
    "InterruptGate",
    "Masker",
    "build_parser",
    "classify",
    "connection_configured",
    "database_text",
    "format_age",
    "job_line",
    "job_to_json",
    "main",
    "one_line",
    "open_utils",
    "parse_arguments",
    "parse_job_line",
    "resolve_conninfo",
    "resolve_schema",
    "script",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    SIGINT's previous handler is restored at the end."""
    return _run(argv, exiting=False)


def script() -> int:
    """The console script and ``python -m graphile_worker_utils``: :func:`main` for a whole
    process, which then ignores SIGINT while it exits: once the command is done, a Ctrl-C can
    no longer change its exit code (Python would restore the default action, and die of it)."""
    from .._script import script as whole_process

    return whole_process()
