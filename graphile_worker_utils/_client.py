"""WorkerUtils: the blocking client over the template catalog."""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from types import TracebackType
from typing import Any, TypeVar, Union

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from . import _migrations
from ._cleanup import (
    CLEANUP_BUSY_TIMEOUT,
    busy_timeout_seconds,
    keep_list,
    run_cleanup,
    wanted_tasks,
)
from ._cursors import cursor as _cursor
from ._cursors import instant
from ._errors import (
    ConnectionStateError,
    DatabaseError,
    GraphileWorkerError,
    HookError,
    InvalidJobSpec,
    JobKeyRaceError,
)
from ._hooks import BeforeScheduleHook, current_trace, operation_span, run_hooks, with_trace
from ._migrations import MigrationReport, SchemaStatus
from ._payload import JsonDumps, array_element_at, dumps, encode_payload, encode_payloads
from ._probe import probe
from ._templates import catalog, validate_schema_name
from ._transactions import atomic
from ._types import (
    BIGINT_MAX,
    BIGINT_MIN,
    DEFAULT_SPEC,
    MAX_IDENTIFIER_LENGTH,
    MAX_JOB_KEY_LENGTH,
    CleanupTask,
    Job,
    JobKeyMode,
    JobSpec,
    RawJobSpec,
    RescheduleOptions,
    Task,
    check_int,
    check_items,
    check_text,
)

logger = logging.getLogger("graphile_worker_utils")

ConnectionOrPool = Union["psycopg.Connection[Any]", "ConnectionPool[Any]"]
_Self = TypeVar("_Self", bound="WorkerUtils")

#: How many times an enqueue is retried after losing the job-key race (schema.md §2) when the
#: library owns the transaction.
KEY_RACE_ATTEMPTS = 3
_KEY_RACE_MARKER = "graphile_worker_utils: job key race"
# Without a job key, add_job(s) returns fewer jobs than asked only when its own statements
# cannot see the rows it writes: row level security (on, without policies, on graphile-worker's
# private tables) for a role that neither owns them nor bypasses it.
_INVISIBLE_ROWS = (
    "{what}: the database scheduled fewer jobs than asked although no job key was given; the"
    " role cannot see the rows it writes. Row level security is on for graphile-worker's"
    " _private_* tables: use a role that owns them or has BYPASSRLS, or add policies that let"
    " it read and write them (README, 'Least privilege')"
)
_FETCH_SLICE = 2000
# Statement parameters named otherwise in the API, for messages.
_ARGUMENTS = {"error_message": "reason"}
#: The most jobs :meth:`WorkerUtils.add_raw_jobs` sends in one statement.
BATCH_SLICE = 10_000

_UTC = dt.timezone.utc


def _job(
    row: tuple[Any, ...],
    task_identifier: str,
    queue_name: str | None,
    at: Callable[[int], dt.datetime] = instant,
) -> Job:
    (
        id_,
        task_id,
        job_queue_id,
        payload_json,
        priority,
        run_at,
        attempts,
        max_attempts,
        last_error,
        created_at,
        updated_at,
        key,
        locked_at,
        locked_by,
        revision,
        flags,
        _,
        _,
    ) = row
    # Our cursors load timestamptz as microseconds (see _cursors.instant).
    return Job(
        id_,
        task_identifier,
        queue_name,
        payload_json,
        priority,
        at(run_at),
        attempts,
        max_attempts,
        last_error,
        at(created_at),
        at(updated_at),
        key,
        None if locked_at is None else at(locked_at),
        locked_by,
        revision,
        None if flags is None else list(flags),
        task_id,
        job_queue_id,
    )


def _jobs(rows: list[tuple[Any, ...]]) -> list[Job]:
    # Maintenance results: the jobs' tasks and queues existed before the statement.
    return [_job(row, row[16], row[17]) for row in rows]


#: What add_job and add_jobs accept as a task, for their error messages.
_TASK_SHAPES = (
    "an instance of an attrs class or a dataclass whose IDENTIFIER class attribute names the"
    " task (use add_raw_job(s) for any other payload)"
)


