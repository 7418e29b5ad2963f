"""The keyless fast path of bulk_add_raw_jobs writes exactly what add_jobs writes, and is used
only where the schema's add_jobs is a known revision-20 one (ours or graphile-worker 0.18's).

The equality proof runs the same batch through the fast path on one schema and through
graphile-worker's add_jobs (``add_raw_jobs``) on another, and compares every column but ids and
timestamps, the tasks and queues tables, and the ``jobs:insert`` notifications.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import (
    DatabaseError,
    InvalidJobSpec,
    JobKeyRaceError,
    JobSpec,
    RawJobSpec,
    WorkerUtils,
)
from graphile_worker_utils._bulk_enqueue import fast_path_applies
from graphile_worker_utils._cursors import cursor
from tests._helpers import table
from tests._job_keys import KEY, PENDING, existing_job, job_rows, race_for_key, replacement
from tests._node import GraphileWorker
from tests._rust_schemas import RUST_REVISIONS, build_rust_schema
from tests._server import PgServer

Conn = psycopg.Connection[Any]
UTC = dt.timezone.utc
GIVEN = dt.datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)

IDENTIFIERS = ["existing_task", "new_task", "tâche_ünïcode"]
QUEUES = [None, "existing_queue", "new_queue", "file d'attente ✓"]
RUN_AT = [None, GIVEN, GIVEN + dt.timedelta(microseconds=1)]
PRIORITIES = [None, -5, 0, 32767, -32768]
MAX_ATTEMPTS = [None, 1, 3, 32767]
FLAGS: list[list[str] | None] = [None, [], ["a"], ["b", "a", "b"], ["ü", "x y"]]
PAYLOADS: list[Any] = [
    None,
    {},
    {"text": "é 🎉 \u0000 nul", "escaped": "\\u0000"},
    [1, [2, {"three": 3.5}]],
    "a string",
    12345678901234567890,
    -0.0,
    {"lone": "\ud800"},
    True,
    {"nested": {"deep": [None, False, "\u2028"]}},
]


def batch() -> list[RawJobSpec]:
    """Jobs covering each value of every field, in shifting combinations, shared specs too."""
    shared = JobSpec(queue_name="existing_queue", priority=1)
    jobs = []
    for n in range(60):
        spec = JobSpec(
            queue_name=QUEUES[n % len(QUEUES)],
            run_at=RUN_AT[n % len(RUN_AT)],
            priority=PRIORITIES[n % len(PRIORITIES)],
            max_attempts=MAX_ATTEMPTS[n % len(MAX_ATTEMPTS)],
            flags=FLAGS[n % len(FLAGS)],
        )
        jobs.append(RawJobSpec(IDENTIFIERS[n % 3], PAYLOADS[n % len(PAYLOADS)], spec))
        jobs.append(RawJobSpec(IDENTIFIERS[(n + 1) % 3], {"n": n}, shared))
    return jobs


def rows(conn: Conn, schema: str) -> Counter[tuple[Any, ...]]:
    """Every job's columns but ids and timestamps (run_at: given, or equal to created_at)."""
    query = sql.SQL(
        "select task.identifier, queue.queue_name, job.payload::text, job.priority,"
        " case when job.run_at = job.created_at then 'now'"
        " when job.run_at in (%(given)s, %(given)s + interval '1 microsecond')"
        " then job.run_at::text else 'local clock' end,"
        " job.attempts, job.max_attempts, job.last_error, job.key, job.locked_at,"
        " job.locked_by, job.revision, job.flags::text, job.is_available,"
        " job.created_at = job.updated_at"
        " from {jobs} as job join {tasks} as task on task.id = job.task_id"
        " left join {queues} as queue on queue.id = job.job_queue_id"
    ).format(
        jobs=table(schema, "_private_jobs"),
        tasks=table(schema, "_private_tasks"),
        queues=table(schema, "_private_job_queues"),
    )
    return Counter(conn.execute(query, {"given": GIVEN}).fetchall())


def names(conn: Conn, schema: str) -> tuple[Any, ...]:
    """The task identifiers and queue names, and whether their ids are gapless (none burned)."""
    found = []
    for name, column in (("_private_tasks", "identifier"), ("_private_job_queues", "queue_name")):
        query = sql.SQL(
            'select array_agg({0} order by {0} collate "C"), max(id) = count(*) from {1}'
        ).format(sql.Identifier(column), table(schema, name))
        found.append(conn.execute(query).fetchone())
    return tuple(found)


def seed(utils: WorkerUtils) -> None:
    utils.add_raw_job("existing_task", {"seed": 1}, JobSpec(queue_name="existing_queue"))


