"""The exit code and one-line message for an exception out of a subcommand."""

from __future__ import annotations

from ._context import Masker
from ._exit_codes import CliError, ExitCode
from ._render import one_line

#: A DETAIL or HINT longer than this is left, with the CONTEXT, to --debug's traceback.
SHORT_DIAGNOSTIC = 200


def database_text(error: BaseException) -> str:
    """``str(error)`` with PostgreSQL's report cut to its primary message and a short DETAIL and
    HINT: the CONTEXT (a PL/pgSQL call stack, statements and all) is left to --debug."""
    import psycopg

    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    text = str(error)
    primary = cause.diag.message_primary if isinstance(cause, psycopg.Error) else None
    if not isinstance(cause, psycopg.Error) or not primary:
        return text
    diag = cause.diag
    parts = [primary]
    left_out = bool(diag.context or diag.internal_query)
    for label, value in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint)):
        if value and len(value) <= SHORT_DIAGNOSTIC:
            parts.append(f"{label}: {value}")
        left_out = left_out or bool(value and len(value) > SHORT_DIAGNOSTIC)
    more = " (--debug shows the rest of PostgreSQL's report)" if left_out else ""
    full = str(cause)
    if full and full in text:
        return text.replace(full, "; ".join(parts) + more)
    if diag.context and diag.context in text:  # the report reworded around it: drop CONTEXT
        return text.replace(diag.context, more.strip(" ()") or "-")
    return text


def classify(error: BaseException, masker: Masker) -> CliError:
    """The exit code and one-line message for an exception out of a subcommand."""
    if isinstance(error, CliError):
        return error
    if isinstance(error, KeyboardInterrupt):
        return CliError(ExitCode.INTERRUPTED, "interrupted")
    import psycopg

    from graphile_worker_utils import (
        CleanupBusyError,
        GraphileWorkerError,
        IncompatibleSchemaError,
        InvalidJobSpec,
        InvalidSchemaName,
        SchemaMissingError,
        SchemaTooOldError,
    )

    text = one_line(masker(database_text(error)))
    cause = error.__cause__
    if isinstance(error, IncompatibleSchemaError):
        return CliError(ExitCode.SCHEMA_INCOMPATIBLE, text)
    if isinstance(error, SchemaTooOldError):
        return CliError(ExitCode.SCHEMA_BEHIND, text)
    if isinstance(error, InvalidSchemaName):
        return CliError(ExitCode.USAGE, text)
    if isinstance(error, InvalidJobSpec):
        return CliError(ExitCode.INVALID_JOB, text)
    if isinstance(error, CleanupBusyError):
        return CliError(ExitCode.BUSY, text)
    if isinstance(error, SchemaMissingError):
        return CliError(ExitCode.SCHEMA_MISSING, text)
    lost = cause if isinstance(cause, psycopg.Error) else error
    if isinstance(lost, psycopg.OperationalError) and (
        lost.sqlstate is None or lost.sqlstate.startswith("08")
    ):
        return CliError(ExitCode.UNREACHABLE, f"lost the database connection: {text}")
    if isinstance(error, (GraphileWorkerError, psycopg.Error)):
        return CliError(ExitCode.DATABASE_ERROR, text)
    return CliError(
        ExitCode.INTERNAL_ERROR,
        f"internal error: {type(error).__name__}: {text} (rerun with --debug for a traceback)",
    )
