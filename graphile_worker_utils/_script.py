"""The console script ``graphile-worker-utils`` and ``python -m graphile_worker_utils``.

A Ctrl-C must mean "interrupted" from the first moment: the SIGINT handler of the command line
(:class:`._sigint.InterruptGate`, stdlib only) is installed before the command line's modules
are imported, so a Ctrl-C that lands while they load (even inside one of importlib's callbacks,
where Python could only print it and go on) ends the run with the documented message and exit
code 130, never as a traceback or a run that carries on.
"""

from __future__ import annotations

import contextlib
import sys

from ._sigint import InterruptGate

#: ExitCode.INTERRUPTED, before graphile_worker_utils.cli is imported.
_INTERRUPTED = 130


def script() -> int:
    """Run the command line for a whole process (see :func:`graphile_worker_utils.cli.script`)."""
    gate = InterruptGate()
    with gate.installed(then_ignore=True):
        try:
            from .cli._app import _run
        except KeyboardInterrupt:
            gate.pending = True
        if not gate.pending:
            return _run(None, exiting=True, gate=gate)
        gate.mode = "absorb"
        with contextlib.suppress(BrokenPipeError):
            print("graphile-worker-utils: error: interrupted", file=sys.stderr)
    return _INTERRUPTED
