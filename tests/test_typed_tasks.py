"""Typed tasks (add_job, add_jobs): exactly which shapes are tasks, and a clear refusal, naming
the position, for every other one, before anything is written.

Supported: instances of attrs classes and dataclasses with an ``IDENTIFIER`` class attribute.
Refusals are checked without a database (a pool that is never opened: any SQL would fail), and
once against a real one, to see that nothing of the batch is written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import attrs
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from graphile_worker_utils import InvalidJobSpec, Job, JobSpec, WorkerUtils

Connection = psycopg.Connection[Any]
POSITIONS = pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])


# --------------------------------------------------------------------------------------------
# Task shapes


@attrs.frozen
class AttrsFrozen:
    IDENTIFIER: ClassVar[str] = "attrs_frozen"
    to: str
    n: int = 1


@attrs.define
class AttrsMutable:
    IDENTIFIER = "attrs_mutable"  # unannotated: a class attribute, not a field
    to: str
    computed: int = attrs.field(init=False, default=5)


@attrs.define(slots=False)
class AttrsDict:
    IDENTIFIER: ClassVar[str] = "attrs_dict"
    to: str


@dataclasses.dataclass(frozen=True)
class DataclassFrozen:
    IDENTIFIER: ClassVar[str] = "dataclass_frozen"
    VERSION: ClassVar[int] = 2  # a ClassVar is not a field: not in the payload
    to: str
    n: int = 1


@dataclasses.dataclass
class DataclassPlain:
    IDENTIFIER: ClassVar[str] = "dataclass_plain"
    to: str


SUPPORTED = [
    pytest.param(AttrsFrozen("ada"), "attrs_frozen", {"to": "ada", "n": 1}, id="attrs-frozen"),
    pytest.param(
        AttrsMutable("ada"), "attrs_mutable", {"to": "ada", "computed": 5}, id="attrs-define"
    ),
    pytest.param(AttrsDict("ada"), "attrs_dict", {"to": "ada"}, id="attrs-dict"),
    pytest.param(
        DataclassFrozen("ada", 3), "dataclass_frozen", {"to": "ada", "n": 3}, id="dataclass-frozen"
    ),
    pytest.param(DataclassPlain("ada"), "dataclass_plain", {"to": "ada"}, id="dataclass"),
]


class PointFields(NamedTuple):
    x: int
    spec: JobSpec | None  # a second item of None made add_jobs take it for a (task, spec) pair


class Point(PointFields):
    IDENTIFIER: ClassVar[str] = "point"


class Plain:
    IDENTIFIER = "plain"

    def __init__(self, to: str) -> None:
        self.to = to


@attrs.frozen
class NoIdentifier:
    to: str


@attrs.frozen
class NumberIdentifier:
    IDENTIFIER: ClassVar[Any] = 42
    to: str


@dataclasses.dataclass
class IdentifierField:
    to: str
    IDENTIFIER: str = "identifier_field"


SHAPES = "an instance of an attrs class or a dataclass"
REFUSED = [
    pytest.param(AttrsFrozen, [r"got the class AttrsFrozen, not an instance", SHAPES], id="class"),
    pytest.param(Point(1, None), [r"Point is not a typed task", SHAPES], id="namedtuple"),
    pytest.param(Plain("ada"), [r"Plain is not a typed task", SHAPES], id="plain-class"),
    pytest.param({"to": "ada"}, [r"dict is not a typed task", "add_raw_job"], id="dict"),
    pytest.param(NoIdentifier("ada"), ["NoIdentifier has no IDENTIFIER"], id="no-identifier"),
    pytest.param(
        NumberIdentifier("ada"),
        [r"NumberIdentifier\.IDENTIFIER: expected a str, got int"],
        id="int-identifier",
    ),
    pytest.param(
        IdentifierField("ada"),
        [r"IdentifierField\.IDENTIFIER is a field", r"ClassVar\[str\]"],
        id="identifier-field",
    ),
]


# --------------------------------------------------------------------------------------------
# Helpers and fixtures


def assert_message(error: BaseException, patterns: list[str]) -> None:
    message = str(error)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


@pytest.fixture
def offline() -> Iterator[WorkerUtils]:
    """A WorkerUtils on a pool that is never opened: refusals must come before any SQL."""
    pool: ConnectionPool[Any] = ConnectionPool("", open=False)
    yield WorkerUtils(pool)
    pool.close()


def stored(conn: Connection, schema: str) -> list[tuple[Any, ...]]:
    query = sql.SQL(
        "select task.identifier, job.payload from {}._private_jobs as job"
        " join {}._private_tasks as task on task.id = job.task_id order by job.id"
    ).format(sql.Identifier(schema), sql.Identifier(schema))
    return conn.execute(query).fetchall()


def good(i: int) -> Any:
    return AttrsFrozen(f"user{i}", i)


# --------------------------------------------------------------------------------------------
# Supported shapes (enqueued for real)


@pytest.mark.parametrize(("task", "identifier", "payload"), SUPPORTED)
def test_add_job_enqueues_a_supported_task_with_its_fields_as_the_payload(
    utils: WorkerUtils, conn: Connection, schema: str, task: Any, identifier: str, payload: Any
) -> None:
    job = utils.add_job(task)

    assert (job.task_identifier, job.payload) == (identifier, payload)
    assert stored(conn, schema) == [(identifier, payload)]


def test_add_jobs_enqueues_every_supported_shape_bare_and_in_pairs(
    utils: WorkerUtils, conn: Connection, schema: str
) -> None:
    tasks = [param.values[0] for param in SUPPORTED]
    expected = sorted((param.values[1], param.values[2]) for param in SUPPORTED)

    items: list[Any] = [*tasks[:2], *((task, JobSpec(priority=3)) for task in tasks[2:])]
    jobs = utils.add_jobs(items)

    assert sorted((job.task_identifier, job.payload) for job in jobs) == expected
    assert sorted(job.priority for job in jobs) == [0, 0, 3, 3, 3]
    assert sorted(stored(conn, schema)) == expected


def test_a_pair_whose_spec_is_none_enqueues_the_task_with_the_default_spec(
    utils: WorkerUtils,
) -> None:
    (job,) = utils.add_jobs([(DataclassPlain("ada"), None)])

    assert (job.task_identifier, job.payload, job.priority) == ("dataclass_plain", {"to": "ada"}, 0)


# --------------------------------------------------------------------------------------------
# Refused shapes (no database)


@pytest.mark.parametrize(("task", "patterns"), REFUSED)
def test_add_job_refuses_an_unsupported_task_naming_what_is_supported(
    offline: WorkerUtils, task: Any, patterns: list[str]
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        offline.add_job(task)

    assert str(raised.value).startswith("task: ")
    assert_message(raised.value, patterns)


@POSITIONS
@pytest.mark.parametrize(("task", "patterns"), REFUSED)
def test_add_jobs_refuses_an_unsupported_task_naming_its_position(
    offline: WorkerUtils, task: Any, patterns: list[str], position: int
) -> None:
    tasks = [good(i) for i in range(3)]
    tasks[position] = task

    with pytest.raises(InvalidJobSpec) as raised:
        offline.add_jobs(tasks)

    assert str(raised.value).startswith(f"jobs[{position}]: ")
    assert_message(raised.value, patterns)


@pytest.mark.parametrize(("task", "patterns"), REFUSED)
def test_add_jobs_refuses_an_unsupported_task_inside_a_pair(
    offline: WorkerUtils, task: Any, patterns: list[str]
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        offline.add_jobs([good(0), (task, JobSpec(priority=1))])

    assert str(raised.value).startswith("jobs[1]: ")
    assert_message(raised.value, patterns)


def test_a_namedtuple_task_is_never_taken_for_a_task_spec_pair(offline: WorkerUtils) -> None:
    # Point(1, None) is a 2-tuple whose second item is None: before, its x was sent as a task.
    with pytest.raises(InvalidJobSpec) as raised:
        offline.add_jobs([Point(1, None)])

    assert_message(raised.value, [r"^jobs\[0\]: Point is not a typed task"])


@pytest.mark.parametrize(
    ("item", "patterns"),
    [
        pytest.param((good(9),), [r"a \(task, spec\) pair, got a tuple of 1 item$"], id="1-tuple"),
        pytest.param(
            (good(9), JobSpec(), None),
            [r"a \(task, spec\) pair, got a tuple of 3 items"],
            id="3-tuple",
        ),
        pytest.param(
            (good(9), {"priority": 1}),
            [r"^jobs\[1\]\.spec: expected a JobSpec or None, got dict"],
            id="dict-spec",
        ),
    ],
)
def test_add_jobs_refuses_a_malformed_pair_naming_its_position(
    offline: WorkerUtils, item: Any, patterns: list[str]
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        offline.add_jobs([good(0), item, good(2)])

    assert "jobs[1]" in str(raised.value)
    assert_message(raised.value, patterns)


@pytest.mark.parametrize("tasks", [good(0), "send_email", None], ids=["a-task", "str", "none"])
def test_add_jobs_refuses_something_that_is_not_a_collection_of_tasks(
    offline: WorkerUtils, tasks: Any
) -> None:
    with pytest.raises(InvalidJobSpec, match=r"^tasks: expected an iterable of tasks"):
        offline.add_jobs(tasks)


# --------------------------------------------------------------------------------------------
# Nothing is written


@pytest.mark.parametrize(("task", "patterns"), REFUSED)
def test_a_refused_task_at_the_end_of_a_batch_leaves_nothing_written(
    utils: WorkerUtils, conn: Connection, schema: str, task: Any, patterns: list[str]
) -> None:
    with pytest.raises(InvalidJobSpec) as raised:
        utils.add_jobs([good(0), (good(1), JobSpec(job_key="k")), task])

    assert_message(raised.value, [r"^jobs\[2\]: ", *patterns])
    assert stored(conn, schema) == []


def test_the_result_is_a_list_of_jobs(utils: WorkerUtils) -> None:
    jobs = utils.add_jobs(iter([good(0), good(1)]))

    assert [type(job) for job in jobs] == [Job, Job]
