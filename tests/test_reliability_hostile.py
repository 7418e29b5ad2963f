"""Reliability under hostile input (issue 7): generated job specs, payloads, SQL-like text and
schema names.

Every generated input is either stored and read back as documented, or refused before any SQL
is sent with the library's own error (InvalidJobSpec for jobs and maintenance arguments,
InvalidSchemaName for schema names) -- never a raw psycopg or Python error for a spec problem,
never a part of a batch.

How it is observed:

* The expected outcome of each input comes from an oracle written here from the documentation
  (docs/architecture.md "Bad input", the payload table in ``graphile_worker_utils._payload``),
  not from the library's code: :func:`expected_spec`, :func:`documented_json`.
* "Stored as documented" is read back with plain SQL from ``_private_jobs`` (payload as text,
  decoded by ``json``), compared field by field and with the returned ``Job``.
* "No SQL was sent" is observed on a non-autocommit connection: its first statement would open
  a transaction, so it must still be IDLE after the refusal; the job count is unchanged.
* Every example runs in a transaction that is rolled back, so examples do not see each other.

Hypothesis runs derandomized (the same inputs on every run, no example database) and does not
shrink (a failure reports the input as generated, in seconds). Per run: 1,525 generated inputs
(``EXAMPLES``), 1,025 of them against PostgreSQL -- 500 payloads through the encoder alone,
300 single jobs, 150 batches of 1..5 jobs, 250 payloads through add_raw_job(s)/add_job(s), 150
maintenance arguments, 160 SQL-like texts, 15 schema names -- plus the example-based edge tests
below. Inputs mix plausible values (edges included) with at most one hostile field per job, so
that about 70 % of single jobs are stored and read back and the rest refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from psycopg import pq, sql

from graphile_worker_utils import (
    CleanupTask,
    InvalidJobSpec,
    InvalidSchemaName,
    Job,
    JobKeyMode,
    JobSpec,
    MigrationError,
    RawJobSpec,
    RescheduleOptions,
    WorkerUtils,
    dumps_payload,
)
from tests._helpers import NAME_PREFIX, drop_schema
from tests._server import PgServer

Connection = psycopg.Connection[Any]
UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)

#: Examples per property (derandomized, so every run generates the same inputs).
EXAMPLES = {
    "encoder": 500,
    "single_job": 300,
    "batch": 150,
    "payload": 250,
    "maintenance": 150,
    "injection_enqueue": 100,
    "injection_maintenance": 60,
    "schema_name": 15,
}

HOSTILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: a failing property reports the generated input as it came, in seconds,
    # instead of minutes of shrinking (the inputs are derandomized, so the report is stable).
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the fixtures are the database, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


# --------------------------------------------------------------------------------------------
# The oracle: what the documentation says an input becomes


class Refused(Exception):
    """The documented outcome of an input is a refusal."""


SMALLINT = (-32768, 32767)
BIGINT = (-(2**63), 2**63 - 1)


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def expected_text(value: object, limit: int | None) -> str:
    """A text field: a non-empty str without NUL or lone surrogates, within ``limit``."""
    if not isinstance(value, str) or not value or "\x00" in value or has_surrogate(value):
        raise Refused
    if limit is not None and len(value) > limit:
        raise Refused
    return str.__str__(value)


def expected_int(value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Refused
    return int(value)


def expected_run_at(value: object) -> dt.datetime:
    """An aware datetime whose instant a UTC datetime can hold (the library returns UTC)."""
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise Refused
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise Refused from None


def expected_texts(value: object, limit: int | None = None) -> list[str]:
    """An iterable (not a bare str or bytes) of text values."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, frozenset, dict)):
        raise Refused
    return [expected_text(item, limit) for item in value]


def expected_mode(value: object) -> JobKeyMode:
    if value is None:
        return JobKeyMode.REPLACE
    if isinstance(value, JobKeyMode):
        return value
    if isinstance(value, str) and value in {mode.value for mode in JobKeyMode}:
        return JobKeyMode(value)
    raise Refused


@attrs.frozen
class Expected:
    """A job as it must be stored. ``run_at`` None: the transaction's ``now()``."""

    identifier: str
    queue_name: str | None
    key: str | None
    priority: int
    max_attempts: int
    flags: frozenset[str] | None
    run_at: dt.datetime | None
    payload: str  # canonical JSON text
    mode: JobKeyMode


