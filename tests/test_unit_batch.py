"""Preparing enqueues without a database: checks, hooks, keys, per-job modes, slicing,
encoding, and text the client encoding cannot carry; typed tasks as raw jobs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, ClassVar

import pytest

from graphile_worker_utils import (
    Continue,
    InvalidJobSpec,
    JobKeyMode,
    JobScheduleSkipped,
    JobSpec,
    RawJobSpec,
    Skip,
)
from graphile_worker_utils._batch import (
    Enqueue,
    check_batch_texts,
    check_texts,
    job_params,
    prepare_batch,
    spec_element,
    statement_runs,
)
from graphile_worker_utils._tasks import raw_jobs

PLAIN = Enqueue(hooks=(), json_dumps=None, trace=None, now=None)
NOON = dt.datetime(2026, 1, 2, 12, tzinfo=dt.timezone.utc)


def keyed(key: str, mode: JobKeyMode | None = None) -> RawJobSpec:
    return RawJobSpec("t", {"k": key}, JobSpec(job_key=key, job_key_mode=mode))


def test_a_batch_is_one_statement_with_its_documents() -> None:
    jobs = [RawJobSpec("a", {"n": 1}, JobSpec(queue_name="q")), RawJobSpec("b")]
    batch = prepare_batch(jobs, PLAIN)
    (statement,) = batch.statements
    assert batch.count == 2 and batch.keys == {}
    assert json.loads(statement.params["specs"]) == [
        {"identifier": "a", "queue_name": "q"},
        {"identifier": "b"},
    ]
    assert json.loads(statement.params["payloads"]) == [{"n": 1}, {}]
    assert statement.params["count"] == 2 and statement.params["preserve_run_at"] is False
    assert (statement.identifiers, statement.queue_names, statement.start) == ({"a", "b"}, {"q"}, 0)


def test_a_batch_is_sliced_at_the_limit_with_each_slice_knowing_its_start() -> None:
    batch = prepare_batch([RawJobSpec("t", {"i": i}) for i in range(5)], PLAIN, limit=2)
    assert [s.start for s in batch.statements] == [0, 2, 4]
    assert [s.params["count"] for s in batch.statements] == [2, 2, 1]


def test_keyed_jobs_that_differ_on_preserve_run_at_go_in_separate_runs() -> None:
    flags = [None, True, None, False, False, None, True]
    assert statement_runs(flags, 10) == [(0, 3, True), (3, 6, False), (6, 7, True)]
    assert statement_runs([None] * 5, 2) == [(0, 2, False), (2, 4, False), (4, 5, False)]
    batch = prepare_batch([keyed("a", JobKeyMode.PRESERVE_RUN_AT), keyed("b")], PLAIN)
    assert [s.params["preserve_run_at"] for s in batch.statements] == [True, False]
    assert batch.keys == {"a": 0, "b": 1}


def test_repeated_keys_and_unsafe_dedupe_are_refused_naming_the_job() -> None:
    with pytest.raises(
        InvalidJobSpec, match=r"jobs\[2\]\.job_key: 'a' is also the key of jobs\[0\]"
    ):
        prepare_batch([keyed("a"), keyed("b"), keyed("a")], PLAIN)
    with pytest.raises(InvalidJobSpec, match=r"jobs\[0\]\.job_key_mode: UNSAFE_DEDUPE"):
        prepare_batch([keyed("a", JobKeyMode.UNSAFE_DEDUPE)], PLAIN)
    with pytest.raises(InvalidJobSpec, match=r"jobs\[1\]: expected a RawJobSpec, got dict"):
        prepare_batch([keyed("a"), {"identifier": "x"}], PLAIN)


def test_hooks_trace_and_local_time_apply_to_every_job() -> None:
    def double(identifier: str, payload: Any, spec: JobSpec) -> Continue:
        return Continue({**payload, "n": payload["n"] * 2})

    enqueue = Enqueue(hooks=(double,), json_dumps=None, trace={"span_id": "s"}, now=NOON)
    batch = prepare_batch([RawJobSpec("t", {"n": 2}), RawJobSpec("t", {"n": 3})], enqueue)
    payloads = json.loads(batch.statements[0].params["payloads"])
    assert payloads == [{"n": 4, "_trace": {"span_id": "s"}}, {"n": 6, "_trace": {"span_id": "s"}}]
    assert json.loads(batch.statements[0].params["specs"])[0]["run_at"] == NOON.isoformat()


def test_a_skipping_hook_stops_the_batch() -> None:
    enqueue = Enqueue(hooks=(lambda i, p, s: Skip("no"),), json_dumps=None, trace=None, now=None)
    with pytest.raises(JobScheduleSkipped, match="no"):
        prepare_batch([RawJobSpec("t")], enqueue)


def test_a_spec_element_leaves_out_what_is_unset_and_keeps_its_own_run_at() -> None:
    assert spec_element(JobSpec(), None) == {}
    assert spec_element(JobSpec(), NOON) == {"run_at": NOON.isoformat()}
    later = NOON + dt.timedelta(hours=1)
    spec = JobSpec(run_at=later, priority=1, max_attempts=2, flags=["f"], job_key="k")
    assert spec_element(spec, NOON) == {
        "run_at": later.isoformat(),
        "priority": 1,
        "max_attempts": 2,
        "flags": ["f"],
        "job_key": "k",
    }


def test_job_params_check_and_encode_one_job() -> None:
    params = job_params("t", {"a": 1}, JobSpec(job_key_mode="preserve_run_at"), PLAIN)
    assert params["payload"] == '{"a":1}' and params["job_key_mode"] == "preserve_run_at"
    assert job_params("t", None, None, PLAIN)["payload"] is None
    with pytest.raises(InvalidJobSpec, match="spec: expected a JobSpec or None, got dict"):
        job_params("t", None, {}, PLAIN)
    with pytest.raises(InvalidJobSpec, match="identifier: must not be empty"):
        job_params("", None, None, PLAIN)


def test_text_latin1_cannot_carry_is_refused_naming_the_field() -> None:
    check_texts("latin-1", "LATIN1", [("job_key", "café"), ("ids", [1, 2])])
    with pytest.raises(InvalidJobSpec, match=r"flags\[1\]: '😀' cannot be sent .* is LATIN1"):
        check_texts("latin-1", "LATIN1", [("flags", ["ok", "😀"])])


def test_a_batch_names_the_job_latin1_cannot_carry_across_uneven_slices() -> None:
    jobs = [keyed("a", JobKeyMode.PRESERVE_RUN_AT), keyed("b"), keyed("c"), keyed("d")]
    jobs.append(RawJobSpec("t", {"x": "😀"}))
    batch = prepare_batch(jobs, PLAIN)
    assert [s.start for s in batch.statements] == [0, 1]
    with pytest.raises(InvalidJobSpec, match=r"jobs\[4\]\.payload: '😀'"):
        check_batch_texts("latin-1", "LATIN1", batch)
    queue = prepare_batch([RawJobSpec("t"), RawJobSpec("t", None, JobSpec(queue_name="😀"))], PLAIN)
    with pytest.raises(InvalidJobSpec, match=r"jobs\[1\]\.queue_name"):
        check_batch_texts("latin-1", "LATIN1", queue)


@dataclasses.dataclass
class Send:
    IDENTIFIER: ClassVar[str] = "send"
    to: str


def test_typed_tasks_become_raw_jobs_with_their_specs() -> None:
    spec = JobSpec(queue_name="q")
    jobs = raw_jobs([Send("a"), (Send("b"), spec)])
    assert [(j.identifier, j.payload, j.spec.queue_name) for j in jobs] == [
        ("send", {"to": "a"}, None),
        ("send", {"to": "b"}, "q"),
    ]
    with pytest.raises(InvalidJobSpec, match=r"jobs\[0\]: got the class Send, not an instance"):
        raw_jobs([Send])
    with pytest.raises(InvalidJobSpec, match=r"jobs\[0\]: expected a task or a \(task, spec\)"):
        raw_jobs([(Send("a"),)])


def test_the_specs_document_is_each_jobs_element_encoded_as_json_text() -> None:
    # Elements are encoded once per (identifier, spec) pair and joined: the text is what
    # encoding the list of element objects would give, byte for byte.
    shared = JobSpec(queue_name="q\u00e9", priority=3, flags=["a", "b"], run_at=NOON)
    jobs = [
        RawJobSpec("a", {"n": 1}, shared),
        RawJobSpec("b", {"n": 2}, shared),
        RawJobSpec("a", {"n": 3}, shared),
        RawJobSpec("a", {"n": 4}),
        RawJobSpec("c\u00e9", {"n": 5}, JobSpec(job_key="k", max_attempts=2)),
    ]
    (statement,) = prepare_batch(jobs, PLAIN).statements
    elements = [{"identifier": job.identifier, **spec_element(job.spec, None)} for job in jobs]
    assert statement.params["specs"] == json.dumps(
        elements, ensure_ascii=False, separators=(",", ":")
    )
    assert statement.identifiers == {"a", "b", "c\u00e9"}
    assert statement.queue_names == {"q\u00e9"}


def test_a_statement_forgets_its_documents_once_sent() -> None:
    (statement,) = prepare_batch([RawJobSpec("a", {"n": 1})], PLAIN).statements
    statement.forget_params()
    assert statement.params == {}
    assert (statement.identifiers, statement.start) == ({"a"}, 0)
