"""The other direction: a schema that graphile-worker migrated and filled (0.18.0, revision 20;
0.16.6, revision 18), used by the library as it is — no migrate() — and still right for the
worker that made it.

The jobs come from graphile-worker's own WorkerUtils (``addJob``, and ``addJobs`` on 0.18) and
from its SQL ``add_job``; the library removes, completes, reschedules, fails, cleans them up and
enqueues beside them, and every Job it returns must describe the row correctly.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import (
    CleanupTask,
    Job,
    JobSpec,
    RawJobSpec,
    RescheduleOptions,
    SchemaState,
    WorkerUtils,
)
from tests._helpers import Database, unique_name
from tests._node import GraphileWorker
from tests._worker import Report, Workers, ran_job_ids

UTC = dt.timezone.utc
LATER = dt.datetime(2031, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)  # ms: JavaScript Dates carry ms
PACKAGES = {"0.18.0": "graphile-worker", "0.16.6": "graphile-worker-0.16"}
REVISIONS = {"0.18.0": 20, "0.16.6": 18}

# What graphile-worker's addJob adds (every job in the future: nothing here is run by accident).
NODE_JOBS: list[dict[str, Any]] = [
    {
        "identifier": "node_task",
        "payload": {"from": "node", "n": 1, "text": "ünïcödé 😀"},
        "spec": {
            "queueName": "node_queue",
            "jobKey": "node_key",
            "priority": 3,
            "maxAttempts": 7,
            "flags": ["f1", "f2"],
            "runAt": LATER.isoformat(),
        },
    },
    {"identifier": "node_task", "payload": {"n": 2}, "spec": {"runAt": LATER.isoformat()}},
    {
        "identifier": "other_task",
        "payload": [1, 2, 3],
        "spec": {"queueName": "node_queue", "runAt": LATER.isoformat()},
    },
]
# What 0.18's addJobs adds in one call.
NODE_BATCH: list[dict[str, Any]] = [
    {
        "identifier": "batch_task",
        "payload": {"n": 4},
        "queueName": "batch_queue",
        "runAt": LATER.isoformat(),
    },
    {"identifier": "other_task", "payload": {"n": 5}, "runAt": LATER.isoformat()},
]


@dataclass
class Legacy:
    """A schema graphile-worker ``version`` migrated and filled, and its jobs as Node saw them."""

    version: str
    database: Database
    schema: str
    conn: psycopg.Connection[tuple[Any, ...]]
    utils: WorkerUtils
    workers: Workers
    node_jobs: dict[int, Report]  # job id -> the job graphile-worker's addJob/addJobs returned
    sql_job_id: int  # added with the schema's own SQL add_job
    migrations: list[tuple[Any, ...]]

    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema)

    def migration_rows(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            sql.SQL("select id, ts, breaking from {}.migrations order by id").format(self.ident())
        ).fetchall()

    def node_job(self, identifier: str, payload: Any) -> Report:
        (job,) = [
            j
            for j in self.node_jobs.values()
            if j["task"] == identifier and j["payload"] == payload
        ]
        return job

    def job_count(self) -> int:
        row = self.conn.execute(
            sql.SQL("select count(*) from {}._private_jobs").format(self.ident())
        ).fetchone()
        return int(row[0]) if row else -1

    def assert_not_migrated(self) -> None:
        assert self.migration_rows() == self.migrations, (
            f"schema left by graphile-worker {self.version}: expected its migrations rows"
            f" untouched (max {REVISIONS[self.version]}), got {self.migration_rows()}"
        )


@pytest.fixture(params=list(PACKAGES))
def legacy(
    request: pytest.FixtureRequest, interop_database: Database, graphile_worker: GraphileWorker
) -> Iterator[Legacy]:
    version: str = request.param
    schema = unique_name()
    workers = Workers(graphile_worker.node, interop_database)
    with interop_database.connect() as conn:
        try:
            added = workers.add_with_node(
                schema,
                jobs=NODE_JOBS,
                batch=NODE_BATCH if version == "0.18.0" else (),
                package=PACKAGES[version],
            )
            row = conn.execute(
                sql.SQL("select id from {}.add_job('sql_task', %s::json, run_at => %s)").format(
                    sql.Identifier(schema)
                ),
                [json.dumps({"from": "sql"}), LATER],
            ).fetchone()
            assert row is not None
            utils = WorkerUtils(conn, schema=schema)
            migrations = conn.execute(
                sql.SQL("select id, ts, breaking from {}.migrations order by id").format(
                    sql.Identifier(schema)
                )
            ).fetchall()
            assert max(r[0] for r in migrations) == REVISIONS[version], (
                f"graphile-worker {version} left revision {max(r[0] for r in migrations)},"
                f" expected {REVISIONS[version]}"
            )
            yield Legacy(
                version,
                interop_database,
                schema,
                conn,
                utils,
                workers,
                {int(r["job"]["job_id"]): r["job"] for r in added},
                int(row[0]),
                migrations,
            )
        finally:
            workers.close()
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


def as_node_saw_it(job: Job) -> dict[str, Any]:
    """A library Job in the shape of the job graphile-worker's WorkerUtils returned."""
    return {
        "job_id": job.id,
        "task": job.task_identifier,
        "payload": job.payload,
        "job_queue_id": job.job_queue_id,
        "priority": job.priority,
        "run_at": job.run_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "max_attempts": job.max_attempts,
        "flags": None if job.flags is None else {flag: True for flag in job.flags},
    }


