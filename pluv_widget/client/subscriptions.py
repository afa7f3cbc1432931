"""``room.subscribe.*``: callbacks for what a room sees. Each returns its unsubscribe function."""

from __future__ import annotations

import inspect
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from .room import Room
    from .types import OthersChange, RoomEvent, ServerError, User

log = logging.getLogger("pluv_widget.client")

Unsubscribe = Callable[[], None]


class Listeners:
    """Callbacks by topic. A callback that raises is logged and the others still run.

    Callbacks are added and removed from any thread; :meth:`emit` runs on the client's loop.
    """

    def __init__(self) -> None:
        self._topics: dict[str, list[Callable[..., Any]]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, topic: str, callback: Callable[..., Any]) -> Unsubscribe:
        with self._lock:
            self._topics[topic].append(callback)

        def unsubscribe() -> None:
            with self._lock:
                callbacks = self._topics.get(topic, [])
                if callback in callbacks:
                    callbacks.remove(callback)

        return unsubscribe

    def emit(self, topic: str, *args: Any) -> None:
        with self._lock:
            calls = [(callback, args) for callback in self._topics.get(topic, ())]
            calls += [(callback, (topic,)) for callback in self._topics.get("*", ())]
        for callback, arguments in calls:
            try:
                callback(*arguments)
            except Exception:
                log.exception("a %r subscriber raised", topic)


def _positional_arity(callback: Callable[..., Any]) -> int | None:
    """How many positional arguments ``callback`` takes, or None when it takes any number."""
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in parameters)


class RoomSubscriptions:
    """Subscribe from any thread; callbacks run on the client's loop thread (storage callbacks
    too: every edit, local or remote, is made there — see :mod:`.loop`)."""

    def __init__(self, room: Room) -> None:
        self._room = room
        self._listeners = room._listeners

    def __call__(self, topic: str, callback: Callable[..., Any]) -> Unsubscribe:
        """pluv's spelling: ``room.subscribe("others", cb)``, ``("my-presence", cb)``,
        ``("connection", cb)``, ``("storage-state", cb)``, ``("error", cb)``, ``("class", cb)``."""
        if topic == "class":  # the wire's name of the classroom view
            topic = "class_view"
        method = getattr(self, topic.replace("-", "_"), None)
        if topic.startswith("_") or topic in ("event", "storage") or method is None:
            raise UsageError(f"unknown subscription {topic!r}; use room.subscribe.event(name, cb) for events")
        unsubscribe: Unsubscribe = method(callback)
        return unsubscribe

    def others(
        self, callback: Callable[[list[User], OthersChange], None] | Callable[[list[User]], None]
    ) -> Unsubscribe:
        """``callback(others, change)`` when someone enters, leaves or updates presence
        (``callback(others)`` if it takes one argument, as in pluv)."""
        if _positional_arity(callback) == 1:
            single = callback
            return self._listeners.add("others", lambda others, _change: single(others))  # type: ignore[call-arg]
        return self._listeners.add("others", callback)

    def my_presence(self, callback: Callable[[dict[str, Any]], None]) -> Unsubscribe:
        """``callback(presence)`` after every change of this connection's presence."""
        return self._listeners.add("my_presence", callback)

    def connection(self, callback: Callable[[str], None]) -> Unsubscribe:
        """``callback(state)``: untouched, connecting, open, unavailable or closed."""
        return self._listeners.add("connection", callback)

    def event(self, name: str, callback: Callable[[RoomEvent], None]) -> Unsubscribe:
        """``callback(event)`` for every ``name`` event broadcast by someone else or the server."""
        return self._listeners.add(f"event:{name}", callback)

    def error(self, callback: Callable[[ServerError], None]) -> Unsubscribe:
        """``callback(error)`` when the server refuses one of this client's messages. After a
        permanent storage refusal it comes once the room's storage was reloaded, with
        ``error.reloaded`` True and ``error.discarded`` the local JSON of each root that was
        dropped; a transient one (``storage_unavailable``) is reported once while resending."""
        return self._listeners.add("error", callback)

    def class_view(self, callback: Callable[[dict[str, Any]], None]) -> Unsubscribe:
        """``callback(view)`` with this connection's whole classroom view (polls, hands, pulse as
        its role may see them: see the README's "Teaching with it") each time it changes, and
        once after every (re)connection. The last one is ``room.class_view``."""
        return self._listeners.add("class_view", callback)

    def storage_state(self, callback: Callable[[str], None]) -> Unsubscribe:
        """``callback(state)``: loading, synced or offline."""
        return self._listeners.add("storage_state", callback)

    def all(self, callback: Callable[[str], None]) -> Unsubscribe:
        """``callback(topic)`` after any of the notifications above (not storage): for views
        that simply redraw, and for tests that wait on a condition."""
        return self._listeners.add("*", callback)

    def storage(self, key: str, callback: Callable[[Any], None]) -> Unsubscribe:
        """``callback(json)`` with a snapshot of root ``key`` after each local or remote change
        (it follows the room's new document after a reload: see ``Room.storage``)."""
        return self._room._watch_storage(key, callback)
