"""``RoomWidget``: a client room mapped onto traitlets and the ESM view — and nothing else.

It runs on the client's loop (the kernel's own loop in Jupyter):

* room → browser: every room change requests a push; one push, at most every
  :data:`PUSH_INTERVAL_S`, copies the room's *current* presence and connection state into the
  traitlets and sends the messages' changes as deltas (:mod:`.feed`), so bursts are coalesced,
  the latest state always arrives, and a new message costs one row however long the list is.
* browser → room: the view sets the ``selection`` traitlet itself; the widget observes it and
  updates my presence (``update_my_presence`` is thread-safe). A post is a ``{type: "post",
  text}`` message (the widget calls the server's ``messages.post``: the ``messages`` list is
  protected storage, written by the server only, which stamps the author from the token), and
  ``{type: "sync-request"}`` asks for the whole list. With JupyterLab's
  comms over subshells both arrive on another thread with another loop: the observer only calls
  thread-safe methods, and messages are handed to the client's loop with ``client.call_soon``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anywidget
import pycrdt
import traitlets
from pydantic import BaseModel

from .. import crdt
from ..client import PluvRoom, create_client
from ..client.auth import post_release_name
from ..client.room import Pending as Answer
from ..errors import AuthorizationError, PermissionDenied
from ..protocol.roles import TEACHER, role_of
from ..protocol.routes import release_name_url
from . import registry
from .claims import ClaimingEndpoint
from .feed import MessageFeed
from .messages import MESSAGES, new_message
from .pending import Pending
from .presence import WidgetPresence, me_view, person_view
from .settings import WidgetSettings, reconnect_backoff_ms
from .throttle import Throttle

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parents[1] / "static"
#: At most ~30 pushes a second to the browser.
PUSH_INTERVAL_S = 1 / 30


class RoomWidget(anywidget.AnyWidget):
    """Who is in a room, a shared list of messages, and everyone's selection — live.

    ``RoomWidget(room, user=None, url=None, join_code=None, presence=WidgetPresence,
    initial_presence=None, reconnect_timeout_ms=reconnect_backoff_ms)``.

    ``w.post(text)`` and ``w.select(message_id)`` do what the browser does; ``w.others`` and
    ``w.messages`` mirror the room; ``w.delete_message(id)``, ``w.clear_messages()`` and the
    teacher's moderation (``remove_user``, ``readmit_user``, ``mute``, ``unmute``, ``lock``,
    ``unlock``, ``reset_room``) return an awaitable that resolves once the server applied it;
    ``w.room`` is the client room itself (custom presence,
    storage, events); ``w.leave()`` leaves.
    """

    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    room_name = traitlets.Unicode("").tag(sync=True)
    connection_state = traitlets.Unicode("connecting").tag(sync=True)
    me: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)
    others: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: Not synced: the browser gets the messages as deltas (see :mod:`pluv_widget.widget.feed`).
    messages: traitlets.List[dict[str, Any]] = traitlets.List()
    selection = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        room: str = "my-room",
        *,
        user: str | None = None,
        url: str | None = None,
        join_code: str | None = None,
        presence: type[BaseModel] = WidgetPresence,
        initial_presence: dict[str, Any] | None = None,
        reconnect_timeout_ms: int | Callable[[int], int] | None = None,
        ca_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(room_name=room, **kwargs)
        settings = WidgetSettings.resolve(user=user, url=url, join_code=join_code)
        self.url = settings.url
        # The token route's answer carries this machine's claim on the name: kept and sent back.
        self._endpoint = (ClaimingEndpoint(settings.auth_endpoint, server=settings.url, name=settings.name)
                          if settings.auth_endpoint else None)
        self.client = create_client(presence=presence, ws_endpoint=settings.url, auth_endpoint=self._endpoint,
                                    ssl_ca_file=ca_file)
        if self._endpoint is not None:
            self._endpoint.ssl = self.client.ssl_context  # the token route trusts what the socket trusts
        self._prepare_state()
        self.room = self._create_room(room, settings, initial_presence, reconnect_timeout_ms)
        self._unsubscribe = self._subscribe_to_room()
        self._listen_to_browser()
        registry.claim(self)
        self.client.enter_soon(self.room)
        self._pushes.request()

    # -- construction, step by step ---------------------------------------------------------

    def _prepare_state(self) -> None:
        self._left = False
        self._feed = MessageFeed()
        self._watched: tuple[Any, Any] | None = None  # (array, subscription) being observed
        self._pushing_on: int | None = None  # the thread setting traitlets from the room
        self._pushes = Throttle(self.client.loop, self.client.call_soon, self._push, PUSH_INTERVAL_S)

    def _create_room(
        self,
        room: str,
        settings: WidgetSettings,
        initial_presence: dict[str, Any] | None,
        reconnect_timeout_ms: int | Callable[[int], int] | None,
    ) -> PluvRoom:
        presence = {"name": settings.name, "color": settings.color, "selection_id": None}
        return self.client.create_room(
            room,
            initial_presence={**presence, **(initial_presence or {})},
            initial_storage=crdt.doc(lambda: {MESSAGES: crdt.array([])}),
            on_authorization_fail=self._on_authorization_fail,
            reconnect_timeout_ms=reconnect_timeout_ms or reconnect_backoff_ms,
        )

    def _subscribe_to_room(self) -> list[Callable[[], None]]:
        subscribe = self.room.subscribe
        return [
            subscribe.others(lambda _others, _change: self._pushes.request()),
            subscribe.my_presence(lambda _presence: self._pushes.request()),
            subscribe.connection(lambda _state: self._pushes.request()),
            subscribe.storage_state(self._on_storage_state),
            subscribe.error(lambda error: self._show_error(f"the server refused: {error.message}")),
        ]

    def _listen_to_browser(self) -> None:
        self.observe(self._on_selection, names="selection")
        self.on_msg(self._on_frontend_message)

    # -- the Python face --------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.room.my_presence.get("name", ""))

    def post(self, text: str) -> str:
        """Post a message (the server's ``messages.post``: it stamps the author from the token);
        returns the new message's id at once. A refusal (``muted``, ``room_locked``...) shows in
        ``w.error``; an observer gets :class:`~pluv_widget.errors.PermissionDenied` at once.
        Thread-safe."""
        message = new_message(self.room.my_presence, text)
        if self._left:
            raise RuntimeError("this widget has left its room")
        self._check_role("post", allowed=("teacher", "student"))
        self.room.call("messages.post", {"id": message["id"], "text": message["text"]})
        return str(message["id"])

    def delete_message(self, message_id: str) -> Answer:
        """Delete a message: students their own, teachers any. Awaitable (raises the refusal)."""
        self._check_role("delete a message", allowed=("teacher", "student"))
        return self._call("messages.delete", {"id": str(message_id)})

    def clear_messages(self) -> Answer:
        """Delete every message (teachers; the room gets a new generation). Awaitable."""
        return self._teacher_call("messages.clear", {})

    def remove_user(self, user_id: str) -> Answer:
        """Remove a user (teachers): their connections close with 4009 and their tokens for this
        room are refused until :meth:`readmit_user`. Awaitable."""
        return self._teacher_call("users.remove", {"user_id": str(user_id)})

    def readmit_user(self, user_id: str) -> Answer:
        return self._teacher_call("users.readmit", {"user_id": str(user_id)})

    def mute(self, user_id: str) -> Answer:
        """Make a user read-only (teachers) until :meth:`unmute`. Awaitable."""
        return self._teacher_call("users.mute", {"user_id": str(user_id)})

    def unmute(self, user_id: str) -> Answer:
        return self._teacher_call("users.unmute", {"user_id": str(user_id)})

    def lock(self) -> Answer:
        """Make the room read-only for students (teachers) until :meth:`unlock`. Awaitable."""
        return self._teacher_call("room.lock", {})

    def unlock(self) -> Answer:
        return self._teacher_call("room.unlock", {})

    def reset_room(self) -> Answer:
        """Reset the room to its initial storage (teachers): a new generation; everyone reloads. Awaitable."""
        return self._teacher_call("room.reset", {})

    def _check_role(self, what: str, *, allowed: tuple[str, ...]) -> None:
        role = self.room.role
        if role not in allowed:
            error = PermissionDenied(f"a {role} may not {what}")
            self.client.call_soon(self._show_error, f"not allowed: {error.message}")
            raise error

    def _teacher_call(self, procedure: str, data: dict[str, Any]) -> Answer:
        self._check_role(f"call {procedure!r} (teachers only)", allowed=("teacher",))
        return self._call(procedure, data)

    def _call(self, procedure: str, data: dict[str, Any]) -> Answer:
        if self._left:
            raise RuntimeError("this widget has left its room")
        return self.room.call(procedure, data)  # a refusal also reaches w.error (subscribe.error)

    def select(self, message_id: str | None) -> None:
        """Select a message (others see it outlined in your colour); ``None`` clears. Thread-safe."""
        if self._left:
            raise RuntimeError("this widget has left its room")
        self.room.update_my_presence({"selection_id": message_id})  # thread-safe itself

    async def wait_until(self, condition: Callable[[], object] | None = None, *, timeout: float = 30.0) -> None:
        """Wait, without blocking the loop, until the room is open and synced and ``condition()``
        holds (re-checked whenever the room or a traitlet changes). For notebooks run top to
        bottom: ``await w.wait_until(lambda: len(w.others) >= 2)``."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake(*_: Any) -> None:
            loop.call_soon_threadsafe(changed.set)

        unsubscribe = self.room.subscribe.all(wake)
        self.observe(wake, names=traitlets.All)
        try:
            async with asyncio.timeout(timeout):
                while not (
                    self.connection_state == "open"
                    and self.room.storage_state == "synced"
                    and (condition is None or condition())
                ):
                    if self._left:
                        raise RuntimeError(f"this widget has left room {self.room_name!r}")
                    await changed.wait()
                    changed.clear()
        finally:
            unsubscribe()
            self.unobserve(wake, names=traitlets.All)

    def release_name(self, name: str) -> Pending[bool]:
        """Teachers: free ``name`` (and its look-alikes) so that someone else may take it; the
        next person asking for it gets a new id. Returns an awaitable of whether a claim was
        freed; raises :class:`~pluv_widget.errors.PermissionDenied` at once for a student or an
        observer, and the server's refusal when awaited (also shown in ``w.error``)."""
        myself = self.room.myself
        if myself is not None and role_of(myself.info) != TEACHER:
            error = PermissionDenied(f"only a teacher can release a name (you are a {role_of(myself.info)})")
            self.client.call_soon(self._show_error, str(error))
            raise error
        endpoint, room = self._endpoint, self.room_name
        if endpoint is None:  # no auth, no claims: nothing is held
            return Pending(lambda: False)

        def release() -> bool:
            return post_release_name(release_name_url(self.url, room=room, name=name), endpoint.fetch(room),
                                     endpoint.ssl)

        return Pending(release, lambda error: self.client.call_soon(self._show_error, f"release_name: {error}"))

    def leave(self, reason: str = "") -> None:
        """Leave the room: others see you go. The widget stays, greyed."""
        if self._left:
            return
        self._left = True
        registry.release(self)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.client.leave(self.room)
        self.client.call_soon(self._show_closed, reason)

    def close(self) -> None:
        self.leave()
        super().close()

    # -- room → browser (on the client's loop) ----------------------------------------------

    def _on_storage_state(self, state: str) -> None:
        if state == "synced":
            self._watch_messages()
        self._pushes.request()

    def _watch_messages(self) -> None:
        """Observe the ``messages`` array and mirror it afresh: the browser gets a snapshot."""
        array = self.room.protected_storage(MESSAGES)
        if self._watched is None or self._watched[0] is not array:
            self._unwatch_messages()
            subscription = array.observe_deep(lambda events: self._on_messages_changed(array, events))
            self._watched = (array, subscription)
        self._feed.reset(crdt.to_json(array))

    def _unwatch_messages(self) -> None:
        if self._watched is not None:
            array, subscription = self._watched
            array.unobserve(subscription)
            self._watched = None

    def _on_messages_changed(self, array: pycrdt.Array[Any], events: list[Any]) -> None:
        self._feed.observe(array, events)
        self._pushes.request()

    def _push(self) -> None:
        if self._left:
            return
        room = self.room
        state: dict[str, Any] = {
            "connection_state": str(room.state),
            "me": me_view(room),
            "others": [person_view(other) for other in room.others],
            "selection": room.my_presence.get("selection_id"),
        }
        if room.state == "open" and self.error.startswith("not allowed"):
            state["error"] = ""
        if self._feed.take_changed():
            state["messages"] = self._feed.items
        self._pushing_on = threading.get_ident()
        try:
            with self.hold_sync():
                for key, value in state.items():
                    setattr(self, key, value)
        finally:
            self._pushing_on = None
        for content in self._feed.take():
            self.send(content)

    def _show_closed(self, reason: str) -> None:
        self._pushes.stop()
        self._unwatch_messages()
        with self.hold_sync():
            self.connection_state = "closed"
            self.others = []
            if reason:
                self.error = reason

    def _on_authorization_fail(self, error: Exception) -> None:
        if isinstance(error, AuthorizationError) and error.code == HTTPStatus.CONFLICT:
            # The server's own words: the name 'Ada' is taken in this class; ask your teacher to release it
            text = error.reason.removeprefix("auth endpoint refused: ")
        else:
            text = f"not allowed into the room: {error}"
        self.client.call_soon(self._show_error, text)

    def _show_error(self, text: str) -> None:
        self.error = text

    # -- browser → room (any thread) --------------------------------------------------------

    def _on_selection(self, change: dict[str, Any]) -> None:
        # The view set `selection` (maybe on a comm subshell's thread); a push echoing my
        # presence into the traitlet is not a new choice.
        if self._left or self._pushing_on == threading.get_ident():
            return
        selected = change["new"]
        try:
            self.room.update_my_presence({"selection_id": selected if isinstance(selected, str) else None})
        except Exception as error:  # shown in the widget, not lost in a thread's log
            logger.warning("RoomWidget: %s", error)
            self.client.call_soon(self._show_error, str(error))

    def _on_frontend_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # May run on a comm subshell's thread: never touch the room here.
        if isinstance(content, dict):
            self.client.call_soon(self._handle_frontend_message, dict(content))

    def _handle_frontend_message(self, content: dict[str, Any]) -> None:
        try:
            if content.get("type") == "post":
                self.post(str(content.get("text", "")))
            elif content.get("type") == "sync-request":
                self._feed.want_snapshot()
                self._pushes.request()
        except Exception as error:
            logger.warning("RoomWidget: %s", error)
            self.error = str(error)
