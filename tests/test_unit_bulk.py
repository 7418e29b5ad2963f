"""The pure part of bulk enqueues (graphile_worker_utils._bulk): no database."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from graphile_worker_utils import (
    ConfigurationError,
    InvalidJobSpec,
    JobKeyMode,
    JobSpec,
    RawJobSpec,
)
from graphile_worker_utils._batch import Enqueue
from graphile_worker_utils._bulk import (
    MAX_CHUNK_SIZE,
    check_chunk_size,
    chunks,
    prepare_chunk,
)
from graphile_worker_utils._bulk_enqueue import (
    add_jobs_fingerprint,
    fingerprints,
    our_add_jobs_body,
)

PLAIN = Enqueue(hooks=(), json_dumps=None, trace=None, now=None)


def test_chunk_sizes_from_1_to_the_maximum_are_taken() -> None:
    assert check_chunk_size(1) == 1
    assert check_chunk_size(MAX_CHUNK_SIZE) == MAX_CHUNK_SIZE
    with pytest.raises(ConfigurationError, match=r"chunk_size: 0 is outside .* 1\.\.100000"):
        check_chunk_size(0)


def test_chunks_are_read_only_when_asked_for() -> None:
    read: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(7):
            read.append(n)
            yield n

    pending = chunks(numbers(), 3)
    assert read == []
    assert next(pending) == [0, 1, 2]
    assert read == [0, 1, 2]
    assert list(pending) == [[3, 4, 5], [6]]


def test_keyless_jobs_become_columns_of_distinct_kinds_with_one_kind_per_job() -> None:
    shared = JobSpec(queue_name="q", flags=["b", "a"], priority=2)
    at = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    jobs = [
        RawJobSpec("a", {"n": 0}, shared),
        RawJobSpec("b", None, JobSpec(run_at=at, max_attempts=3)),
        RawJobSpec("a", [1], shared),
    ]
    chunk = prepare_chunk(jobs, 0, PLAIN, {}, fast=True)
    assert chunk.keyed == [] and chunk.count == 3
    assert chunk.keyless is not None
    params = chunk.keyless.params
    assert params["kind_identifiers"] == ["a", "b"]
    assert params["kind_queue_names"] == ["q", None]
    assert params["kind_run_at"] == [None, at]
    assert params["kind_max_attempts"] == [None, 3]
    assert params["kind_priorities"] == [2, None]
    assert params["kind_flags"] == ['["b","a"]', None]
    assert params["job_kinds"] == "{1,2,1}"
    assert params["payloads"] == '[{"n":0},{},[1]]'
    assert params["count"] == 3
    assert chunk.keyless.names == {"identifiers": ["a", "b"], "queue_names": ["q"], "count": 3}


def test_keyed_jobs_become_add_jobs_statements_per_preserve_run_at_run() -> None:
    preserve = JobSpec(job_key="k2", job_key_mode=JobKeyMode.PRESERVE_RUN_AT)
    jobs = [
        RawJobSpec("a", None, JobSpec(job_key="k0")),
        RawJobSpec("a", None),
        RawJobSpec("a", None, preserve),
    ]
    chunk = prepare_chunk(jobs, 10, PLAIN, {}, fast=True)
    assert chunk.keyless is not None and chunk.keyless.positions == [11]
    assert [statement.positions for statement in chunk.keyed] == [[10], [12]]
    assert [statement.params["preserve_run_at"] for statement in chunk.keyed] == [False, True]
    assert all(statement.params["keyed"] for statement in chunk.keyed)


def test_without_the_fast_path_every_job_goes_to_add_jobs() -> None:
    chunk = prepare_chunk([RawJobSpec("a"), RawJobSpec("b")], 0, PLAIN, {}, fast=False)
    assert chunk.keyless is None
    (statement,) = chunk.keyed
    assert statement.params["count"] == 2 and not statement.params["keyed"]


def test_errors_name_the_position_in_the_whole_input() -> None:
    keys: dict[str, int] = {}
    prepare_chunk([RawJobSpec("a", None, JobSpec(job_key="k"))], 0, PLAIN, keys, fast=True)
    bad: list[Any] = [RawJobSpec("a"), RawJobSpec("a", float("nan"))]
    with pytest.raises(InvalidJobSpec, match=r"jobs\[6\]\.payload"):
        prepare_chunk(bad, 5, PLAIN, keys, fast=True)
    again = [RawJobSpec("a", None, JobSpec(job_key="k"))]
    with pytest.raises(InvalidJobSpec, match=r"jobs\[9\]\.job_key: 'k' is also .* jobs\[0\]"):
        prepare_chunk(again, 9, PLAIN, keys, fast=True)


def test_our_fingerprint_is_the_sha256_of_our_body_with_the_schema_taken_out() -> None:
    body = our_add_jobs_body('odd "name')
    assert '"odd ""name"._private_jobs' in body
    normalised = body.replace('"odd ""name"', "{schema}")
    expected = hashlib.sha256(normalised.encode()).hexdigest()
    assert add_jobs_fingerprint(body, 'odd "name') == expected
    assert expected in fingerprints("graphile_worker")
