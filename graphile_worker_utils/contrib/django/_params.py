"""Request parameters of the admin pages, checked before anything reaches the database.

Pure: no Django, no I/O. Parameters arrive as a mapping of name to every value given (what
``dict(request.GET.lists())`` makes). Anything unusable raises :class:`BadParameter`, whose
message names the parameter and what it accepts; the views show it instead of a page of
results. No value is ever put into SQL text: the library binds them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import attrs

from ..._errors import InvalidJobSpec
from ..._types import (
    BIGINT_MAX,
    MAX_IDENTIFIER_LENGTH,
    MAX_JOB_KEY_LENGTH,
    MAX_QUEUE_NAME_LENGTH,
    JobState,
    check_text,
)

Params = Mapping[str, Sequence[str]]

#: Jobs on a page unless ``limit`` says otherwise, and the most it may say (a page's form
#: must stay within Django's DATA_UPLOAD_MAX_NUMBER_FIELDS, 1000 by default).
PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
#: The most jobs one action may name (a page is at most MAX_PAGE_SIZE).
MAX_SELECTED = MAX_PAGE_SIZE
#: The longest reason accepted for a permanent failure.
MAX_REASON_LENGTH = 10_000

_STATE_VALUES = ", ".join(state.value for state in JobState)


class BadParameter(ValueError):
    """A request parameter that cannot be used; the message names it and the accepted values."""


def _single(params: Params, name: str) -> str | None:
    values = [value for value in params.get(name, ()) if value.strip()]
    if len(values) > 1:
        raise BadParameter(f"{name}: given {len(values)} times, expected once")
    return values[0].strip() if values else None


def _texts(params: Params, name: str, limit: int) -> tuple[str, ...]:
    texts = []
    for value in params.get(name, ()):
        value = value.strip()
        if not value:
            continue
        try:
            texts.append(check_text(name, value, limit))
        except InvalidJobSpec as error:
            raise BadParameter(str(error)) from None
    return tuple(dict.fromkeys(texts))


def parse_id(name: str, text: str) -> int:
    """``text`` as a job id: digits only, 1 .. 2**63-1."""
    text = text.strip()
    # The length first: int() refuses strings of over 4300 digits with a ValueError.
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not (
        1 <= int(text) <= BIGINT_MAX
    ):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise BadParameter(f"{name}: {shown!r} is not a job id (a whole number from 1)")
    return int(text)


def parse_states(params: Params) -> tuple[JobState, ...]:
    """The ``state`` values as :class:`JobState` members (each once)."""
    states = []
    for value in params.get("state", ()):
        if not value.strip():
            continue
        try:
            states.append(JobState(value.strip()))
        except ValueError:
            raise BadParameter(
                f"state: {value[:40]!r} is not a job state (one of {_STATE_VALUES})"
            ) from None
    return tuple(dict.fromkeys(states))


@attrs.frozen(kw_only=True)
class JobQuery:
    """What the jobs list shows: filters, a search, and the page (keyset: ids after
    ``after_id``)."""

    states: tuple[JobState, ...] = ()
    tasks: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    #: A job id or a job key, exactly as given.
    search: str | None = None
    after_id: int | None = None
    limit: int = PAGE_SIZE

    @property
    def search_id(self) -> int | None:
        """The search as a job id, when it is one."""
        if self.search is None:
            return None
        try:
            return parse_id("q", self.search)
        except BadParameter:
            return None

    def list_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``WorkerUtils.list_jobs`` for this page."""
        return {
            "task_identifiers": self.tasks or None,
            "queue_names": self.queues or None,
            "states": self.states or None,
            "after_id": self.after_id,
            "limit": self.limit,
        }

    def params(self, **changes: Any) -> str:
        """The query string of this list with ``changes`` (None leaves a parameter out)."""
        query = attrs.evolve(self, **changes)
        pairs: list[tuple[str, str]] = [("state", state.value) for state in query.states]
        pairs += [("task", task) for task in query.tasks]
        pairs += [("queue", queue) for queue in query.queues]
        if query.search is not None:
            pairs.append(("q", query.search))
        if query.after_id is not None:
            pairs.append(("after", str(query.after_id)))
        if query.limit != PAGE_SIZE:
            pairs.append(("limit", str(query.limit)))
        return "?" + urlencode(pairs) if pairs else ""


def job_query(params: Params) -> JobQuery:
    """The jobs list's parameters: ``state``, ``task``, ``queue`` (each repeatable), ``q``
    (a job id or key), ``after`` (a job id) and ``limit`` (1..MAX_PAGE_SIZE)."""
    after = _single(params, "after")
    limit = _single(params, "limit")
    search = _single(params, "q")
    if search is not None:
        _texts({"q": [search]}, "q", MAX_JOB_KEY_LENGTH)
    if limit is not None and not (
        limit.isascii() and limit.isdigit() and len(limit) <= 4 and 1 <= int(limit) <= MAX_PAGE_SIZE
    ):
        raise BadParameter(
            f"limit: {limit[:40]!r} is not a page size (a whole number 1..{MAX_PAGE_SIZE})"
        )
    return JobQuery(
        states=parse_states(params),
        tasks=_texts(params, "task", MAX_IDENTIFIER_LENGTH),
        queues=_texts(params, "queue", MAX_QUEUE_NAME_LENGTH),
        search=search,
        after_id=None if after is None else parse_id("after", after),
        limit=PAGE_SIZE if limit is None else int(limit),
    )


def selected_ids(params: Params) -> list[int]:
    """The ``job_id`` values of an action on selected jobs (at least one, each once)."""
    ids = [parse_id("job_id", value) for value in params.get("job_id", ()) if value.strip()]
    if not ids:
        raise BadParameter("job_id: no job selected; tick the jobs to act on")
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_SELECTED:
        raise BadParameter(f"job_id: {len(ids)} jobs selected, over the limit of {MAX_SELECTED}")
    return ids


def reason(params: Params) -> str | None:
    """The ``reason`` of a permanent failure; None when blank (the library's default)."""
    text = "\n".join(params.get("reason", ())).strip()
    if not text:
        return None
    if len(text) > MAX_REASON_LENGTH:
        raise BadParameter(f"reason: {len(text)} characters, over the limit of {MAX_REASON_LENGTH}")
    try:
        return check_text("reason", text)
    except InvalidJobSpec as error:
        raise BadParameter(str(error)) from None


def job_key(params: Params) -> str:
    """The ``job_key`` of a removal."""
    key = _single(params, "job_key")
    if key is None:
        raise BadParameter("job_key: give the key of the job to remove")
    return _texts({"job_key": [key]}, "job_key", MAX_JOB_KEY_LENGTH)[0]


def worker_id(params: Params) -> str:
    """The ``worker_id`` of an unlock (a ``locked_by`` value)."""
    value = _single(params, "worker_id")
    if value is None:
        raise BadParameter("worker_id: give the id of the worker to unlock")
    return _texts({"worker_id": [value]}, "worker_id", 1000)[0]


def checked(params: Params, name: str) -> bool:
    """Whether the checkbox ``name`` was ticked."""
    return any(value in ("on", "1", "true", "yes") for value in params.get(name, ()))