def notifications(listener: Conn, sender: Conn) -> list[int]:
    """The counts of the jobs:insert notifications ``sender`` sent, each checked for its shape
    (the channel is database-wide: other sessions' are left out)."""
    counts = []
    for notify in listener.notifies(timeout=0.5):
        if notify.pid != sender.info.backend_pid:
            continue
        assert re.fullmatch(r'\{"r":[0-9.e-]+,"count":\d+\}', notify.payload), notify.payload
        counts.append(json.loads(notify.payload)["count"])
    return counts


def listening(dsn: str) -> Conn:
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute('listen "jobs:insert"')
    return listener


@pytest.fixture(params=["ours", "graphile-worker 0.18.0"])
def installer(request: pytest.FixtureRequest, node_dsn: str, admin: Conn) -> Callable[[str], None]:
    """Installs revision 20 on a schema: by this library, or by graphile-worker itself."""

    def ours(schema: str) -> None:
        WorkerUtils(admin, schema=schema).migrate()

    def graphile_workers(schema: str) -> None:
        graphile_worker.migrate("0.18.0", node_dsn, schema)

    if request.param == "ours":
        return ours
    graphile_worker: GraphileWorker = request.getfixturevalue("graphile_worker")
    return graphile_workers


@pytest.mark.parametrize("use_local_time", [False, True])
def test_the_fast_path_writes_exactly_what_add_jobs_writes(
    admin: Conn,
    pg_server: PgServer,
    make_schema: Callable[[], str],
    installer: Callable[[str], None],
    use_local_time: bool,
) -> None:
    # Straight to the server (never through PgBouncer): notifications are told apart by the
    # sending backend's pid.
    conn, dsn = admin, pg_server.dsn
    fast_schema, reference_schema = make_schema(), make_schema()
    for schema in (fast_schema, reference_schema):
        installer(schema)
        seed(WorkerUtils(conn, schema=schema))
    fast = WorkerUtils(conn, schema=fast_schema, use_local_time=use_local_time)
    reference = WorkerUtils(conn, schema=reference_schema, use_local_time=use_local_time)
    with cursor(conn) as cur:
        assert fast_path_applies(cur, fast_schema)
    jobs = batch()

    with listening(dsn) as listener:
        assert fast.bulk_add_raw_jobs(jobs) == len(jobs)
        fast_notified = notifications(listener, conn)
    with listening(dsn) as listener:
        assert len(reference.add_raw_jobs(jobs)) == len(jobs)
        reference_notified = notifications(listener, conn)

    assert rows(conn, fast_schema) == rows(conn, reference_schema)
    assert names(conn, fast_schema) == names(conn, reference_schema)
    assert fast_notified == reference_notified == [len(jobs)]


def test_the_fast_path_draws_ids_in_input_order_and_notifies_once_per_chunk(
    utils: WorkerUtils, admin: Conn, pg_server: PgServer, schema: str
) -> None:
    conn = admin
    with listening(pg_server.dsn) as listener:
        assert utils.using(conn).bulk_add_raw_jobs(batch(), chunk_size=50) == 120
        assert notifications(listener, conn) == [50, 50, 20]
    query = sql.SQL("select payload::text from {} order by id").format(
        table(schema, "_private_jobs")
    )
    stored = [text for (text,) in conn.execute(query)]
    assert stored[1::2] == [json.dumps({"n": n}, separators=(",", ":")) for n in range(60)]


def test_keyed_and_keyless_jobs_of_one_chunk_notify_per_statement(
    utils: WorkerUtils, admin: Conn, pg_server: PgServer
) -> None:
    conn = admin
    jobs = [RawJobSpec("t", None), RawJobSpec("t", None, JobSpec(job_key="k")), RawJobSpec("t")]
    with listening(pg_server.dsn) as listener:
        assert utils.using(conn).bulk_add_raw_jobs(jobs) == 3
        assert sorted(notifications(listener, conn)) == [1, 2]


# -- where the fast path is not used -----------------------------------------------------------


def change_add_jobs(conn: Conn, schema: str, change: Callable[[str], str]) -> None:
    (definition,) = conn.execute(  # type: ignore[misc]
        "select pg_get_functiondef(%s::regprocedure)",
        [
            f"{sql.Identifier(schema).as_string(conn)}.add_jobs"
            f"({sql.Identifier(schema).as_string(conn)}.job_spec[], boolean)"
        ],
    ).fetchone()
    conn.execute(change(definition), prepare=False)


def another_tools_comment(definition: str) -> str:
    return definition.replace("begin", "begin\n  -- changed by another tool", 1)


