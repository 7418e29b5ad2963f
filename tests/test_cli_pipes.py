"""The command line piped into a reader that stops early (``| head -1``), and into a closed pipe.

A real subprocess writes into a real pipe; the test reads one line and closes its end, as
``head -1`` does. The outputs here are far larger than a pipe holds (64 KiB on Linux), so the
command is still writing when the pipe closes: the broken pipe is certain, not a race.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from graphile_worker_utils import RawJobSpec, WorkerUtils
from graphile_worker_utils.cli import Context, ExitCode, Masker, build_parser
from tests._cli import SCRIPT, clean_env, jobs

MANY = 3000
BUFFERING = [
    pytest.param({}, id="buffered"),
    pytest.param({"PYTHONUNBUFFERED": "1"}, id="unbuffered"),
]


def head_1(*args: str, env: dict[str, str]) -> tuple[bytes, int, bytes]:
    """Run the command line into a pipe, read one line and close the pipe, as ``| head -1``
    does; (the line, the exit code, everything on stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "graphile_worker_utils", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read()  # stderr is short: reading it after stdout cannot block
    return first, process.wait(timeout=120), stderr


def into_a_closed_pipe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run the script with stdout a pipe whose reader is gone before it starts."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [str(SCRIPT), *args],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


def add_many(utils: WorkerUtils, *, distinct_tasks: bool) -> list[int]:
    """Set-up: MANY jobs (each of its own task when ``distinct_tasks``); their ids."""
    added = utils.add_raw_jobs(
        RawJobSpec(f"task_{n:05d}" if distinct_tasks else "task", {"n": n}) for n in range(MANY)
    )
    return [job.id for job in added]


def cli_args(pg_dsn: str, schema: str, command: str, *rest: str) -> list[str]:
    return [command, "-c", pg_dsn, "-s", schema, *rest]


@pytest.mark.parametrize("buffering", BUFFERING)
def test_status_into_head_ends_quietly(
    pg_dsn: str, schema: str, utils: WorkerUtils, buffering: dict[str, str]
) -> None:
    add_many(utils, distinct_tasks=True)  # one table row per task: some 250 KB of output

    first, code, stderr = head_1(*cli_args(pg_dsn, schema, "status"), env=clean_env(**buffering))

    assert first.startswith(b"schema "), first
    assert (code, stderr) == (ExitCode.OUTPUT_CLOSED, b""), (code, stderr.decode())


@pytest.mark.parametrize("buffering", BUFFERING)
def test_complete_of_3000_ids_into_head_completes_them_all_and_ends_quietly(
    pg_dsn: str,
    schema: str,
    utils: WorkerUtils,
    conn: psycopg.Connection[Any],
    buffering: dict[str, str],
) -> None:
    ids = add_many(utils, distinct_tasks=False)

    first, code, stderr = head_1(
        *cli_args(pg_dsn, schema, "complete", *map(str, ids)), env=clean_env(**buffering)
    )

    assert first.startswith(f"job {ids[0]} ".encode()), first
    assert (code, stderr) == (ExitCode.OUTPUT_CLOSED, b""), (code, stderr.decode())
    left = jobs(conn, schema)
    assert left == [], f"expected all {MANY} jobs completed (deleted), {len(left)} are left"


@pytest.mark.parametrize("buffering", BUFFERING)
def test_lots_of_json_into_head_ends_quietly_and_the_work_stays_done(
    pg_dsn: str,
    schema: str,
    utils: WorkerUtils,
    conn: psycopg.Connection[Any],
    buffering: dict[str, str],
) -> None:
    ids = add_many(utils, distinct_tasks=False)

    first, code, stderr = head_1(
        *cli_args(pg_dsn, schema, "fail", *map(str, ids), "--reason", "piped", "--json"),
        env=clean_env(**buffering),
    )

    assert first.startswith(b'{"id": '), first
    assert (code, stderr) == (ExitCode.OUTPUT_CLOSED, b""), (code, stderr.decode())
    reasons = {row["last_error"] for row in jobs(conn, schema)}
    assert reasons == {"piped"}, f"expected all {MANY} jobs failed as 'piped', got {reasons}"


@pytest.mark.parametrize("buffering", BUFFERING)
def test_status_json_document_into_head_ends_quietly(
    pg_dsn: str, schema: str, utils: WorkerUtils, buffering: dict[str, str]
) -> None:
    add_many(utils, distinct_tasks=True)

    first, code, stderr = head_1(
        *cli_args(pg_dsn, schema, "status", "--json"), env=clean_env(**buffering)
    )

    assert first == b"{\n", first
    assert (code, stderr) == (ExitCode.OUTPUT_CLOSED, b""), (code, stderr.decode())


@pytest.mark.parametrize("buffering", BUFFERING)
@pytest.mark.parametrize("output", [[], ["--json"]], ids=["table", "json"])
def test_a_page_of_jobs_into_head_ends_quietly(
    pg_dsn: str, schema: str, utils: WorkerUtils, buffering: dict[str, str], output: list[str]
) -> None:
    add_many(utils, distinct_tasks=True)

    first, code, stderr = head_1(
        *cli_args(pg_dsn, schema, "jobs", "--limit", str(MANY), *output),
        env=clean_env(**buffering),
    )

    assert first.split()[:2] == ([b"{"] if output else [b"ID", b"TASK"]), first
    # A full page's note about --after goes to stderr only once the table is out: not here.
    assert (code, stderr) == (ExitCode.OUTPUT_CLOSED, b""), (code, stderr.decode())


@pytest.mark.parametrize("buffering", BUFFERING)
def test_migrate_into_a_closed_pipe_still_installs_the_schema(
    pg_dsn: str, schema: str, conn: psycopg.Connection[Any], buffering: dict[str, str]
) -> None:
    done = into_a_closed_pipe(*cli_args(pg_dsn, schema, "migrate"), env=clean_env(**buffering))

    assert (done.returncode, done.stderr) == (ExitCode.OUTPUT_CLOSED, b""), done
    status = WorkerUtils(conn, schema=schema).schema_status()
    assert status.revision == 20, f"expected the schema installed at revision 20, got {status}"


@pytest.mark.parametrize("buffering", BUFFERING)
def test_help_into_a_closed_pipe_ends_quietly(buffering: dict[str, str]) -> None:
    done = into_a_closed_pipe("--help", env=clean_env(**buffering))

    assert (done.returncode, done.stderr) == (ExitCode.OUTPUT_CLOSED, b""), done


# -- without a database --------------------------------------------------------------------------


class ClosedPipe(io.StringIO):
    """A stream whose reader has gone."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_context_out_raises_once_then_prints_nothing() -> None:
    ctx = Context(build_parser().parse_args(["status"]), Masker())
    ctx.stdout = ClosedPipe()

    with pytest.raises(BrokenPipeError):
        ctx.out("first")
    ctx.out("from cleanup code, after the reader went away")

    assert ctx.stdout_closed


def test_a_note_into_a_closed_stderr_is_dropped_and_the_command_carries_on() -> None:
    ctx = Context(build_parser().parse_args(["status"]), Masker())
    ctx.stderr = ClosedPipe()

    ctx.note("a note")
    ctx.note("another")

    assert ctx.stderr_closed and not ctx.stdout_closed
