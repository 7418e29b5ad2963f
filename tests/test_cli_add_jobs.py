"""``add-jobs``: what a Ctrl-C or a bad line leaves behind, and what the command says about it.

The interruption tests send real SIGINTs to the real command at random moments (seeded; the
seed is printed, and ADD_JOBS_SIGINT_SEED replays it) and check, each time, that the exit code
and the message match what the database holds, and that resuming where the message says gives
every job exactly once.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils.cli import (
    CliError,
    ExitCode,
    InterruptGate,
    _batches,
    _decode_line,
    _input_lines,
    main,
)
from tests._cli import assert_one_line_error, clean_env

PROGRAM = [sys.executable, "-m", "graphile_worker_utils"]
LINES = 3000
BATCH = 100
RUNS_PER_MODE = 40


def numbered_lines(count: int, start: int = 1, **fields: Any) -> str:
    """JSON lines whose payload says their own line number (``n``), from ``start``."""
    return "".join(
        json.dumps({"identifier": "bulk", "payload": {"n": n}, **fields}) + "\n"
        for n in range(start, start + count)
    )


def line_numbers(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """The ``n`` of every job of ``schema``, duplicates included, sorted."""
    query = sql.SQL("select (payload->>'n')::int from {}._private_jobs").format(
        sql.Identifier(schema)
    )
    return sorted(row[0] for row in conn.execute(query).fetchall())


def delete_jobs(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("delete from {}._private_jobs").format(sql.Identifier(schema)))


def add_jobs(
    dsn: str, schema: str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``add-jobs`` with ``args``, feeding ``stdin`` as bytes; output decoded."""
    done = subprocess.run(
        [*PROGRAM, "add-jobs", "-c", dsn, "-s", schema, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


# -- input that is not UTF-8, job keys used twice ----------------------------------------------

BAD_LINE = b'{"identifier": "bulk", "payload": {"s": "caf\xe9 cr\xc3\xa8me"}}\n'
BAD_COLUMN = len('{"identifier": "bulk", "payload": {"s": "caf') + 1
BATCH_SIZES = [["--batch-size", "1"], ["--batch-size", "2"], []]
BATCH_IDS = ["batch 1", "batch 2", "default batch"]


def input_args(tmp_path: Path, data: bytes, from_file: bool) -> tuple[str, list[str], bytes]:
    """(source name, arguments, stdin) that feed ``data`` from a file or from stdin."""
    if not from_file:
        return "stdin", [], data
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(data)
    return str(path), [str(path)], b""


@pytest.mark.parametrize("from_file", [True, False], ids=["file", "stdin"])
@pytest.mark.parametrize("batch", BATCH_SIZES, ids=BATCH_IDS)
def test_a_byte_that_is_not_utf8_exits_8_naming_the_line_and_adds_nothing(
    dsn: str,
    migrated: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    from_file: bool,
    batch: list[str],
) -> None:
    data = numbered_lines(3).encode() + BAD_LINE + numbered_lines(2, start=5).encode()
    source, args, stdin = input_args(tmp_path, data, from_file)
    line = assert_one_line_error(
        add_jobs(dsn, migrated, *args, *batch, stdin=stdin), ExitCode.INVALID_JOB
    )
    assert f"{source}:4: not valid UTF-8 (byte 0xe9 at column {BAD_COLUMN})" in line
    assert "nothing was added" in line
    assert line_numbers(conn, migrated) == []


@pytest.mark.parametrize("from_file", [True, False], ids=["file", "stdin"])
def test_a_byte_that_is_not_utf8_with_commit_every_batch_says_where_to_resume(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], tmp_path: Path, from_file: bool
) -> None:
    data = numbered_lines(3).encode() + BAD_LINE + numbered_lines(2, start=5).encode()
    source, args, stdin = input_args(tmp_path, data, from_file)
    done = add_jobs(dsn, migrated, *args, "--batch-size", "2", "--commit-every-batch", stdin=stdin)
    line = assert_one_line_error(done, ExitCode.INVALID_JOB)
    assert f"{source}:4: not valid UTF-8" in line
    assert "2 jobs in 1 batches were committed; resume from line 3" in line
    assert line_numbers(conn, migrated) == [1, 2]


def keyed_lines(keys: list[str]) -> bytes:
    return "".join(
        json.dumps({"identifier": "bulk", "payload": {"n": n}, "job_key": key}) + "\n"
        for n, key in enumerate(keys, start=1)
    ).encode()


@pytest.mark.parametrize("from_file", [True, False], ids=["file", "stdin"])
@pytest.mark.parametrize("batch", BATCH_SIZES, ids=BATCH_IDS)
def test_a_job_key_on_two_lines_is_refused_whatever_the_batch_size(
    dsn: str,
    migrated: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    from_file: bool,
    batch: list[str],
) -> None:
    data = keyed_lines(["a", "b", "c", "d", "b", "e"])
    source, args, stdin = input_args(tmp_path, data, from_file)
    line = assert_one_line_error(
        add_jobs(dsn, migrated, *args, *batch, stdin=stdin), ExitCode.INVALID_JOB
    )
    assert f"{source}:5: job_key 'b' is also the key of {source}:2" in line
    assert "nothing was added" in line
    assert line_numbers(conn, migrated) == []


def test_a_job_key_on_two_lines_with_commit_every_batch_keeps_the_batches_before_it(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    data = keyed_lines(["a", "b", "c", "d", "b", "e"])
    done = add_jobs(dsn, migrated, "--batch-size", "2", "--commit-every-batch", stdin=data)
    line = assert_one_line_error(done, ExitCode.INVALID_JOB)
    assert "stdin:5: job_key 'b' is also the key of stdin:2" in line
    assert "4 jobs in 2 batches were committed; resume from line 5" in line
    assert line_numbers(conn, migrated) == [1, 2, 3, 4]


def test_a_text_stdin_of_a_host_process_is_read_too(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(numbered_lines(3) + "\n"))
    assert main(["add-jobs", "-c", dsn, "-s", migrated, "--batch-size", "2"]) == ExitCode.OK
    assert line_numbers(conn, migrated) == [1, 2, 3]


# -- the pure parts, without a database -------------------------------------------------------


def test_decode_line_names_the_byte_and_its_character_column() -> None:
    assert _decode_line(b"\xc3\xa9t\xc3\xa9\n", "f:1") == "été\n"
    with pytest.raises(CliError) as caught:
        _decode_line("été ".encode() + b"\xff{}", "f:7")
    assert caught.value.code is ExitCode.INVALID_JOB
    assert caught.value.message == "f:7: not valid UTF-8 (byte 0xff at column 5)"


def test_input_lines_skips_json_blank_lines_only() -> None:
    lines = [b"{}\n", b"\n", b" \t\r\n", "\u00a0\n".encode(), b"{}"]
    assert list(_input_lines(iter(lines))) == [(1, b"{}\n"), (4, "\u00a0\n".encode()), (5, b"{}")]  # type: ignore[arg-type, unused-ignore]


@pytest.mark.parametrize("size", [1, 2, 3, 1000])
def test_batches_refuse_a_repeated_key_in_any_batch_and_mark_the_last(size: int) -> None:
    good = list(_input_lines(iter(keyed_lines(["a", "b", "c", "d"]).splitlines(True))))  # type: ignore[arg-type, unused-ignore]
    batches = list(_batches(iter(good), size, "f"))
    assert [numbers for _, numbers, _ in batches] == [
        list(range(1, 5))[i : i + size] for i in range(0, 4, size)
    ]
    assert [last for *_, last in batches] == [False] * (len(batches) - 1) + [True]
    repeated = list(_input_lines(iter(keyed_lines(["a", "b", "c", "a"]).splitlines(True))))  # type: ignore[arg-type, unused-ignore]
    with pytest.raises(CliError, match="f:4: job_key 'a' is also the key of f:1"):
        list(_batches(iter(repeated), size, "f"))


def test_the_gate_raises_defers_or_absorbs_as_its_mode_says() -> None:
    gate = InterruptGate()
    with pytest.raises(KeyboardInterrupt):
        gate.handle(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt), gate.deferred():
        gate.handle(signal.SIGINT, None)  # recorded; raised on leaving
        assert gate.pending and not gate.forced
    assert gate.mode == "raise"
    gate.mode = "defer"
    with pytest.raises(KeyboardInterrupt):
        gate.handle(signal.SIGINT, None)  # a second one: the user insists
    assert gate.forced
    gate.mode = "absorb"
    gate.handle(signal.SIGINT, None)


def test_a_ctrl_c_lost_in_a_callback_is_recorded_and_not_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Target:
        pass

    def interrupted(_: object) -> None:
        gate.handle(signal.SIGINT, None)  # as if the SIGINT landed inside the callback

    reported: list[type[BaseException]] = []

    def recording_hook(unraisable: Any) -> None:
        reported.append(type(unraisable.exc_value))

    monkeypatch.setattr(sys, "unraisablehook", recording_hook)
    gate = InterruptGate()
    with gate.installed():
        target = Target()
        watcher = weakref.ref(target, interrupted)
        del target  # the callback's KeyboardInterrupt cannot propagate: Python reports it
        other = Target()
        failing = weakref.ref(other, lambda _: 1 / 0)
        del other  # any other lost exception still reaches the previous hook
    assert watcher() is None and failing() is None
    assert gate.pending
    assert reported == [ZeroDivisionError]
    assert sys.unraisablehook is recording_hook


def test_main_restores_the_sigint_handler_and_runs_outside_the_main_thread(
    tmp_path: Path,
) -> None:
    def own_handler(signum: int, frame: Any) -> None:
        pass

    missing = str(tmp_path / "missing.jsonl")
    previous = signal.signal(signal.SIGINT, own_handler)
    try:
        assert main(["add-jobs", missing]) == ExitCode.USAGE
        assert signal.getsignal(signal.SIGINT) is own_handler
        codes: list[int] = []
        thread = threading.Thread(target=lambda: codes.append(main(["add-jobs", missing])))
        thread.start()
        thread.join()
        assert codes == [ExitCode.USAGE]
        assert signal.getsignal(signal.SIGINT) is own_handler
    finally:
        signal.signal(signal.SIGINT, previous)


# -- Ctrl-C during a commit, made slow on purpose ----------------------------------------------


def slow_commit_of_line(conn: psycopg.Connection[Any], schema: str, line: int) -> None:
    """Make the commit that writes the job of ``line`` sleep (a deferred constraint trigger in
    the test's own schema), so that a SIGINT can be sent while that commit is under way."""
    conn.execute(
        sql.SQL(
            """
            create function {s}.gwu_test_slow_commit() returns trigger language plpgsql as $$
            begin
              if (new.payload->>'n')::int = {line} then perform pg_sleep(4); end if;
              return null;
            end $$;
            create constraint trigger gwu_test_slow_commit after insert on {s}._private_jobs
              deferrable initially deferred for each row
              execute function {s}.gwu_test_slow_commit();
            """
        ).format(s=sql.Identifier(schema), line=sql.Literal(line))
    )


def start_and_interrupt_the_slow_commit(
    conn: psycopg.Connection[Any], args: list[str], signals: int
) -> tuple[int, str, str]:
    """Run ``args``; once its commit sleeps, send ``signals`` SIGINTs; its code and output."""
    name = f"gwu-test-{uuid.uuid4().hex}"  # this run's session, among other tests' sessions
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(PGAPPNAME=name),
        text=True,
    )
    query = (
        "select count(*) from pg_stat_activity"
        " where application_name = %s and wait_event = 'PgSleep'"
    )
    deadline = time.monotonic() + 60
    while conn.execute(query, (name,)).fetchone() == (0,):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    for _ in range(signals):
        os.kill(process.pid, signal.SIGINT)
        time.sleep(1)  # apart, or Python may run its handler once for both
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout, stderr


def test_a_ctrl_c_during_the_last_commit_waits_for_it_and_exits_0(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(numbered_lines(3))
    slow_commit_of_line(conn, migrated, 2)
    args = [*PROGRAM, "add-jobs", str(path), "-c", dsn, "-s", migrated, "--batch-size", "2"]
    code, stdout, stderr = start_and_interrupt_the_slow_commit(conn, args, signals=1)
    assert code == ExitCode.OK, (stdout, stderr)
    assert stdout.startswith("added 3 jobs in 2 batches in one transaction")
    assert stderr == f"{NOTE}\n"
    assert line_numbers(conn, migrated) == [1, 2, 3]


def test_a_ctrl_c_during_a_batch_commit_stops_after_it_with_the_exact_count(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(numbered_lines(4))
    slow_commit_of_line(conn, migrated, 2)
    args = [*PROGRAM, "add-jobs", str(path), "-c", dsn, "-s", migrated, "--batch-size", "1"]
    code, stdout, stderr = start_and_interrupt_the_slow_commit(
        conn, [*args, "--commit-every-batch"], signals=1
    )
    line = assert_one_line_error(
        subprocess.CompletedProcess(args, code, stdout, stderr), ExitCode.INTERRUPTED
    )
    assert line.endswith("interrupted; 2 jobs in 2 batches were committed; resume from line 3")
    assert line_numbers(conn, migrated) == [1, 2]


@pytest.mark.parametrize("every_batch", [False, True], ids=["one transaction", "every batch"])
def test_a_second_ctrl_c_during_a_commit_says_its_outcome_is_unknown(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], tmp_path: Path, every_batch: bool
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(numbered_lines(4))
    slow_commit_of_line(conn, migrated, 2)
    args = [*PROGRAM, "add-jobs", str(path), "-c", dsn, "-s", migrated, "--batch-size", "2"]
    args += ["--commit-every-batch"] if every_batch else []
    code, stdout, stderr = start_and_interrupt_the_slow_commit(conn, args, signals=2)
    line = assert_one_line_error(
        subprocess.CompletedProcess(args, code, stdout, stderr), ExitCode.INTERRUPTED
    )
    assert "whether it happened is unknown" in line, line
    if every_batch:
        assert "the commit of lines 1..2 of" in line and "nothing was committed before it" in line
        assert "resume from line 1 if they are missing, from line 3 if they are there" in line
    else:
        assert "the commit of all 4 jobs (lines 1..4 of" in line
    # One of the two states the message names (psycopg cancels the commit: mostly the first).
    assert line_numbers(conn, migrated) in ([], [1, 2] if every_batch else [1, 2, 3, 4])


# -- Ctrl-C at random moments -----------------------------------------------------------------

NOTE = "graphile-worker-utils: add-jobs: interrupted after every job was committed: nothing to redo"
ERROR = "graphile-worker-utils: error: "
PSYCOPG = "query cancellation interrupted (KeyboardInterrupt)"
COMMITTED = re.compile(r"(\d+) jobs in (\d+) batches were committed; resume from line (\d+)")
UNKNOWN = re.compile(
    r"the commit of (?:all (\d+) jobs \()?lines (\d+)\.\.(\d+) of .*whether it happened is"
    r" unknown; (?:(\d+) jobs in \d+ batches were committed before it)?"
)


def seeded_random() -> random.Random:
    seed = int(os.environ.get("ADD_JOBS_SIGINT_SEED") or random.randrange(2**32))
    print(f"ADD_JOBS_SIGINT_SEED={seed}")  # pytest shows it when the test fails
    return random.Random(seed)


def interrupted_run(args: list[str], delays: list[float]) -> tuple[int, str, str]:
    """Start ``args``, send a SIGINT after each delay (while it runs); its code and output."""
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        text=True,
    )
    for delay in delays:
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout, stderr


def resume(dsn: str, schema: str, path: Path, line: int, every_batch: bool) -> None:
    """Run add-jobs (in this process) on the input from ``line`` on, as the message says."""
    rest = path.with_name("rest.jsonl")
    rest.write_text("".join(path.read_text().splitlines(True)[line - 1 :]))
    options = ["--commit-every-batch"] if every_batch else []
    assert main(["add-jobs", str(rest), "-c", dsn, "-s", schema, *options]) == ExitCode.OK


def check_run(
    code: int,
    stdout: str,
    stderr: str,
    held: list[int],
    every_batch: bool,
) -> tuple[str, int | None]:
    """Check one run's report against the line numbers the database holds; (outcome, line to
    resume from, or None when there is nothing to resume)."""
    everything = list(range(1, LINES + 1))
    if "graphile-worker-utils" not in stderr and code != ExitCode.OK:
        # Python's own start-up was interrupted (-SIGINT, or 1 from runpy): nothing ran.
        assert code in (1, -signal.SIGINT), (code, stderr)
        assert "KeyboardInterrupt" in stderr or stderr == ""
        assert held == [] and stdout == "", (stdout, stderr)
        return "interrupted at start-up", 1
    if stderr == f"{ERROR}interrupted\n":  # before add-jobs began, from main()
        assert code == ExitCode.INTERRUPTED and held == [] and stdout == "", (code, stdout)
        return "interrupted before add-jobs began", 1
    # psycopg's own warning when a second Ctrl-C cuts its query cancellation short.
    stderr = "".join(line for line in stderr.splitlines(True) if not line.startswith(PSYCOPG))
    assert "Traceback" not in stderr, stderr
    if code == ExitCode.OK:
        assert stdout.startswith(f"added {LINES} jobs"), (stdout, stderr)
        assert held == everything
        assert stderr in ("", f"{NOTE}\n"), stderr
        return ("ok, interrupted during the last commit" if stderr else "ok"), None
    assert code == ExitCode.INTERRUPTED, (code, stdout, stderr)
    assert len(stderr.splitlines()) == 1 and stdout == "", (stdout, stderr)
    unknown = UNKNOWN.search(stderr)
    if unknown:
        return check_unknown(unknown, held, every_batch, stderr)
    assert "unknown" not in stderr, stderr
    if "nothing was added" in stderr:
        assert held == [], stderr
        return "nothing added", 1
    match = COMMITTED.search(stderr)
    assert match and every_batch, stderr
    jobs, _, line = (int(group) for group in match.groups())
    assert held == list(range(1, line)) and len(held) == jobs, stderr
    return "part committed", line


def check_unknown(
    match: re.Match[str], held: list[int], every_batch: bool, stderr: str
) -> tuple[str, int | None]:
    """An outcome said to be unknown: the database holds one of the two it names."""
    _, first, last, before = match.groups()
    first_line, last_line = int(first), int(last)
    if not every_batch:
        assert held in ([], list(range(1, LINES + 1))), stderr
        return "unknown", None if held else 1
    assert int(before or 0) == first_line - 1, stderr
    assert held in (list(range(1, first_line)), list(range(1, last_line + 1))), stderr
    return "unknown", len(held) + 1


def sigint_runs(
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    path: Path,
    every_batch: bool,
    signals: int,
) -> Counter[str]:
    rng = seeded_random()
    args = [*PROGRAM, "add-jobs", str(path), "--batch-size", str(BATCH), "-c", dsn, "-s", schema]
    args += ["--commit-every-batch"] if every_batch else []
    started = time.monotonic()
    code, _, stderr = interrupted_run(args, [])
    assert code == 0, stderr
    whole_run = time.monotonic() - started  # the moments to interrupt: from start to end
    outcomes: Counter[str] = Counter()
    for run in range(RUNS_PER_MODE):
        delete_jobs(conn, schema)
        # Every other run aims at the end, where the last commit is.
        delays = [whole_run * rng.uniform(0.75 if run % 2 else 0, 1.1)]
        delays += [rng.uniform(0, 0.02) for _ in range(signals - 1)]
        code, stdout, stderr = interrupted_run(args, delays)
        outcome, line = check_run(code, stdout, stderr, line_numbers(conn, schema), every_batch)
        outcomes[outcome] += 1
        if line is not None:
            resume(dsn, schema, path, line, every_batch)
            assert line_numbers(conn, schema) == list(range(1, LINES + 1)), (run, stderr)
    print(dict(outcomes))
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("every_batch", [False, True], ids=["one transaction", "every batch"])
def test_a_ctrl_c_at_any_moment_is_reported_as_the_database_has_it(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], tmp_path: Path, every_batch: bool
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(numbered_lines(LINES))
    outcomes = sigint_runs(dsn, migrated, conn, path, every_batch, signals=1)
    assert "unknown" not in outcomes


@pytest.mark.slow
@pytest.mark.parametrize("every_batch", [False, True], ids=["one transaction", "every batch"])
def test_a_second_ctrl_c_never_makes_a_false_claim(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], tmp_path: Path, every_batch: bool
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(numbered_lines(LINES))
    sigint_runs(dsn, migrated, conn, path, every_batch, signals=2)
