"""The Django admin tests' world: Django configured in the test process on a database of its
own, one graphile-worker schema per test, users with each kind of permission, a live server
and a headless Chromium.

Django is configured once per pytest process (``settings.configure`` cannot be undone), on a
database that the session creates and drops (``tests/fix_django.py``); each test gets its own
graphile-worker schema in it through ``override_settings(GRAPHILE_WORKER_SCHEMA=...)``, its own
users, and leaves nothing behind (schema dropped, users and sessions deleted).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from graphile_worker_utils import WorkerUtils
from tests._helpers import Database, ci_requires_everything
from tests._server import PgServer

CHROMIUM_ENV = "GRAPHILE_WORKER_TEST_CHROMIUM"
CHROMEDRIVER_ENV = "GRAPHILE_WORKER_TEST_CHROMEDRIVER"

#: The permissions each kind of test user has (``superuser`` has them all).
KINDS: dict[str, tuple[str, ...]] = {
    "view": ("view_job", "view_worker"),
    "change": ("change_job", "change_worker"),
    "view_jobs_only": ("view_job",),
    "staff_without_permissions": (),
    "not_staff": ("view_job", "view_worker", "change_job", "change_worker"),
    "superuser": (),
}


def django_database(server: PgServer, dbname: str) -> dict[str, Any]:
    """``settings.DATABASES['default']`` for database ``dbname`` of the test server."""
    database: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": dbname,
        "USER": server.user,
        "PASSWORD": server.password,
        "HOST": server.host,
        "PORT": str(server.port),
        # The test runner's database is this one: never create or destroy another.
        "TEST": {"NAME": dbname},
    }
    if server.sslmode:
        database["OPTIONS"] = {"sslmode": server.sslmode}
    return database


@dataclass
class AdminWorld:
    """One test's graphile-worker schema in the Django database, with a WorkerUtils on a
    connection of the test's own (to set jobs up and look at them), and its users."""

    database: Database
    schema: str
    conn: psycopg.Connection[tuple[Any, ...]]
    utils: WorkerUtils
    usernames: list[str] = field(default_factory=list)

    def user(self, kind: str) -> Any:
        """A new active user of ``kind`` (see :data:`KINDS`), password ``password``."""
        from django.contrib.auth.models import (  # type: ignore[import-untyped]
            Permission,
            User,
        )

        username = f"{kind}-{uuid.uuid4().hex[:8]}"
        self.usernames.append(username)
        user = User.objects.create_user(
            username,
            password="password",
            is_staff=kind != "not_staff",
            is_superuser=kind == "superuser",
        )
        codenames = KINDS[kind]
        if codenames:
            user.user_permissions.set(
                Permission.objects.filter(
                    content_type__app_label="graphile_worker", codename__in=codenames
                )
            )
        return user

    def client(self, kind: str | None = None, *, enforce_csrf_checks: bool = False) -> Any:
        """A Django test client, logged in as a new user of ``kind`` (None: anonymous)."""
        from django.test import Client  # type: ignore[import-untyped]

        client = Client(enforce_csrf_checks=enforce_csrf_checks)
        if kind is not None:
            client.force_login(self.user(kind))
        return client

    def forget_users(self) -> None:
        """Delete the users this test made, and every session (the database is the tests')."""
        from django.contrib.auth.models import User
        from django.contrib.sessions.models import Session  # type: ignore[import-untyped]

        User.objects.filter(username__in=self.usernames).delete()
        Session.objects.all().delete()


def chromium_paths() -> tuple[str, str]:
    """Chromium and its driver (Debian's ``chromium`` and ``chromium-driver``); skips without
    them, except on CI where the browser tests may not be skipped."""
    browser = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    driver = (
        os.environ.get(CHROMEDRIVER_ENV) or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    )
    missing = [path for path in (browser, driver) if not os.access(path, os.X_OK)]
    if missing:
        reason = f"no Chromium for the browser tests: {missing} not found (apt install chromium"
        reason += " chromium-driver)"
        if ci_requires_everything():
            pytest.fail(reason + "; CI is set, so they may not be skipped", pytrace=False)
        pytest.skip(reason)
    return browser, driver


def start_chromium(browser: str, driver: str) -> Any:
    """A headless Chromium under Selenium (no download: Debian's browser and driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,900",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@dataclass
class LiveServer:
    """Django served on a free loopback port by a thread of the test process."""

    url: str
    thread: Any

    def stop(self) -> None:
        self.thread.terminate()
        self.thread.join(10)


def start_live_server() -> LiveServer:
    """Django's own live server thread (what ``StaticLiveServerTestCase`` starts), with the
    admin's static files."""
    from django.contrib.staticfiles.handlers import (  # type: ignore[import-untyped]
        StaticFilesHandler,
    )
    from django.test.testcases import LiveServerThread  # type: ignore[import-untyped]

    thread = LiveServerThread("127.0.0.1", StaticFilesHandler, port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    return LiveServer(f"http://127.0.0.1:{thread.port}", thread)
