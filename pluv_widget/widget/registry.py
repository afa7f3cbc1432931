"""One widget per room per session: a new one replaces the old one's connection (no ghost users).

A session is the asyncio loop the widget was made on: a Jupyter kernel's loop (one per kernel),
or one of the loops ``marimo run`` gives each viewer in threads of one process — two viewers
opening the same app are two people, never "the same widget made twice". Where no loop runs
(a script: each client gets a private loop thread) the whole process is one session.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from typing import Protocol


class _Leaves(Protocol):
    room_name: str

    def leave(self, reason: str = "") -> None: ...


_Key = tuple[int, str]  # (id of the session's loop, or 0 for the process; room name)
_widgets: dict[_Key, _Leaves] = {}
_lock = threading.Lock()
#: The loops whose ids are keys, to drop their entries when a session's loop goes away.
_loops: weakref.WeakValueDictionary[int, asyncio.AbstractEventLoop] = weakref.WeakValueDictionary()


def session_loop() -> asyncio.AbstractEventLoop | None:
    """The loop running in this thread (a notebook session's), or None (a script)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def session_key(loop: asyncio.AbstractEventLoop | None = None) -> int:
    loop = loop if loop is not None else session_loop()
    if loop is None:
        return 0
    with _lock:
        if _loops.get(id(loop)) is not loop:  # a new loop (maybe reusing a dead one's id)
            for key in [key for key in _widgets if key[0] == id(loop)]:
                del _widgets[key]
            _loops[id(loop)] = loop
    return id(loop)


def _session_of(widget: _Leaves) -> int:
    return int(getattr(widget, "session", 0))  # set from session_key() when the widget was made


def claim(widget: _Leaves) -> None:
    """Register ``widget`` for its room in its session; the widget it replaces leaves."""
    session = _session_of(widget)
    with _lock:
        replaced = _widgets.get((session, widget.room_name))
        _widgets[(session, widget.room_name)] = widget
    if replaced is not None and replaced is not widget:
        replaced.leave(reason="replaced by a newer RoomWidget for this room in this kernel")


def release(widget: _Leaves) -> None:
    session = _session_of(widget)
    with _lock:
        if _widgets.get((session, widget.room_name)) is widget:
            del _widgets[(session, widget.room_name)]


@atexit.register
def _leave_all() -> None:
    """Kernel shutdown: leave every room (the socket closing would tell the server anyway)."""
    for widget in list(_widgets.values()):
        try:
            widget.leave()
        except Exception:  # the loop may already be closed at exit
            pass
