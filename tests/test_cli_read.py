"""The read commands, run for real in a subprocess against PostgreSQL: ``jobs``, ``show``,
``workers``, and ``cleanup --older-than``. Jobs are put in each state with the library and SQL;
each test checks the exit code, stdout (text and JSON) and stderr."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import JobSpec, WorkerUtils
from graphile_worker_utils.cli import ExitCode
from tests._cli import assert_one_line_error, clean_env, jobs, run

FUTURE = dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)
ERROR = "Error: SMTP refused\n    at send (mail.js:10:5)\n    at run (worker.js:3:1)"


def cli(dsn: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a subcommand on ``schema``."""
    command, *rest = args
    return run(command, "-c", dsn, "-s", schema, *rest)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The run succeeded (or the test fails showing why)."""
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done


def execute(conn: psycopg.Connection[Any], schema: str, statement: str, *params: Any) -> None:
    """Run ``statement`` with ``{s}`` standing for the quoted schema."""
    conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)), params)


def add(conn: psycopg.Connection[Any], schema: str, task: str = "mail", **spec: Any) -> int:
    """Set-up: enqueue a job with the library (payload ``{"to": task}``); its id."""
    return WorkerUtils(conn, schema=schema).add_raw_job(task, {"to": task}, JobSpec(**spec)).id


def one_of_each_state(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    """Set-up: a job in each state (in queue ``q``, task ``mail``); their ids by state."""
    ids = {
        "ready": add(conn, schema, queue_name="q"),
        "scheduled": add(conn, schema, queue_name="q", run_at=FUTURE),
        "running": add(conn, schema, queue_name="q"),
        "retrying": add(conn, schema, queue_name="q", run_at=FUTURE, job_key="retry-me"),
        "permanently_failed": add(conn, schema, queue_name="q", max_attempts=3),
    }
    execute(
        conn,
        schema,
        "update {s}._private_jobs set locked_at = now(), locked_by = 'pool-1' where id = %s",
        ids["running"],
    )
    execute(
        conn,
        schema,
        "update {s}._private_jobs set attempts = 1, last_error = %s where id = %s",
        ERROR,
        ids["retrying"],
    )
    execute(
        conn,
        schema,
        "update {s}._private_jobs set attempts = 3, last_error = %s where id = %s",
        ERROR,
        ids["permanently_failed"],
    )
    return ids


def listed(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The jobs of a ``jobs --json`` run."""
    jobs_: list[dict[str, Any]] = json.loads(ok(done).stdout)["jobs"]
    return jobs_


# -- jobs ----------------------------------------------------------------------------------------


