"""Before-schedule hooks and trace propagation (after the Rust crate's ``WorkerUtils``).

A hook is a callable ``hook(identifier, payload, spec)`` that returns one of
:class:`Continue` (with the payload to go on with, possibly a new one), :class:`Skip` or
:class:`Fail`. Hooks run in order for every job of every enqueue call, before any SQL; one
``Skip`` or ``Fail`` aborts the whole call (``JobScheduleSkipped`` / ``JobScheduleFailed``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ._errors import JobScheduleFailed, JobScheduleSkipped
from ._types import JobSpec


@attrs.frozen
class Continue:
    """Go on scheduling the job with ``payload`` (the same one, or a replacement)."""

    payload: Any


@attrs.frozen
class Skip:
    """Do not schedule the job; the enqueue call raises :class:`JobScheduleSkipped`."""

    reason: str = "skipped by a before-schedule hook"


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
            raise TypeError(
                f"before-schedule hook {hook!r} returned {type(result).__name__};"
                " expected Continue, Skip or Fail"
            )
    return payload


_tracing: Any = None  # the opentelemetry.trace module, False when it is not installed


def current_trace() -> dict[str, Any] | None:
    """The ``_trace`` value for a payload, or None when no OpenTelemetry span is recording.

    The shape is the Rust crate's: ``{"flags": int, "trace_id": 32 hex, "span_id": 16 hex}``.
    """
    global _tracing
    if _tracing is None:
        try:
            from opentelemetry import trace
        except ImportError:
            _tracing = False
        else:
            _tracing = trace
    if _tracing is False:
        return None
    span = _tracing.get_current_span()
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


def with_trace(payload: Any, trace: dict[str, Any] | None) -> Any:
    """A copy of a dict payload with ``_trace`` added; any other payload unchanged."""
    if trace is None or not isinstance(payload, dict) or "_trace" in payload:
        return payload
    return {**payload, "_trace": trace}