def assert_describes(job: Job, node_job: Report, what: str, **changed: Any) -> None:
    """``job`` (returned by the library) is the job Node added, apart from ``changed``."""
    expected = {key: node_job[key] for key in as_node_saw_it(job)}
    expected["job_id"] = int(expected["job_id"])
    expected.update(changed)
    actual = as_node_saw_it(job)
    assert actual == expected, (
        f"job {job.id}: {what}: expected the returned Job to describe the row graphile-worker"
        f" added, as {expected}, got {actual}"
    )


def test_schema_status_of_a_schema_graphile_worker_left(legacy: Legacy) -> None:
    status = legacy.utils.schema_status()
    expected = SchemaState.CURRENT if legacy.version == "0.18.0" else SchemaState.BEHIND
    assert status.state is expected and status.revision == REVISIONS[legacy.version], (
        f"schema left by graphile-worker {legacy.version}: expected {expected}, got {status}"
    )
    legacy.assert_not_migrated()


def test_enqueue_on_a_schema_graphile_worker_left_runs_on_that_worker(legacy: Legacy) -> None:
    node_task = legacy.node_job("node_task", NODE_JOBS[0]["payload"])
    single = legacy.utils.add_raw_job(
        "node_task", {"from": "python"}, JobSpec(queue_name="node_queue", priority=-1)
    )
    batch = legacy.utils.add_raw_jobs(
        [
            RawJobSpec("other_task", {"from": "python", "n": 1}),
            RawJobSpec("python_task", {"from": "python", "n": 2}, JobSpec(queue_name="py_queue")),
        ]
    )

    assert (single.task_identifier, single.queue_name) == ("node_task", "node_queue"), (
        f"job {single.id}: expected it labelled node_task/node_queue, got {single}"
    )
    assert (single.task_id, single.job_queue_id) == (
        node_task["task_id"],
        node_task["job_queue_id"],
    ), (
        f"job {single.id}: expected graphile-worker's own task and queue rows"
        f" ({node_task['task_id']}, {node_task['job_queue_id']}),"
        f" got ({single.task_id}, {single.job_queue_id})"
    )
    labels = sorted((job.task_identifier, job.queue_name, job.payload["n"]) for job in batch)
    assert labels == [("other_task", None, 1), ("python_task", "py_queue", 2)], (
        f"jobs {[job.id for job in batch]}: expected labels by their own rows, got {labels}"
    )
    legacy.assert_not_migrated()

    # The worker that made the schema runs what the library added (the rest lies in 2031).
    worker = legacy.workers.start(
        legacy.schema,
        {"node_task": {}, "other_task": {}, "python_task": {}},
        mode="runOnce",
        package=PACKAGES[legacy.version],
    )
    code = worker.wait_exit(20)
    expected = sorted([single.id, *(job.id for job in batch)])
    assert code == 0 and sorted(ran_job_ids(worker)) == expected, (
        f"graphile-worker {legacy.version}: expected it to run jobs {expected}, ran"
        f" {ran_job_ids(worker)} (exit {code})\n{worker.describe()}"
    )
    started = {r["job_id"]: r for r in worker.events("start")}
    assert started[single.id]["payload"] == {"from": "python"} and (
        started[single.id]["queue_name"] == "node_queue"
    ), f"job {single.id}: expected payload and queue as enqueued, got {started[single.id]}"
    legacy.assert_not_migrated()


