"""Enqueue and maintain graphile-worker jobs from Python, in your own psycopg 3 transactions.

Example::

    import psycopg
    from graphile_worker_utils import JobSpec, WorkerUtils

    with psycopg.connect("postgresql://app@localhost/app") as conn:
        utils = WorkerUtils(conn)
        conn.execute("insert into users (email) values (%s)", ["ada@example.com"])
        utils.add_raw_job("send_welcome", {"email": "ada@example.com"}, JobSpec(queue_name="mail"))
    # the user and the job are committed together, or neither is
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._client import KEY_RACE_ATTEMPTS, WorkerUtils
    from ._errors import (
        CleanupBusyError,
        ConfigurationError,
        ConnectionStateError,
        DatabaseError,
        GraphileWorkerError,
        HookError,
        IncompatibleSchemaError,
        InvalidJobSpec,
        InvalidSchemaName,
        JobKeyRaceError,
        JobScheduleFailed,
        JobScheduleSkipped,
        MigrationError,
        PayloadNotLoadedError,
        SchemaMissingError,
        SchemaTooOldError,
        UnsupportedServerError,
    )
    from ._hooks import BeforeScheduleHook, Continue, Fail, HookResult, Skip
    from ._migrations import (
        BREAKING_REVISIONS,
        LATEST_REVISION,
        MigrationReport,
        SchemaState,
        SchemaStatus,
    )
    from ._payload import dumps as dumps_payload
    from ._reads import LockedWorker
    from ._status import LockedQueue, StateCounts, StatusGroup, StatusReport
    from ._types import (
        CleanupTask,
        Job,
        JobKeyMode,
        JobSpec,
        JobState,
        RawJobSpec,
        RescheduleOptions,
        Task,
    )

# Public names and the private module each lives in. They are imported on first access
# (PEP 562), so that `import graphile_worker_utils` -- and the command line's --help -- does
# not pay for psycopg, psycopg_pool and attrs before they are needed.
_LOCATIONS = {
    "KEY_RACE_ATTEMPTS": "_client",
    "WorkerUtils": "_client",
    "CleanupBusyError": "_errors",
    "ConfigurationError": "_errors",
    "ConnectionStateError": "_errors",
    "DatabaseError": "_errors",
    "GraphileWorkerError": "_errors",
    "HookError": "_errors",
    "IncompatibleSchemaError": "_errors",
    "InvalidJobSpec": "_errors",
    "InvalidSchemaName": "_errors",
    "JobKeyRaceError": "_errors",
    "JobScheduleFailed": "_errors",
    "JobScheduleSkipped": "_errors",
    "MigrationError": "_errors",
    "PayloadNotLoadedError": "_errors",
    "SchemaMissingError": "_errors",
    "SchemaTooOldError": "_errors",
    "UnsupportedServerError": "_errors",
    "BeforeScheduleHook": "_hooks",
    "Continue": "_hooks",
    "Fail": "_hooks",
    "HookResult": "_hooks",
    "Skip": "_hooks",
    "BREAKING_REVISIONS": "_migrations",
    "LATEST_REVISION": "_migrations",
    "MigrationReport": "_migrations",
    "SchemaState": "_migrations",
    "SchemaStatus": "_migrations",
    "dumps_payload": "_payload",
    "LockedWorker": "_reads",
    "LockedQueue": "_status",
    "StateCounts": "_status",
    "StatusGroup": "_status",
    "StatusReport": "_status",
    "CleanupTask": "_types",
    "Job": "_types",
    "JobKeyMode": "_types",
    "JobSpec": "_types",
    "JobState": "_types",
    "RawJobSpec": "_types",
    "RescheduleOptions": "_types",
    "Task": "_types",
}
_RENAMED = {"dumps_payload": "dumps"}

__all__ = [
    "BREAKING_REVISIONS",
    "KEY_RACE_ATTEMPTS",
    "LATEST_REVISION",
    "BeforeScheduleHook",
    "CleanupBusyError",
    "CleanupTask",
    "ConfigurationError",
    "ConnectionStateError",
    "Continue",
    "DatabaseError",
    "Fail",
    "GraphileWorkerError",
    "HookError",
    "HookResult",
    "IncompatibleSchemaError",
    "InvalidJobSpec",
    "InvalidSchemaName",
    "Job",
    "JobKeyMode",
    "JobKeyRaceError",
    "JobScheduleFailed",
    "JobScheduleSkipped",
    "JobSpec",
    "JobState",
    "LockedQueue",
    "LockedWorker",
    "MigrationError",
    "MigrationReport",
    "PayloadNotLoadedError",
    "RawJobSpec",
    "RescheduleOptions",
    "SchemaMissingError",
    "SchemaState",
    "SchemaStatus",
    "SchemaTooOldError",
    "Skip",
    "StateCounts",
    "StatusGroup",
    "StatusReport",
    "Task",
    "UnsupportedServerError",
    "WorkerUtils",
    "dumps_payload",
]


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
