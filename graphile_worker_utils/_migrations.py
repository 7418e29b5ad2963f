"""Schema migrations, interoperable with graphile-worker's own migrator (docs/schema.md §4).

A schema with no recorded revision gets the revision-20 shape in one transaction, with rows
1..20 recorded. A schema at 16..19 gets the later revisions, one transaction each, the
``migrations`` row inserted first so that concurrent migrators (ours, Node's, Rust's) wait on
it and then treat it as done. Our own migrators also take an advisory lock per schema.

Each upgrade transaction sends graphile-worker's ``worker:migrate`` notification, as its own
migrator does; a running graphile-worker shuts down when it says ``"breaking": true``. The
channel is per database and names no schema, so every pool of every schema of the database
hears it. A fresh install sends none: no worker can be serving a schema that had no revision
(graphile-worker migrates its schema before it starts working), so the notification could only
stop the pools of other schemas.
"""

from __future__ import annotations

import enum
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import attrs
import psycopg
from psycopg import errors as pg_errors

from ._connector import wrap_exceptions
from ._cursors import cursor
from ._errors import (
    IncompatibleSchemaError,
    MigrationError,
    SchemaTooOldError,
    UnsupportedServerError,
)
from ._public import public
from ._templates import catalog
from ._transactions import atomic

logger = logging.getLogger("graphile_worker_utils")

#: The newest schema revision this library creates and understands.
LATEST_REVISION = 20
#: Revisions that old workers cannot run beside (graphile-worker's own list).
BREAKING_REVISIONS = frozenset({1, 3, 11, 13, 14, 16, 19})
#: The oldest revision this library upgrades; older schemas need graphile-worker 0.16+ first.
OLDEST_UPGRADABLE_REVISION = 16
#: graphile-worker requires PostgreSQL 12.
MIN_SERVER_VERSION_NUM = 120000
#: The newest revision of the Rust crate ``graphile_worker`` (graphile_worker_rs) this library
#: knows. Its revisions 20..22 are its own (20 differs from graphile-worker's); none is breaking.
RUST_LATEST_REVISION = 22

#: Whose migrations shaped a schema: graphile-worker's (Node.js) or the Rust crate's, told
#: apart by the crate's ``_private_workers`` table (its revisions 20 and 21 create it).
SchemaFlavour = Literal["graphile-worker", "graphile_worker_rs"]
GRAPHILE_WORKER: SchemaFlavour = "graphile-worker"
GRAPHILE_WORKER_RS: SchemaFlavour = "graphile_worker_rs"

# How long migrate() waits for another migrator that is part-way through the old history
# (revisions 1..15, which only graphile-worker itself can apply) before it gives up.
_PEER_STALL_SECONDS = 3.0
_PEER_POLL_SECONDS = 0.05
# Errors that mean "another migrator got there first" (primary key of migrations, or racing
# CREATE SCHEMA / CREATE TABLE IF NOT EXISTS); each makes migrate() look again, this many times.
_CONCURRENT_MIGRATOR_ERRORS = (
    pg_errors.UniqueViolation,
    pg_errors.DuplicateSchema,
    pg_errors.DuplicateTable,
    pg_errors.DuplicateObject,
)
_MAX_COLLISIONS = 100


@public
class SchemaState(enum.Enum):
    """Where a schema stands relative to the revision this library knows."""

    #: No schema, no migrations table, or no recorded revision: ``migrate()`` installs it.
    MISSING = "missing"
    #: An older revision: ``migrate()`` upgrades it (from 16 up) or explains what to do.
    BEHIND = "behind"
    #: Exactly :data:`LATEST_REVISION`.
    CURRENT = "current"
    #: Newer, but no newer revision is breaking: usable, ``migrate()`` warns.
    AHEAD_COMPATIBLE = "ahead_compatible"
    #: A newer breaking revision: ``migrate()`` refuses; upgrade this library.
    AHEAD_INCOMPATIBLE = "ahead_incompatible"


@public
@attrs.frozen
class SchemaStatus:
    """The result of :meth:`WorkerUtils.schema_status` (read-only, changes nothing)."""

    #: Missing, behind, current, or ahead (compatible or not).
    state: SchemaState
    #: The newest recorded revision, None when there is none.
    revision: int | None
    #: The newest recorded breaking revision, None when there is none.
    breaking_revision: int | None
    #: ``server_version_num`` of the PostgreSQL server.
    server_version_num: int
    #: The revision this library knows (:data:`LATEST_REVISION`).
    known_revision: int = LATEST_REVISION
    #: ``"graphile_worker_rs"`` when the Rust crate's migrations shaped the schema (it has the
    #: crate's ``_private_workers`` table), else ``"graphile-worker"``. Revision numbers past
    #: 19 mean different things in each: see the README's compatibility table.
    flavour: SchemaFlavour = GRAPHILE_WORKER

    @property
    def can_migrate(self) -> bool:
        """Whether ``migrate()`` can bring this schema to the known revision."""
        if self.server_version_num < MIN_SERVER_VERSION_NUM:
            return False
        if self.state is SchemaState.BEHIND:
            return (self.revision or 0) >= OLDEST_UPGRADABLE_REVISION
        return self.state is not SchemaState.AHEAD_INCOMPATIBLE


