"""What ``jobs``, ``show`` and ``workers`` print, and how their arguments parse, without a
database: hand-made jobs and workers through the rendering functions, argv through the parser."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from graphile_worker_utils import Job, JobState, LockedWorker
from graphile_worker_utils.cli import CliError, ExitCode, parse_arguments
from graphile_worker_utils.cli._job_views import (
    STATE_NAMES,
    cell,
    job_page,
    jobs_document,
    jobs_table,
    next_after,
    short_error,
    workers_document,
    workers_table,
)
from graphile_worker_utils.cli._options import _duration

T0 = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)


def make_job(job_id: int = 1, **fields: Any) -> Job:
    """A job as the library would return it, with ``fields`` changed."""
    values: dict[str, Any] = {
        "id": job_id,
        "task_identifier": "send_email",
        "queue_name": None,
        "payload_json": '{"to": "ada@example.com", "n": [1, 2]}',
        "priority": 0,
        "run_at": T0,
        "attempts": 0,
        "max_attempts": 25,
        "last_error": None,
        "created_at": T0,
        "updated_at": T0,
        "key": None,
        "locked_at": None,
        "locked_by": None,
        "revision": 0,
        "flags": None,
        "task_id": 1,
        "job_queue_id": None,
        "state": JobState.READY,
    }
    values.update(fields)
    return Job(**values)


def usage_error(*argv: str) -> str:
    """The one-line usage error of ``argv``."""
    with pytest.raises(CliError) as raised:
        parse_arguments(list(argv))
    assert raised.value.code == ExitCode.USAGE
    assert "\n" not in raised.value.message
    return raised.value.message


# -- states and arguments ----------------------------------------------------------------------


def test_the_state_choices_are_the_libraries_state_values() -> None:
    assert tuple(state.value for state in JobState) == STATE_NAMES


def test_state_is_given_in_any_case_and_with_dashes() -> None:
    args = parse_arguments(["jobs", "--state", "Permanently-Failed", "--state", "ready"])
    assert args.states == ["permanently_failed", "ready"]


def test_an_unknown_state_is_refused_with_the_valid_ones() -> None:
    message = usage_error("jobs", "--state", "failed")
    assert "--state" in message and "'failed'" in message
    for name in STATE_NAMES:
        assert name in message


@pytest.mark.parametrize("limit", ["0", "10001", "-5", "lots"])
def test_a_limit_out_of_range_is_refused(limit: str) -> None:
    message = usage_error("jobs", "--limit", limit)
    assert "--limit" in message and ("1..10000" in message or "not an integer" in message)


def test_jobs_defaults_to_a_page_of_100_from_the_start() -> None:
    args = parse_arguments(["jobs"])
    assert (args.limit, args.after, args.states, args.json) == (100, None, None, False)


def test_show_takes_an_id_or_a_key_but_not_both_nor_neither() -> None:
    assert parse_arguments(["show", "42"]).job_id == 42
    assert parse_arguments(["show", "--key", "welcome:42"]).job_key == "welcome:42"
    assert "JOB_ID" in usage_error("show")
    assert "not allowed" in usage_error("show", "42", "--key", "k")
    assert "job id" in usage_error("show", "forty-two")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("7D", 604800),
    ],
)
def test_durations_in_units_and_combinations(text: str, seconds: int) -> None:
    assert _duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["7", "", "0s", "0d0h", "30m1h", "1h1h", "-1h", "1.5h", "1 h", "a week", "36501d"]
)
def test_garbage_durations_are_refused_before_connecting(text: str) -> None:
    for argv in (
        ("workers", f"--older-than={text}"),
        ("cleanup", "--task", "DELETE_PERMANENTLY_FAILED_JOBS", f"--older-than={text}"),
    ):
        message = usage_error(*argv)
        assert "--older-than" in message and repr(text) in message, message


# -- jobs ----------------------------------------------------------------------------------------


def test_the_jobs_table_has_a_header_and_a_row_per_job() -> None:
    jobs = [
        make_job(
            7,
            queue_name="mail",
            attempts=3,
            max_attempts=5,
            key="welcome:7",
            last_error="Error: SMTP refused\n    at send (mail.js:10)",
            state=JobState.RETRYING,
        ),
        make_job(12345, state=JobState.SCHEDULED),
    ]
    lines = jobs_table(jobs)
    assert lines[0].split() == [
        "ID",
        "TASK",
        "QUEUE",
        "STATE",
        "ATTEMPTS",
        "RUN",
        "AT",
        "KEY",
        "LAST",
        "ERROR",
    ]
    assert lines[1].split() == [
        "7",
        "send_email",
        "mail",
        "retrying",
        "3/5",
        "2030-01-02T03:04:05Z",
        "welcome:7",
        "Error:",
        "SMTP",
        "refused",
        "...",
    ]
    assert lines[2].split() == [
        "12345",
        "send_email",
        "-",
        "scheduled",
        "0/25",
        "2030-01-02T03:04:05Z",
        "-",
        "-",
    ]
    assert lines[1].index("send_email") == lines[2].index("send_email") == lines[0].index("TASK")
    assert lines[1].startswith("    7  ")  # ids right-aligned


def test_an_empty_page_says_so() -> None:
    assert jobs_table([]) == ["(no jobs)"]


def test_a_long_error_is_cut_and_a_multi_line_one_keeps_its_first_line() -> None:
    assert short_error("x" * 100) == "x" * 57 + "..."
    assert short_error("\n\n  boom  \nstack") == "boom ..."
    assert short_error("boom") == "boom"
    assert short_error(None) == "-"


def test_control_characters_never_reach_the_terminal() -> None:
    sneaky = "evil\x1b[2J\rtask\tname\nnext"
    assert cell(sneaky) == "evil\\x1b[2J\\rtask\\tname\\nnext"
    (row,) = jobs_table([make_job(task_identifier=sneaky, last_error="\x1b]0;pwned\x07")])[1:]
    assert "\x1b" not in row and "\r" not in row and "\x07" not in row
    page = "\n".join(job_page(make_job(key=sneaky, last_error="one\x1b[31m\n\ttwo")))
    assert "\x1b" not in page and "\r" not in page
    assert "\ttwo" in page  # a multi-line error keeps its lines and tabs


def test_a_full_page_says_where_the_next_one_starts() -> None:
    jobs = [make_job(i) for i in (3, 5, 9)]
    assert next_after(jobs, 3) == 9
    assert next_after(jobs, 4) is None
    assert next_after([], 1) is None


def test_the_jobs_document_has_every_field_but_the_payload() -> None:
    # Listed without payloads: payload_json is None and reading the payload would raise.
    job = make_job(
        4,
        payload_json=None,
        locked_at=T0,
        locked_by="pool-1",
        state=JobState.RUNNING,
        flags=["smtp"],
    )
    document = jobs_document([job], 1)
    assert document["next_after"] == 4
    (listed,) = document["jobs"]
    assert listed == {
        "id": 4,
        "task_identifier": "send_email",
        "queue_name": None,
        "state": "running",
        "priority": 0,
        "run_at": "2030-01-02T03:04:05.678901Z",
        "attempts": 0,
        "max_attempts": 25,
        "last_error": None,
        "created_at": "2030-01-02T03:04:05.678901Z",
        "updated_at": "2030-01-02T03:04:05.678901Z",
        "key": None,
        "locked_at": "2030-01-02T03:04:05.678901Z",
        "locked_by": "pool-1",
        "revision": 0,
        "flags": ["smtp"],
    }
    json.dumps(document)  # JSON-ready as it is


def test_a_state_the_library_does_not_know_is_null() -> None:
    (listed,) = jobs_document([make_job(state=None)], 100)["jobs"]
    assert listed["state"] is None


# -- show ----------------------------------------------------------------------------------------


def test_the_page_of_a_job_has_every_field_the_payload_and_the_whole_error() -> None:
    error = "Error: boom\n    at run (task.js:1)\n    at next (task.js:2)"
    job = make_job(
        42,
        key="k",
        flags=["a", "b"],
        attempts=25,
        last_error=error,
        state=JobState.PERMANENTLY_FAILED,
    )
    lines = job_page(job)
    assert lines[0] == "job 42"
    fields = dict(line.split(None, 1) for line in lines[1 : lines.index("payload:")])
    assert fields == {
        "task_identifier": "send_email",
        "queue_name": "-",
        "state": "permanently_failed",
        "priority": "0",
        "run_at": "2030-01-02T03:04:05.678901Z",
        "attempts": "25",
        "max_attempts": "25",
        "created_at": "2030-01-02T03:04:05.678901Z",
        "updated_at": "2030-01-02T03:04:05.678901Z",
        "key": "k",
        "locked_at": "-",
        "locked_by": "-",
        "revision": "0",
        "flags": "a, b",
    }
    payload = lines[lines.index("payload:") + 1 : lines.index("last_error:")]
    assert json.loads("\n".join(payload)) == {"to": "ada@example.com", "n": [1, 2]}
    assert payload[1] == '    "to": "ada@example.com",'  # pretty-printed, indented
    assert lines[lines.index("last_error:") + 1 :] == ["  " + line for line in error.split("\n")]


def test_the_page_of_a_job_without_error_says_so_on_one_line() -> None:
    assert job_page(make_job())[-1] == "last_error: -"


# -- workers -------------------------------------------------------------------------------------


def test_workers_table_and_document_give_lock_ages_at_the_given_time() -> None:
    workers = [
        LockedWorker(
            worker_id="pool-old",
            job_count=3,
            queue_count=1,
            oldest_locked_at=T0 - dt.timedelta(hours=5, minutes=2),
        ),
        LockedWorker(
            worker_id="pool-new",
            job_count=1,
            queue_count=0,
            oldest_locked_at=T0 - dt.timedelta(seconds=12),
        ),
    ]
    lines = workers_table(workers, T0)
    assert lines[0].split() == ["WORKER", "JOBS", "QUEUES", "OLDEST", "LOCK", "LOCK", "AGE"]
    assert lines[1].split() == ["pool-old", "3", "1", "2030-01-01T22:02:05Z", "5h02m"]
    assert lines[2].split() == ["pool-new", "1", "0", "2030-01-02T03:03:53Z", "12s"]
    assert workers_document(workers, T0) == {
        "generated_at": "2030-01-02T03:04:05.678901Z",
        "workers": [
            {
                "worker_id": "pool-old",
                "job_count": 3,
                "queue_count": 1,
                "oldest_locked_at": "2030-01-01T22:02:05.678901Z",
                "lock_age_seconds": 18120.0,
            },
            {
                "worker_id": "pool-new",
                "job_count": 1,
                "queue_count": 0,
                "oldest_locked_at": "2030-01-02T03:03:53.678901Z",
                "lock_age_seconds": 12.0,
            },
        ],
    }


def test_no_locked_workers_says_so() -> None:
    assert workers_table([], T0) == ["(no locked workers)"]
    assert workers_document([], T0)["workers"] == []
