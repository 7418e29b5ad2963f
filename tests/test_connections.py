"""Connections the library opens or borrows: WorkerUtils.connect() and pools."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolClosed

from graphile_worker_utils import ConnectionStateError, DatabaseError, WorkerUtils
from graphile_worker_utils._probe import masked
from tests._server import PgServer


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_no_password(error: BaseException, password: str) -> None:
    # Nor in the chain of causes a traceback would print.
    while error is not None:
        assert password not in str(error)
        error = error.__cause__  # type: ignore[assignment]


def test_connect_to_a_closed_port_fails_at_once_with_the_reason() -> None:
    dsn = f"postgresql://someone:sekrit-password@127.0.0.1:{closed_port()}/db"
    started = time.monotonic()
    with pytest.raises(DatabaseError, match=r"could not connect .*Connection refused") as info:
        WorkerUtils.connect(dsn, wait_timeout=60)
    # "At once": long before the wait_timeout a pool would have spent retrying.
    assert time.monotonic() - started < 30
    assert_no_password(info.value, "sekrit-password")


@pytest.mark.parametrize(
    ("part", "reason"),
    [("user", r'role "gwu_no_such_role" does not exist'), ("dbname", r'database "gwu_no_such_db"')],
    ids=["unknown-role", "unknown-database"],
)
def test_connect_refused_by_the_server_fails_at_once_with_postgresqls_reason(
    pg_server: PgServer, part: str, reason: str
) -> None:
    wrong = {"user": "gwu_no_such_role", "dbname": "gwu_no_such_db"}[part]
    dsn = make_conninfo(pg_server.dsn, **{part: wrong}, password="sekrit-password")
    started = time.monotonic()
    with pytest.raises(
        DatabaseError, match=rf"could not connect to the database: .*{reason}"
    ) as info:
        WorkerUtils.connect(dsn, wait_timeout=60)
    assert time.monotonic() - started < 30
    assert_no_password(info.value, "sekrit-password")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("wait_timeout", [1, 2])
def test_connect_to_a_server_that_never_answers_gives_up_within_wait_timeout(
    silent_server: int, wait_timeout: float
) -> None:
    dsn = f"postgresql://someone:sekrit-password@127.0.0.1:{silent_server}/db"
    started = time.monotonic()
    with pytest.raises(DatabaseError, match=rf"within {wait_timeout} s: the server did not answer"):
        WorkerUtils.connect(dsn, wait_timeout=wait_timeout)
    # The promise is wait_timeout; the margin is for a loaded machine, not a speed target.
    assert time.monotonic() - started < wait_timeout + 2


def test_connect_with_a_connection_string_psycopg_cannot_parse_quotes_none_of_it() -> None:
    with pytest.raises(DatabaseError, match="details left out") as info:
        WorkerUtils.connect("host=localhost password=sekrit-password unknown_option=1")
    assert_no_password(info.value, "sekrit-password")


@pytest.mark.parametrize(
    ("message", "secrets", "expected"),
    [
        ("pw sekrit here", ["sekrit"], "pw ******** here"),
        ("nothing to hide", ["", "sekrit"], "nothing to hide"),
        ("a:b and b", ["b"], "a:******** and ********"),
    ],
)
def test_masked_hides_every_secret(message: str, secrets: list[str], expected: str) -> None:
    assert masked(message, secrets) == expected


def test_pool_that_cannot_connect_gives_a_library_error() -> None:
    dsn = f"postgresql://someone:sekrit-password@127.0.0.1:{closed_port()}/db"
    with (
        ConnectionPool(dsn, open=True, timeout=0.5, min_size=1) as pool,
        pytest.raises(DatabaseError, match="no connection from the pool") as info,
    ):
        WorkerUtils(pool).add_raw_job("task")
    assert "sekrit-password" not in str(info.value)


def test_connect_owns_its_pool_and_closes_it(pg_dsn: str, schema: str) -> None:
    with WorkerUtils.connect(pg_dsn, schema=schema) as utils:
        utils.migrate()
        assert utils.add_raw_job("task").task_identifier == "task"
        pool = utils._target
        assert isinstance(pool, ConnectionPool)
    assert pool.closed


def test_a_pool_connection_goes_back_as_it_came(pg_dsn: str, schema: str) -> None:
    with ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True) as pool:
        utils = WorkerUtils(pool, schema=schema)
        utils.migrate()
        utils.add_raw_job("task")
        utils.complete_jobs([1])
        with pool.connection() as conn:
            # Single statements ran in autocommit; the pool's setting is back.
            assert conn.autocommit is False
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_using_a_closed_pool_is_a_connection_state_error(pg_dsn: str) -> None:
    pool: ConnectionPool[Any] = ConnectionPool(pg_dsn, min_size=1, open=True)
    utils = WorkerUtils(pool)
    pool.close()
    with pytest.raises(ConnectionStateError, match="is closed; nothing was sent") as info:
        utils.add_raw_job("task")
    assert isinstance(info.value.__cause__, PoolClosed)
