"""Two unmanaged models that exist only to carry admin pages and permissions.

The Django admin hangs its pages and its view/change permissions on models, so the app has
two: ``Job`` (the jobs list and detail, and the actions on jobs) and ``Worker`` (the queues
and workers overview, and unlocking a worker). They are ``managed = False`` and point at no
table: Django's migrations never create, alter or drop anything for them, and the admin
pages never query them through the ORM. Every read and write goes through
:class:`~graphile_worker_utils.WorkerUtils` on Django's connection, in the schema named by
the ``GRAPHILE_WORKER_SCHEMA`` setting.
"""

from __future__ import annotations

from django.db import models  # type: ignore[import-untyped]

# A table name that exists nowhere: a query through the ORM by mistake fails loudly instead
# of reading (or writing) graphile-worker's private tables behind its back.
_NO_TABLE = "graphile_worker_utils_admin_has_no_table"


class Job(models.Model):  # type: ignore[misc]
    """A graphile-worker job (admin pages and permissions only; never queried)."""

    id = models.BigIntegerField(primary_key=True)

    class Meta:
        managed = False
        db_table = _NO_TABLE
        default_permissions = ("view", "change")
        verbose_name = "job"
        verbose_name_plural = "jobs"

    def __str__(self) -> str:
        return f"job {self.pk}"


class Worker(models.Model):  # type: ignore[misc]
    """A graphile-worker worker holding locks (admin pages and permissions only)."""

    worker_id = models.TextField(primary_key=True)

    class Meta:
        managed = False
        db_table = _NO_TABLE
        default_permissions = ("view", "change")
        verbose_name = "queues & workers"
        verbose_name_plural = "queues & workers"

    def __str__(self) -> str:
        return f"worker {self.pk}"
