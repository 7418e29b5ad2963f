"""The SQLAlchemy helper (graphile_worker_utils.contrib.sqlalchemy) on the test server.

Each test has its own engine on ``pg_dsn`` (so through PgBouncer when the suite runs through
it) that maps the ORM's unqualified ``signups`` table to the test's schema
(``schema_translate_map``: PgBouncer refuses a ``search_path`` in the startup ``options``),
where graphile-worker's tables live too. What was committed is read back on ``conn``, the
suite's own connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Engine, NullPool, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session
from sqlalchemy.orm import sessionmaker as make_sessionmaker

from graphile_worker_utils import ConnectionStateError, GraphileWorkerError, JobSpec, WorkerUtils
from graphile_worker_utils.contrib.sqlalchemy import UnsupportedDatabaseError, worker_utils
from tests._helpers import Database
from tests._pgbouncer import running_pgbouncer
from tests._server import PgServer
from tests.flask_sqlalchemy_app import close_app, create_app
from tests.sqlalchemy_recipe import RECIPE

Connection = psycopg.Connection[Any]


class Base(DeclarativeBase):
    pass


class Signup(Base):
    __tablename__ = "signups"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]


def sqlalchemy_url(dsn: str, *, driver: str = "psycopg") -> URL:
    """A SQLAlchemy URL for a libpq DSN: a unix socket folder goes in ``?host=``, or for
    pg8000 (which knows no libpq parameters) its socket file in ``?unix_sock=``."""
    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    user, password = params.pop("user", None), params.pop("password", None) or None
    host, port, dbname = params.pop("host", None), params.pop("port", None), params.pop("dbname")
    if driver == "pg8000":
        params = {}
    if host and host.startswith("/"):
        socket_file = f"{host}/.s.PGSQL.{port or 5432}"
        params.update({"unix_sock": socket_file} if driver == "pg8000" else {"host": host})
        params.update({"port": port} if port and driver != "pg8000" else {})
        host = port = None
    return URL.create(
        f"postgresql+{driver}",
        username=user,
        password=password,
        host=host,
        port=int(port) if port else None,
        database=dbname,
        query=params,
    )


def in_schema(schema: str) -> dict[str, Any]:
    """Engine options that put unqualified tables (``signups``) in ``schema``."""
    return {"execution_options": {"schema_translate_map": {None: schema}}}


@pytest.fixture
def app_schema(conn: Connection, schema: str) -> str:
    """``schema`` with the app's ``signups`` table and graphile-worker installed."""
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL("create table {}.signups (id bigserial primary key, email text not null)").format(
            sql.Identifier(schema)
        )
    )
    WorkerUtils(conn, schema=schema).migrate()
    return schema


@pytest.fixture
def make_engine(pg_dsn: str, app_schema: str) -> Iterator[Callable[..., Engine]]:
    """Engines on ``pg_dsn`` with ``app_schema`` as search_path; disposed at teardown."""
    engines: list[Engine] = []

    def make(**options: Any) -> Engine:
        engines.append(create_engine(sqlalchemy_url(pg_dsn), **in_schema(app_schema), **options))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine()


def signups(conn: Connection, schema: str) -> list[tuple[int, str]]:
    query = sql.SQL("select id, email from {}.signups order by id").format(sql.Identifier(schema))
    return [(row[0], row[1]) for row in conn.execute(query)]


def jobs(conn: Connection, schema: str) -> list[tuple[int, str, Any]]:
    query = sql.SQL(
        "select j.id, t.identifier, j.payload from {}._private_jobs j"
        " join {}._private_tasks t on t.id = j.task_id order by j.id"
    ).format(sql.Identifier(schema), sql.Identifier(schema))
    return [(row[0], row[1], row[2]) for row in conn.execute(query)]


def signup_and_enqueue(session: Session, schema: str, email: str) -> tuple[int, int]:
    """An ORM insert and its job, in the session's transaction: (signup id, job id)."""
    row = Signup(email=email)
    session.add(row)
    job = worker_utils(session, schema=schema).add_raw_job("send_welcome", {"signup_id": row.id})
    return row.id, job.id


# -- transactions --------------------------------------------------------------------------