def test_jobs_shows_each_state_in_a_table(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    ids = one_of_each_state(conn, migrated)

    done = ok(cli(dsn, migrated, "jobs"))

    header, *rows = done.stdout.splitlines()
    assert header.split()[:5] == ["ID", "TASK", "QUEUE", "STATE", "ATTEMPTS"], header
    by_id = {int(row.split()[0]): row.split() for row in rows}
    assert {state: by_id[i][3] for state, i in ids.items()} == {s: s for s in ids}
    failed = by_id[ids["permanently_failed"]]
    assert failed[1:5] == ["mail", "q", "permanently_failed", "3/3"], failed
    assert failed[-4:] == ["Error:", "SMTP", "refused", "..."], failed  # its first line
    assert "retry-me" in by_id[ids["retrying"]]
    assert done.stderr == ""  # not a full page: no note


def test_jobs_json_has_every_field_but_payloads_and_states_by_value(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    ids = one_of_each_state(conn, migrated)

    done = ok(cli(dsn, migrated, "jobs", "--json"))

    document = json.loads(done.stdout)
    assert document["next_after"] is None
    by_id = {job["id"]: job for job in document["jobs"]}
    assert list(by_id) == sorted(ids.values())  # by id
    assert {state: by_id[i]["state"] for state, i in ids.items()} == {s: s for s in ids}
    failed = by_id[ids["permanently_failed"]]
    assert failed["last_error"] == ERROR and "payload" not in failed
    assert failed["run_at"].endswith("Z") and dt.datetime.fromisoformat(failed["run_at"])
    running = by_id[ids["running"]]
    assert running["locked_by"] == "pool-1" and running["locked_at"].endswith("Z")
    assert set(failed) == set(running)  # the same keys for every job


def test_jobs_filters_by_task_queue_state_and_worker(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    ids = one_of_each_state(conn, migrated)
    other = add(conn, migrated, "sms")
    outside = add(conn, migrated, "mail")  # in no queue

    def ids_of(*args: str) -> list[int]:
        return [job["id"] for job in listed(cli(dsn, migrated, "jobs", "--json", *args))]

    assert ids_of("--task", "sms") == [other]
    assert ids_of("--task", "sms", "--task", "mail", "--queue", "q") == sorted(ids.values())
    assert ids_of("--state", "ready") == [ids["ready"], other, outside]
    assert ids_of("--state", "RETRYING", "--state", "permanently-failed") == [
        ids["retrying"],
        ids["permanently_failed"],
    ]
    assert ids_of("--state", "ready", "--task", "mail", "--queue", "q") == [ids["ready"]]
    assert ids_of("--locked-by", "pool-1") == [ids["running"]]
    assert ids_of("--locked-by", "pool-2") == []


def test_jobs_pages_through_every_job_with_after(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    added = [add(conn, migrated) for _ in range(7)]

    seen: list[int] = []
    after: int | None = None
    pages = 0
    while True:
        extra = [] if after is None else ["--after", str(after)]
        document = json.loads(
            ok(cli(dsn, migrated, "jobs", "--json", "--limit", "3", *extra)).stdout
        )
        seen += [job["id"] for job in document["jobs"]]
        pages += 1
        after = document["next_after"]
        if after is None:
            break
        assert after == seen[-1]
    assert (seen, pages) == (added, 3)


def test_a_full_page_in_a_table_says_how_to_get_the_next_one(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    added = [add(conn, migrated) for _ in range(3)]

    first = ok(cli(dsn, migrated, "jobs", "--limit", "2"))
    assert [int(row.split()[0]) for row in first.stdout.splitlines()[1:]] == added[:2]
    (note,) = first.stderr.splitlines()
    assert note.startswith("graphile-worker-utils: note: ") and f"--after {added[1]}" in note

    last = ok(cli(dsn, migrated, "jobs", "--limit", "2", "--after", str(added[1])))
    assert [int(row.split()[0]) for row in last.stdout.splitlines()[1:]] == added[2:]
    assert last.stderr == ""


def test_no_jobs_is_an_empty_page_and_success(dsn: str, migrated: str) -> None:
    assert ok(cli(dsn, migrated, "jobs")).stdout == "(no jobs)\n"
    assert ok(cli(dsn, migrated, "jobs", "--after", "41")).stdout == "(no jobs after id 41)\n"
    document = json.loads(ok(cli(dsn, migrated, "jobs", "--json")).stdout)
    assert document == {"jobs": [], "next_after": None}


def test_jobs_refuses_an_unknown_state_naming_the_valid_ones(dsn: str, migrated: str) -> None:
    line = assert_one_line_error(cli(dsn, migrated, "jobs", "--state", "failed"), ExitCode.USAGE)
    assert "invalid choice: 'failed'" in line and "'permanently_failed'" in line, line


@pytest.mark.parametrize(
    "args",
    [("jobs",), ("show", "1"), ("show", "--key", "k"), ("workers",)],
    ids=["jobs", "show", "show --key", "workers"],
)
def test_read_commands_on_a_missing_schema_exit_5(
    dsn: str, schema: str, args: tuple[str, ...]
) -> None:
    line = assert_one_line_error(cli(dsn, schema, *args), ExitCode.SCHEMA_MISSING)
    assert "migrate" in line


# -- show ----------------------------------------------------------------------------------------


def test_show_prints_every_field_the_payload_and_the_whole_error(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    ids = one_of_each_state(conn, migrated)
    failed = ids["permanently_failed"]

    lines = ok(cli(dsn, migrated, "show", str(failed))).stdout.splitlines()

    assert lines[0] == f"job {failed}"
    fields = dict(line.split(None, 1) for line in lines[1 : lines.index("payload:")])
    assert fields["state"] == "permanently_failed" and fields["queue_name"] == "q"
    assert (fields["attempts"], fields["max_attempts"]) == ("3", "3")
    assert lines[lines.index("payload:") + 1 : lines.index("last_error:")] == [
        "  {",
        '    "to": "mail"',
        "  }",
    ]
    assert lines[lines.index("last_error:") + 1 :] == ["  " + line for line in ERROR.split("\n")]


def test_show_by_key_and_as_json(dsn: str, migrated: str, conn: psycopg.Connection[Any]) -> None:
    ids = one_of_each_state(conn, migrated)

    job = json.loads(ok(cli(dsn, migrated, "show", "--key", "retry-me", "--json")).stdout)

    assert job["id"] == ids["retrying"] and job["key"] == "retry-me"
    assert (job["state"], job["payload"], job["last_error"]) == ("retrying", {"to": "mail"}, ERROR)
    assert job["run_at"] == "2099-01-01T00:00:00Z"
    by_id = json.loads(ok(cli(dsn, migrated, "show", str(ids["retrying"]), "--json")).stdout)
    assert by_id == job


@pytest.mark.parametrize(
    ("args", "words"),
    [(("999999",), "no job has id 999999"), (("--key", "nope"), "no job has key 'nope'")],
    ids=["id", "key"],
)
def test_show_of_an_unknown_job_exits_12_with_one_line(
    dsn: str, migrated: str, conn: psycopg.Connection[Any], args: tuple[str, ...], words: str
) -> None:
    add(conn, migrated, job_key="other")
    for extra in ((), ("--json",)):
        done = cli(dsn, migrated, "show", *args, *extra)
        assert words in assert_one_line_error(done, ExitCode.NOT_FOUND)
        assert done.stdout == ""


def test_show_of_a_completed_job_is_not_found(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = add(conn, migrated)
    ok(cli(dsn, migrated, "complete", str(job_id)))
    assert_one_line_error(cli(dsn, migrated, "show", str(job_id)), ExitCode.NOT_FOUND)


# -- workers -------------------------------------------------------------------------------------


def lock(conn: psycopg.Connection[Any], schema: str, job_id: int, worker: str, age: str) -> None:
    """Set-up: ``worker`` locks the job and its queue since ``age`` ago."""
    execute(
        conn,
        schema,
        "update {s}._private_jobs set locked_by = %s, locked_at = now() - %s::interval"
        " where id = %s",
        worker,
        age,
        job_id,
    )
    execute(
        conn,
        schema,
        "update {s}._private_job_queues set locked_by = %s, locked_at = now() - %s::interval"
        " where id = (select job_queue_id from {s}._private_jobs where id = %s)",
        worker,
        age,
        job_id,
    )


def test_workers_lists_fresh_and_stale_locks_oldest_first(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    lock(conn, migrated, add(conn, migrated, queue_name="a"), "pool-live", "5 seconds")
    lock(conn, migrated, add(conn, migrated, queue_name="b"), "pool-crashed", "2 hours")
    lock(conn, migrated, add(conn, migrated), "pool-crashed", "90 minutes")  # no queue

    done = ok(cli(dsn, migrated, "workers"))

    header, *rows = done.stdout.splitlines()
    assert header.split() == ["WORKER", "JOBS", "QUEUES", "OLDEST", "LOCK", "LOCK", "AGE"]
    crashed, live = (row.split() for row in rows)
    assert crashed[:3] == ["pool-crashed", "2", "1"] and crashed[4].startswith(("1h59m", "2h00m"))
    assert live[:3] == ["pool-live", "1", "1"] and live[4].endswith("s")
    (note,) = done.stderr.splitlines()
    assert "unlock-workers WORKER_ID" in note and "live worker" in note, note

    document = json.loads(ok(cli(dsn, migrated, "workers", "--json")).stdout)
    assert [(w["worker_id"], w["job_count"], w["queue_count"]) for w in document["workers"]] == [
        ("pool-crashed", 2, 1),
        ("pool-live", 1, 1),
    ]
    oldest = document["workers"][0]
    assert 7000 < oldest["lock_age_seconds"] < 7400, oldest
    assert oldest["oldest_locked_at"].endswith("Z")


def test_workers_older_than_keeps_only_the_old_locks(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    lock(conn, migrated, add(conn, migrated, queue_name="a"), "pool-live", "5 seconds")
    lock(conn, migrated, add(conn, migrated, queue_name="b"), "pool-crashed", "2 hours")

    document = json.loads(ok(cli(dsn, migrated, "workers", "--older-than", "1h", "--json")).stdout)
    assert [w["worker_id"] for w in document["workers"]] == ["pool-crashed"]
    none = ok(cli(dsn, migrated, "workers", "--older-than", "2h30m"))
    assert (none.stdout, none.stderr) == ("(no worker holds a lock older than 2h30m)\n", "")


def test_no_locked_workers(dsn: str, migrated: str, conn: psycopg.Connection[Any]) -> None:
    add(conn, migrated)
    done = ok(cli(dsn, migrated, "workers"))
    assert (done.stdout, done.stderr) == ("(no locked workers)\n", "")
    assert json.loads(ok(cli(dsn, migrated, "workers", "--json")).stdout)["workers"] == []


def test_workers_refuses_a_duration_without_a_unit(dsn: str, migrated: str) -> None:
    line = assert_one_line_error(
        cli(dsn, migrated, "workers", "--older-than", "60"), ExitCode.USAGE
    )
    assert "--older-than" in line and "unit" in line, line


# -- cleanup --older-than ----------------------------------------------------------------------


def failed_job(conn: psycopg.Connection[Any], schema: str, updated: str) -> int:
    """Set-up: a permanently failed job last active (updated, due) ``updated`` ago; its id."""
    job_id = add(conn, schema, max_attempts=1)
    execute(
        conn,
        schema,
        "update {s}._private_jobs set attempts = 1, last_error = 'boom',"
        " updated_at = now() - %s::interval, run_at = now() - %s::interval where id = %s",
        updated,
        updated,
        job_id,
    )
    return job_id


def test_cleanup_older_than_deletes_only_the_old_failures(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    failed_job(conn, migrated, "8 days")
    recent = failed_job(conn, migrated, "6 days")
    alive = add(conn, migrated)

    done = ok(
        cli(
            dsn,
            migrated,
            "cleanup",
            "--task",
            "DELETE_PERMANENTLY_FAILED_JOBS",
            "--older-than",
            "7d",
        )
    )

    assert done.stdout == (
        "DELETE_PERMANENTLY_FAILED_JOBS: deleted 1 permanently failed jobs"
        " last active more than 7d ago\n"
    )
    assert [row["id"] for row in jobs(conn, migrated)] == [recent, alive]
    again = cli(
        dsn,
        migrated,
        "cleanup",
        "--task",
        "DELETE_PERMANENTLY_FAILED_JOBS",
        "--older-than",
        "5d",
        "--json",
    )
    assert json.loads(ok(again).stdout) == {"DELETE_PERMANENTLY_FAILED_JOBS": 1}
    assert [row["id"] for row in jobs(conn, migrated)] == [alive]


def test_cleanup_older_than_without_the_failed_jobs_task_is_refused(
    dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    old = failed_job(conn, migrated, "30 days")
    done = cli(dsn, migrated, "cleanup", "--task", "GC_JOB_QUEUES", "--older-than", "7d")
    line = assert_one_line_error(done, ExitCode.USAGE)
    assert "--task DELETE_PERMANENTLY_FAILED_JOBS" in line, line
    assert [row["id"] for row in jobs(conn, migrated)] == [old]


# -- Ctrl-C --------------------------------------------------------------------------------------


def test_ctrl_c_while_jobs_waits_for_the_database_exits_130_with_one_line(
    pg_dsn: str, migrated: str, conn: psycopg.Connection[Any]
) -> None:
    add(conn, migrated)
    with psycopg.connect(pg_dsn) as blocker:  # holds the jobs table: the read waits for it
        execute(blocker, migrated, "lock table {s}._private_jobs in access exclusive mode")
        process = subprocess.Popen(
            [sys.executable, "-m", "graphile_worker_utils", "jobs", "-c", pg_dsn, "-s", migrated],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            wait_until_blocked(conn, blocker)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        blocker.rollback()
    assert (process.returncode, stdout) == (ExitCode.INTERRUPTED, ""), stderr
    assert stderr == "graphile-worker-utils: error: interrupted\n"


def wait_until_blocked(conn: psycopg.Connection[Any], blocker: psycopg.Connection[Any]) -> None:
    """Wait (up to a minute) until a statement waits for ``blocker``'s lock."""
    for _ in range(600):
        waiting = conn.execute(
            "select count(*) from pg_stat_activity where %s = any(pg_blocking_pids(pid))",
            (blocker.info.backend_pid,),
        ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.1)
    raise AssertionError("the command never waited for the lock")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("jobs", "--task", "ok", "--task", ""), "--task: must not be empty"),
        (("jobs", "--locked-by", ""), "--locked-by: must not be empty"),
        (("jobs", "--queue", "q" * 200), "--queue: 200 characters"),
        (("show", "--key", ""), "--key: must not be empty"),
    ],
    ids=["empty task", "empty worker", "long queue", "empty key"],
)
def test_values_the_library_refuses_are_usage_errors_naming_the_option(
    dsn: str, migrated: str, args: tuple[str, ...], words: str
) -> None:
    line = assert_one_line_error(cli(dsn, migrated, *args), ExitCode.USAGE)
    assert words in line, line
