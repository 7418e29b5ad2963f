"""Plain helpers that tests and fixture plugins import: unique names, dropping what a test made,
throwaway databases, and small SQL readers."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from graphile_worker_utils import Job, JobSpec, RawJobSpec, WorkerUtils
from tests._server import PgServer

REPO_ROOT = Path(__file__).resolve().parent.parent

# One token per pytest process, so the end-of-session sweep only looks at what this process made
# (parallel sessions may share a server through GRAPHILE_WORKER_TEST_DSN).
SESSION_TOKEN = uuid.uuid4().hex[:8]
NAME_PREFIX = f"gwu_{SESSION_TOKEN}_"


def unique_name(kind: str = "") -> str:
    """A fresh schema or database name that the end-of-session sweep recognises as ours."""
    return f"{NAME_PREFIX}{kind}{uuid.uuid4().hex[:16]}"


def ci_requires_everything() -> bool:
    """True on CI, where a test that cannot run must fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


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


def drop_role(pg_server: PgServer, name: str) -> None:
    """Drop a role with its privileges and policy memberships (``drop owned by`` first)."""
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        exists = admin.execute("select 1 from pg_roles where rolname = %s", [name]).fetchone()
        if exists:
            admin.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def leftovers(server: PgServer) -> tuple[list[str], list[str]]:
    """The schemas and databases of this session still on the server."""
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


@dataclass(frozen=True)
class Database:
    """A database of the test server, reachable from Python (``dsn``) and Node (``node_dsn``)."""

    name: str
    dsn: str
    node_dsn: str

    def connect(self, autocommit: bool = True) -> psycopg.Connection[tuple[Any, ...]]:
        """A new connection (the caller closes it)."""
        return psycopg.connect(self.dsn, autocommit=autocommit)


@contextlib.contextmanager
def make_database(pg_server: PgServer, kind: str = "db_") -> Iterator[Database]:
    """A new empty database (from template0), dropped with whoever is on it at exit."""
    name = unique_name(kind)
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        # template0: creating from template1 fails while anyone else is connected to it.
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    try:
        yield Database(name, pg_server.dsn_for(name), pg_server.node_dsn_for(name))
    finally:
        drop_database(pg_server, name)


def table(schema: str, name: str) -> sql.Composed:
    """``schema.name``, both quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def job_count(conn: psycopg.Connection[Any], schema: str) -> int:
    """How many jobs ``schema`` holds."""
    query = sql.SQL("select count(*) from {}").format(table(schema, "_private_jobs"))
    (n,) = conn.execute(query).fetchone()  # type: ignore[misc]
    return int(n)


def enqueue(
    utils: WorkerUtils, via: str, identifier: str, payload: Any, spec: JobSpec | None = None
) -> Job:
    """One job through ``add_raw_job`` or (``via="add_raw_jobs"``) a batch of one."""
    if via == "add_raw_job":
        return utils.add_raw_job(identifier, payload, spec)
    (job,) = utils.add_raw_jobs([RawJobSpec(identifier, payload, spec)])
    return job