def test_remove_job_returns_the_job_graphile_worker_added(legacy: Legacy) -> None:
    node_job = legacy.node_job("node_task", NODE_JOBS[0]["payload"])

    removed = legacy.utils.remove_job("node_key")

    assert removed is not None, "remove_job('node_key'): expected the job Node added, got None"
    assert_describes(removed, node_job, "remove_job('node_key')")
    assert (removed.queue_name, removed.key, removed.flags) == (
        "node_queue",
        "node_key",
        ["f1", "f2"],
    ), f"job {removed.id}: expected queue, key and flags as Node added them, got {removed}"
    count = legacy.job_count()
    assert count == len(legacy.node_jobs), (  # the SQL job remains, this one is gone
        f"job {removed.id}: expected it deleted ({len(legacy.node_jobs)} jobs left), {count} left"
    )
    assert legacy.utils.remove_job("node_key") is None, "expected no job with 'node_key' left"
    legacy.assert_not_migrated()


def test_complete_reschedule_and_fail_return_the_jobs_graphile_worker_added(
    legacy: Legacy,
) -> None:
    second = legacy.node_job("node_task", {"n": 2})
    third = legacy.node_job("other_task", [1, 2, 3])
    soon = dt.datetime(2030, 6, 7, 8, 9, 10, 123000, tzinfo=UTC)

    (rescheduled,) = legacy.utils.reschedule_jobs(
        [int(second["job_id"])], RescheduleOptions(run_at=soon, priority=5)
    )
    (failed,) = legacy.utils.permanently_fail_jobs([int(third["job_id"])], "retired")
    (completed,) = legacy.utils.complete_jobs([legacy.sql_job_id])

    assert_describes(
        rescheduled, second, "reschedule_jobs", run_at="2030-06-07T08:09:10.123Z", priority=5
    )
    assert rescheduled.queue_name is None, f"job {rescheduled.id}: expected no queue"
    assert_describes(failed, third, "permanently_fail_jobs")
    assert (failed.queue_name, failed.last_error, failed.is_permanently_failed) == (
        "node_queue",
        "retired",
        True,
    ), f"job {failed.id}: expected queue node_queue, permanently failed as 'retired', got {failed}"
    assert (completed.id, completed.task_identifier, completed.payload) == (
        legacy.sql_job_id,
        "sql_task",
        {"from": "sql"},
    ), f"job {legacy.sql_job_id}: expected complete_jobs to return the SQL job, got {completed}"
    legacy.assert_not_migrated()


def test_cleanup_on_a_schema_graphile_worker_left(legacy: Legacy) -> None:
    third = legacy.node_job("other_task", [1, 2, 3])
    legacy.utils.permanently_fail_jobs([int(third["job_id"])])
    keep = [int(i) for i in legacy.node_jobs if i != int(third["job_id"])]
    legacy.utils.complete_jobs([*keep, legacy.sql_job_id])  # every other job done
    tasks = legacy.conn.execute(
        sql.SQL("select count(*) from {}._private_tasks").format(legacy.ident())
    ).fetchone()
    queues = legacy.conn.execute(
        sql.SQL("select count(*) from {}._private_job_queues").format(legacy.ident())
    ).fetchone()
    assert tasks and queues

    removed = legacy.utils.cleanup(
        [
            CleanupTask.GC_JOB_QUEUES,
            CleanupTask.GC_TASK_IDENTIFIERS,
            CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS,
        ],
        task_identifiers_to_keep=["node_task"],
    )

    assert removed == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: tasks[0] - 1,
        CleanupTask.GC_JOB_QUEUES: queues[0],
    }, (
        f"job {third['job_id']} permanently failed, {tasks[0]} tasks ('node_task' kept),"
        f" {queues[0]} queues, nothing else left: expected everything but 'node_task' removed,"
        f" got {removed}"
    )
    left = legacy.conn.execute(
        sql.SQL("select identifier from {}._private_tasks").format(legacy.ident())
    ).fetchall()
    assert left == [("node_task",)], f"expected only task 'node_task' left, got {left}"
    assert legacy.job_count() == 0, "expected no job left"
    legacy.assert_not_migrated()


