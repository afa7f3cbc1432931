"""``RoomWidget``: a room in a notebook cell.

>>> from pluv_widget import RoomWidget
>>> w = RoomWidget("my-room")  # doctest: +SKIP

The widget only maps a room client onto traitlets and frontend messages: the client does the
protocol, the server the rest. It runs on the client's loop (the kernel's own loop in Jupyter):

* room → browser: every room change marks the widget dirty; one push, at most every
  :data:`PUSH_INTERVAL_S`, copies the room's *current* state into the traitlets, so bursts are
  coalesced and the latest state always arrives.
* browser → room: ``{type: "post", text}`` and ``{type: "select", id}`` comm messages. With
  JupyterLab's comms over subshells they arrive on another thread with another loop, so they
  are handed to the client's loop with ``client.call_soon`` before touching the room.

Configuration: ``url=`` or ``$PLUV_WIDGET_URL`` (a ws base URL); ``join_code=`` or
``$PLUV_WIDGET_JOIN_CODE`` when that server requires auth. With neither, the local server
(:mod:`pluv_widget.server.local`) is started if needed. One widget per room per kernel: a new one
replaces the old one's connection.
"""

from __future__ import annotations

import asyncio
import atexit
import getpass
import hashlib
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import anywidget
import pycrdt
import traitlets
from pydantic import BaseModel, ConfigDict

from . import crdt
from .client import create_client
from .server.local import ensure_local_server

__all__ = ["RoomWidget", "WidgetPresence", "color_for", "display_name"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MESSAGES = "messages"
#: At most ~30 pushes a second to the browser.
PUSH_INTERVAL_S = 1 / 30
MAX_MESSAGE_CHARS = 2000
#: Readable on JupyterLab's light and dark themes, with white text on top.
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#0f9d9d",
    "#c2185b", "#7cb342", "#5c6bc0", "#b8860b", "#8d6e63", "#00897b",
)  # fmt: skip

# Each kernel is its own person when there is no auth, even for one OS user: this is its key.
_KERNEL_PERSON = uuid.uuid4().hex
_registry: dict[str, RoomWidget] = {}
_registry_lock = threading.Lock()


class WidgetPresence(BaseModel):
    """The presence a widget needs; subclass it to add fields (``hand_raised: bool = False``)."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    color: str = ""
    selection_id: str | None = None


def display_name() -> str:
    """``$JUPYTERHUB_USER``, else the OS user."""
    name = os.environ.get("JUPYTERHUB_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "anonymous"


def color_for(key: str) -> str:
    """A stable colour for a person's key (user id with auth; the kernel without)."""
    return PALETTE[int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % len(PALETTE)]


def reconnect_backoff_ms(attempts: int) -> int:
    """0.5 s, 1 s, 2 s … up to 10 s: back soon after a long cell, gentle on a restarted server.

    (pluv's default, a flat 30 s, is long to stare at a greyed widget; the client adds jitter.)
    """
    return int(min(500 * 2**attempts, 10_000))


