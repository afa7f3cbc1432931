"""One widget per room per kernel: a new one replaces the old one's connection (no ghost users)."""

from __future__ import annotations

import atexit
import threading
from typing import Protocol


class _Leaves(Protocol):
    room_name: str

    def leave(self, reason: str = "") -> None: ...


_widgets: dict[str, _Leaves] = {}
_lock = threading.Lock()


def claim(widget: _Leaves) -> None:
    """Register ``widget`` for its room; the widget it replaces leaves."""
    with _lock:
        replaced = _widgets.get(widget.room_name)
        _widgets[widget.room_name] = widget
    if replaced is not None and replaced is not widget:
        replaced.leave(reason="replaced by a newer RoomWidget for this room in this kernel")


def release(widget: _Leaves) -> None:
    with _lock:
        if _widgets.get(widget.room_name) is widget:
            del _widgets[widget.room_name]


@atexit.register
def _leave_all() -> None:
    """Kernel shutdown: leave every room (the socket closing would tell the server anyway)."""
    for widget in list(_widgets.values()):
        try:
            widget.leave()
        except Exception:  # the loop may already be closed at exit
            pass
