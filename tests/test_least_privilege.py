"""Least privilege: the grants an application role needs to enqueue, and to run maintenance,
on a graphile-worker schema that it does not own. Tested for real, with login roles.

What was found (PostgreSQL 15, schema revision 20 as this library installs it):

* The functions (``add_job``, ``add_jobs``, ``remove_job``, ``complete_jobs``,
  ``permanently_fail_jobs``, ``reschedule_jobs``, ``force_unlock_workers``) are plain
  ``SECURITY INVOKER`` functions: they run with the caller's privileges, so the caller needs
  the table privileges of every statement inside them, and of the library's own statements
  (which join ``_private_tasks`` and ``_private_job_queues`` to label the returned jobs, read
  them again by id in ``job_names``, and delete from the three tables in ``cleanup``).
* Functions are executable by PUBLIC unless the owner revokes it. The grants below name each
  function, so that they also work where the owner did (``revoke execute on all functions in
  schema ... from public``, which these tests do first).
* Row level security is enabled on ``_private_jobs``, ``_private_tasks`` and
  ``_private_job_queues`` with no policies. A role that neither owns the tables nor has
  ``BYPASSRLS`` sees no rows in them, whatever it was granted:

  - enqueueing fails: ``new row violates row-level security policy for table
    "_private_tasks"`` (a DatabaseError; psycopg's InsufficientPrivilege as ``__cause__``);
  - maintenance silently does nothing: ``remove_job`` returns None, ``complete_jobs`` and
    friends return ``[]`` and ``cleanup`` counts 0, while the jobs stay where they are.

  Two ways out, either is enough: ``alter role ... bypassrls`` (a superuser must run it; it
  lifts row level security on every table the role can reach), or policies for the role on
  the three tables, created by the schema's owner (a later breaking graphile-worker migration
  that recreates the tables would drop them).
* Policies must let the role *see* the rows too, not only insert them. With an insert-only
  policy on ``_private_tasks`` the job's task row is invisible to ``add_jobs``' own join, no job
  is written, and the library misreports it as a job-key race (a library bug, see
  ``test_a_role_whose_policies_hide_task_rows_is_told_so_not_that_it_lost_a_job_key_race``).
* ``migrate()`` needs the owner (or a role allowed to create the schema in the database):
  under the roles below it raises MigrationError carrying PostgreSQL's own words
  (``permission denied for database …`` on a new schema, ``permission denied for table
  migrations`` on an existing one, ``must be owner of function …`` when it may write the
  migrations table but not replace the functions).

The recipe (``GRANTS_RECIPE`` below is the same text, ready for the README)::

    -- As the owner of the schema (optional hardening: functions are PUBLIC by default)
    revoke execute on all functions in schema graphile_worker from public;

    -- (a) an application role that enqueues (add_raw_job(s), add_job(s))
    grant usage on schema graphile_worker to app_enqueue;
    grant execute on function graphile_worker.add_job(text, json, text, timestamptz,
        integer, text, integer, text[], text) to app_enqueue;
    grant execute on function graphile_worker.add_jobs(graphile_worker.job_spec[], boolean)
        to app_enqueue;
    grant select, insert on graphile_worker._private_tasks to app_enqueue;
    grant select, insert on graphile_worker._private_job_queues to app_enqueue;
    grant select, insert, update on graphile_worker._private_jobs to app_enqueue;

    -- (b) a maintenance role (remove_job, complete/fail/reschedule, force_unlock_workers,
    --     cleanup)
    grant usage on schema graphile_worker to app_maintenance;
    grant execute on function graphile_worker.remove_job(text) to app_maintenance;
    ... (one grant per function: complete_jobs(bigint[]), permanently_fail_jobs(bigint[], text),
         reschedule_jobs(bigint[], timestamptz, integer, integer, integer),
         force_unlock_workers(text[]))
    grant select, update, delete on graphile_worker._private_jobs to app_maintenance;
    grant select, update, delete on graphile_worker._private_job_queues to app_maintenance;
    grant select, delete on graphile_worker._private_tasks to app_maintenance;

    -- and, for either role, one of:
    alter role app_enqueue bypassrls;                      -- as a superuser
    create policy app_enqueue on graphile_worker._private_jobs to app_enqueue
        using (true) with check (true);                    -- as the owner, on each of
                                                           -- the three tables

Every line is needed: ``test_every_enqueue_grant_is_needed`` and
``test_every_maintenance_grant_is_needed`` take each privilege away in turn and watch an
operation fail with "permission denied" (or the row level security error).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from graphile_worker_utils import (
    CleanupTask,
    DatabaseError,
    GraphileWorkerError,
    JobKeyMode,
    JobKeyRaceError,
    JobSpec,
    MigrationError,
    RawJobSpec,
    RescheduleOptions,
    WorkerUtils,
)
from graphile_worker_utils._bulk_enqueue import fast_path_applies
from graphile_worker_utils._cursors import cursor
from tests._helpers import NAME_PREFIX, drop_role, drop_schema, unique_name
from tests._server import PgServer

Connection = psycopg.Connection[Any]

# --------------------------------------------------------------------------------------------
# The recipe. {schema} and {role} are filled in as quoted identifiers.

#: Optional hardening by the owner: without it every role may execute the functions.
REVOKE_PUBLIC_EXECUTE = "revoke execute on all functions in schema {schema} from public;\n"

#: What an application role needs to enqueue (add_raw_job, add_raw_jobs, add_job, add_jobs).
ENQUEUE_GRANTS = """\
grant usage on schema {schema} to {role};
grant execute on function {schema}.add_job(text, json, text, timestamptz, integer, text, integer, text[], text) to {role};
grant execute on function {schema}.add_jobs({schema}.job_spec[], boolean) to {role};
grant select, insert on {schema}._private_tasks to {role};
grant select, insert on {schema}._private_job_queues to {role};
grant select, insert, update on {schema}._private_jobs to {role};
"""  # noqa: E501

#: What a maintenance role needs (remove_job, complete_jobs, permanently_fail_jobs,
#: reschedule_jobs, force_unlock_workers, cleanup).
MAINTENANCE_GRANTS = """\
grant usage on schema {schema} to {role};
grant execute on function {schema}.remove_job(text) to {role};
grant execute on function {schema}.complete_jobs(bigint[]) to {role};
grant execute on function {schema}.permanently_fail_jobs(bigint[], text) to {role};
grant execute on function {schema}.reschedule_jobs(bigint[], timestamptz, integer, integer, integer) to {role};
grant execute on function {schema}.force_unlock_workers(text[]) to {role};
grant select, update, delete on {schema}._private_jobs to {role};
grant select, update, delete on {schema}._private_job_queues to {role};
grant select, delete on {schema}._private_tasks to {role};
"""  # noqa: E501

#: Row level security, way 1: as a superuser.
BYPASS_ROW_LEVEL_SECURITY = "alter role {role} bypassrls;\n"

#: Row level security, way 2: as the schema's owner, one policy per table (named after the role).
ROW_LEVEL_SECURITY_POLICIES = """\
create policy {role} on {schema}._private_jobs to {role} using (true) with check (true);
create policy {role} on {schema}._private_tasks to {role} using (true) with check (true);
create policy {role} on {schema}._private_job_queues to {role} using (true) with check (true);
"""


def _readme_text(template: str, role: str) -> str:
    return template.format(schema="graphile_worker", role=role)


#: The recipe as it goes in the README (schema graphile_worker, roles app_enqueue and
#: app_maintenance): the same statements these tests run.
GRANTS_RECIPE = (
    "-- As the schema's owner (optional hardening: functions are executable by PUBLIC)\n"
    + _readme_text(REVOKE_PUBLIC_EXECUTE, "")
    + "\n-- (a) a role that enqueues: add_raw_job(s), add_job(s)\n"
    + _readme_text(ENQUEUE_GRANTS, "app_enqueue")
    + "\n-- (b) a role that runs maintenance: remove_job, complete_jobs, permanently_fail_jobs,\n"
    "--     reschedule_jobs, force_unlock_workers, cleanup\n"
    + _readme_text(MAINTENANCE_GRANTS, "app_maintenance")
    + "\n-- Row level security is on (no policies) on the three tables: each role also needs\n"
    "-- EITHER, as a superuser:\n"
    + _readme_text(BYPASS_ROW_LEVEL_SECURITY, "app_enqueue")
    + _readme_text(BYPASS_ROW_LEVEL_SECURITY, "app_maintenance")
    + "-- OR, as the schema's owner, policies that let it see and write the rows:\n"
    + _readme_text(ROW_LEVEL_SECURITY_POLICIES, "app_enqueue")
    + _readme_text(ROW_LEVEL_SECURITY_POLICIES, "app_maintenance")
)

_TABLE_GRANT = re.compile(
    r"^grant (?P<privileges>[a-z, ]+) on (?P<table>\{schema\}\._\w+) to \{role\};$"
)


def statements(recipe: str) -> list[str]:
    """The recipe's statements, one per line."""
    return [line for line in recipe.splitlines() if line.strip()]


