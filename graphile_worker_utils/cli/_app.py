"""The command line's assembly and run: the top-level parser, the run of a subcommand, the
report of its failure, and the exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

from . import demo, enqueue, jobs, maintenance, migrate, status, workers
from ._context import Context, Masker, silence
from ._exit_codes import EPILOG, PROG, CliError, ExitCode
from ._failures import classify
from ._interrupts import InterruptGate
from ._options import _add_common_options, _Parser
from ._render import one_line

DESCRIPTION = """\
Enqueue, inspect and maintain graphile-worker jobs: migrations, jobs, cron-run cleanup, a
status view, the jobs themselves and the workers that lock them.

Connection: --connection/-c, else $DATABASE_URL, else libpq's PG* variables (PGHOST, PGUSER,
PGPASSWORD, PGDATABASE, ...; ~/.pgpass works). Schema: --schema/-s, else
$GRAPHILE_WORKER_SCHEMA, else graphile_worker."""

#: The modules of the subcommands, in the order of the help's list.
COMMAND_MODULES = (migrate, enqueue, maintenance, status, jobs, workers, demo)


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
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


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
            return int(ctx.args.handler(ctx))
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


def _run(argv: Sequence[str] | None, *, exiting: bool, gate: InterruptGate | None = None) -> int:
    # Installed until the output is flushed: a Ctrl-C after add-jobs' last commit is no failure.
    # The console script installs ``gate`` before importing this module (installing it again
    # here nests harmlessly).
    gate = InterruptGate() if gate is None else gate
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