def expected_spec(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The stored columns a JobSpec(**kwargs) documents, or Refused."""
    flags = kwargs.get("flags")
    return {
        "queue_name": None
        if kwargs.get("queue_name") is None
        else expected_text(kwargs["queue_name"], 128),
        "key": None if kwargs.get("job_key") is None else expected_text(kwargs["job_key"], 512),
        "priority": 0
        if kwargs.get("priority") is None
        else expected_int(kwargs["priority"], *SMALLINT),
        "max_attempts": 25
        if kwargs.get("max_attempts") is None
        else expected_int(kwargs["max_attempts"], 1, SMALLINT[1]),
        "run_at": None if kwargs.get("run_at") is None else expected_run_at(kwargs["run_at"]),
        "flags": None if flags is None else (frozenset(expected_texts(flags)) or None),
        "mode": expected_mode(kwargs.get("job_key_mode")),
    }


def json_text(text: str) -> str:
    # JSON strings are UTF-16 code units: a high and a low surrogate side by side decode as one
    # astral character, whoever wrote them. That is JSON's rule, not the library's.
    return json.loads(json.dumps(text))  # type: ignore[no-any-return]


def documented_key(key: object) -> str:
    """A dict key: str as is; int, float, bool, None as JSON spells them; others refused."""
    if isinstance(key, str):
        return json_text(str.__str__(key))
    if isinstance(key, float):
        if not math.isfinite(key):
            raise Refused
        return float.__repr__(key)
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, int):
        try:
            return int.__repr__(key)
        except ValueError:  # longer than sys.get_int_max_str_digits()
            raise Refused from None
    raise Refused


def documented_json(value: Any, ancestors: frozenset[int] = frozenset()) -> Any:
    """The JSON value the payload rules document for ``value``, or Refused."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return json_text(str.__str__(value))
    if isinstance(value, int):
        try:
            return int(int.__repr__(value))
        except ValueError:
            raise Refused from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused
        return float(value)
    if id(value) in ancestors:  # a value that contains itself
        raise Refused
    inside = ancestors | {id(value)}
    if isinstance(value, (list, tuple)):
        return [documented_json(item, inside) for item in value]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            result[documented_key(key)] = documented_json(item, inside)
        return result
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            raise Refused
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise Refused
        return str(value)
    if isinstance(value, enum.Enum):
        return documented_json(value.value, inside)
    if attrs.has(type(value)):
        return {
            f.name: documented_json(getattr(value, f.name), inside)
            for f in attrs.fields(type(value))
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: documented_json(getattr(value, f.name), inside)
            for f in dataclasses.fields(value)
        }
    raise Refused


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def expected_job(identifier: object, payload: Any, kwargs: dict[str, Any]) -> Expected:
    """The stored job that add_raw_job(identifier, payload, JobSpec(**kwargs)) documents."""
    spec = expected_spec(kwargs)
    return Expected(
        identifier=expected_text(identifier, 128),
        payload=canonical({} if payload is None else documented_json(payload)),
        **spec,
    )


def expected_batch(jobs: list[tuple[Any, Any, dict[str, Any]]]) -> list[Expected]:
    expected = [expected_job(*job) for job in jobs]
    keys = [job.key for job in expected if job.key is not None]
    if len(keys) != len(set(keys)):
        raise Refused  # a job key twice in one batch
    if any(job.mode is JobKeyMode.UNSAFE_DEDUPE for job in expected):
        raise Refused  # single jobs only
    return expected


# --------------------------------------------------------------------------------------------
# Strategies


class Label(str):
    """A str subclass whose str() lies: the stored text must be its data."""

    def __str__(self) -> str:
        return "not the data"


class Ratio(float):
    """A float subclass whose repr() lies."""

    def __repr__(self) -> str:
        return "not a number"


class HugeInt(int):
    """10**5000: more digits than Python converts to text (sys.get_int_max_str_digits)."""

    def __new__(cls) -> HugeInt:
        return super().__new__(cls, 10**5000)

    def __repr__(self) -> str:
        return "HugeInt()"


class Shade(enum.Enum):
    RED = "red"
    PAIR = (1, "two")
    DAY = dt.date(2026, 1, 2)


class BadShade(enum.Enum):
    NAIVE = dt.datetime(2030, 1, 1)
    BYTES = b"raw"
    NAN = float("nan")


class Level(enum.IntEnum):
    LOW = -1
    HUGE = 2**70


class Mood(str, enum.Enum):
    CALM = "calm"


@attrs.define
class Point:
    x: Any
    y: Any


@dataclasses.dataclass
class Box:
    label: Any
    content: Any


SPECIAL_CHARACTERS = [
    "\x00",
    "\ud800",
    "\udfff",
    "\ud83d",
    "\ude00",
    "'",
    '"',
    ";",
    "$",
    "\\",
    "%",
    "{",
    "}",
    "é",
    "🐘",
    "東",
    "\u2028",
    "\ufeff",
    "\uffff",
    "\x7f",
    "\n",
    "\t",
    " ",
]
CHARACTERS = st.one_of(
    st.characters(exclude_categories=()),  # every code point, surrogates and NUL included
    st.sampled_from(SPECIAL_CHARACTERS),
)
# Long strings near the limits: a cheaper alphabet (generating 500 arbitrary code points per
# example is slow) that still has multibyte and hostile characters.
LONG_CHARACTERS = st.sampled_from(["a", "é", "🐘", "'", "\\", "\x00", "\ud800"])
HOSTILE_STRINGS = [
    "",
    " ",
    "null",
    "'; drop table canary; --",
    '"',
    "$$",
    "%s",
    "%(identifier)s",
    "\\u0000",
    "a\x00b",
    "\ud800",
    "\ud83d\ude00",
    "🐘" * 128,
    "é" * 129,
]


def texts(limit: int | None, *, optional: bool) -> st.SearchStrategy[Any]:
    """Text values for a field limited to ``limit`` characters, and things that are not text."""
    options: list[st.SearchStrategy[Any]] = [
        st.text(CHARACTERS, max_size=8),
        st.sampled_from(HOSTILE_STRINGS),
        st.builds(Label, st.text(max_size=4)),
        st.sampled_from([7, b"bytes", 1.5, ["list"], Mood.CALM]),
    ]
    if limit is not None:
        options.append(
            st.integers(limit - 1, limit + 1).flatmap(
                lambda n: st.text(LONG_CHARACTERS, min_size=n, max_size=n)
            )
        )
    if optional:
        options.insert(0, st.none())
    return st.one_of(options)


def ints(low: int, high: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.integers(low - 2, high + 2),
        st.sampled_from([low, high, low - 1, high + 1, 0, 2**63, -(2**70)]),
        st.sampled_from([True, False, 1.0, "1", Level.LOW, Level.HUGE]),
    )


TIMEZONES = st.one_of(
    st.just(UTC),
    st.builds(
        dt.timezone,
        st.timedeltas(
            min_value=-dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
            max_value=dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
        ),
    ),
    st.sampled_from(
        [
            zoneinfo.ZoneInfo("Europe/Paris"),
            zoneinfo.ZoneInfo("America/St_Johns"),
            zoneinfo.ZoneInfo("Pacific/Kiritimati"),
            zoneinfo.ZoneInfo("Pacific/Pago_Pago"),
        ]
    ),
)
RUN_ATS = st.one_of(
    st.none(),
    st.datetimes(timezones=TIMEZONES),
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=TIMEZONES
    ),
    st.datetimes(),  # naive
    st.sampled_from([dt.date(2030, 1, 1), "2030-01-01T00:00:00+00:00", 0]),
)
FLAGS = st.one_of(
    st.none(),
    st.lists(texts(None, optional=False), max_size=4),
    st.lists(st.text(CHARACTERS, min_size=1, max_size=6), max_size=4).map(tuple),
    st.frozensets(st.sampled_from(["a", "b", "urgent"])),
    st.sampled_from(["urgent", b"urgent", 3, {"a": 1}, ("a", "a")]),
)
MODES = st.one_of(
    st.none(),
    st.sampled_from(list(JobKeyMode)),
    st.sampled_from(["replace", "preserve_run_at", "unsafe_dedupe", Label("replace")]),
    st.sampled_from(["REPLACE", " replace", "", "bogus", 1, ["replace"]]),
)
IDENTIFIERS = st.one_of(texts(128, optional=True), st.sampled_from(["send_email", "t"]))


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append({"again": loop})
    return loop


def _point_cycle() -> Point:
    point = Point(1, None)
    point.y = [point]
    return point


AWARE_DATETIMES = st.datetimes(timezones=TIMEZONES)
SUPPORTED_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(CHARACTERS, max_size=10),
    AWARE_DATETIMES,
    st.dates(),
    st.times(timezones=st.none() | TIMEZONES),
    st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from([*Shade, *Level, *Mood]),
    st.builds(Label, st.text(max_size=4)),
    st.builds(Ratio, st.floats(allow_nan=False, allow_infinity=False)),
)
REFUSED_LEAVES = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.datetimes(),  # naive
    st.sampled_from([decimal.Decimal(v) for v in ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity"]]),
    st.sampled_from(list(BadShade)),
    st.sampled_from([b"raw", bytearray(b"x"), {1, 2}, frozenset({"a"}), 1j, range(2), Box, ...]),
    st.builds(object),
    st.builds(HugeInt),  # more digits than Python converts to text
    st.builds(_cycle),
    st.builds(_point_cycle),
)
DICT_KEYS = st.one_of(
    st.text(CHARACTERS, max_size=6),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.sampled_from([(1, 2), decimal.Decimal(1), uuid.UUID(int=1), b"k", Level.LOW]),
)


def payloads(leaves: st.SearchStrategy[Any], max_leaves: int) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.tuples(children, children),
            st.dictionaries(st.text(CHARACTERS, max_size=6), children, max_size=4),
            st.dictionaries(DICT_KEYS, children, max_size=3),
            st.builds(Point, children, children),
            st.builds(Box, children, children),
        ),
        max_leaves=max_leaves,
    )


