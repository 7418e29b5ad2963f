"""Django: a :class:`~graphile_worker_utils.WorkerUtils` on a Django database connection.

Jobs enqueued this way join the transaction Django has open on that connection, so they are
committed with the view's own writes, or rolled back with them::

    from django.db import transaction
    from graphile_worker_utils.contrib.django import worker_utils

    def signup(request):
        with transaction.atomic():
            user = User.objects.create(email=request.POST["email"])
            worker_utils().add_raw_job("send_welcome", {"user_id": user.pk})
        # the user and the job exist together, or neither does
        ...

Outside ``atomic()`` (Django's autocommit mode) each enqueue is its own transaction.
Results have the same types as anywhere else: payloads and flags are decoded JSON even though
Django loads ``jsonb`` as text, and datetimes are aware UTC even with ``USE_TZ = False``.

Needs Django >= 4.2 on psycopg 3 (``django.db.backends.postgresql`` with ``psycopg``
installed, not ``psycopg2``). The schema comes from the ``GRAPHILE_WORKER_SCHEMA`` setting
when it is set, else ``"graphile_worker"``.

This package is also a Django app: with ``"graphile_worker_utils.contrib.django"`` in
``INSTALLED_APPS`` (and ``migrate`` run once, which creates permissions, no table), the admin
shows graphile-worker's jobs, queues and workers to staff with the app's permissions, and
lets those with change permission run, fail, complete, remove and unlock (see ``admin.py``).
It reads and acts through :class:`~graphile_worker_utils.WorkerUtils` on the connection
named by the ``GRAPHILE_WORKER_DATABASE`` setting (default ``"default"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from django.conf import settings  # type: ignore[import-untyped]
from django.db import connections  # type: ignore[import-untyped]

from ..._client import WorkerUtils
from ..._hooks import BeforeScheduleHook
from ..._payload import JsonDumps
from .. import DEFAULT_SCHEMA, UnsupportedDatabaseError

__all__ = ["DEFAULT_SCHEMA", "UnsupportedDatabaseError", "worker_utils"]


def worker_utils(
    alias: str = "default",
    *,
    schema: str | None = None,
    use_local_time: bool = False,
    hooks: Sequence[BeforeScheduleHook] = (),
    json_dumps: JsonDumps | None = None,
) -> WorkerUtils:
    """A ``WorkerUtils`` bound to the Django connection ``alias`` of the current thread.

    The connection is opened if it is not yet (``ensure_connection()``). Django keeps one
    connection per thread and may close it between requests (``CONN_MAX_AGE``), so call this
    where you enqueue rather than keeping the result around. The library never commits,
    rolls back or closes Django's connection; ``transaction.atomic()`` decides.

    Example::

        with transaction.atomic():
            order = Order.objects.create(total=42)
            worker_utils().add_raw_job("send_receipt", {"order_id": order.pk})

    Parameters:
        alias: the key of ``settings.DATABASES``.
        schema: graphile-worker's schema; default: the ``GRAPHILE_WORKER_SCHEMA`` setting,
            else ``"graphile_worker"``.
        use_local_time, hooks, json_dumps: as for :class:`WorkerUtils`.

    Raises:
        UnsupportedDatabaseError: the alias is not PostgreSQL, or Django runs it on psycopg2.
    """
    database = connections[alias]
    if database.vendor != "postgresql":
        raise UnsupportedDatabaseError(
            f"Django database {alias!r} uses the {database.vendor!r} backend;"
            " graphile-worker needs PostgreSQL (django.db.backends.postgresql)"
        )
    database.ensure_connection()
    connection = database.connection
    if not isinstance(connection, psycopg.Connection):
        raise UnsupportedDatabaseError(
            f"Django database {alias!r} runs on {type(connection).__module__}."
            f"{type(connection).__qualname__}, not a psycopg 3 connection; install psycopg"
            " (3.x) so that Django >= 4.2 uses it instead of psycopg2"
        )
    if schema is None:
        schema = getattr(settings, "GRAPHILE_WORKER_SCHEMA", DEFAULT_SCHEMA)
    return WorkerUtils(
        connection,
        schema=schema,
        use_local_time=use_local_time,
        hooks=hooks,
        json_dumps=json_dumps,
    )
