"""Typed tasks (attrs classes and dataclasses) as raw jobs: pure, no I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ._errors import InvalidJobSpec
from ._types import RawJobSpec, check_items

#: What add_job and add_jobs accept as a task, for their error messages.
_TASK_SHAPES = (
    "an instance of an attrs class or a dataclass whose IDENTIFIER class attribute names the"
    " task (use add_raw_job(s) for any other payload)"
)


def task_fields(task: object, where: str) -> tuple[str, ...]:
    """The names of ``task``'s fields; InvalidJobSpec (naming ``where``) for anything else."""
    # Only attrs classes and dataclasses: their fields are named, so the payload is a JSON
    # object. A NamedTuple or a plain object would be an array or be refused by the encoder.
    if isinstance(task, type):
        raise InvalidJobSpec(
            f"{where}: got the class {task.__name__}, not an instance; expected {_TASK_SHAPES}"
        )
    cls = type(task)
    if attrs.has(cls):
        return tuple(field.name for field in attrs.fields(cls))
    if dataclasses.is_dataclass(cls):
        return tuple(field.name for field in dataclasses.fields(cls))
    raise InvalidJobSpec(f"{where}: {cls.__name__} is not a typed task; expected {_TASK_SHAPES}")


def task_identifier(task: object, where: str) -> str:
    """The task identifier ``task``'s class names in its ``IDENTIFIER`` class attribute."""
    name = type(task).__name__
    if "IDENTIFIER" in task_fields(task, where):
        raise InvalidJobSpec(
            f"{where}: {name}.IDENTIFIER is a field, so it would be sent in the payload; declare"
            " it as a class attribute: IDENTIFIER: ClassVar[str] = ..."
        )
    identifier = getattr(type(task), "IDENTIFIER", None)
    if identifier is None:
        raise InvalidJobSpec(f"{where}: {name} has no IDENTIFIER class attribute naming its task")
    if not isinstance(identifier, str):
        raise InvalidJobSpec(
            f"{where}: {name}.IDENTIFIER: expected a str, got {type(identifier).__name__}"
        )
    return identifier


def task_payload(task: object) -> dict[str, Any]:
    """A typed task's payload: a dict of its fields (not deep-copied), so that trace
    propagation and hooks see the same shape as for a raw dict payload."""
    return {name: getattr(task, name) for name in task_fields(task, "task")}


def task_and_spec(item: object, index: int) -> tuple[object, Any]:
    """One item of add_jobs: a task, or a ``(task, spec)`` pair."""
    # Only a plain 2-tuple is a pair: a NamedTuple task is a tuple too. The spec's own type is
    # checked by RawJobSpec, which names it (jobs[i].spec).
    if type(item) is not tuple:
        return item, None
    if len(item) != 2:
        raise InvalidJobSpec(
            f"jobs[{index}]: expected a task or a (task, spec) pair, got a tuple of"
            f" {len(item)} item{'' if len(item) == 1 else 's'}"
        )
    return item[0], item[1]


def raw_jobs(tasks: object) -> list[RawJobSpec]:
    """add_jobs' items as the RawJobSpecs add_raw_jobs takes, each checked (``jobs[i]``)."""
    raw = []
    for index, item in enumerate(check_items(tasks, "tasks", "tasks or (task, spec) pairs")):
        task, spec = task_and_spec(item, index)
        identifier = task_identifier(task, f"jobs[{index}]")
        try:
            raw.append(RawJobSpec(identifier, task_payload(task), spec))
        except InvalidJobSpec as error:
            raise InvalidJobSpec(f"jobs[{index}].{error}") from None
    return raw


def iter_raw_jobs(tasks: object) -> Iterator[RawJobSpec]:
    """:func:`raw_jobs`, one item at a time (for bulk_add_jobs, which never holds its input)."""
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
        raise InvalidJobSpec(
            "tasks: expected an iterable of tasks or (task, spec) pairs,"
            f" got {type(tasks).__name__}"
        )
    return _raw_jobs(tasks)


def _raw_jobs(tasks: Iterable[Any]) -> Iterator[RawJobSpec]:
    for index, item in enumerate(tasks):
        task, spec = task_and_spec(item, index)
        identifier = task_identifier(task, f"jobs[{index}]")
        try:
            job = RawJobSpec(identifier, task_payload(task), spec)
        except InvalidJobSpec as error:
            raise InvalidJobSpec(f"jobs[{index}].{error}") from None
        yield job