def any_payloads(max_leaves: int) -> st.SearchStrategy[Any]:
    """Half documented-supported values (mostly stored), half with anything in them."""
    return st.one_of(
        payloads(SUPPORTED_LEAVES, max_leaves),
        payloads(st.one_of(SUPPORTED_LEAVES, REFUSED_LEAVES), max_leaves),
    )


def _offset(**delta: int) -> dt.timezone:
    return dt.timezone(dt.timedelta(**delta))


RUN_AT_EDGES = [
    dt.datetime.min.replace(tzinfo=UTC),
    dt.datetime.max.replace(tzinfo=UTC),
    dt.datetime.min.replace(tzinfo=_offset(hours=5)),  # before year 1 in UTC
    dt.datetime.max.replace(tzinfo=_offset(hours=-5)),  # after year 9999 in UTC
    dt.datetime(2030, 1, 1, tzinfo=_offset(hours=15, minutes=59, seconds=59)),
    dt.datetime(2030, 1, 1, tzinfo=_offset(hours=16)),
    dt.datetime(2030, 1, 1, tzinfo=_offset(hours=-23, minutes=-59)),
    dt.datetime(2030, 1, 1, tzinfo=_offset(seconds=1, microseconds=1)),
]

# Plausible values: what a careful caller passes, edges included (they may still be refused,
# e.g. a run_at whose instant is outside what a UTC datetime holds); the oracle decides.
PLAIN_CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")  # no surrogates


def plausible_texts(limit: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(PLAIN_CHARACTERS, min_size=1, max_size=8),
        st.sampled_from(["null", "'; drop table canary; --", "%s", "$$", "🐘" * 128, Mood.CALM]),
        st.builds(Label, st.text(PLAIN_CHARACTERS, min_size=1, max_size=4)),
        st.integers(limit - 1, limit).flatmap(
            lambda n: st.text(st.sampled_from(["a", "é", "🐘", "'", "\\"]), min_size=n, max_size=n)
        ),
    )


def plausible_ints(low: int, high: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(low, high), st.sampled_from([low, high, Level.LOW]))


PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "queue_name": st.none() | plausible_texts(128),
    "run_at": st.one_of(
        st.none(),
        st.sampled_from(RUN_AT_EDGES),
        st.datetimes(timezones=TIMEZONES),
        st.datetimes(
            min_value=dt.datetime(2000, 1, 1),
            max_value=dt.datetime(2100, 1, 1),
            timezones=TIMEZONES,
        ),
    ),
    "priority": plausible_ints(*SMALLINT),
    "max_attempts": plausible_ints(1, SMALLINT[1]),
    "job_key": st.none() | plausible_texts(512),
    "job_key_mode": st.none() | st.sampled_from([*JobKeyMode, "replace", "preserve_run_at"]),
    "flags": st.one_of(
        st.none(),
        st.lists(plausible_texts(64), max_size=3),
        st.lists(plausible_texts(64), max_size=3).map(tuple),
        st.frozensets(st.sampled_from(["a", "b", "urgent"])),
    ),
}
ANYTHING: dict[str, st.SearchStrategy[Any]] = {
    "queue_name": texts(128, optional=True),
    "run_at": RUN_ATS,
    "priority": ints(*SMALLINT),
    "max_attempts": ints(1, SMALLINT[1]),
    "job_key": texts(512, optional=True),
    "job_key_mode": MODES,
    "flags": FLAGS,
}
PLAUSIBLE_IDENTIFIERS = st.one_of(plausible_texts(128), st.sampled_from(["send_email", "t"]))


@st.composite
def generated_jobs(
    draw: st.DrawFn, max_leaves: int, key_pool: tuple[str, ...] = ()
) -> tuple[Any, Any, dict[str, Any]]:
    """(identifier, payload, JobSpec kwargs): every value plausible but at most one, which may
    be anything, so that a refusal is about one field and stored jobs carry edge values."""
    hostile = draw(st.sampled_from([None, None, "identifier", "payload", *PLAUSIBLE]))

    def pick(
        field: str, plausible: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]
    ) -> Any:
        return draw(anything if field == hostile else plausible, field)

    identifier = pick("identifier", PLAUSIBLE_IDENTIFIERS, IDENTIFIERS)
    payload = pick("payload", payloads(SUPPORTED_LEAVES, max_leaves), any_payloads(max_leaves))
    kwargs = {}
    for field in PLAUSIBLE:
        if field == hostile or draw(st.booleans()):
            plausible = PLAUSIBLE[field]
            if field == "job_key" and key_pool:
                plausible = st.sampled_from(key_pool) | plausible  # repeated keys
            kwargs[field] = pick(field, plausible, ANYTHING[field])
    return identifier, payload, kwargs


# --------------------------------------------------------------------------------------------
# Fixtures and readers


@pytest.fixture
def gw(admin: Connection, schema: str) -> str:
    """A migrated schema with a canary table that injected SQL would touch."""
    WorkerUtils(admin, schema=schema).migrate()
    admin.execute(sql.SQL("create table {}.canary (id int)").format(sql.Identifier(schema)))
    admin.execute(sql.SQL("insert into {}.canary values (42)").format(sql.Identifier(schema)))
    return schema


@pytest.fixture
def tx(gw: str, caller_conn: Connection) -> Connection:
    """``caller_conn`` (closed before ``gw`` is dropped); every example rolls back what it did."""
    return caller_conn


@pytest.fixture
def tx_utils(tx: Connection, gw: str) -> WorkerUtils:
    """A ``WorkerUtils`` on ``tx`` (not ``utils``: that one is on the autocommit ``conn``)."""
    return WorkerUtils(tx, schema=gw)


def start_example(tx: Connection) -> None:
    tx.rollback()
    assert tx.info.transaction_status == pq.TransactionStatus.IDLE


def assert_nothing_sent(tx: Connection, admin: Connection, schema: str) -> None:
    assert tx.info.transaction_status == pq.TransactionStatus.IDLE, (
        "a statement was sent on the caller's connection before the refusal"
    )
    query = sql.SQL("select count(*) from {}._private_jobs").format(sql.Identifier(schema))
    assert admin.execute(query).fetchone() == (0,)


