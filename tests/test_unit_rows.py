"""Rows to jobs, without a database: the column positions match the SQL fragment, each column
lands in its field, and add_jobs' labelling names every job's task and queue."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import attrs
import pytest

from graphile_worker_utils import Job
from graphile_worker_utils._cursors import instant
from graphile_worker_utils._rows import (
    JOB_COLUMNS,
    QUEUE_NAME,
    TASK_IDENTIFIER,
    job_from_row,
    jobs_from_rows,
    label_rows,
    labelled,
    names_to_look_up,
    single_job,
)
from graphile_worker_utils._status import STATUS_COLUMNS
from graphile_worker_utils._types import JobState

SQL = Path(__file__).resolve().parent.parent / "sql"


def selected_names(select_list: str) -> list[str]:
    """The output names of a select list: each item's alias, or its column name."""
    text = re.sub(r"--[^\n]*", "", select_list)
    names = []
    for item in text.split(","):
        words = item.split()
        if words:
            names.append(words[-1].split(".")[-1])
    return names


def test_job_columns_match_the_fragment_they_read() -> None:
    fragment = (SQL / "fragments" / "job_columns.sql.j2").read_text(encoding="utf-8")
    assert tuple(selected_names(fragment)) == JOB_COLUMNS


def test_status_columns_match_the_status_select_list() -> None:
    source = (SQL / "status.sql.j2").read_text(encoding="utf-8")
    main = source.split("\nselect\n")[1].split("\nfrom counts")[0]
    assert tuple(selected_names(main)) == STATUS_COLUMNS
    # The counts are read in JobState's order.
    assert STATUS_COLUMNS[2:7] == tuple(state.value for state in JobState)


def test_the_column_list_parser_reads_aliases_and_skips_comments() -> None:
    assert selected_names("  a.x,\n  a.y::text as z, -- a, b\n  count(*) as n") == ["x", "z", "n"]


def row(**values: object) -> tuple[object, ...]:
    """A job row with a distinct value in every column, ``values`` overriding."""
    base: dict[str, object] = {name: f"<{name}>" for name in JOB_COLUMNS}
    for name in ("run_at", "created_at", "updated_at", "locked_at"):
        base[name] = 1_000_000 * (1 + JOB_COLUMNS.index(name))
    base.update(flags=("a",), id=1, task_id=10, job_queue_id=20, state="retrying")
    base.update(values)
    return tuple(base[name] for name in JOB_COLUMNS)


def test_every_column_lands_in_the_job_field_of_its_name() -> None:
    job = job_from_row(row(), "task", "queue")
    fields = {field.name for field in attrs.fields(Job) if field.init}
    for position, name in enumerate(JOB_COLUMNS):
        value = row()[position]
        if name in ("task_identifier", "queue_name"):
            continue  # given, not read: see the labelling
        if name == "payload":
            assert job.payload_json == value
        elif name == "flags":
            assert job.flags == ["a"]
        elif name.endswith("_at"):
            assert getattr(job, name) == instant(value)  # type: ignore[arg-type]
        elif name == "state":
            assert job.state is JobState.RETRYING
        else:
            assert name in fields and getattr(job, name) == value, name
    assert (job.task_identifier, job.queue_name) == ("task", "queue")


@pytest.mark.parametrize("state", list(JobState))
def test_each_state_value_becomes_its_member(state: JobState) -> None:
    assert job_from_row(row(state=state.value), "t", None).state is state


def test_a_null_state_and_a_null_payload_stay_none() -> None:
    job = job_from_row(row(state=None, payload=None), "t", None)
    assert job.state is None and job.payload_json is None


def test_a_null_lock_and_null_flags_stay_none() -> None:
    job = job_from_row(row(locked_at=None, flags=None), "t", None)
    assert job.locked_at is None and job.flags is None
    assert job.run_at.tzinfo is dt.timezone.utc


def test_maintenance_rows_carry_their_names() -> None:
    (job,) = jobs_from_rows([row(task_identifier="send", queue_name="mail")])
    assert (job.task_identifier, job.queue_name) == ("send", "mail")


def test_a_single_job_takes_the_names_its_own_call_created() -> None:
    job = single_job(row(task_identifier=None, queue_name=None), "send", "mail")
    assert (job.task_identifier, job.queue_name) == ("send", "mail")
    outside = single_job(row(task_identifier=None, queue_name=None, job_queue_id=None), "s", "q")
    assert outside.queue_name is None


def batch_rows() -> list[tuple[object, ...]]:
    return [
        row(id=1, task_id=10, job_queue_id=20, task_identifier="old", queue_name="q_old"),
        row(id=2, task_id=11, job_queue_id=21, task_identifier=None, queue_name=None),
        row(id=3, task_id=10, job_queue_id=None, task_identifier="old", queue_name=None),
    ]


def test_one_new_task_and_queue_are_named_without_a_lookup() -> None:
    labelling = label_rows([batch_rows()[:2], batch_rows()[2:]])
    assert labelling.unnamed == [1]
    lookup = names_to_look_up(labelling, {"old", "new"}, {"q_old", "q_new"})
    assert lookup == ([], [])
    jobs = labelled(labelling)
    assert [(j.id, j.task_identifier, j.queue_name) for j in jobs] == [
        (1, "old", "q_old"),
        (2, "new", "q_new"),
        (3, "old", None),
    ]


def test_several_new_names_are_looked_up_by_id() -> None:
    rows = [
        *batch_rows(),
        row(id=4, task_id=12, job_queue_id=22, task_identifier=None, queue_name=None),
    ]
    labelling = label_rows([rows])
    lookup = names_to_look_up(labelling, {"old", "a", "b"}, {"q_old", "qa", "qb"})
    assert lookup == ([11, 12], [21, 22])
    names = [(False, 11, "a"), (False, 12, "b"), (True, 21, "qa"), (True, 22, "qb")]
    jobs = labelled(labelling, names)
    assert [(j.task_identifier, j.queue_name) for j in jobs[1::2]] == [("a", "qa"), ("b", "qb")]


def test_the_names_come_after_the_table_columns_and_the_state_last() -> None:
    assert (len(JOB_COLUMNS) - 3, len(JOB_COLUMNS) - 2) == (TASK_IDENTIFIER, QUEUE_NAME)
    assert JOB_COLUMNS[-1] == "state"
