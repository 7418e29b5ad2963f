"""Value types: what callers pass in (specs) and what they get back (jobs).

Specs validate themselves when they are built, so a bad value is reported where it was made,
naming the field and the limit (:class:`InvalidJobSpec`), before any SQL is sent.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs

from ._errors import InvalidJobSpec, PayloadNotLoadedError
from ._public import public

SMALLINT_MIN, SMALLINT_MAX = -32768, 32767
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
MAX_IDENTIFIER_LENGTH = 128
MAX_QUEUE_NAME_LENGTH = 128
MAX_JOB_KEY_LENGTH = 512


@public
class JobKeyMode(str, enum.Enum):
    """What ``add_job`` does when a job with the same ``job_key`` exists (docs/schema.md §2)."""

    #: Overwrite the pending job (payload, run_at, queue, priority, …); a running or
    #: permanently failed one is detached and a new job is created. The default.
    REPLACE = "replace"
    #: Like REPLACE, but keep the existing ``run_at`` while the job has not been attempted:
    #: debouncing that does not push the job further away. In a batch, only for that job.
    PRESERVE_RUN_AT = "preserve_run_at"
    #: Keep the existing job whatever its state and only bump its revision. Single jobs only.
    UNSAFE_DEDUPE = "unsafe_dedupe"


@public
class JobState(str, enum.Enum):
    """Where a job stands, as of the statement that read it (the database's ``now()``).

    Every job is in exactly one state; :meth:`WorkerUtils.status` counts them,
    :meth:`WorkerUtils.list_jobs` filters by them and every returned :class:`Job` carries its
    own (``Job.state``). A lock counts only within graphile-worker's four-hour window
    (``locked_at`` later than ``now() - 4 hours``).

    Edge cases:

    - A lock older than four hours is stale: the job is no longer ``RUNNING`` but ready,
      retrying, scheduled or permanently failed by its other columns, as graphile-worker's
      maintenance functions (and ``complete_jobs``, ``reschedule_jobs`` ...) treat it. Its
      ``locked_at`` and ``locked_by`` still show until a worker clears stale locks, and
      :meth:`WorkerUtils.locked_workers` still lists them.
    - A job's ``attempts`` count the run in progress: a running job's first attempt already
      reads ``attempts == 1``, and a job running its last attempt has
      ``attempts == max_attempts`` (it is ``RUNNING``, and ``PERMANENTLY_FAILED`` only if that
      run fails).
    - graphile-worker 0.17+ keeps a finished job locked for a moment while it batches
      completions and failures: a job that just succeeded still reads ``RUNNING`` until the
      batch is flushed, and then disappears (a completed job is deleted); a job that just
      failed reads ``RUNNING`` until it becomes ``RETRYING`` or ``PERMANENTLY_FAILED``.
    - A state is a snapshot: a ``READY`` job may be running by the time you look at it.
    """

    #: Not locked, attempts left, due (``run_at`` has passed, retries included).
    READY = "ready"
    #: Not locked, never attempted, not due yet.
    SCHEDULED = "scheduled"
    #: Locked by a worker within the last four hours.
    RUNNING = "running"
    #: Not locked, failed at least once with attempts left, waiting out its back-off.
    RETRYING = "retrying"
    #: Not locked, all its attempts used: it will never run again.
    PERMANENTLY_FAILED = "permanently_failed"


@public
class CleanupTask(str, enum.Enum):
    """Maintenance that :meth:`WorkerUtils.cleanup` runs, always in this order."""

    #: Delete jobs that used all their attempts (and are not locked).
    DELETE_PERMANENTLY_FAILED_JOBS = "DELETE_PERMAFAILED_JOBS"
    #: Delete task identifiers that no job uses (except a keep-list).
    GC_TASK_IDENTIFIERS = "GC_TASK_IDENTIFIERS"
    #: Delete unlocked queues that no job uses.
    GC_JOB_QUEUES = "GC_JOB_QUEUES"


def check_items(value: object, field: str, expected: str) -> list[Any]:
    """``value``'s items as a list; InvalidJobSpec when it is not an iterable (a str counts as
    none) or iterating it raises, so that nothing is sent."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidJobSpec(
            f"{field}: expected an iterable of {expected}, got {type(value).__name__}"
        )
    try:
        return list(value)
    except Exception as error:
        raise InvalidJobSpec(
            f"{field}: iterating it raised {type(error).__name__}: {error}"
        ) from error


