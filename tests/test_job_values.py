"""Job as a value: pickle, copy and deepcopy keep it whole (payload included, read or not),
equality follows the columns, and no job is hashable, with or without flags."""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from graphile_worker_utils import Job, JobSpec, WorkerUtils

UTC = dt.timezone.utc
T = dt.datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)

PAYLOADS = [
    pytest.param('{"to":"ada","n":[1,2,{"deep":true}]}', id="object"),
    pytest.param('[1,"two",null,{"three":3}]', id="array"),
    pytest.param('"just text"', id="string"),
    pytest.param("12.5", id="number"),
    pytest.param("{}", id="empty-object"),
    pytest.param("null", id="null"),
    pytest.param("true", id="boolean"),
]

COPIES: list[Any] = [
    pytest.param(copy.copy, id="copy"),
    pytest.param(copy.deepcopy, id="deepcopy"),
    *(
        pytest.param(
            lambda job, protocol=protocol: pickle.loads(pickle.dumps(job, protocol)),
            id=f"pickle-{protocol}",
        )
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    ),
]
READ_FIRST = pytest.mark.parametrize("read_first", [False, True], ids=["unread", "read"])


def make_job(payload_json: str = "{}", flags: list[str] | None = None, **changes: Any) -> Job:
    fields: dict[str, Any] = {
        "id": 7,
        "task_identifier": "send_email",
        "queue_name": "mail",
        "payload_json": payload_json,
        "priority": 0,
        "run_at": T,
        "attempts": 0,
        "max_attempts": 25,
        "last_error": None,
        "created_at": T,
        "updated_at": T,
        "key": "welcome:ada",
        "locked_at": None,
        "locked_by": None,
        "revision": 0,
        "flags": flags,
        "task_id": 3,
        "job_queue_id": 4,
    }
    fields.update(changes)
    return Job(**fields)


@pytest.mark.parametrize("duplicate", COPIES)
@pytest.mark.parametrize("payload_json", PAYLOADS)
@READ_FIRST
def test_a_copied_job_keeps_its_payload_and_equals_the_original(
    duplicate: Callable[[Job], Job], payload_json: str, read_first: bool
) -> None:
    job = make_job(payload_json, flags=["slow"])
    if read_first:
        assert job.payload == json.loads(payload_json)

    copied = duplicate(job)

    assert copied == job
    assert copied.payload == json.loads(payload_json)
    assert copied.payload_json == payload_json
    assert (copied.flags, copied.run_at) == (["slow"], T)
    assert job.payload == json.loads(payload_json)  # the original is unharmed


@pytest.mark.parametrize("duplicate", COPIES)
def test_a_copy_never_shares_the_decoded_payload_with_the_original(
    duplicate: Callable[[Job], Job],
) -> None:
    job = make_job('{"items":[1]}')
    job.payload["items"].append(2)  # a caller mutating what it read

    copied = duplicate(job)

    # The copy's payload is decoded again from the stored text, not the mutated cache.
    assert copied.payload == {"items": [1]}
    assert copied.payload is not job.payload


@READ_FIRST
def test_an_evolved_job_decodes_its_own_payload_json(read_first: bool) -> None:
    job = make_job('{"v":"old"}')
    if read_first:
        assert job.payload == {"v": "old"}

    evolved = attrs.evolve(job, payload_json='{"v":"new"}')
    relabelled = attrs.evolve(job, task_identifier="other")

    assert evolved.payload == {"v": "new"}
    assert relabelled.payload == {"v": "old"}
    assert relabelled == attrs.evolve(job, task_identifier="other")


def test_equality_follows_the_columns_whether_or_not_the_payload_was_read() -> None:
    read, unread = make_job('{"a":1}'), make_job('{"a":1}')
    assert read.payload == {"a": 1}

    assert read == unread
    assert make_job('{"a":1}') != make_job('{"a":2}')
    assert make_job(flags=["x"]) != make_job(flags=None)


@pytest.mark.parametrize("flags", [None, [], ["slow", "io"]], ids=["none", "empty", "some"])
def test_no_job_is_hashable_whatever_its_flags(flags: list[str] | None) -> None:
    job = make_job(flags=flags)

    with pytest.raises(TypeError, match="unhashable"):
        hash(job)
    with pytest.raises(TypeError):
        {job}  # noqa: B018
    assert Job.__hash__ is None


def test_a_job_from_the_database_survives_pickle_and_copies(utils: WorkerUtils) -> None:
    job = utils.add_raw_job(
        "send_email", {"to": "ada", "tags": ["a", "b"]}, JobSpec(flags=["slow"], job_key="k")
    )

    unread = [pickle.loads(pickle.dumps(job)), copy.copy(job), copy.deepcopy(job)]
    assert job.payload == {"to": "ada", "tags": ["a", "b"]}
    read = [pickle.loads(pickle.dumps(job)), copy.copy(job), copy.deepcopy(job)]

    for copied in unread + read:
        assert copied == job
        assert copied.payload == {"to": "ada", "tags": ["a", "b"]}
        assert (copied.flags, copied.key, copied.run_at) == (["slow"], "k", job.run_at)
