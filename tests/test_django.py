"""The Django helper, in a real minimal Django project on the test server.

``settings.configure()`` is global to a process, so each scenario runs in its own Python
process: a script written to ``tmp_path`` configures Django (``USE_TZ`` on or off, a
``TIME_ZONE`` far from UTC), runs one scenario, and prints what it observed as JSON. The test
then checks that, and the database itself through its own connection.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests._server import PgServer

REPO_ROOT = Path(__file__).resolve().parent.parent

SCENARIOS = r"""
import datetime as dt
import json
import os
import sys

import django
from django.conf import settings

config = json.loads(os.environ["GWU_DJANGO_SCENARIO"])
settings.configure(
    DATABASES={"default": config["database"], "other": {
        "ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:",
    }},
    INSTALLED_APPS=[],
    USE_TZ=config["use_tz"],
    # Far from UTC, so a naive or session-local datetime would show.
    TIME_ZONE="Pacific/Kiritimati",
    GRAPHILE_WORKER_SCHEMA=config["schema"],
)
django.setup()

from django.db import connection, transaction

from graphile_worker_utils import JobSpec
from graphile_worker_utils.contrib.django import UnsupportedDatabaseError, worker_utils

PAYLOAD = {
    "int": 1, "float": 1.5, "bool": True, "none": None, "text": "héllo",
    "list": [1, "two", 3.0], "object": {"nested": [False]},
}
out = {}


def describe(value):
    if isinstance(value, dt.datetime):
        return {"iso": value.isoformat(), "utcoffset": None if value.utcoffset() is None
                else value.utcoffset().total_seconds()}
    return value


def job_fields(job):
    return {
        "id": job.id,
        "payload": job.payload,
        "payload_types": {key: type(value).__name__ for key, value in job.payload.items()},
        "flags": job.flags,
        "flags_type": type(job.flags).__name__,
        "run_at": describe(job.run_at),
        "created_at": describe(job.created_at),
        "updated_at": describe(job.updated_at),
    }


scenario = config["scenario"]
if scenario == "refuse_non_postgresql":
    try:
        worker_utils("other")
    except UnsupportedDatabaseError as error:
        out["error"] = str(error)
        out["is_type_error"] = isinstance(error, TypeError)
else:
    worker_utils().migrate()
    if scenario == "commit":
        with transaction.atomic():
            job = worker_utils().add_raw_job("send_email", {"to": "ada@example.com"})
            out["job_id"] = job.id
            out["inside_transaction"] = connection.in_atomic_block
    elif scenario == "rollback":
        class Boom(Exception):
            pass
        try:
            with transaction.atomic():
                job = worker_utils().add_raw_job("send_email", {"to": "ada@example.com"})
                out["job_id"] = job.id
                raise Boom
        except Boom:
            out["rolled_back"] = True
    elif scenario == "types":
        with transaction.atomic():
            job = worker_utils().add_raw_job(
                "send_email", PAYLOAD, JobSpec(flags=["slow", "billing"])
            )
        out["job"] = job_fields(job)
        # What Django itself makes of the same row: the premise of the test.
        with connection.cursor() as cursor:
            cursor.execute(
                "select flags, created_at from "
                + connection.ops.quote_name(config["schema"]) + "._private_jobs where id = %s",
                [job.id],
            )
            flags, created_at = cursor.fetchone()
        out["django_flags_type"] = type(flags).__name__
        out["django_created_at"] = describe(created_at)
    elif scenario == "schema":
        out["default"] = worker_utils().schema
        out["explicit"] = worker_utils(schema="elsewhere").schema
    else:
        sys.exit(f"unknown scenario {scenario!r}")
