"""Every operation works whatever the caller configured its connection (or its pool's
connections) with -- row factory, cursor factory, loaders and dumpers, prepared statements,
autocommit, session TimeZone, client encoding -- and leaves that configuration as it was.

These tests connect to the server directly (``pg_server.dsn``), not through the optional
PgBouncer: ``prepare_threshold=0`` and startup ``options`` are settings PgBouncer refuses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import attrs
import psycopg
import pytest
from psycopg import pq, sql
from psycopg.adapt import AdaptersMap, Loader, PyFormat
from psycopg.rows import RowMaker, class_row, dict_row, namedtuple_row
from psycopg.types.json import JsonbBinaryDumper, JsonbDumper
from psycopg.types.string import StrBinaryDumper, StrDumper
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    LATEST_REVISION,
    CleanupTask,
    Job,
    JobSpec,
    JobState,
    RawJobSpec,
    RescheduleOptions,
    SchemaState,
    WorkerUtils,
)
from graphile_worker_utils._client import BATCH_SLICE
from graphile_worker_utils._cursors import instant
from tests._server import PgServer

Connection = psycopg.Connection[Any]
UTC = dt.timezone.utc
RUN_AT = dt.datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# What a caller may configure


class AnyRow:
    """A row class for ``class_row``: takes whatever columns come."""

    def __init__(self, **columns: Any) -> None:
        self.columns = columns


def reversed_rows(cursor: Any) -> RowMaker[tuple[Any, ...]]:
    """A custom row factory that still indexes by position, but gives the wrong values."""

    def make(values: Any) -> tuple[Any, ...]:
        return tuple(reversed(values))

    return make


class Marker:
    """What the caller's own loaders turn values into."""


class _Marking(Loader):
    def load(self, data: Any) -> Marker:
        return Marker()


class _MarkingBinary(_Marking):
    format = pq.Format.BINARY