def _task_fields(task: object, where: str) -> tuple[str, ...]:
    # Only attrs classes and dataclasses: their fields are named, so the payload is a JSON
    # object. A NamedTuple or a plain object would be an array or be refused by the encoder.
    if isinstance(task, type):
        raise InvalidJobSpec(
            f"{where}: got the class {task.__name__}, not an instance; expected {_TASK_SHAPES}"
        )
    cls = type(task)
    if attrs.has(cls):
        return tuple(field.name for field in attrs.fields(cls))
    if dataclasses.is_dataclass(cls):
        return tuple(field.name for field in dataclasses.fields(cls))
    raise InvalidJobSpec(f"{where}: {cls.__name__} is not a typed task; expected {_TASK_SHAPES}")


def _task_identifier(task: object, where: str) -> str:
    name = type(task).__name__
    if "IDENTIFIER" in _task_fields(task, where):
        raise InvalidJobSpec(
            f"{where}: {name}.IDENTIFIER is a field, so it would be sent in the payload; declare"
            " it as a class attribute: IDENTIFIER: ClassVar[str] = ..."
        )
    identifier = getattr(type(task), "IDENTIFIER", None)
    if identifier is None:
        raise InvalidJobSpec(f"{where}: {name} has no IDENTIFIER class attribute naming its task")
    if not isinstance(identifier, str):
        raise InvalidJobSpec(
            f"{where}: {name}.IDENTIFIER: expected a str, got {type(identifier).__name__}"
        )
    return identifier


def _task_payload(task: object) -> dict[str, Any]:
    # A typed task's payload is a dict of its fields (not deep-copied), so that trace
    # propagation and hooks see the same shape as for a raw dict payload.
    return {name: getattr(task, name) for name in _task_fields(task, "task")}


def _task_and_spec(item: object, index: int) -> tuple[object, Any]:
    # Only a plain 2-tuple is a pair: a NamedTuple task is a tuple too. The spec's own type is
    # checked by RawJobSpec, which names it (jobs[i].spec).
    if type(item) is not tuple:
        return item, None
    if len(item) != 2:
        raise InvalidJobSpec(
            f"jobs[{index}]: expected a task or a (task, spec) pair, got a tuple of"
            f" {len(item)} item{'' if len(item) == 1 else 's'}"
        )
    return item[0], item[1]


def _statement_runs(preserve: list[bool | None], limit: int) -> list[tuple[int, int, bool]]:
    """Split a batch into runs of consecutive jobs, ``(start, stop, preserve_run_at)``, of at
    most ``limit`` jobs whose keyed jobs agree on PRESERVE_RUN_AT (None: keyless, any run)."""
    runs: list[tuple[int, int, bool]] = []
    start, current = 0, None
    for index, flag in enumerate(preserve):
        differs = flag is not None and current is not None and flag != current
        if index - start == limit or differs:
            runs.append((start, index, bool(current)))
            start, current = index, None
        if flag is not None:
            current = flag
    if start < len(preserve):
        runs.append((start, len(preserve), bool(current)))
    return runs


def _codec(conn: psycopg.Connection[Any]) -> str | None:
    """The codec psycopg encodes text parameters with on ``conn``; None for UTF-8."""
    encoding = conn.info.encoding
    return None if codecs.lookup(encoding).name == "utf-8" else encoding


def _unencodable(
    conn: psycopg.Connection[Any], field: str, error: UnicodeEncodeError
) -> InvalidJobSpec:
    text = error.object[error.start : error.end]
    return InvalidJobSpec(
        f"{field}: {text!r} cannot be sent on this connection, whose client_encoding is"
        f" {conn.info.parameter_status('client_encoding')} (psycopg encodes text parameters in"
        " it); nothing was written. Use a UTF8 connection for such text"
    )


def _check_texts(conn: psycopg.Connection[Any], texts: Iterable[tuple[str, Any]]) -> None:
    """Refuse text the connection's client encoding cannot carry, before any statement:
    psycopg would raise UnicodeEncodeError part-way (after a batch's first slices)."""
    codec = _codec(conn)
    if codec is None:
        return
    for field, value in texts:
        for index, text in enumerate(value if isinstance(value, list) else [value]):
            try:
                if isinstance(text, str):
                    text.encode(codec)
            except UnicodeEncodeError as error:
                name = f"{field}[{index}]" if isinstance(value, list) else field
                raise _unencodable(conn, name, error) from None


