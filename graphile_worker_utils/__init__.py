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

from ._client import KEY_RACE_ATTEMPTS, WorkerUtils
from ._errors import (
    ConnectionStateError,
    DatabaseError,
    GraphileWorkerError,
    IncompatibleSchemaError,
    InvalidJobSpec,
    InvalidSchemaName,
    JobKeyRaceError,
    JobScheduleFailed,
    JobScheduleSkipped,
    MigrationError,
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
from ._types import (
    CleanupTask,
    Job,
    JobKeyMode,
    JobSpec,
    RawJobSpec,
    RescheduleOptions,
    Task,
)

__all__ = [
    "BREAKING_REVISIONS",
    "KEY_RACE_ATTEMPTS",
    "LATEST_REVISION",
    "BeforeScheduleHook",
    "CleanupTask",
    "ConnectionStateError",
    "Continue",
    "DatabaseError",
    "Fail",
    "GraphileWorkerError",
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
    "MigrationError",
    "MigrationReport",
    "RawJobSpec",
    "RescheduleOptions",
    "SchemaState",
    "SchemaStatus",
    "SchemaTooOldError",
    "Skip",
    "Task",
    "UnsupportedServerError",
    "WorkerUtils",
    "dumps_payload",
]