def single_privileges(recipe: str) -> list[str]:
    """The recipe with every multi-privilege table grant split into one grant per privilege."""
    atoms = []
    for statement in statements(recipe):
        match = _TABLE_GRANT.match(statement)
        if match is None:
            atoms.append(statement)
            continue
        for privilege in match["privileges"].split(", "):
            atoms.append(f"grant {privilege} on {match['table']} to {{role}};")
    return atoms


def atom_id(atom: str) -> str:
    """A short test id for one grant: ``select-_private_jobs``, ``execute-add_job``."""
    atom = re.sub(
        r"\(.*\)|\{schema\}\.?|\{role\}|\b(grant|on|to|function|schema|alter role)\b", " ", atom
    )
    return "-".join(atom.replace(";", " ").split())


# --------------------------------------------------------------------------------------------
# Fixtures: an admin connection, a locked-down schema, login roles


@dataclass(frozen=True)
class Role:
    name: str
    dsn: str


@pytest.fixture
def gw_schema(admin: Connection, schema: str) -> str:
    """A schema migrated by the superuser, with execute revoked from PUBLIC."""
    WorkerUtils(admin, schema=schema).migrate()
    run(admin, REVOKE_PUBLIC_EXECUTE, schema, "")
    return schema


def run(admin: Connection, recipe: str | list[str], schema: str, role: str) -> None:
    """Run recipe statements with ``{schema}`` and ``{role}`` as quoted identifiers."""
    for statement in statements(recipe) if isinstance(recipe, str) else recipe:
        admin.execute(
            sql.SQL(statement).format(  # type: ignore[arg-type, unused-ignore]
                schema=sql.Identifier(schema), role=sql.Identifier(role)
            )
        )


