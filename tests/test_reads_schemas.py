"""The read side on schemas at revisions 16..19, as real older graphile-worker releases leave
them (0.16.6: 18, 0.17.3: 19; 16 and 17 rebuilt from 0.16.6's 18, as test_migrate.py does),
used as they are: nothing is migrated. (The Rust crate's schemas: the operations matrix of
test_connection_settings.py, run by test_rust_schemas.py.)"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import CleanupTask, JobSpec, JobState, SchemaState, WorkerUtils
from tests._node import GraphileWorker
from tests._server import PgServer

Conn = psycopg.Connection[Any]
FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
# revision -> the release that installs it (or the one whose schema is rolled back to it)
RELEASES = {16: "0.16.6", 17: "0.16.6", 18: "0.16.6", 19: "0.17.3"}


def older_schema(
    conn: Conn, graphile_worker: GraphileWorker, node_dsn: str, schema: str, revision: int
) -> None:
    graphile_worker.migrate(RELEASES[revision], node_dsn, schema)
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL("delete from {}.migrations where id > %s").format(ident), [revision])
    if revision < 17:
        conn.execute(sql.SQL("drop view {}.jobs").format(ident))


def execute(conn: Conn, schema: str, statement: str, *params: Any) -> None:
    conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)), params)


@pytest.mark.parametrize("revision", list(RELEASES))
def test_reads_work_on_an_older_schema_as_it_is(
    conn: Conn,
    schema: str,
    pg_server: PgServer,
    graphile_worker: GraphileWorker,
    revision: int,
) -> None:
    older_schema(conn, graphile_worker, pg_server.node_dsn, schema, revision)
    utils = WorkerUtils(conn, schema=schema)
    status = utils.schema_status()
    assert (status.state, status.revision) == (SchemaState.BEHIND, revision)

    ready = utils.add_raw_job("t", {"n": 1}, JobSpec(queue_name="q", job_key="k"))
    later = utils.add_raw_job("t", {"n": 2}, JobSpec(run_at=FUTURE))
    running, failed, stale = (utils.add_raw_job("u", {"n": n}) for n in (3, 4, 5))
    execute(
        conn,
        schema,
        "update {s}._private_jobs set locked_at = now(), locked_by = 'w' where id = %s",
        running.id,
    )
    utils.permanently_fail_jobs([failed.id], "old")
    execute(
        conn,
        schema,
        "update {s}._private_jobs set locked_at = now() - interval '5 hours',"
        " locked_by = 'gone', updated_at = now() - interval '9 days' where id = %s",
        stale.id,
    )
    execute(
        conn,
        schema,
        "update {s}._private_jobs set updated_at = now() - interval '9 days' where id = %s",
        failed.id,
    )

    assert utils.get_job(ready.id) == ready and utils.get_job_by_key("k") == ready
    states = {job.id: job.state for job in utils.list_jobs()}
    assert states == {
        ready.id: JobState.READY,
        later.id: JobState.SCHEDULED,
        running.id: JobState.RUNNING,
        failed.id: JobState.PERMANENTLY_FAILED,
        stale.id: JobState.READY,
    }
    assert [job.id for job in utils.list_jobs(states=["ready"], task_identifiers=["u"])] == [
        stale.id
    ]
    assert [job.id for job in utils.list_jobs(queue_names=["q"], include_payload=True)] == [
        ready.id
    ]
    assert [(w.worker_id, w.job_count) for w in utils.locked_workers()] == [
        ("gone", 1),
        ("w", 1),
    ]
    assert utils.status().totals.ready == 2
    task = CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS
    assert utils.cleanup([task], older_than=dt.timedelta(days=7)) == {task: 1}
    assert utils.get_job(failed.id) is None
    # Nothing migrated the schema behind the caller's back.
    assert utils.schema_status().revision == revision