def _check_batch_texts(
    conn: psycopg.Connection[Any], slices: list[tuple[dict[str, Any], set[str], set[str]]]
) -> None:
    """:func:`_check_texts` for add_jobs' documents, naming the job and the field."""
    codec = _codec(conn)
    if codec is None:
        return
    for number, (params, _, _) in enumerate(slices):
        for key in ("specs", "payloads"):
            try:
                params[key].encode(codec)
            except UnicodeEncodeError as error:
                index, element = array_element_at(params[key], error.start)
                field = "payload" if key == "payloads" else _unencodable_field(element, codec)
                raise _unencodable(
                    conn, f"jobs[{number * BATCH_SLICE + index}].{field}", error
                ) from None


def _unencodable_field(element: dict[str, Any], codec: str) -> str:
    for field, value in element.items():
        try:
            dumps(value).encode(codec)
        except UnicodeEncodeError:
            return field
    return "spec"  # pragma: no cover - the element held the text that failed


def _check_schema_encoding(conn: psycopg.Connection[Any], schema: str) -> None:
    # Statements are sent as UTF-8 with the schema name in them; a connection in another
    # client encoding would read a non-ASCII name as other characters.
    if not schema.isascii() and _codec(conn) is not None:
        raise ConnectionStateError(
            f"schema {schema!r} is not ASCII and this connection's client_encoding is"
            f" {conn.info.parameter_status('client_encoding')}; use a UTF8 connection"
        )


def _job_ids(job_ids: Iterable[int]) -> list[int]:
    return [
        check_int(f"job_ids[{index}]", job_id, BIGINT_MIN, BIGINT_MAX)
        for index, job_id in enumerate(check_items(job_ids, "job_ids", "int"))
    ]


