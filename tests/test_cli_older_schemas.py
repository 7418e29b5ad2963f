"""The command line on schemas that real older graphile-worker releases installed: 0.16.6 leaves
revision 18, 0.17.3 revision 19. The library works on them as they are, so every command but
``migrate`` does too, with a one-line note saying what ``migrate`` would do to the workers; and
nothing migrates them behind the operator's back.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils.cli import ExitCode
from tests._cli import assert_one_line_error, jobs, run
from tests._node import GraphileWorker
from tests._server import PgServer

REVISIONS = {"0.16.6": 18, "0.17.3": 19}
# What the note must say about `migrate` on each: the breaking revision 19 stops 0.16 workers.
EFFECTS = {
    "0.16.6": ("graphile-worker 0.16)", "breaking revision 19", "stop the graphile-worker 0.16"),
    "0.17.3": ("graphile-worker 0.17)", "non-breaking", "stop no worker"),
}


def migration_rows(conn: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    query = sql.SQL("select id, breaking from {}.migrations order by id")
    return conn.execute(query.format(sql.Identifier(schema))).fetchall()


def command(
    pg_server: PgServer, schema: str, version: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command on the older schema: it succeeds, and says so on stderr first."""
    name, *rest = args
    done = run(name, "-c", pg_server.dsn, "-s", schema, *rest, stdin=stdin)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    notes = [line for line in done.stderr.splitlines() if ": note: " in line]
    assert len(notes) == 1, (args, done.stderr)
    assert f"schema {schema!r} is at revision {REVISIONS[version]}" in notes[0], notes
    for words in EFFECTS[version]:
        assert words in notes[0], (words, notes[0])
    return done


@pytest.mark.parametrize("version", list(REVISIONS))
def test_every_command_but_migrate_works_on_an_older_schema_with_a_note(
    version: str,
    pg_server: PgServer,
    schema: str,
    conn: psycopg.Connection[Any],
    graphile_worker: GraphileWorker,
) -> None:
    graphile_worker.migrate(version, pg_server.node_dsn, schema)
    before = migration_rows(conn, schema)
    assert before[-1][0] == REVISIONS[version], before

    added = command(
        pg_server, schema, version, "add-job", "t", '{"n": 1}', "--queue", "q", "--json"
    )
    first = json.loads(added.stdout)["id"]
    lines = "".join(json.dumps({"identifier": "t", "payload": {"n": n}}) + "\n" for n in (2, 3))
    command(pg_server, schema, version, "add-jobs", stdin=lines)
    command(pg_server, schema, version, "add-job", "t", "--job-key", "k")
    second, third, keyed = (row["id"] for row in jobs(conn, schema)[1:])
    status = command(pg_server, schema, version, "status", "--json")
    assert json.loads(status.stdout)["totals"]["ready"] == 4, status.stdout

    listed = json.loads(command(pg_server, schema, version, "jobs", "--json").stdout)["jobs"]
    assert [(job["id"], job["state"]) for job in listed] == [
        (job_id, "ready") for job_id in (first, second, third, keyed)
    ], listed
    shown = command(pg_server, schema, version, "show", "--key", "k", "--json")
    assert json.loads(shown.stdout)["id"] == keyed, shown.stdout
    command(pg_server, schema, version, "show", str(first))
    command(pg_server, schema, version, "workers")

    command(pg_server, schema, version, "reschedule", str(first), "--priority", "5")
    command(pg_server, schema, version, "fail", str(second), "--reason", "old schema")
    command(pg_server, schema, version, "complete", str(third))
    command(pg_server, schema, version, "remove-job", "k")
    command(pg_server, schema, version, "unlock-workers", "pool-gone")
    rows = {row["id"]: row for row in jobs(conn, schema)}
    assert sorted(rows) == [first, second], (rows, keyed)
    assert (rows[first]["priority"], rows[second]["last_error"]) == (5, "old schema"), rows

    aged = ("cleanup", "--task", "DELETE_PERMANENTLY_FAILED_JOBS", "--older-than", "1h")
    command(pg_server, schema, version, *aged)
    assert [row["id"] for row in jobs(conn, schema)] == [first, second], "a new failure went"
    command(pg_server, schema, version, "cleanup", "--task", "DELETE_PERMANENTLY_FAILED_JOBS")
    assert [row["id"] for row in jobs(conn, schema)] == [first]
    assert migration_rows(conn, schema) == before, "a command migrated the schema"


def test_a_schema_that_was_never_installed_still_says_run_migrate(
    pg_server: PgServer, schema: str
) -> None:
    done = run("status", "-c", pg_server.dsn, "-s", schema)
    line = assert_one_line_error(done, ExitCode.SCHEMA_MISSING)
    assert "run `graphile-worker-utils migrate` first" in line, line
