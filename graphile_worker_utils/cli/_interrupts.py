"""SIGINT (Ctrl-C) handling for the command line: :class:`InterruptGate` lives in
``graphile_worker_utils._sigint`` so that the console script can install it before it imports
the command line (see ``graphile_worker_utils._script``)."""

from __future__ import annotations

from .._sigint import InterruptGate

__all__ = ["InterruptGate"]
