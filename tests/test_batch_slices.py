"""Batches larger than one statement's slice: still one transaction, all or nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

import graphile_worker_utils._client as client_module
from graphile_worker_utils import DatabaseError, JobSpec, RawJobSpec, WorkerUtils

Conn = psycopg.Connection[Any]


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small slices make a 25-job batch take four statements (for ``utils`` too)."""
    monkeypatch.setattr(client_module, "BATCH_SLICE", 7)


def stored(conn: Conn, schema: str) -> list[tuple[Any, ...]]:
    query = sql.SQL("select id, task_identifier, queue_name from {}.jobs order by id").format(
        sql.Identifier(schema)
    )
    return conn.execute(query).fetchall()


def test_a_batch_over_several_slices_returns_every_job_correctly_named(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    # Identifiers and queues first seen in later slices, several per slice.
    specs = [
        RawJobSpec(f"task_{i % 5}", {"i": i}, JobSpec(queue_name=f"q{i % 3}" if i % 2 else None))
        for i in range(25)
    ]
    jobs = utils.add_raw_jobs(specs)
    assert len(jobs) == 25
    assert sorted(job.payload["i"] for job in jobs) == list(range(25))
    assert sorted((j.id, j.task_identifier, j.queue_name) for j in jobs) == stored(conn, schema)
    for job in jobs:
        i = job.payload["i"]
        assert (job.task_identifier, job.queue_name) == (
            f"task_{i % 5}",
            f"q{i % 3}" if i % 2 else None,
        ), job


def test_a_refused_job_in_the_last_slice_leaves_nothing_of_the_batch(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    # Only the database knows this job is bad: a constraint added for the test.
    conn.execute(
        sql.SQL(
            "alter table {}._private_jobs add constraint no_poison"
            " check (payload::text <> '{{\"poison\":true}}')"
        ).format(sql.Identifier(schema))
    )
    specs = [RawJobSpec("task", {"i": i}) for i in range(24)]
    specs.append(RawJobSpec("task", {"poison": True}))
    with pytest.raises(DatabaseError, match="no_poison"):
        utils.add_raw_jobs(specs)
    assert stored(conn, schema) == []


def test_slices_join_the_callers_transaction(
    pg_dsn: str, schema: str, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "BATCH_SLICE", 7)
    WorkerUtils(conn, schema=schema).migrate()
    with psycopg.connect(pg_dsn) as caller:
        caller.execute("select 1")
        jobs = WorkerUtils(caller, schema=schema).add_raw_jobs(
            [RawJobSpec("task", {"i": i}) for i in range(20)]
        )
        assert len(jobs) == 20
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert stored(conn, schema) == []  # not committed: invisible to others
        caller.rollback()
    assert stored(conn, schema) == []
