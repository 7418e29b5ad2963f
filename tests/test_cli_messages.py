"""What the command line says: database errors without PostgreSQL's whole CONTEXT, usage errors
that name the actual problem, help text for every option."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import DatabaseError, WorkerUtils
from graphile_worker_utils.cli import ExitCode, build_parser, database_text
from tests._cli import assert_one_line_error, jobs, run
from tests._server import PgServer

LONG_DETAIL = "d" * 300


@pytest.fixture
def refusing(conn: psycopg.Connection[Any], schema: str) -> str:
    """``schema``, installed, with a trigger refusing every new job from inside PL/pgSQL (the
    error then carries a CONTEXT of some 2,000 characters: the statements of add_job)."""
    WorkerUtils(conn, schema=schema).migrate()
    conn.execute(
        sql.SQL(
            """
            create function {s}.refuse() returns trigger language plpgsql as $$
            begin
              raise exception 'no jobs today' using detail = coalesce(new.payload->>'detail',
                'the refuse trigger said so'), hint = 'try tomorrow';
            end $$;
            create trigger refuse before insert on {s}._private_jobs
              for each row execute function {s}.refuse();
            """
        ).format(s=sql.Identifier(schema))
    )
    return schema


def test_a_database_error_is_its_primary_message_detail_and_hint(
    pg_server: PgServer, refusing: str, conn: psycopg.Connection[Any]
) -> None:
    done = run("add-job", "t", "-c", pg_server.dsn, "-s", refusing)

    line = assert_one_line_error(done, ExitCode.DATABASE_ERROR)
    assert "no jobs today" in line and "the refuse trigger said so" in line, line
    assert "try tomorrow" in line and "--debug" in line, line
    for context in ("CONTEXT", "PL/pgSQL", "SQL statement", "insert into"):
        assert context not in line, (context, line)
    assert len(line) < 300, f"{len(line)} characters: {line}"
    assert jobs(conn, refusing) == []


def test_a_long_detail_is_left_to_debug(pg_server: PgServer, refusing: str) -> None:
    payload = f'{{"detail": "{LONG_DETAIL}"}}'
    done = run("add-job", "t", payload, "-c", pg_server.dsn, "-s", refusing)

    line = assert_one_line_error(done, ExitCode.DATABASE_ERROR)
    assert "no jobs today" in line and LONG_DETAIL not in line, line


def test_debug_shows_the_context_and_still_ends_with_the_one_line_error(
    pg_server: PgServer, refusing: str
) -> None:
    done = run("add-job", "t", "--debug", "-c", pg_server.dsn, "-s", refusing)

    assert done.returncode == ExitCode.DATABASE_ERROR, done
    assert "CONTEXT:" in done.stderr and "PL/pgSQL function" in done.stderr, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("graphile-worker-utils: error: ") and "CONTEXT" not in last, last


@pytest.fixture
def plpgsql_error(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Error]:
    """A real error raised inside a PL/pgSQL function, with DETAIL, HINT and CONTEXT."""
    conn.execute(
        "create function pg_temp.boom() returns void language plpgsql as $$ begin"
        " raise exception 'boom' using detail = 'some detail', hint = 'a hint'; end $$"
    )
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select pg_temp.boom()")
    yield raised.value


def test_database_text_keeps_the_library_message_around_the_short_report(
    plpgsql_error: psycopg.Error,
) -> None:
    error = DatabaseError(f"complete_jobs on schema 's' failed: {plpgsql_error}")
    error.__cause__ = plpgsql_error

    text = database_text(error)

    assert text == (
        "complete_jobs on schema 's' failed: boom; DETAIL: some detail; HINT: a hint"
        " (--debug shows the rest of PostgreSQL's report)"
    )


def test_database_text_drops_the_context_from_a_reworded_message(
    plpgsql_error: psycopg.Error,
) -> None:
    context = plpgsql_error.diag.context
    assert context
    error = DatabaseError(f"failed: boom (context: {context})")
    error.__cause__ = plpgsql_error

    assert context not in database_text(error)


def test_database_text_leaves_other_errors_alone() -> None:
    assert database_text(ValueError("a\nb")) == "a\nb"


# -- usage -----------------------------------------------------------------------------------


def test_an_unknown_option_without_a_command_is_named() -> None:
    line = assert_one_line_error(run("--nope"), ExitCode.USAGE)
    assert "unrecognized arguments: --nope" in line and "COMMAND" not in line, line


def test_every_option_of_every_command_has_help_text() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {action.option_strings[-1]}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if action.option_strings and not action.help
    ]
    assert missing == []
