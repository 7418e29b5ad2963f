"""Public classes name the package users import them from, not the private module that defines
them, and still pickle by that name."""

from __future__ import annotations

import pickle
import traceback

import pytest

import graphile_worker_utils
from graphile_worker_utils import InvalidJobSpec, JobKeyMode, JobSpec

PUBLIC_CLASSES = sorted(
    name
    for name in graphile_worker_utils.__all__
    if isinstance(getattr(graphile_worker_utils, name), type)
)


def test_the_public_names_include_the_classes_users_meet() -> None:
    assert {"WorkerUtils", "Job", "JobSpec", "InvalidJobSpec", "StatusReport"} <= set(
        PUBLIC_CLASSES
    )


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_every_public_class_says_it_lives_in_the_package(name: str) -> None:
    assert getattr(graphile_worker_utils, name).__module__ == "graphile_worker_utils"


def test_a_traceback_names_the_public_error() -> None:
    line = traceback.format_exception_only(InvalidJobSpec("priority: too big"))[-1]
    assert line == "graphile_worker_utils.InvalidJobSpec: priority: too big\n"


def test_public_values_pickle_by_their_public_name() -> None:
    spec = JobSpec(queue_name="mail", job_key_mode=JobKeyMode.REPLACE, flags=["a"])
    data = pickle.dumps(spec)
    assert b"graphile_worker_utils" in data and b"graphile_worker_utils._" not in data
    assert pickle.loads(data) == spec
    error = pickle.loads(pickle.dumps(InvalidJobSpec("priority: too big")))
    assert isinstance(error, InvalidJobSpec) and str(error) == "priority: too big"
