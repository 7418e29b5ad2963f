"""The Django admin app (``graphile_worker_utils.contrib.django``) through Django's test client:
every page and action, permissions, CSRF, filters, pagination and bad parameters, against the
jobs of a real graphile-worker schema (one per test, ``tests/fix_django.py``)."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import pytest
from psycopg import sql

from graphile_worker_utils import Job, JobSpec, JobState, RawJobSpec, RescheduleOptions
from tests._django import AdminWorld

UTC = dt.timezone.utc
JOBS = "/admin/graphile_worker/job/"
OVERVIEW = "/admin/graphile_worker/worker/"
UNLOCK = "/admin/graphile_worker/worker/unlock/"


def detail(job_id: int | str) -> str:
    return f"{JOBS}{job_id}/change/"


def text(response: Any) -> str:
    return html.unescape(response.content.decode())


def messages(response: Any) -> list[str]:
    """The admin's messages on a page (``follow=True`` responses), as the admin shows them:
    first letter capitalised."""
    items = re.findall(
        r'<li class="(?:success|warning|error|info)">(.*?)</li>', text(response), re.DOTALL
    )
    return [" ".join(item.split()) for item in items]


def row_ids(response: Any) -> list[int]:
    return [int(value) for value in re.findall(r'<tr data-job-id="(\d+)"', text(response))]


def row_states(response: Any) -> dict[int, str]:
    pairs = re.findall(r'<tr data-job-id="(\d+)" data-state="(\w*)"', text(response))
    return {int(job_id): state for job_id, state in pairs}


def lock_job(world: AdminWorld, job_id: int, worker: str, age: dt.timedelta) -> None:
    """Lock a job (and its queue, if any) as a worker would have ``age`` ago."""
    s = sql.Identifier(world.schema)
    world.conn.execute(
        sql.SQL(
            "update {s}._private_jobs set locked_by = %(w)s, locked_at = now() - %(age)s,"
            " attempts = attempts + 1 where id = %(id)s"
        ).format(s=s),
        {"w": worker, "age": age, "id": job_id},
    )
    world.conn.execute(
        sql.SQL(
            "update {s}._private_job_queues q set locked_by = %(w)s, locked_at = now() - %(age)s"
            " from {s}._private_jobs j where j.id = %(id)s and q.id = j.job_queue_id"
        ).format(s=s),
        {"w": worker, "age": age, "id": job_id},
    )


def stored(world: AdminWorld, job_id: int) -> Job | None:
    return world.utils.get_job(job_id)


def failed_job(world: AdminWorld, task: str = "send_email", error: str = "boom") -> Job:
    job = world.utils.add_raw_job(task, {"to": "ada@example.com"}, JobSpec(max_attempts=3))
    (failed,) = world.utils.permanently_fail_jobs([job.id], error)
    return failed


@pytest.fixture
def mixed(admin_world: AdminWorld) -> dict[str, Job]:
    """One job in each state (the running one locked by ``worker-a`` in queue ``mail``)."""
    utils = admin_world.utils
    future = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    jobs = {
        "ready": utils.add_raw_job("send_email", {"n": 1}, JobSpec(job_key="welcome-ada")),
        "scheduled": utils.add_raw_job("report", {"n": 2}, JobSpec(run_at=future)),
        "retrying": utils.add_raw_job("send_email", {"n": 3}, JobSpec(queue_name="mail")),
        "running": utils.add_raw_job("send_email", {"n": 4}, JobSpec(queue_name="mail")),
        "failed": failed_job(admin_world, "report", "Error: no printer\n    at print (x.js:1)"),
    }
    utils.reschedule_jobs([jobs["retrying"].id], RescheduleOptions(run_at=future, attempts=1))
    lock_job(admin_world, jobs["running"].id, "worker-a", dt.timedelta(minutes=5))
    return jobs


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [JOBS, OVERVIEW, detail(1), UNLOCK + "?worker_id=w"])
@pytest.mark.parametrize("kind", [None, "not_staff"])
def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(
    admin_world: AdminWorld, url: str, kind: str | None
) -> None:
    response = admin_world.client(kind).get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", [JOBS, OVERVIEW, detail(1), UNLOCK + "?worker_id=w"])
def test_staff_without_the_apps_permissions_are_refused(admin_world: AdminWorld, url: str) -> None:
    assert admin_world.client("staff_without_permissions").get(url).status_code == 403


def test_staff_without_the_apps_permissions_do_not_see_it_on_the_admin_index(
    admin_world: AdminWorld,
) -> None:
    page = text(admin_world.client("staff_without_permissions").get("/admin/"))
    assert "Graphile Worker" not in page
    viewer = text(admin_world.client("view").get("/admin/"))
    assert "Graphile Worker" in viewer
    assert f'href="{JOBS}"' in viewer and f'href="{OVERVIEW}"' in viewer


def test_view_permission_on_jobs_alone_does_not_show_the_workers(admin_world: AdminWorld) -> None:
    client = admin_world.client("view_jobs_only")
    assert client.get(JOBS).status_code == 200
    assert client.get(OVERVIEW).status_code == 403


def test_a_view_only_user_sees_jobs_but_no_action_buttons(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    client = admin_world.client("view")
    listing = client.get(JOBS)
    assert listing.status_code == 200
    assert sorted(row_ids(listing)) == sorted(job.id for job in mixed.values())
    page = text(listing)
    assert 'name="job_id"' not in page and 'id="gw-actions"' not in page
    assert 'id="gw-remove-form"' not in page
    one = text(client.get(detail(mixed["ready"].id)))
    assert 'id="gw-job-actions"' not in one and 'id="gw-remove"' not in one
    lock_job(admin_world, mixed["ready"].id, "worker-b", dt.timedelta(minutes=1))
    overview = text(client.get(OVERVIEW))
    assert "worker-b" in overview and "Unlock…" not in overview


@pytest.mark.parametrize(
    ("url", "data"),
    [
        (JOBS, {"action": "complete"}),
        (JOBS, {"action": "remove", "job_key": "welcome-ada"}),
        ("DETAIL", {"action": "complete"}),
        ("DETAIL", {"action": "remove", "job_key": "welcome-ada"}),
        (UNLOCK, {"worker_id": "worker-a", "confirm": "yes"}),
    ],
)
def test_a_view_only_user_posting_an_action_is_refused_and_nothing_changes(
    admin_world: AdminWorld, mixed: dict[str, Job], url: str, data: dict[str, str]
) -> None:
    ready = mixed["ready"]
    url = detail(ready.id) if url == "DETAIL" else url
    response = admin_world.client("view").post(url, {**data, "job_id": [str(ready.id)]})
    assert response.status_code == 403
    after = stored(admin_world, ready.id)
    assert after is not None and after.state is JobState.READY
    running = stored(admin_world, mixed["running"].id)
    assert running is not None and running.locked_by == "worker-a"


def test_the_unlock_confirmation_page_is_refused_to_a_view_only_user(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    response = admin_world.client("view").get(UNLOCK, {"worker_id": "worker-a"})
    assert response.status_code == 403


# -- CSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "data"),
    [
        (JOBS, {"action": "complete"}),
        ("DETAIL", {"action": "complete"}),
        (JOBS, {"action": "remove", "job_key": "welcome-ada"}),
        (UNLOCK, {"worker_id": "worker-a", "confirm": "yes"}),
    ],
)
def test_every_action_needs_the_csrf_token(
    admin_world: AdminWorld, mixed: dict[str, Job], url: str, data: dict[str, str]
) -> None:
    ready = mixed["ready"]
    url = detail(ready.id) if url == "DETAIL" else url
    client = admin_world.client("superuser", enforce_csrf_checks=True)
    refused = client.post(url, {**data, "job_id": [str(ready.id)]})
    assert refused.status_code == 403
    assert b"CSRF" in refused.content
    assert stored(admin_world, ready.id) is not None
    running = stored(admin_world, mixed["running"].id)
    assert running is not None and running.locked_by == "worker-a"


def test_an_action_with_the_csrf_token_of_the_page_is_done(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    client = admin_world.client("superuser", enforce_csrf_checks=True)
    page = text(client.get(JOBS))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    ready = mixed["ready"]
    response = client.post(
        JOBS,
        {"csrfmiddlewaretoken": token.group(1), "action": "complete", "job_id": [str(ready.id)]},
        follow=True,
    )
    assert messages(response) == ["1 job completed (deleted)"]
    assert stored(admin_world, ready.id) is None


# -- the jobs list --------------------------------------------------------------------------


def test_the_list_shows_the_columns_of_the_cli_jobs_command(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    response = admin_world.client("view").get(JOBS)
    assert row_states(response) == {
        mixed["ready"].id: "ready",
        mixed["scheduled"].id: "scheduled",
        mixed["retrying"].id: "retrying",
        mixed["running"].id: "running",
        mixed["failed"].id: "permanently_failed",
    }
    assert row_ids(response) == sorted(row_ids(response))
    page = text(response)
    for header in ("ID", "Task", "Queue", "State", "Attempts", "Run at", "Key", "Last error"):
        assert f'<th scope="col">{header}</th>' in page
    failed_row = page[page.index(f'data-job-id="{mixed["failed"].id}"') :].split("</tr>")[0]
    assert "report" in failed_row and "permanently failed" in failed_row
    assert "3/3" in failed_row
    assert ">Error: no printer<" in failed_row  # the first line only
    ready_row = page[page.index(f'data-job-id="{mixed["ready"].id}"') :].split("</tr>")[0]
    assert "welcome-ada" in ready_row and "0/25" in ready_row


def test_a_long_error_is_shortened_in_the_list_and_whole_on_the_detail_page(
    admin_world: AdminWorld,
) -> None:
    error = "E" * 300 + "\nsecond line"
    job = failed_job(admin_world, error=error)
    client = admin_world.client("view")
    page = text(client.get(JOBS))
    assert "E" * 79 + "…" in page and "E" * 81 not in page.split('title="')[0]
    one = text(client.get(detail(job.id)))
    assert error in one


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"state": "ready"}, ["ready"]),
        ({"state": "permanently_failed"}, ["failed"]),
        ({"state": ["ready", "running"]}, ["ready", "running"]),
        ({"task": "report"}, ["scheduled", "failed"]),
        ({"queue": "mail"}, ["retrying", "running"]),
        ({"task": "send_email", "state": "retrying"}, ["retrying"]),
        ({"task": "nothing-like-it"}, []),
    ],
)
def test_filters_by_state_task_and_queue(
    admin_world: AdminWorld, mixed: dict[str, Job], params: dict[str, Any], expected: list[str]
) -> None:
    response = admin_world.client("view").get(JOBS, params)
    assert response.status_code == 200
    assert row_ids(response) == sorted(mixed[name].id for name in expected)
    if not expected:
        assert "No job matches." in text(response)


def test_search_by_id_and_by_key(admin_world: AdminWorld, mixed: dict[str, Job]) -> None:
    client = admin_world.client("view")
    assert row_ids(client.get(JOBS, {"q": str(mixed["failed"].id)})) == [mixed["failed"].id]
    assert row_ids(client.get(JOBS, {"q": "welcome-ada"})) == [mixed["ready"].id]
    assert row_ids(client.get(JOBS, {"q": "welcome-ada", "state": "running"})) == []
    assert row_ids(client.get(JOBS, {"q": "no-such-key"})) == []


def test_a_numeric_search_finds_the_job_with_that_id_and_the_job_with_that_key(
    admin_world: AdminWorld,
) -> None:
    first = admin_world.utils.add_raw_job("t", {})
    keyed = admin_world.utils.add_raw_job("t", {}, JobSpec(job_key=str(first.id)))
    response = admin_world.client("view").get(JOBS, {"q": str(first.id)})
    assert row_ids(response) == [first.id, keyed.id]


def test_keyset_pages_show_every_job_once_and_the_last_page_has_no_next_link(
    admin_world: AdminWorld,
) -> None:
    jobs = admin_world.utils.add_raw_jobs([RawJobSpec("t", {"n": n}) for n in range(250)])
    client = admin_world.client("view")
    seen: list[int] = []
    url: str | None = JOBS
    pages = 0
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200
        seen += row_ids(response)
        pages += 1
        link = re.search(r'href="([^"]+)" id="gw-next-page"', text(response))
        url = None if link is None else JOBS + link.group(1)
    assert pages == 3
    assert seen == [job.id for job in jobs]


def test_pages_keep_the_filters_and_a_limit(admin_world: AdminWorld) -> None:
    jobs = admin_world.utils.add_raw_jobs(
        [RawJobSpec("even" if n % 2 == 0 else "odd", {"n": n}) for n in range(10)]
    )
    evens = [job.id for job in jobs if job.task_identifier == "even"]
    client = admin_world.client("view")
    first = client.get(JOBS, {"task": "even", "limit": "3"})
    assert row_ids(first) == evens[:3]
    link = re.search(r'href="([^"]+)" id="gw-next-page"', text(first))
    assert link is not None
    second = client.get(JOBS + link.group(1))
    assert row_ids(second) == evens[3:5]
    assert 'id="gw-next-page"' not in text(second)
    assert 'id="gw-first-page"' in text(second)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"state": "failing"}, "state: 'failing' is not a job state"),
        ({"after": "abc"}, "after: 'abc' is not a job id"),
        ({"after": "-1"}, "after: '-1' is not a job id"),
        ({"after": str(2**63)}, "is not a job id"),
        ({"after": ["1", "2"]}, "after: given 2 times"),
        ({"limit": "0"}, "limit: '0' is not a page size"),
        ({"limit": "501"}, "limit: '501' is not a page size (a whole number 1..500)"),
        ({"task": "x" * 129}, "task: 129 characters, over the limit of 128"),
        ({"queue": "q\x00"}, "queue: must not contain NUL"),
        ({"q": "k" * 513}, "q: 513 characters, over the limit of 512"),
    ],
)
def test_bad_parameters_get_a_clear_message_not_a_server_error(
    admin_world: AdminWorld, mixed: dict[str, Job], params: dict[str, Any], named: str
) -> None:
    response = admin_world.client("view").get(JOBS, params)
    assert response.status_code == 400
    assert named in text(response)
    assert row_ids(response) == []


def test_a_schema_without_tables_is_a_clear_message(admin_world: AdminWorld) -> None:
    from django.test import override_settings  # type: ignore[import-untyped]

    client = admin_world.client("view")
    with override_settings(GRAPHILE_WORKER_SCHEMA=admin_world.schema + "_missing"):
        for url in (JOBS, OVERVIEW):
            response = client.get(url)
            assert response.status_code == 503
            assert "GRAPHILE_WORKER_SCHEMA" in text(response)


def test_the_graphile_worker_database_setting_names_the_connection_the_admin_uses(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    from django.test import override_settings

    client = admin_world.client("change")
    with override_settings(GRAPHILE_WORKER_DATABASE="elsewhere"):
        listing = client.get(JOBS)
        done = client.post(
            JOBS, {"action": "complete", "job_id": [str(mixed["ready"].id)]}, follow=True
        )
    assert listing.status_code == 503  # that database has no such schema
    assert f"schema '{admin_world.schema}' is missing" in text(listing)
    (message,) = messages(done)
    assert message.startswith("Nothing was changed:") and "GRAPHILE_WORKER_SCHEMA" in message
    assert stored(admin_world, mixed["ready"].id) is not None
    with override_settings(GRAPHILE_WORKER_DATABASE="default"):
        assert sorted(row_ids(client.get(JOBS))) == sorted(job.id for job in mixed.values())


# -- the detail page -------------------------------------------------------------------------


def test_the_detail_page_shows_every_field_the_payload_pretty_printed_and_the_full_error(
    admin_world: AdminWorld,
) -> None:
    payload = {"to": "ada@example.com", "items": [1, 2], "note": "héllo <b>"}
    job = admin_world.utils.add_raw_job(
        "send_email",
        payload,
        JobSpec(queue_name="mail", job_key="k-1", priority=3, flags=["slow"], max_attempts=4),
    )
    error = "Error: SMTP refused\n    at send (mail.js:10)\n    at run (worker.js:99)"
    admin_world.utils.permanently_fail_jobs([job.id], error)
    response = admin_world.client("view").get(detail(job.id))
    assert response.status_code == 200
    page = text(response)
    for label in (
        "Task", "Queue", "State", "Attempts", "Priority", "Run at", "Key", "Flags",
        "Locked by", "Locked at", "Created at", "Updated at", "Revision",
    ):  # fmt: skip
        assert f'<th scope="row">{label}</th>' in page, label
    assert "permanently failed" in page and "4 of 4" in page and "k-1" in page
    assert "slow" in page and "mail" in page
    assert error in page
    assert '"items": [\n    1,\n    2\n  ]' in page
    assert "héllo" in page
    assert "<b>" not in response.content.decode()  # escaped


def test_an_unknown_or_malformed_job_id_redirects_to_the_list_with_a_message(
    admin_world: AdminWorld,
) -> None:
    client = admin_world.client("view")
    gone = client.get(detail(987654), follow=True)
    assert gone.redirect_chain == [(JOBS, 302)]
    assert messages(gone) == ["Job 987654 does not exist: it may have completed or been removed"]
    bad = client.get(detail("abc"), follow=True)
    assert messages(bad) == ["Job: 'abc' is not a job id (a whole number from 1)"]


# -- actions on selected jobs ----------------------------------------------------------------


def test_run_now_with_attempts_reset_makes_failed_jobs_ready_from_attempt_zero(
    admin_world: AdminWorld,
) -> None:
    jobs = [failed_job(admin_world) for _ in range(3)]
    response = admin_world.client("change").post(
        JOBS + "?state=permanently_failed",
        {"action": "run_now", "reset_attempts": "on", "job_id": [str(j.id) for j in jobs]},
        follow=True,
    )
    assert response.redirect_chain == [(JOBS + "?state=permanently_failed", 302)]
    assert messages(response) == ["3 jobs rescheduled to run now, attempts reset"]
    for job in jobs:
        after = stored(admin_world, job.id)
        assert after is not None
        assert (after.state, after.attempts, after.last_error) == (JobState.READY, 0, "boom")
    assert row_ids(response) == []  # none is permanently failed any more


def test_run_now_without_reset_keeps_the_attempts(admin_world: AdminWorld) -> None:
    utils = admin_world.utils
    job = utils.add_raw_job("t", {}, JobSpec(max_attempts=5))
    later = dt.datetime.now(UTC) + dt.timedelta(hours=2)
    utils.reschedule_jobs([job.id], RescheduleOptions(run_at=later, attempts=2))
    response = admin_world.client("change").post(
        JOBS, {"action": "run_now", "job_id": [str(job.id)]}, follow=True
    )
    assert messages(response) == ["1 job rescheduled to run now"]
    after = stored(admin_world, job.id)
    assert after is not None and (after.state, after.attempts) == (JobState.READY, 2)


def test_a_locked_job_is_skipped_and_the_message_says_so(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    running, ready, failed = mixed["running"], mixed["ready"], mixed["failed"]
    before = stored(admin_world, running.id)
    response = admin_world.client("change").post(
        JOBS,
        {"action": "run_now", "job_id": [str(ready.id), str(running.id), str(failed.id)]},
        follow=True,
    )
    assert messages(response) == [
        f"2 jobs rescheduled to run now, 1 skipped: locked by a worker or gone (job {running.id})"
    ]
    assert stored(admin_world, running.id) == before


def test_permanently_fail_records_the_reason(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    ids = [mixed["ready"].id, mixed["scheduled"].id]
    response = admin_world.client("change").post(
        JOBS,
        {"action": "permanently_fail", "reason": "customer gone", "job_id": [str(i) for i in ids]},
        follow=True,
    )
    assert messages(response) == ["2 jobs marked permanently failed"]
    for job_id in ids:
        after = stored(admin_world, job_id)
        assert after is not None
        assert (after.state, after.last_error) == (JobState.PERMANENTLY_FAILED, "customer gone")


def test_permanently_fail_without_a_reason_uses_graphile_workers_default(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    job_id = mixed["ready"].id
    admin_world.client("change").post(
        JOBS, {"action": "permanently_fail", "reason": "  ", "job_id": [str(job_id)]}
    )
    after = stored(admin_world, job_id)
    assert after is not None and after.last_error == "Manually marked as failed"


def test_complete_deletes_the_jobs(admin_world: AdminWorld, mixed: dict[str, Job]) -> None:
    ids = [mixed["ready"].id, mixed["failed"].id, 987654]
    response = admin_world.client("change").post(
        JOBS, {"action": "complete", "job_id": [str(i) for i in ids]}, follow=True
    )
    assert messages(response) == [
        "2 jobs completed (deleted), 1 skipped: locked by a worker or gone (job 987654)"
    ]
    assert stored(admin_world, ids[0]) is None and stored(admin_world, ids[1]) is None


def test_remove_by_key_from_the_list(admin_world: AdminWorld, mixed: dict[str, Job]) -> None:
    client = admin_world.client("change")
    response = client.post(JOBS, {"action": "remove", "job_key": "welcome-ada"}, follow=True)
    assert messages(response) == [f"Job {mixed['ready'].id} (key 'welcome-ada') removed"]
    assert stored(admin_world, mixed["ready"].id) is None
    again = client.post(JOBS, {"action": "remove", "job_key": "welcome-ada"}, follow=True)
    assert messages(again) == ["No job has the key 'welcome-ada': nothing removed"]


def test_removing_a_running_job_by_key_says_it_keeps_running_without_retries(
    admin_world: AdminWorld,
) -> None:
    job = admin_world.utils.add_raw_job("t", {}, JobSpec(job_key="busy"))
    lock_job(admin_world, job.id, "worker-z", dt.timedelta(seconds=3))
    response = admin_world.client("change").post(
        JOBS, {"action": "remove", "job_key": "busy"}, follow=True
    )
    assert messages(response) == [
        f"Job {job.id} (key 'busy') is running: it keeps running this once, but lost its key"
        " and will not be retried"
    ]
    after = stored(admin_world, job.id)
    assert after is not None and after.key is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "complete"}, "Job_id: no job selected; tick the jobs to act on"),
        ({"action": "complete", "job_id": "x1"}, "Job_id: 'x1' is not a job id"),
        ({"action": "explode", "job_id": "1"}, "Action: 'explode' is not an action"),
        ({"action": "remove", "job_key": ""}, "Job_key: give the key of the job to remove"),
        (
            {"action": "permanently_fail", "job_id": "1", "reason": "a\x00b"},
            "Reason: must not contain NUL characters",
        ),
    ],
)
def test_bad_action_input_is_a_message_and_changes_nothing(
    admin_world: AdminWorld, mixed: dict[str, Job], data: dict[str, str], message: str
) -> None:
    before = admin_world.utils.list_jobs(include_payload=True)
    response = admin_world.client("change").post(JOBS, data, follow=True)
    assert response.status_code == 200
    (shown,) = messages(response)
    assert shown.startswith(message), shown
    assert admin_world.utils.list_jobs(include_payload=True) == before


def test_too_many_selected_jobs_are_refused(admin_world: AdminWorld) -> None:
    response = admin_world.client("change").post(
        JOBS, {"action": "complete", "job_id": [str(n) for n in range(1, 502)]}, follow=True
    )
    assert messages(response) == ["Job_id: 501 jobs selected, over the limit of 500"]


# -- actions on one job ----------------------------------------------------------------------


def test_run_now_from_the_detail_page_returns_to_it_with_the_new_state(
    admin_world: AdminWorld,
) -> None:
    job = failed_job(admin_world)
    response = admin_world.client("change").post(
        detail(job.id), {"action": "run_now", "reset_attempts": "on"}, follow=True
    )
    assert response.redirect_chain == [(detail(job.id), 302)]
    assert messages(response) == ["1 job rescheduled to run now, attempts reset"]
    assert re.search(r'id="gw-job-state">ready<', text(response))


def test_complete_and_remove_from_the_detail_page_return_to_the_list(
    admin_world: AdminWorld,
) -> None:
    first = admin_world.utils.add_raw_job("t", {})
    second = admin_world.utils.add_raw_job("t", {}, JobSpec(job_key="second"))
    client = admin_world.client("change")
    completed = client.post(detail(first.id), {"action": "complete"}, follow=True)
    assert completed.redirect_chain == [(JOBS, 302)]
    assert messages(completed) == ["1 job completed (deleted)"]
    removed = client.post(detail(second.id), {"action": "remove", "job_key": "second"}, follow=True)
    assert removed.redirect_chain == [(JOBS, 302)]
    assert row_ids(removed) == []


def test_an_action_on_a_locked_job_from_its_page_is_skipped(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    running = mixed["running"]
    client = admin_world.client("change")
    page = text(client.get(detail(running.id)))
    assert "A worker has this job locked" in page
    response = client.post(
        detail(running.id), {"action": "permanently_fail", "reason": "x"}, follow=True
    )
    assert messages(response) == [
        "0 jobs marked permanently failed, 1 skipped: locked by a worker or gone"
        f" (job {running.id})"
    ]
    after = stored(admin_world, running.id)
    assert after is not None and after.state is JobState.RUNNING


# -- queues & workers ------------------------------------------------------------------------


def test_the_overview_counts_jobs_per_task_and_queue_and_shows_locks(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    response = admin_world.client("view").get(OVERVIEW)
    assert response.status_code == 200
    page = text(response)
    groups = re.findall(r'<tr data-task="([^"]*)" data-queue="([^"]*)">', page)
    assert groups == [("report", ""), ("send_email", ""), ("send_email", "mail")]
    mail_row = page[page.index('data-task="send_email" data-queue="mail"') :].split("</tr>")[0]
    cells = re.findall(r"<td>(.*?)</td>", mail_row)
    counts = [re.sub(r"<[^>]+>", "", cell) for cell in cells[2:7]]
    assert counts == ["0", "0", "1", "1", "0"]  # ready, scheduled, running, retrying, failed
    assert "worker-a" in mail_row and "5 min ago" in mail_row
    ready_row = page[page.index('data-task="send_email" data-queue=""') :].split("</tr>")[0]
    assert re.search(r"<td>\d+ s</td>", ready_row)  # the oldest ready job's age
    assert f"{JOBS}?state=running&amp;task=send_email&amp;queue=mail" in response.content.decode()
    workers = page[page.index('id="gw-workers"') :]
    assert '<tr data-worker-id="worker-a"><td>worker-a</td><td>1</td><td>1</td>' in workers
    assert 'id="gw-locked-queues"' in page


def test_the_unlock_confirmation_shows_what_the_worker_holds_and_the_warning(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    client = admin_world.client("change")
    overview = text(client.get(OVERVIEW))
    assert f'href="{UNLOCK}?worker_id=worker-a"' in overview
    response = client.get(UNLOCK, {"worker_id": "worker-a"})
    assert response.status_code == 200
    page = text(response)
    assert 'id="gw-job-count">1<' in page and 'id="gw-queue-count">1<' in page
    assert "would run twice" in page
    assert detail(mixed["running"].id) in page
    assert "<li>mail " in page
    running = stored(admin_world, mixed["running"].id)
    assert running is not None and running.locked_by == "worker-a"  # a GET changes nothing


def test_confirming_the_unlock_releases_the_workers_jobs_and_queues(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    response = admin_world.client("change").post(
        UNLOCK, {"worker_id": "worker-a", "confirm": "yes"}, follow=True
    )
    assert response.redirect_chain == [(OVERVIEW, 302)]
    assert messages(response) == ["Worker 'worker-a' unlocked: 1 job and 1 queue released"]
    after = stored(admin_world, mixed["running"].id)
    assert after is not None and after.locked_by is None and after.state is JobState.READY
    assert admin_world.utils.locked_workers() == []
    assert "No worker holds a lock." in text(response)


def test_an_unlock_without_confirmation_or_of_an_unknown_worker_changes_nothing(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    client = admin_world.client("change")
    unconfirmed = client.post(UNLOCK, {"worker_id": "worker-a"}, follow=True)
    assert messages(unconfirmed) == ["Confirm: unlocking was not confirmed"]
    unknown = client.post(UNLOCK, {"worker_id": "nobody", "confirm": "yes"}, follow=True)
    assert messages(unknown) == ["Worker 'nobody' holds no locks: nothing was unlocked"]
    page = client.get(UNLOCK, {"worker_id": "nobody"}, follow=True)
    assert messages(page) == ["Worker 'nobody' holds no locks"]
    missing = client.get(UNLOCK, follow=True)
    assert messages(missing) == ["Worker_id: give the id of the worker to unlock"]
    assert [w.worker_id for w in admin_world.utils.locked_workers()] == ["worker-a"]


def test_each_change_is_recorded_in_the_admins_history(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    from django.contrib.admin.models import LogEntry  # type: ignore[import-untyped]
    from django.test import Client

    user = admin_world.user("change")
    client = Client()
    client.force_login(user)
    failed, running = mixed["failed"], mixed["running"]
    client.post(
        JOBS,
        {"action": "run_now", "reset_attempts": "on", "job_id": [str(failed.id), str(running.id)]},
    )
    client.post(JOBS, {"action": "remove", "job_key": "welcome-ada"})
    client.post(JOBS, {"action": "complete", "job_id": "987654"})  # nothing done, nothing kept
    client.post(UNLOCK, {"worker_id": "worker-a", "confirm": "yes"})
    entries = LogEntry.objects.filter(user=user).order_by("id")
    assert [(e.content_type.model, e.object_id, e.get_change_message()) for e in entries] == [
        ("job", str(failed.id), "Run now, attempts reset"),
        ("job", str(mixed["ready"].id), "Removed by key 'welcome-ada'"),
        ("worker", "worker-a", "Unlocked: 1 job and 1 queue released"),
    ]
    index = text(client.get("/admin/"))
    assert f'href="{detail(failed.id)}"' in index  # "Recent actions" links to the job


# -- the app's models and migrations ---------------------------------------------------------


def test_the_pages_never_query_the_models_through_the_orm(
    admin_world: AdminWorld, mixed: dict[str, Job]
) -> None:
    from django.db import connection  # type: ignore[import-untyped]
    from django.test.utils import CaptureQueriesContext  # type: ignore[import-untyped]

    client = admin_world.client("change")
    with CaptureQueriesContext(connection) as queries:
        for url in ("/admin/", "/admin/graphile_worker/", JOBS, detail(mixed["ready"].id)):
            assert client.get(url).status_code == 200
        client.get(OVERVIEW)
        client.get(UNLOCK, {"worker_id": "worker-a"})
        client.post(JOBS, {"action": "complete", "job_id": [str(mixed["ready"].id)]})
    statements = [query["sql"] for query in queries.captured_queries]
    assert not [s for s in statements if "graphile_worker_utils_admin_has_no_table" in s]


def test_migrate_created_no_table_and_the_permissions(admin_world: AdminWorld) -> None:
    from django.contrib.auth.models import Permission  # type: ignore[import-untyped]

    tables = admin_world.conn.execute(
        "select table_schema, table_name from information_schema.tables"
        " where table_name like 'graphile_worker%%'"
    ).fetchall()
    assert tables == []
    codenames = set(
        Permission.objects.filter(content_type__app_label="graphile_worker").values_list(
            "codename", flat=True
        )
    )
    assert codenames == {"view_job", "change_job", "view_worker", "change_worker"}


def test_makemigrations_finds_nothing_to_do(admin_world: AdminWorld) -> None:
    from django.core.management import call_command  # type: ignore[import-untyped]

    # --check exits non-zero when a model has changes without a migration.
    call_command("makemigrations", "graphile_worker", check=True, dry_run=True, verbosity=0)
