"""WorkerUtils.status: the counts per state, task and queue, and the locked queues (what the
CLI's ``status`` shows, tested in test_cli.py); SchemaMissingError on a schema without
graphile-worker's tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql

from graphile_worker_utils import (
    DatabaseError,
    InvalidJobSpec,
    JobKeyMode,
    JobSpec,
    JobState,
    RawJobSpec,
    SchemaMissingError,
    WorkerUtils,
)

Conn = psycopg.Connection[Any]
PAST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)


def execute(conn: Conn, schema: str, statement: str, *params: Any) -> None:
    conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)), params)


def seed(utils: WorkerUtils, conn: Conn, schema: str) -> None:
    """Jobs in every state, in two queues and outside any; a locked queue with jobs and a
    locked one without (a lock left behind)."""
    mail = JobSpec(queue_name="mail")
    add = utils.add_raw_job
    add("send", {}, JobSpec(queue_name="mail", run_at=PAST))  # ready
    add("send", {}, JobSpec(queue_name="mail", run_at=FUTURE))  # scheduled
    running = add("send", {}, mail)
    retrying = add("send", {}, JobSpec(queue_name="mail", run_at=FUTURE))
    failed = add("report", {}, JobSpec(queue_name="mail"))
    add("report", {}, JobSpec(queue_name="reports"))
    add("other")  # outside any queue
    stale = add("send", {}, JobSpec(queue_name="stale"))
    execute(
        conn,
        schema,
        "update {s}._private_jobs set locked_at = now(), locked_by = 'w1' where id = %s",
        running.id,
    )
    execute(conn, schema, "update {s}._private_jobs set attempts = 1 where id = %s", retrying.id)
    execute(
        conn,
        schema,
        "update {s}._private_jobs set attempts = max_attempts where id = %s",
        failed.id,
    )
    utils.complete_jobs([stale.id])
    execute(
        conn,
        schema,
        "update {s}._private_job_queues set locked_at = now() - interval '1 hour',"
        " locked_by = 'w1' where queue_name in ('mail', 'stale')",
    )


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [("other", None), ("report", "mail"), ("report", "reports"), ("send", "mail")]),
        ({"task_identifiers": ["send"]}, [("send", "mail")]),
        ({"queue_names": ["mail", "stale"]}, [("report", "mail"), ("send", "mail")]),
        ({"task_identifiers": ["report"], "queue_names": ["reports"]}, [("report", "reports")]),
    ],
)
def test_filters_keep_only_the_named_tasks_and_queues(
    utils: WorkerUtils,
    conn: Conn,
    schema: str,
    filters: dict[str, Any],
    expected: list[tuple[str, str | None]],
) -> None:
    seed(utils, conn, schema)
    report = utils.status(**filters)
    assert [(group.task_identifier, group.queue_name) for group in report.groups] == expected


def test_the_report_counts_each_state(utils: WorkerUtils, conn: Conn, schema: str) -> None:
    seed(utils, conn, schema)
    report = utils.status()
    assert report.schema == schema and report.revision == 20
    groups = {(g.task_identifier, g.queue_name): g for g in report.groups}
    assert list(groups) == [
        ("other", None),
        ("report", "mail"),
        ("report", "reports"),
        ("send", "mail"),
    ]
    send = groups[("send", "mail")]
    assert [send.counts[state] for state in JobState] == [1, 1, 1, 1, 0]
    assert send.queue_locked_by == "w1"
    assert send.oldest_ready_age_seconds is not None and send.oldest_ready_age_seconds > 3600
    assert groups[("report", "mail")].counts.permanently_failed == 1
    assert report.totals.ready == 3 and report.totals.total == 7
    assert [(q.queue_name, q.has_jobs) for q in report.locked_queues] == [
        ("mail", True),
        ("stale", False),
    ]
    assert report.generated_at.tzinfo is dt.timezone.utc


def test_status_refuses_bad_filters_before_any_sql(utils: WorkerUtils) -> None:
    with pytest.raises(InvalidJobSpec, match=r"task_identifiers: expected an iterable of str"):
        utils.status(task_identifiers="send")
    with pytest.raises(InvalidJobSpec, match=r"queue_names\[1\]: must not be empty"):
        utils.status(queue_names=["a", ""])


def test_a_missing_schema_raises_schema_missing_error(conn: Conn, schema: str) -> None:
    utils = WorkerUtils(conn, schema=schema)
    with pytest.raises(SchemaMissingError, match="missing graphile-worker's tables") as status:
        utils.status()
    assert isinstance(status.value, DatabaseError)
    assert isinstance(status.value.__cause__, pg_errors.UndefinedTable)
    with pytest.raises(SchemaMissingError, match=r"run migrate\(\) first") as added:
        utils.add_raw_jobs([RawJobSpec("t")])
    assert isinstance(added.value.__cause__, pg_errors.InvalidSchemaName)
    for call in (lambda: utils.add_raw_job("t"), lambda: utils.complete_jobs([1])):
        with pytest.raises(SchemaMissingError):
            call()


def test_other_database_errors_stay_plain_database_errors(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    execute(
        conn,
        schema,
        "create function {s}.refuse() returns trigger language plpgsql as"
        " $$begin raise exception 'refused by a trigger'; end$$;"
        " create trigger refuse before insert on {s}._private_jobs"
        " for each row execute function {s}.refuse()",
    )
    with pytest.raises(DatabaseError, match="refused by a trigger") as info:
        utils.add_raw_job("t")
    assert type(info.value) is DatabaseError


def test_a_latin1_batch_names_the_job_it_cannot_carry_across_uneven_statements(
    pg_dsn: str, utils: WorkerUtils, schema: str
) -> None:
    # Keyed jobs that differ on PRESERVE_RUN_AT split the batch into statements of uneven
    # sizes; the job is named by its position in the whole batch.
    jobs = [
        RawJobSpec("t", {}, JobSpec(job_key="a", job_key_mode=JobKeyMode.PRESERVE_RUN_AT)),
        RawJobSpec("t", {}, JobSpec(job_key="b")),
        RawJobSpec("t", {"x": "\N{SNOWMAN}"}),
    ]
    with (
        psycopg.connect(pg_dsn, autocommit=True, client_encoding="LATIN1") as latin1,
        pytest.raises(InvalidJobSpec, match=r"^jobs\[2\]\.payload: '☃' cannot be sent"),
    ):
        utils.using(latin1).add_raw_jobs(jobs)
    assert utils.status().groups == ()
