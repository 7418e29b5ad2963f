"""graphile-worker 0.18.0 (Node.js) accepts a schema we migrated as its own and runs its jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from graphile_worker_utils import LATEST_REVISION, WorkerUtils
from tests._catalog import assert_same_catalog, snapshot
from tests._helpers import Database
from tests._node import GraphileWorker
from tests._server import PgServer

Connection = psycopg.Connection[Any]

# A task that records each payload it ran with in ./ran/<job id>.json: a side effect the
# test can observe without sharing anything else with the worker.
HELLO_TASK = """\
const fs = require("fs");
const path = require("path");
module.exports = async (payload, helpers) => {
  const folder = path.join(process.cwd(), "ran");
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(path.join(folder, `${helpers.job.id}.json`), JSON.stringify(payload));
};
"""


def write_hello_task(folder: Path) -> Path:
    (folder / "tasks").mkdir()
    (folder / "tasks" / "hello.js").write_text(HELLO_TASK)
    return folder / "ran"


def migration_rows(conn: Connection, schema: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        sql.SQL("select id, ts, breaking from {}.migrations order by id").format(
            sql.Identifier(schema)
        )
    ).fetchall()


def add_job_with_sql(conn: Connection, schema: str, payload: dict[str, Any]) -> int:
    row = conn.execute(
        sql.SQL("select id from {}.add_job('hello', %s::json)").format(sql.Identifier(schema)),
        [json.dumps(payload)],
    ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def run_once(graphile_worker: GraphileWorker, node_dsn: str, schema: str | None, cwd: Path) -> None:
    args = ["-c", node_dsn, "--once"] + (["-s", schema] if schema else [])
    done = graphile_worker.run("0.18.0", *args, cwd=cwd, timeout=60)
    assert done.returncode == 0, f"worker exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def test_graphile_worker_schema_only_changes_nothing_on_a_schema_we_migrated(
    conn: Connection, schema: str, pg_server: PgServer, graphile_worker: GraphileWorker
) -> None:
    WorkerUtils(conn, schema=schema).migrate()
    rows_before = migration_rows(conn, schema)
    catalog_before = snapshot(conn, schema)

    graphile_worker.migrate("0.18.0", pg_server.node_dsn, schema)

    assert [row[0] for row in rows_before] == list(range(1, LATEST_REVISION + 1))
    assert migration_rows(conn, schema) == rows_before  # ids, ts and flags untouched
    assert_same_catalog(
        catalog_before,
        snapshot(conn, schema),
        left_name="ours",
        right_name="after graphile-worker --schema-only",
    )


def test_graphile_worker_runs_a_job_added_with_sql_to_a_schema_we_migrated(
    conn: Connection,
    schema: str,
    pg_server: PgServer,
    graphile_worker: GraphileWorker,
    tmp_path: Path,
) -> None:
    WorkerUtils(conn, schema=schema).migrate()
    ran = write_hello_task(tmp_path)
    job_id = add_job_with_sql(conn, schema, {"n": 1})

    run_once(graphile_worker, pg_server.node_dsn, schema, tmp_path)

    assert json.loads((ran / f"{job_id}.json").read_text()) == {"n": 1}
    remaining = conn.execute(
        sql.SQL("select count(*) from {}._private_jobs").format(sql.Identifier(schema))
    ).fetchone()
    assert remaining == (0,)


def test_graphile_worker_runs_jobs_in_the_default_schema_of_a_database_we_migrated(
    fresh_database: Database, graphile_worker: GraphileWorker, tmp_path: Path
) -> None:
    with psycopg.connect(fresh_database.dsn, autocommit=True) as conn:
        WorkerUtils(conn).migrate()
        ran = write_hello_task(tmp_path)
        ids = [add_job_with_sql(conn, "graphile_worker", {"n": n}) for n in range(3)]

        run_once(graphile_worker, fresh_database.node_dsn, None, tmp_path)

        assert {json.loads((ran / f"{i}.json").read_text())["n"] for i in ids} == {0, 1, 2}
        assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (0,)