@attrs.frozen
class Stored:
    """A job row read with plain SQL, in the shape of :class:`Expected`."""

    id: int
    identifier: str
    queue_name: str | None
    key: str | None
    priority: int
    max_attempts: int
    flags: frozenset[str] | None
    run_at: dt.datetime
    payload: str


def stored_jobs(tx: Connection, schema: str) -> tuple[list[Stored], dt.datetime]:
    """Every job of the schema as the transaction sees it, and the transaction's now()."""
    rows = tx.execute(
        sql.SQL(
            "select j.id, t.identifier, q.queue_name, j.key, j.priority, j.max_attempts,"
            " j.flags::text, j.run_at, j.payload::text, now()"
            " from {s}._private_jobs j join {s}._private_tasks t on t.id = j.task_id"
            " left join {s}._private_job_queues q on q.id = j.job_queue_id order by j.id"
        ).format(s=sql.Identifier(schema))
    ).fetchall()
    now = tx.execute("select now()").fetchone()[0]  # type: ignore[index]
    jobs = []
    for row in rows:
        flags = None if row[6] is None else json.loads(row[6])
        assert flags is None or set(flags.values()) == {True}
        jobs.append(
            Stored(
                id=row[0],
                identifier=row[1],
                queue_name=row[2],
                key=row[3],
                priority=row[4],
                max_attempts=row[5],
                flags=None if flags is None else frozenset(flags),
                run_at=row[7],
                payload=canonical(json.loads(row[8])),
            )
        )
    return jobs, now


def micros(moment: dt.datetime) -> int:
    """An instant as microseconds since 1970 (comparable whatever its tzinfo and fold)."""
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


def signature(job: Expected | Stored, now: dt.datetime) -> tuple[Any, ...]:
    run_at = micros(job.run_at if job.run_at is not None else now)
    flags = None if job.flags is None else tuple(sorted(job.flags))
    return (
        job.identifier,
        job.queue_name,
        job.key,
        job.priority,
        job.max_attempts,
        flags,
        run_at,
        job.payload,
    )


def returned_signature(job: Job) -> tuple[Any, ...]:
    return (
        job.task_identifier,
        job.queue_name,
        job.key,
        job.priority,
        job.max_attempts,
        None if job.flags is None else tuple(sorted(job.flags)),
        micros(job.run_at),
        canonical(job.payload),
    )


def assert_stored(
    tx: Connection, schema: str, expected: list[Expected], returned: list[Job]
) -> None:
    stored, now = stored_jobs(tx, schema)
    assert sorted(map(repr, (signature(job, now) for job in stored))) == sorted(
        map(repr, (signature(job, now) for job in expected))
    )
    by_id = {job.id: job for job in stored}
    assert sorted(job.id for job in returned) == sorted(by_id)
    for job in returned:
        assert returned_signature(job) == signature(by_id[job.id], now)


# --------------------------------------------------------------------------------------------
# The payload rules, without a database


@pytest.mark.slow
@settings(HOSTILE, max_examples=EXAMPLES["encoder"])
@given(payload=any_payloads(12))
def test_the_payload_encoder_follows_the_documented_rules(payload: Any) -> None:
    try:
        expected = documented_json(payload)
    except Refused:
        event("refused")
        with pytest.raises((InvalidJobSpec, TypeError, ValueError, RecursionError)):
            dumps_payload(payload)
        return
    event("encoded")
    text = dumps_payload(payload)
    assert canonical(json.loads(text)) == canonical(expected)
    # UTF-8 text the server takes: no lone surrogates travel raw.
    text.encode("utf-8")


# --------------------------------------------------------------------------------------------
# Generated jobs: stored as documented, or refused before any SQL


@pytest.mark.slow
@settings(HOSTILE, max_examples=EXAMPLES["single_job"])
@given(job=generated_jobs(max_leaves=6))
def test_a_generated_job_is_stored_as_documented_or_refused_before_any_sql(
    tx_utils: WorkerUtils,
    tx: Connection,
    admin: Connection,
    gw: str,
    job: tuple[Any, Any, dict[str, Any]],
) -> None:
    identifier, payload, kwargs = job
    start_example(tx)
    try:
        expected: Expected | None = expected_job(identifier, payload, kwargs)
    except Refused:
        expected = None

    try:
        returned = tx_utils.add_raw_job(identifier, payload, JobSpec(**kwargs))
    except InvalidJobSpec as error:
        assert expected is None, f"refused a valid job: {error}"
        assert_nothing_sent(tx, admin, gw)
        event("refused")
        return

    assert expected is not None, "stored a job the documentation says is refused"
    assert_stored(tx, gw, [expected], [returned])
    event("stored")


@pytest.mark.slow
@settings(HOSTILE, max_examples=EXAMPLES["batch"])
@given(
    jobs=st.lists(generated_jobs(max_leaves=4, key_pool=("dup-a", "dup-b")), min_size=1, max_size=5)
)
def test_a_generated_batch_is_stored_whole_or_refused_whole_before_any_sql(
    tx_utils: WorkerUtils,
    tx: Connection,
    admin: Connection,
    gw: str,
    jobs: list[tuple[Any, Any, dict[str, Any]]],
) -> None:
    start_example(tx)
    try:
        expected: list[Expected] | None = expected_batch(jobs)
    except Refused:
        expected = None

    try:
        returned = tx_utils.add_raw_jobs(
            RawJobSpec(identifier, payload, JobSpec(**kwargs))
            for identifier, payload, kwargs in jobs
        )
    except InvalidJobSpec as error:
        assert expected is None, f"refused a valid batch: {error}"
        assert_nothing_sent(tx, admin, gw)
        event("refused")
        return

    assert expected is not None, "stored a batch the documentation says is refused"
    assert_stored(tx, gw, expected, returned)
    event(f"stored a batch of {len(jobs)}")


@dataclasses.dataclass(frozen=True)
class Envelope:
    IDENTIFIER: ClassVar[str] = "envelope"
    body: Any


