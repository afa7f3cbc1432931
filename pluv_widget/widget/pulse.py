"""A student's progress for the class pulse: counted in the kernel, shared only when they opt in.

IPython calls ``post_run_cell`` after each cell; :class:`ProgressTracker` counts the cells and
keeps the *type* of the last cell's exception (``ZeroDivisionError``) — never its message, the
code or any value, which may hold a student's work or secrets. Counting starts when the widget
is created (so the view can show exactly what *would* be shared before the student agrees);
nothing leaves the kernel until ``share_progress(True)`` (or the view's checkbox), and then at
most one ``pulse.report`` a second, the latest counts coalesced.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

#: What an exception's type name may look like on the wire (the server checks it too).
ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")
#: At most one report a second, however fast cells run.
REPORT_INTERVAL_S = 1.0


def error_type(result: Any) -> str | None:
    """The type name of the exception an IPython ``ExecutionResult`` holds, if any."""
    error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
    if error is None:
        return None
    name = type(error).__name__
    return name if ERROR_TYPE.fullmatch(name) else "Exception"


def ipython_shell() -> Any:
    """The running IPython shell, or None outside IPython (a script, a test)."""
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:  # IPython is optional for scripts
        return None
    return get_ipython()  # type: ignore[no-untyped-call]


class ProgressTracker:
    """Cells run and the last error type in this kernel, and whether the student shares them.

    ``on_change()`` is called (from the kernel's thread) after each cell, for the view's preview;
    ``request_report()`` asks for a coalesced report (the widget's throttle). Thread-safe.
    """

    def __init__(self, on_change: Callable[[], None], request_report: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._on_change = on_change
        self._request_report = request_report
        self._cells_run = 0
        self._last_error: str | None = None
        self._last_active: float | None = None
        self.sharing = False
        self._shell: Any = None

    def install(self) -> bool:
        """Register the ``post_run_cell`` callback when running in IPython; False otherwise."""
        shell = ipython_shell()
        if shell is None or self._shell is not None:
            return self._shell is not None
        shell.events.register("post_run_cell", self.on_cell_run)
        self._shell = shell
        return True

    def uninstall(self) -> None:
        shell, self._shell = self._shell, None
        if shell is not None:
            try:
                shell.events.unregister("post_run_cell", self.on_cell_run)
            except ValueError:  # already gone (the shell was reset)
                pass

    @property
    def installed(self) -> bool:
        return self._shell is not None

    def on_cell_run(self, result: Any = None) -> None:
        """IPython's ``post_run_cell`` callback."""
        with self._lock:
            self._cells_run += 1
            self._last_error = error_type(result)
            self._last_active = time.time()
            sharing = self.sharing
        self._on_change()
        if sharing:
            self._request_report()

    def report(self) -> dict[str, Any]:
        """The ``pulse.report`` input: exactly what is shared."""
        with self._lock:
            return {"cells_run": self._cells_run, "last_error": self._last_error, "sharing": self.sharing}

    def preview(self) -> dict[str, Any]:
        """For the view: what would be shared (and whether it is), plus when the last cell ran."""
        with self._lock:
            return {
                "sharing": self.sharing,
                "cells_run": self._cells_run,
                "last_error": self._last_error,
                "last_active": self._last_active,
                "counting": self._shell is not None,
            }
