"""Where the public classes say they live: ``graphile_worker_utils``, the module users import
them from, rather than the private module that defines them (as psycopg does), so tracebacks,
``repr``s and documentation name ``graphile_worker_utils.InvalidJobSpec``. Pickles refer to them
by that name too, which resolves through the package's lazy attributes."""

from __future__ import annotations

from typing import TypeVar

PUBLIC_MODULE = "graphile_worker_utils"

_Class = TypeVar("_Class", bound=type)


def public(cls: _Class) -> _Class:
    """Class decorator: show ``cls`` as a member of the public package."""
    cls.__module__ = PUBLIC_MODULE
    return cls
