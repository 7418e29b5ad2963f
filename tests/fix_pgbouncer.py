"""Fixture plugin: PgBouncer in front of the session's server, when asked for.

With ``GRAPHILE_WORKER_TEST_PGBOUNCER=1`` the session starts a private PgBouncer in transaction
pooling mode in front of the server (``tests/_pgbouncer.py``): ``pg_dsn`` and ``conn`` then go
through it, with ``prepare_threshold=None``, while the fixtures' own admin work (creating and
dropping databases and schemas, catalog snapshots) still goes to the server. The tests that
measure server sessions themselves are left out of such a run, and listed at its end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests._pgbouncer import (
    PGBOUNCER_ENV,
    PgBouncer,
    find_pgbouncer,
    pgbouncer_requested,
    prepared_statements_off_towards,
    running_pgbouncer,
    why_not_through_pgbouncer,
)
from tests._server import PgServer

_LEFT_OUT_KEY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer | None]:
    """The session's PgBouncer when ``GRAPHILE_WORKER_TEST_PGBOUNCER=1``, else None.

    Requested but not installed, or not starting, fails the session's tests (no silent
    fallback to the server itself). While it runs, psycopg connections to it default to
    ``prepare_threshold=None``.
    """
    if not pgbouncer_requested():
        yield None
        return
    if find_pgbouncer() is None:
        pytest.fail(
            f"{PGBOUNCER_ENV} is set but pgbouncer is not installed"
            " (Debian: apt-get install pgbouncer)",
            pytrace=False,
        )
    with contextlib.ExitStack() as stack:
        try:
            bouncer = stack.enter_context(running_pgbouncer(pg_server))
        except RuntimeError as exc:
            pytest.fail(
                f"{PGBOUNCER_ENV} is set but PgBouncer does not start: {exc}", pytrace=False
            )
        stack.enter_context(prepared_statements_off_towards(bouncer))
        with psycopg.connect(bouncer.dsn) as probe:
            assert probe.prepare_threshold is None, "prepare_threshold=None was not applied"
        yield bouncer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Through PgBouncer, leave out the tests that measure server sessions themselves."""
    if not pgbouncer_requested():
        return
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        (left_out if why_not_through_pgbouncer(item.nodeid) else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
        config.stash[_LEFT_OUT_KEY] = [item.nodeid for item in left_out]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """List the tests left out of a run through PgBouncer, each with the reason."""
    left_out = config.stash.get(_LEFT_OUT_KEY, [])
    if left_out:
        terminalreporter.section("not run through PgBouncer")
        for nodeid in left_out:
            terminalreporter.line(f"{nodeid}: {why_not_through_pgbouncer(nodeid)}")