class _Shouting(StrDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(obj.upper())


class _ShoutingBinary(StrBinaryDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(obj.upper())


LOADED_TYPES = ("jsonb", "json", "timestamptz", "int8", "int4", "int2", "text", "bool", "text[]")
DUMPED_TYPES: tuple[type, ...] = (str, int, bool, dict, list, dt.datetime)


def register_loaders(conn: Connection) -> None:
    for name in LOADED_TYPES:
        oid = conn.adapters.types.get_oid(name)
        conn.adapters.register_loader(oid, _Marking)
        conn.adapters.register_loader(oid, _MarkingBinary)


def register_dumpers(conn: Connection) -> None:
    conn.adapters.register_dumper(str, _Shouting)
    conn.adapters.register_dumper(str, _ShoutingBinary)
    conn.adapters.register_dumper(dict, JsonbDumper)
    conn.adapters.register_dumper(dict, JsonbBinaryDumper)


def register_everything(conn: Connection) -> None:
    register_loaders(conn)
    register_dumpers(conn)


@dataclass(frozen=True)
class Setting:
    """Connect arguments (for a pool: its ``kwargs``), and adapters registered after connect
    (for a pool: its ``configure`` callback)."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[Connection], None] | None = None


SETTINGS = {
    "defaults": Setting(),
    "dict_row": Setting({"row_factory": dict_row}),
    "namedtuple_row": Setting({"row_factory": namedtuple_row}),
    "class_row": Setting({"row_factory": class_row(AnyRow)}),
    "custom_row_factory": Setting({"row_factory": reversed_rows}),
    "own_loaders": Setting(setup=register_loaders),
    "own_dumpers": Setting(setup=register_dumpers),
    "prepare_threshold_0": Setting({"prepare_threshold": 0}),
    "prepare_threshold_none": Setting({"prepare_threshold": None}),
    "autocommit": Setting({"autocommit": True}),
    "client_cursor": Setting({"cursor_factory": psycopg.ClientCursor}),
    "timezone_utc": Setting({"options": "-c TimeZone=UTC"}),
    "timezone_etc_utc": Setting({"options": "-c TimeZone=Etc/UTC"}),
    "timezone_paris": Setting({"options": "-c TimeZone=Europe/Paris"}),
    "client_encoding_latin1": Setting({"client_encoding": "LATIN1"}),
    "all_at_once": Setting(
        {
            "row_factory": dict_row,
            "cursor_factory": psycopg.ClientCursor,
            "prepare_threshold": 0,
            "options": "-c TimeZone=Asia/Kolkata",
        },
        setup=register_everything,
    ),
}


def _dumper(adapters: AdaptersMap, cls: type, fmt: PyFormat) -> object:
    try:
        return adapters.get_dumper(cls, fmt)
    except psycopg.ProgrammingError:
        return None


def snapshot(conn: Connection) -> dict[str, Any]:
    """Everything about the connection's configuration an operation could change."""
    adapters = conn.adapters
    return {
        "row_factory": conn.row_factory,
        "cursor_factory": conn.cursor_factory,
        "autocommit": conn.autocommit,
        "prepare_threshold": conn.prepare_threshold,
        "transaction": (conn.isolation_level, conn.read_only, conn.deferrable),
        "loaders": {
            (name, fmt): adapters.get_loader(adapters.types.get_oid(name), fmt)
            for name in LOADED_TYPES
            for fmt in pq.Format
        },
        "dumpers": {
            (cls, fmt): _dumper(adapters, cls, fmt) for cls in DUMPED_TYPES for fmt in PyFormat
        },
        "parameters": {
            name: conn.info.parameter_status(name)
            for name in ("TimeZone", "client_encoding", "DateStyle", "IntervalStyle")
        },
    }


# --------------------------------------------------------------------------------------------
# Checking results (through a separate, plainly configured connection)


@dataclass
class Env:
    """The schema, and a plain autocommit connection that seeds data and checks results."""

    schema: str
    observer: Connection

    @property
    def seed(self) -> WorkerUtils:
        return WorkerUtils(self.observer, schema=self.schema)

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def jobs(self) -> dict[int, tuple[str, str | None, Any, str | None]]:
        """id -> (task identifier, queue name, payload, locked_by), as stored."""
        query = sql.SQL(
            "select j.id, t.identifier, q.queue_name, j.payload, j.locked_by from {} j"
            " join {} t on t.id = j.task_id left join {} q on q.id = j.job_queue_id"
        ).format(
            self.table("_private_jobs"),
            self.table("_private_tasks"),
            self.table("_private_job_queues"),
        )
        return {row[0]: row[1:] for row in self.observer.execute(query)}

    def count(self, name: str) -> int:
        query = sql.SQL("select count(*) from {}").format(self.table(name))
        (n,) = self.observer.execute(query).fetchone()  # type: ignore[misc]
        return int(n)


def assert_job(job: Job, identifier: str, queue_name: str | None, payload: Any) -> None:
    assert isinstance(job, Job)
    assert (job.task_identifier, job.queue_name, job.payload) == (identifier, queue_name, payload)
    assert isinstance(job.payload_json, str)
    for value in (job.id, job.priority, job.attempts, job.max_attempts, job.revision, job.task_id):
        assert type(value) is int, value
    assert job.key is None or type(job.key) is str
    assert job.flags is None or all(type(flag) is str for flag in job.flags)
    for moment in (job.run_at, job.created_at, job.updated_at):
        assert moment.tzinfo is UTC, moment
    assert job.locked_at is None or job.locked_at.tzinfo is UTC


@attrs.frozen
class SendEmail:
    IDENTIFIER: ClassVar[str] = "send_email"
    to: str


Verify = Callable[[], None]


def op_migrate(utils: WorkerUtils, env: Env) -> Verify:
    report = utils.migrate()
    assert (report.revision, report.installed) == (LATEST_REVISION, True)
    assert report.applied == tuple(range(1, LATEST_REVISION + 1))
    return lambda: assert_current(env)


def assert_current(env: Env) -> None:
    assert env.seed.schema_status().state is SchemaState.CURRENT


def op_schema_status(utils: WorkerUtils, env: Env) -> None:
    status = utils.schema_status()
    assert (status.state, status.revision) == (SchemaState.CURRENT, LATEST_REVISION)
    assert type(status.server_version_num) is int and status.server_version_num >= 120000
    assert type(status.breaking_revision) is int


def op_add_job(utils: WorkerUtils, env: Env) -> Verify:
    spec = JobSpec(queue_name="mail", run_at=RUN_AT, job_key="k", flags=["f"], priority=2)
    job = utils.add_job(SendEmail(to="ada"), spec)
    assert_job(job, "send_email", "mail", {"to": "ada"})
    assert (job.run_at, job.key, job.flags, job.priority) == (RUN_AT, "k", ["f"], 2)
    return lambda: assert_stored(env, {job.id: ("send_email", "mail", {"to": "ada"}, None)})


def assert_stored(
    env: Env, expected: Mapping[int, tuple[str, str | None, Any, str | None]]
) -> None:
    assert env.jobs() == expected


def op_add_raw_job(utils: WorkerUtils, env: Env) -> Verify:
    spec = JobSpec(run_at=RUN_AT, job_key="k", flags=["é"])
    job = utils.add_raw_job("a", {"n": [1, "ü"]}, spec)
    assert_job(job, "a", None, {"n": [1, "ü"]})
    assert (job.run_at, job.key, job.flags) == (RUN_AT, "k", ["é"])
    return lambda: assert_stored(env, {job.id: ("a", None, {"n": [1, "ü"]}, None)})


def op_add_jobs(utils: WorkerUtils, env: Env) -> Verify:
    jobs = utils.add_jobs([SendEmail(to="a"), (SendEmail(to="b"), JobSpec(queue_name="q"))])
    by_to = {job.payload["to"]: job for job in jobs}
    assert_job(by_to["a"], "send_email", None, {"to": "a"})
    assert_job(by_to["b"], "send_email", "q", {"to": "b"})
    expected = {job.id: (job.task_identifier, job.queue_name, job.payload, None) for job in jobs}
    return lambda: assert_stored(env, expected)


def op_add_raw_jobs(utils: WorkerUtils, env: Env) -> Verify:
    env.seed.add_raw_job("a", {}, JobSpec(queue_name="q"))
    env.seed.complete_jobs([job_id for job_id in env.jobs()])
    # Existing task and queue: every row names them in the statement itself.
    specs = [RawJobSpec("a", {"i": i}, JobSpec(queue_name="q", job_key=f"k{i}")) for i in range(3)]
    jobs = utils.add_raw_jobs(specs)
    assert sorted(job.key or "" for job in jobs) == ["k0", "k1", "k2"]
    for job in jobs:
        assert_job(job, "a", "q", {"i": int((job.key or "")[1:])})
    return lambda: assert_stored(env, {job.id: ("a", "q", job.payload, None) for job in jobs})


def op_add_raw_jobs_in_slices(utils: WorkerUtils, env: Env) -> Verify:
    count = BATCH_SLICE + 2
    jobs = utils.add_raw_jobs([RawJobSpec("bulk", {"i": i}) for i in range(count)])
    assert len({job.id for job in jobs}) == count
    assert sorted(job.payload["i"] for job in jobs) == list(range(count))
    assert_job(jobs[0], "bulk", None, jobs[0].payload)
    assert_job(jobs[-1], "bulk", None, jobs[-1].payload)
    return lambda: assert_count(env, count)


def assert_count(env: Env, count: int) -> None:
    assert env.count("_private_jobs") == count


def op_add_raw_jobs_new_names(utils: WorkerUtils, env: Env) -> Verify:
    # Several tasks and queues that the batch itself creates: looked up by id afterwards.
    names = [("t1", "q1"), ("t2", "q2"), ("t3", None), ("t1", "q2")]
    specs = [
        RawJobSpec(task, {"i": i}, JobSpec(queue_name=queue, job_key=str(i)))
        for i, (task, queue) in enumerate(names)
    ]
    jobs = utils.add_raw_jobs(specs)
    assert len(jobs) == len(names)
    for job in jobs:
        task, queue = names[int(job.key or "")]
        assert_job(job, task, queue, {"i": int(job.key or "")})
    return lambda: assert_stored(
        env, {job.id: (job.task_identifier, job.queue_name, job.payload, None) for job in jobs}
    )


def op_remove_job(utils: WorkerUtils, env: Env) -> Verify:
    kept = env.seed.add_raw_job("a", {"n": 1})
    gone = env.seed.add_raw_job("b", {"n": 2}, JobSpec(job_key="k", queue_name="q"))
    removed = utils.remove_job("k")
    assert removed is not None and removed.id == gone.id
    assert_job(removed, "b", "q", {"n": 2})
    assert utils.remove_job("no such key") is None
    return lambda: assert_stored(env, {kept.id: ("a", None, {"n": 1}, None)})


def op_complete_jobs(utils: WorkerUtils, env: Env) -> Verify:
    done, kept = env.seed.add_raw_jobs([RawJobSpec("a", {"n": 1}), RawJobSpec("a", {"n": 2})])
    (completed,) = utils.complete_jobs([done.id, 123456789])
    assert completed.id == done.id
    assert_job(completed, "a", None, done.payload)
    return lambda: assert_stored(env, {kept.id: ("a", None, kept.payload, None)})


def op_permanently_fail_jobs(utils: WorkerUtils, env: Env) -> Verify:
    job = env.seed.add_raw_job("a", {"n": 1}, JobSpec(queue_name="q"))
    (failed,) = utils.permanently_fail_jobs([job.id], "gave up")
    assert_job(failed, "a", "q", {"n": 1})
    assert (failed.last_error, failed.is_permanently_failed) == ("gave up", True)
    return lambda: assert_stored(env, {job.id: ("a", "q", {"n": 1}, None)})


def op_reschedule_jobs(utils: WorkerUtils, env: Env) -> Verify:
    job = env.seed.add_raw_job("a", {"n": 1})
    (moved,) = utils.reschedule_jobs([job.id], RescheduleOptions(run_at=RUN_AT, priority=5))
    assert_job(moved, "a", None, {"n": 1})
    assert (moved.run_at, moved.priority) == (RUN_AT, 5)
    return lambda: assert_rescheduled(env, job.id)


def assert_rescheduled(env: Env, job_id: int) -> None:
    query = sql.SQL("select run_at, priority from {} where id = %s").format(
        env.table("_private_jobs")
    )
    assert env.observer.execute(query, [job_id]).fetchone() == (RUN_AT, 5)


def op_force_unlock_workers(utils: WorkerUtils, env: Env) -> Verify:
    job = env.seed.add_raw_job("a", {})
    query = sql.SQL("update {} set locked_at = now(), locked_by = 'w1' where id = %s")
    env.observer.execute(query.format(env.table("_private_jobs")), [job.id])
    assert utils.force_unlock_workers(["w1", "w2"]) is None  # type: ignore[func-returns-value]
    return lambda: assert_stored(env, {job.id: ("a", None, {}, None)})


def op_get_job(utils: WorkerUtils, env: Env) -> None:
    job = env.seed.add_raw_job("a", {"n": 1}, JobSpec(queue_name="q", job_key="k"))
    for got in (utils.get_job(job.id), utils.get_job_by_key("k")):
        assert got is not None and got == job
        assert_job(got, "a", "q", {"n": 1})
        assert got.state is JobState.READY
    assert utils.get_job(job.id + 1) is None and utils.get_job_by_key("none") is None


def op_list_jobs(utils: WorkerUtils, env: Env) -> None:
    jobs = env.seed.add_raw_jobs(
        [RawJobSpec("a", {"n": n}, JobSpec(queue_name="q")) for n in (0, 1, 2)]
    )
    ids = sorted(job.id for job in jobs)
    page = utils.list_jobs(
        task_identifiers=["a"], queue_names=["q"], states=["ready"], limit=2, include_payload=True
    )
    assert [job.id for job in page] == ids[:2]
    for job in page:
        assert_job(job, "a", "q", job.payload)
        assert job.state is JobState.READY
    (last,) = utils.list_jobs(after_id=page[-1].id)
    assert last.id == ids[2] and last.payload_json is None


def op_locked_workers(utils: WorkerUtils, env: Env) -> None:
    job = env.seed.add_raw_job("a", {})
    query = sql.SQL("update {} set locked_at = now() - interval '2 hours', locked_by = 'w1'")
    env.observer.execute(query.format(env.table("_private_jobs")))
    (worker,) = utils.locked_workers(older_than=dt.timedelta(hours=1))
    assert (worker.worker_id, worker.job_count, worker.queue_count) == ("w1", 1, 0)
    assert worker.oldest_locked_at.tzinfo is UTC
    assert utils.get_job(job.id).state is JobState.RUNNING  # type: ignore[union-attr]


def op_cleanup_older_than(utils: WorkerUtils, env: Env) -> Verify:
    old, recent = env.seed.add_raw_jobs([RawJobSpec("a", {"n": 1}), RawJobSpec("a", {"n": 2})])
    env.seed.permanently_fail_jobs([old.id, recent.id])
    query = sql.SQL("update {} set updated_at = now() - interval '8 days' where id = %s")
    env.observer.execute(query.format(env.table("_private_jobs")), [old.id])
    task = CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS
    assert utils.cleanup([task], older_than=dt.timedelta(days=7)) == {task: 1}
    return lambda: assert_ids(env, {recent.id})


def cleanup_op(task: CleanupTask) -> Callable[[WorkerUtils, Env], Verify]:
    def op(utils: WorkerUtils, env: Env) -> Verify:
        # One row for each task to remove: the failed job, the task "gone" (not "spared",
        # which is kept by name), the queue "q3" that no job uses any more.
        failed, gone, spared = env.seed.add_raw_jobs(
            [
                RawJobSpec("fails", {}, JobSpec(queue_name="q1")),
                RawJobSpec("gone", {}, JobSpec(queue_name="q3")),
                RawJobSpec("spared", {}),
            ]
        )
        kept = env.seed.add_raw_job("kept", {}, JobSpec(queue_name="q2"))
        env.seed.permanently_fail_jobs([failed.id])
        env.seed.complete_jobs([gone.id, spared.id])
        removed = utils.cleanup([task], task_identifiers_to_keep=["spared"])
        assert removed == {task: 1}
        assert all(type(n) is int for n in removed.values())
        deleted = {failed.id} if task is CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS else set()
        return lambda: assert_ids(env, {failed.id, kept.id} - deleted)

    return op


def assert_ids(env: Env, ids: set[int]) -> None:
    assert set(env.jobs()) == ids


@dataclass(frozen=True)
class Operation:
    run: Callable[[WorkerUtils, Env], Verify | None]
    migrated: bool = True


OPERATIONS = {
    "migrate": Operation(op_migrate, migrated=False),
    "schema_status": Operation(op_schema_status),
    "add_job": Operation(op_add_job),
    "add_raw_job": Operation(op_add_raw_job),
    "add_jobs": Operation(op_add_jobs),
    "add_raw_jobs": Operation(op_add_raw_jobs),
    "add_raw_jobs_in_slices": Operation(op_add_raw_jobs_in_slices),
    "add_raw_jobs_new_names": Operation(op_add_raw_jobs_new_names),
    "remove_job": Operation(op_remove_job),
    "complete_jobs": Operation(op_complete_jobs),
    "permanently_fail_jobs": Operation(op_permanently_fail_jobs),
    "reschedule_jobs": Operation(op_reschedule_jobs),
    "force_unlock_workers": Operation(op_force_unlock_workers),
    "get_job": Operation(op_get_job),
    "list_jobs": Operation(op_list_jobs),
    "locked_workers": Operation(op_locked_workers),
    "cleanup_older_than": Operation(op_cleanup_older_than),
    **{f"cleanup_{task.name.lower()}": Operation(cleanup_op(task)) for task in CleanupTask},
}


# --------------------------------------------------------------------------------------------
# The test


@pytest.fixture
def env(pg_server: PgServer, schema: str) -> Iterator[Env]:
    with psycopg.connect(pg_server.dsn, autocommit=True) as observer:
        yield Env(schema, observer)


def run_on_connection(
    dsn: str, setting: Setting, operation: Operation, env: Env
) -> tuple[dict[str, Any], dict[str, Any], Verify | None]:
    with psycopg.connect(dsn, **setting.kwargs) as conn:
        if setting.setup is not None:
            setting.setup(conn)
        before = snapshot(conn)
        verify = operation.run(WorkerUtils(conn, schema=env.schema), env)
        after = snapshot(conn)
        if not conn.autocommit:
            assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
            conn.commit()  # the caller's transaction: the caller commits
    return before, after, verify


def run_on_pool(
    dsn: str, setting: Setting, operation: Operation, env: Env
) -> tuple[dict[str, Any], dict[str, Any], Verify | None]:
    with ConnectionPool(
        dsn, kwargs=setting.kwargs, configure=setting.setup, min_size=1, max_size=1, open=True
    ) as pool:
        with pool.connection() as conn:
            before = snapshot(conn)
        verify = operation.run(WorkerUtils(pool, schema=env.schema), env)
        with pool.connection() as conn:
            after = snapshot(conn)
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    return before, after, verify


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("target", ["connection", "pool"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_every_operation_works_whatever_the_connection_is_configured_with_and_keeps_it(
    pg_server: PgServer, env: Env, setting: str, target: str, operation: str
) -> None:
    chosen = OPERATIONS[operation]
    if chosen.migrated:
        env.seed.migrate()
    run = run_on_connection if target == "connection" else run_on_pool

    before, after, verify = run(pg_server.dsn, SETTINGS[setting], chosen, env)

    assert after == before
    if verify is not None:
        verify()


# --------------------------------------------------------------------------------------------
# Datetimes carry exactly datetime.timezone.utc


@pytest.mark.parametrize("timezone", ["UTC", "Etc/UTC", "Europe/Paris"])
def test_every_datetime_of_a_job_is_timezone_utc_whatever_the_session_time_zone(
    pg_server: PgServer, env: Env, timezone: str
) -> None:
    env.seed.migrate()
    with psycopg.connect(pg_server.dsn, autocommit=True, options=f"-c TimeZone={timezone}") as c:
        utils = WorkerUtils(c, schema=env.schema)
        one = utils.add_raw_job("a", {}, JobSpec(run_at=RUN_AT, job_key="k"))
        batch = utils.add_raw_jobs([RawJobSpec("a", {}), RawJobSpec("b", {})])
        env.observer.execute(
            sql.SQL("update {} set locked_at = now(), locked_by = 'w'").format(
                env.table("_private_jobs")
            )
        )
        removed = utils.remove_job("k")
        moved = utils.reschedule_jobs([job.id for job in batch], RescheduleOptions(run_at=RUN_AT))

    assert removed is not None and removed.locked_at is not None
    datetimes = [
        value
        for job in (one, *batch, removed)
        for value in (job.run_at, job.created_at, job.updated_at, job.locked_at)
        if value is not None
    ]
    assert len(datetimes) == 4 * 3 + 1
    assert all(value.tzinfo is UTC for value in datetimes)
    assert one.run_at == RUN_AT
    # Locked jobs are not rescheduled: nothing came back, and nothing to check.
    assert moved == []


def test_a_job_at_infinity_comes_back_as_the_largest_datetime_in_utc(env: Env) -> None:
    env.seed.migrate()
    job = env.seed.add_raw_job("a", {})
    query = sql.SQL("update {} set run_at = 'infinity' where id = %s")
    env.observer.execute(query.format(env.table("_private_jobs")), [job.id])

    (completed,) = env.seed.complete_jobs([job.id])

    assert completed.run_at == dt.datetime.max.replace(tzinfo=UTC)
    assert completed.run_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("micros", "expected"),
    [
        (0, dt.datetime(2000, 1, 1, tzinfo=UTC)),
        (-1, dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        (86_400_000_001, dt.datetime(2000, 1, 2, 0, 0, 0, 1, tzinfo=UTC)),
        (2**63 - 1, dt.datetime.max.replace(tzinfo=UTC)),  # 'infinity'
        (-(2**63), dt.datetime.min.replace(tzinfo=UTC)),  # '-infinity'
    ],
)
def test_a_binary_timestamptz_becomes_an_aware_datetime_in_timezone_utc(
    micros: int, expected: dt.datetime
) -> None:
    value = instant(micros)
    assert value == expected
    assert value.tzinfo is UTC