def token_endpoint(ws_url: str, *, name: str, join_code: str) -> str:
    """The server's token route for a ws base URL: ``http(s)://host:port[/path]/token?...``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    query = urlencode({"join_code": join_code, "name": name})
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/token", query, ""))


class RoomWidget(anywidget.AnyWidget):
    """Who is in a room, a shared list of messages, and everyone's selection — live.

    ``RoomWidget(room, user=None, url=None, join_code=None, presence=WidgetPresence,
    initial_presence=None, reconnect_timeout_ms=reconnect_backoff_ms)``.

    ``w.post(text)`` and ``w.select(message_id)`` do what the browser does; ``w.others`` and
    ``w.messages`` mirror the room; ``w.room`` is the client room itself (custom presence,
    storage, events); ``w.leave()`` leaves.
    """

    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    room_name = traitlets.Unicode("").tag(sync=True)
    connection_state = traitlets.Unicode("connecting").tag(sync=True)
    me: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)
    others: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    messages: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
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
        **kwargs: Any,
    ) -> None:
        super().__init__(room_name=room, **kwargs)
        name = user or display_name()
        url = url or os.environ.get("PLUV_WIDGET_URL") or None
        join_code = join_code or os.environ.get("PLUV_WIDGET_JOIN_CODE") or None
        if url is None:
            if os.environ.get("JUPYTERHUB_USER"):
                warnings.warn(
                    "no PLUV_WIDGET_URL is configured on this JupyterHub: each student's kernel starts "
                    "its own private local server, so students will not see each other. Set "
                    "PLUV_WIDGET_URL (and PLUV_WIDGET_JOIN_CODE) to one shared pluv-widget server.",
                    stacklevel=2,
                )
            url = ensure_local_server()
        self.url = url
        auth = token_endpoint(url, name=name, join_code=join_code) if join_code else None
        # With auth the server's user id is the display name; without, each kernel is a person.
        color = color_for(name if auth else _KERNEL_PERSON)
        self.client = create_client(presence=presence, ws_endpoint=url, auth_endpoint=auth)
        self._loop: asyncio.AbstractEventLoop = self.client.loop
        self._dirty_messages = True
        self._push_handle: asyncio.Handle | None = None
        self._last_push = 0.0
        self._pending_posts: list[dict[str, Any]] = []
        self._left = False
        self.room = self.client.create_room(
            room,
            initial_presence={"name": name, "color": color, "selection_id": None, **(initial_presence or {})},
            initial_storage=crdt.doc(lambda: {MESSAGES: crdt.array([])}),
            on_authorization_fail=self._on_authorization_fail,
            reconnect_timeout_ms=reconnect_timeout_ms or reconnect_backoff_ms,
        )
        subscribe = self.room.subscribe
        self._unsubscribe: list[Callable[[], None]] = [
            subscribe.others(lambda _others, _change: self._schedule_push()),
            subscribe.my_presence(lambda _presence: self._schedule_push()),
            subscribe.connection(lambda _state: self._schedule_push()),
            subscribe.storage(MESSAGES, self._on_messages),
            subscribe.storage_state(self._on_storage_state),
            subscribe.error(lambda error: self._show_error(f"the server refused: {error.message}")),
        ]
        self.on_msg(self._on_frontend_message)
        with _registry_lock:
            replaced = _registry.get(room)
            _registry[room] = self
        if replaced is not None:
            replaced.leave(reason="replaced by a newer RoomWidget for this room in this kernel")
        self.client.enter_soon(self.room)
        self._schedule_push()

    # -- the Python face --------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.room.my_presence.get("name", ""))

    def post(self, text: str) -> str:
        """Append a message to the room's shared list; returns its id. Thread-safe."""
        text = str(text).strip()
        if not text:
            raise ValueError("a message needs some text")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message is at most {MAX_MESSAGE_CHARS} characters")
        if self._left:
            raise RuntimeError("this widget has left its room")
        presence = self.room.my_presence
        message = {
            "id": uuid.uuid4().hex[:16],
            "author": presence.get("name", ""),
            "color": presence.get("color", ""),
            "text": text,
            "time": int(time.time() * 1000),
        }
        self.client.call_soon(self._append, message)
        return str(message["id"])

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

    def leave(self, reason: str = "") -> None:
        """Leave the room: others see you go. The widget stays, greyed."""
        if self._left:
            return
        self._left = True
        with _registry_lock:
            if _registry.get(self.room_name) is self:
                del _registry[self.room_name]
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.client.leave(self.room)
        self.client.call_soon(self._push_closed, reason)

    def close(self) -> None:
        self.leave()
        super().close()

    # -- room → browser ---------------------------------------------------------------------

    def _on_messages(self, _value: Any) -> None:
        self._dirty_messages = True
        self._schedule_push()

    def _on_storage_state(self, state: str) -> None:
        if state == "synced" and self._pending_posts:
            pending, self._pending_posts = self._pending_posts, []
            for message in pending:
                self._append(message)
        self._on_messages(None)

    def _on_authorization_fail(self, error: Exception) -> None:
        self.client.call_soon(self._show_error, f"not allowed into the room: {error}")

    def _show_error(self, text: str) -> None:
        self.error = text

    def _schedule_push(self) -> None:
        self.client.call_soon(self._arm_push)

    def _arm_push(self) -> None:
        if self._left or self._push_handle is not None:
            return
        delay = max(0.0, self._last_push + PUSH_INTERVAL_S - self._loop.time())
        self._push_handle = self._loop.call_later(delay, self._push)

    def _push(self) -> None:
        self._push_handle = None
        self._last_push = self._loop.time()
        if self._left:
            return
        room = self.room
        presence = dict(room.my_presence)
        myself = room.myself
        state: dict[str, Any] = {
            "connection_state": str(room.state),
            "me": {
                "connection_id": myself.connection_id if myself else "",
                "name": presence.get("name", ""),
                "color": presence.get("color", ""),
                "presence": presence,
            },
            "others": [self._person(other) for other in room.others],
            "selection": presence.get("selection_id"),
        }
        if room.state == "open" and self.error.startswith("not allowed"):
            state["error"] = ""
        if self._dirty_messages and room.storage_state != "loading":
            self._dirty_messages = False
            items = crdt.to_json(room.storage(MESSAGES))
            state["messages"] = [_message(index, item) for index, item in enumerate(items)]
        with self.hold_sync():
            for key, value in state.items():
                setattr(self, key, value)

    @staticmethod
    def _person(user: Any) -> dict[str, Any]:
        presence = dict(user.presence)
        return {
            "connection_id": user.connection_id,
            "connection_ids": list(user.connection_ids),
            "id": user.id,
            "name": presence.get("name") or user.info.get("name") or user.id,
            "color": presence.get("color") or color_for(user.id),
            "presence": presence,
        }

    def _push_closed(self, reason: str) -> None:
        if self._push_handle is not None:
            self._push_handle.cancel()
            self._push_handle = None
        with self.hold_sync():
            self.connection_state = "closed"
            self.others = []
            if reason:
                self.error = reason

    # -- browser → room ---------------------------------------------------------------------

    def _on_frontend_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # May run on a comm subshell's thread: never touch the room here.
        if isinstance(content, dict):
            self.client.call_soon(self._handle_frontend_message, dict(content))

    def _handle_frontend_message(self, content: dict[str, Any]) -> None:
        try:
            if content.get("type") == "post":
                self.post(str(content.get("text", "")))
            elif content.get("type") == "select":
                selected = content.get("id")
                self.select(selected if isinstance(selected, str) else None)
        except Exception as error:  # shown in the widget, not lost in a thread's log
            logger.warning("RoomWidget: %s", error)
            self.error = str(error)

    def _append(self, message: dict[str, Any]) -> None:
        if self._left:
            return
        if self.room.storage_state == "loading":
            self._pending_posts.append(message)  # posted before the first sync: sent once synced
            return
        messages = self.room.storage(MESSAGES)
        self.room.transact(lambda: messages.append(pycrdt.Map(message)))
        if self.error:
            self.error = ""


def _message(index: int, item: Any) -> dict[str, Any]:
    """A stored message as the frontend shows it, whatever another client wrote."""
    if not isinstance(item, dict):
        item = {"text": str(item)}
    author = str(item.get("author") or "?")
    return {
        "id": str(item.get("id") or f"item-{index}"),
        "author": author,
        "color": str(item.get("color") or color_for(author)),
        "text": str(item.get("text") or ""),
        "time": int(item.get("time") or 0),
    }


@atexit.register
def _leave_all() -> None:
    """Kernel shutdown: leave every room (the socket closing would tell the server anyway)."""
    for widget in list(_registry.values()):
        try:
            widget.leave()
        except Exception:  # the loop may already be closed at exit
            pass
