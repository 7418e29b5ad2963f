"""The read side's argument checks and row conversion, without a database."""

from __future__ import annotations

import datetime as dt
import pickle

import pytest

from graphile_worker_utils import (
    GraphileWorkerError,
    InvalidJobSpec,
    Job,
    JobState,
    LockedWorker,
    PayloadNotLoadedError,
)
from graphile_worker_utils._cursors import instant
from graphile_worker_utils._reads import (
    MAX_PAGE,
    job_id_param,
    job_key_param,
    list_query,
    locked_workers_from_rows,
    older_than_param,
    state_values,
)
from graphile_worker_utils._templates import catalog

EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
DEFAULTS = {
    "task_identifiers": None,
    "queue_names": None,
    "states": None,
    "locked_by": None,
    "after_id": None,
    "limit": 100,
    "include_payload": False,
}


def test_states_are_kept_once_in_job_state_order_members_or_values() -> None:
    assert state_values(["running", JobState.READY, "ready"]) == ("ready", "running")
    assert state_values(iter([JobState.PERMANENTLY_FAILED])) == ("permanently_failed",)
    assert state_values([]) == ()
    assert state_values(None) is None


def test_every_state_at_once_is_no_filter() -> None:
    assert state_values([*JobState, "ready"]) is None


@pytest.mark.parametrize(
    ("states", "message"),
    [
        ("ready", r"^states: expected an iterable of JobState, got str"),
        (["ready", "done"], r"^states\[1\]: 'done' is not one of 'ready', 'scheduled'"),
        ([None], r"^states\[0\]: None is not one of"),
        (7, r"^states: expected an iterable of JobState, got int"),
    ],
)
def test_unknown_states_are_refused_by_position(states: object, message: str) -> None:
    with pytest.raises(InvalidJobSpec, match=message):
        state_values(states)


def test_the_default_query_has_no_filter_and_leaves_payloads_out() -> None:
    query = list_query(**DEFAULTS)
    assert query.params == {
        "after_id": 0,
        "limit": 100,
        "task_identifiers": None,
        "queue_names": None,
        "locked_by": None,
    }
    assert query.clauses == {
        "tasks": False,
        "queues": False,
        "locked_by": False,
        "states": None,
        "without_payload": True,
    }


def test_filters_become_parameters_and_clauses() -> None:
    query = list_query(
        **{
            **DEFAULTS,
            "task_identifiers": ("a", "b"),
            "queue_names": [],
            "states": ["retrying"],
            "locked_by": "pool-1",
            "after_id": 41,
            "limit": MAX_PAGE,
            "include_payload": True,
        }
    )
    assert query.params["task_identifiers"] == ["a", "b"] and query.params["queue_names"] == []
    assert (query.params["after_id"], query.params["limit"]) == (41, 10_000)
    assert query.clauses["tasks"] and query.clauses["queues"] and query.clauses["locked_by"]
    assert query.clauses["states"] == ("retrying",)
    assert query.clauses["without_payload"] is False


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit": 0}, r"^limit: 0 is outside the allowed range 1\.\.10000"),
        ({"limit": None}, r"^limit: expected an int, got NoneType"),
        ({"after_id": -1}, r"^after_id: -1 is outside"),
        ({"after_id": 2**63}, r"^after_id: .* is outside"),
        ({"after_id": "7"}, r"^after_id: expected an int, got str"),
        ({"task_identifiers": ["t" * 129]}, r"^task_identifiers\[0\]: 129 characters"),
        ({"queue_names": "q"}, r"^queue_names: expected an iterable of str, got str"),
        ({"queue_names": ["a\x00"]}, r"^queue_names\[0\]: must not contain NUL"),
        ({"locked_by": 5}, r"^locked_by: expected a str, got int"),
        ({"include_payload": None}, r"^include_payload: expected a bool, got NoneType"),
    ],
)
def test_bad_list_arguments_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidJobSpec, match=message):
        list_query(**{**DEFAULTS, **changes})


def test_lookups_and_durations_are_checked() -> None:
    assert job_id_param(5) == {"job_id": 5}
    assert job_key_param("k") == {"job_key": "k"}
    assert older_than_param(None) == {"older_than": None}
    assert older_than_param(dt.timedelta(0)) == {"older_than": dt.timedelta(0)}
    with pytest.raises(InvalidJobSpec, match=r"^job_id: expected an int, got bool"):
        job_id_param(True)
    with pytest.raises(InvalidJobSpec, match=r"^job_key: must not be empty"):
        job_key_param("")
    with pytest.raises(InvalidJobSpec, match=r"^older_than: must be a duration >= 0, got -1 day"):
        older_than_param(dt.timedelta(seconds=-1))
    with pytest.raises(InvalidJobSpec, match=r"^older_than: expected a datetime\.timedelta"):
        older_than_param(3600)


def test_locked_worker_rows_become_values() -> None:
    (worker,) = locked_workers_from_rows([("pool-1", 2, 0, 86_400_000_000)])
    assert worker == LockedWorker(
        worker_id="pool-1", job_count=2, queue_count=0, oldest_locked_at=instant(86_400_000_000)
    )
    assert worker.oldest_locked_at == dt.datetime(2000, 1, 2, tzinfo=dt.timezone.utc)


def test_payload_not_loaded_is_a_library_error() -> None:
    assert issubclass(PayloadNotLoadedError, GraphileWorkerError)


@pytest.mark.parametrize("state", list(JobState))
def test_each_state_filter_renders_its_own_predicate(state: JobState) -> None:
    text = catalog.render("list_jobs", "s", states=(state.value,)).decode()
    where = text.split("where job.id > %(after_id)s::bigint")[1]
    assert "and (false" in where
    assert ("job.locked_at > now() - interval '4 hours'" in where) is (state is JobState.RUNNING)
    unfiltered = catalog.render("list_jobs", "s", states=None).decode()
    assert "and (false" not in unfiltered


def test_the_payload_is_left_out_only_when_asked() -> None:
    without = catalog.render("list_jobs", "s", without_payload=True).decode()
    assert "null::text as payload" in without and "job.payload::text" not in without
    assert "job.payload::text as payload" in catalog.render("get_job", "s").decode()


def test_a_job_pickled_before_it_had_a_state_loads_with_none() -> None:
    job = Job(
        1, "t", None, "{}", 0, EPOCH, 0, 25, None, EPOCH, EPOCH, None, None, None, 0, None, 1, None
    )
    state = job.__getstate__()
    del state["state"]  # as graphile-worker-utils before the read side pickled it
    old = Job.__new__(Job)
    old.__setstate__(state)
    assert old == job and old.state is None and old.payload == {}
    assert pickle.loads(pickle.dumps(old)) == old
    with pytest.raises(KeyError):
        Job.__new__(Job).__setstate__({"id": 1})  # a field without a default stays required
