"""graphile-worker's pages in the Django admin, registered on ``django.contrib.admin.site``.

The two ModelAdmins replace every view of the admin's own (they have no add, change form,
delete or history view): their pages read and act through
:class:`~graphile_worker_utils.WorkerUtils` on Django's connection, never through the ORM.
``view`` permission shows the pages; ``change`` permission adds the actions (a view-only
user sees no button and is refused with 403 when posting one).
"""

from __future__ import annotations

from functools import partial, update_wrapper
from typing import Any

from django.contrib import admin  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

from . import _job_pages, _worker_pages
from .models import Job, Worker


class _ReadThroughLibrary(admin.ModelAdmin):  # type: ignore[misc]
    """A ModelAdmin with no add or delete, and a queryset that is never evaluated."""

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: Any) -> Any:
        # The models have no table; nothing here may query them.
        return super().get_queryset(request).none()

    def _view(self, function: Any) -> Any:
        view = partial(function, self)
        return self.admin_site.admin_view(update_wrapper(view, function))


@admin.register(Job)
class JobAdmin(_ReadThroughLibrary):
    """The jobs list (filters, search, keyset pages, actions) and the job detail page."""

    def get_urls(self) -> list[Any]:
        return [
            path("", self._view(_job_pages.job_list), name="graphile_worker_job_changelist"),
            path(
                "<path:object_id>/change/",
                self._view(_job_pages.job_detail),
                name="graphile_worker_job_change",
            ),
        ]


@admin.register(Worker)
class WorkerAdmin(_ReadThroughLibrary):
    """The queues & workers overview, and unlocking a worker after a confirmation."""

    def get_urls(self) -> list[Any]:
        return [
            path("", self._view(_worker_pages.overview), name="graphile_worker_worker_changelist"),
            path("unlock/", self._view(_worker_pages.unlock), name="graphile_worker_worker_unlock"),
        ]
