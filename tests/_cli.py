"""Running the command line as a user does: a real subprocess with a clean environment, and
readers of what it left in the database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from graphile_worker_utils.cli import ExitCode

SCRIPT = Path(sys.executable).parent / "graphile-worker-utils"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's connection settings, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not (key.startswith("PG") or key in {"DATABASE_URL", "GRAPHILE_WORKER_SCHEMA"})
    }
    env.update(extra)
    return env


def run(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    script: bool = False,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the command line (``python -m`` unless ``script``) and return what it did."""
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "graphile_worker_utils"]
    return subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env() if env is None else env,
        timeout=timeout,
        check=False,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: ExitCode) -> str:
    """The run failed with ``code`` and exactly one line on stderr (no traceback)."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("graphile-worker-utils: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def jobs(conn: psycopg.Connection[Any], schema: str) -> list[dict[str, Any]]:
    """Every job of ``schema`` with its task identifier and queue name, by id."""
    query = sql.SQL(
        """
        select job.id, task.identifier, queue.queue_name, job.payload, job.priority,
               job.run_at, job.attempts, job.max_attempts, job.key, job.flags,
               job.last_error, job.locked_at, job.locked_by
        from {s}._private_jobs as job
        join {s}._private_tasks as task on task.id = job.task_id
        left join {s}._private_job_queues as queue on queue.id = job.job_queue_id
        order by job.id
        """
    ).format(s=sql.Identifier(schema))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()
