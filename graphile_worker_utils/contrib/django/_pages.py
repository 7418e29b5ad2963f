"""What the admin pages share: the library on Django's connection, permissions, messages,
rendering, and how errors become messages instead of server errors."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.contrib import messages  # type: ignore[import-untyped]
from django.core.exceptions import PermissionDenied  # type: ignore[import-untyped]
from django.db import transaction  # type: ignore[import-untyped]
from django.template.response import TemplateResponse  # type: ignore[import-untyped]

from ..._client import WorkerUtils
from ..._errors import GraphileWorkerError, SchemaMissingError
from ..._types import JobState
from . import worker_utils
from ._actions import Outcome
from ._params import BadParameter

#: The setting naming the ``DATABASES`` alias the admin reads and acts through.
DATABASE_SETTING = "GRAPHILE_WORKER_DATABASE"

_LEVELS = {"success": messages.SUCCESS, "warning": messages.WARNING, "error": messages.ERROR}

#: How each state reads on the pages.
STATE_LABELS = {
    JobState.READY: "ready",
    JobState.SCHEDULED: "scheduled",
    JobState.RUNNING: "running",
    JobState.RETRYING: "retrying",
    JobState.PERMANENTLY_FAILED: "permanently failed",
}


def database_alias() -> str:
    """The ``DATABASES`` alias of graphile-worker's database (default ``"default"``)."""
    alias: str = getattr(settings, DATABASE_SETTING, "default")
    return alias


def reader() -> WorkerUtils:
    """The library on Django's connection, for reads (they write nothing)."""
    return worker_utils(database_alias())


@contextlib.contextmanager
def acting() -> Iterator[WorkerUtils]:
    """The library on Django's connection inside ``transaction.atomic()``: an action commits
    whole or not at all."""
    alias = database_alias()
    with transaction.atomic(using=alias):
        yield worker_utils(alias)


def record(model_admin: Any, request: Any, outcome: Outcome) -> None:
    """Add what ``outcome`` changed to the admin's history (Django's ``LogEntry``, shown as
    "Recent actions"), one entry per job or worker, in the action's transaction."""
    model = model_admin.model
    for key in outcome.changed:
        model_admin.log_change(request, model(pk=key), outcome.history)


def require(allowed: bool) -> None:
    """Refuse the request (403) unless ``allowed``."""
    if not allowed:
        raise PermissionDenied


def tell(request: Any, outcome: Outcome) -> None:
    """Show ``outcome`` on the next page."""
    messages.add_message(request, _LEVELS[outcome.level], outcome.text)


def act(request: Any, action: Callable[[], Outcome]) -> bool:
    """Run ``action`` and tell its outcome; a bad parameter or a library error is told as an
    error instead (the transaction rolled back, nothing changed). Whether it ran."""
    try:
        tell(request, action())
    except BadParameter as error:
        tell(request, Outcome("error", str(error)))
        return False
    except GraphileWorkerError as error:
        tell(request, Outcome("error", f"Nothing was changed: {problem(error)}"))
        return False
    return True


def problem(error: GraphileWorkerError) -> str:
    """A library error in words for the operator."""
    # The first line: PostgreSQL's own lines after it point into the SQL text.
    first = str(error).strip().split("\n", 1)[0]
    if isinstance(error, SchemaMissingError):
        return (
            f"{first} (the GRAPHILE_WORKER_SCHEMA setting names the schema; run graphile-worker"
            " or `graphile-worker-utils migrate` to install it)"
        )
    return first


def render(
    model_admin: Any, request: Any, template: str, context: dict[str, Any], status: int = 200
) -> TemplateResponse:
    """``template`` in the admin's frame (site header, user tools, breadcrumbs' options)."""
    full = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "app_label": model_admin.opts.app_label,
        "has_view_permission": model_admin.has_view_permission(request),
        "has_change_permission": model_admin.has_change_permission(request),
        "state_labels": {state.value: label for state, label in STATE_LABELS.items()},
        **context,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, f"admin/graphile_worker/{template}", full, status=status)


def age(moment: dt.datetime | None, now: dt.datetime) -> str:
    """How long ago ``moment`` was (or how far ahead), in the largest fitting unit."""
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    text = duration(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``5 h``, ``2 d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def short_error(text: str | None, limit: int = 80) -> str:
    """The first line of ``text``, cut at ``limit`` characters."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
