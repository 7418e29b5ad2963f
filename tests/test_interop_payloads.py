"""Payloads enqueued from Python arrive in graphile-worker 0.18.0's tasks as the JSON that the
library's payload rules promise (graphile_worker_utils/_payload.py, README "Behaviour worth
knowing").

Every case is one job of one batch, run once by one real worker; each test checks one case.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import pytest
from psycopg import sql

from graphile_worker_utils import JobSpec, RawJobSpec, WorkerUtils
from tests._helpers import Database, unique_name
from tests._node import GraphileWorker
from tests._worker import Report, Workers


class Colour(str, enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


@attrs.frozen
class Point:
    x: int
    y: decimal.Decimal
    label: Colour


@dataclasses.dataclass(frozen=True)
class Shipment:
    id: uuid.UUID
    sent: dt.date
    points: list[Point]


@attrs.frozen
class Greet:
    """A typed task: add_job sends its fields as the payload."""

    IDENTIFIER: ClassVar[str] = "echo"
    name: str
    at: dt.datetime


PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
AN_INSTANT = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
AN_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")
UNICODE = "héllo wörld ✓ 日本語 Ω 😀 👩‍👩‍👧 \u200b end"
ONE_MB = 1_000_000

# case -> (payload given to add_raw_job, the JSON the task must receive)
CASES: dict[str, tuple[Any, Any]] = {
    "aware_datetime_utc": (
        {"at": AN_INSTANT},
        {"at": "2024-05-06T07:08:09.123456+00:00"},
    ),
    "aware_datetime_with_offset": (
        {"at": dt.datetime(2024, 12, 31, 23, 59, 59, tzinfo=PLUS_0530)},
        {"at": "2024-12-31T23:59:59+05:30"},
    ),
    "date": ({"on": dt.date(2024, 2, 29)}, {"on": "2024-02-29"}),
    "time": ({"at": dt.time(23, 59, 58, 1)}, {"at": "23:59:58.000001"}),
    "uuid": ({"id": AN_UUID}, {"id": "12345678-1234-5678-1234-567812345678"}),
    "decimal_keeps_its_exponent": ({"amount": decimal.Decimal("12.50")}, {"amount": "12.50"}),
    "decimal_beyond_double_precision": (
        {"amount": decimal.Decimal("12345678901234567890.123456789012345678")},
        {"amount": "12345678901234567890.123456789012345678"},
    ),
    "str_enum_value": ({"colour": Colour.RED}, {"colour": "red"}),
    "int_enum_value": ({"size": Size.LARGE}, {"size": 3}),
    "attrs_instance_as_object": (
        {"point": Point(1, decimal.Decimal("0.1"), Colour.RED)},
        {"point": {"x": 1, "y": "0.1", "label": "red"}},
    ),
    "dataclass_instance_as_object": (
        Shipment(AN_UUID, dt.date(2024, 1, 2), [Point(-2, decimal.Decimal("3"), Colour.RED)]),
        {
            "id": "12345678-1234-5678-1234-567812345678",
            "sent": "2024-01-02",
            "points": [{"x": -2, "y": "3", "label": "red"}],
        },
    ),
    "nested_structures": (
        {"a": [1, {"b": [True, False, None, 1.5, "s"]}, (2, 3)], "e": {}, "l": []},
        {"a": [1, {"b": [True, False, None, 1.5, "s"]}, [2, 3]], "e": {}, "l": []},
    ),
    "json_scalars": (
        {"max_safe_int": 2**53 - 1, "neg": -17, "float": 0.1, "tiny": 5e-324, "big": 1e308},
        {"max_safe_int": 2**53 - 1, "neg": -17, "float": 0.1, "tiny": 5e-324, "big": 1e308},
    ),
    "unicode_with_emoji": ({"text": UNICODE, UNICODE: 1}, {"text": UNICODE, UNICODE: 1}),
    "escapes_and_control_characters": (
        {"text": 'quote " backslash \\ newline \n tab \t bell \x07 slash /'},
        {"text": 'quote " backslash \\ newline \n tab \t bell \x07 slash /'},
    ),
    "top_level_array": ([1, "two", {"three": 3}], [1, "two", {"three": 3}]),
    "none_payload_is_an_empty_object": (None, {}),
    "one_megabyte": (
        {"blob": "x" * ONE_MB, "tail": "😀"},
        {"blob": "x" * ONE_MB, "tail": "😀"},
    ),
}
# Added with add_job (typed task), not add_raw_job.
TYPED_CASE = "typed_task_fields_as_object"
TYPED_TASK = Greet("Ada", AN_INSTANT)
TYPED_EXPECTED = {"name": "Ada", "at": "2024-05-06T07:08:09.123456+00:00"}
# Added in one add_raw_jobs batch rather than one by one.
BATCH_CASES = {"aware_datetime_with_offset", "decimal_keeps_its_exponent", "top_level_array"}


@dataclasses.dataclass(frozen=True)
class Delivery:
    job_id: int
    report: Report | None  # the worker's "start" report, None if it never ran the job


@pytest.fixture(scope="module")
def delivered(
    interop_database: Database, graphile_worker: GraphileWorker
) -> Iterator[dict[str, Delivery]]:
    """Enqueue every case, let graphile-worker 0.18.0 run them all once (runOnce), and
    return what its task received, by case."""
    schema = unique_name()
    workers = Workers(graphile_worker.node, interop_database)
    with interop_database.connect() as conn:
        utils = WorkerUtils(conn, schema=schema)
        utils.migrate()
        try:
            ids: dict[str, int] = {}
            for case, (payload, _) in CASES.items():
                if case not in BATCH_CASES:
                    ids[case] = utils.add_raw_job("echo", payload, JobSpec(job_key=case)).id
            batch = utils.add_raw_jobs(
                [RawJobSpec("echo", CASES[case][0], JobSpec(job_key=case)) for case in BATCH_CASES]
            )
            ids.update({job.key: job.id for job in batch if job.key is not None})
            ids[TYPED_CASE] = utils.add_job(TYPED_TASK, JobSpec(job_key=TYPED_CASE)).id

            worker = workers.start(schema, {"echo": {}}, mode="runOnce")
            code = worker.wait_exit(timeout=30)
            assert code == 0, f"graphile-worker runOnce exited {code}\n{worker.describe()}"
            started = {r["job_id"]: r for r in worker.events("start")}
            yield {case: Delivery(job_id, started.get(job_id)) for case, job_id in ids.items()}
        finally:
            workers.close()
            conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))


def same_json(a: Any, b: Any) -> bool:
    """JSON equality that tells true from 1 and "1" from 1, and numbers by value."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b and not (math.isnan(a) or math.isnan(b))
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return False


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 300 else f"{text[:150]}…({len(text)} chars)…{text[-100:]}"


def assert_received(delivered: dict[str, Delivery], case: str, expected: Any) -> None:
    delivery = delivered[case]
    assert delivery.report is not None, (
        f"job {delivery.job_id} ({case}): expected graphile-worker to run it, it did not"
    )
    received = delivery.report["payload"]
    assert same_json(received, expected), (
        f"job {delivery.job_id} ({case}): expected the task to receive {short(expected)},"
        f" got {short(received)}"
    )


@pytest.mark.parametrize("case", list(CASES))
def test_payload_arrives_in_the_node_task_as_documented_json(
    delivered: dict[str, Delivery], case: str
) -> None:
    assert_received(delivered, case, CASES[case][1])


def test_typed_task_arrives_as_an_object_of_its_fields(delivered: dict[str, Delivery]) -> None:
    assert_received(delivered, TYPED_CASE, TYPED_EXPECTED)
