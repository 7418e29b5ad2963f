"""Connections the library opens or borrows: WorkerUtils.connect() and pools."""

from __future__ import annotations

import socket
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool, PoolClosed

from graphile_worker_utils import ConnectionStateError, DatabaseError, WorkerUtils


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connect_to_an_unreachable_server_fails_fast_with_a_clear_error() -> None:
    dsn = f"postgresql://someone:sekrit-password@127.0.0.1:{closed_port()}/db"
    with pytest.raises(DatabaseError, match=r"could not open a connection .* within 1 s") as info:
        WorkerUtils.connect(dsn, wait_timeout=1)
    assert "sekrit-password" not in str(info.value)


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
