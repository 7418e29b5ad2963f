"""The Flask recipe (tests/flask_app.py) through Flask's test client, on the test server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.conninfo import make_conninfo

from graphile_worker_utils import WorkerUtils
from tests.flask_app import close_app, create_app


@pytest.fixture
def app(pg_dsn: str, schema: str, conn: psycopg.Connection[Any]) -> Iterator[Flask]:
    """The app on the test schema: its signups table and graphile-worker's tables live there."""
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL("create table {}.signups (id bigserial primary key, email text not null)").format(
            sql.Identifier(schema)
        )
    )
    WorkerUtils(conn, schema=schema).migrate()
    app = create_app(
        make_conninfo(pg_dsn, options=f"-c search_path={schema}"), worker_schema=schema
    )
    try:
        yield app
    finally:
        close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def signups(conn: psycopg.Connection[Any], schema: str) -> list[tuple[int, str]]:
    query = sql.SQL("select id, email from {}.signups order by id").format(sql.Identifier(schema))
    return [(row[0], row[1]) for row in conn.execute(query)]


def jobs(conn: psycopg.Connection[Any], schema: str) -> list[tuple[int, str, Any]]:
    query = sql.SQL(
        "select j.id, t.identifier, j.payload from {}._private_jobs j"
        " join {}._private_tasks t on t.id = j.task_id order by j.id"
    ).format(sql.Identifier(schema), sql.Identifier(schema))
    return [(row[0], row[1], row[2]) for row in conn.execute(query)]


def test_a_request_that_succeeds_commits_its_row_and_its_job(
    client: FlaskClient, conn: psycopg.Connection[Any], schema: str
) -> None:
    response = client.post("/signups", json={"email": "ada@example.com"})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert signups(conn, schema) == [(body["signup_id"], "ada@example.com")]
    assert jobs(conn, schema) == [
        (
            body["job_id"],
            "send_welcome",
            {"signup_id": body["signup_id"], "email": "ada@example.com"},
        )
    ]


def test_a_request_that_fails_after_enqueueing_commits_neither_row_nor_job(
    client: FlaskClient, conn: psycopg.Connection[Any], schema: str
) -> None:
    response = client.post(
        "/signups", json={"email": "ada@example.com", "refuse_after_enqueueing": True}
    )
    assert response.status_code == 409
    assert signups(conn, schema) == []
    assert jobs(conn, schema) == []