def keyless_jobs_are_written(utils: WorkerUtils, conn: Conn, schema: str) -> None:
    jobs = [RawJobSpec("t", {"n": n}, JobSpec(queue_name="q", flags=["f"])) for n in range(25)]
    assert utils.bulk_add_raw_jobs(jobs, chunk_size=10) == 25
    query = sql.SQL("select count(*) from {} where flags = '{{\"f\": true}}'").format(
        table(schema, "_private_jobs")
    )
    assert conn.execute(query).fetchone() == (25,)


def test_a_schema_whose_add_jobs_another_tool_changed_takes_add_jobs(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    change_add_jobs(conn, schema, another_tools_comment)
    with cursor(conn) as cur:
        assert not fast_path_applies(cur, schema)
    keyless_jobs_are_written(utils, conn, schema)


def test_a_security_definer_add_jobs_takes_add_jobs(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    change_add_jobs(
        conn,
        schema,
        lambda text: text.replace("LANGUAGE plpgsql", "LANGUAGE plpgsql SECURITY DEFINER"),
    )
    with cursor(conn) as cur:
        assert not fast_path_applies(cur, schema)
    keyless_jobs_are_written(utils, conn, schema)


@pytest.mark.parametrize("version", ["0.16.6", "0.17.3"])
def test_older_revisions_take_add_jobs(
    conn: Conn, schema: str, node_dsn: str, graphile_worker: GraphileWorker, version: str
) -> None:
    graphile_worker.migrate(version, node_dsn, schema)
    with cursor(conn) as cur:
        assert not fast_path_applies(cur, schema)
    keyless_jobs_are_written(WorkerUtils(conn, schema=schema), conn, schema)


@pytest.mark.parametrize("revision", RUST_REVISIONS)
def test_the_rust_crates_schemas_take_add_jobs(
    conn: Conn, make_schema: Callable[[], str], schema: str, revision: int
) -> None:
    build_rust_schema(conn, schema, revision, make_schema())
    with cursor(conn) as cur:
        assert not fast_path_applies(cur, schema)
    keyless_jobs_are_written(WorkerUtils(conn, schema=schema), conn, schema)


def test_a_connection_in_another_client_encoding_takes_add_jobs(
    utils: WorkerUtils, pg_dsn: str, conn: Conn, schema: str
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True, client_encoding="LATIN1") as latin1:
        keyless_jobs_are_written(utils.using(latin1), conn, schema)
        jobs = [RawJobSpec("t", {"n": "✓"})]
        with pytest.raises(InvalidJobSpec, match=r"jobs\[0\]\.payload: '✓' cannot be sent"):
            utils.using(latin1).bulk_add_raw_jobs(jobs)


# -- keyed jobs: one add_jobs statement needs no transaction, and still writes all or nothing


@pytest.mark.parametrize("chunks", [1, 3])
def test_losing_the_job_key_race_raises_and_keeps_nothing(
    utils: WorkerUtils, conn: Conn, schema: str, pg_dsn: str, chunks: int
) -> None:
    # Not through PgBouncer: the race harness waits on backend pids (tests/_job_keys.py).
    old = existing_job(utils, conn, schema, PENDING)
    batch = [
        RawJobSpec("send_invoice", {"v": "new"}, replacement(None)),
        *[RawJobSpec("other", {"n": n}, JobSpec(job_key=f"other{n}")) for n in range(5)],
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as own_conn:
        racing = WorkerUtils(own_conn, schema=schema)
        size = 6 if chunks == 1 else 2
        outcome = race_for_key(
            pg_dsn, schema, KEY, lambda: racing.bulk_add_raw_jobs(batch, chunk_size=size)
        )
    assert isinstance(outcome.error, JobKeyRaceError), repr(outcome.error)
    assert isinstance(outcome.error.__cause__, psycopg.Error)
    assert [row["id"] for row in job_rows(conn, schema)] == [old.id]


def test_a_single_keyed_statement_refused_by_the_server_keeps_nothing(
    utils: WorkerUtils, conn: Conn, schema: str
) -> None:
    ident = sql.Identifier(schema)
    conn.execute(
        sql.SQL(
            "create function {}.refuse() returns trigger language plpgsql as $$ begin"
            " if new.key = 'k13' then raise exception 'refused k13'; end if; return new; end $$"
        ).format(ident)
    )
    conn.execute(
        sql.SQL(
            "create trigger refuse before insert on {}._private_jobs"
            " for each row execute function {}.refuse()"
        ).format(ident, ident)
    )
    keyed = [RawJobSpec("t", {"n": n}, JobSpec(job_key=f"k{n}")) for n in range(20)]
    with pytest.raises(DatabaseError, match="refused k13"):
        utils.bulk_add_raw_jobs(keyed)
    assert job_rows(conn, schema) == []
