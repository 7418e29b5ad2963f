"""SIGINT (Ctrl-C) handling for the command line (stdlib only: the console script installs it
before it imports anything else of ours)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class InterruptGate:
    """SIGINT (Ctrl-C) handling that keeps the ``add-jobs`` report true to the database.

    In the ``raise`` mode a SIGINT raises KeyboardInterrupt at once, as Python's own handler
    does. In the ``defer`` mode (a commit may be under way) the first one is only recorded in
    :attr:`pending`, to be acted on where the committed state is known; a second one (the user
    insists) raises and sets :attr:`forced`. In the ``absorb`` mode (everything is committed)
    every SIGINT is only recorded.
    """

    def __init__(self) -> None:
        self.mode = "raise"
        self.pending = False
        self.forced = False

    def handle(self, signum: int, frame: Any) -> None:
        """The SIGINT handler."""
        if self.mode == "raise":
            # Recorded too: an exception raised in some callbacks (importlib's) is lost.
            self.pending = True
            raise KeyboardInterrupt
        if self.mode == "defer" and self.pending:
            self.forced = True
            raise KeyboardInterrupt
        self.pending = True

    def defer(self) -> None:
        """Enter the ``defer`` mode, after raising a SIGINT that came before."""
        if self.pending:
            raise KeyboardInterrupt
        self.mode = "defer"

    @contextmanager
    def installed(self, *, then_ignore: bool = False) -> Iterator[None]:
        """Handle SIGINT inside, then restore the previous handler (main() may run in a host
        process), or ignore SIGINT if ``then_ignore`` (the process is exiting). Only in the
        main thread; an ignored SIGINT stays ignored."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous in (signal.SIG_IGN, None):  # ignored, or a handler not set from Python
            yield
            return
        signal.signal(signal.SIGINT, self.handle)
        previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable(previous_hook)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN if then_ignore else previous)
            sys.unraisablehook = previous_hook

    def _unraisable(self, previous: Callable[[Any], object]) -> Callable[[Any], object]:
        # A SIGINT that lands in a callback Python cannot raise from (importlib's module-lock
        # weakref callbacks, say) is printed as "Exception ignored in ..." with a traceback. It
        # is recorded in pending already and acted on where the committed state is known, so
        # it is not printed; anything else goes to the previous hook.
        def hook(unraisable: Any) -> object:
            if isinstance(unraisable.exc_value, KeyboardInterrupt):
                return None
            return previous(unraisable)

        return hook

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Defer SIGINT inside; on a normal exit, raise the one that arrived meanwhile."""
        self.defer()
        try:
            yield
        finally:
            self.mode = "raise"
        if self.pending:
            raise KeyboardInterrupt
