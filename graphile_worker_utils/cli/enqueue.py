"""``add-job`` and ``add-jobs``: enqueue one job, or a JSON-lines file of them in batches."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, NamedTuple, NoReturn

from ._context import open_utils
from ._exit_codes import PROG, CliError, ExitCode
from ._failures import classify
from ._job_lines import _batch_error, _batches, _input_lines, _parse_payload
from ._options import _add_json_option, _aware_datetime, _positive_int, add_command
from ._render import print_jobs

if TYPE_CHECKING:
    import psycopg

    from graphile_worker_utils import RawJobSpec, WorkerUtils

    from ._context import Context
    from ._options import Commands

DEFAULT_BATCH_SIZE = 1000


def register(commands: Commands) -> None:
    """Add ``add-job`` and ``add-jobs`` to the command line."""
    _register_add_job(commands)
    _register_add_jobs(commands)


def _register_add_job(commands: Commands) -> None:
    add_job = add_command(commands, "add-job", "enqueue one job", handler=cmd_add_job)
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
        help="when it may run, with a UTC offset (2030-01-31T09:00:00+01:00), or now (the"
        " default: the database's now())",
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


def _register_add_jobs(commands: Commands) -> None:
    add_jobs = add_command(
        commands,
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
        handler=cmd_add_jobs,
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
        # The bulk path: only counts come back, and keyless jobs take its fast path.
        utils.bulk_add_raw_jobs(batch)
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
