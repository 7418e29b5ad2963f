"""A Flask recipe: the app's own write and its job commit together, or neither does.

One connection pool per process, made by the app factory. Each request borrows a connection
from it; ``pool.connection()`` commits when the block ends normally and rolls back when it
raises, and ``utils.using(conn)`` puts the job in that same transaction::

    app = create_app("postgresql://app@db/app")
    # POST /signups {"email": "ada@example.com"} -> a signups row and a send_welcome job

The app's own table is ``signups (id bigserial primary key, email text not null)``, found on
the connection's ``search_path``. Close the pool at shutdown with :func:`close_app`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, request
from psycopg_pool import ConnectionPool

from graphile_worker_utils import WorkerUtils

POOL = "db_pool"
WORKER_UTILS = "graphile_worker"


def create_app(database_url: str, *, worker_schema: str = "graphile_worker") -> Flask:
    """The app, with its pool (opened now, once per process) and a pool-wide WorkerUtils."""
    app = Flask(__name__)
    pool: ConnectionPool[Any] = ConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        # Behind PgBouncer in transaction pooling mode, add kwargs={"prepare_threshold": None}.
        check=ConnectionPool.check_connection,
        name="flask_app",
        open=True,
    )
    app.extensions[POOL] = pool
    # Configured once; bound to each request's connection with using(conn).
    app.extensions[WORKER_UTILS] = WorkerUtils(pool, schema=worker_schema)

    @app.post("/signups")
    def signup() -> tuple[dict[str, Any], int]:
        body = request.get_json()
        utils: WorkerUtils = app.extensions[WORKER_UTILS]
        with pool.connection() as conn:  # one transaction: commit on success, else rollback
            row = conn.execute(
                "insert into signups (email) values (%s) returning id", [body["email"]]
            ).fetchone()
            assert row is not None
            job = utils.using(conn).add_raw_job(
                "send_welcome", {"signup_id": row[0], "email": body["email"]}
            )
            if body.get("refuse_after_enqueueing"):
                # Anything that fails from here on takes the signup and the job with it.
                abort(409, "refused after enqueueing")
        return {"signup_id": row[0], "job_id": job.id}, 201

    return app


def close_app(app: Flask) -> None:
    """Close the app's pool (at process shutdown)."""
    pool: ConnectionPool[Any] = app.extensions[POOL]
    pool.close()