def check_text(field: str, value: object, max_length: int | None = None) -> str:
    """Return ``value`` if it is a non-empty str without NUL within ``max_length`` characters."""
    if not isinstance(value, str):
        raise InvalidJobSpec(f"{field}: expected a str, got {type(value).__name__}")
    if not value:
        raise InvalidJobSpec(f"{field}: must not be empty")
    if max_length is not None and len(value) > max_length:
        raise InvalidJobSpec(f"{field}: {len(value)} characters, over the limit of {max_length}")
    if "\x00" in value:
        raise InvalidJobSpec(f"{field}: must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJobSpec(
                f"{field}: contains a lone surrogate, which is not valid Unicode"
            ) from None
    # A str subclass (a StrEnum member, say) is sent as the plain string it holds.
    return value if type(value) is str else str.__str__(value)


def check_int(field: str, value: object, low: int, high: int) -> int:
    """Return ``value`` if it is an int (not a bool) within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobSpec(f"{field}: expected an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidJobSpec(f"{field}: {value} is outside the allowed range {low}..{high}")
    # An int subclass (an IntEnum member, say) is sent as the plain int it holds.
    return value if type(value) is int else int(value)


def check_duration(field: str, value: object) -> dt.timedelta | None:
    """Return ``value`` if it is None or a ``datetime.timedelta`` of zero or more."""
    if value is None:
        return None
    if not isinstance(value, dt.timedelta):
        raise InvalidJobSpec(
            f"{field}: expected a datetime.timedelta or None, got {type(value).__name__}"
        )
    if value < dt.timedelta(0):
        raise InvalidJobSpec(f"{field}: must be a duration >= 0, got {value}")
    return value


def check_aware_datetime(field: str, value: object) -> dt.datetime:
    """Return ``value`` if it is a timezone-aware datetime."""
    if not isinstance(value, dt.datetime):
        raise InvalidJobSpec(f"{field}: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidJobSpec(
            f"{field}: naive datetime {value.isoformat()} is ambiguous; give it a tzinfo"
            " (for example datetime.timezone.utc)"
        )
    try:
        # Sent as its UTC instant: PostgreSQL takes no sub-second or over-16-hour offsets.
        return value.astimezone(dt.timezone.utc)
    except OverflowError:
        raise InvalidJobSpec(
            f"{field}: {value.isoformat()} is outside the range of datetime once in UTC"
        ) from None


# Converters that validate: a spec stores the checked, normalised value (plain str and int, UTC
# datetimes), so that what is sent is exactly what was checked.


def _queue_name(value: object) -> str | None:
    return None if value is None else check_text("queue_name", value, MAX_QUEUE_NAME_LENGTH)


def _job_key(value: object) -> str | None:
    return None if value is None else check_text("job_key", value, MAX_JOB_KEY_LENGTH)


def _run_at(value: object) -> dt.datetime | None:
    return None if value is None else check_aware_datetime("run_at", value)


def _priority(value: object) -> int | None:
    return None if value is None else check_int("priority", value, SMALLINT_MIN, SMALLINT_MAX)


def _max_attempts(value: object) -> int | None:
    return None if value is None else check_int("max_attempts", value, 1, SMALLINT_MAX)


def _attempts(value: object) -> int | None:
    return None if value is None else check_int("attempts", value, 0, SMALLINT_MAX)


def _to_job_key_mode(value: object) -> object:
    if value is None or isinstance(value, JobKeyMode):
        return value
    try:
        return JobKeyMode(value)
    except ValueError:
        allowed = ", ".join(repr(mode.value) for mode in JobKeyMode)
        raise InvalidJobSpec(f"job_key_mode: {value!r} is not one of {allowed}") from None


def _to_flags(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidJobSpec(
            f"flags: expected an iterable of str (a list or tuple), got {type(value).__name__}"
        )
    return tuple(check_text(f"flags[{index}]", flag) for index, flag in enumerate(value))


@public
@attrs.frozen(kw_only=True)
class JobSpec:
    """How and when a job runs. Every field defaults to None: the database's default.

    Example::

        JobSpec(queue_name="emails", run_at=datetime.now(UTC) + timedelta(minutes=5),
                job_key="welcome:42", job_key_mode=JobKeyMode.PRESERVE_RUN_AT)
    """

    #: Jobs of one queue run one at a time, in order. Non-empty, at most 128 characters.
    queue_name: str | None = attrs.field(default=None, converter=_queue_name)
    #: When the job may run; an aware datetime (a naive one is refused as ambiguous).
    #: None: now (the database's clock, or the application's with ``use_local_time``).
    run_at: dt.datetime | None = attrs.field(default=None, converter=_run_at)
    #: Lower runs first; a smallint (-32768..32767). None: 0.
    priority: int | None = attrs.field(default=None, converter=_priority)
    #: Attempts before the job is permanently failed, 1..32767. None: 25.
    max_attempts: int | None = attrs.field(default=None, converter=_max_attempts)
    #: A unique name for the job (1..512 characters) to replace or deduplicate it later.
    job_key: str | None = attrs.field(default=None, converter=_job_key)
    #: What to do when a job with ``job_key`` exists; None: REPLACE. It concerns this job
    #: only, in a batch too, and has no effect without a ``job_key``.
    job_key_mode: JobKeyMode | None = attrs.field(default=None, converter=_to_job_key_mode)
    #: Names a worker can be told to skip (graphile-worker's ``forbiddenFlags``).
    flags: tuple[str, ...] | None = attrs.field(default=None, converter=_to_flags)


DEFAULT_SPEC = JobSpec()


def _to_spec(value: object) -> JobSpec:
    if value is None:
        return DEFAULT_SPEC
    if not isinstance(value, JobSpec):
        raise InvalidJobSpec(f"spec: expected a JobSpec or None, got {type(value).__name__}")
    return value


def _to_identifier(value: object) -> str:
    return check_text("identifier", value, max_length=MAX_IDENTIFIER_LENGTH)


@public
@attrs.frozen
class RawJobSpec:
    """One job of :meth:`WorkerUtils.add_raw_jobs`: task identifier, JSON payload, spec."""

    #: The task to run (graphile-worker's task identifier), 1..128 characters.
    identifier: str = attrs.field(converter=_to_identifier)
    #: The job's payload: anything the payload encoder accepts. None: ``{}``.
    payload: Any = None
    #: How and when the job runs.
    spec: JobSpec = attrs.field(default=None, converter=_to_spec)


@public
@attrs.frozen(kw_only=True)
class RescheduleOptions:
    """What :meth:`WorkerUtils.reschedule_jobs` changes; a None field is left as it is."""

    run_at: dt.datetime | None = attrs.field(default=None, converter=_run_at)
    priority: int | None = attrs.field(default=None, converter=_priority)
    attempts: int | None = attrs.field(default=None, converter=_attempts)
    max_attempts: int | None = attrs.field(default=None, converter=_max_attempts)


@public
@runtime_checkable
class Task(Protocol):
    """A typed job for :meth:`WorkerUtils.add_job` and :meth:`WorkerUtils.add_jobs`.

    Supported: an instance of an attrs class or of a dataclass. Its ``IDENTIFIER`` class
    attribute (a str; ``ClassVar[str]``, not a field) names the task, and its fields are the
    payload: a JSON object with one key per field, each value encoded by the payload rules.
    Refused with :class:`InvalidJobSpec`, before any SQL: the class itself instead of an
    instance, a NamedTuple (it would be a JSON array), a plain class, a dict or any other
    object, a missing or non-str ``IDENTIFIER``, and an ``IDENTIFIER`` declared as a field.
    Use :meth:`WorkerUtils.add_raw_job` for any other payload.

    Example::

        @attrs.frozen
        class SendEmail:
            IDENTIFIER: ClassVar[str] = "send_email"
            to: str
            subject: str
    """

    IDENTIFIER: ClassVar[str]


_UNDECODED: Any = object()


@public
@attrs.frozen(slots=True, unsafe_hash=False)
class Job:
    """A job row as the database returned it. Datetimes are timezone-aware UTC.

    The payload arrives as the JSON text the database stores (``payload_json``) and is decoded
    on first access of ``payload``, so enqueueing many jobs does not pay for decoding payloads
    nobody reads.

    Two jobs are equal when every column is; payloads compare as their ``payload_json`` text.
    A job is not hashable (``hash(job)`` raises TypeError, with or without flags): it is a
    snapshot of a row whose ``flags`` is a list, and two snapshots of one job differ once it
    changes; key dicts and sets by ``job.id``. ``pickle``, ``copy.copy``, ``copy.deepcopy`` and
    ``attrs.evolve`` make an equal job (evolved: with the changes) whose ``payload`` is decoded
    again from its own ``payload_json``: the decoded value is never carried over, so a copy
    never shares a mutable payload with the original and always matches its JSON text.
    """

    id: int
    #: The task identifier (resolved from ``task_id``, never by position in a batch).
    task_identifier: str
    #: The queue name, or None for a job outside any queue.
    queue_name: str | None
    #: The payload as stored: JSON text; None when it was not loaded
    #: (:meth:`WorkerUtils.list_jobs` without ``include_payload``).
    payload_json: str | None
    priority: int
    run_at: dt.datetime
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    key: str | None
    locked_at: dt.datetime | None
    locked_by: str | None
    revision: int
    #: The flag names given when the job was added, or None.
    flags: list[str] | None
    task_id: int
    job_queue_id: int | None
    #: The job's :class:`JobState` as of the statement that returned it; None where that
    #: statement deleted the job (:meth:`WorkerUtils.complete_jobs`, and
    #: :meth:`WorkerUtils.remove_job` unless the job was running).
    state: JobState | None = None
    _payload: Any = attrs.field(init=False, default=_UNDECODED, eq=False, repr=False)

    @property
    def payload(self) -> Any:
        """The payload, decoded from ``payload_json`` (once, on first access).

        Raises :class:`PayloadNotLoadedError` when the payload was not loaded
        (:meth:`WorkerUtils.list_jobs` without ``include_payload``).
        """
        value = self._payload
        if value is _UNDECODED:
            text = self.payload_json
            if text is None:
                raise PayloadNotLoadedError(
                    f"job {self.id}: its payload was not loaded; use list_jobs(...,"
                    " include_payload=True) or get_job(job_id)"
                )
            value = json.loads(text)
            object.__setattr__(self, "_payload", value)
        return value

    def __getstate__(self) -> dict[str, Any]:
        # The decoded payload is a cache of payload_json: left out, so that it is rebuilt
        # from the text (never a stale or shared value, never a foreign sentinel).
        return {name: getattr(self, name) for name in _JOB_STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in _JOB_STATE:
            # A job pickled by a release without a later field gets that field's default.
            value = state[name] if name in state else _JOB_DEFAULTS[name]
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_payload", _UNDECODED)

    @property
    def is_permanently_failed(self) -> bool:
        """Whether the job used all its attempts and will never run again."""
        return self.attempts >= self.max_attempts


#: The columns a pickled or copied job carries: every field but the payload cache.
_JOB_STATE = tuple(field.name for field in attrs.fields(Job) if field.init)
#: The fields added after the first release, with their defaults (``state``).
_JOB_DEFAULTS = {
    field.name: field.default
    for field in attrs.fields(Job)
    if field.init and field.default is not attrs.NOTHING
}
