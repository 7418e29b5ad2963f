"""The queues & workers overview, and unlocking a worker through a confirmation page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpResponseRedirect  # type: ignore[import-untyped]
from django.urls import reverse  # type: ignore[import-untyped]

from ..._client import WorkerUtils
from ..._errors import GraphileWorkerError
from ..._reads import LockedWorker
from ..._status import StatusGroup
from ..._types import JobState
from . import _actions, _params
from ._pages import (
    STATE_LABELS,
    act,
    acting,
    age,
    duration,
    problem,
    reader,
    record,
    render,
    require,
    tell,
)

#: Jobs of a worker the confirmation page lists (it says how many more there are).
SHOWN_JOBS = 100


def _jobs_url(site: str, group: StatusGroup, state: JobState | None = None) -> str:
    url: str = reverse("admin:graphile_worker_job_changelist", current_app=site)
    query = _params.JobQuery(
        tasks=(group.task_identifier,),
        queues=() if group.queue_name is None else (group.queue_name,),
        states=() if state is None else (state,),
    )
    return url + query.params()


def _group_row(site: str, group: StatusGroup, now: dt.datetime) -> dict[str, Any]:
    ready_age = group.oldest_ready_age_seconds
    return {
        "group": group,
        "counts": [
            {"count": group.counts[state], "url": _jobs_url(site, group, state)}
            for state in STATE_LABELS
        ],
        "total": group.counts.total,
        "total_url": _jobs_url(site, group),
        "oldest_ready": "" if ready_age is None else duration(ready_age),
        "queue_lock_age": age(group.queue_locked_at, now),
    }


def _overview_context(site: str) -> dict[str, Any]:
    utils = reader()
    report = utils.status()
    workers = utils.locked_workers()
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "report": report,
        "groups": [_group_row(site, group, now) for group in report.groups],
        "totals": [report.totals[state] for state in STATE_LABELS],
        "locked_queues": [
            {"queue": queue, "age": age(queue.locked_at, now)} for queue in report.locked_queues
        ],
        "workers": [
            {"worker": worker, "age": age(worker.oldest_locked_at, now)} for worker in workers
        ],
    }


def overview(model_admin: Any, request: Any) -> Any:
    """Counts per task and queue in each state, locked queues, and the workers holding locks."""
    require(model_admin.has_view_permission(request))
    context: dict[str, Any] = {"title": "Queues & workers", "error": None}
    status = 200
    try:
        context.update(_overview_context(model_admin.admin_site.name))
    except GraphileWorkerError as error:
        context["error"], status = problem(error), 503
    return render(model_admin, request, "overview.html", context, status)


def _holdings(utils: WorkerUtils, worker_id: str) -> LockedWorker | None:
    """The worker's entry of ``locked_workers()``, None when it holds nothing."""
    return next((w for w in utils.locked_workers() if w.worker_id == worker_id), None)


def _confirm_context(worker_id: str) -> dict[str, Any] | None:
    utils = reader()
    worker = _holdings(utils, worker_id)
    if worker is None:
        return None
    now = dt.datetime.now(dt.timezone.utc)
    jobs = utils.list_jobs(locked_by=worker_id, limit=SHOWN_JOBS)
    queues = [q for q in utils.status().locked_queues if q.locked_by == worker_id]
    return {
        "worker": worker,
        "age": age(worker.oldest_locked_at, now),
        "jobs": [{"job": job, "age": age(job.locked_at, now)} for job in jobs],
        "more_jobs": max(0, worker.job_count - len(jobs)),
        "queues": [{"queue": queue, "age": age(queue.locked_at, now)} for queue in queues],
    }


def _unlock(model_admin: Any, request: Any, worker_id: str) -> None:
    def action() -> _actions.Outcome:
        with acting() as utils:
            worker = _holdings(utils, worker_id)
            if worker is None:
                return _actions.Outcome(
                    "warning", f"Worker {worker_id!r} holds no locks: nothing was unlocked"
                )
            outcome = _actions.unlock(
                utils, worker_id, jobs=worker.job_count, queues=worker.queue_count
            )
            record(model_admin, request, outcome)
            return outcome

    act(request, action)


def unlock(model_admin: Any, request: Any) -> Any:
    """GET: what the worker holds and the warning; POST (confirmed): release it all."""
    require(model_admin.has_change_permission(request))
    overview_url = reverse(
        "admin:graphile_worker_worker_changelist", current_app=model_admin.admin_site.name
    )
    source = request.POST if request.method == "POST" else request.GET
    try:
        worker_id = _params.worker_id(dict(source.lists()))
    except _params.BadParameter as error:
        tell(request, _actions.Outcome("error", str(error)))
        return HttpResponseRedirect(overview_url)
    if request.method == "POST":
        if request.POST.get("confirm") != "yes":
            tell(request, _actions.Outcome("error", "confirm: unlocking was not confirmed"))
        else:
            _unlock(model_admin, request, worker_id)
        return HttpResponseRedirect(overview_url)
    try:
        context = _confirm_context(worker_id)
    except GraphileWorkerError as error:
        tell(request, _actions.Outcome("error", problem(error)))
        return HttpResponseRedirect(overview_url)
    if context is None:
        tell(request, _actions.Outcome("warning", f"Worker {worker_id!r} holds no locks"))
        return HttpResponseRedirect(overview_url)
    context.update(title=f"Unlock worker {worker_id}?", overview_url=overview_url)
    return render(model_admin, request, "unlock_confirm.html", context)
