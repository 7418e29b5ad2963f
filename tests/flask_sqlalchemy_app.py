"""A Flask-SQLAlchemy recipe: the view's ORM write and its job commit together, or neither does.

``db.session`` is a scoped session, one per request; ``worker_utils(db.session)`` puts the job
in the transaction it has open, ``db.session.commit()`` commits both, and a view that fails
before committing leaves neither (Flask-SQLAlchemy removes the session, rolling it back, at
the end of every request)::

    app = create_app("postgresql+psycopg://app@db/app")
    # POST /signups {"email": "ada@example.com"} -> a signups row and a send_welcome job

The app's own table is ``signups (id bigserial primary key, email text not null)``, in the
default schema (the tests map it to theirs with the ``schema_translate_map`` execution option).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from graphile_worker_utils.contrib.sqlalchemy import worker_utils


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Signup(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "signups"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]


def create_app(
    database_url: str, *, worker_schema: str = "graphile_worker", **engine_options: Any
) -> Flask:
    """The app on ``database_url`` (``postgresql+psycopg://...``).

    Behind PgBouncer in transaction pooling mode, pass
    ``connect_args={"prepare_threshold": None}`` in ``engine_options``.
    """
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True, **engine_options}
    db.init_app(app)

    @app.post("/signups")
    def signup() -> tuple[dict[str, Any], int]:
        body = request.get_json()
        row = Signup(email=body["email"])
        db.session.add(row)
        # worker_utils() flushes the session first, so row.id is set here.
        job = worker_utils(db.session, schema=worker_schema).add_raw_job(
            "send_welcome", {"signup_id": row.id, "email": row.email}
        )
        if body.get("refuse_after_enqueueing"):
            # Nothing was committed: the request's session is rolled back at its end.
            abort(409, "refused after enqueueing")
        db.session.commit()
        return {"signup_id": row.id, "job_id": job.id}, 201

    return app


def close_app(app: Flask) -> None:
    """Dispose of the app's engines (at process shutdown)."""
    with app.app_context():
        db.engine.dispose()
