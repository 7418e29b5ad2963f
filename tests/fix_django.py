"""Fixture plugin: Django and its admin in the test process (``tests/_django.py``).

``django_site`` configures Django once per session on a database of its own and migrates it
(auth, sessions, admin and our app); ``admin_world`` gives a test its graphile-worker schema
there and its users; ``live_admin`` serves the site on a free port; ``chromium`` is a headless
browser for the whole session. Nothing of Django is imported unless a test asks for these.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from graphile_worker_utils import WorkerUtils
from tests._django import (
    AdminWorld,
    LiveServer,
    chromium_paths,
    django_database,
    start_chromium,
    start_live_server,
)
from tests._helpers import Database, make_database, unique_name
from tests._server import PgServer


@pytest.fixture(scope="session")
def django_site(pg_server: PgServer) -> Iterator[Database]:
    """Django configured in this process (``tests/django_site``) on a new database, migrated;
    the database is dropped at the end of the session."""
    import django  # type: ignore[import-untyped]
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.management import call_command  # type: ignore[import-untyped]
    from django.db import connections  # type: ignore[import-untyped]

    from tests.django_site.settings import settings as site_settings

    with make_database(pg_server, "django_") as database:
        databases = {
            "default": django_database(pg_server, database.name),
            # Another database of the server, where the tests' schemas are not: the admin
            # reads there only when GRAPHILE_WORKER_DATABASE names it.
            "elsewhere": django_database(pg_server, pg_server.dbname),
        }
        settings.configure(**site_settings(databases, "graphile_worker"))
        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
        try:
            yield database
        finally:
            connections.close_all()


@pytest.fixture
def admin_world(django_site: Database) -> Iterator[AdminWorld]:
    """A graphile-worker schema of this test in the Django database (the
    ``GRAPHILE_WORKER_SCHEMA`` setting while the test runs), dropped at teardown with the
    test's users and sessions."""
    from django.db import connections
    from django.test import override_settings  # type: ignore[import-untyped]

    schema = unique_name()
    with psycopg.connect(django_site.dsn, autocommit=True) as conn:
        utils = WorkerUtils(conn, schema=schema)
        utils.migrate()
        world = AdminWorld(django_site, schema, conn, utils)
        try:
            with override_settings(GRAPHILE_WORKER_SCHEMA=schema):
                yield world
        finally:
            world.forget_users()
            connections.close_all()
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


@pytest.fixture
def live_admin(admin_world: AdminWorld) -> Iterator[LiveServer]:
    """The Django site served on a free loopback port while the test runs."""
    server = start_live_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Selenium, for the whole session."""
    browser, driver = chromium_paths()
    web = start_chromium(browser, driver)
    try:
        yield web
    finally:
        web.quit()
