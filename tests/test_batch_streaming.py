"""add_raw_jobs reads each statement's rows in chunks (libpq 17 or later) and forgets each
statement's JSON once sent, so that a large batch never holds its whole result or all its JSON
beside the jobs built from them (README "Performance"). The results are the same as reading
whole results, a failure while the jobs are built leaves the connection usable, and a caller's
pipeline is served the old way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from graphile_worker_utils import Job, JobSpec, RawJobSpec, WorkerUtils, _client, _enqueue, _rows
from tests._helpers import job_count

Connection = psycopg.Connection[Any]
RUN_AT = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
CHUNKED = psycopg.capabilities.has_stream_chunked()


def batch(tag: str, count: int = 25) -> list[RawJobSpec]:
    specs = [
        JobSpec(),
        JobSpec(queue_name="q1", priority=2, flags=["x"]),
        JobSpec(run_at=RUN_AT, max_attempts=3),
        JobSpec(queue_name=f"new_{tag}"),
    ]
    return [RawJobSpec(f"task_{i % 3}", {"tag": tag, "i": i}, specs[i % 4]) for i in range(count)]


def shape(job: Job, tag: str) -> tuple[Any, ...]:
    """Everything of a job but its id and timestamps, with the batch's tag taken out."""
    return (
        job.task_identifier,
        "new_" if job.queue_name == f"new_{tag}" else job.queue_name,
        {k: v for k, v in job.payload.items() if k != "tag"},
        job.priority,
        job.run_at == RUN_AT,
        job.attempts,
        job.max_attempts,
        job.key,
        job.flags,
        job.revision,
    )


@pytest.mark.skipif(not CHUNKED, reason="psycopg's libpq is older than 17: no chunked rows")
def test_chunked_rows_give_the_same_jobs_as_whole_results(
    utils: WorkerUtils, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several statements, several chunks each, tasks and queues the call itself creates.
    monkeypatch.setattr(_client, "BATCH_SLICE", 10)
    monkeypatch.setattr(_enqueue, "FETCH_SLICE", 4)
    monkeypatch.setattr(_enqueue, "_CHUNKS", False)
    whole = utils.add_raw_jobs(batch("a"))
    monkeypatch.setattr(_enqueue, "_CHUNKS", True)
    chunked = utils.add_raw_jobs(batch("b"))
    key = lambda job: job.payload["i"]  # noqa: E731
    assert [shape(job, "b") for job in sorted(chunked, key=key)] == [
        shape(job, "a") for job in sorted(whole, key=key)
    ]
    assert [job.payload for job in sorted(chunked, key=key)] == [
        {"tag": "b", "i": i} for i in range(25)
    ]


class Boom(Exception):
    pass


@pytest.mark.parametrize("slice_size", [10_000, 3], ids=["one_statement", "three_statements"])
def test_a_failure_while_jobs_are_built_leaves_the_callers_connection_usable(
    pg_dsn: str, migrated: str, monkeypatch: pytest.MonkeyPatch, slice_size: int
) -> None:
    monkeypatch.setattr(_client, "BATCH_SLICE", slice_size)
    monkeypatch.setattr(_enqueue, "FETCH_SLICE", 2)
    built = 0
    job_from_row = _rows.job_from_row

    def failing(*args: Any) -> Job:
        nonlocal built
        built += 1
        if built == 2:  # inside the first chunk of the first statement
            raise Boom
        return job_from_row(*args)

    monkeypatch.setattr(_rows, "job_from_row", failing)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("select 1")  # the caller's transaction is open
        utils = WorkerUtils(conn, schema=migrated)
        with pytest.raises(Boom) as caught:
            utils.add_raw_jobs([RawJobSpec("t", {"i": i}) for i in range(7)])
        # The result was read to its end or cancelled: the connection is not held, even
        # while the traceback (its frames, with the stream in them) is kept.
        assert caught.traceback
        assert conn.lock.acquire(blocking=False)
        conn.lock.release()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        monkeypatch.setattr(_rows, "job_from_row", job_from_row)
        assert len(utils.add_raw_jobs([RawJobSpec("t", {"i": i}) for i in range(4)])) == 4
        # Several statements run in a savepoint, which took the failed call's jobs with it.
        assert job_count(conn, migrated) == (4 if slice_size == 3 else 11)
        conn.rollback()


def test_a_batch_inside_the_callers_pipeline(conn: Connection, utils: WorkerUtils) -> None:
    with conn.pipeline():
        jobs = utils.add_raw_jobs(batch("p", 12))
        single = utils.add_raw_job("single", {"n": 1})
    assert sorted(job.payload["i"] for job in jobs) == list(range(12))
    assert single.payload == {"n": 1}
    assert job_count(conn, utils.schema) == 13
