"""The Django app behind ``"graphile_worker_utils.contrib.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]


class GraphileWorkerConfig(AppConfig):  # type: ignore[misc]
    """graphile-worker's jobs, queues and workers in the Django admin.

    The app's label is ``graphile_worker``: its permissions are ``graphile_worker.view_job``,
    ``graphile_worker.change_job``, ``graphile_worker.view_worker`` and
    ``graphile_worker.change_worker``, and its admin pages live under
    ``admin/graphile_worker/``.
    """

    name = "graphile_worker_utils.contrib.django"
    label = "graphile_worker"
    verbose_name = "Graphile Worker"
    default_auto_field = "django.db.models.AutoField"
