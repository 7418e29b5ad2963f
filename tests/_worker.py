"""The real graphile-worker 0.18.0 as a subprocess of a test: start it, watch it, stop it.

``tests/node/harness.js`` runs graphile-worker's public JS API (``run``/``runOnce``, or
``makeWorkerUtils`` to add jobs) with a task list configured per test, and prints one JSON
report per line (see its header). :class:`NodeWorker` starts it in its own process group,
collects the reports on a thread, answers ``wait_for(condition, timeout)`` questions about them
(never a sleep), and kills the whole group at teardown.

graphile-worker's channels (``jobs:insert``, ``worker:migrate``) are per database, not per
schema: a worker in one schema is nudged by every job inserted, and shut down by every breaking
migration, in any schema of its database. So the interop tests run in a database of their own
(the ``interop_database`` fixture of ``tests/fix_node.py``), one schema per test.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from graphile_worker_utils import WorkerUtils
from tests._helpers import Database
from tests._node import NODE_DIR, node_env

HARNESS = NODE_DIR / "harness.js"
Report = dict[str, Any]
T = TypeVar("T")

#: Bounds, in seconds: a harness start, a wait for a job, a graceful stop.
START_TIMEOUT = 20.0
WAIT_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def job_id_of(report: Report) -> int | None:
    value = report.get("job_id")
    return None if value is None else int(value)


class NodeWorker:
    """One ``harness.js`` process: graphile-worker running the tasks a test configured.

    Reports arrive on a reader thread; :meth:`wait_for` blocks until a condition over them
    holds (or fails the test after ``timeout`` seconds, or as soon as the process is gone).
    """

    def __init__(self, node: str, config: Mapping[str, Any], name: str) -> None:
        self.name = name
        self.config = dict(config)
        self._reports: list[Report] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=60)
        self._changed = threading.Condition()
        self._exited = False
        self.process = subprocess.Popen(
            [node, str(HARNESS), json.dumps(self.config)],
            cwd=NODE_DIR,
            env=node_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            start_new_session=True,  # its own process group, killed as a whole at teardown
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"{name}-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- reading ---------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                report = {"event": "garbage", "line": line.rstrip("\n")}
            if "job_id" in report:
                report["job_id"] = job_id_of(report)
            with self._changed:
                self._reports.append(report)
                self._changed.notify_all()
        with self._changed:
            self._exited = True
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.rstrip("\n"))

    @property
    def reports(self) -> list[Report]:
        """A snapshot of every report so far, in arrival order."""
        with self._changed:
            return list(self._reports)

    def events(self, event: str, job_id: int | None = None) -> list[Report]:
        """Reports of one kind (``start``, ``end``, ``complete``, …), of one job if given."""
        return [
            r
            for r in self.reports
            if r["event"] == event and (job_id is None or r.get("job_id") == job_id)
        ]

    def describe(self) -> str:
        """What the harness said so far (reports without payloads, stderr tail), for failures."""
        lines = []
        for report in self.reports:
            if report["event"] in ("poll_empty", "notification"):
                continue
            short = {k: v for k, v in report.items() if k not in ("payload", "pid")}
            text = json.dumps(short)
            lines.append(text if len(text) < 400 else text[:400] + "…")
        polls = len(self.events("poll_empty"))
        return (
            f"harness {self.name} (pid {self.process.pid}, exit {self.process.poll()}), "
            f"{polls} empty polls; reports:\n  "
            + "\n  ".join(lines)
            + "\nstderr (tail):\n  "
            + "\n  ".join(self._stderr)
        )

    def wait_for(
        self, condition: Callable[[list[Report]], T | None], timeout: float, what: str
    ) -> T:
        """Block until ``condition(reports)`` is truthy and return it; fail the test with
        ``what`` and the harness's output after ``timeout`` s or once the harness has exited."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = condition(list(self._reports))
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._exited:
                    break
                self._changed.wait(min(remaining, 0.5))
        reason = "the harness exited" if self._exited else f"{timeout} s passed"
        raise AssertionError(f"{what}: {reason} without it.\n{self.describe()}")

    def wait_event(
        self,
        event: str,
        job_id: int | None = None,
        *,
        where: Callable[[Report], bool] = lambda report: True,
        after: int = 0,
        timeout: float = WAIT_TIMEOUT,
        what: str | None = None,
    ) -> Report:
        """The first ``event`` report (of ``job_id``, matching ``where``) at index >= after."""

        def find(reports: list[Report]) -> Report | None:
            for report in reports[after:]:
                if (
                    report["event"] == event
                    and (job_id is None or report.get("job_id") == job_id)
                    and where(report)
                ):
                    return report
            return None

        subject = f"job {job_id}" if job_id is not None else "the worker"
        return self.wait_for(find, timeout, what or f"expected {subject} to report {event!r}")

    def wait_started(self, job_id: int, timeout: float = WAIT_TIMEOUT) -> Report:
        return self.wait_event(
            "start", job_id, timeout=timeout, what=f"expected job {job_id} to start"
        )

    def wait_completed(
        self, job_id: int, attempts: int | None = None, timeout: float = WAIT_TIMEOUT
    ) -> Report:
        """The report that the outcome of a run of ``job_id`` (of attempt ``attempts``) was
        written back to the database."""
        return self.wait_event(
            "complete",
            job_id,
            where=lambda r: attempts is None or r["attempts"] == attempts,
            timeout=timeout,
            what=f"expected job {job_id}"
            + ("" if attempts is None else f" (attempt {attempts})")
            + " to finish and be written back",
        )

    def wait_polls(self, count: int, after: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until the worker has asked for a job and found none ``count`` times since
        report index ``after``: it has looked, and nothing it may run was due."""
        self.wait_for(
            lambda reports: sum(r["event"] == "poll_empty" for r in reports[after:]) >= count,
            timeout,
            f"expected {count} empty polls of the worker",
        )

    def position(self, report: Report) -> int:
        """The index of a report (as returned by a wait), for ``after=`` arguments."""
        with self._changed:
            return next(i for i, r in enumerate(self._reports) if r is report)

    def mark(self) -> int:
        """The current report index, for ``after=`` arguments."""
        with self._changed:
            return len(self._reports)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the worker is up: ``ready``, and for ``run`` listening with a first
        poll done."""
        self.wait_event("ready", timeout=timeout, what="expected the harness to start")
        if self.config.get("mode", "run") == "run":
            self.wait_event("listening", timeout=timeout, what="expected the worker to LISTEN")
            self.wait_event("poll_empty", timeout=timeout, what="expected a first empty poll")

    @property
    def pool_id(self) -> str:
        """The worker pool's id: what graphile-worker 0.17+ writes in ``locked_by``."""
        return str(self.wait_event("pool", timeout=START_TIMEOUT)["pool_id"])

    # -- commands --------------------------------------------------------------------------

    def _send(self, command: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def release(self, job_id: int | str, outcome: str = "succeed") -> None:
        """Let a blocked job go on, to succeed or to fail (``"*"``: every blocked job)."""
        self._send({"cmd": "release", "job_id": str(job_id), "outcome": outcome})

    def wait_exit(self, timeout: float = WAIT_TIMEOUT) -> int:
        """Wait for the process to end (``runOnce`` and ``utils`` modes end by themselves)."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"expected the harness to exit within {timeout} s.\n{self.describe()}"
            ) from None
        for thread in self._threads:
            thread.join(5)
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Graceful stop (graphile-worker's ``runner.stop()``), then wait for the exit."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self._send({"cmd": "stop"})
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, its locks stay in the database."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        for thread in self._threads:
            thread.join(5)

    def close(self) -> None:
        """Make sure nothing of the harness is left: stop it if it runs, kill what remains."""
        if self.process.poll() is None:
            with contextlib.suppress(AssertionError):
                self.stop(timeout=3)
        self.kill()  # the group may hold children even after the leader exited
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Workers:
    """Starts harnesses for one test and closes every one of them at teardown."""

    def __init__(self, node: str, database: Database) -> None:
        self.node = node
        self.database = database
        self._started: list[NodeWorker] = []

    def start(
        self,
        schema: str,
        tasks: Mapping[str, Mapping[str, Any]],
        *,
        mode: str = "run",
        concurrency: int = 1,
        poll_interval_ms: int = 100,
        forbidden_flags: Sequence[str] | None = None,
        wait: bool = True,
        name: str | None = None,
        package: str = "graphile-worker",
    ) -> NodeWorker:
        """Start graphile-worker 0.18.0 on ``schema`` with a task per ``tasks`` entry
        (behaviours: ``sleep_ms``, ``block``, ``fail_times``, ``always_fail``; ``{}`` records
        the call and succeeds). With ``wait``, return once it is ready (see ``wait_ready``).
        ``package``: another installed release (``graphile-worker-0.16``) for old schemas."""
        config: dict[str, Any] = {
            "connectionString": self.database.node_dsn,
            "schema": schema,
            "mode": mode,
            "package": package,
            "concurrency": concurrency,
            "pollInterval": poll_interval_ms,
            "tasks": {k: dict(v) for k, v in tasks.items()},
        }
        if forbidden_flags is not None:
            config["forbiddenFlags"] = list(forbidden_flags)
        worker = NodeWorker(self.node, config, name or f"worker{len(self._started) + 1}")
        self._started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def add_with_node(
        self,
        schema: str,
        *,
        jobs: Sequence[Mapping[str, Any]] = (),
        batch: Sequence[Mapping[str, Any]] = (),
        package: str = "graphile-worker",
    ) -> list[Report]:
        """Migrate ``schema`` and add jobs with graphile-worker's own ``WorkerUtils``
        (``addJob`` per ``jobs`` entry, one ``addJobs`` for ``batch``); the ``added`` reports."""
        config = {
            "connectionString": self.database.node_dsn,
            "schema": schema,
            "mode": "utils",
            "package": package,
            "jobs": list(jobs),
            "batch": list(batch),
        }
        worker = NodeWorker(self.node, config, f"utils{len(self._started) + 1}")
        self._started.append(worker)
        code = worker.wait_exit(START_TIMEOUT)
        assert code == 0, f"graphile-worker utils exited {code}.\n{worker.describe()}"
        return worker.events("added")

    def close(self) -> None:
        for worker in self._started:
            worker.close()


def ran_job_ids(worker: NodeWorker) -> list[int]:
    """Job ids in the order the worker started them (a retried job appears once per run)."""
    return [int(r["job_id"]) for r in worker.events("start")]


def overlaps(a: Report, b: Report) -> bool:
    """Whether two ``end`` reports' runs overlapped in time."""
    return bool(a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"])


def wait_until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``condition`` (for conditions that span several harnesses or the database) until
    it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {timeout} s passed without it")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# What the ``interop`` fixture (tests/fix_node.py) gives a test


@dataclass
class Interop:
    """One test's world: a schema we migrated in the interop database, an autocommit
    connection and WorkerUtils on it, and a way to start graphile-worker on that schema."""

    database: Database
    schema: str
    conn: psycopg.Connection[tuple[Any, ...]]
    utils: WorkerUtils
    workers: Workers

    def start(self, tasks: Mapping[str, Mapping[str, Any]], **options: Any) -> NodeWorker:
        """graphile-worker 0.18.0 on this schema (see :meth:`Workers.start`)."""
        return self.workers.start(self.schema, tasks, **options)

    def job_row(self, job_id: int) -> dict[str, Any] | None:
        """The job as the database holds it now (jobs view columns plus payload), or None."""
        query = sql.SQL(
            "select v.*, j.payload, j.is_available from {s}.jobs v"
            " join {s}._private_jobs j using (id) where v.id = %s"
        ).format(s=sql.Identifier(self.schema))
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, [job_id]).fetchone()

    def wait_row(
        self,
        job_id: int,
        condition: Callable[[dict[str, Any] | None], bool],
        what: str,
        timeout: float = WAIT_TIMEOUT,
    ) -> dict[str, Any] | None:
        """Poll the job's row until ``condition(row)`` holds; return that row. (graphile-worker
        emits ``job:complete`` a moment before another session sees the job unlocked or
        deleted, so tests wait on the database itself.)"""
        seen: list[dict[str, Any] | None] = []

        def check() -> tuple[dict[str, Any] | None] | None:
            row = self.job_row(job_id)
            seen[:] = [row]
            return (row,) if condition(row) else None

        try:
            return wait_until(check, timeout, f"job {job_id}: {what}")[0]
        except AssertionError as error:
            raise AssertionError(f"{error}; last seen: {seen[0] if seen else None}") from None

    def wait_unlocked(
        self, job_id: int, attempts: int, timeout: float = WAIT_TIMEOUT
    ) -> dict[str, Any]:
        """Wait until the worker has written attempt ``attempts`` of the job back (unlocked)."""
        row = self.wait_row(
            job_id,
            lambda r: r is not None and r["attempts"] == attempts and r["locked_at"] is None,
            f"expected the job unlocked after attempt {attempts}",
            timeout,
        )
        assert row is not None
        return row

    def wait_deleted(self, job_id: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until the job's row is gone (succeeded, completed or cleaned up)."""
        self.wait_row(job_id, lambda r: r is None, "expected the job deleted", timeout)

    def table(self, name: str, order_by: str = "id") -> list[dict[str, Any]]:
        """Every row of ``S.<name>`` (e.g. ``_private_tasks``), ordered."""
        query = sql.SQL("select * from {}.{} order by {}").format(
            sql.Identifier(self.schema), sql.Identifier(name), sql.Identifier(order_by)
        )
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query).fetchall()