# -- which workers share a database with the library (the README's compatibility table) ------


@pytest.fixture
def workers(interop_database: Database, graphile_worker: GraphileWorker) -> Iterator[Workers]:
    started = Workers(graphile_worker.node, interop_database)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def new_schema(interop_database: Database) -> Iterator[Callable[[], str]]:
    """Fresh schema names in the interop database, dropped at teardown."""
    names: list[str] = []

    def make() -> str:
        names.append(unique_name())
        return names[-1]

    yield make
    with interop_database.connect() as conn:
        for name in names:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def test_graphile_worker_0_17_runs_jobs_on_a_schema_the_library_migrated(
    interop_database: Database, workers: Workers, new_schema: Callable[[], str]
) -> None:
    schema = new_schema()
    with interop_database.connect() as conn:
        utils = WorkerUtils(conn, schema=schema)
        utils.migrate()  # revision 20: newer than 0.17 knows, but not breaking
        job = utils.add_raw_job("rec", {"n": 17}, JobSpec(queue_name="q"))

        worker = workers.start(schema, {"rec": {}}, mode="runOnce", package="graphile-worker-0.17")
        code = worker.wait_exit(20)

        assert code == 0 and ran_job_ids(worker) == [job.id], (
            f"job {job.id}: expected graphile-worker 0.17.3 to run it on a revision-20 schema,"
            f" ran {ran_job_ids(worker)} (exit {code})\n{worker.describe()}"
        )
        assert worker.events("start", job.id)[0]["queue_name"] == "q"


def test_graphile_worker_0_16_refuses_a_schema_the_library_migrated(
    interop_database: Database, workers: Workers, new_schema: Callable[[], str]
) -> None:
    schema = new_schema()
    with interop_database.connect() as conn:
        utils = WorkerUtils(conn, schema=schema)
        utils.migrate()  # includes breaking revision 19, which 0.16 does not know
        job = utils.add_raw_job("rec", {"n": 16})

        worker = workers.start(schema, {"rec": {}}, mode="runOnce", package="graphile-worker-0.16")
        code = worker.wait_exit(20)

        fatal = " ".join(r["error"] for r in worker.events("fatal"))
        assert code != 0 and "19" in fatal, (
            f"expected graphile-worker 0.16.6 to refuse a schema with breaking revision 19,"
            f" got exit {code}, errors {fatal!r}\n{worker.describe()}"
        )
        assert not worker.events("start"), f"job {job.id}: run by a refusing worker"


def test_upgrading_a_0_16_schema_shuts_down_the_0_16_worker_running_on_it(
    interop_database: Database,
    workers: Workers,
    new_schema: Callable[[], str],
    graphile_worker: GraphileWorker,
) -> None:
    schema = new_schema()
    graphile_worker.migrate("0.16.6", interop_database.node_dsn, schema)
    worker = workers.start(schema, {"rec": {}}, package="graphile-worker-0.16")

    with interop_database.connect() as conn:
        report = WorkerUtils(conn, schema=schema).migrate()

    assert report.applied == (19, 20), f"expected migrate() to apply 19 and 20, got {report}"
    worker.wait_event(
        "exit", what="expected the 0.16.6 worker to shut down on breaking revision 19"
    )


def test_a_breaking_upgrade_of_one_schema_shuts_down_workers_of_other_schemas(
    interop_database: Database,
    workers: Workers,
    new_schema: Callable[[], str],
    graphile_worker: GraphileWorker,
) -> None:
    # graphile-worker's worker:migrate channel is per database: a 0.18 worker serving another
    # (current) schema of the same database shuts down too.
    current, old = new_schema(), new_schema()
    graphile_worker.migrate("0.16.6", interop_database.node_dsn, old)
    with interop_database.connect() as conn:
        WorkerUtils(conn, schema=current).migrate()
        bystander = workers.start(current, {"rec": {}})

        WorkerUtils(conn, schema=old).migrate()

    bystander.wait_event(
        "exit",
        what=f"expected the 0.18.0 worker on schema {current!r} to shut down when migrate()"
        f" applied breaking revision 19 to schema {old!r} of the same database",
    )
