"""Bad input (docs/architecture.md "Bad input"): everything the database would refuse is refused
before any SQL is sent, as InvalidJobSpec naming the field and the limit, and a bad job anywhere in
a batch writes nothing. Payload encoding rules, and text that looks like SQL, stored verbatim.

"No SQL was sent" is observed on a non-autocommit connection: its first statement would open a
transaction, so it must still be IDLE after the refusal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
import psycopg
import pytest
from psycopg import pq, sql

from graphile_worker_utils import (
    CleanupTask,
    InvalidJobSpec,
    JobKeyMode,
    JobSpec,
    RawJobSpec,
    WorkerUtils,
)
from tests._helpers import drop_schema, enqueue, job_count, table
from tests._server import PgServer

Connection = psycopg.Connection[Any]
UTC = dt.timezone.utc
POSITIONS = pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])
BOTH_ENTRY_POINTS = pytest.mark.parametrize("via", ["add_raw_job", "add_raw_jobs"])


# --------------------------------------------------------------------------------------------
# Helpers and fixtures


def assert_message(error: BaseException, patterns: list[str]) -> None:
    message = str(error)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


@pytest.fixture
def idle_utils(idle_conn: Connection, schema: str) -> WorkerUtils:
    return WorkerUtils(idle_conn, schema=schema)


@pytest.fixture
def assert_nothing_sent(idle_conn: Connection, conn: Connection, schema: str) -> Callable[[], None]:
    def check() -> None:
        assert idle_conn.info.transaction_status == pq.TransactionStatus.IDLE, (
            "a statement was sent on the caller's connection"
        )
        assert job_count(conn, schema) == 0

    return check


def batch_with(bad: Any, position: int, good: Callable[[int], Any] | None = None) -> list[Any]:
    """Three jobs, the bad one at ``position``."""
    make = good or (lambda i: RawJobSpec(f"good_{i}", {"i": i}, JobSpec(job_key=f"key_{i}")))
    jobs = [make(i) for i in range(3)]
    jobs[position] = bad
    return jobs


def stored_payload(conn: Connection, schema: str, job_id: int) -> tuple[str, Any]:
    query = sql.SQL("select payload::text, payload from {} where id = %s").format(
        table(schema, "_private_jobs")
    )
    text, value = conn.execute(query, [job_id]).fetchone()  # type: ignore[misc]
    return text, value


# --------------------------------------------------------------------------------------------
# Spec fields


NAIVE = dt.datetime(2030, 1, 1, 12, 0)
SPEC_CASES = [
    pytest.param("queue_name", "", ["queue_name", "empty"], id="queue_name-empty"),
    pytest.param("queue_name", "q" * 129, ["queue_name", "128"], id="queue_name-129"),
    pytest.param("queue_name", 7, ["queue_name", "str"], id="queue_name-int"),
    pytest.param("queue_name", "a\x00b", ["queue_name", "NUL"], id="queue_name-nul"),
    pytest.param("queue_name", "a\ud800b", ["queue_name", "surrogate"], id="queue_name-surrogate"),
    pytest.param("job_key", "", ["job_key", "empty"], id="job_key-empty"),
    pytest.param("job_key", "k" * 513, ["job_key", "512"], id="job_key-513"),
    pytest.param("job_key", "k\x00", ["job_key", "NUL"], id="job_key-nul"),
    pytest.param("job_key", "\udc00k", ["job_key", "surrogate"], id="job_key-surrogate"),
    pytest.param("priority", True, ["priority", "int", "bool"], id="priority-bool"),
    pytest.param("priority", 1.0, ["priority", "int", "float"], id="priority-float"),
    pytest.param("priority", "1", ["priority", "int"], id="priority-str"),
    pytest.param("priority", 32768, ["priority", "32767"], id="priority-32768"),
    pytest.param("priority", -32769, ["priority", "-32768"], id="priority--32769"),
    pytest.param("max_attempts", 0, ["max_attempts", r"\b1\b"], id="max_attempts-0"),
    pytest.param("max_attempts", -1, ["max_attempts", r"\b1\b"], id="max_attempts-negative"),
    pytest.param("max_attempts", 32768, ["max_attempts", "32767"], id="max_attempts-32768"),
    pytest.param("max_attempts", True, ["max_attempts", "int"], id="max_attempts-bool"),
    pytest.param("run_at", NAIVE, ["run_at", "naive"], id="run_at-naive"),
    pytest.param("run_at", dt.date(2030, 1, 1), ["run_at", "datetime"], id="run_at-date"),
    pytest.param("run_at", "2030-01-01T00:00:00+00:00", ["run_at", "datetime"], id="run_at-str"),
    pytest.param("flags", "urgent", ["flags", "str"], id="flags-bare-str"),
    pytest.param("flags", ["ok", ""], [r"flags\[1\]", "empty"], id="flags-empty-name"),
    pytest.param("flags", ["ok", 3], [r"flags\[1\]", "str"], id="flags-non-str"),
    pytest.param("flags", ["a\x00"], [r"flags\[0\]", "NUL"], id="flags-nul"),
    pytest.param("flags", ["\ud800"], [r"flags\[0\]", "surrogate"], id="flags-surrogate"),
    pytest.param("job_key_mode", "bogus", ["job_key_mode", "bogus"], id="job_key_mode-bogus"),
]


@pytest.mark.parametrize(("field", "value", "patterns"), SPEC_CASES)
def test_a_bad_spec_field_is_refused_naming_the_field_and_the_limit_before_any_sql(
    idle_utils: WorkerUtils,
    assert_nothing_sent: Callable[[], None],
    field: str,
    value: Any,
    patterns: list[str],
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_job("task", {}, JobSpec(**{field: value}))

    assert isinstance(raised.value, ValueError)
    assert_message(raised.value, patterns)
    assert_nothing_sent()


@POSITIONS
@pytest.mark.parametrize(("field", "value", "patterns"), SPEC_CASES)
def test_a_bad_spec_field_anywhere_in_a_batch_writes_nothing(
    idle_utils: WorkerUtils,
    assert_nothing_sent: Callable[[], None],
    field: str,
    value: Any,
    patterns: list[str],
    position: int,
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_jobs(
            batch_with(
                None,
                position,
                lambda i: RawJobSpec(
                    f"good_{i}", {}, JobSpec(**{field: value}) if i == position else None
                ),
            )
        )

    assert_message(raised.value, patterns)
    assert_nothing_sent()


# --------------------------------------------------------------------------------------------
# Task identifiers


IDENTIFIER_CASES = [
    pytest.param("", ["identifier", "empty"], id="empty"),
    pytest.param("t" * 129, ["identifier", "128"], id="129-chars"),
    pytest.param(42, ["identifier", "str"], id="non-str"),
    pytest.param(None, ["identifier", "str"], id="none"),
    pytest.param("send\x00mail", ["identifier", "NUL"], id="nul"),
    pytest.param("send\ud800mail", ["identifier", "surrogate"], id="surrogate"),
]


@pytest.mark.parametrize(("identifier", "patterns"), IDENTIFIER_CASES)
def test_a_bad_identifier_is_refused_before_any_sql(
    idle_utils: WorkerUtils,
    assert_nothing_sent: Callable[[], None],
    identifier: Any,
    patterns: list[str],
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_job(identifier, {})

    assert_message(raised.value, patterns)
    assert_nothing_sent()


@POSITIONS
@pytest.mark.parametrize(("identifier", "patterns"), IDENTIFIER_CASES)
def test_a_bad_identifier_anywhere_in_a_batch_writes_nothing(
    idle_utils: WorkerUtils,
    assert_nothing_sent: Callable[[], None],
    identifier: Any,
    patterns: list[str],
    position: int,
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_jobs(
            batch_with(
                None,
                position,
                lambda i: RawJobSpec(identifier if i == position else f"good_{i}", {}),
            )
        )

    assert_message(raised.value, patterns)
    assert_nothing_sent()


@POSITIONS
@pytest.mark.parametrize(("identifier", "patterns"), IDENTIFIER_CASES)
def test_a_typed_task_with_a_bad_identifier_anywhere_in_add_jobs_writes_nothing(
    idle_utils: WorkerUtils,
    assert_nothing_sent: Callable[[], None],
    identifier: Any,
    patterns: list[str],
    position: int,
) -> None:
    @attrs.frozen
    class Good:
        IDENTIFIER: ClassVar[str] = "good"
        n: int

    @attrs.frozen
    class Bad:
        IDENTIFIER: ClassVar[Any] = identifier
        n: int

    tasks: list[Any] = [Good(i) for i in range(3)]
    tasks[position] = Bad(position)

    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_jobs(tasks)

    assert f"jobs[{position}]" in str(raised.value)
    if isinstance(identifier, str):
        assert_message(raised.value, patterns)
    assert_nothing_sent()


# --------------------------------------------------------------------------------------------
# Refusals only a batch can make


@POSITIONS
def test_unsafe_dedupe_anywhere_in_a_batch_is_refused_and_writes_nothing(
    idle_utils: WorkerUtils, assert_nothing_sent: Callable[[], None], position: int
) -> None:
    bad = RawJobSpec("bad", {}, JobSpec(job_key="k", job_key_mode=JobKeyMode.UNSAFE_DEDUPE))

    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_jobs(batch_with(bad, position))

    assert_message(raised.value, [rf"jobs\[{position}\]", "job_key_mode", "UNSAFE_DEDUPE"])
    assert_nothing_sent()


@POSITIONS
def test_a_job_key_repeated_anywhere_in_a_batch_is_refused_and_writes_nothing(
    idle_utils: WorkerUtils, assert_nothing_sent: Callable[[], None], position: int
) -> None:
    other = (position + 1) % 3
    bad = RawJobSpec("bad", {}, JobSpec(job_key=f"key_{other}"))

    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_jobs(batch_with(bad, position))

    later = max(position, other)
    assert_message(raised.value, [rf"jobs\[{later}\]", "job_key", f"key_{other}"])
    assert_nothing_sent()


@POSITIONS
@pytest.mark.parametrize(
    "item",
    [("task", {}), {"identifier": "task"}, "task", None, JobSpec()],
    ids=["tuple", "dict", "str", "none", "job-spec"],
)
def test_an_item_that_is_not_a_raw_job_spec_anywhere_in_a_batch_is_refused(
    idle_utils: WorkerUtils, assert_nothing_sent: Callable[[], None], item: Any, position: int
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_jobs(batch_with(item, position))

    assert_message(raised.value, [rf"jobs\[{position}\]", "RawJobSpec", type(item).__name__])
    assert_nothing_sent()


@POSITIONS
@pytest.mark.parametrize(
    ("payload", "patterns"),
    [
        (float("nan"), ["payload", "float"]),
        ({"x": float("inf")}, ["payload", "float"]),
        ({"x": object()}, ["payload", "object"]),
        ({"x": {1, 2}}, ["payload", "set"]),
        ([b"raw"], ["payload", "bytes"]),
        ({"at": NAIVE}, ["payload", "naive"]),
        ({"x": decimal.Decimal("NaN")}, ["payload", "Decimal"]),
    ],
    ids=["nan", "infinity", "object", "set", "bytes", "naive-datetime", "decimal-nan"],
)
def test_an_unencodable_payload_anywhere_in_a_batch_is_refused_and_writes_nothing(
    idle_utils: WorkerUtils,
    assert_nothing_sent: Callable[[], None],
    payload: Any,
    patterns: list[str],
    position: int,
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_jobs(batch_with(RawJobSpec("bad", payload), position))

    assert_message(raised.value, [rf"jobs\[{position}\]", *patterns])
    assert_nothing_sent()


# --------------------------------------------------------------------------------------------
# Specs of the wrong type


def test_a_spec_of_the_wrong_type_is_refused_by_add_raw_job(
    idle_utils: WorkerUtils, assert_nothing_sent: Callable[[], None]
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_job("task", {}, {"queue_name": "q"})  # type: ignore[arg-type]

    assert_message(raised.value, ["spec", "JobSpec", "dict"])
    assert_nothing_sent()


def test_a_spec_of_the_wrong_type_is_refused_by_raw_job_spec() -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        RawJobSpec("task", {}, "queue=q")  # type: ignore[arg-type, unused-ignore]

    assert_message(raised.value, ["spec", "JobSpec", "str"])


def test_a_spec_of_the_wrong_type_is_refused_by_add_jobs(
    idle_utils: WorkerUtils, assert_nothing_sent: Callable[[], None]
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_jobs([(Order(1, [], dt.date(2026, 1, 2)), {"priority": 1})])  # type: ignore[list-item]

    assert_message(raised.value, [r"jobs\[0\]", "spec", "dict"])
    assert_nothing_sent()


# --------------------------------------------------------------------------------------------
# Payload encoding


class Color(enum.Enum):
    RED = "red"


class Level(enum.Enum):
    HIGH = 3


@attrs.frozen
class Line:
    sku: str
    quantity: decimal.Decimal
    color: Color


@dataclasses.dataclass(frozen=True)
class Order:
    IDENTIFIER: ClassVar[str] = "ship_order"
    number: int
    lines: list[Line]
    ordered_on: dt.date


PAYLOAD_CASES = [
    pytest.param(
        dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "2026-01-02T03:04:05.000006+00:00",
        id="datetime-utc",
    ),
    pytest.param(
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
        "2026-01-02T03:04:05-05:30",
        id="datetime-offset",
    ),
    pytest.param(dt.date(2026, 1, 2), "2026-01-02", id="date"),
    pytest.param(dt.time(3, 4, 5), "03:04:05", id="time"),
    pytest.param(dt.time(3, 4, 5, 120000), "03:04:05.120000", id="time-micro"),
    pytest.param(
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "12345678-1234-5678-1234-567812345678",
        id="uuid",
    ),
    pytest.param(decimal.Decimal("12.50"), "12.50", id="decimal"),
    pytest.param(
        decimal.Decimal("12345678901234567890.123456789012345678901"),
        "12345678901234567890.123456789012345678901",
        id="decimal-long",
    ),
    pytest.param(Color.RED, "red", id="enum-str"),
    pytest.param(Level.HIGH, 3, id="enum-int"),
    pytest.param(
        Line("sku-1", decimal.Decimal("2.0"), Color.RED),
        {"sku": "sku-1", "quantity": "2.0", "color": "red"},
        id="attrs",
    ),
    pytest.param(
        Order(7, [Line("a", decimal.Decimal("1"), Color.RED)], dt.date(2026, 1, 2)),
        {
            "number": 7,
            "lines": [{"sku": "a", "quantity": "1", "color": "red"}],
            "ordered_on": "2026-01-02",
        },
        id="dataclass-nested-attrs",
    ),
    pytest.param(
        {"when": [dt.date(2026, 1, 2), (1, "two")], "nested": {"id": uuid.UUID(int=1)}},
        {
            "when": ["2026-01-02", [1, "two"]],
            "nested": {"id": "00000000-0000-0000-0000-000000000001"},
        },
        id="containers",
    ),
]


@BOTH_ENTRY_POINTS
@pytest.mark.parametrize(("value", "expected"), PAYLOAD_CASES)
def test_a_payload_value_is_stored_and_read_back_as_the_documented_json(
    utils: WorkerUtils, conn: Connection, schema: str, via: str, value: Any, expected: Any
) -> None:
    job = enqueue(utils, via, "task", {"value": value})

    assert job.payload == {"value": expected}
    text, stored = stored_payload(conn, schema, job.id)
    assert stored == {"value": expected}
    assert json.loads(text) == {"value": expected}


def test_a_typed_task_payload_is_its_fields_encoded_by_the_same_rules(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    order = Order(7, [Line("a", decimal.Decimal("1.10"), Color.RED)], dt.date(2026, 1, 2))

    job = utils.add_job(order)

    expected = {
        "number": 7,
        "lines": [{"sku": "a", "quantity": "1.10", "color": "red"}],
        "ordered_on": "2026-01-02",
    }
    assert job.payload == expected
    assert stored_payload(conn, schema, job.id)[1] == expected


@pytest.mark.parametrize(
    ("payload", "patterns"),
    [
        pytest.param({"at": NAIVE}, ["payload", "naive"], id="naive-datetime"),
        pytest.param({"d": decimal.Decimal("NaN")}, ["payload", "Decimal", "NaN"], id="dec-nan"),
        pytest.param({"d": decimal.Decimal("sNaN")}, ["payload", "Decimal"], id="dec-snan"),
        pytest.param(
            {"d": decimal.Decimal("-Infinity")}, ["payload", "Decimal", "Infinity"], id="dec-inf"
        ),
        pytest.param(float("nan"), ["payload", "float", "JSON"], id="float-nan"),
        pytest.param({"x": float("inf")}, ["payload", "float", "JSON"], id="float-inf"),
        pytest.param([float("-inf")], ["payload", "float", "JSON"], id="float-minus-inf"),
        pytest.param({"x": object()}, ["payload", r"\bobject\b"], id="object"),
        pytest.param({"x": {1, 2}}, ["payload", r"\bset\b"], id="set"),
        pytest.param(b"bytes", ["payload", r"\bbytes\b"], id="bytes"),
        pytest.param({"x": 1j}, ["payload", r"\bcomplex\b"], id="complex"),
    ],
)
def test_a_payload_that_cannot_be_encoded_is_refused_before_any_sql(
    idle_utils: WorkerUtils,
    assert_nothing_sent: Callable[[], None],
    payload: Any,
    patterns: list[str],
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        idle_utils.add_raw_job("task", payload)

    assert_message(raised.value, patterns)
    assert_nothing_sent()


@BOTH_ENTRY_POINTS
@pytest.mark.parametrize(
    "text", ["lone \ud800 high", "lone \udfff low", "\ud83d"], ids=["high", "low", "alone"]
)
def test_a_lone_surrogate_inside_a_payload_string_is_stored_escaped_and_read_back_equal(
    utils: WorkerUtils, conn: Connection, schema: str, via: str, text: str
) -> None:
    payload = {"note": text, text: [text]}

    job = enqueue(utils, via, "task", payload)

    assert job.payload == payload
    stored_text, stored = stored_payload(conn, schema, job.id)
    assert stored_text.isascii()
    assert stored == payload


@BOTH_ENTRY_POINTS
def test_a_nul_inside_a_payload_string_is_stored_escaped_and_read_back_equal(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    payload = {"note": "before\x00after"}

    job = enqueue(utils, via, "task", payload)

    assert job.payload == payload
    assert stored_payload(conn, schema, job.id)[1] == payload


@BOTH_ENTRY_POINTS
def test_non_ascii_payload_text_is_stored_as_is(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    payload = {"name": "Zoë 🐘 東京", "escaped": "\\u0041 is not A"}

    job = enqueue(utils, via, "task", payload)

    assert job.payload == payload
    assert stored_payload(conn, schema, job.id)[1] == payload


@BOTH_ENTRY_POINTS
def test_a_custom_json_dumps_encodes_the_payload(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    def dumps(value: Any) -> str:
        return json.dumps({"wrapped": value}, default=lambda o: sorted(o))

    custom = WorkerUtils(conn, schema=schema, json_dumps=dumps)

    job = enqueue(custom, via, "task", {"tags": {"b", "a"}})

    assert job.payload == {"wrapped": {"tags": ["a", "b"]}}
    assert stored_payload(conn, schema, job.id)[1] == {"wrapped": {"tags": ["a", "b"]}}


def test_a_custom_json_dumps_that_returns_no_str_is_refused(
    idle_conn: Connection, schema: str, assert_nothing_sent: Callable[[], None]
) -> None:
    custom = WorkerUtils(idle_conn, schema=schema, json_dumps=lambda value: b"{}")  # type: ignore[arg-type, return-value]

    with pytest.raises(InvalidJobSpec, match="json_dumps"):
        custom.add_raw_job("task", {})

    assert_nothing_sent()


# --------------------------------------------------------------------------------------------
# Text that looks like SQL is data


INJECTIONS = [
    pytest.param("'; drop table x; --", id="drop-table"),
    pytest.param("quote \" and ' and \"\" ''", id="quotes"),
    pytest.param("back\\slash \\' \\\\ \\x00", id="backslashes"),
    pytest.param("$$ $gw$ dollar $body$", id="dollar-quotes"),
    pytest.param("%s %(identifier)s {} {{ schema }}", id="placeholders"),
]


@pytest.fixture
def canary(utils: WorkerUtils, conn: Connection, schema: str) -> Iterator[None]:
    """A table ``x`` on the search path, that an injected ``drop table x`` would drop."""
    conn.execute(sql.SQL("create table {} (id int)").format(table(schema, "x")))
    conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema)))
    yield
    assert conn.execute("select to_regclass('x')").fetchone() != (None,)


@BOTH_ENTRY_POINTS
@pytest.mark.parametrize("text", INJECTIONS)
def test_sql_like_text_in_every_enqueue_field_is_stored_verbatim(
    utils: WorkerUtils, conn: Connection, schema: str, canary: None, via: str, text: str
) -> None:
    job = enqueue(
        utils, via, text, {text: text}, JobSpec(queue_name=text, job_key=text, flags=[text])
    )

    assert (job.task_identifier, job.queue_name, job.key, job.flags) == (text, text, text, [text])
    assert job.payload == {text: text}
    row = conn.execute(
        sql.SQL("select task_identifier, queue_name, key, flags from {} where id = %s").format(
            table(schema, "jobs")
        ),
        [job.id],
    ).fetchone()
    assert row == (text, text, text, {text: True})
    assert stored_payload(conn, schema, job.id)[1] == {text: text}


@pytest.mark.parametrize("text", INJECTIONS)
def test_sql_like_text_in_every_maintenance_argument_is_data(
    utils: WorkerUtils, conn: Connection, schema: str, canary: None, text: str
) -> None:
    failed = utils.add_raw_job(text, {})
    locked = utils.add_raw_job("a", {}, JobSpec(job_key="locked"))
    conn.execute(
        sql.SQL("update {} set locked_at = now(), locked_by = %s where id = %s").format(
            table(schema, "_private_jobs")
        ),
        [text, locked.id],
    )
    keyed = utils.add_raw_job("a", {}, JobSpec(job_key=text))

    (marked,) = utils.permanently_fail_jobs([failed.id], reason=text)
    utils.force_unlock_workers([text])
    removed = utils.remove_job(text)
    cleaned = utils.cleanup(
        [CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS, CleanupTask.GC_TASK_IDENTIFIERS],
        task_identifiers_to_keep=[text],
    )

    assert marked.last_error == text
    assert removed is not None and removed.id == keyed.id
    assert cleaned == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: 0,
    }
    (locked_by,) = conn.execute(
        sql.SQL("select locked_by from {} where id = %s").format(table(schema, "_private_jobs")),
        [locked.id],
    ).fetchone()  # type: ignore[misc]
    assert locked_by is None
    (kept,) = conn.execute(
        sql.SQL("select count(*) from {} where identifier = %s").format(
            table(schema, "_private_tasks")
        ),
        [text],
    ).fetchone()  # type: ignore[misc]
    assert kept == 1


@pytest.fixture(
    params=['x"; drop table y; --', "'; drop table y; -- $$ \\"],
    ids=["double-quote", "single-quote"],
)
def odd_schema(request: pytest.FixtureRequest, schema: str, pg_server: PgServer) -> Iterator[str]:
    """A schema whose name tries to break out of its quotes (dropped at teardown)."""
    name = schema + request.param
    yield name
    drop_schema(pg_server, name)


def test_an_odd_schema_name_is_a_schema_not_an_injection(
    conn: Connection, schema: str, odd_schema: str
) -> None:
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("create table {} (id int)").format(table(schema, "y")))
    conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema)))
    odd = WorkerUtils(conn, schema=odd_schema)

    assert odd.migrate().revision == 20
    job = odd.add_raw_job("task", {"n": 1}, JobSpec(queue_name="q", job_key="k"))
    jobs = odd.add_raw_jobs([RawJobSpec("task", {"n": 2}), RawJobSpec("other", {"n": 3})])
    odd.complete_jobs([jobs[0].id])
    odd.cleanup(list(CleanupTask))
    removed = odd.remove_job("k")

    assert removed is not None and removed.id == job.id
    assert conn.execute("select to_regclass('y')").fetchone() != (None,)
    (exists,) = conn.execute(
        "select count(*) from pg_namespace where nspname = %s", [odd_schema]
    ).fetchone()  # type: ignore[misc]
    assert exists == 1
    assert job_count(conn, odd_schema) == 1


# --------------------------------------------------------------------------------------------
# The limits themselves are allowed


@BOTH_ENTRY_POINTS
@pytest.mark.parametrize(
    ("identifier", "spec"),
    [
        pytest.param("t" * 128, JobSpec(queue_name="q" * 128, job_key="k" * 512), id="ascii"),
        pytest.param("🐘" * 128, JobSpec(queue_name="é" * 128, job_key="東" * 512), id="unicode"),
        pytest.param("t", JobSpec(priority=32767, max_attempts=32767), id="maximums"),
        pytest.param("t", JobSpec(priority=-32768, max_attempts=1), id="minimums"),
        pytest.param("t", JobSpec(flags=["x" * 1000, "y"]), id="long-flag"),
    ],
)
def test_values_at_the_limits_are_accepted_and_stored(
    utils: WorkerUtils, conn: Connection, schema: str, via: str, identifier: str, spec: JobSpec
) -> None:
    job = enqueue(utils, via, identifier, {}, spec)

    assert job.task_identifier == identifier
    assert (job.queue_name, job.key) == (spec.queue_name, spec.job_key)
    if spec.priority is not None:
        assert (job.priority, job.max_attempts) == (spec.priority, spec.max_attempts)
    assert job_count(conn, schema) == 1


@BOTH_ENTRY_POINTS
def test_no_payload_is_stored_as_an_empty_object(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    job = enqueue(utils, via, "task", None)

    assert job.payload == {}
    assert stored_payload(conn, schema, job.id) == ("{}", {})


@BOTH_ENTRY_POINTS
def test_large_and_precise_numbers_in_a_payload_are_stored_exactly(
    utils: WorkerUtils, conn: Connection, schema: str, via: str
) -> None:
    payload = {"big": 2**70, "negative": -(2**63) - 1, "float": 0.1, "tiny": 5e-324}

    job = enqueue(utils, via, "task", payload)

    assert job.payload == payload
    assert stored_payload(conn, schema, job.id)[1] == payload