@public
@attrs.frozen
class MigrationReport:
    """What :meth:`WorkerUtils.migrate` did."""

    #: Revisions this call recorded, in order; empty when there was nothing to do.
    applied: tuple[int, ...]
    #: The schema's newest revision after the call.
    revision: int
    #: True when this call created the schema's revision-20 shape from nothing.
    installed: bool = False


@attrs.frozen
class _Revisions:
    server_version_num: int
    revision: int | None
    breaking_revision: int | None
    has_breaking_column: bool
    has_migrations_table: bool
    flavour: SchemaFlavour = GRAPHILE_WORKER


def _read(conn: psycopg.Connection[Any], schema: str) -> _Revisions:
    with cursor(conn) as cur:
        cur.execute(catalog.render("migrator/state", schema), {"schema_name": schema})
        state = cur.fetchone()
        assert state is not None
        server_version_num, has_migrations_table, has_breaking_column, has_workers = state
        revision = breaking = None
        if has_migrations_table:
            operation = (
                "migrator/revisions"
                if has_breaking_column
                else "migrator/revisions_without_breaking"
            )
            cur.execute(catalog.render(operation, schema))
            row = cur.fetchone()
            assert row is not None
            revision, breaking = row
    return _Revisions(
        server_version_num=server_version_num,
        revision=revision,
        breaking_revision=breaking,
        has_breaking_column=has_breaking_column,
        has_migrations_table=has_migrations_table,
        flavour=GRAPHILE_WORKER_RS if has_workers else GRAPHILE_WORKER,
    )


def _status(revisions: _Revisions) -> SchemaStatus:
    revision, breaking = revisions.revision, revisions.breaking_revision
    if revision is None:
        state = SchemaState.MISSING
    elif breaking is not None and breaking > LATEST_REVISION:
        state = SchemaState.AHEAD_INCOMPATIBLE
    elif revision > LATEST_REVISION:
        state = SchemaState.AHEAD_COMPATIBLE
    elif revision == LATEST_REVISION:
        state = SchemaState.CURRENT
    else:
        state = SchemaState.BEHIND
    return SchemaStatus(
        state=state,
        revision=revision,
        breaking_revision=breaking,
        server_version_num=revisions.server_version_num,
        flavour=revisions.flavour,
    )


def schema_status(conn: psycopg.Connection[Any], schema: str) -> SchemaStatus:
    """Read where ``schema`` stands; writes nothing and takes no lock."""
    return _status(_read(conn, schema))


def _check(revisions: _Revisions, schema: str) -> None:
    if revisions.server_version_num < MIN_SERVER_VERSION_NUM:
        raise UnsupportedServerError(
            f"PostgreSQL server_version_num {revisions.server_version_num} is too old:"
            f" graphile-worker needs PostgreSQL 12 ({MIN_SERVER_VERSION_NUM}) or newer"
        )
    breaking = revisions.breaking_revision
    if breaking is not None and breaking > LATEST_REVISION:
        raise IncompatibleSchemaError(
            f"schema {schema!r} has breaking revision {breaking}, newer than revision"
            f" {LATEST_REVISION} that this version of graphile-worker-utils knows;"
            " upgrade graphile-worker-utils",
            database_revision=breaking,
            known_revision=LATEST_REVISION,
        )


def _record_and_apply(
    conn: psycopg.Connection[Any],
    schema: str,
    revisions: list[int],
    operation: str,
    *,
    notify: bool,
) -> None:
    breaking_ids = sorted(BREAKING_REVISIONS)
    with cursor(conn) as cur:
        cur.execute(
            catalog.render("migrator/record", schema),
            {"ids": revisions, "breaking_ids": breaking_ids},
        )
        # A script of many statements: never prepared, whatever the connection's
        # prepare_threshold (0 would prepare it, which PostgreSQL refuses).
        cur.execute(catalog.render(operation, schema), prepare=False)
        if notify:
            cur.execute(
                catalog.render("migrator/notify", schema),
                {
                    "revision": revisions[-1],
                    "breaking": any(r in BREAKING_REVISIONS for r in revisions),
                },
            )


