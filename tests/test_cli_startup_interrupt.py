"""A Ctrl-C while the command line is still being imported: the console script installs its
SIGINT handling first (graphile_worker_utils._script), so the run ends as "interrupted" (exit
130, one line) whether the interrupt is raised in the import or lands in one of importlib's
callbacks, where Python could only print it and carry on."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from graphile_worker_utils.cli import ExitCode

# Runs script() with a finder that interrupts the process while graphile_worker_utils.cli._app
# is being imported: by a plain SIGINT, or by one delivered inside a weakref callback.
PROBE = textwrap.dedent(
    """
    import gc, os, signal, sys, weakref

    how = sys.argv.pop(1)

    class Interrupting:
        def find_spec(self, name, path=None, target=None):
            if name != "graphile_worker_utils.cli._app":
                return None
            sys.meta_path.remove(self)
            if how == "plain":
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # the handler runs between bytecodes
                    pass
            else:
                class Thing:
                    pass
                def callback(_):
                    os.kill(os.getpid(), signal.SIGINT)
                    for _ in range(1000):
                        pass
                thing = Thing()
                keep = weakref.ref(thing, callback)
                del thing
                gc.collect()
            return None

    sys.meta_path.insert(0, Interrupting())
    from graphile_worker_utils._script import script
    sys.exit(script())
    """
)


@pytest.mark.parametrize("how", ["plain", "in a callback"])
def test_a_ctrl_c_while_the_command_line_loads_exits_interrupted(how: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, how, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == ExitCode.INTERRUPTED, (done.returncode, done.stdout, done.stderr)
    assert done.stderr == "graphile-worker-utils: error: interrupted\n", done.stderr
    assert done.stdout == ""


def test_without_an_interrupt_the_probe_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.replace("sys.meta_path.insert", "print"), "x", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: graphile-worker-utils" in done.stdout
