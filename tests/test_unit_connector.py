"""wrap_exceptions, without a database: which library error each psycopg error becomes."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors

from graphile_worker_utils import DatabaseError, MigrationError, SchemaMissingError
from graphile_worker_utils._connector import wrap_exceptions


@pytest.mark.parametrize(
    "error",
    [
        pg_errors.UndefinedTable("no table"),
        pg_errors.UndefinedFunction("no function"),
        pg_errors.UndefinedObject("no type"),
        pg_errors.InvalidSchemaName("no schema"),
    ],
)
def test_a_missing_schema_object_is_schema_missing_error(error: psycopg.Error) -> None:
    with pytest.raises(SchemaMissingError) as info, wrap_exceptions("add_job", "gw"):
        raise error
    assert str(info.value) == (
        f"add_job: schema 'gw' is missing graphile-worker's tables or functions"
        f" (run migrate() first): {error}"
    )
    assert info.value.__cause__ is error


def test_any_other_psycopg_error_is_a_plain_database_error() -> None:
    error = pg_errors.QueryCanceled("canceling statement")
    with pytest.raises(DatabaseError) as info, wrap_exceptions("cleanup", "gw"):
        raise error
    assert type(info.value) is DatabaseError
    assert str(info.value) == "cleanup on schema 'gw' failed: canceling statement"
    assert info.value.__cause__ is error


def test_an_operation_can_name_its_own_error_and_other_exceptions_pass() -> None:
    def failed(error: psycopg.Error) -> MigrationError:
        return MigrationError(f"migrating failed: {error}")

    with (
        pytest.raises(MigrationError, match="migrating failed: gone"),
        wrap_exceptions("migrate", "gw", failed),
    ):
        raise pg_errors.UndefinedTable("gone")
    with pytest.raises(KeyError), wrap_exceptions("migrate", "gw"):
        raise KeyError("not a database error")
