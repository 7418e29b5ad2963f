"""The jobs list and the job detail page, and the actions posted from them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.http import HttpResponseRedirect  # type: ignore[import-untyped]
from django.urls import reverse  # type: ignore[import-untyped]

from ..._errors import GraphileWorkerError
from ..._types import Job, JobState
from . import _actions, _params
from ._pages import (
    STATE_LABELS,
    act,
    acting,
    age,
    problem,
    reader,
    record,
    render,
    require,
    short_error,
    tell,
)

#: The actions on selected jobs (list) or one job (detail), as the select shows them.
JOB_ACTIONS = {
    "run_now": "Run now",
    "permanently_fail": "Mark permanently failed",
    "complete": "Complete (delete as succeeded)",
}


def _perform(model_admin: Any, request: Any, job_ids: list[int]) -> bool:
    """The posted ``action`` on ``job_ids``, in one transaction; told as a message."""
    params = dict(request.POST.lists())
    name = request.POST.get("action", "")

    def action() -> _actions.Outcome:
        if name not in JOB_ACTIONS:
            choices = ", ".join(JOB_ACTIONS)
            raise _params.BadParameter(f"action: {name[:40]!r} is not an action (one of {choices})")
        reason = _params.reason(params) if name == "permanently_fail" else None
        with acting() as utils:
            if name == "run_now":
                reset = _params.checked(params, "reset_attempts")
                now = dt.datetime.now(dt.timezone.utc)
                outcome = _actions.run_now(utils, job_ids, reset_attempts=reset, now=now)
            elif name == "permanently_fail":
                outcome = _actions.permanently_fail(utils, job_ids, reason)
            else:
                outcome = _actions.complete(utils, job_ids)
            record(model_admin, request, outcome)
            return outcome

    return act(request, action)


def _remove(model_admin: Any, request: Any) -> bool:
    def action() -> _actions.Outcome:
        key = _params.job_key(dict(request.POST.lists()))
        with acting() as utils:
            outcome = _actions.remove(utils, key)
            record(model_admin, request, outcome)
            return outcome

    return act(request, action)


def _row(job: Job, now: dt.datetime) -> dict[str, Any]:
    state = job.state
    return {
        "job": job,
        "state": "" if state is None else state.value,
        "state_label": "" if state is None else STATE_LABELS[state],
        "run_at_age": age(job.run_at, now),
        "short_error": short_error(job.last_error),
    }


def _search(query: _params.JobQuery) -> list[Job]:
    """The jobs whose id or key is the search, within the filters."""
    utils = reader()
    found: dict[int, Job] = {}
    search_id = query.search_id
    if search_id is not None:
        job = utils.get_job(search_id)
        if job is not None:
            found[job.id] = job
    assert query.search is not None
    job = utils.get_job_by_key(query.search)
    if job is not None:
        found[job.id] = job
    return [
        job
        for _, job in sorted(found.items())
        if (not query.states or job.state in query.states)
        and (not query.tasks or job.task_identifier in query.tasks)
        and (not query.queues or job.queue_name in query.queues)
    ]


def _list_context(query: _params.JobQuery) -> dict[str, Any]:
    jobs = (
        _search(query) if query.search is not None else reader().list_jobs(**query.list_arguments())
    )
    now = dt.datetime.now(dt.timezone.utc)
    full_page = query.search is None and len(jobs) == query.limit
    return {
        "rows": [_row(job, now) for job in jobs],
        "next_page": query.params(after_id=jobs[-1].id) if full_page else None,
        "first_page": query.params(after_id=None) if query.after_id is not None else None,
    }


def _state_links(query: _params.JobQuery) -> list[dict[str, Any]]:
    links = [
        {
            "label": "All",
            "url": query.params(states=(), after_id=None) or "?",
            "selected": not query.states,
        }
    ]
    for state, label in STATE_LABELS.items():
        links.append(
            {
                "label": label,
                "url": query.params(states=(state,), after_id=None),
                "selected": query.states == (state,),
            }
        )
    return links


def job_list(model_admin: Any, request: Any) -> Any:
    """The jobs list (GET) and the actions on the jobs ticked in it (POST)."""
    require(model_admin.has_view_permission(request))
    if request.method == "POST":
        require(model_admin.has_change_permission(request))
        if request.POST.get("action") == "remove":
            _remove(model_admin, request)
        else:
            try:
                ids = _params.selected_ids(dict(request.POST.lists()))
            except _params.BadParameter as error:
                tell(request, _actions.Outcome("error", str(error)))
            else:
                _perform(model_admin, request, ids)
        return HttpResponseRedirect(request.get_full_path())
    context: dict[str, Any] = {"title": "Jobs", "actions": JOB_ACTIONS, "error": None}
    status = 200
    try:
        query = _params.job_query(dict(request.GET.lists()))
    except _params.BadParameter as error:
        query = _params.JobQuery()
        context["error"], status = str(error), 400
    else:
        try:
            context.update(_list_context(query))
        except GraphileWorkerError as error:
            context["error"], status = problem(error), 503
    context.update(query=query, state_links=_state_links(query))
    return render(model_admin, request, "job_list.html", context, status)


def _fields(job: Job, now: dt.datetime) -> list[tuple[str, Any, str]]:
    """Every field of ``job``: label, value, a note (ages)."""
    return [
        ("Task", job.task_identifier, f"task id {job.task_id}"),
        (
            "Queue",
            job.queue_name,
            "" if job.job_queue_id is None else f"queue id {job.job_queue_id}",
        ),
        ("State", "" if job.state is None else STATE_LABELS[job.state], ""),
        ("Attempts", f"{job.attempts} of {job.max_attempts}", ""),
        ("Priority", job.priority, "lower runs first"),
        ("Run at", job.run_at, age(job.run_at, now)),
        ("Key", job.key, ""),
        ("Flags", ", ".join(job.flags) if job.flags else None, ""),
        ("Locked by", job.locked_by, ""),
        ("Locked at", job.locked_at, age(job.locked_at, now)),
        ("Created at", job.created_at, age(job.created_at, now)),
        ("Updated at", job.updated_at, age(job.updated_at, now)),
        ("Revision", job.revision, "times the job was changed"),
    ]


def _job_id_or_redirect(request: Any, object_id: str) -> int | None:
    try:
        return _params.parse_id("job", object_id)
    except _params.BadParameter as error:
        tell(request, _actions.Outcome("error", str(error)))
        return None


def job_detail(model_admin: Any, request: Any, object_id: str) -> Any:
    """One job with every field (GET), and the actions on it (POST)."""
    require(model_admin.has_view_permission(request))
    list_url = reverse(
        "admin:graphile_worker_job_changelist", current_app=model_admin.admin_site.name
    )
    job_id = _job_id_or_redirect(request, object_id)
    if job_id is None:
        return HttpResponseRedirect(list_url)
    if request.method == "POST":
        require(model_admin.has_change_permission(request))
        name = request.POST.get("action")
        if name == "remove":
            done = _remove(model_admin, request)
        else:
            done = _perform(model_admin, request, [job_id])
        gone = done and name in ("remove", "complete")
        return HttpResponseRedirect(list_url if gone else request.get_full_path())
    try:
        job = reader().get_job(job_id)
    except GraphileWorkerError as error:
        tell(request, _actions.Outcome("error", problem(error)))
        return HttpResponseRedirect(list_url)
    if job is None:
        message = f"Job {job_id} does not exist: it may have completed or been removed"
        tell(request, _actions.Outcome("warning", message))
        return HttpResponseRedirect(list_url)
    now = dt.datetime.now(dt.timezone.utc)
    context = {
        "title": f"Job {job.id}",
        "job": job,
        "fields": _fields(job, now),
        "payload": json.dumps(job.payload, indent=2, ensure_ascii=False),
        "actions": JOB_ACTIONS,
        "list_url": list_url,
        "is_running": job.state is JobState.RUNNING,
    }
    return render(model_admin, request, "job_detail.html", context)