@pytest.mark.slow
@settings(HOSTILE, max_examples=EXAMPLES["payload"])
@given(
    payload=any_payloads(16),
    via=st.sampled_from(["add_raw_job", "add_raw_jobs", "add_job", "add_jobs"]),
)
def test_a_generated_payload_is_stored_as_its_documented_json_or_refused_before_any_sql(
    tx_utils: WorkerUtils, tx: Connection, admin: Connection, gw: str, payload: Any, via: str
) -> None:
    start_example(tx)
    typed = via in ("add_job", "add_jobs")
    try:
        document = documented_json({"body": payload} if typed else payload)
        expected: list[Any] | None = [{} if payload is None and not typed else document]
    except Refused:
        expected = None
    if expected is not None and via.endswith("jobs"):
        expected.append({"fixed": 1})  # the batch's good neighbour

    try:
        if via == "add_raw_job":
            returned = [tx_utils.add_raw_job("payload", payload)]
        elif via == "add_raw_jobs":
            returned = tx_utils.add_raw_jobs(
                [RawJobSpec("payload", payload), RawJobSpec("fixed", {"fixed": 1})]
            )
        elif via == "add_job":
            returned = [tx_utils.add_job(Envelope(payload))]
        else:
            returned = tx_utils.add_jobs([Envelope(payload), (Envelope({"fixed": 1}), None)])
    except InvalidJobSpec as error:
        assert expected is None, f"refused a documented payload: {error}"
        assert_nothing_sent(tx, admin, gw)
        event("refused")
        return

    assert expected is not None, "stored a payload the documentation says is refused"
    stored, _ = stored_jobs(tx, gw)
    if typed and via == "add_jobs":
        expected[1] = {"body": {"fixed": 1}}
    assert sorted(job.payload for job in stored) == sorted(map(canonical, expected))
    assert sorted(canonical(job.payload) for job in returned) == sorted(map(canonical, expected))
    event("stored")


# --------------------------------------------------------------------------------------------
# Maintenance arguments


MAINTENANCE_ARGUMENTS = st.one_of(
    st.tuples(st.just("remove_job"), texts(512, optional=True)),
    st.tuples(st.just("permanently_fail_jobs"), texts(None, optional=True)),
    st.tuples(
        st.just("force_unlock_workers"),
        st.one_of(st.lists(texts(None, optional=False), max_size=3), texts(None, optional=True)),
    ),
    st.tuples(
        st.just("cleanup"),
        st.one_of(st.lists(texts(None, optional=False), max_size=3), texts(None, optional=True)),
    ),
    st.tuples(
        st.just("complete_jobs"),
        st.one_of(st.lists(ints(*BIGINT), max_size=3), ints(*BIGINT), st.just("123")),
    ),
)


def expected_maintenance(operation: str, argument: Any) -> Any:
    if operation == "remove_job":
        return expected_text(argument, 512)
    if operation == "permanently_fail_jobs":
        return None if argument is None else expected_text(argument, None)
    if operation in ("force_unlock_workers", "cleanup"):
        return expected_texts(argument)
    if isinstance(argument, (str, bytes)) or not isinstance(argument, list):
        raise Refused
    return [expected_int(item, *BIGINT) for item in argument]


def lock_job(tx: Connection, schema: str, job_id: int, worker: str) -> None:
    tx.execute(
        sql.SQL(
            "update {}._private_jobs set locked_at = now(), locked_by = %s where id = %s"
        ).format(sql.Identifier(schema)),
        [worker, job_id],
    )


def do_maintenance(
    tx_utils: WorkerUtils,
    tx: Connection,
    schema: str,
    operation: str,
    argument: Any,
    valid: Any,
) -> None:
    """Run the operation; when ``valid`` is not Refused, set up and check its effect."""
    ident = sql.Identifier(schema)
    if valid is Refused:
        call: Callable[[], object] = {
            "remove_job": lambda: tx_utils.remove_job(argument),
            "permanently_fail_jobs": lambda: tx_utils.permanently_fail_jobs([1], argument),
            "force_unlock_workers": lambda: tx_utils.force_unlock_workers(argument),
            "cleanup": lambda: tx_utils.cleanup(
                [CleanupTask.GC_TASK_IDENTIFIERS], task_identifiers_to_keep=argument
            ),
            "complete_jobs": lambda: tx_utils.complete_jobs(argument),
        }[operation]
        call()
        return
    if operation == "remove_job":
        job = tx_utils.add_raw_job("task", {}, JobSpec(job_key=argument))
        removed = tx_utils.remove_job(argument)
        assert removed is not None and (removed.id, removed.key) == (job.id, valid)
    elif operation == "permanently_fail_jobs":
        job = tx_utils.add_raw_job("task", {})
        (failed,) = tx_utils.permanently_fail_jobs([job.id], argument)
        assert failed.last_error == (valid or "Manually marked as failed")
    elif operation == "force_unlock_workers":
        ids = [tx_utils.add_raw_job("task", {}).id for _ in valid]
        for job_id, worker in zip(ids, valid, strict=True):
            lock_job(tx, schema, job_id, worker)
        tx_utils.force_unlock_workers(argument)
        assert tx.execute(
            sql.SQL("select count(*) from {}._private_jobs where locked_by is not null").format(
                ident
            )
        ).fetchone() == (0,)
    elif operation == "cleanup":
        creatable = [name for name in valid if len(name) <= 128]  # identifiers' own limit
        job_ids = [tx_utils.add_raw_job(name, {}).id for name in [*creatable, "gc_me"]]
        tx_utils.complete_jobs(job_ids)
        tx_utils.cleanup([CleanupTask.GC_TASK_IDENTIFIERS], task_identifiers_to_keep=argument)
        left = {
            row[0]
            for row in tx.execute(sql.SQL("select identifier from {}._private_tasks").format(ident))
        }
        assert left == set(creatable) | ({"gc_me"} & set(valid))
    else:
        assert tx_utils.complete_jobs(argument) == []


@pytest.mark.slow
@settings(HOSTILE, max_examples=EXAMPLES["maintenance"])
@given(case=MAINTENANCE_ARGUMENTS)
def test_a_generated_maintenance_argument_is_used_verbatim_or_refused_before_any_sql(
    tx_utils: WorkerUtils, tx: Connection, admin: Connection, gw: str, case: tuple[str, Any]
) -> None:
    operation, argument = case
    start_example(tx)
    try:
        valid = expected_maintenance(operation, argument)
    except Refused:
        valid = Refused
    event(f"{operation}: {'refused' if valid is Refused else 'used'}")

    if valid is Refused:
        with pytest.raises(InvalidJobSpec):
            do_maintenance(tx_utils, tx, gw, operation, argument, valid)
        assert_nothing_sent(tx, admin, gw)
    else:
        do_maintenance(tx_utils, tx, gw, operation, argument, valid)


# --------------------------------------------------------------------------------------------
# Text that looks like SQL


def injections(schema: str) -> st.SearchStrategy[str]:
    """Strings assembled from fragments that break out of quotes in many ways, some aimed at
    the canary table of ``schema`` (that no statement of the library touches)."""
    canary = sql.Identifier(schema, "canary").as_string(None)
    pwned = sql.Identifier(schema, "pwned").as_string(None)
    fragments = [
        "'",
        "''",
        '"',
        '""',
        ";",
        "--",
        "/*",
        "*/",
        "$$",
        "$gw$",
        "$gw1$",
        "$body$",
        "\\",
        "\\'",
        "E'",
        "U&'\\0041'",
        "%s",
        "%%",
        "%(identifier)s",
        "%(payload)s",
        "{}",
        "{{ schema }}",
        "{% raw %}",
        ")",
        "(",
        "::json",
        "::text[]",
        "null",
        "\n",
        "\r\n",
        "\x1a",
        "\u2028",
        "é",
        "🐘",
        " or 1=1",
        "\\x00",
        "\\u0000",
        f"); drop table {canary}; --",
        f"'; drop table {canary}; --",
        f'"; drop table {canary}; --',
        f"$$; drop table {canary}; $$",
        f"$gw$; delete from {canary}; $gw$",
        f"\\'; insert into {canary} values (666); --",
        f"') returning *; create table {pwned}(); --",
        "; select pg_sleep(5); --",
    ]
    return st.lists(
        st.one_of(st.sampled_from(fragments), st.text(PLAIN_CHARACTERS, min_size=1, max_size=3)),
        min_size=1,
        max_size=5,
    ).map("".join)


