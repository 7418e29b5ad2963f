"""Django admin benchmark: the graphile-worker pages on 1,000,000 jobs, through Django's test
client (the whole request: middleware, session, permission checks, the library's reads,
template rendering).

Usage (from the repository root, after the README's set-up)::

    python benchmarks/admin_pages.py [--rounds 5] [--jobs 1000000] [--dsn postgresql://...]

The server is found as ``benchmarks/reads.py`` finds it, and the jobs are built by its
``build()`` (every state, 21 tasks, 10 queues, locked jobs). Everything lives in a throwaway
database (Django's tables and graphile-worker's schema), dropped at the end. The table shows the
median time per page over ``rounds``; nothing here is a pass/fail assertion.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from reads import build, database  # noqa: E402

from tests.django_site.settings import settings as site_settings  # noqa: E402

JOBS = "/admin/graphile_worker/job/"


def django_settings(dsn: str, schema: str) -> dict[str, Any]:
    """Django's settings for the database of ``dsn``, graphile-worker in ``schema``."""
    params = conninfo_to_dict(dsn)
    database_: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname"),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": str(params.get("port", "")),
    }
    return site_settings({"default": database_}, schema)


def pages(client: Any, jobs: int) -> list[tuple[str, str]]:
    """The pages to time: (what, URL)."""
    some = jobs // 2
    worker = "pool-1"
    return [
        ("jobs list, first page of 100", JOBS),
        ("jobs list, page after job N/2", f"{JOBS}?after={some}"),
        ("jobs list, state=permanently_failed", f"{JOBS}?state=permanently_failed"),
        ("jobs list, state=ready, task=task_07", f"{JOBS}?state=ready&task=task_07"),
        ("jobs list, queue=queue_3", f"{JOBS}?queue=queue_3"),
        ("jobs list, state=running (rare)", f"{JOBS}?state=running"),
        ("jobs list, task=rare_task", f"{JOBS}?task=rare_task"),
        ("jobs list, search by id", f"{JOBS}?q={some}"),
        ("job detail", f"{JOBS}{some}/change/"),
        ("queues & workers (status over every job)", "/admin/graphile_worker/worker/"),
        (
            "unlock confirmation (a worker's jobs)",
            f"/admin/graphile_worker/worker/unlock/?worker_id={worker}",
        ),
    ]


def timed(client: Any, url: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"{url}: HTTP {response.status_code}")
    return statistics.median(times)


def run(dsn: str, rounds: int, jobs: int) -> None:
    name = f"gwu_bench_admin_{uuid.uuid4().hex[:8]}"
    schema = "graphile_worker"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    target = make_conninfo(dsn, dbname=name)
    try:
        with psycopg.connect(target, autocommit=True) as conn:
            seconds = build(conn, schema, jobs)
        print(f"built {jobs:,} jobs in {seconds:.1f} s")
        measure(target, schema, rounds, jobs)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


def measure(dsn: str, schema: str, rounds: int, jobs: int) -> None:
    import django  # type: ignore[import-untyped]
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.management import call_command  # type: ignore[import-untyped]
    from django.db import connections  # type: ignore[import-untyped]
    from django.test import Client  # type: ignore[import-untyped]

    settings.configure(**django_settings(dsn, schema))
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import User  # type: ignore[import-untyped]

    client = Client()
    client.force_login(User.objects.create_superuser("bench", password="bench"))
    rows = [(what, timed(client, url, rounds)) for what, url in pages(client, jobs)]
    connections.close_all()
    width = max(len(what) for what, _ in rows)
    print(f"{'page'.ljust(width)} | median of {rounds}")
    for what, seconds in rows:
        print(f"{what.ljust(width)} | {seconds * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL to use (default: the tests' rules)")
    parser.add_argument("--rounds", type=int, default=5, help="requests per page (median)")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to build")
    args = parser.parse_args()
    with database(args.dsn) as dsn:
        run(dsn, args.rounds, args.jobs)


if __name__ == "__main__":
    main()
