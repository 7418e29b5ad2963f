"""The Django admin's pure parts, without a database: request parameters checked before any
SQL, the query strings of its links, and how actions and ages are worded."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from graphile_worker_utils import JobState
from graphile_worker_utils.contrib.django import _actions, _pages, _params

UTC = dt.timezone.utc


def test_no_parameter_is_the_first_page_of_every_job() -> None:
    query = _params.job_query({})
    assert query == _params.JobQuery()
    assert query.list_arguments() == {
        "task_identifiers": None,
        "queue_names": None,
        "states": None,
        "after_id": None,
        "limit": 100,
    }
    assert query.params() == ""


def test_repeated_filters_are_kept_once_each_in_order_and_blanks_ignored() -> None:
    query = _params.job_query(
        {
            "state": ["ready", "", "running", "ready"],
            "task": ["b", " a ", "b"],
            "queue": [""],
            "after": ["41"],
            "limit": ["20"],
        }
    )
    assert query.states == (JobState.READY, JobState.RUNNING)
    assert query.tasks == ("b", "a")
    assert query.queues == ()
    assert (query.after_id, query.limit) == (41, 20)


def test_a_link_keeps_the_filters_and_changes_only_what_it_says() -> None:
    query = _params.job_query({"state": ["retrying"], "task": ["send email"], "after": ["7"]})
    assert query.params(after_id=99) == "?state=retrying&task=send+email&after=99"
    assert query.params(after_id=None, states=()) == "?task=send+email"
    assert _params.job_query({"q": ["k&1"], "limit": ["5"]}).params() == "?q=k%261&limit=5"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": ["done"]}, "state: 'done' is not a job state (one of ready, scheduled,"),
        ({"after": ["0"]}, "after: '0' is not a job id"),
        ({"after": ["1.5"]}, "after: '1.5' is not a job id"),
        ({"after": ["١٢"]}, "after: '١٢' is not a job id"),  # digits, but not ASCII ones
        ({"after": [str(2**63)]}, "after: '9223372036854775808' is not a job id"),
        ({"after": ["9" * 5000]}, "after: '" + "9" * 40 + "…' is not a job id"),
        ({"limit": ["9" * 5000]}, "limit: '" + "9" * 40 + "' is not a page size"),
        ({"limit": ["-3"]}, "limit: '-3' is not a page size (a whole number 1..500)"),
        ({"limit": ["1", "2"]}, "limit: given 2 times, expected once"),
        ({"task": ["t" * 129]}, "task: 129 characters, over the limit of 128"),
        ({"queue": ["q" * 129]}, "queue: 129 characters, over the limit of 128"),
        ({"q": ["a\x00b"]}, "q: must not contain NUL characters"),
    ],
)
def test_unusable_list_parameters_are_refused_naming_the_parameter(
    params: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(_params.BadParameter) as raised:
        _params.job_query(params)
    assert str(raised.value).startswith(message)


def test_a_search_is_an_id_only_when_it_is_one() -> None:
    assert _params.job_query({"q": [" 42 "]}).search_id == 42
    assert _params.job_query({"q": ["welcome-42"]}).search_id is None


def test_selected_ids_are_ints_each_once() -> None:
    assert _params.selected_ids({"job_id": ["3", "1", "3", ""]}) == [3, 1]
    with pytest.raises(_params.BadParameter, match="no job selected"):
        _params.selected_ids({"job_id": [""]})
    with pytest.raises(_params.BadParameter, match=r"'1;drop table x' is not a job id"):
        _params.selected_ids({"job_id": ["1;drop table x"]})


@pytest.mark.parametrize(
    ("params", "expected"),
    [({}, None), ({"reason": ["   "]}, None), ({"reason": [" gone "]}, "gone")],
)
def test_a_blank_reason_leaves_graphile_workers_default(
    params: dict[str, list[str]], expected: str | None
) -> None:
    assert _params.reason(params) == expected


def test_a_reason_over_the_limit_is_refused() -> None:
    with pytest.raises(_params.BadParameter, match="reason: 10001 characters"):
        _params.reason({"reason": ["x" * 10_001]})


def test_a_checkbox_is_ticked_only_with_a_true_value() -> None:
    assert _params.checked({"reset_attempts": ["on"]}, "reset_attempts")
    assert not _params.checked({"reset_attempts": ["off"]}, "reset_attempts")
    assert not _params.checked({}, "reset_attempts")


class _Job:
    def __init__(self, job_id: int) -> None:
        self.id = job_id


def _jobs(*ids: int) -> Any:
    return [_Job(job_id) for job_id in ids]


def test_a_summary_counts_what_was_done_and_names_what_was_skipped() -> None:
    done = _actions.summary("rescheduled", [4, 1, 2, 3], _jobs(1, 2, 4), "Run now")
    assert done == _actions.Outcome(
        "warning",
        "3 jobs rescheduled, 1 skipped: locked by a worker or gone (job 3)",
        changed=("4", "1", "2"),  # in the order asked, for the history
        history="Run now",
    )
    assert _actions.summary("completed", [5], _jobs(5)) == _actions.Outcome(
        "success", "1 job completed", ("5",)
    )
    many = _actions.summary("completed", list(range(1, 9)), [])
    assert many.text == (
        "0 jobs completed, 8 skipped: locked by a worker or gone (jobs 1, 2, 3, 4, 5, …)"
    )


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (dt.timedelta(seconds=5), "5 s ago"),
        (dt.timedelta(minutes=42, seconds=10), "42 min ago"),
        (dt.timedelta(hours=5, minutes=59), "5 h ago"),
        (dt.timedelta(days=3, hours=1), "3 d ago"),
        (-dt.timedelta(minutes=30), "in 30 min"),
    ],
)
def test_ages_use_the_largest_fitting_unit(delta: dt.timedelta, expected: str) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert _pages.age(now - delta, now) == expected


def test_a_short_error_is_its_first_line_cut_to_the_limit() -> None:
    assert _pages.short_error(None) == ""
    assert _pages.short_error("\n  Error: boom\n  at x") == "Error: boom"
    assert _pages.short_error("x" * 100, limit=10) == "x" * 9 + "…"