print(json.dumps(out))
"""


def django_database(server: PgServer) -> dict[str, Any]:
    """``settings.DATABASES['default']`` for the test server (a socket folder as HOST)."""
    database: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": server.dbname,
        "USER": server.user,
        "PASSWORD": server.password,
        "HOST": server.host,
        "PORT": str(server.port),
    }
    if server.sslmode:
        database["OPTIONS"] = {"sslmode": server.sslmode}
    return database


def run_scenario(
    tmp_path: Path, pg_server: PgServer, schema: str, scenario: str, *, use_tz: bool = True
) -> dict[str, Any]:
    script = tmp_path / "django_scenario.py"
    script.write_text(SCENARIOS)
    config = {
        "database": django_database(pg_server),
        "schema": schema,
        "scenario": scenario,
        "use_tz": use_tz,
    }
    env = {
        **os.environ,
        "GWU_DJANGO_SCENARIO": json.dumps(config),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"scenario {scenario!r} failed:\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def stored_job_ids(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    query = sql.SQL("select id from {}._private_jobs order by id").format(sql.Identifier(schema))
    return [row[0] for row in conn.execute(query)]


def stored_timestamps(conn: psycopg.Connection[Any], schema: str, job_id: int) -> dict[str, Any]:
    query = sql.SQL(
        "select run_at, created_at, updated_at from {}._private_jobs where id = %s"
    ).format(sql.Identifier(schema))
    row = conn.execute(query, [job_id]).fetchone()
    assert row is not None
    return dict(zip(("run_at", "created_at", "updated_at"), row, strict=True))


@pytest.mark.parametrize("use_tz", [True, False], ids=["USE_TZ=True", "USE_TZ=False"])
def test_a_job_enqueued_inside_atomic_is_committed_with_the_block(
    tmp_path: Path, pg_server: PgServer, schema: str, conn: psycopg.Connection[Any], use_tz: bool
) -> None:
    result = run_scenario(tmp_path, pg_server, schema, "commit", use_tz=use_tz)
    assert result["inside_transaction"] is True
    assert stored_job_ids(conn, schema) == [result["job_id"]]


@pytest.mark.parametrize("use_tz", [True, False], ids=["USE_TZ=True", "USE_TZ=False"])
def test_an_exception_inside_atomic_leaves_no_job(
    tmp_path: Path, pg_server: PgServer, schema: str, conn: psycopg.Connection[Any], use_tz: bool
) -> None:
    result = run_scenario(tmp_path, pg_server, schema, "rollback", use_tz=use_tz)
    assert result["rolled_back"] is True
    assert isinstance(result["job_id"], int)  # it was enqueued before the exception
    assert stored_job_ids(conn, schema) == []


@pytest.mark.parametrize("use_tz", [True, False], ids=["USE_TZ=True", "USE_TZ=False"])
def test_returned_datetimes_are_aware_utc_whatever_use_tz_says(
    tmp_path: Path, pg_server: PgServer, schema: str, conn: psycopg.Connection[Any], use_tz: bool
) -> None:
    result = run_scenario(tmp_path, pg_server, schema, "types", use_tz=use_tz)
    job = result["job"]
    stored = stored_timestamps(conn, schema, job["id"])
    for name in ("run_at", "created_at", "updated_at"):
        assert job[name]["utcoffset"] == 0.0, f"{name}: {job[name]}"
        assert dt.datetime.fromisoformat(job[name]["iso"]) == stored[name], name


def test_use_tz_false_makes_django_itself_load_naive_datetimes(
    tmp_path: Path, pg_server: PgServer, schema: str
) -> None:
    # The premise of the test above: on this connection Django's own loader drops the zone.
    result = run_scenario(tmp_path, pg_server, schema, "types", use_tz=False)
    assert result["django_created_at"]["utcoffset"] is None


@pytest.mark.parametrize("use_tz", [True, False], ids=["USE_TZ=True", "USE_TZ=False"])
def test_flags_come_back_as_the_list_of_names_though_django_loads_jsonb_as_text(
    tmp_path: Path, pg_server: PgServer, schema: str, use_tz: bool
) -> None:
    result = run_scenario(tmp_path, pg_server, schema, "types", use_tz=use_tz)
    assert result["django_flags_type"] == "str"  # Django's own view of the same column
    assert result["job"]["flags_type"] == "list"
    assert result["job"]["flags"] == ["slow", "billing"]


def test_payload_values_keep_their_json_types_on_a_django_connection(
    tmp_path: Path, pg_server: PgServer, schema: str
) -> None:
    result = run_scenario(tmp_path, pg_server, schema, "types")
    assert result["job"]["payload"] == {
        "int": 1,
        "float": 1.5,
        "bool": True,
        "none": None,
        "text": "héllo",
        "list": [1, "two", 3.0],
        "object": {"nested": [False]},
    }
    assert result["job"]["payload_types"] == {
        "int": "int",
        "float": "float",
        "bool": "bool",
        "none": "NoneType",
        "text": "str",
        "list": "list",
        "object": "dict",
    }


def test_the_schema_comes_from_the_graphile_worker_schema_setting_unless_given(
    tmp_path: Path, pg_server: PgServer, schema: str
) -> None:
    result = run_scenario(tmp_path, pg_server, schema, "schema")
    assert result == {"default": schema, "explicit": "elsewhere"}


def test_a_database_that_is_not_postgresql_is_refused_with_a_clear_error(
    tmp_path: Path, pg_server: PgServer, schema: str
) -> None:
    result = run_scenario(tmp_path, pg_server, schema, "refuse_non_postgresql")
    assert result["is_type_error"] is True
    assert "'other'" in result["error"]
    assert "sqlite" in result["error"]
    assert "PostgreSQL" in result["error"]
