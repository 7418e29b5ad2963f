"""Before-schedule hooks and trace propagation (after the Rust crate's ``WorkerUtils``).

A hook is a callable ``hook(identifier, payload, spec)`` that returns one of
:class:`Continue` (with the payload to go on with, possibly a new one), :class:`Skip` or
:class:`Fail`. Hooks run in order for every job of every enqueue call, before any SQL; one
``Skip`` or ``Fail`` aborts the whole call (``JobScheduleSkipped`` / ``JobScheduleFailed``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import attrs

from ._errors import HookError, JobScheduleFailed, JobScheduleSkipped
from ._public import public
from ._types import JobSpec


@public
@attrs.frozen
class Continue:
    """Go on scheduling the job with ``payload`` (the same one, or a replacement)."""

    payload: Any


@public
@attrs.frozen
class Skip:
    """Do not schedule the job; the enqueue call raises :class:`JobScheduleSkipped`."""

    reason: str = "skipped by a before-schedule hook"


@public
@attrs.frozen
class Fail:
    """Refuse the job; the enqueue call raises :class:`JobScheduleFailed` with ``message``."""

    message: str


HookResult = Continue | Skip | Fail
BeforeScheduleHook = Callable[[str, Any, JobSpec], HookResult]


def run_hooks(
    hooks: Sequence[BeforeScheduleHook], identifier: str, payload: Any, spec: JobSpec
) -> Any:
    """Run ``hooks`` in order on one job; return the payload to schedule."""
    for hook in hooks:
        result = hook(identifier, payload, spec)
        if isinstance(result, Continue):
            payload = result.payload
        elif isinstance(result, Skip):
            raise JobScheduleSkipped(f"job {identifier!r}: {result.reason}")
        elif isinstance(result, Fail):
            raise JobScheduleFailed(f"job {identifier!r}: {result.message}")
        else:
            raise HookError(
                f"before-schedule hook {_hook_name(hook)} returned {type(result).__name__} for"
                f" job {identifier!r}; expected Continue, Skip or Fail"
            )
    return payload


def _hook_name(hook: object) -> str:
    name = getattr(hook, "__qualname__", None)
    module = getattr(hook, "__module__", None)
    return f"{module}.{name}" if name and module else repr(hook)


_tracing: Any = None  # the opentelemetry.trace module, False when it is not installed


def _opentelemetry() -> Any:
    global _tracing
    if _tracing is None:
        try:
            from opentelemetry import trace
        except ImportError:
            _tracing = False
        else:
            _tracing = trace
    return _tracing


def current_trace() -> dict[str, Any] | None:
    """The ``_trace`` value for a payload, or None when no OpenTelemetry span is recording.

    The shape is the Rust crate's: ``{"flags": int, "trace_id": 32 hex, "span_id": 16 hex}``;
    it is the caller's span, the one current when the enqueue call is made.
    """
    trace = _opentelemetry()
    if trace is False:
        return None
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return {
        "flags": int(context.trace_flags),
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


def operation_span(
    operation: str,
    schema: str,
    *,
    enqueue: bool,
    identifier: str | None = None,
    count: int | None = None,
) -> AbstractContextManager[Any]:
    """A span around one operation, opened only while the caller is tracing (its current span
    is recording), from the global tracer provider: ``messaging.system = "graphile-worker"``,
    the operation's name, the schema, and for an enqueue the task identifier (a single job)
    or the batch size. Enqueues are PRODUCER spans, maintenance CLIENT spans."""
    trace = _opentelemetry()
    if trace is False or not trace.get_current_span().is_recording():
        return nullcontext()
    attributes: dict[str, Any] = {
        "messaging.system": "graphile-worker",
        "messaging.operation.name": operation,
        "db.namespace": schema,
    }
    if enqueue:
        attributes["messaging.operation.type"] = "send"
    if identifier is not None:
        attributes["messaging.destination.name"] = identifier
    if count is not None:
        attributes["messaging.batch.message_count"] = count
    span: AbstractContextManager[Any] = trace.get_tracer(
        "graphile_worker_utils"
    ).start_as_current_span(
        f"{operation} {identifier}" if identifier else operation,
        kind=trace.SpanKind.PRODUCER if enqueue else trace.SpanKind.CLIENT,
        attributes=attributes,
    )
    return span


def with_trace(payload: Any, trace: dict[str, Any] | None) -> Any:
    """A copy of a dict payload with ``_trace`` added; any other payload unchanged."""
    if trace is None or not isinstance(payload, dict) or "_trace" in payload:
        return payload
    return {**payload, "_trace": trace}