def assert_canary_alive(tx: Connection, schema: str) -> None:
    ident = sql.Identifier(schema)
    assert tx.execute(sql.SQL("select array_agg(id) from {}.canary").format(ident)).fetchone() == (
        [42],
    )
    assert tx.execute(
        "select to_regclass(%s)", [sql.Identifier(schema, "pwned").as_string(tx)]
    ).fetchone() == (None,)


@pytest.mark.slow
@settings(HOSTILE, max_examples=EXAMPLES["injection_enqueue"])
@given(data=st.data(), via=st.sampled_from(["add_raw_job", "add_raw_jobs"]))
def test_generated_sql_like_text_in_every_enqueue_field_is_stored_verbatim(
    tx_utils: WorkerUtils, tx: Connection, gw: str, data: st.DataObject, via: str
) -> None:
    text = injections(gw)
    identifier = data.draw(text.map(lambda s: s[:128]), "identifier")
    queue_name = data.draw(text.map(lambda s: s[:128]), "queue_name")
    job_key = data.draw(text, "job_key")
    flags = data.draw(st.lists(text, min_size=1, max_size=3), "flags")
    payload = data.draw(st.dictionaries(text, text, min_size=1, max_size=3), "payload")
    start_example(tx)
    spec = JobSpec(queue_name=queue_name, job_key=job_key, flags=flags)

    if via == "add_raw_job":
        returned = [tx_utils.add_raw_job(identifier, payload, spec)]
    else:
        returned = tx_utils.add_raw_jobs([RawJobSpec(identifier, payload, spec)])

    expected = Expected(
        identifier,
        queue_name,
        job_key,
        0,
        25,
        frozenset(flags),
        None,
        canonical(payload),
        JobKeyMode.REPLACE,
    )
    assert_stored(tx, gw, [expected], returned)
    assert_canary_alive(tx, gw)


@pytest.mark.slow
@settings(HOSTILE, max_examples=EXAMPLES["injection_maintenance"])
@given(data=st.data())
def test_generated_sql_like_text_in_every_maintenance_argument_is_data(
    tx_utils: WorkerUtils, tx: Connection, gw: str, data: st.DataObject
) -> None:
    text = injections(gw)
    kept, doomed = data.draw(
        st.lists(text.map(lambda s: s[:128]), min_size=2, max_size=2, unique=True), "tasks"
    )
    key = data.draw(text, "job_key")
    reason = data.draw(text, "reason")
    workers = data.draw(st.lists(text, min_size=1, max_size=3, unique=True), "worker_ids")
    start_example(tx)
    keyed = tx_utils.add_raw_job(kept, {}, JobSpec(job_key=key))
    failing = tx_utils.add_raw_job(doomed, {})
    locked = [tx_utils.add_raw_job(kept, {}).id for _ in workers]
    for job_id, worker in zip(locked, workers, strict=True):
        lock_job(tx, gw, job_id, worker)

    removed = tx_utils.remove_job(key)
    (failed,) = tx_utils.permanently_fail_jobs([failing.id], reason)
    tx_utils.force_unlock_workers(workers)
    unlocked = tx.execute(
        sql.SQL("select count(*) from {}._private_jobs where locked_by is not null").format(
            sql.Identifier(gw)
        )
    ).fetchone()
    tx_utils.complete_jobs(locked)
    cleaned = tx_utils.cleanup(
        [CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS, CleanupTask.GC_TASK_IDENTIFIERS],
        task_identifiers_to_keep=[kept],
    )

    assert removed is not None and (removed.id, removed.key) == (keyed.id, key)
    assert (failed.id, failed.last_error) == (failing.id, reason)
    assert unlocked == (0,)
    assert cleaned == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: 1,
    }
    assert tx.execute(
        sql.SQL("select array_agg(identifier) from {}._private_tasks").format(sql.Identifier(gw))
    ).fetchone() == ([kept],)
    assert_canary_alive(tx, gw)


# --------------------------------------------------------------------------------------------
# Schema names


def namespace_count(admin: Connection, name: str) -> int:
    row = admin.execute("select count(*) from pg_namespace where nspname = %s", [name]).fetchone()
    assert row is not None
    return int(row[0])


def truncated(name: str, limit: int = 63) -> str:
    """The name PostgreSQL would make of ``name``: cut at ``limit`` bytes, on a character."""
    data = name.encode("utf-8")[:limit]
    return data.decode("utf-8", errors="ignore")


def exercise(admin: Connection, name: str) -> None:
    """Migrate a schema and use every operation on it; check the schema has exactly that name."""
    tx_utils = WorkerUtils(admin, schema=name)
    assert tx_utils.migrate().revision == 20
    job = tx_utils.add_raw_job("task", {"n": 1}, JobSpec(queue_name="q", job_key="k"))
    batch = tx_utils.add_raw_jobs(
        [RawJobSpec("other", {"n": 2}, JobSpec(queue_name="q2")), RawJobSpec("third", {"n": 3})]
    )
    assert sorted((j.task_identifier, j.queue_name) for j in batch) == [
        ("other", "q2"),
        ("third", None),
    ]
    tx_utils.reschedule_jobs([batch[0].id], RescheduleOptions(priority=3))
    tx_utils.permanently_fail_jobs([batch[1].id])
    tx_utils.complete_jobs([batch[0].id])
    tx_utils.force_unlock_workers(["nobody"])
    removed = tx_utils.remove_job("k")
    assert removed is not None and removed.id == job.id
    assert tx_utils.cleanup(list(CleanupTask)) == {
        CleanupTask.DELETE_PERMANENTLY_FAILED_JOBS: 1,
        CleanupTask.GC_TASK_IDENTIFIERS: 3,
        CleanupTask.GC_JOB_QUEUES: 2,
    }
    assert tx_utils.schema_status().revision == 20
    assert namespace_count(admin, name) == 1


@pytest.fixture
def drop_after(pg_server: PgServer) -> Iterator[Callable[[str], str]]:
    """Register schema names (and what PostgreSQL would truncate them to) to drop at teardown."""
    names: list[str] = []

    def register(name: str) -> str:
        names.append(name)
        return name

    yield register
    for name in names:
        if has_surrogate(name) or "\x00" in name:
            continue  # no such schema can exist
        for candidate in {name, truncated(name)}:
            drop_schema(pg_server, candidate)


