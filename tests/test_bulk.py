"""bulk_add_raw_jobs and bulk_add_jobs: any iterable in chunks, all or nothing, counts back.

The fast path's equality with add_jobs and its fallbacks are in ``tests/test_bulk_fast_path.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from psycopg import sql
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    ConfigurationError,
    Continue,
    DatabaseError,
    HookResult,
    InvalidJobSpec,
    JobKeyMode,
    JobScheduleSkipped,
    JobSpec,
    RawJobSpec,
    Skip,
    WorkerUtils,
)
from tests._helpers import job_count, table
from tests._job_keys import job_rows

Conn = psycopg.Connection[Any]
UTC = dt.timezone.utc


@attrs.frozen
class Ping:
    IDENTIFIER: ClassVar[str] = "ping"
    n: int


def jobs(count: int, start: int = 0, spec: JobSpec | None = None) -> Iterator[RawJobSpec]:
    for n in range(start, start + count):
        yield RawJobSpec("bulk", {"n": n}, spec)


def stored_ns(conn: Conn, schema: str) -> list[int]:
    query = sql.SQL("select (payload->>'n')::int from {} order by id").format(
        table(schema, "_private_jobs")
    )
    return [n for (n,) in conn.execute(query)]


def fail_on_payload(conn: Conn, schema: str, n: int) -> None:
    """A trigger that makes the server refuse the job whose payload has ``n``."""
    ident = sql.Identifier(schema)
    conn.execute(
        sql.SQL(
            "create function {}.refuse() returns trigger language plpgsql as $$ begin"
            " if (new.payload->>'n')::int = {} then raise exception 'refused %', new.payload;"
            " end if; return new; end $$"
        ).format(ident, sql.Literal(n))
    )
    conn.execute(
        sql.SQL(
            "create trigger refuse before insert on {}._private_jobs"
            " for each row execute function {}.refuse()"
        ).format(ident, ident)
    )


# -- counts, chunks, input ------------------------------------------------------------------


def test_returns_how_many_jobs_were_scheduled_in_input_order(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    assert utils.bulk_add_raw_jobs(jobs(25), chunk_size=10) == 25
    assert stored_ns(conn, schema) == list(range(25))


def test_empty_input_returns_zero_and_sends_nothing(conn: Conn, schema: str) -> None:
    # The schema does not exist: any statement would raise SchemaMissingError.
    utils = WorkerUtils(conn, schema=schema)
    assert utils.bulk_add_raw_jobs([]) == 0
    assert utils.bulk_add_raw_jobs(iter(())) == 0
    assert utils.bulk_add_jobs([]) == 0


@pytest.mark.parametrize("size", [0, -1, 100_001, True, 2.0, "10"])
def test_a_chunk_size_outside_1_to_100_000_is_refused_naming_it(
    conn: Conn, schema: str, size: Any
) -> None:
    with pytest.raises(ConfigurationError, match="chunk_size"):
        WorkerUtils(conn, schema=schema).bulk_add_raw_jobs([], chunk_size=size)


@pytest.mark.parametrize("value", ["abc", b"abc", 42, None])
def test_input_that_is_no_iterable_of_jobs_is_refused(conn: Conn, schema: str, value: Any) -> None:
    with pytest.raises(InvalidJobSpec, match="jobs: expected an iterable"):
        WorkerUtils(conn, schema=schema).bulk_add_raw_jobs(value)


def test_the_input_is_read_a_chunk_at_a_time_at_most_one_chunk_ahead_of_the_database(
    utils: WorkerUtils, admin: Conn, schema: str
) -> None:
    # Identity values are drawn outside transactions: another session sees them at once.
    (name,) = admin.execute(  # type: ignore[misc]
        "select pg_get_serial_sequence(%s, 'id')",
        [sql.SQL("{}").format(table(schema, "_private_jobs")).as_string(admin)],
    ).fetchone()
    sequence = sql.SQL("select last_value, is_called from " + name)
    drawn_when_read: dict[int, int] = {}

    def generate() -> Iterator[RawJobSpec]:
        for n in range(40):
            if n % 10 == 0:
                last, called = admin.execute(sequence).fetchone()  # type: ignore[misc]
                drawn_when_read[n] = last if called else 0
            yield RawJobSpec("bulk", {"n": n})

    assert utils.bulk_add_raw_jobs(generate(), chunk_size=10) == 40
    # The second chunk is read before the first is sent; after that, a chunk is read and
    # prepared while the server may still run the one before (one chunk in flight).
    assert drawn_when_read[0] == drawn_when_read[10] == 0
    for n in (20, 30):
        assert n - 10 <= drawn_when_read[n] <= n, drawn_when_read


def test_a_chunk_size_of_one_works(utils: WorkerUtils, conn: Conn, schema: str) -> None:
    assert utils.bulk_add_raw_jobs(jobs(3), chunk_size=1) == 3
    assert stored_ns(conn, schema) == [0, 1, 2]


# -- all or nothing -------------------------------------------------------------------------


def bad_at(position: int, count: int) -> Iterator[RawJobSpec]:
    """Jobs whose ``position``-th one is not a RawJobSpec."""
    for n in range(count):
        yield RawJobSpec("bulk", {"n": n}) if n != position else "not a job"  # type: ignore[misc]


def test_a_bad_job_in_a_later_chunk_leaves_nothing_on_an_autocommit_connection(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    with pytest.raises(InvalidJobSpec, match=r"jobs\[27\]: expected a RawJobSpec"):
        utils.bulk_add_raw_jobs(bad_at(27, 40), chunk_size=10)
    assert job_count(conn, schema) == 0


def test_a_bad_job_in_a_later_chunk_leaves_nothing_from_a_pool(
    pool: ConnectionPool[Any], conn: Conn, schema: str
) -> None:
    with pytest.raises(InvalidJobSpec, match=r"jobs\[27\]"):
        WorkerUtils(pool, schema=schema).bulk_add_raw_jobs(bad_at(27, 40), chunk_size=10)
    assert job_count(conn, schema) == 0
    assert WorkerUtils(pool, schema=schema).bulk_add_raw_jobs(jobs(5)) == 5
    assert job_count(conn, schema) == 5


def test_a_server_error_in_a_later_chunk_leaves_nothing_from_a_pool(
    pool: ConnectionPool[Any], conn: Conn, schema: str
) -> None:
    fail_on_payload(conn, schema, 33)
    with pytest.raises(DatabaseError, match="refused"):
        WorkerUtils(pool, schema=schema).bulk_add_raw_jobs(jobs(40), chunk_size=10)
    assert job_count(conn, schema) == 0


@pytest.mark.parametrize("on", ["autocommit", "pool"])
def test_a_call_of_one_chunk_refused_by_its_last_statement_leaves_nothing(
    on: str, pool: ConnectionPool[Any], conn: Conn, schema: str
) -> None:
    # Keyless statements first, then the keyed one fails: one implicit transaction (one
    # pipeline, one Sync) must take the keyless jobs back with it.
    fail_on_payload(conn, schema, 33)
    mixed = [*jobs(20), RawJobSpec("bulk", {"n": 33}, JobSpec(job_key="k"))]
    utils = WorkerUtils(pool if on == "pool" else conn, schema=schema)
    with pytest.raises(DatabaseError, match="refused"):
        utils.bulk_add_raw_jobs(mixed)
    assert job_count(conn, schema) == 0
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert utils.bulk_add_raw_jobs(jobs(3)) == 3


def test_inside_the_callers_transaction_a_failure_rolls_back_a_savepoint_only(
    utils: WorkerUtils, caller_conn: Conn, conn: Conn, schema: str
) -> None:
    fail_on_payload(conn, schema, 33)
    bound = utils.using(caller_conn)
    with caller_conn.transaction():
        assert bound.bulk_add_raw_jobs(jobs(3, start=100)) == 3
        with pytest.raises(DatabaseError, match="refused"):
            bound.bulk_add_raw_jobs(jobs(40), chunk_size=10)
        with pytest.raises(InvalidJobSpec, match=r"jobs\[27\]"):
            bound.bulk_add_raw_jobs(bad_at(27, 40), chunk_size=10)
        # The caller's transaction is usable, and holds what it did before.
        assert bound.bulk_add_raw_jobs(jobs(2, start=200)) == 2
        assert job_count(conn, schema) == 0  # nothing visible before the caller commits
    assert stored_ns(conn, schema) == [100, 101, 102, 200, 201]


def test_inside_the_callers_transaction_only_the_caller_commits(
    utils: WorkerUtils, caller_conn: Conn, conn: Conn, schema: str
) -> None:
    assert utils.using(caller_conn).bulk_add_raw_jobs(jobs(30), chunk_size=10) == 30
    assert caller_conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert job_count(conn, schema) == 0
    caller_conn.rollback()
    assert job_count(conn, schema) == 0


def test_a_generator_that_raises_midway_writes_nothing(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    def generate() -> Iterator[RawJobSpec]:
        yield from jobs(25)
        raise OSError("the file went away")

    with pytest.raises(InvalidJobSpec, match="iterating it raised OSError: the file went away"):
        utils.bulk_add_raw_jobs(generate(), chunk_size=10)
    assert job_count(conn, schema) == 0


def test_an_interrupt_midway_writes_nothing(utils: WorkerUtils, conn: Conn, schema: str) -> None:
    def generate() -> Iterator[RawJobSpec]:
        yield from jobs(25)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        utils.bulk_add_raw_jobs(generate(), chunk_size=10)
    assert job_count(conn, schema) == 0
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# -- job keys -------------------------------------------------------------------------------


def test_a_job_key_repeated_in_a_later_chunk_is_refused_naming_both_and_nothing_is_kept(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    def generate() -> Iterator[RawJobSpec]:
        yield from jobs(3)
        yield RawJobSpec("bulk", {"n": 3}, JobSpec(job_key="same"))
        yield from jobs(20, start=4)
        yield RawJobSpec("bulk", {"n": 24}, JobSpec(job_key="same"))

    with pytest.raises(InvalidJobSpec, match=r"jobs\[24\]\.job_key: 'same' .* jobs\[3\]"):
        utils.bulk_add_raw_jobs(generate(), chunk_size=5)
    assert job_count(conn, schema) == 0


def test_a_job_key_repeated_in_one_chunk_is_refused_too(utils: WorkerUtils) -> None:
    twice = [RawJobSpec("bulk", None, JobSpec(job_key="k"))] * 2
    with pytest.raises(InvalidJobSpec, match=r"jobs\[1\]\.job_key"):
        utils.bulk_add_raw_jobs(twice)


def test_unsafe_dedupe_is_refused_naming_the_job(utils: WorkerUtils) -> None:
    spec = JobSpec(job_key="k", job_key_mode=JobKeyMode.UNSAFE_DEDUPE)
    with pytest.raises(InvalidJobSpec, match=r"jobs\[12\]\.job_key_mode: UNSAFE_DEDUPE"):
        utils.bulk_add_raw_jobs([*jobs(12), RawJobSpec("bulk", None, spec)], chunk_size=5)


def test_each_keyed_job_follows_its_own_mode_across_chunks(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    old = dt.datetime(2031, 1, 1, tzinfo=UTC)
    new = dt.datetime(2032, 1, 1, tzinfo=UTC)
    utils.add_raw_jobs(
        [RawJobSpec("bulk", {"n": n}, JobSpec(job_key=f"k{n}", run_at=old)) for n in range(4)]
    )
    modes = [JobKeyMode.REPLACE, JobKeyMode.PRESERVE_RUN_AT, None, JobKeyMode.PRESERVE_RUN_AT]
    specs = [
        RawJobSpec("other", {"n": 10 + n}, JobSpec(job_key=f"k{n}", run_at=new, job_key_mode=m))
        for n, m in enumerate(modes)
    ]
    mixed = [specs[0], *jobs(3, start=100), specs[1], specs[2], *jobs(2, start=200), specs[3]]
    assert utils.bulk_add_raw_jobs(mixed, chunk_size=3) == 9
    by_key = {row["key"]: row for row in job_rows(conn, schema) if row["key"]}
    assert {key: row["run_at"] for key, row in by_key.items()} == {
        "k0": new,
        "k1": old,
        "k2": new,
        "k3": old,
    }
    assert {(row["revision"], row["task_identifier"]) for row in by_key.values()} == {(1, "other")}
    assert sorted(stored_ns(conn, schema)) == [10, 11, 12, 13, 100, 101, 102, 200, 201]


def test_keyed_jobs_alone_go_through_add_jobs(utils: WorkerUtils, conn: Conn, schema: str) -> None:
    keyed = [RawJobSpec("bulk", {"n": n}, JobSpec(job_key=f"k{n}")) for n in range(25)]
    assert utils.bulk_add_raw_jobs(keyed, chunk_size=10) == 25
    assert sorted(stored_ns(conn, schema)) == list(range(25))


# -- hooks, tracing, typed tasks ------------------------------------------------------------


def test_hooks_run_on_every_job_in_input_order_and_may_replace_payloads(
    conn: Conn, schema: str
) -> None:
    seen: list[tuple[str, Any]] = []

    def hook(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        seen.append((identifier, payload["n"]))
        return Continue({"n": payload["n"] * 2})

    utils = WorkerUtils(conn, schema=schema, hooks=[hook])
    utils.migrate()
    mixed = [*jobs(4), RawJobSpec("bulk", {"n": 4}, JobSpec(job_key="k")), *jobs(2, start=5)]
    assert utils.bulk_add_raw_jobs(mixed, chunk_size=3) == 7
    assert seen == [("bulk", n) for n in range(7)]
    assert sorted(stored_ns(conn, schema)) == [0, 2, 4, 6, 8, 10, 12]


def test_a_hook_that_skips_a_job_in_a_later_chunk_leaves_nothing(conn: Conn, schema: str) -> None:
    def hook(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        return Skip("no twelves") if payload["n"] == 12 else Continue(payload)

    utils = WorkerUtils(conn, schema=schema, hooks=[hook])
    utils.migrate()
    with pytest.raises(JobScheduleSkipped, match="no twelves"):
        utils.bulk_add_raw_jobs(jobs(20), chunk_size=5)
    assert job_count(conn, schema) == 0


def test_inside_a_recording_span_every_dict_payload_carries_the_trace_and_a_span_is_made(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.test_bulk")
    try:
        with tracer.start_as_current_span("request") as span:
            utils.bulk_add_raw_jobs(
                [*jobs(3), RawJobSpec("bulk", {"n": 3}, JobSpec(job_key="k"))], chunk_size=2
            )
        context = span.get_span_context()
    finally:
        provider.shutdown()
    query = sql.SQL("select payload->'_trace'->>'trace_id' from {}").format(
        table(schema, "_private_jobs")
    )
    assert {row[0] for row in conn.execute(query)} == {format(context.trace_id, "032x")}


def test_bulk_add_jobs_takes_typed_tasks_and_pairs_lazily(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    def generate() -> Iterator[Any]:
        for n in range(7):
            yield Ping(n) if n % 2 else (Ping(n), JobSpec(queue_name="q"))

    assert utils.bulk_add_jobs(generate(), chunk_size=3) == 7
    rows = job_rows(conn, schema)
    assert [row["payload"] for row in rows] == [{"n": n} for n in range(7)]
    assert [row["queue_name"] for row in rows] == ["q", None] * 3 + ["q"]


def test_bulk_add_jobs_names_a_bad_item_by_its_position_and_keeps_nothing(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    items: list[Any] = [Ping(n) for n in range(8)]
    items[6] = {"not": "a task"}
    with pytest.raises(InvalidJobSpec, match=r"jobs\[6\]: dict is not a typed task"):
        utils.bulk_add_jobs(items, chunk_size=3)
    assert job_count(conn, schema) == 0
