"""Operation spans: while the caller is tracing, each operation opens its own span."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from tests._helpers import REPO_ROOT

# The global tracer provider can be set once per process, so the scenario runs in its own.
_SCENARIO = textwrap.dedent(
    """
    import json, sys
    import psycopg
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from graphile_worker_utils import CleanupTask, RawJobSpec, WorkerUtils

    dsn, schema = sys.argv[1:3]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("test")
    with psycopg.connect(dsn, autocommit=True) as conn:
        utils = WorkerUtils(conn, schema=schema)
        utils.migrate()  # no span: the caller is not tracing
        utils.add_raw_job("untraced")
        with tracer.start_as_current_span("request") as request:
            job = utils.add_raw_job("send_email", {"to": "ada"})
            utils.add_raw_jobs([RawJobSpec("a"), RawJobSpec("b")])
            utils.complete_jobs([job.id])
            utils.cleanup([CleanupTask.GC_JOB_QUEUES])
    spans = [
        {
            "name": span.name,
            "kind": span.kind.name,
            "parent": span.parent.span_id if span.parent else None,
            "attributes": dict(span.attributes or {}),
        }
        for span in exporter.get_finished_spans()
    ]
    print(json.dumps({"request": request.get_span_context().span_id, "spans": spans}))
    """
)


def run_scenario(pg_dsn: str, schema: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _SCENARIO, pg_dsn, schema],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_each_operation_opens_a_span_under_the_callers_span(pg_dsn: str, schema: str) -> None:
    result = run_scenario(pg_dsn, schema)
    spans = {span["name"]: span for span in result["spans"] if span["name"] != "request"}
    assert sorted(spans) == ["add_job send_email", "add_jobs", "cleanup", "complete_jobs"]
    assert all(span["parent"] == result["request"] for span in spans.values())
    single = spans["add_job send_email"]
    assert single["kind"] == "PRODUCER"
    assert single["attributes"] == {
        "messaging.system": "graphile-worker",
        "messaging.operation.name": "add_job",
        "messaging.operation.type": "send",
        "messaging.destination.name": "send_email",
        "db.namespace": schema,
    }
    assert spans["add_jobs"]["attributes"]["messaging.batch.message_count"] == 2
    assert spans["complete_jobs"]["kind"] == "CLIENT"
    assert spans["cleanup"]["attributes"]["messaging.system"] == "graphile-worker"


def test_no_span_is_opened_when_the_caller_is_not_tracing(pg_dsn: str, schema: str) -> None:
    result = run_scenario(pg_dsn, schema)
    names = [span["name"] for span in result["spans"]]
    assert "migrate" not in names
    assert "add_job untraced" not in names
