"""The room's messages as the browser receives them: a snapshot once, then deltas.

The kernel keeps a mirror of the ``messages`` array (``w.messages``) and turns pycrdt's array
events into index operations applied, in order, to the previous list:

* ``{"index": i, "insert": [message, ...]}`` — insert before position ``i``;
* ``{"index": i, "delete": n}`` — remove ``n`` messages from position ``i``;
* ``{"index": i, "set": message}`` — message ``i`` was edited in place.

The browser gets ``{"type": "messages-snapshot", "version", "messages"}`` when a view asks for it
(``{"type": "sync-request"}``) and after each (re)sync, and ``{"type": "messages-delta", "base",
"version", "ops"}`` otherwise: a view applies a delta only on top of the version it holds, and
asks for a snapshot when it sees a gap. So one new message costs the browser one row, whatever
the size of the room.

Array events arrive on whichever thread made the transaction (the client's loop, or a user's
``w.room.transact`` on another thread); the mirror is guarded by a lock and read on the loop.
"""

from __future__ import annotations

import threading
from typing import Any

import pycrdt

from .. import crdt
from .messages import shown

Op = dict[str, Any]


class MessageFeed:
    """A mirror of the ``messages`` array and the frontend messages that keep the browser's in step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []
        self._version = 0
        self._sent_version = 0
        self._ops: list[Op] = []
        self._snapshot_wanted = False
        self._changed = False

    @property
    def items(self) -> list[dict[str, Any]]:
        """A copy of the mirrored list (``{id, author, color, text, time}`` dicts)."""
        with self._lock:
            return list(self._items)

    def reset(self, stored: list[Any]) -> None:
        """Mirror ``stored`` (the array as JSON) afresh: after a (re)sync. The browser gets a snapshot."""
        items = [shown(index, item) for index, item in enumerate(stored)]
        with self._lock:
            self._items = items
            self._ops = []
            self._version += 1
            self._snapshot_wanted = True
            self._changed = True

    def want_snapshot(self) -> None:
        """A view asked for the whole list (it has just rendered)."""
        with self._lock:
            self._snapshot_wanted = True

    def observe(self, array: pycrdt.Array[Any], events: list[Any]) -> None:
        """``array.observe_deep`` callback: record each change as index operations."""
        ops: list[Op] = []
        edited: set[int] = set()
        for event in events:
            path = getattr(event, "path", None) or []
            if isinstance(event, pycrdt.ArrayEvent) and not path:
                ops += _array_ops(event)
            elif path and isinstance(path[0], int):
                edited.add(path[0])  # a message's map (or something in it) changed
        with self._lock:
            for op in ops:
                self._apply(op)
            for index in sorted(edited):  # paths name positions after the whole transaction
                if index < len(self._items):
                    item = crdt.to_json(array[index])
                    self._apply({"index": index, "set": shown(index, item)})

    def take(self) -> list[dict[str, Any]]:
        """The frontend messages to send now (a snapshot, a delta, or nothing)."""
        with self._lock:
            if self._ops:
                self._version += 1
            if self._snapshot_wanted:
                self._snapshot_wanted, self._ops = False, []
                self._sent_version = self._version
                return [{"type": "messages-snapshot", "version": self._version, "messages": list(self._items)}]
            if not self._ops:
                return []
            delta = {"type": "messages-delta", "base": self._sent_version, "version": self._version, "ops": self._ops}
            self._sent_version, self._ops = self._version, []
            return [delta]

    def take_changed(self) -> bool:
        """Whether the list changed since the last call (the ``messages`` traitlet is stale)."""
        with self._lock:
            changed, self._changed = self._changed, False
            return changed

    def _apply(self, op: Op) -> None:
        index = op["index"]
        if "insert" in op:
            self._items[index:index] = op["insert"]
        elif "delete" in op:
            del self._items[index : index + op["delete"]]
        else:
            self._items[index] = op["set"]
        self._ops.append(op)
        self._changed = True


def _array_ops(event: Any) -> list[Op]:
    """pycrdt's ``retain``/``insert``/``delete`` delta as index operations applied in order."""
    ops: list[Op] = []
    index = 0
    for part in event.delta:
        if "retain" in part:
            index += int(part["retain"])
        elif "delete" in part:
            ops.append({"index": index, "delete": int(part["delete"])})
        elif "insert" in part:
            inserted = [shown(index + n, crdt.to_json(item)) for n, item in enumerate(part["insert"])]
            ops.append({"index": index, "insert": inserted})
            index += len(inserted)
    return ops