def test_commit_keeps_the_row_and_its_job(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with Session(engine) as session:
        signup_id, job_id = signup_and_enqueue(session, app_schema, "ada@example.com")
        assert jobs(conn, app_schema) == []  # not visible before the commit
        session.commit()
    assert signups(conn, app_schema) == [(signup_id, "ada@example.com")]
    assert jobs(conn, app_schema) == [(job_id, "send_welcome", {"signup_id": signup_id})]


def test_rollback_removes_the_row_and_its_job(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with Session(engine) as session:
        signup_and_enqueue(session, app_schema, "ada@example.com")
        session.rollback()
    assert signups(conn, app_schema) == []
    assert jobs(conn, app_schema) == []


def test_closing_the_session_without_commit_leaves_nothing(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with Session(engine) as session:
        signup_and_enqueue(session, app_schema, "ada@example.com")
    assert jobs(conn, app_schema) == []
    assert signups(conn, app_schema) == []


def test_an_exception_inside_begin_rolls_back_the_row_and_its_job(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    factory = make_sessionmaker(engine)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), factory.begin() as session:
        signup_and_enqueue(session, app_schema, "ada@example.com")
        raise Boom
    assert signups(conn, app_schema) == []
    assert jobs(conn, app_schema) == []


def test_a_rolled_back_savepoint_removes_only_its_own_jobs(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with Session(engine) as session, session.begin():
        kept = signup_and_enqueue(session, app_schema, "kept@example.com")
        savepoint = session.begin_nested()
        signup_and_enqueue(session, app_schema, "dropped@example.com")
        savepoint.rollback()
        after = signup_and_enqueue(session, app_schema, "after@example.com")
    assert [email for _, email in signups(conn, app_schema)] == [
        "kept@example.com",
        "after@example.com",
    ]
    assert [job_id for job_id, _, _ in jobs(conn, app_schema)] == [kept[1], after[1]]


def test_pending_objects_are_flushed_first_so_their_ids_reach_the_payload(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with Session(engine) as session, session.begin():
        signup_id, _ = signup_and_enqueue(session, app_schema, "ada@example.com")
        assert isinstance(signup_id, int)
    assert jobs(conn, app_schema)[0][2] == {"signup_id": signup_id}


def test_without_autoflush_nothing_is_flushed_behind_the_users_back(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with Session(engine, autoflush=False) as session, session.begin():
        row = Signup(email="ada@example.com")
        session.add(row)
        worker_utils(session, schema=app_schema).add_raw_job("send_welcome", {})
        assert row.id is None
        assert row in session.new
    assert len(signups(conn, app_schema)) == 1  # the commit flushed it


def test_a_connection_joins_the_transaction_it_has_open(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with engine.connect() as connection:
        worker_utils(connection, schema=app_schema).add_raw_job("first", {})
        connection.rollback()
        worker_utils(connection, schema=app_schema).add_raw_job("second", {})
        connection.commit()
    assert [identifier for _, identifier, _ in jobs(conn, app_schema)] == ["second"]


def test_a_connection_with_no_transaction_gets_one_that_its_commit_commits(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with engine.connect() as connection:
        assert not connection.in_transaction()
        worker_utils(connection, schema=app_schema).add_raw_job("send_welcome", {})
        assert connection.in_transaction()
        connection.commit()
    assert len(jobs(conn, app_schema)) == 1


def test_the_library_leaves_sqlalchemys_connection_as_it_found_it(
    engine: Engine, app_schema: str
) -> None:
    with Session(engine) as session:
        driver = session.connection().connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        before = (driver.autocommit, driver.prepare_threshold, driver.row_factory)
        worker_utils(session, schema=app_schema).add_raw_job("send_welcome", {})
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert session.in_transaction()
        assert (driver.autocommit, driver.prepare_threshold, driver.row_factory) == before
        session.rollback()


def test_payloads_and_flags_come_back_as_json_whatever_the_engine_loads_json_with(
    make_engine: Callable[..., Engine], conn: Connection, app_schema: str
) -> None:
    # The psycopg dialect installs these as the connection's json loader and dumper.
    engine = make_engine(
        json_deserializer=lambda text: {"engine's": "loader"},
        json_serializer=lambda value: '"engine\'s dumper"',
    )
    payload = {"int": 1, "float": 1.5, "list": [True, None, "x"], "object": {"a": []}}
    with Session(engine) as session:
        assert session.execute(text("select '{}'::jsonb")).scalar() == {"engine's": "loader"}
        job = worker_utils(session, schema=app_schema).add_raw_job(
            "send_welcome", payload, JobSpec(flags=["slow"])
        )
        session.commit()
    assert job.payload == payload
    assert job.flags == ["slow"]
    assert jobs(conn, app_schema) == [(job.id, "send_welcome", payload)]


def test_a_session_joined_to_an_outer_transaction_leaves_it_to_the_outer_rollback(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    # The pattern of many applications' own test suites: the Session's commit() releases a
    # savepoint, and the outer transaction's rollback undoes everything.
    with engine.connect() as connection:
        outer = connection.begin()
        with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
            signup_and_enqueue(session, app_schema, "ada@example.com")
            session.commit()
            assert connection.in_transaction()
        outer.rollback()
    assert signups(conn, app_schema) == []
    assert jobs(conn, app_schema) == []


def test_one_kept_past_the_sessions_commit_is_refused_before_sending_anything(
    make_engine: Callable[..., Engine], conn: Connection, app_schema: str
) -> None:
    engine = make_engine(pool_size=1, max_overflow=0)
    with Session(engine) as session:
        utils = worker_utils(session, schema=app_schema)
        utils.add_raw_job("first", {})
        driver = session.connection().connection.driver_connection
        session.commit()
        # The connection is back in the pool: the kept instance must not use it behind it.
        with pytest.raises(ConnectionStateError, match=r"worker_utils\(session\) again"):
            utils.add_raw_job("second", {})
        assert isinstance(driver, psycopg.Connection)
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        worker_utils(session, schema=app_schema).add_raw_job("third", {})
        session.commit()
    assert [identifier for _, identifier, _ in jobs(conn, app_schema)] == ["first", "third"]


def test_one_kept_on_a_connection_begins_its_next_transaction_as_execute_would(
    engine: Engine, conn: Connection, app_schema: str
) -> None:
    with engine.connect() as connection:
        utils = worker_utils(connection, schema=app_schema)
        utils.add_raw_job("first", {})
        connection.commit()
        utils.add_raw_job("second", {})
        assert connection.in_transaction()
        connection.rollback()
        utils.add_raw_job("third", {})
        connection.commit()
    assert [identifier for _, identifier, _ in jobs(conn, app_schema)] == ["first", "third"]


# -- pools ---------------------------------------------------------------------------------


def test_a_pooled_connection_is_reused_across_sessions_with_pre_ping(
    make_engine: Callable[..., Engine], conn: Connection, app_schema: str
) -> None:
    engine = make_engine(pool_size=1, max_overflow=0, pool_pre_ping=True)
    drivers = []
    for index, commit in enumerate([True, False, True, True, False]):
        with Session(engine) as session:
            utils = worker_utils(session, schema=app_schema)
            drivers.append(session.connection().connection.driver_connection)
            utils.add_raw_job("step", {"index": index})
            if commit:
                session.commit()
    assert all(driver is drivers[0] for driver in drivers)  # one connection, returned and reused
    assert [payload["index"] for _, _, payload in jobs(conn, app_schema)] == [0, 2, 3]


def test_null_pool_opens_and_closes_a_connection_per_session(
    make_engine: Callable[..., Engine], conn: Connection, app_schema: str
) -> None:
    engine = make_engine(poolclass=NullPool)
    for index in range(3):
        with Session(engine) as session:
            worker_utils(session, schema=app_schema).add_raw_job("step", {"index": index})
            driver = session.connection().connection.driver_connection
            session.commit()
        assert isinstance(driver, psycopg.Connection)
        assert driver.closed
    assert [payload["index"] for _, _, payload in jobs(conn, app_schema)] == [0, 1, 2]


def test_eight_threads_on_a_scoped_session_lose_and_duplicate_nothing(
    make_engine: Callable[..., Engine], conn: Connection, app_schema: str
) -> None:
    engine = make_engine(pool_size=8, max_overflow=0)
    registry = scoped_session(make_sessionmaker(engine))
    threads, per_thread, per_transaction = 8, 250, 25
    failures: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for start in range(0, per_thread, per_transaction):
                for offset in range(start, start + per_transaction):
                    number = thread * per_thread + offset
                    worker_utils(registry, schema=app_schema).add_raw_job("n", {"n": number})
                registry.commit()
        except BaseException as exc:  # reported below, with the thread's traceback
            failures.append(exc)
        finally:
            registry.remove()

    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    numbers = sorted(payload["n"] for _, _, payload in jobs(conn, app_schema))
    assert numbers == list(range(threads * per_thread))


def test_behind_pgbouncer_with_prepare_threshold_none(
    pg_server: PgServer, app_schema: str, conn: Connection
) -> None:
    with running_pgbouncer(pg_server) as bouncer:
        engine = create_engine(
            sqlalchemy_url(bouncer.dsn),
            **in_schema(app_schema),
            pool_pre_ping=True,
            connect_args={"prepare_threshold": None},
        )
        try:
            # Enough enqueues on one client connection that psycopg would prepare by default.
            for index in range(12):
                with Session(engine) as session:
                    signup_and_enqueue(session, app_schema, f"{index}@example.com")
                    session.commit()
        finally:
            engine.dispose()
    assert len(jobs(conn, app_schema)) == 12
    assert len(signups(conn, app_schema)) == 12


# -- Flask-SQLAlchemy ----------------------------------------------------------------------


@pytest.fixture
def flask_client(pg_dsn: str, app_schema: str) -> Iterator[FlaskClient]:
    app = create_app(
        sqlalchemy_url(pg_dsn).render_as_string(hide_password=False),
        worker_schema=app_schema,
        **in_schema(app_schema),
    )
    try:
        yield app.test_client()
    finally:
        close_app(app)


def test_a_flask_sqlalchemy_view_commits_its_row_and_its_job(
    flask_client: FlaskClient, conn: Connection, app_schema: str
) -> None:
    response = flask_client.post("/signups", json={"email": "ada@example.com"})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert signups(conn, app_schema) == [(body["signup_id"], "ada@example.com")]
    assert jobs(conn, app_schema) == [
        (
            body["job_id"],
            "send_welcome",
            {"signup_id": body["signup_id"], "email": "ada@example.com"},
        )
    ]


def test_a_failing_flask_sqlalchemy_view_leaves_nothing(
    flask_client: FlaskClient, conn: Connection, app_schema: str
) -> None:
    response = flask_client.post(
        "/signups", json={"email": "ada@example.com", "refuse_after_enqueueing": True}
    )
    assert response.status_code == 409
    # The next request gets a clean session on the same pool and commits only its own.
    response = flask_client.post("/signups", json={"email": "bob@example.com"})
    assert response.status_code == 201
    assert [email for _, email in signups(conn, app_schema)] == ["bob@example.com"]
    assert len(jobs(conn, app_schema)) == 1


# -- what is refused -----------------------------------------------------------------------


def test_sqlite_is_refused_with_the_fix_named() -> None:
    engine = create_engine("sqlite://")
    try:
        with Session(engine) as session, pytest.raises(UnsupportedDatabaseError) as caught:
            worker_utils(session)
        assert not session.in_transaction()  # refused before anything began
    finally:
        engine.dispose()
    assert "'sqlite+pysqlite'" in str(caught.value)
    assert "postgresql+psycopg://" in str(caught.value)
    assert isinstance(caught.value, (GraphileWorkerError, TypeError))


@pytest.mark.parametrize("driver", ["pg8000", "psycopg2"])
def test_other_postgresql_drivers_are_refused_with_the_fix_named(pg_dsn: str, driver: str) -> None:
    url = sqlalchemy_url(pg_dsn, driver=driver)
    engine = create_engine(url)
    try:
        with Session(engine) as session, pytest.raises(UnsupportedDatabaseError) as caught:
            session.execute(text("select 1"))  # the engine itself works
            worker_utils(session)
        with engine.connect() as connection, pytest.raises(UnsupportedDatabaseError):
            worker_utils(connection)
    finally:
        engine.dispose()
    message = str(caught.value)
    assert f"'postgresql+{driver}'" in message
    assert "postgresql+psycopg://" in message
    if url.password:
        assert url.password not in message


def test_an_asyncpg_engine_is_refused_before_connecting() -> None:
    # asyncpg is no dependency of the tests: the dialect is all the check reads, so a stand-in
    # module (never called, as nothing connects) takes the DBAPI's place.
    stand_in = SimpleNamespace(paramstyle="numeric_dollar")
    engine = create_engine("postgresql+asyncpg://user:secret@localhost/db", module=stand_in)
    with Session(engine) as session, pytest.raises(UnsupportedDatabaseError) as caught:
        worker_utils(session)
    assert "'postgresql+asyncpg', asynchronous" in str(caught.value)
    assert "postgresql+psycopg://" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_an_async_session_is_refused(pg_dsn: str) -> None:
    engine = create_async_engine(sqlalchemy_url(pg_dsn, driver="psycopg"))
    session = AsyncSession(engine)
    with pytest.raises(UnsupportedDatabaseError) as caught:
        worker_utils(session)  # type: ignore[arg-type]
    assert "AsyncSession is asynchronous" in str(caught.value)
    assert "postgresql+psycopg://" in str(caught.value)
    with pytest.raises(UnsupportedDatabaseError, match="AsyncConnection is asynchronous"):
        worker_utils(engine.connect())  # type: ignore[arg-type]  # not started: no I/O
    with Session(engine.sync_engine) as sync_session, pytest.raises(UnsupportedDatabaseError):
        worker_utils(sync_session)  # its sync facade still runs on psycopg's AsyncConnection


def test_an_engine_is_refused_naming_engine_begin(engine: Engine) -> None:
    with pytest.raises(UnsupportedDatabaseError, match=r"engine\.begin\(\)"):
        worker_utils(engine)  # type: ignore[arg-type]


def test_a_psycopg_engine_really_is_accepted_by_the_same_check(engine: Engine) -> None:
    with Session(engine) as session:
        assert worker_utils(session).schema == "graphile_worker"
        assert session.execute(text("select 1")).scalar() == 1


# -- the README's recipe -------------------------------------------------------------------


def test_the_readme_recipe_runs_as_written(fresh_database: Database) -> None:
    with fresh_database.connect() as setup:
        setup.execute("create table signups (id bigserial primary key, email text not null)")
        WorkerUtils(setup).migrate()  # the recipe's default schema, graphile_worker
    url = sqlalchemy_url(fresh_database.dsn).render_as_string(hide_password=False)
    recipe: dict[str, Any] = {"__name__": "readme_sqlalchemy", "DATABASE_URL": url}
    # dont_inherit: as in a module of its own, without this one's "from __future__" imports.
    exec(compile(RECIPE, "README.md (SQLAlchemy)", "exec", dont_inherit=True), recipe)
    try:
        signup_id = recipe["sign_up"]("ada@example.com")
        app = recipe["create_app"](url)
        response = app.test_client().post("/signups", json={"email": "bob@example.com"})
        assert response.status_code == 201, response.get_data(as_text=True)
        with app.app_context():
            recipe["db"].engine.dispose()
    finally:
        recipe["engine"].dispose()
    with fresh_database.connect() as check:
        assert check.execute("select id, email from signups order by id").fetchall() == [
            (signup_id, "ada@example.com"),
            (response.get_json()["signup_id"], "bob@example.com"),
        ]
        payloads = check.execute("select payload from graphile_worker._private_jobs order by id")
        assert [row[0] for row in payloads] == [
            {"signup_id": signup_id},
            {"signup_id": response.get_json()["signup_id"]},
        ]


def test_the_readme_shows_the_recipe_that_runs() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert "```python\n" + RECIPE + "```" in readme


def test_the_integrations_share_one_unsupported_database_error() -> None:
    from graphile_worker_utils.contrib import django as django_contrib

    assert UnsupportedDatabaseError is django_contrib.UnsupportedDatabaseError
    assert issubclass(UnsupportedDatabaseError, (GraphileWorkerError, TypeError))
