"""Trace propagation: a recording OpenTelemetry span's context rides along as ``_trace``.

The global tracer provider can be set only once per process, so these tests never set it:
they take tracers from their own provider objects. ``start_as_current_span`` puts the span in
the current context, which is all the library reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from psycopg import sql

from graphile_worker_utils import Continue, HookResult, JobSpec, RawJobSpec, WorkerUtils


@attrs.frozen
class SendEmail:
    IDENTIFIER: ClassVar[str] = "send_email"
    to: str


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    """A tracer whose spans are recorded (and sampled)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    yield provider.get_tracer("tests.test_tracing")
    provider.shutdown()


def stored_payloads(conn: psycopg.Connection[Any], schema: str) -> list[Any]:
    query = sql.SQL("select payload from {}._private_jobs order by id").format(
        sql.Identifier(schema)
    )
    return [row[0] for row in conn.execute(query)]


def expected_trace(span: trace.Span) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "flags": int(context.trace_flags),
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


def test_a_dict_payload_enqueued_inside_a_recording_span_stores_the_spans_context(
    utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("signup") as span:
        utils.add_raw_job("send_email", {"to": "ada"})
    [payload] = stored_payloads(conn, schema)
    assert payload == {"to": "ada", "_trace": expected_trace(span)}


def test_the_stored_trace_has_the_rust_crates_shape(
    utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("signup"):
        utils.add_raw_job("send_email", {"to": "ada"})
    [payload] = stored_payloads(conn, schema)
    stored_trace = payload["_trace"]
    assert set(stored_trace) == {"flags", "trace_id", "span_id"}
    assert type(stored_trace["flags"]) is int
    assert stored_trace["flags"] & 0x01 == 0x01  # W3C "sampled" (newer SDKs also set 0x02)
    assert re.fullmatch(r"[0-9a-f]{32}", stored_trace["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", stored_trace["span_id"])


def test_the_returned_job_carries_the_trace_it_stored(
    utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("signup"):
        job = utils.add_raw_job("send_email", {"to": "ada"})
    assert stored_payloads(conn, schema) == [job.payload]
    assert "_trace" in job.payload


def test_every_dict_payload_of_a_batch_carries_the_trace(
    utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("import") as span:
        utils.add_raw_jobs([RawJobSpec("a", {"n": 1}), RawJobSpec("b", {"n": 2})])
    payloads = sorted(stored_payloads(conn, schema), key=lambda payload: payload["n"])
    assert payloads == [
        {"n": 1, "_trace": expected_trace(span)},
        {"n": 2, "_trace": expected_trace(span)},
    ]


def test_a_typed_task_enqueued_inside_a_recording_span_carries_the_trace(
    utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("signup") as span:
        utils.add_job(SendEmail(to="ada"))
    assert stored_payloads(conn, schema) == [{"to": "ada", "_trace": expected_trace(span)}]


def test_no_trace_is_added_outside_any_span(
    utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str
) -> None:
    assert not trace.get_current_span().get_span_context().is_valid
    utils.add_raw_job("send_email", {"to": "ada"})
    assert stored_payloads(conn, schema) == [{"to": "ada"}]


def test_no_trace_is_added_inside_a_span_that_is_not_recording(
    utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str
) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    try:
        with provider.get_tracer("tests.test_tracing").start_as_current_span("dropped") as span:
            # A valid context that is not recorded: the library must look at is_recording().
            assert span.get_span_context().is_valid
            assert not span.is_recording()
            utils.add_raw_job("send_email", {"to": "ada"})
    finally:
        provider.shutdown()
    assert stored_payloads(conn, schema) == [{"to": "ada"}]


@pytest.mark.parametrize(
    "payload", [["to", "ada"], "ada", 42, True], ids=["list", "str", "int", "bool"]
)
def test_a_payload_that_is_not_a_dict_gets_no_trace(
    utils: WorkerUtils,
    conn: psycopg.Connection[Any],
    schema: str,
    tracer: trace.Tracer,
    payload: Any,
) -> None:
    with tracer.start_as_current_span("signup"):
        utils.add_raw_job("send_email", payload)
    assert stored_payloads(conn, schema) == [payload]


def test_the_callers_dict_is_not_mutated(utils: WorkerUtils, tracer: trace.Tracer) -> None:
    payload = {"to": "ada", "nested": {"k": "v"}}
    with tracer.start_as_current_span("signup"):
        utils.add_raw_job("send_email", payload)
        utils.add_raw_jobs([RawJobSpec("send_email", payload)])
    assert payload == {"to": "ada", "nested": {"k": "v"}}


def test_the_trace_is_added_before_the_hooks_run(
    conn: psycopg.Connection[Any], schema: str, tracer: trace.Tracer
) -> None:
    seen: list[Any] = []

    def record(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        seen.append(payload)
        return Continue(payload)

    utils = WorkerUtils(conn, schema=schema, hooks=[record])
    utils.migrate()
    with tracer.start_as_current_span("signup") as span:
        utils.add_raw_job("send_email", {"to": "ada"})
    assert seen == [{"to": "ada", "_trace": expected_trace(span)}]


def test_a_hook_can_remove_the_trace(
    conn: psycopg.Connection[Any], schema: str, tracer: trace.Tracer
) -> None:
    def untraced(identifier: str, payload: Any, spec: JobSpec) -> HookResult:
        return Continue({key: value for key, value in payload.items() if key != "_trace"})

    utils = WorkerUtils(conn, schema=schema, hooks=[untraced])
    utils.migrate()
    with tracer.start_as_current_span("signup"):
        utils.add_raw_job("send_email", {"to": "ada"})
    assert stored_payloads(conn, schema) == [{"to": "ada"}]


def test_an_existing_trace_key_is_left_alone(
    utils: WorkerUtils, conn: psycopg.Connection[Any], schema: str, tracer: trace.Tracer
) -> None:
    theirs = {"flags": 0, "trace_id": "0" * 31 + "1", "span_id": "0" * 15 + "2"}
    with tracer.start_as_current_span("signup"):
        utils.add_raw_job("send_email", {"to": "ada", "_trace": theirs})
    assert stored_payloads(conn, schema) == [{"to": "ada", "_trace": theirs}]
