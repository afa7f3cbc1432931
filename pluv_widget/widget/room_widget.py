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
import concurrent.futures
import logging
import threading
import time
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
from . import export as lesson_export
from . import registry
from .browser_calls import browser_call
from .checkup import PING, PONG, Checkup
from .claims import ClaimingEndpoint
from .classroom import ClassView, Poll, help_queue
from .feed import MessageFeed
from .follow import CELL, CELL_INTERVAL_S, cell_position, teacher_cell
from .messages import MESSAGES, new_message
from .pending import Pending
from .presence import WidgetPresence, me_view, person_view
from .pulse import REPORT_INTERVAL_S, ProgressTracker
from .settings import WidgetSettings, reconnect_backoff_ms
from .throttle import Throttle

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parents[1] / "static"
#: At most ~30 pushes a second to the browser.
PUSH_INTERVAL_S = 1 / 30
#: A doctor's ping unanswered for this long is forgotten (not sent again to views that appear).
PING_MEMORY_S = 60.0


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

    Teacher tools (the role comes from the token; the server holds the state and decides):
    ``p = w.poll(question, options, multiple=False, anonymous=False)`` (a :class:`Poll`:
    ``await p`` until the server gave it an id; ``p.results()``, ``p.reveal()``,
    ``p.close()``), ``w.polls``, ``w.vote(p, choice)``; ``w.raise_hand(note)``,
    ``w.lower_hand()``, ``w.help_queue``, ``w.resolve_hand(user_id)``, ``w.next_hand()``;
    ``w.checkpoint(name)``, ``w.pulse``, ``w.class_status``, ``w.share_progress(True)`` (a
    student's opt-in; ``w.progress`` is exactly what is shared); ``w.point_to(heading)`` and
    ``w.teacher_cell`` (follow the teacher; the view reports the active cell by itself);
    ``await w.export()`` / ``await w.export("lesson.csv")``. What a role may not do raises
    :class:`~pluv_widget.errors.PermissionDenied` at once; the server's other refusals are
    raised when awaited. The ``classroom`` traitlet is this connection's view, as sent: a
    student's holds no one else's votes or notes.
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
    #: This connection's classroom view as the server sent it (what this role may see), its
    #: ``now`` brought up to the push; ``{}`` until the first one.
    classroom: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)
    #: What the class pulse would share from this kernel, and whether it does (see :mod:`.pulse`).
    progress: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)

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
        #: This kernel, or this viewer of `marimo run` (see :mod:`.registry`).
        self.session = registry.session_key()
        settings = WidgetSettings.resolve(user=user, url=url, join_code=join_code, session=self.session)
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
        self._progress.install()
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
        # The classroom: the server's view of this connection, polls by id, the pulse, my position.
        self._class = ClassView()
        self._class_changed = True
        self._polls: dict[str, Poll] = {}
        self._polls_lock = threading.Lock()
        self._reports = Throttle(self.client.loop, self.client.call_soon, self._send_report, REPORT_INTERVAL_S)
        self._progress = ProgressTracker(self._pushes.request, self._reports.request)
        self._cell: dict[str, Any] | None = None
        self._cells = Throttle(self.client.loop, self.client.call_soon, self._send_cell, CELL_INTERVAL_S)
        # The doctor's comm round trip: pings waiting for a view's pong, and whether any view spoke.
        self._views_seen = False
        self._pongs: dict[int, tuple[concurrent.futures.Future[dict[str, Any]], float]] = {}

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
            subscribe.class_view(self._on_class_view),
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

    # -- the classroom (teacher tools; the server holds the state, see .classroom) -------------

    def poll(self, question: str, options: list[str], *, multiple: bool = False, anonymous: bool = False) -> Poll:
        """Ask the class (teachers). Returns a :class:`~.classroom.Poll` at once; the server
        assigns its id, so ``await p`` (``p.result()`` in a script) waits until it exists.
        ``multiple=True`` lets students tick several options; ``anonymous=True`` means nobody,
        the teacher included, ever sees who voted what (counts only)."""
        data = {"question": str(question), "options": [str(option) for option in options],
                "multiple": bool(multiple), "anonymous": bool(anonymous)}
        answer = self._teacher_call("polls.create", data)
        return Poll(self, data=data, created=answer.future)

    @property
    def polls(self) -> list[Poll]:
        """Every poll of the room, oldest first (live objects: they read the latest view)."""
        found = [poll for poll in self._class.get("polls") or [] if isinstance(poll, dict) and "id" in poll]
        found.sort(key=lambda poll: float(poll.get("created") or 0))
        with self._polls_lock:
            for poll in found:
                if str(poll["id"]) not in self._polls:
                    self._polls[str(poll["id"])] = Poll(self, data=poll)
            return [self._polls[str(poll["id"])] for poll in found]

    def _remember_poll(self, poll: Poll) -> None:
        with self._polls_lock:
            if poll.id is not None:
                self._polls.setdefault(poll.id, poll)

    def vote(self, poll: Poll | str, choice: str | list[str]) -> Answer:
        """Vote (again = change of vote): one option, or a list of them for a ``multiple`` poll.
        Awaitable; a closed poll or an option that is not one is refused when awaited."""
        self._check_role("vote", allowed=("teacher", "student"))
        picked: str | list[str] = [str(c) for c in choice] if isinstance(choice, (list, tuple)) else str(choice)
        if isinstance(poll, Poll):
            return poll.then(lambda poll_id: self._call("polls.vote", {"poll": poll_id, "choice": picked}))
        return self._call("polls.vote", {"poll": str(poll), "choice": picked})

    def raise_hand(self, note: str = "") -> Answer:
        """Ask for help, with an optional note only teachers see. Awaitable: ``{position, queue_length}``."""
        self._check_role("raise a hand", allowed=("teacher", "student"))
        return self._call("hands.raise", {"note": str(note)})

    def lower_hand(self) -> Answer:
        self._check_role("lower a hand", allowed=("teacher", "student"))
        return self._call("hands.lower", {})

    @property
    def help_queue(self) -> list[dict[str, Any]] | dict[str, Any] | None:
        """Teachers: ``[{"user", "name", "note", "since"}]`` oldest first (``since`` in epoch
        seconds); students: ``{"position": n | None, "queue_length": m}``; None for observers."""
        return help_queue(self._class, str(self._class.get("role") or self.room.role))

    def resolve_hand(self, user_id: str) -> Answer:
        """Done with this student's question (teachers). Awaitable: ``{"resolved": bool}``."""
        return self._teacher_call("hands.resolve", {"user_id": str(user_id)})

    def next_hand(self) -> Answer:
        """Done with the oldest hand (teachers). Awaitable: that hand, or None when nobody waits."""
        return self._teacher_call("hands.next", {})

    def checkpoint(self, name: str) -> Answer:
        """Say "I got here" (``"ex3"``): teachers see how many did in :attr:`pulse`. Awaitable."""
        self._check_role("reach a checkpoint", allowed=("teacher", "student"))
        return self._call("pulse.checkpoint", {"name": str(name)})

    @property
    def pulse(self) -> dict[str, dict[str, Any]]:
        """Teachers: ``{checkpoint: {"done": n, "of": students present, "who": [names]}}``."""
        self._check_role("read the class pulse (teachers only)", allowed=("teacher",))
        return {str(name): dict(counts) for name, counts in (self._class.get("pulse") or {}).items()}

    @property
    def class_status(self) -> list[dict[str, Any]]:
        """Teachers: one row per student seen in the room — ``present``, ``sharing``,
        ``cells_run``, ``last_error`` (a type name), ``last_active``, ``idle_s`` and
        ``checkpoints``; the progress fields are None unless that student shares."""
        self._check_role("read the class status (teachers only)", allowed=("teacher",))
        return self._class.status_rows()

    def share_progress(self, share: bool = True) -> Answer:
        """Students: share this kernel's progress with the teacher (cells run, the last cell's
        error *type*, idle time — never code or values; see ``w.progress`` for exactly what),
        or stop. Reports follow each cell, at most once a second. Awaitable."""
        self._check_role("share progress", allowed=("teacher", "student"))
        self._progress.sharing = bool(share)
        self._pushes.request()
        return self._call("pulse.report", self._progress.report())

    def point_to(self, heading: str, index: int = 0, count: int = 0) -> None:
        """Teachers: show students where you are (the view does it for the active cell); the
        position goes into your presence, coalesced, and their views offer "jump there"."""
        self._check_role("lead the class (teachers only)", allowed=("teacher",))
        self._cell = cell_position(heading, index, count)
        self._cells.request()

    @property
    def teacher_cell(self) -> dict[str, Any] | None:
        """Where the teacher is (``{"heading", "index", "count"}``), as their presence says."""
        return teacher_cell(self.room.others)

    def export(self, path: str | Path | None = None) -> Answer:
        """Teachers: the lesson's record — messages, polls (votes unless anonymous), hands,
        checkpoints, attendance, moderation. Awaitable: ``data = await w.export()``; with a
        ``.json`` or ``.csv`` path it is also written there (CSV in long form, a ``kind`` column)."""
        if path is not None:
            lesson_export.export_format(path)  # a wrong suffix fails now, not after the call
        answer = self._teacher_call("class.export", {})
        if path is None:
            return answer
        written: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def write(done: concurrent.futures.Future[Any]) -> None:
            try:
                data = done.result()
                lesson_export.write(data, path)
            except BaseException as error:
                written.set_exception(error)
            else:
                written.set_result(data)

        answer.future.add_done_callback(write)
        return Answer(written)

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

    def doctor(self, timeout: float = 5.0) -> Checkup:
        """Check what breaks rooms here, in words with fixes: ``pluv-widget doctor``'s checks (the
        server, versions, clock, open files, JupyterHub) plus what only the kernel and the browser
        see — the kernel's loop runs the widget's tasks between cells, a comm round trip to a
        displayed view, and the anywidget / widget manager versions.

        ``await w.doctor()`` returns a :class:`~.checkup.Report` (``.ok``, ``.findings``,
        ``str()``); ``w.doctor()`` as a cell's last line shows the report and fills it in once the
        checks finished (within ``timeout`` seconds, after the cell). See :mod:`.checkup`."""
        return Checkup(self, timeout=timeout)

    def _expect_pong(self, ping_id: int) -> concurrent.futures.Future[dict[str, Any]]:
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._pongs[ping_id] = (future, time.monotonic())
        return future

    def _on_pong(self, content: dict[str, Any]) -> None:
        future, _ = self._pongs.pop(content.get("id"), (None, 0.0))  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result({**content, "_received": time.monotonic()})

    def _ping_again(self) -> None:
        """A view appeared (it asked for a snapshot): it missed the pings sent before it rendered."""
        now = time.monotonic()
        for ping_id, (_, sent) in list(self._pongs.items()):
            if now - sent > PING_MEMORY_S:
                del self._pongs[ping_id]  # nobody waits for it any more
            else:
                self.send({"type": PING, "id": ping_id})

    def leave(self, reason: str = "") -> None:
        """Leave the room: others see you go. The widget stays, greyed."""
        if self._left:
            return
        self._left = True
        registry.release(self)
        self._progress.uninstall()
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

    def _on_class_view(self, view: dict[str, Any]) -> None:
        self._class.update(view)
        self._class_changed = True
        self._pushes.request()

    def _send_report(self) -> None:
        """The coalesced ``pulse.report`` (at most once a second): only while sharing."""
        if self._left or not self._progress.sharing or self.room.state != "open":
            return
        answer = self.room.call("pulse.report", self._progress.report())
        answer.future.add_done_callback(lambda done: done.exception())  # refusals reach w.error already

    def _send_cell(self) -> None:
        if self._left or self._cell is None:
            return
        try:
            self.room.update_my_presence({CELL: self._cell})
        except Exception as error:  # a custom presence model without room for it
            self._show_error(f"cannot share your position: {error}")

    def _push(self) -> None:
        if self._left:
            return
        room = self.room
        state: dict[str, Any] = {
            "connection_state": str(room.state),
            "me": me_view(room),
            "others": [person_view(other) for other in room.others],
            "selection": room.my_presence.get("selection_id"),
            "progress": self._progress.preview(),
        }
        if self._class_changed:
            self._class_changed = False
            state["classroom"] = self._class.for_browser()
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
        self._reports.stop()
        self._cells.stop()
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
        self._views_seen = True
        if isinstance(content, dict):
            self.client.call_soon(self._handle_frontend_message, dict(content))

    def _handle_frontend_message(self, content: dict[str, Any]) -> None:
        try:
            if content.get("type") == "post":
                self.post(str(content.get("text", "")))
            elif content.get("type") == "sync-request":
                self._feed.want_snapshot()
                self._class_changed = True  # a new view: its clocks start from a fresh "now"
                self._pushes.request()
                self._ping_again()
            elif content.get("type") == "call":
                procedure, data, roles = browser_call(content)
                if self.room.role not in roles:  # the view shows no such control for this role
                    raise PermissionDenied(f"a {self.room.role} may not call {procedure!r}")
                self._call(procedure, data)
            elif content.get("type") == PONG:
                self._on_pong(content)
            elif content.get("type") == "share-progress":
                self.share_progress(content.get("share") is True)
            elif content.get("type") == "cell":
                if self.room.role == TEACHER:
                    self.point_to(content.get("heading"), content.get("index"), content.get("count"))  # type: ignore[arg-type]
        except Exception as error:
            logger.warning("RoomWidget: %s", error)
            self.error = str(error)
