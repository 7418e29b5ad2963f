"""WorkerUtils: the façade, one short method per operation.

Each method checks its arguments and prepares its statement parameters with pure functions
(:mod:`._batch`, :mod:`._tasks`, :mod:`._maintenance`), gets a connection from its
:class:`._connector.Connector`, and runs the statement (:mod:`._enqueue`, :mod:`._maintenance`,
:mod:`._cleanup`, :mod:`._migrations`, :mod:`._status`, :mod:`._reads`) under
:func:`._connector.wrap_exceptions`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from . import _bulk_enqueue, _enqueue, _migrations
from ._batch import BATCH_SLICE, Enqueue, job_params, prepare_batch
from ._bulk import DEFAULT_CHUNK_SIZE, check_chunk_size, iterate
from ._cleanup import (
    CLEANUP_BUSY_TIMEOUT,
    busy_timeout_seconds,
    keep_list,
    run_cleanup,
    wanted_tasks,
)
from ._connector import ConnectionOrPool, Connector, new_pool, start_pool, wrap_exceptions
from ._enqueue import KEY_RACE_ATTEMPTS, check_params
from ._errors import ConfigurationError, HookError
from ._hooks import BeforeScheduleHook, current_trace, operation_span
from ._maintenance import fetch, job_ids, reschedule_params, worker_ids
from ._migrations import MigrationReport, SchemaStatus
from ._payload import JsonDumps
from ._public import public
from ._reads import (
    LockedWorker,
    job_id_param,
    job_key_param,
    list_query,
    locked_workers_from_rows,
    older_than_param,
    one_job,
    read,
)
from ._rows import ID, jobs_from_rows
from ._status import StatusReport, read_status, status_filters
from ._tasks import iter_raw_jobs, raw_jobs, task_identifier, task_payload
from ._templates import validate_schema_name
from ._types import (
    DEFAULT_SPEC,
    MAX_JOB_KEY_LENGTH,
    CleanupTask,
    Job,
    JobSpec,
    JobState,
    RawJobSpec,
    RescheduleOptions,
    Task,
    check_duration,
    check_items,
    check_text,
)

__all__ = ["BATCH_SLICE", "KEY_RACE_ATTEMPTS", "ConnectionOrPool", "WorkerUtils"]

logger = logging.getLogger("graphile_worker_utils")

_Self = TypeVar("_Self", bound="WorkerUtils")
_UTC = dt.timezone.utc


def _hooks(hooks: object) -> tuple[BeforeScheduleHook, ...]:
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise HookError(f"hooks: expected a sequence of callables, got {type(hooks).__name__}")
    checked = tuple(hooks)
    for index, hook in enumerate(checked):
        if not callable(hook):
            raise HookError(f"hooks[{index}]: {hook!r} is not callable")
    return checked


def _check_wait_timeout(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"wait_timeout: expected a number of seconds, got {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(
            f"wait_timeout: must be a finite number of seconds > 0, got {value}"
        )


@public
class WorkerUtils:
    """Enqueue and maintain graphile-worker jobs on a connection or a pool.

    With a ``psycopg.Connection``, every operation runs on it inside whatever transaction the
    caller has open: a rollback removes the jobs, and no other session sees them before the
    commit. The library never commits, rolls back, closes or reconfigures that connection;
    on an autocommit connection, each enqueue is its own transaction. With a
    ``psycopg_pool.ConnectionPool``, each operation borrows a connection and commits when it
    succeeds. :meth:`using` binds an instance to a caller's connection for a call or a block.

    Example::

        with psycopg.connect(dsn) as conn:          # a transaction opens on first use
            conn.execute("insert into orders ...")
            utils = WorkerUtils(conn)
            utils.add_raw_job("send_receipt", {"order_id": 42})
        # committed together: the job exists if and only if the order does

    Parameters:
        conn_or_pool: the connection or pool to work on.
        schema: graphile-worker's schema (``graphile_worker``); quoted, never pasted.
        use_local_time: fill an unset ``run_at`` with this process's UTC clock (one value per
            batch) instead of the database's ``now()``.
        hooks: before-schedule hooks, ``hook(identifier, payload, spec)`` returning
            :class:`Continue`, :class:`Skip` or :class:`Fail`; run in order on every job
            before any SQL.
        json_dumps: encode payloads with this function (returning ``str``) instead of the
            library's encoder.
    """

    def __init__(
        self,
        conn_or_pool: ConnectionOrPool,
        *,
        schema: str = "graphile_worker",
        use_local_time: bool = False,
        hooks: Sequence[BeforeScheduleHook] = (),
        json_dumps: JsonDumps | None = None,
    ) -> None:
        if not isinstance(conn_or_pool, (psycopg.Connection, ConnectionPool)):
            raise ConfigurationError(
                "conn_or_pool: expected a psycopg.Connection or a psycopg_pool.ConnectionPool,"
                f" got {type(conn_or_pool).__name__}"
            )
        self._schema = validate_schema_name(schema)
        self._connector = Connector(conn_or_pool, self._schema)
        self._use_local_time = bool(use_local_time)
        self._hooks = _hooks(hooks)
        if json_dumps is not None and not callable(json_dumps):
            raise ConfigurationError("json_dumps: expected a callable returning str")
        self._json_dumps = json_dumps

    # -- connections ----------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        conninfo: str = "",
        *,
        schema: str = "graphile_worker",
        min_size: int = 1,
        max_size: int = 4,
        use_local_time: bool = False,
        hooks: Sequence[BeforeScheduleHook] = (),
        json_dumps: JsonDumps | None = None,
        wait_timeout: float = 10.0,
        **connect_kwargs: Any,
    ) -> WorkerUtils:
        """Open an instance that owns a connection pool, for scripts and cron jobs.

        ``conninfo`` is a libpq connection string or URI (empty: the ``PG*`` environment
        variables); ``connect_kwargs`` go to each connection (for example
        ``prepare_threshold=None`` behind PgBouncer). It opens one connection first, and
        raises :class:`DatabaseError` with PostgreSQL's reason at once when that fails (an
        unknown role or database, a refused port, bad credentials), or when the server has not
        answered within ``wait_timeout`` seconds; then it waits for the pool's first connection
        within what is left of ``wait_timeout``. Close it with :meth:`close` or a ``with``
        block::

            with WorkerUtils.connect("postgresql://app@db/app") as utils:
                utils.cleanup([CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS])
        """
        validate_schema_name(schema)
        _check_wait_timeout(wait_timeout)
        pool = new_pool(
            conninfo, min_size=min_size, max_size=max_size, connect_kwargs=connect_kwargs
        )
        utils = cls(
            pool, schema=schema, use_local_time=use_local_time, hooks=hooks, json_dumps=json_dumps
        )
        start_pool(pool, conninfo, wait_timeout, connect_kwargs)
        utils._connector.owns_pool = True
        return utils

    def close(self) -> None:
        """Close the pool this instance opened with :meth:`connect`; otherwise do nothing."""
        self._connector.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def using(self, conn: psycopg.Connection[Any]) -> WorkerUtils:
        """This configuration bound to ``conn``: for one call, or a ``with`` block.

        The bound instance joins ``conn``'s transaction like any connection-based instance;
        leaving the block neither commits nor closes ``conn``::

            with conn.transaction():
                conn.execute("update accounts ...")
                utils.using(conn).add_raw_job("recalculate", {"account": 7})
        """
        if not isinstance(conn, psycopg.Connection):
            raise ConfigurationError(
                f"conn: expected a psycopg.Connection, got {type(conn).__name__}"
            )
        bound = WorkerUtils.__new__(WorkerUtils)
        bound.__dict__.update(self.__dict__)
        bound._connector = Connector(conn, self._schema)
        return bound

    @property
    def schema(self) -> str:
        """The graphile-worker schema this instance works on (unquoted)."""
        return self._schema

    @property
    def _target(self) -> ConnectionOrPool:
        # The connection or pool (tests look at it).
        return self._connector.target

    def _enqueue_context(self) -> Enqueue:
        # What every job of one enqueue call shares, taken when the call is made.
        now = dt.datetime.now(_UTC) if self._use_local_time else None
        return Enqueue(
            hooks=self._hooks, json_dumps=self._json_dumps, trace=current_trace(), now=now
        )

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> MigrationReport:
        """Create or upgrade the schema to revision 20, as graphile-worker 0.18 would.

        Safe to run from many processes at once, and beside graphile-worker (Node.js) or the
        Rust crate migrating the same database. A fresh schema gets the revision-20 shape in
        one transaction; a schema at revision 16..19 gets each later revision in its own
        transaction (savepoints inside a caller's open transaction, which the caller commits).
        Refuses a schema with a newer breaking revision (:class:`IncompatibleSchemaError`), a
        PostgreSQL older than 12 (:class:`UnsupportedServerError`) and a schema older than
        revision 16 (:class:`SchemaTooOldError`); warns and carries on past a newer
        non-breaking revision. A schema the Rust crate (graphile_worker_rs) migrated to its own
        revisions 20..22 is recognised and left as it is, without a warning.

        Each applied upgrade revision sends graphile-worker's ``worker:migrate`` notification
        on commit; a breaking one (19, from 18) shuts down every graphile-worker of the
        database, whatever schema it serves (the channel names no schema). A fresh install
        sends none, so installing a new schema never stops the pools of other schemas.
        """
        with (
            operation_span("migrate", self._schema, enqueue=False),
            self._connector.connection() as (conn, owned),
        ):
            return _migrations.migrate(conn, self._schema, owned=owned)

    def schema_status(self) -> SchemaStatus:
        """Say whether the schema is missing, behind, current, or ahead, and whose migrations
        shaped it (``flavour``: graphile-worker or graphile_worker_rs); writes nothing."""
        with (
            self._connector.connection() as (conn, _),
            wrap_exceptions("schema_status", self._schema),
        ):
            return _migrations.schema_status(conn, self._schema)

    def status(
        self,
        *,
        task_identifiers: Iterable[str] | None = None,
        queue_names: Iterable[str] | None = None,
    ) -> StatusReport:
        """Count the jobs in each :class:`JobState` per task and queue, and list the locked
        queues; writes nothing.

        ``task_identifiers`` and ``queue_names`` keep only those tasks and queues (None: all;
        a queue filter leaves out the jobs outside any queue). Raises
        :class:`SchemaMissingError` when the schema has no graphile-worker tables.
        """
        filters = status_filters(task_identifiers, queue_names)
        with (
            operation_span("status", self._schema, enqueue=False),
            self._connector.connection() as (conn, _),
        ):
            check_params(conn, filters.items())
            with wrap_exceptions("status", self._schema):
                return read_status(conn, self._schema, filters)

    # -- reading --------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        """The job with ``job_id`` (its payload and :class:`JobState` included), None when
        there is none; writes nothing.

        On a connection it joins the open transaction and sees its uncommitted jobs. A job
        whose task row is gone is not found (graphile-worker's ``jobs`` view hides it too).
        """
        return one_job(read(self._connector, "get_job", job_id_param(job_id)))

    def get_job_by_key(self, job_key: str) -> Job | None:
        """The job with this ``job_key``, None when no job has it; writes nothing.

        A running job that :meth:`remove_job` detached, or that a newer job with the same key
        replaced while it ran, has lost its key and is found only by id.
        """
        return one_job(read(self._connector, "get_job_by_key", job_key_param(job_key)))

    def list_jobs(
        self,
        *,
        task_identifiers: Iterable[str] | None = None,
        queue_names: Iterable[str] | None = None,
        states: Iterable[JobState | str] | None = None,
        locked_by: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
        include_payload: bool = False,
    ) -> list[Job]:
        """A page of jobs in id order: those after ``after_id``, at most ``limit`` (1..10 000);
        writes nothing.

        Each filter is None (no filter) or a list; the filters combine with AND (a queue filter
        leaves out the jobs outside any queue). ``states`` are :class:`JobState` members or
        their values; ``locked_by`` matches the worker id of any lock, a stale one included.
        The next page starts after the last job: ``after_id=jobs[-1].id``; a page shorter than
        ``limit`` is the last. Keyset pages never repeat or skip a job that existed throughout,
        whatever is added meanwhile (new jobs get higher ids and show on later pages).

        Payloads are left out unless ``include_payload``: each job's ``payload_json`` is then
        None and its ``payload`` raises :class:`PayloadNotLoadedError`.

        A page walks graphile-worker's primary key in id order and stops after ``limit``
        matching jobs, so a filter that matches few jobs of a large table (a rare task,
        ``locked_by``, ``RUNNING``) reads the rest of the table: graphile-worker has no index
        that could serve it, and this library adds none to its schema.
        """
        query = list_query(
            task_identifiers=task_identifiers,
            queue_names=queue_names,
            states=states,
            locked_by=locked_by,
            after_id=after_id,
            limit=limit,
            include_payload=include_payload,
        )
        return jobs_from_rows(read(self._connector, "list_jobs", query.params, **query.clauses))

    def locked_workers(self, *, older_than: dt.timedelta | None = None) -> list[LockedWorker]:
        """The workers holding locks on jobs or queues, oldest lock first; writes nothing.

        With ``older_than``, only the workers whose oldest lock is older than that: the way to
        find crashed workers, whose ids :meth:`force_unlock_workers` takes. Stale locks (over
        four hours) count. Be sure a worker is dead before unlocking it: a live worker keeps
        running the jobs it holds, and once they are unlocked another worker runs them too
        (twice, side effects included), and the queue it holds runs two jobs at once. A long
        job holds its lock for as long as it runs; graphile-worker's own recovery waits four
        hours.
        """
        rows = read(self._connector, "locked_workers", older_than_param(older_than))
        return locked_workers_from_rows(rows)

    # -- enqueueing -----------------------------------------------------------------------

    def add_job(self, task: Task, spec: JobSpec | None = None) -> Job:
        """Enqueue a typed task: its class's ``IDENTIFIER`` names the task, its fields are
        the payload (a JSON object). See :meth:`add_raw_job`.

        ``task`` is an instance of an attrs class or of a dataclass, whose ``IDENTIFIER``
        class attribute (a str, not a field) names the task; each field, ``ClassVar`` ones
        excepted, becomes a key of the payload, its value encoded by the payload rules.
        Anything else (the class itself, a NamedTuple, a plain object, a dict) is refused
        with :class:`InvalidJobSpec` before any SQL; use :meth:`add_raw_job` for other
        payloads.

        Example::

            @attrs.frozen
            class SendEmail:
                IDENTIFIER: ClassVar[str] = "send_email"
                to: str

            utils.add_job(SendEmail(to="ada@example.com"), JobSpec(queue_name="mail"))
        """
        return self.add_raw_job(task_identifier(task, "task"), task_payload(task), spec)

    def add_raw_job(self, identifier: str, payload: Any = None, spec: JobSpec | None = None) -> Job:
        """Enqueue one job for task ``identifier`` and return it as stored.

        ``payload`` is encoded by the payload rules (None: ``{}``). Every ``spec`` value is
        checked before any SQL (:class:`InvalidJobSpec`). All three job-key modes work here,
        including ``UNSAFE_DEDUPE`` (which returns the existing job as it is). If a worker
        locks the keyed job while it is being replaced, nothing is scheduled: the call is
        retried (up to three times) where the library owns the transaction, and raises
        :class:`JobKeyRaceError` inside a caller's transaction.
        """
        params = job_params(identifier, payload, spec, self._enqueue_context())
        identifier = params["identifier"]
        logger.debug("add_job %r on schema %r: %s", identifier, self._schema, params["payload"])
        with operation_span("add_job", self._schema, enqueue=True, identifier=identifier):
            return _enqueue.add_job(self._connector, params, DEFAULT_SPEC if spec is None else spec)

    def add_jobs(self, tasks: Iterable[Task | tuple[Task, JobSpec | None]]) -> list[Job]:
        """Enqueue typed tasks as one batch, all or none (see :meth:`add_raw_jobs`).

        Each item is a task, as :meth:`add_job` takes it, or a ``(task, spec)`` pair: a plain
        ``tuple`` of two items whose second is a :class:`JobSpec` or None. A tuple subclass
        (a NamedTuple) is never taken for a pair, and is refused as a task. Every item is
        checked before any SQL; a refused one raises :class:`InvalidJobSpec` naming its
        position (``jobs[i]``) and nothing is written.
        """
        return self.add_raw_jobs(raw_jobs(tasks))

    def add_raw_jobs(self, jobs: Iterable[RawJobSpec]) -> list[Job]:
        """Enqueue many jobs, all of them or none, in one statement and one round trip (more
        for over 10 000 jobs, or keyed jobs that differ on ``PRESERVE_RUN_AT``: see below).

        Every job is checked, run through the hooks and encoded before any SQL is sent;
        a bad job anywhere raises :class:`InvalidJobSpec` (naming ``jobs[i]`` and the field)
        and nothing is written. Two jobs with the same ``job_key``, and ``UNSAFE_DEDUPE``
        (which only :meth:`add_raw_job` supports), are refused. Empty input returns ``[]``
        without touching the database.

        Each keyed job follows its own ``job_key_mode`` (None: REPLACE), exactly as with
        :meth:`add_raw_job`; a mode on a job without a ``job_key`` has no effect on it or on
        any other job. graphile-worker's ``add_jobs`` takes ``PRESERVE_RUN_AT`` for a whole
        statement, so a batch whose keyed jobs differ on it is sent as one statement per run
        of consecutive jobs that agree (and over 10 000 jobs go 10 000 per statement), in one
        transaction: still all or none.

        The jobs come back in the order the database returned them, which is not the input
        order; match them by ``key`` or ``id``. Each carries its own task identifier and
        queue name, resolved from its row, never from its position.
        """
        items = check_items(jobs, "jobs", "RawJobSpec")
        if not items:
            return []
        batch = prepare_batch(items, self._enqueue_context(), BATCH_SLICE)
        del items  # our copy of the caller's list: not needed while the jobs are built
        logger.debug("add_jobs: %d jobs on schema %r", batch.count, self._schema)
        with operation_span("add_jobs", self._schema, enqueue=True, count=batch.count):
            return _enqueue.add_jobs(self._connector, batch)

    def bulk_add_jobs(
        self,
        tasks: Iterable[Task | tuple[Task, JobSpec | None]],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> int:
        """Enqueue typed tasks in bulk and return how many were scheduled: the typed twin of
        :meth:`bulk_add_raw_jobs`, taking items as :meth:`add_jobs` does (a task or a
        ``(task, spec)`` pair), read lazily."""
        return self.bulk_add_raw_jobs(iter_raw_jobs(tasks), chunk_size=chunk_size)

    def bulk_add_raw_jobs(
        self, jobs: Iterable[RawJobSpec], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> int:
        """Enqueue any number of jobs, all of them or none, and return how many were scheduled.

        ``jobs`` may be any iterable, a generator of millions included: it is read
        ``chunk_size`` jobs at a time (1..100 000; 10 000 by default), each chunk checked,
        hooked and encoded as :meth:`add_raw_jobs` does and sent before the next is read, so
        memory stays that of a chunk (plus the job keys seen, see below). No job rows come
        back, which makes this the fastest way in.

        All or nothing: the call is one transaction where the library owns it (a pool, or an
        autocommit connection outside a transaction) and a savepoint inside the caller's. A
        bad job anywhere (:class:`InvalidJobSpec` naming ``jobs[i]``, its position in the
        whole input), a hook's refusal, the input raising (:class:`InvalidJobSpec`) or the
        database refusing a statement leaves nothing of this call behind, and the caller's
        transaction usable. Empty input returns 0 without touching the database.

        Job keys follow :meth:`add_raw_jobs`' rules across the whole input: each keyed job
        follows its own ``job_key_mode``; ``UNSAFE_DEDUPE`` is refused, and so is a
        ``job_key`` used twice, even in different chunks (the keys seen are kept for that:
        memory grows with the number of keyed jobs only). Keyed jobs go through
        graphile-worker's ``add_jobs``. If a worker locks a keyed job while it is being
        replaced, the call raises :class:`JobKeyRaceError` with nothing kept; it is not
        retried, since the input may be an iterator that cannot be read twice.

        Keyless jobs are written by two set-based statements of the library's own, which
        write exactly what ``add_jobs`` would (the same rows, defaults, flags and one
        ``jobs:insert`` notification per chunk), with their ids drawn in input order. They
        are used only where the schema's ``add_jobs`` is graphile-worker's revision-20
        function (the library's or graphile-worker 0.18's, recognised by a fingerprint of
        its body; not the Rust crate's) and the connection's client encoding is UTF-8;
        elsewhere every job goes through ``add_jobs``.

        Example::

            def signups():
                for row in read_csv("signups.csv"):
                    yield RawJobSpec("send_welcome", {"user_id": row["id"]})

            scheduled = utils.bulk_add_raw_jobs(signups())
        """
        size = check_chunk_size(chunk_size)
        items = iterate(jobs, "RawJobSpec")
        enqueue = self._enqueue_context()
        with operation_span("bulk_add_jobs", self._schema, enqueue=True):
            count = _bulk_enqueue.bulk_add(self._connector, items, size, enqueue)
        logger.debug("bulk_add_jobs: %d jobs on schema %r", count, self._schema)
        return count

    # -- maintenance ----------------------------------------------------------------------

    def remove_job(self, job_key: str) -> Job | None:
        """Remove the job with ``job_key``; None when no job has that key.

        A job that a worker has locked (is running) is not deleted: it loses its key and its
        remaining attempts, so it finishes this run and is never retried. The returned job
        shows that state.
        """
        check_text("job_key", job_key, max_length=MAX_JOB_KEY_LENGTH)
        (row,) = fetch(self._connector, "remove_job", {"job_key": job_key})
        return None if row[ID] is None else jobs_from_rows([row])[0]

    def complete_jobs(self, job_ids: Iterable[int]) -> list[Job]:
        """Delete the jobs with these ids as if they had succeeded; return the deleted ones.

        Jobs a worker has locked are skipped (a lock older than four hours counts as
        released); unknown ids are ignored.
        """
        return jobs_from_rows(fetch(self._connector, "complete_jobs", {"job_ids": _ids(job_ids)}))

    def permanently_fail_jobs(self, job_ids: Iterable[int], reason: str | None = None) -> list[Job]:
        """Mark these jobs permanently failed (attempts = max_attempts) with ``reason`` as
        their last error ("Manually marked as failed" when None); return them.

        Jobs a worker has locked are skipped (a lock older than four hours counts as
        released); unknown ids are ignored.
        """
        if reason is not None:
            reason = check_text("reason", reason)
        params = {"job_ids": _ids(job_ids), "error_message": reason}
        return jobs_from_rows(fetch(self._connector, "permanently_fail_jobs", params))

    def reschedule_jobs(
        self, job_ids: Iterable[int], options: RescheduleOptions | None = None
    ) -> list[Job]:
        """Change when and how these jobs run; a None option keeps the column. Return them.

        Jobs a worker has locked are skipped (a lock older than four hours counts as
        released); unknown ids are ignored.
        """
        params = reschedule_params(job_ids, options)
        return jobs_from_rows(fetch(self._connector, "reschedule_jobs", params))

    def force_unlock_workers(self, worker_ids: Iterable[str]) -> None:
        """Release the jobs and queues locked by these workers (crashed ones, presumably).

        ``worker_ids`` are the ``locked_by`` values: graphile-worker 0.17+ writes its pool id
        (``pool-…``) there. Unlocking a live worker's jobs lets another worker run them twice.
        """
        fetch(self._connector, "force_unlock_workers", {"worker_ids": _worker_ids(worker_ids)})

    def cleanup(
        self,
        tasks: Iterable[CleanupTask] = (CleanupTask.GC_JOB_QUEUES,),
        task_identifiers_to_keep: Iterable[str] = (),
        *,
        busy_timeout: float = CLEANUP_BUSY_TIMEOUT,
        older_than: dt.timedelta | None = None,
    ) -> dict[CleanupTask, int]:
        """Run maintenance and return how many rows each task removed.

        ``older_than`` (a ``timedelta`` >= 0) limits ``DELETE_PERMANENTLY_FAILED_JOBS`` to the
        jobs whose last activity, the later of ``updated_at`` and ``run_at``, is before
        ``now() - older_than``: keep a week of failures for inspection with
        ``timedelta(days=7)``. Both columns count because graphile-worker's workers leave
        ``updated_at`` as it was when a job fails and set ``run_at`` past the failure instead;
        a worker's last failure may so be kept up to its back-off (under 7 hours) longer. It
        has no effect on the other tasks.

        The tasks run in graphile-worker's order (permanently failed jobs, then task
        identifiers, then queues), whatever order they are named in. Locked jobs and queues
        are skipped. ``GC_TASK_IDENTIFIERS`` keeps the identifiers in
        ``task_identifiers_to_keep``: a running worker caches task ids, so deleting an
        identifier it serves hides that task's next jobs from it until it restarts — keep
        the identifiers your workers serve.

        The garbage collections never delete a task or queue that a job being enqueued at
        the same moment uses: they delete only while no transaction that enqueued is open on
        their tables, which they lock for the delete alone (enqueuers wait at most that long;
        they never wait behind cleanup). While such a transaction is open they retry for up to
        ``busy_timeout`` seconds, then raise :class:`CleanupBusyError`. Where the library owns
        the transaction, each step commits on its own; inside the caller's transaction (which
        must be READ COMMITTED for the collections) the locks last until the caller ends it,
        and an error leaves nothing of the run behind.
        """
        wanted = wanted_tasks(tasks)
        keep = keep_list(task_identifiers_to_keep)
        timeout = busy_timeout_seconds(busy_timeout)
        older = check_duration("older_than", older_than)
        with (
            operation_span("cleanup", self._schema, enqueue=False),
            self._connector.connection() as (conn, owned),
        ):
            check_params(conn, [("task_identifiers_to_keep", keep)])
            with wrap_exceptions("cleanup", self._schema):
                return run_cleanup(
                    conn,
                    self._schema,
                    owned=owned,
                    wanted=wanted,
                    keep=keep,
                    busy_timeout=timeout,
                    older_than=older,
                )


# The method parameters shadow these names.
_ids = job_ids
_worker_ids = worker_ids
