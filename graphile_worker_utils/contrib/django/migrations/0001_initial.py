"""The app's two unmanaged models: no table is created, altered or dropped, ever.

Django still needs this migration to know the models, so that ``migrate`` creates their
content types and view/change permissions.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations, models  # type: ignore[import-untyped]


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True

    dependencies: ClassVar[list[tuple[str, str]]] = []

    operations: ClassVar[list[Any]] = [
        migrations.CreateModel(
            name="Job",
            fields=[("id", models.BigIntegerField(primary_key=True, serialize=False))],
            options={
                "verbose_name": "job",
                "verbose_name_plural": "jobs",
                "db_table": "graphile_worker_utils_admin_has_no_table",
                "managed": False,
                "default_permissions": ("view", "change"),
            },
        ),
        migrations.CreateModel(
            name="Worker",
            fields=[("worker_id", models.TextField(primary_key=True, serialize=False))],
            options={
                "verbose_name": "queues & workers",
                "verbose_name_plural": "queues & workers",
                "db_table": "graphile_worker_utils_admin_has_no_table",
                "managed": False,
                "default_permissions": ("view", "change"),
            },
        ),
    ]