def _spec_fields(spec: JobSpec, run_at: dt.datetime | None) -> dict[str, Any]:
    # The spec's part of one element of the add_jobs JSON document. None fields are left
    # out: a JSON null would become the json value 'null', not SQL NULL, for the payload.
    fields: dict[str, Any] = {}
    if spec.queue_name is not None:
        fields["queue_name"] = spec.queue_name
    if spec.run_at is not None:
        run_at = spec.run_at
    if run_at is not None:
        fields["run_at"] = run_at.isoformat()
    if spec.max_attempts is not None:
        fields["max_attempts"] = spec.max_attempts
    if spec.job_key is not None:
        fields["job_key"] = spec.job_key
    if spec.priority is not None:
        fields["priority"] = spec.priority
    if spec.flags is not None:
        fields["flags"] = list(spec.flags)
    return fields


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
            raise TypeError(
                "conn_or_pool: expected a psycopg.Connection or a psycopg_pool.ConnectionPool,"
                f" got {type(conn_or_pool).__name__}"
            )
        self._target = conn_or_pool
        self._schema = validate_schema_name(schema)
        self._use_local_time = bool(use_local_time)
        if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
            raise HookError(f"hooks: expected a sequence of callables, got {type(hooks).__name__}")
        self._hooks = tuple(hooks)
        for index, hook in enumerate(self._hooks):
            if not callable(hook):
                raise HookError(f"hooks[{index}]: {hook!r} is not callable")
        if json_dumps is not None and not callable(json_dumps):
            raise TypeError("json_dumps: expected a callable returning str")
        self._json_dumps = json_dumps
        self._owns_pool = False

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
        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs=connect_kwargs,
            # A connection a restarted server dropped is replaced, not handed out.
            check=ConnectionPool.check_connection,
            name="graphile_worker_utils",
            open=False,
        )
        utils = cls(
            pool, schema=schema, use_local_time=use_local_time, hooks=hooks, json_dumps=json_dumps
        )
        # Fail here, clearly and at once, rather than at the first operation or after a wait
        # that hides the reason in psycopg_pool's log.
        left = probe(conninfo, wait_timeout, connect_kwargs)
        try:
            pool.open()
            pool.wait(timeout=max(left, 0.0))
        except PoolTimeout as error:
            pool.close()
            raise DatabaseError(
                f"the pool could not open a connection within {wait_timeout:g} s, although a"
                " first connection did (psycopg_pool's log has the reason)"
            ) from error
        except BaseException:
            pool.close()
            raise
        utils._owns_pool = True
        return utils

    def close(self) -> None:
        """Close the pool this instance opened with :meth:`connect`; otherwise do nothing."""
        if self._owns_pool and isinstance(self._target, ConnectionPool):
            self._target.close()

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
            raise TypeError(f"conn: expected a psycopg.Connection, got {type(conn).__name__}")
        bound = WorkerUtils.__new__(WorkerUtils)
        bound.__dict__.update(self.__dict__)
        bound._target = conn
        bound._owns_pool = False
        return bound

    @property
    def schema(self) -> str:
        """The graphile-worker schema this instance works on (unquoted)."""
        return self._schema

    @contextmanager
    def _connection(
        self, *, single_statement: bool = False
    ) -> Iterator[tuple[psycopg.Connection[Any], bool]]:
        """The connection to use, and whether the library owns its transaction."""
        target = self._target
        if isinstance(target, ConnectionPool):
            with self._pooled(target, single_statement) as conn:
                _check_schema_encoding(conn, self._schema)
                yield conn, True
            return
        if target.closed:
            raise ConnectionStateError("the connection is closed")
        status = target.info.transaction_status
        if status == pq.TransactionStatus.INERROR:
            raise ConnectionStateError(
                "the connection's transaction has already failed (an earlier statement raised);"
                " roll it back before using graphile_worker_utils on it"
            )
        _check_schema_encoding(target, self._schema)
        yield target, target.autocommit and status == pq.TransactionStatus.IDLE

    @contextmanager
    def _pooled(
        self, pool: ConnectionPool[Any], single_statement: bool
    ) -> Iterator[psycopg.Connection[Any]]:
        # The operations turn their own database errors into library errors; what arrives
        # here comes from the pool itself, before any statement of ours was sent.
        try:
            with pool.connection() as conn:
                if not single_statement or conn.autocommit:
                    yield conn
                    return
                # One statement is its own transaction: in autocommit it costs one round
                # trip instead of three (BEGIN, the statement, COMMIT). The pool's setting
                # is put back before the connection returns to it.
                conn.autocommit = True
                try:
                    yield conn
                finally:
                    with suppress(psycopg.Error):
                        conn.autocommit = False
        except PoolTimeout as error:
            raise DatabaseError(
                f"no connection from the pool {pool.name!r} within {pool.timeout:g} s"
                f" (is the database reachable?): {error}"
            ) from error
        except PoolClosed as error:
            ended = " (its WorkerUtils.connect() block ended)" if self._owns_pool else ""
            raise ConnectionStateError(
                f"the pool {pool.name!r} is closed{ended}; nothing was sent"
            ) from error
        except psycopg.Error as error:
            raise DatabaseError(f"the pool {pool.name!r} failed: {error}") from error

    def _database_error(self, operation: str, error: psycopg.Error) -> GraphileWorkerError:
        if isinstance(
            error,
            (
                pg_errors.UndefinedFunction,
                pg_errors.UndefinedTable,
                pg_errors.UndefinedObject,
                pg_errors.InvalidSchemaName,
            ),
        ):
            return DatabaseError(
                f"{operation}: schema {self._schema!r} is missing graphile-worker's tables or"
                f" functions (run migrate() first): {error}"
            )
        return DatabaseError(f"{operation} on schema {self._schema!r} failed: {error}")

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
        non-breaking revision.

        Each applied upgrade revision sends graphile-worker's ``worker:migrate`` notification
        on commit; a breaking one (19, from 18) shuts down every graphile-worker of the
        database, whatever schema it serves (the channel names no schema). A fresh install
        sends none, so installing a new schema never stops the pools of other schemas.
        """
        with (
            operation_span("migrate", self._schema, enqueue=False),
            self._connection() as (conn, owned),
        ):
            return _migrations.migrate(conn, self._schema, owned=owned)

    def schema_status(self) -> SchemaStatus:
        """Say whether the schema is missing, behind, current, or ahead; writes nothing."""
        with self._connection() as (conn, _):
            try:
                return _migrations.schema_status(conn, self._schema)
            except psycopg.Error as error:
                raise self._database_error("schema_status", error) from error

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
        return self.add_raw_job(_task_identifier(task, "task"), _task_payload(task), spec)

    def add_raw_job(self, identifier: str, payload: Any = None, spec: JobSpec | None = None) -> Job:
        """Enqueue one job for task ``identifier`` and return it as stored.

        ``payload`` is encoded by the payload rules (None: ``{}``). Every ``spec`` value is
        checked before any SQL (:class:`InvalidJobSpec`). All three job-key modes work here,
        including ``UNSAFE_DEDUPE`` (which returns the existing job as it is). If a worker
        locks the keyed job while it is being replaced, nothing is scheduled: the call is
        retried (up to three times) where the library owns the transaction, and raises
        :class:`JobKeyRaceError` inside a caller's transaction.
        """
        identifier = check_text("identifier", identifier, max_length=MAX_IDENTIFIER_LENGTH)
        if spec is None:
            spec = DEFAULT_SPEC
        elif not isinstance(spec, JobSpec):
            raise InvalidJobSpec(f"spec: expected a JobSpec or None, got {type(spec).__name__}")
        payload = with_trace(payload, current_trace())
        if self._hooks:
            payload = run_hooks(self._hooks, identifier, payload, spec)
        payload_text = None if payload is None else encode_payload(payload, self._json_dumps)
        run_at = spec.run_at
        if run_at is None and self._use_local_time:
            run_at = dt.datetime.now(_UTC)
        params = {
            "identifier": identifier,
            "payload": payload_text,
            "queue_name": spec.queue_name,
            "run_at": run_at,
            "max_attempts": spec.max_attempts,
            "job_key": spec.job_key,
            "priority": spec.priority,
            "flags": None if spec.flags is None else list(spec.flags),
            "job_key_mode": None if spec.job_key_mode is None else spec.job_key_mode.value,
        }
        query = catalog.render("add_job", self._schema)
        logger.debug("add_job %r on schema %r: %s", identifier, self._schema, payload_text)
        with operation_span("add_job", self._schema, enqueue=True, identifier=identifier):
            return self._add_job(query, params, identifier, spec)

    def _add_job(self, query: bytes, params: dict[str, Any], identifier: str, spec: JobSpec) -> Job:
        for attempt in range(1, KEY_RACE_ATTEMPTS + 1):
            with self._connection(single_statement=True) as (conn, owned):
                _check_texts(conn, params.items())
                try:
                    with _cursor(conn) as cur:
                        cur.execute(query, params, binary=True)
                        row = cur.fetchone()
                except psycopg.Error as error:
                    raise self._database_error("add_job", error) from error
                assert row is not None
                if row[0] is not None:
                    # A name the join could not see belongs to a task or queue this very call
                    # created: the one the caller named.
                    queue_name = row[17]
                    if queue_name is None and row[2] is not None:
                        queue_name = spec.queue_name
                    return _job(row, row[16] or identifier, queue_name)
                if spec.job_key is None:
                    raise DatabaseError(_INVISIBLE_ROWS.format(what=f"add_job {identifier!r}"))
                if not owned or attempt == KEY_RACE_ATTEMPTS:
                    raise JobKeyRaceError(
                        f"add_job {identifier!r} with job_key {spec.job_key!r}: a worker locked"
                        " the existing job while it was being replaced, so nothing was"
                        " scheduled; retry the call"
                    )
        raise AssertionError("unreachable")  # pragma: no cover

    def add_jobs(self, tasks: Iterable[Task | tuple[Task, JobSpec | None]]) -> list[Job]:
        """Enqueue typed tasks as one batch, all or none (see :meth:`add_raw_jobs`).

        Each item is a task, as :meth:`add_job` takes it, or a ``(task, spec)`` pair: a plain
        ``tuple`` of two items whose second is a :class:`JobSpec` or None. A tuple subclass
        (a NamedTuple) is never taken for a pair, and is refused as a task. Every item is
        checked before any SQL; a refused one raises :class:`InvalidJobSpec` naming its
        position (``jobs[i]``) and nothing is written.
        """
        raw = []
        for index, item in enumerate(check_items(tasks, "tasks", "tasks or (task, spec) pairs")):
            task, spec = _task_and_spec(item, index)
            identifier = _task_identifier(task, f"jobs[{index}]")
            try:
                raw.append(RawJobSpec(identifier, _task_payload(task), spec))
            except InvalidJobSpec as error:
                raise InvalidJobSpec(f"jobs[{index}].{error}") from None
        return self.add_raw_jobs(raw)

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
        jobs = check_items(jobs, "jobs", "RawJobSpec")
        if not jobs:
            return []
        trace = current_trace()
        hooks = self._hooks
        json_dumps = self._json_dumps
        now = dt.datetime.now(_UTC) if self._use_local_time else None
        preserve: list[bool | None] = []  # per job: PRESERVE_RUN_AT asked; None: no key
        keys: dict[str, int] = {}
        spec_fields: dict[int, dict[str, Any]] = {}
        elements: list[dict[str, Any]] = []
        payloads: list[Any] = []
        for index, job in enumerate(jobs):
            if not isinstance(job, RawJobSpec):
                raise InvalidJobSpec(
                    f"jobs[{index}]: expected a RawJobSpec, got {type(job).__name__}"
                )
            spec = job.spec
            mode = spec.job_key_mode
            if mode is JobKeyMode.UNSAFE_DEDUPE:
                raise InvalidJobSpec(
                    f"jobs[{index}].job_key_mode: UNSAFE_DEDUPE works for single jobs only"
                    " (add_raw_job), not in a batch"
                )
            key = spec.job_key
            preserve.append(None if key is None else mode is JobKeyMode.PRESERVE_RUN_AT)
            if key is not None:
                first = keys.setdefault(key, index)
                if first != index:
                    raise InvalidJobSpec(
                        f"jobs[{index}].job_key: {key!r} is also the key of jobs[{first}];"
                        " keys must be unique within a batch"
                    )
            payload = with_trace(job.payload, trace)
            if hooks:
                payload = run_hooks(hooks, job.identifier, payload, spec)
            # Specs are often shared between jobs: their fields are worked out once.
            fields = spec_fields.get(id(spec))
            if fields is None:
                fields = spec_fields[id(spec)] = _spec_fields(spec, now)
            elements.append({"identifier": job.identifier, **fields})
            # No payload is the database's default, an empty object.
            payloads.append({} if payload is None else payload)
        count = len(elements)
        # Up to BATCH_SLICE jobs go in one statement. A larger batch is sent a slice at a
        # time inside one transaction (still all or nothing), so that neither side ever holds
        # the whole result twice: its memory stays near the size of the jobs returned. So is
        # a batch whose keyed jobs differ on PRESERVE_RUN_AT, which the database takes per
        # statement: each job then follows its own mode.
        slices = []
        for start, stop, preserve_run_at in _statement_runs(preserve, BATCH_SLICE):
            slices.append(
                (
                    {
                        "specs": dumps(elements[start:stop]),
                        "payloads": encode_payloads(payloads[start:stop], json_dumps, start),
                        "preserve_run_at": preserve_run_at,
                        "count": stop - start,
                    },
                    {element["identifier"] for element in elements[start:stop]},
                    {e["queue_name"] for e in elements[start:stop] if "queue_name" in e},
                )
            )
        del elements, payloads, spec_fields  # only the documents travel on
        query = catalog.render("add_jobs", self._schema)
        logger.debug("add_jobs: %d jobs on schema %r", count, self._schema)
        with operation_span("add_jobs", self._schema, enqueue=True, count=count):
            return self._add_jobs(query, slices, count, keys)

    def _add_jobs(
        self,
        query: bytes,
        slices: list[tuple[dict[str, Any], set[str], set[str]]],
        count: int,
        keys: dict[str, int],
    ) -> list[Job]:
        single = len(slices) == 1
        for attempt in range(1, KEY_RACE_ATTEMPTS + 1):
            with self._connection(single_statement=single) as (conn, owned):
                _check_batch_texts(conn, slices)
                try:
                    with (
                        nullcontext() if single else atomic(conn, owned=owned),
                        _cursor(conn) as cur,
                    ):
                        result: list[Job] = []
                        for params, identifiers, queue_names in slices:
                            cur.execute(query, params, binary=True)
                            result.extend(self._label(cur, identifiers, queue_names))
                        return result
                except psycopg.errors.InvalidTextRepresentation as error:
                    if _KEY_RACE_MARKER not in str(error):
                        raise self._database_error("add_jobs", error) from error
                    if not keys:
                        raise DatabaseError(
                            _INVISIBLE_ROWS.format(what=f"add_jobs ({count} jobs)")
                        ) from error
                    if not owned or attempt == KEY_RACE_ATTEMPTS:
                        raise JobKeyRaceError(
                            f"add_jobs: a worker locked the existing job of one of the"
                            f" {len(keys)} keyed specs while it was being replaced; the"
                            " statement failed and wrote nothing; retry the call"
                            + ("" if owned else " in a new transaction")
                        ) from error
                    race = error
                except psycopg.Error as error:
                    raise self._database_error("add_jobs", error) from error
            logger.info("add_jobs: retrying after a job key race (%s)", race)
        raise AssertionError("unreachable")  # pragma: no cover

    def _label(
        self,
        cur: psycopg.Cursor[tuple[Any, ...]],
        identifiers: set[str],
        queue_names: set[str],
    ) -> list[Job]:
        """Jobs from the add_jobs result, naming tasks and queues the call itself created."""
        jobs: list[Job] = []
        unnamed: list[int] = []  # positions of jobs the statement's join could not name
        # The jobs of one statement mostly share their timestamps (now() of the transaction):
        # each distinct one becomes one datetime, instead of three per job.
        instants: dict[int, dt.datetime] = {}

        def at(micros: int) -> dt.datetime:
            value = instants.get(micros)
            if value is None:
                value = instants[micros] = instant(micros)
            return value

        task_names: dict[int, str] = {}
        queue_by_id: dict[int, str] = {}
        # Rows are turned into jobs a slice at a time, so that a large batch never holds
        # every row tuple beside every job.
        while rows := cur.fetchmany(_FETCH_SLICE):
            for row in rows:
                task_name, queue_name = row[16], row[17]
                if task_name is None or (queue_name is None and row[2] is not None):
                    unnamed.append(len(jobs))
                else:
                    task_names[row[1]] = task_name
                    if queue_name is not None:
                        queue_by_id[row[2]] = queue_name
                jobs.append(_job(row, task_name, queue_name, at))
        if not unnamed:
            return jobs
        missing_tasks = {jobs[i].task_id for i in unnamed} - task_names.keys()
        missing_queues: set[int] = set()
        for i in unnamed:
            queue_id = jobs[i].job_queue_id
            if queue_id is not None and queue_id not in queue_by_id:
                missing_queues.add(queue_id)
        # Every spec made a row, so the names no row resolved are exactly the ones this call
        # created; one new name needs no lookup, several do (by id, after the fact).
        new_tasks = identifiers - set(task_names.values())
        new_queues = queue_names - set(queue_by_id.values())
        if len(missing_tasks) == len(new_tasks) == 1:
            task_names[missing_tasks.pop()] = new_tasks.pop()
        if len(missing_queues) == len(new_queues) == 1:
            queue_by_id[missing_queues.pop()] = new_queues.pop()
        if missing_tasks or missing_queues:
            cur.execute(
                catalog.render("job_names", self._schema),
                {"task_ids": sorted(missing_tasks), "queue_ids": sorted(missing_queues)},
            )
            for is_queue, name_id, name in cur.fetchall():
                (queue_by_id if is_queue else task_names)[name_id] = name
        for i in unnamed:
            job = jobs[i]
            queue_id = job.job_queue_id
            jobs[i] = attrs.evolve(
                job,
                task_identifier=task_names[job.task_id],
                queue_name=None if queue_id is None else queue_by_id[queue_id],
            )
        return jobs

    # -- maintenance ----------------------------------------------------------------------

    def _fetch(self, operation: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        query = catalog.render(operation, self._schema)
        with (
            operation_span(operation, self._schema, enqueue=False),
            self._connection(single_statement=True) as (conn, _),
        ):
            _check_texts(conn, ((_ARGUMENTS.get(key, key), value) for key, value in params.items()))
            try:
                with _cursor(conn) as cur:
                    cur.execute(query, params, binary=True)
                    return cur.fetchall()
            except psycopg.Error as error:
                raise self._database_error(operation, error) from error

    def remove_job(self, job_key: str) -> Job | None:
        """Remove the job with ``job_key``; None when no job has that key.

        A job that a worker has locked (is running) is not deleted: it loses its key and its
        remaining attempts, so it finishes this run and is never retried. The returned job
        shows that state.
        """
        check_text("job_key", job_key, max_length=MAX_JOB_KEY_LENGTH)
        (row,) = self._fetch("remove_job", {"job_key": job_key})
        return None if row[0] is None else _jobs([row])[0]

    def complete_jobs(self, job_ids: Iterable[int]) -> list[Job]:
        """Delete the jobs with these ids as if they had succeeded; return the deleted ones.

        Jobs a worker has locked are skipped (a lock older than four hours counts as
        released); unknown ids are ignored.
        """
        return _jobs(self._fetch("complete_jobs", {"job_ids": _job_ids(job_ids)}))

    def permanently_fail_jobs(self, job_ids: Iterable[int], reason: str | None = None) -> list[Job]:
        """Mark these jobs permanently failed (attempts = max_attempts) with ``reason`` as
        their last error ("Manually marked as failed" when None); return them.

        Jobs a worker has locked are skipped (a lock older than four hours counts as
        released); unknown ids are ignored.
        """
        if reason is not None:
            reason = check_text("reason", reason)
        return _jobs(
            self._fetch(
                "permanently_fail_jobs", {"job_ids": _job_ids(job_ids), "error_message": reason}
            )
        )

    def reschedule_jobs(
        self, job_ids: Iterable[int], options: RescheduleOptions | None = None
    ) -> list[Job]:
        """Change when and how these jobs run; a None option keeps the column. Return them.

        Jobs a worker has locked are skipped (a lock older than four hours counts as
        released); unknown ids are ignored.
        """
        if options is None:
            options = RescheduleOptions()
        elif not isinstance(options, RescheduleOptions):
            raise InvalidJobSpec(
                f"options: expected RescheduleOptions or None, got {type(options).__name__}"
            )
        return _jobs(
            self._fetch(
                "reschedule_jobs",
                {
                    "job_ids": _job_ids(job_ids),
                    "run_at": options.run_at,
                    "priority": options.priority,
                    "attempts": options.attempts,
                    "max_attempts": options.max_attempts,
                },
            )
        )

    def force_unlock_workers(self, worker_ids: Iterable[str]) -> None:
        """Release the jobs and queues locked by these workers (crashed ones, presumably).

        ``worker_ids`` are the ``locked_by`` values: graphile-worker 0.17+ writes its pool id
        (``pool-…``) there. Unlocking a live worker's jobs lets another worker run them twice.
        """
        ids = [
            check_text(f"worker_ids[{index}]", worker_id)
            for index, worker_id in enumerate(check_items(worker_ids, "worker_ids", "str"))
        ]
        self._fetch("force_unlock_workers", {"worker_ids": ids})

    def cleanup(
        self,
        tasks: Iterable[CleanupTask] = (CleanupTask.GC_JOB_QUEUES,),
        task_identifiers_to_keep: Iterable[str] = (),
        *,
        busy_timeout: float = CLEANUP_BUSY_TIMEOUT,
    ) -> dict[CleanupTask, int]:
        """Run maintenance and return how many rows each task removed.

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
        with (
            operation_span("cleanup", self._schema, enqueue=False),
            self._connection() as (conn, owned),
        ):
            _check_texts(conn, [("task_identifiers_to_keep", keep)])
            try:
                return run_cleanup(
                    conn,
                    self._schema,
                    owned=owned,
                    wanted=wanted,
                    keep=keep,
                    busy_timeout=timeout,
                )
            except psycopg.Error as error:
                raise self._database_error("cleanup", error) from error