SCHEMA_SUFFIX_CHARACTERS = st.one_of(
    st.sampled_from(
        [
            '"',
            "'",
            ";",
            " ",
            "$",
            "$$",
            "\\",
            "%",
            "-",
            ".",
            "é",
            "東",
            "🐘",
            "\t",
            "\n",
            "A",
            "\ud800",
            "\x00",
            "`",
            "*/",
            "--",
        ]
    ),
    st.characters(exclude_categories=()),
)


@pytest.mark.slow
@settings(HOSTILE, max_examples=EXAMPLES["schema_name"])
@given(suffix=st.lists(SCHEMA_SUFFIX_CHARACTERS, min_size=1, max_size=30).map("".join))
def test_a_generated_schema_name_is_a_schema_of_exactly_that_name_or_refused(
    admin: Connection, drop_after: Callable[[str], str], suffix: str
) -> None:
    name = drop_after(f"{NAME_PREFIX}{uuid.uuid4().hex[:6]}{suffix}")
    refused = "\x00" in name or has_surrogate(name) or len(name.encode("utf-8")) > 63

    try:
        exercise(admin, name)
    except InvalidSchemaName:
        assert refused, f"refused a valid schema name {name!r}"
        if not has_surrogate(name) and "\x00" not in name:
            assert namespace_count(admin, truncated(name)) == 0
        event("refused")
        return
    assert not refused, f"used an invalid schema name {name!r}"
    event("used")


ODD_SCHEMA_SUFFIXES = [
    pytest.param(" with spaces ", id="spaces"),
    pytest.param("semi;colon; drop schema public cascade; --", id="semicolons"),
    pytest.param("quo\"te's", id="quotes"),
    pytest.param("$$dollar$gw$ $gw1$", id="dollar-quotes"),
    pytest.param("back\\slash\\\\", id="backslashes"),
    pytest.param("ÜñíçødÉ 東京 🐘", id="unicode"),
    pytest.param("MixedCase", id="mixed-case"),
    pytest.param("{{ schema }}{# x #}", id="jinja"),
]


@pytest.mark.parametrize("suffix", ODD_SCHEMA_SUFFIXES)
def test_an_odd_schema_name_is_a_schema_of_exactly_that_name(
    admin: Connection, drop_after: Callable[[str], str], suffix: str
) -> None:
    exercise(admin, drop_after(f"{NAME_PREFIX}{uuid.uuid4().hex[:6]}{suffix}"))


@pytest.mark.parametrize(
    "suffix", ["100%", "a%sb", "%(schema)s", "%%"], ids=["percent", "percent-s", "named", "double"]
)
def test_a_schema_name_with_a_percent_sign_is_refused_not_misread_as_a_placeholder(
    admin: Connection, drop_after: Callable[[str], str], suffix: str
) -> None:
    # psycopg reads % in statement text as a placeholder, and the quoted schema is part of
    # that text: the library refuses the name rather than run on a misread one ("x%%" would
    # have become schema "x%").
    name = drop_after(f"{NAME_PREFIX}{uuid.uuid4().hex[:6]}{suffix}")
    with pytest.raises(InvalidSchemaName, match="must not contain '%'"):
        WorkerUtils(admin, schema=name)
    misread = name.replace("%%", "%")
    created = admin.execute(
        "select nspname from pg_namespace where nspname in (%s, %s)", [name, misread]
    ).fetchall()
    assert created == []


def sixty_three_bytes(tail: str) -> str:
    """A schema name of exactly 63 UTF-8 bytes ending with ``tail`` characters."""
    head = f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}"
    fill = 63 - len(head.encode("utf-8"))
    while len(tail.encode("utf-8")) > fill:
        tail = tail[:-1]
    name = head + "x" * (fill - len(tail.encode("utf-8"))) + tail
    assert len(name.encode("utf-8")) == 63
    return name


@pytest.mark.parametrize("tail", ["", "é" * 10, "🐘" * 5], ids=["ascii", "two-byte", "four-byte"])
def test_a_schema_name_of_exactly_63_bytes_is_accepted_and_migrates(
    admin: Connection, drop_after: Callable[[str], str], tail: str
) -> None:
    exercise(admin, drop_after(sixty_three_bytes(tail)))


@pytest.mark.parametrize(
    "extra", ["x", "é", "🐘", "x" * 200], ids=["one-byte-over", "two-byte", "four-byte", "long"]
)
def test_a_schema_name_over_63_bytes_is_refused_naming_the_limit_and_nothing_is_created(
    admin: Connection, drop_after: Callable[[str], str], extra: str
) -> None:
    name = drop_after(sixty_three_bytes("") + extra)

    with pytest.raises(InvalidSchemaName) as raised:
        WorkerUtils(admin, schema=name).migrate()

    assert "63" in str(raised.value)
    assert namespace_count(admin, truncated(name)) == 0


@pytest.mark.parametrize(
    "name", ["gw\ud800", "\udfff", "gw\ud83d\ude00"], ids=["high", "low", "pair"]
)
def test_a_schema_name_with_a_lone_surrogate_is_refused_with_invalid_schema_name(
    admin: Connection, name: str
) -> None:
    with pytest.raises(InvalidSchemaName, match="schema"):
        WorkerUtils(admin, schema=name)


def test_a_schema_name_postgresql_reserves_fails_migrate_with_a_migration_error(
    admin: Connection, drop_after: Callable[[str], str]
) -> None:
    name = drop_after(f"pg_gwu_{uuid.uuid4().hex[:8]}")

    with pytest.raises(MigrationError, match="pg_"):
        WorkerUtils(admin, schema=name).migrate()

    assert namespace_count(admin, name) == 0


# --------------------------------------------------------------------------------------------
# run_at values at the edges (found by the generated jobs above; one test per behaviour)


BOTH = pytest.mark.parametrize("via", ["add_raw_job", "add_raw_jobs"])


def enqueue(tx_utils: WorkerUtils, via: str, spec: JobSpec) -> Job:
    if via == "add_raw_job":
        return tx_utils.add_raw_job("task", {}, spec)
    (job,) = tx_utils.add_raw_jobs([RawJobSpec("task", {}, spec)])
    return job


@BOTH
@pytest.mark.parametrize("hours", [16, -16, 23], ids=["plus-16h", "minus-16h", "plus-23h"])
def test_a_run_at_with_a_utc_offset_beyond_16_hours_is_stored_as_its_instant(
    tx_utils: WorkerUtils, tx: Connection, gw: str, via: str, hours: int
) -> None:
    run_at = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=hours)))

    job = enqueue(tx_utils, via, JobSpec(run_at=run_at))

    assert job.run_at == run_at
    (stored,) = stored_jobs(tx, gw)[0]
    assert stored.run_at == run_at