@pytest.fixture(scope="module", autouse=True)
def no_role_left_behind(pg_server: PgServer) -> Iterator[None]:
    """After this module, no role of this session is left (they are dropped if they are)."""
    yield
    pattern = NAME_PREFIX.replace("_", r"\_") + "role%"
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        left = [
            r[0]
            for r in admin.execute("select rolname from pg_roles where rolname like %s", [pattern])
        ]
    for name in left:
        drop_role(pg_server, name)
    assert not left, f"roles left behind (now dropped): {left}"


@pytest.fixture
def make_role(pg_server: PgServer, schema: str) -> Iterator[Callable[[], Role]]:
    """A factory of login roles (unique names, random passwords), dropped at teardown.

    It depends on ``schema`` so that the roles are dropped before the schema is.
    """
    names: list[str] = []

    def make() -> Role:
        name = unique_name("role_")
        password = secrets.token_hex(16)
        with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("create role {} login password {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
        names.append(name)
        return Role(name, make_conninfo(pg_server.dsn, user=name, password=password))

    yield make
    for name in names:
        drop_role(pg_server, name)


@pytest.fixture
def connect_as() -> Iterator[Callable[[Role], Connection]]:
    """Autocommit connections that log in as a role; closed at teardown (before the roles
    are dropped: fixtures tear down in reverse order)."""
    opened: list[Connection] = []

    def connect(role: Role) -> Connection:
        connection = psycopg.connect(role.dsn, autocommit=True)
        opened.append(connection)
        assert connection.execute("select current_user").fetchone() == (role.name,)
        return connection

    yield connect
    for connection in opened:
        connection.close()


RLS_WAYS = pytest.mark.parametrize("rls_way", ["bypassrls", "policies"])


def grant_rls(admin: Connection, rls_way: str, schema: str, role: str) -> None:
    recipe = BYPASS_ROW_LEVEL_SECURITY if rls_way == "bypassrls" else ROW_LEVEL_SECURITY_POLICIES
    run(admin, recipe, schema, role)


@pytest.fixture
def enqueuer_utils(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
    request: pytest.FixtureRequest,
) -> WorkerUtils:
    """WorkerUtils logged in as a role with exactly the enqueue grants (and the RLS way of the
    test's ``rls_way`` parameter)."""
    role = make_role()
    run(admin, ENQUEUE_GRANTS, gw_schema, role.name)
    grant_rls(admin, request.getfixturevalue("rls_way"), gw_schema, role.name)
    return WorkerUtils(connect_as(role), schema=gw_schema)


@pytest.fixture
def maintainer(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
    request: pytest.FixtureRequest,
) -> WorkerUtils:
    """WorkerUtils logged in as a role with exactly the maintenance grants."""
    role = make_role()
    run(admin, MAINTENANCE_GRANTS, gw_schema, role.name)
    grant_rls(admin, request.getfixturevalue("rls_way"), gw_schema, role.name)
    return WorkerUtils(connect_as(role), schema=gw_schema)


def view_locked_by(admin: Connection, schema: str, job_id: int) -> str | None:
    row = admin.execute(
        sql.SQL("select locked_by from {}._private_jobs where id = %s").format(
            sql.Identifier(schema)
        ),
        [job_id],
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def view_row(admin: Connection, schema: str, job_id: int) -> tuple[Any, ...] | None:
    """(task_identifier, queue_name, key, revision) of a job, read by the superuser."""
    return admin.execute(
        sql.SQL(
            "select task_identifier, queue_name, key, revision from {}.jobs where id = %s"
        ).format(sql.Identifier(schema)),
        [job_id],
    ).fetchone()


def lock(admin: Connection, schema: str, job_id: int, worker: str) -> None:
    """Lock a job and its queue as a worker would."""
    ident = sql.Identifier(schema)
    admin.execute(
        sql.SQL(
            "update {}._private_jobs set locked_at = now(), locked_by = %s where id = %s"
        ).format(ident),
        [worker, job_id],
    )
    admin.execute(
        sql.SQL(
            "update {s}._private_job_queues set locked_at = now(), locked_by = %s"
            " where id = (select job_queue_id from {s}._private_jobs where id = %s)"
        ).format(s=ident),
        [worker, job_id],
    )


# --------------------------------------------------------------------------------------------
# (a) Enqueueing


@RLS_WAYS
def test_the_enqueue_grants_let_a_role_add_raw_job_with_correct_labels(
    admin: Connection, gw_schema: str, enqueuer_utils: WorkerUtils, rls_way: str
) -> None:
    owner = WorkerUtils(admin, schema=gw_schema)
    owner.add_raw_job("existing_task", {}, JobSpec(queue_name="existing_queue"))

    new = enqueuer_utils.add_raw_job(
        "send_email", {"to": "ada"}, JobSpec(queue_name="mail", job_key="welcome:1")
    )
    known = enqueuer_utils.add_raw_job("existing_task", {}, JobSpec(queue_name="existing_queue"))
    replaced = enqueuer_utils.add_raw_job("send_email", {"to": "bob"}, JobSpec(job_key="welcome:1"))
    deduped = enqueuer_utils.add_raw_job(
        "send_email", {}, JobSpec(job_key="welcome:1", job_key_mode=JobKeyMode.UNSAFE_DEDUPE)
    )

    assert (new.task_identifier, new.queue_name, new.payload) == (
        "send_email",
        "mail",
        {"to": "ada"},
    )
    assert (known.task_identifier, known.queue_name) == ("existing_task", "existing_queue")
    assert (replaced.id, replaced.queue_name, replaced.revision) == (new.id, None, 1)
    assert (deduped.id, deduped.revision) == (new.id, 2)
    assert view_row(admin, gw_schema, new.id) == ("send_email", None, "welcome:1", 2)
    assert view_row(admin, gw_schema, known.id) == ("existing_task", "existing_queue", None, 0)


@RLS_WAYS
def test_the_enqueue_grants_let_a_role_add_raw_jobs_with_correct_labels(
    admin: Connection, gw_schema: str, enqueuer_utils: WorkerUtils, rls_way: str
) -> None:
    WorkerUtils(admin, schema=gw_schema).add_raw_job("old", {}, JobSpec(queue_name="old_q"))
    specs = [
        RawJobSpec("new_a", {"n": 0}, JobSpec(queue_name="new_q1", job_key="k0")),
        RawJobSpec("new_b", {"n": 1}, JobSpec(queue_name="new_q2", job_key="k1")),
        RawJobSpec("old", {"n": 2}, JobSpec(queue_name="old_q", job_key="k2")),
        RawJobSpec("new_a", {"n": 3}, JobSpec(job_key="k3")),
        RawJobSpec("new_c", {"n": 4}, JobSpec(queue_name="new_q1", job_key="k4")),
    ]

    jobs = enqueuer_utils.add_raw_jobs(specs)

    expected = {s.spec.job_key: (s.identifier, s.spec.queue_name) for s in specs}
    assert {j.key: (j.task_identifier, j.queue_name) for j in jobs} == expected
    for job in jobs:
        assert view_row(admin, gw_schema, job.id) == (*expected[job.key], job.key, 0)


@RLS_WAYS
def test_the_enqueue_grants_let_a_role_bulk_add_jobs_through_the_fast_path(
    admin: Connection, gw_schema: str, enqueuer_utils: WorkerUtils, rls_way: str
) -> None:
    WorkerUtils(admin, schema=gw_schema).add_raw_job("old", {}, JobSpec(queue_name="old_q"))
    specs = [
        RawJobSpec("old" if n % 2 else f"new_{n % 3}", {"n": n}, JobSpec(queue_name=f"q{n % 4}"))
        for n in range(40)
    ]
    specs[7] = RawJobSpec("new_0", {"n": 7}, JobSpec(job_key="k7"))

    conn = enqueuer_utils._target
    assert isinstance(conn, psycopg.Connection)
    with cursor(conn) as cur:  # the catalogs it reads are readable by any role
        assert fast_path_applies(cur, gw_schema)
    assert enqueuer_utils.bulk_add_raw_jobs(specs, chunk_size=15) == 40

    rows = admin.execute(
        sql.SQL(
            "select (job.payload->>'n')::int, task.identifier, queue.queue_name, job.key"
            " from {s}._private_jobs as job"
            " join {s}._private_tasks as task on task.id = job.task_id"
            " left join {s}._private_job_queues as queue on queue.id = job.job_queue_id"
            " where job.payload->>'n' is not null order by 1"
        ).format(s=sql.Identifier(gw_schema))
    ).fetchall()
    assert rows == [
        (n, spec.identifier, spec.spec.queue_name, spec.spec.job_key)
        for n, spec in enumerate(specs)
    ]


def grant_enqueue_hiding_task_rows(admin: Connection, gw_schema: str, role: Role) -> None:
    """The enqueue grants, with policies that let ``role`` insert tasks but not see them: a
    DBA's plausible reading of "it only needs to add jobs"."""
    run(admin, ENQUEUE_GRANTS, gw_schema, role.name)
    run(
        admin,
        [
            "create policy {role} on {schema}._private_tasks for insert to {role}"
            " with check (true);",
            "create policy {role} on {schema}._private_job_queues to {role} using (true)"
            " with check (true);",
            "create policy {role} on {schema}._private_jobs to {role} using (true)"
            " with check (true);",
        ],
        gw_schema,
        role.name,
    )


def test_a_role_whose_policies_hide_task_rows_bulk_adds_nothing_and_is_told_why(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
) -> None:
    role = make_role()
    grant_enqueue_hiding_task_rows(admin, gw_schema, role)
    utils = WorkerUtils(connect_as(role), schema=gw_schema)

    with pytest.raises(DatabaseError, match="cannot see the rows it writes"):
        utils.bulk_add_raw_jobs([RawJobSpec("task", {"n": n}) for n in range(30)], chunk_size=10)
    count = admin.execute(
        sql.SQL("select count(*) from {}._private_jobs").format(sql.Identifier(gw_schema))
    ).fetchone()
    assert count == (0,)


def test_an_enqueue_role_cannot_run_maintenance(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
) -> None:
    role = make_role()
    run(admin, ENQUEUE_GRANTS + BYPASS_ROW_LEVEL_SECURITY, gw_schema, role.name)
    utils = WorkerUtils(connect_as(role), schema=gw_schema)
    job = utils.add_raw_job("task", {}, JobSpec(job_key="k"))

    with pytest.raises(DatabaseError, match="permission denied for function remove_job") as raised:
        utils.remove_job("k")

    assert isinstance(raised.value.__cause__, psycopg.errors.InsufficientPrivilege)
    assert view_row(admin, gw_schema, job.id) == ("task", None, "k", 0)


ENQUEUE_ATOMS = single_privileges(ENQUEUE_GRANTS + BYPASS_ROW_LEVEL_SECURITY)


@pytest.mark.parametrize("left_out", ENQUEUE_ATOMS, ids=atom_id)
def test_every_enqueue_grant_is_needed(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
    left_out: str,
) -> None:
    role = make_role()
    run(admin, [atom for atom in ENQUEUE_ATOMS if atom != left_out], gw_schema, role.name)
    utils = WorkerUtils(connect_as(role), schema=gw_schema)
    operations: list[Callable[[], object]] = [
        lambda: utils.add_raw_job("t1", {}, JobSpec(queue_name="q1", job_key="k")),
        lambda: utils.add_raw_job("t1", {}, JobSpec(queue_name="q1", job_key="k")),
        lambda: utils.add_raw_jobs([RawJobSpec("t2", {}, JobSpec(queue_name="q2"))]),
    ]

    refusals = []
    for operation in operations:
        try:
            operation()
        except DatabaseError as error:
            refusals.append(error)

    assert refusals, f"every enqueue worked without: {left_out}"
    for refusal in refusals:
        assert isinstance(refusal.__cause__, psycopg.errors.InsufficientPrivilege), repr(refusal)
        assert re.search(r"permission denied|row-level security", str(refusal)), str(refusal)


# --------------------------------------------------------------------------------------------
# (b) Maintenance


@RLS_WAYS
def test_the_maintenance_grants_let_a_role_remove_a_job(
    admin: Connection, gw_schema: str, maintainer: WorkerUtils, rls_way: str
) -> None:
    job = WorkerUtils(admin, schema=gw_schema).add_raw_job(
        "task", {}, JobSpec(queue_name="q", job_key="k")
    )

    removed = maintainer.remove_job("k")

    assert removed is not None
    assert (removed.id, removed.task_identifier, removed.queue_name) == (job.id, "task", "q")
    assert view_row(admin, gw_schema, job.id) is None


@RLS_WAYS
def test_the_maintenance_grants_let_a_role_complete_jobs_skipping_locked_ones(
    admin: Connection, gw_schema: str, maintainer: WorkerUtils, rls_way: str
) -> None:
    owner = WorkerUtils(admin, schema=gw_schema)
    free = owner.add_raw_job("task", {}, JobSpec(queue_name="q"))
    locked = owner.add_raw_job("task", {})
    lock(admin, gw_schema, locked.id, "worker-1")

    done = maintainer.complete_jobs([free.id, locked.id])

    assert [(j.id, j.task_identifier, j.queue_name) for j in done] == [(free.id, "task", "q")]
    assert view_row(admin, gw_schema, free.id) is None
    assert view_row(admin, gw_schema, locked.id) is not None


@RLS_WAYS
def test_the_maintenance_grants_let_a_role_permanently_fail_jobs(
    admin: Connection, gw_schema: str, maintainer: WorkerUtils, rls_way: str
) -> None:
    job = WorkerUtils(admin, schema=gw_schema).add_raw_job("task", {}, JobSpec(queue_name="q"))

    (failed,) = maintainer.permanently_fail_jobs([job.id], reason="gave up")

    assert (failed.id, failed.task_identifier, failed.queue_name) == (job.id, "task", "q")
    assert (failed.last_error, failed.is_permanently_failed) == ("gave up", True)


@RLS_WAYS
def test_the_maintenance_grants_let_a_role_reschedule_jobs(
    admin: Connection, gw_schema: str, maintainer: WorkerUtils, rls_way: str
) -> None:
    job = WorkerUtils(admin, schema=gw_schema).add_raw_job("task", {}, JobSpec(queue_name="q"))

    (moved,) = maintainer.reschedule_jobs([job.id], RescheduleOptions(priority=5, attempts=2))

    assert (moved.id, moved.task_identifier, moved.queue_name) == (job.id, "task", "q")
    assert (moved.priority, moved.attempts) == (5, 2)


@RLS_WAYS
def test_the_maintenance_grants_let_a_role_force_unlock_workers(
    admin: Connection, gw_schema: str, maintainer: WorkerUtils, rls_way: str
) -> None:
    job = WorkerUtils(admin, schema=gw_schema).add_raw_job("task", {}, JobSpec(queue_name="q"))
    lock(admin, gw_schema, job.id, "crashed-worker")

    maintainer.force_unlock_workers(["crashed-worker"])

    ident = sql.Identifier(gw_schema)
    assert admin.execute(
        sql.SQL(
            "select (select locked_by from {s}._private_jobs where id = %s),"
            " (select count(*) from {s}._private_job_queues where locked_by is not null)"
        ).format(s=ident),
        [job.id],
    ).fetchone() == (None, 0)


@RLS_WAYS
def test_the_maintenance_grants_let_a_role_run_every_cleanup_task(
    admin: Connection, gw_schema: str, maintainer: WorkerUtils, rls_way: str
) -> None:
    owner = WorkerUtils(admin, schema=gw_schema)
    failed = owner.add_raw_job("doomed", {}, JobSpec(queue_name="doomed_q"))
    owner.permanently_fail_jobs([failed.id])
    owner.add_raw_job("alive", {}, JobSpec(queue_name="alive_q"))
    unused = owner.add_raw_job("kept", {})
    owner.complete_jobs([unused.id])

    removed = maintainer.cleanup(list(CleanupTask), task_identifiers_to_keep=["kept"])

    assert removed == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: 1,
        CleanupTask.GC_JOB_QUEUES: 1,
    }
    ident = sql.Identifier(gw_schema)
    assert admin.execute(
        sql.SQL(
            "select array(select identifier from {s}._private_tasks order by 1),"
            " array(select queue_name from {s}._private_job_queues order by 1)"
        ).format(s=ident)
    ).fetchone() == (["alive", "kept"], ["alive_q"])


MAINTENANCE_ATOMS = single_privileges(MAINTENANCE_GRANTS + BYPASS_ROW_LEVEL_SECURITY)


@pytest.mark.parametrize("left_out", MAINTENANCE_ATOMS, ids=atom_id)
def test_every_maintenance_grant_is_needed(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
    left_out: str,
) -> None:
    owner = WorkerUtils(admin, schema=gw_schema)
    owner.add_raw_job("a", {}, JobSpec(queue_name="qa", job_key="k"))
    to_complete, to_fail, to_move, locked = (
        owner.add_raw_job(name, {}, JobSpec(queue_name=f"q{name}")) for name in "bcde"
    )
    lock(admin, gw_schema, locked.id, "w")
    owner.permanently_fail_jobs([owner.add_raw_job("f", {}).id])
    owner.complete_jobs([owner.add_raw_job("g", {}, JobSpec(queue_name="qg")).id])
    role = make_role()
    run(admin, [atom for atom in MAINTENANCE_ATOMS if atom != left_out], gw_schema, role.name)
    utils = WorkerUtils(connect_as(role), schema=gw_schema)

    def unlock() -> bool:
        utils.force_unlock_workers(["w"])
        return view_locked_by(admin, gw_schema, locked.id) is None

    # Each operation returns something truthy when it did its work.
    operations: list[Callable[[], object]] = [
        lambda: utils.remove_job("k"),
        lambda: utils.complete_jobs([to_complete.id]),
        lambda: utils.permanently_fail_jobs([to_fail.id]),
        lambda: utils.reschedule_jobs([to_move.id], RescheduleOptions(priority=1)),
        unlock,
        lambda: any(utils.cleanup(list(CleanupTask)).values()),
    ]

    refusals: list[GraphileWorkerError] = []
    silent = 0
    for operation in operations:
        try:
            silent += not operation()
        except DatabaseError as error:
            refusals.append(error)

    if "bypassrls" in left_out:
        # Without a way past row level security, maintenance finds no rows and says nothing.
        assert (silent, refusals) == (len(operations), [])
        return
    assert refusals, f"every maintenance operation worked without: {left_out}"
    for refusal in refusals:
        assert isinstance(refusal.__cause__, psycopg.errors.InsufficientPrivilege), repr(refusal)
        assert "permission denied" in str(refusal), str(refusal)


def test_maintenance_by_a_role_without_bypassrls_or_policies_silently_finds_no_jobs(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
) -> None:
    owner = WorkerUtils(admin, schema=gw_schema)
    job = owner.add_raw_job("task", {}, JobSpec(job_key="k"))
    role = make_role()
    run(admin, MAINTENANCE_GRANTS, gw_schema, role.name)
    utils = WorkerUtils(connect_as(role), schema=gw_schema)

    results = (utils.remove_job("k"), utils.complete_jobs([job.id]))

    # Row level security hides every row: the calls "succeed" and change nothing. The recipe
    # therefore makes bypassrls (or policies) part of the grants.
    assert results == (None, [])
    assert view_row(admin, gw_schema, job.id) == ("task", None, "k", 0)


# --------------------------------------------------------------------------------------------
# Row level security that hides rows, and what the functions are


def test_a_role_whose_policies_hide_task_rows_is_told_so_not_that_it_lost_a_job_key_race(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
) -> None:
    role = make_role()
    grant_enqueue_hiding_task_rows(admin, gw_schema, role)
    utils = WorkerUtils(connect_as(role), schema=gw_schema)

    # The job has no key: whatever went wrong, it was not a job-key race.
    with pytest.raises(GraphileWorkerError) as raised:
        utils.add_raw_job("task", {})

    assert not isinstance(raised.value, JobKeyRaceError), str(raised.value)
    assert re.search(r"row.level security|_private_tasks", str(raised.value), re.I), str(
        raised.value
    )


def test_the_schema_functions_run_with_the_callers_privileges(
    admin: Connection, gw_schema: str
) -> None:
    rows = admin.execute(
        "select proname, prosecdef from pg_proc where pronamespace = %s::regnamespace"
        " order by proname",
        [sql.Identifier(gw_schema).as_string(admin)],
    ).fetchall()

    assert rows == [
        ("add_job", False),
        ("add_jobs", False),
        ("complete_jobs", False),
        ("force_unlock_workers", False),
        ("permanently_fail_jobs", False),
        ("remove_job", False),
        ("reschedule_jobs", False),
    ]


def test_row_level_security_is_on_without_policies_on_the_private_tables(
    admin: Connection, gw_schema: str
) -> None:
    rows = admin.execute(
        "select c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        " (select count(*) from pg_policy p where p.polrelid = c.oid)"
        " from pg_class c where c.relnamespace = %s::regnamespace and c.relkind = 'r'"
        " and c.relname like '\\_private\\_%%' order by 1",
        [sql.Identifier(gw_schema).as_string(admin)],
    ).fetchall()

    assert rows == [
        ("_private_job_queues", True, False, 0),
        ("_private_jobs", True, False, 0),
        ("_private_known_crontabs", True, False, 0),
        ("_private_tasks", True, False, 0),
    ]


# --------------------------------------------------------------------------------------------
# migrate() and schema_status() under an application role


@pytest.fixture
def enqueue_role_utils(
    admin: Connection,
    gw_schema: str,
    make_role: Callable[[], Role],
    connect_as: Callable[[Role], Connection],
) -> Callable[[str], WorkerUtils]:
    """WorkerUtils on a given schema, logged in as a role with the enqueue grants on
    ``gw_schema`` (and bypassrls)."""
    role = make_role()
    run(admin, ENQUEUE_GRANTS + BYPASS_ROW_LEVEL_SECURITY, gw_schema, role.name)
    connection = connect_as(role)
    return lambda schema: WorkerUtils(connection, schema=schema)


def test_migrate_by_an_application_role_on_a_new_schema_fails_naming_the_database_privilege(
    admin: Connection, pg_server: PgServer, enqueue_role_utils: Callable[[str], WorkerUtils]
) -> None:
    new_schema = unique_name()
    try:
        with pytest.raises(MigrationError) as raised:
            enqueue_role_utils(new_schema).migrate()

        assert "permission denied for database" in str(raised.value)
        assert new_schema in str(raised.value)
        assert isinstance(raised.value.__cause__, psycopg.errors.InsufficientPrivilege)
        assert admin.execute(
            "select count(*) from pg_namespace where nspname = %s", [new_schema]
        ).fetchone() == (0,)
    finally:
        drop_schema(pg_server, new_schema)


def test_migrate_by_an_application_role_on_an_installed_schema_fails_naming_the_table(
    gw_schema: str, enqueue_role_utils: Callable[[str], WorkerUtils]
) -> None:
    with pytest.raises(MigrationError) as raised:
        enqueue_role_utils(gw_schema).migrate()

    assert "permission denied for table migrations" in str(raised.value)
    assert gw_schema in str(raised.value)
    assert isinstance(raised.value.__cause__, psycopg.errors.InsufficientPrivilege)


@pytest.mark.parametrize(
    ("may_create_in_schema", "missing"),
    [(False, "permission denied for schema"), (True, "must be owner of function")],
    ids=["without-create", "with-create"],
)
def test_migrate_by_a_role_that_may_write_migrations_but_does_not_own_the_schema_names_what_fails(
    admin: Connection,
    gw_schema: str,
    enqueue_role_utils: Callable[[str], WorkerUtils],
    may_create_in_schema: bool,
    missing: str,
) -> None:
    ident = sql.Identifier(gw_schema)
    admin.execute(sql.SQL("delete from {}.migrations where id = 20").format(ident))
    admin.execute(sql.SQL("grant select, insert on {}.migrations to public").format(ident))
    if may_create_in_schema:
        admin.execute(sql.SQL("grant create on schema {} to public").format(ident))

    with pytest.raises(MigrationError) as raised:
        enqueue_role_utils(gw_schema).migrate()

    assert missing in str(raised.value)
    assert gw_schema in str(raised.value)
    assert isinstance(raised.value.__cause__, psycopg.errors.InsufficientPrivilege)
    assert admin.execute(sql.SQL("select max(id) from {}.migrations").format(ident)).fetchone() == (
        19,
    )


def test_schema_status_by_a_role_that_cannot_read_migrations_raises_a_library_error(
    gw_schema: str, enqueue_role_utils: Callable[[str], WorkerUtils]
) -> None:
    with pytest.raises(GraphileWorkerError) as raised:
        enqueue_role_utils(gw_schema).schema_status()

    assert "permission denied for table migrations" in str(raised.value)
    assert isinstance(raised.value.__cause__, psycopg.errors.InsufficientPrivilege)
