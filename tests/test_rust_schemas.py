"""The library on schemas the Rust crate graphile_worker (graphile_worker_rs) migrated to its own
revisions 20, 21 and 22, simulated as tests/_rust_schemas.py says: schema_status() names the
flavour, migrate() leaves them alone, every operation works and leaves the crate's functions
as they were, and the crate's GWNOR job-key race error becomes JobKeyRaceError."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import pq, sql
from psycopg_pool import ConnectionPool

from graphile_worker_utils import (
    JobKeyRaceError,
    JobSpec,
    RawJobSpec,
    RescheduleOptions,
    SchemaState,
    SchemaStatus,
    WorkerUtils,
)
from graphile_worker_utils._enqueue import KEY_RACE_ATTEMPTS
from graphile_worker_utils._migrations import SchemaFlavour, _Revisions, _status
from tests._rust_schemas import (
    GWNOR,
    RUST_REVISIONS,
    build_rust_schema,
    function_fingerprints,
    lose_key_races,
)
from tests._server import PgServer
from tests.test_connection_settings import (
    OPERATIONS,
    SETTINGS,
    Env,
    run_on_connection,
    run_on_pool,
)

Conn = psycopg.Connection[Any]

# migrate and schema_status have their own tests below (the matrix's expect graphile-worker's).
RUST_OPERATIONS = [name for name in OPERATIONS if name not in ("migrate", "schema_status")]


@pytest.fixture(params=RUST_REVISIONS, ids=lambda revision: f"rust{revision}")
def revision(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def rust_schema(conn: Conn, make_schema: Callable[[], str], schema: str, revision: int) -> str:
    """``schema`` as graphile_worker_rs leaves it at ``revision`` (simulated)."""
    build_rust_schema(conn, schema, revision, make_schema())
    return schema


def migration_rows(conn: Conn, schema: str) -> list[tuple[int, bool]]:
    query = sql.SQL("select id, breaking from {}.migrations order by id")
    return conn.execute(query.format(sql.Identifier(schema))).fetchall()


def stored_keys(conn: Conn, schema: str) -> list[str | None]:
    query = sql.SQL("select key from {}._private_jobs order by id")
    return [key for (key,) in conn.execute(query.format(sql.Identifier(schema)))]


# --------------------------------------------------------------------------------------------
# schema_status() and migrate()


def test_schema_status_names_the_rust_flavour_and_revision(
    conn: Conn, rust_schema: str, revision: int
) -> None:
    status = WorkerUtils(conn, schema=rust_schema).schema_status()
    assert status.flavour == "graphile_worker_rs"
    assert (status.revision, status.breaking_revision) == (revision, 16)
    expected = SchemaState.CURRENT if revision == 20 else SchemaState.AHEAD_COMPATIBLE
    assert (status.state, status.can_migrate) == (expected, True)


def test_schema_status_names_graphile_workers_flavour(conn: Conn, migrated: str) -> None:
    status = WorkerUtils(conn, schema=migrated).schema_status()
    assert (status.flavour, status.revision) == ("graphile-worker", 20)


def test_migrate_leaves_a_rust_schema_alone_and_quiet(
    conn: Conn, rust_schema: str, revision: int
) -> None:
    functions = function_fingerprints(conn, rust_schema)
    rows = migration_rows(conn, rust_schema)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = WorkerUtils(conn, schema=rust_schema).migrate()
    assert (report.applied, report.revision, report.installed) == ((), revision, False)
    assert function_fingerprints(conn, rust_schema) == functions
    assert migration_rows(conn, rust_schema) == rows


def test_migrate_still_warns_past_the_crates_known_revisions(
    conn: Conn, make_schema: Callable[[], str], schema: str
) -> None:
    build_rust_schema(conn, schema, 22, make_schema())
    query = sql.SQL("insert into {}.migrations (id, breaking) values (23, false)")
    conn.execute(query.format(sql.Identifier(schema)))
    with pytest.warns(
        UserWarning, match=r"graphile_worker_rs revision 23, newer than revision 22"
    ) as record:
        report = WorkerUtils(conn, schema=schema).migrate()
    assert report.applied == ()
    assert record[0].filename == __file__  # the warning points at the caller's line


# --------------------------------------------------------------------------------------------
# Every operation, in a caller's transaction and on a pool


@pytest.mark.parametrize("operation", RUST_OPERATIONS)
@pytest.mark.parametrize("target", ["caller_transaction", "pool"])
def test_every_operation_works_on_a_rust_schema_and_keeps_the_crates_functions(
    pg_server: PgServer, conn: Conn, rust_schema: str, target: str, operation: str
) -> None:
    functions = function_fingerprints(conn, rust_schema)
    run = run_on_connection if target == "caller_transaction" else run_on_pool
    env = Env(rust_schema, conn)
    before, after, verify = run(pg_server.dsn, SETTINGS["defaults"], OPERATIONS[operation], env)
    assert after == before
    if verify is not None:
        verify()
    assert function_fingerprints(conn, rust_schema) == functions
    assert WorkerUtils(conn, schema=rust_schema).schema_status().flavour == "graphile_worker_rs"


def test_status_reads_a_rust_schema(conn: Conn, rust_schema: str, revision: int) -> None:
    utils = WorkerUtils(conn, schema=rust_schema)
    utils.add_raw_jobs([RawJobSpec("a", {}), RawJobSpec("a", {}, JobSpec(queue_name="q"))])
    report = utils.status()
    assert report.revision == revision
    assert [(g.task_identifier, g.queue_name, g.counts.ready) for g in report.groups] == [
        ("a", None, 1),
        ("a", "q", 1),
    ]


def retirements(conn: Conn, schema: str) -> set[int]:
    query = sql.SQL("select id from {}._private_job_retirements")
    return {job_id for (job_id,) in conn.execute(query.format(sql.Identifier(schema)))}


def test_operations_keep_the_crates_retirement_bookkeeping_at_22(
    conn: Conn, make_schema: Callable[[], str], schema: str
) -> None:
    build_rust_schema(conn, schema, 22, make_schema())
    utils = WorkerUtils(conn, schema=schema)
    failed, held = utils.add_raw_jobs(
        [RawJobSpec("a", {}), RawJobSpec("a", {}, JobSpec(job_key="k"))]
    )
    query = sql.SQL("update {}._private_jobs set locked_at = now(), locked_by = 'w' where id = %s")
    conn.execute(query.format(sql.Identifier(schema)), [held.id])

    (gave_up,) = utils.permanently_fail_jobs([failed.id], "no")
    removed = utils.remove_job("k")
    assert gave_up.is_permanently_failed and removed is not None and removed.id == held.id
    assert retirements(conn, schema) == {failed.id, held.id}

    (revived,) = utils.reschedule_jobs([failed.id], RescheduleOptions(attempts=0))
    assert revived.attempts == 0 and retirements(conn, schema) == {held.id}
    # Deleting a job drops its marker (the crate's cascade).
    utils.force_unlock_workers(["w"])
    assert [job.id for job in utils.complete_jobs([held.id])] == [held.id]
    assert retirements(conn, schema) == set()


# --------------------------------------------------------------------------------------------
# The job-key race: the crate's add_job raises GWNOR where graphile-worker returns nulls


def test_gwnor_on_an_owned_connection_is_retried(conn: Conn, rust_schema: str) -> None:
    lose_key_races(conn, rust_schema, 1)
    job = WorkerUtils(conn, schema=rust_schema).add_raw_job("a", {}, JobSpec(job_key="k"))
    assert stored_keys(conn, rust_schema) == ["k"] and job.key == "k"


def test_gwnor_through_a_pool_is_retried(pg_server: PgServer, conn: Conn, rust_schema: str) -> None:
    lose_key_races(conn, rust_schema, KEY_RACE_ATTEMPTS - 1)
    with ConnectionPool(pg_server.dsn, min_size=1, max_size=1, open=True) as pool:
        job = WorkerUtils(pool, schema=rust_schema).add_raw_job("a", {}, JobSpec(job_key="k"))
        with pool.connection() as pooled:
            assert pooled.info.transaction_status == pq.TransactionStatus.IDLE
    assert stored_keys(conn, rust_schema) == [job.key] == ["k"]


def test_gwnor_every_attempt_raises_job_key_race_error(conn: Conn, rust_schema: str) -> None:
    lose_key_races(conn, rust_schema, KEY_RACE_ATTEMPTS)
    utils = WorkerUtils(conn, schema=rust_schema)
    with pytest.raises(JobKeyRaceError, match="job_key 'k'") as raised:
        utils.add_raw_job("a", {}, JobSpec(job_key="k"))
    assert isinstance(raised.value.__cause__, psycopg.Error)
    assert raised.value.__cause__.sqlstate == GWNOR
    assert "aborted" not in str(raised.value)
    assert stored_keys(conn, rust_schema) == []


def test_gwnor_in_a_callers_transaction_raises_at_once_and_says_it_aborted(
    pg_server: PgServer, conn: Conn, rust_schema: str
) -> None:
    lose_key_races(conn, rust_schema, 1)
    with psycopg.connect(pg_server.dsn) as caller:
        utils = WorkerUtils(caller, schema=rust_schema)
        utils.add_raw_job("before", {})
        with pytest.raises(JobKeyRaceError, match="aborted your transaction") as raised:
            utils.add_raw_job("a", {}, JobSpec(job_key="k"))
        assert isinstance(raised.value.__cause__, psycopg.Error)
        assert raised.value.__cause__.sqlstate == GWNOR
        # The library leaves the caller's (failed) transaction to the caller.
        assert caller.info.transaction_status == pq.TransactionStatus.INERROR
        caller.rollback()
        job = utils.add_raw_job("a", {}, JobSpec(job_key="k"))
        caller.commit()
    assert stored_keys(conn, rust_schema) == [job.key] == ["k"]


def test_lost_race_in_the_crates_add_jobs_is_retried_or_raised(
    pg_server: PgServer, conn: Conn, rust_schema: str
) -> None:
    specs = [RawJobSpec("a", {}, JobSpec(job_key="k")), RawJobSpec("b", {})]
    lose_key_races(conn, rust_schema, 1)
    assert len(WorkerUtils(conn, schema=rust_schema).add_raw_jobs(specs)) == 2
    lose_key_races(conn, rust_schema, 1)
    with psycopg.connect(pg_server.dsn) as caller:
        with pytest.raises(JobKeyRaceError, match="in a new transaction"):
            WorkerUtils(caller, schema=rust_schema).add_raw_jobs(specs)
        caller.rollback()
    assert stored_keys(conn, rust_schema) == ["k", None]


# --------------------------------------------------------------------------------------------
# Pure logic (no database)


@pytest.mark.parametrize("flavour", ["graphile-worker", "graphile_worker_rs"])
def test_unit_status_carries_the_flavour_it_read(flavour: SchemaFlavour) -> None:
    read = _Revisions(
        server_version_num=150000,
        revision=21,
        breaking_revision=16,
        has_breaking_column=True,
        has_migrations_table=True,
        flavour=flavour,
    )
    status = _status(read)
    assert (status.flavour, status.state) == (flavour, SchemaState.AHEAD_COMPATIBLE)


def test_unit_schema_status_defaults_to_graphile_worker() -> None:
    status = SchemaStatus(
        state=SchemaState.CURRENT, revision=20, breaking_revision=19, server_version_num=150000
    )
    assert status.flavour == "graphile-worker"