def _step(
    conn: psycopg.Connection[Any], schema: str, owned: bool
) -> tuple[list[int], bool, int] | None:
    """One transaction of migration work: (revisions applied, installed, revision now), or
    None when the migrations table was only brought up to date and needs another look.

    Applies nothing when the schema is current (or ahead).
    Raises _PeerInProgress when another migrator holds the schema somewhere in 1..15.
    """
    with atomic(conn, owned=owned), cursor(conn) as cur:
        cur.execute(catalog.render("migrator/lock", schema), {"schema_name": schema})
        revisions = _read(conn, schema)
        _check(revisions, schema)
        if not revisions.has_migrations_table:
            cur.execute(catalog.render("migrator/bootstrap", schema), prepare=False)
        elif not revisions.has_breaking_column:
            cur.execute(catalog.render("migrator/add_breaking_column", schema), prepare=False)
            cur.execute(
                catalog.render("migrator/flag_breaking", schema),
                {"breaking_ids": sorted(BREAKING_REVISIONS)},
            )
            return None  # committed on its own, as graphile-worker does; then look again
        current = revisions.revision
        if current is None:
            # A fresh install: decided here, under the lock, by the one migrator that installs.
            # Silent, because a notification would only stop other schemas' pools (see above).
            everything = list(range(1, LATEST_REVISION + 1))
            _record_and_apply(conn, schema, everything, "migrations/install", notify=False)
            return everything, True, LATEST_REVISION
        if current >= LATEST_REVISION:
            _leave_alone(revisions, schema, current)
            return [], False, current
        if current < OLDEST_UPGRADABLE_REVISION:
            raise _PeerInProgress(current)
        following = current + 1
        _record_and_apply(conn, schema, [following], f"migrations/{following:06d}", notify=True)
        return [following], False, following


def _leave_alone(revisions: _Revisions, schema: str, current: int) -> None:
    """Apply nothing to a schema at or past our revision; warn when it is past what we know.

    The Rust crate's revisions 20..22 are its own, written with its functions: they are known
    and left to it (applying graphile-worker's 20 would overwrite them).
    """
    if revisions.flavour == GRAPHILE_WORKER_RS and current <= RUST_LATEST_REVISION:
        logger.info(
            "graphile_worker_utils: schema %r is at graphile_worker_rs revision %d; leaving it"
            " to the crate",
            schema,
            current,
        )
        return
    if current > LATEST_REVISION:
        known = RUST_LATEST_REVISION if revisions.flavour == GRAPHILE_WORKER_RS else LATEST_REVISION
        message = (
            f"schema {schema!r} is at {revisions.flavour} revision {current}, newer than"
            f" revision {known} that graphile-worker-utils knows; no newer revision is"
            " breaking, so carrying on"
        )
        logger.warning(message)
        warnings.warn(message, stacklevel=5)


def _breaking_after(revision: int) -> str:
    # For messages: the breaking revisions migrating from ``revision`` would apply.
    breaking = [r for r in sorted(BREAKING_REVISIONS) if revision < r <= LATEST_REVISION]
    return ", ".join(str(r) for r in breaking)


class _PeerInProgress(Exception):
    def __init__(self, revision: int) -> None:
        self.revision = revision


def migrate(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    owned: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> MigrationReport:
    """Bring ``schema`` to :data:`LATEST_REVISION` (see :meth:`WorkerUtils.migrate`)."""
    applied: list[int] = []
    installed = False
    peer = _PeerWatch(schema)
    collisions = 0

    def failed(error: psycopg.Error) -> MigrationError:
        at = f" at revision {applied[-1] + 1}" if applied else ""
        return MigrationError(f"migrating schema {schema!r} failed{at}: {error}")

    while True:
        with wrap_exceptions("migrate", schema, failed):
            try:
                step = _step(conn, schema, owned)
            except _CONCURRENT_MIGRATOR_ERRORS as error:
                # Another migrator (graphile-worker itself, most likely) recorded the same
                # revision or created the same object first; look again at what is there now.
                collisions += 1
                if collisions > _MAX_COLLISIONS:
                    raise MigrationError(
                        f"migrating schema {schema!r}: still colliding with another migrator"
                        f" after {_MAX_COLLISIONS} attempts: {error}"
                    ) from error
                continue
            except _PeerInProgress as busy:
                peer.saw(busy.revision)
                sleep(_PEER_POLL_SECONDS)
                continue
        if step is None:
            continue
        done, installed_now, revision = step
        if not done:
            return MigrationReport(applied=tuple(applied), revision=revision, installed=installed)
        applied.extend(done)
        installed = installed or installed_now
        logger.info("graphile_worker_utils: schema %r migrated to revision %d", schema, revision)


class _PeerWatch:
    """Revisions 1..15 are graphile-worker's alone. If one of its migrators is working through
    them, migrate() waits for it to reach 16; a schema that stays there is too old."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.last_seen: int | None = None
        self.since = time.monotonic()

    def saw(self, revision: int) -> None:
        """Note the peer at ``revision``; SchemaTooOldError once it has not moved for long."""
        if revision != self.last_seen:
            self.last_seen, self.since = revision, time.monotonic()
        elif time.monotonic() - self.since > _PEER_STALL_SECONDS:
            raise SchemaTooOldError(
                f"schema {self.schema!r} is at revision {revision}; graphile-worker-utils"
                f" upgrades schemas from revision {OLDEST_UPGRADABLE_REVISION} up. Run"
                " graphile-worker 0.16 or newer against it once (for example"
                " `graphile-worker --schema-only`), then migrate again; together they"
                f" apply breaking revisions {_breaking_after(revision)}, which stop"
                " the workers running on it now (upgrade them to graphile-worker 0.17+"
                " first)"
            ) from None
