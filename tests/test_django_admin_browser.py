"""The Django admin in a real browser: headless Chromium (Selenium) against Django's live
server thread, as an operator uses it; and a job that the real graphile-worker 0.18.0 failed,
run again from the admin and run by graphile-worker.

The README's screenshot is made by the first test:
``GRAPHILE_WORKER_TEST_SCREENSHOT=docs/admin-jobs.png pytest tests/test_django_admin_browser.py``.

Marked ``browser``: CI runs them against one server only (``.ci/run``). The jobs list's
screenshot is kept in the test's ``tmp_path`` (``admin-jobs.png``).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from graphile_worker_utils import Job, JobSpec, JobState, RescheduleOptions
from tests._django import AdminWorld, LiveServer
from tests._node import GraphileWorker
from tests._worker import Workers, wait_until
from tests.test_django_admin import failed_job, lock_job

pytestmark = pytest.mark.browser

UTC = dt.timezone.utc
JOBS = "/admin/graphile_worker/job/"
WAIT = 15.0
#: Where to copy the jobs list's screenshot as well: ``docs/admin-jobs.png`` for the README.
SCREENSHOT_ENV = "GRAPHILE_WORKER_TEST_SCREENSHOT"


class Operator:
    """A staff user in the browser: what they click and what they read."""

    def __init__(self, web: Any, server: LiveServer) -> None:
        self.web = web
        self.server = server

    def wait(self, css: str) -> Any:
        return WebDriverWait(self.web, WAIT).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    def log_in(self, username: str, next_path: str) -> None:
        self.web.get(f"{self.server.url}/admin/login/?next={next_path}")
        self.web.delete_all_cookies()  # a previous test's session, on the same host
        self.web.get(f"{self.server.url}/admin/login/?next={next_path}")
        self.wait("#id_username").send_keys(username)
        self.web.find_element(By.ID, "id_password").send_keys("password")
        self.web.find_element(By.CSS_SELECTOR, "#login-form input[type=submit]").click()
        self.wait("#user-tools")

    def click(self, css: str) -> None:
        self.web.find_element(By.CSS_SELECTOR, css).click()

    def click_link(self, text: str) -> None:
        self.web.find_element(By.LINK_TEXT, text).click()

    def messages(self) -> list[str]:
        items = WebDriverWait(self.web, WAIT).until(
            expected_conditions.presence_of_all_elements_located(
                (By.CSS_SELECTOR, "ul.messagelist li")
            )
        )
        return [item.text for item in items]

    def row(self, job_id: int) -> Any:
        return self.web.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')

    def row_ids(self) -> list[int]:
        rows = self.web.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")
        return [int(row.get_attribute("data-job-id")) for row in rows]

    def run_now(self, job_id: int, *, reset_attempts: bool) -> None:
        """Tick the job, choose "Run now", and go."""
        self.click(f'input[name="job_id"][value="{job_id}"]')
        self.web.find_element(By.CSS_SELECTOR, '#gw-action option[value="run_now"]').click()
        if reset_attempts:
            self.click("#gw-reset-attempts")
        self.click("#gw-go")


def failed_for_good(world: AdminWorld, job_id: int) -> Job | None:
    """The job, once it is permanently failed."""
    job = world.utils.get_job(job_id)
    return job if job is not None and job.state is JobState.PERMANENTLY_FAILED else None


@pytest.fixture
def operator(chromium: Any, live_admin: LiveServer, admin_world: AdminWorld) -> Operator:
    """The browser, logged in as a superuser on the jobs list."""
    user = admin_world.user("superuser")
    person = Operator(chromium, live_admin)
    person.log_in(user.username, JOBS)
    return person


def test_an_operator_runs_a_failed_job_again_and_unlocks_a_crashed_worker(
    admin_world: AdminWorld, operator: Operator, tmp_path: Path
) -> None:
    utils = admin_world.utils
    later = dt.datetime.now(UTC) + dt.timedelta(minutes=30)
    utils.add_raw_job("send_welcome", {"user_id": 7}, JobSpec(job_key="welcome-7"))
    utils.add_raw_job("nightly_report", {}, JobSpec(run_at=later))
    retrying = utils.add_raw_job("sync_crm", {"account": 3}, JobSpec(queue_name="crm"))
    utils.reschedule_jobs([retrying.id], RescheduleOptions(run_at=later, attempts=2))
    failed = failed_job(admin_world, "send_invoice", "Error: SMTP 550 mailbox unavailable")
    crashed = utils.add_raw_job("resize_image", {"id": 9}, JobSpec(queue_name="images"))
    lock_job(admin_world, crashed.id, "pool-crashed-1", dt.timedelta(minutes=42))

    operator.web.get(operator.server.url + JOBS)
    operator.wait("#result_list")
    assert operator.row_ids() == sorted(operator.row_ids()) and failed.id in operator.row_ids()
    screenshot = tmp_path / "admin-jobs.png"
    assert operator.web.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):  # the README's picture, made again on request
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_ENV])

    operator.click_link("permanently failed")
    operator.wait(f'tr[data-job-id="{failed.id}"]')
    assert operator.row_ids() == [failed.id]
    assert "Error: SMTP 550 mailbox unavailable" in operator.row(failed.id).text

    operator.run_now(failed.id, reset_attempts=True)
    assert operator.messages() == ["1 job rescheduled to run now, attempts reset"]
    assert operator.row_ids() == []  # no longer permanently failed
    operator.web.find_element(By.CSS_SELECTOR, "#gw-state-filter").find_element(
        By.LINK_TEXT, "ready"
    ).click()
    operator.wait(f'tr[data-job-id="{failed.id}"]')
    row = operator.row(failed.id)
    assert row.get_attribute("data-state") == "ready" and "0/3" in row.text

    operator.click_link("Queues & workers »")
    operator.wait('tr[data-worker-id="pool-crashed-1"]')
    operator.click('tr[data-worker-id="pool-crashed-1"] a.gw-unlock')
    assert operator.wait("#gw-job-count").text == "1"
    assert operator.web.save_screenshot(str(tmp_path / "admin-unlock.png"))
    assert operator.web.find_element(By.ID, "gw-queue-count").text == "1"
    assert "would run twice" in operator.web.find_element(By.ID, "gw-unlock-warning").text
    assert "images" in operator.web.find_element(By.ID, "gw-held-queues").text
    operator.click("#gw-confirm-unlock")
    assert operator.messages() == ["Worker 'pool-crashed-1' unlocked: 1 job and 1 queue released"]
    assert "No worker holds a lock." in operator.web.find_element(By.ID, "content-main").text
    assert operator.web.save_screenshot(str(tmp_path / "admin-workers.png"))
    assert utils.locked_workers() == []


def test_a_job_graphile_worker_failed_is_run_again_from_the_admin_and_graphile_worker_runs_it(
    admin_world: AdminWorld, operator: Operator, graphile_worker: GraphileWorker
) -> None:
    workers = Workers(graphile_worker.node, admin_world.database)
    try:
        worker = workers.start(admin_world.schema, {"charge_card": {"block": True}})
        job = admin_world.utils.add_raw_job("charge_card", {"order": 12}, JobSpec(max_attempts=1))
        worker.wait_started(job.id)
        worker.release(job.id, "fail")
        failed = wait_until(
            lambda: failed_for_good(admin_world, job.id),
            WAIT,
            f"expected graphile-worker to fail job {job.id} for good",
        )
        assert failed.last_error and "released to fail" in failed.last_error

        operator.web.get(f"{operator.server.url}{JOBS}?state=permanently_failed")
        operator.wait(f'tr[data-job-id="{job.id}"]')
        assert "released to fail" in operator.row(job.id).text
        operator.click(f'tr[data-job-id="{job.id}"] th a')
        assert "released to fail" in operator.wait("#gw-last-error").text
        operator.click("#gw-reset-attempts")
        operator.click("#gw-go")  # "Run now" is the first action
        assert operator.messages() == ["1 job rescheduled to run now, attempts reset"]

        first_run = worker.position(worker.events("start", job.id)[0])
        second = worker.wait_event("start", job.id, after=first_run + 1)
        assert second["attempts"] == 1
        worker.release(job.id, "succeed")
        wait_until(
            lambda: admin_world.utils.get_job(job.id) is None,
            WAIT,
            f"expected graphile-worker to run job {job.id} and delete it",
        )
        operator.web.refresh()
        assert operator.messages() == [
            f"Job {job.id} does not exist: it may have completed or been removed"
        ]
    finally:
        workers.close()
