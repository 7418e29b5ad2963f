"""The exceptions this library raises.

Every error is a :class:`GraphileWorkerError`. Where a database error caused it, the psycopg
exception is kept as ``__cause__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._public import public

if TYPE_CHECKING:
    from ._types import CleanupTask


@public
class GraphileWorkerError(Exception):
    """Base class of every error raised by ``graphile_worker_utils``."""


@public
class InvalidSchemaName(GraphileWorkerError, ValueError):
    """The schema name cannot name a PostgreSQL schema (empty, NUL, or over 63 bytes)."""


@public
class MigrationError(GraphileWorkerError):
    """``migrate()`` could not bring the schema to the revision this library knows."""


@public
class UnsupportedServerError(MigrationError):
    """The PostgreSQL server is older than graphile-worker supports (12)."""


@public
class IncompatibleSchemaError(MigrationError):
    """The schema carries a breaking revision newer than this library knows.

    A newer graphile-worker migrated this database; its jobs may not be written correctly by
    this version of the library. Upgrade ``graphile-worker-utils``.
    """

    def __init__(self, message: str, *, database_revision: int, known_revision: int) -> None:
        super().__init__(message)
        self.database_revision = database_revision
        self.known_revision = known_revision


@public
class SchemaTooOldError(MigrationError):
    """The schema is at a revision older than this library can upgrade (below 16)."""


@public
class InvalidJobSpec(GraphileWorkerError, ValueError):
    """A job, spec or maintenance argument that the database would refuse.

    Raised before any SQL is sent; the message names the field and the limit. In a batch,
    nothing is written when any job is bad.
    """


@public
class PayloadNotLoadedError(GraphileWorkerError):
    """``Job.payload`` of a job read without its payload: :meth:`WorkerUtils.list_jobs`
    leaves payloads out unless ``include_payload=True`` (its ``payload_json`` is None)."""


@public
class JobScheduleSkipped(GraphileWorkerError):
    """A before-schedule hook skipped the job; nothing was written."""


@public
class JobScheduleFailed(GraphileWorkerError):
    """A before-schedule hook refused the job; nothing was written."""


@public
class ConfigurationError(GraphileWorkerError, TypeError):
    """An argument :class:`WorkerUtils`, :meth:`WorkerUtils.connect` or
    :meth:`WorkerUtils.using` cannot work with: not a connection or pool, a ``json_dumps`` that
    is not callable, a ``wait_timeout`` that is not a duration. Raised before anything is opened
    or sent; the message names the argument."""


@public
class HookError(GraphileWorkerError, TypeError):
    """A before-schedule hook is not callable, or returned something other than
    :class:`Continue`, :class:`Skip` or :class:`Fail`; the message names the hook. Nothing was
    written."""


@public
class JobKeyRaceError(GraphileWorkerError):
    """A keyed job was locked by a worker while this call replaced it; nothing was scheduled.

    graphile-worker's ``add_job`` returns no job in that case (docs/schema.md §2); the Rust
    crate's (graphile_worker_rs) raises SQLSTATE ``GWNOR``, the ``__cause__`` then. Where the
    library owns the transaction (a pool, or an autocommit connection) it retries a few times
    before raising this; inside a caller's transaction it raises at once. Retry the call: after
    ``GWNOR`` the caller's transaction is aborted, so roll it back and retry in a new one.
    """


@public
class ConnectionStateError(GraphileWorkerError):
    """The connection or pool cannot run the operation: the caller's connection is closed or
    in a failed transaction, or the pool is closed (for example an instance used after its
    :meth:`WorkerUtils.connect` block ended). Raised before anything is sent."""


@public
class DatabaseError(GraphileWorkerError):
    """The database refused an operation; the psycopg error is the ``__cause__``."""


@public
class SchemaMissingError(DatabaseError):
    """The schema lacks graphile-worker's tables or functions (it was never migrated, or was
    dropped): run :meth:`WorkerUtils.migrate`. The psycopg error (``UndefinedTable``,
    ``UndefinedFunction``...) is the ``__cause__``."""


@public
class CleanupBusyError(DatabaseError):
    """``cleanup()`` gave up on its garbage collections: transactions that enqueued jobs kept
    the tables they clean open for the whole ``busy_timeout``. Those collections deleted
    nothing; run cleanup again later. The ``LockNotAvailable`` of the last try is the cause.

    ``tasks`` are the collections not run. ``removed`` is what the tasks before them removed
    and committed (where the library owns the transaction; inside the caller's transaction
    cleanup leaves nothing behind when it raises, so it is empty there).
    """

    def __init__(
        self, message: str, *, tasks: tuple[CleanupTask, ...], removed: dict[CleanupTask, int]
    ) -> None:
        super().__init__(message)
        self.tasks = tasks
        self.removed = removed
