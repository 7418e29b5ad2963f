"""Integrations with web frameworks and ORMs; nothing in the core imports this package.

What the integrations share lives here, so that importing it needs none of the frameworks.
"""

from __future__ import annotations

from .._errors import GraphileWorkerError

__all__ = ["DEFAULT_SCHEMA", "UnsupportedDatabaseError"]

#: The schema an integration uses when none is given.
DEFAULT_SCHEMA = "graphile_worker"


class UnsupportedDatabaseError(GraphileWorkerError, TypeError):
    """The framework's database is not PostgreSQL on psycopg 3 (synchronous), or what was
    passed is not one of its connections or sessions, so graphile-worker cannot use it. The
    message names the fix. The same class is exported by ``contrib.django`` and
    ``contrib.sqlalchemy``."""