@BOTH
def test_a_run_at_with_a_sub_second_utc_offset_is_stored_as_its_instant(
    tx_utils: WorkerUtils, tx: Connection, gw: str, via: str
) -> None:
    offset = dt.timedelta(hours=5, microseconds=250)
    run_at = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone(offset))

    job = enqueue(tx_utils, via, JobSpec(run_at=run_at))

    assert job.run_at == run_at
    (stored,) = stored_jobs(tx, gw)[0]
    assert stored.run_at == run_at


OUT_OF_RANGE_RUN_ATS = pytest.mark.parametrize(
    "run_at",
    [
        dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    ],
    ids=["before-year-1-in-utc", "after-year-9999-in-utc"],
)


@BOTH
@OUT_OF_RANGE_RUN_ATS
def test_a_run_at_whose_utc_instant_no_datetime_holds_is_refused_before_any_sql(
    tx_utils: WorkerUtils,
    tx: Connection,
    admin: Connection,
    gw: str,
    via: str,
    run_at: dt.datetime,
) -> None:
    with pytest.raises(InvalidJobSpec, match="run_at"):
        enqueue(tx_utils, via, JobSpec(run_at=run_at))

    assert_nothing_sent(tx, admin, gw)


@BOTH
@OUT_OF_RANGE_RUN_ATS
def test_an_enqueue_that_raises_on_an_autocommit_connection_has_written_nothing(
    admin: Connection, gw: str, via: str, run_at: dt.datetime
) -> None:
    autocommit_utils = WorkerUtils(admin, schema=gw)

    with pytest.raises(InvalidJobSpec):
        enqueue(autocommit_utils, via, JobSpec(run_at=run_at))

    assert admin.execute(
        sql.SQL("select count(*) from {}._private_jobs").format(sql.Identifier(gw))
    ).fetchone() == (0,)


@OUT_OF_RANGE_RUN_ATS
def test_a_reschedule_run_at_whose_utc_instant_no_datetime_holds_is_refused_before_any_sql(
    admin: Connection, tx: Connection, gw: str, run_at: dt.datetime
) -> None:
    job = WorkerUtils(admin, schema=gw).add_raw_job("task", {})
    before = admin.execute(
        sql.SQL("select run_at from {}._private_jobs").format(sql.Identifier(gw))
    ).fetchone()

    with pytest.raises(InvalidJobSpec, match="run_at"):
        WorkerUtils(tx, schema=gw).reschedule_jobs([job.id], RescheduleOptions(run_at=run_at))

    assert tx.info.transaction_status == pq.TransactionStatus.IDLE
    assert (
        admin.execute(
            sql.SQL("select run_at from {}._private_jobs").format(sql.Identifier(gw))
        ).fetchone()
        == before
    )


# --------------------------------------------------------------------------------------------
# Payload edges


def nested(depth: int, kind: str) -> tuple[Any, str]:
    """A value nested ``depth`` levels deep, and its compact JSON text."""
    value: Any = []
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    text = (
        "[" * (depth + 1) + "]" * (depth + 1)
        if kind == "list"
        else ('{"a":' * depth + "[]" + "}" * depth)
    )
    return value, text


@BOTH
@pytest.mark.parametrize("depth", [64, 512, 5000, 200_000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_a_deeply_nested_payload_is_stored_exactly_or_refused_as_too_deep(
    tx_utils: WorkerUtils,
    tx: Connection,
    admin: Connection,
    gw: str,
    via: str,
    depth: int,
    kind: str,
) -> None:
    payload, text = nested(depth, kind)

    try:
        if via == "add_raw_job":
            tx_utils.add_raw_job("deep", payload)
        else:
            tx_utils.add_raw_jobs([RawJobSpec("deep", payload), RawJobSpec("flat", {})])
    except InvalidJobSpec as error:
        assert "nested too deeply" in str(error)
        assert depth > 512, "refused a payload only 512 levels deep"
        assert_nothing_sent(tx, admin, gw)
        return

    (stored,) = tx.execute(
        sql.SQL(
            "select payload::text from {}._private_jobs j join {}._private_tasks t"
            " on t.id = j.task_id where t.identifier = 'deep'"
        ).format(sql.Identifier(gw), sql.Identifier(gw))
    ).fetchone()  # type: ignore[misc]
    assert "".join(stored.split()) == text


@pytest.mark.parametrize("make", [_cycle, _point_cycle], ids=["list-dict", "attrs"])
def test_a_payload_that_contains_itself_is_refused_before_any_sql(
    tx_utils: WorkerUtils,
    tx: Connection,
    admin: Connection,
    gw: str,
    make: Callable[[], Any],
) -> None:
    with pytest.raises(InvalidJobSpec, match="payload"):
        tx_utils.add_raw_jobs([RawJobSpec("fine", {}), RawJobSpec("loop", {"x": make()})])

    assert_nothing_sent(tx, admin, gw)


def test_an_int_too_long_for_python_to_print_is_refused_naming_the_payload(
    tx_utils: WorkerUtils, tx: Connection, admin: Connection, gw: str
) -> None:
    with pytest.raises(InvalidJobSpec, match="payload"):
        tx_utils.add_raw_job("task", {"n": HugeInt()})

    assert_nothing_sent(tx, admin, gw)


@BOTH
def test_a_high_and_a_low_surrogate_side_by_side_read_back_as_one_astral_character(
    tx_utils: WorkerUtils, tx: Connection, gw: str, via: str
) -> None:
    # Documented behaviour pinned: lone surrogates travel as \\uXXXX escapes, and JSON reads a
    # high escape followed by a low one as a single character. The Python string changes.
    if via == "add_raw_job":
        tx_utils.add_raw_job("task", {"s": "\ud83d\ude00"})
    else:
        tx_utils.add_raw_jobs([RawJobSpec("task", {"s": "\ud83d\ude00"})])

    (stored,) = stored_jobs(tx, gw)[0]
    assert json.loads(stored.payload) == {"s": "😀"}


def test_job_ids_that_mix_an_int_enum_with_bigint_ids_are_used_as_ints(
    tx_utils: WorkerUtils, tx: Connection, gw: str
) -> None:
    job = tx_utils.add_raw_job("task", {})

    # Ids above 2**31 are ordinary for a busy queue (the column is bigint).
    done = tx_utils.complete_jobs([Level.LOW, job.id, 2**40])

    assert [j.id for j in done] == [job.id]


def test_a_cleanup_keep_list_that_is_not_iterable_is_refused_before_any_sql(
    tx_utils: WorkerUtils, tx: Connection, admin: Connection, gw: str
) -> None:
    with pytest.raises(InvalidJobSpec, match="task_identifiers_to_keep"):
        tx_utils.cleanup([CleanupTask.GC_TASK_IDENTIFIERS], task_identifiers_to_keep=5)  # type: ignore[arg-type]

    assert_nothing_sent(tx, admin, gw)
