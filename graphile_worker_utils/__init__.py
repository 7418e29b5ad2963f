"""Enqueue and maintain graphile-worker jobs from Python, in your own psycopg 3 transactions."""

from ._client import WorkerUtils
from ._errors import (
    GraphileWorkerError,
    IncompatibleSchemaError,
    InvalidSchemaName,
    MigrationError,
    SchemaTooOldError,
    UnsupportedServerError,
)
from ._migrations import (
    BREAKING_REVISIONS,
    LATEST_REVISION,
    MigrationReport,
    SchemaState,
    SchemaStatus,
)

__all__ = [
    "BREAKING_REVISIONS",
    "LATEST_REVISION",
    "GraphileWorkerError",
    "IncompatibleSchemaError",
    "InvalidSchemaName",
    "MigrationError",
    "MigrationReport",
    "SchemaState",
    "SchemaStatus",
    "SchemaTooOldError",
    "UnsupportedServerError",
    "WorkerUtils",
]
