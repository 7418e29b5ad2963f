"""Maintenance operations on jobs: arguments checked, one statement each."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._connector import Connector, wrap_exceptions
from ._cursors import cursor as _cursor
from ._enqueue import check_params
from ._errors import InvalidJobSpec
from ._hooks import operation_span
from ._rows import Row
from ._templates import catalog
from ._types import BIGINT_MAX, BIGINT_MIN, RescheduleOptions, check_int, check_items, check_text

# Statement parameters named otherwise in the API, for messages.
_ARGUMENTS = {"error_message": "reason"}


def fetch(connector: Connector, operation: str, params: dict[str, Any]) -> list[Row]:
    """Run ``operation``'s single statement with ``params``; its rows."""
    query = catalog.render(operation, connector.schema)
    with (
        operation_span(operation, connector.schema, enqueue=False),
        connector.connection(single_statement=True) as (conn, _),
    ):
        check_params(conn, ((_ARGUMENTS.get(key, key), value) for key, value in params.items()))
        with wrap_exceptions(operation, connector.schema), _cursor(conn) as cur:
            cur.execute(query, params, binary=True)
            return cur.fetchall()


def job_ids(value: Iterable[int]) -> list[int]:
    """``job_ids``, checked: bigints."""
    return [
        check_int(f"job_ids[{index}]", job_id, BIGINT_MIN, BIGINT_MAX)
        for index, job_id in enumerate(check_items(value, "job_ids", "int"))
    ]


def worker_ids(value: Iterable[str]) -> list[str]:
    """``worker_ids``, checked: non-empty text."""
    return [
        check_text(f"worker_ids[{index}]", worker_id)
        for index, worker_id in enumerate(check_items(value, "worker_ids", "str"))
    ]


def reschedule_params(ids: Iterable[int], options: object) -> dict[str, Any]:
    """The reschedule_jobs operation's parameters, checked."""
    if options is None:
        options = RescheduleOptions()
    elif not isinstance(options, RescheduleOptions):
        raise InvalidJobSpec(
            f"options: expected RescheduleOptions or None, got {type(options).__name__}"
        )
    return {
        "job_ids": job_ids(ids),
        "run_at": options.run_at,
        "priority": options.priority,
        "attempts": options.attempts,
        "max_attempts": options.max_attempts,
    }
