"""The client room: a sans-I/O state machine. Inputs are method calls, outputs are data.

It decides everything a room client decides — who the others are (one user's tabs grouped),
the Yjs sync exchange and the local edits waiting for it, what to resend after a reconnect, and
whether to reconnect at all — and does none of the I/O. No sockets, no asyncio, no threads, no
clock; randomness (the reconnect jitter) comes from a function it is handed.

Driving it (what :mod:`pluv_widget.client.connection` does)::

    room = ClientRoom("r", presence={"name": "ada"})
    room.start(metadata=None)          # entering: state "connecting"
    room.opened()                      # the socket is open
    for frame in room.data_to_send():  # the join message and sync step 1
        ...                            # send it
    room.receive_text(welcome_frame)   # then every frame as it arrives
    for note in room.notifications():  # what subscribers should hear
        ...
    decision = room.closed(1006, "")   # Reconnect(delay_ms, attempts) | Fail(error) | Closed(error)

Threading: one thread at a time. The client adapter only calls it on its event loop.

Storage: the core owns the pycrdt document and its undo manager, and observes the document.
Updates from the server are applied with the origin :data:`REMOTE`, which the undo manager does
not track (so undo takes back this client's own edits only) and which the observer ignores. A
local edit waits in :attr:`pending_updates` (``on_edit`` tells the adapter to :meth:`flush`
soon) and leaves merged into one update; while not synced it waits, and after a reconnect the
sync exchange (our step 2 answers the server's state vector) carries it, so offline edits merge.

Storage refusals (an ``error`` message with a storage code) have defined consequences:

* *transient* (``TRANSIENT_STORAGE_REFUSALS``: the store failed): nothing is dropped. The core
  asks to be woken (:meth:`resync_delay_ms`, backing off 0.5 s, 1 s, 2 s ... 30 s) and then
  re-runs the sync exchange (:meth:`resync`: our state vector; the server's step 2 and step 1
  make us send what it lacks), until the server's state vector shows it has all our edits.
* *permanent* (``PERMANENT_STORAGE_REFUSALS``: poisoned, too large): the server refuses every
  later update of this connection until it starts over, so the core drops its document, starts a
  fresh one under a new client id (empty: a sync step 1 with an empty state vector reloads the
  room), and, once the server's copy arrived, reports an ``error`` notification whose
  :class:`ServerError` lists the roots whose local content was discarded. Undo history is
  cleared. The old document's shared types are detached: edits to them stay in that document,
  are never sent, and are logged. Refusals of updates sent before the reload are expected and
  ignored; a refusal of the reload itself (nothing new was sent since) closes the room
  (:attr:`close_expected`), so a refusal can never loop. A refusal of this member's right to
  write a storage update (``forbidden``, ``muted``, ``room_locked`` with ``"storage": true``) is
  handled the same way: the refused edits are dropped and the room reloaded.

The protected document: a second pycrdt document, read-only here (see ``protocol/sync.py``).
After each ``welcome`` the core asks for it (a protected sync step 1) and applies what the server
sends. Roots the server names in ``welcome.protected_roots`` are read from it
(:meth:`root`); any document's root can be read with :meth:`protected_root`. A local edit of it
is never sent (except a teacher's, when the room has teacher-only roots): it is logged, the
protected document is dropped and loaded again from the server (``storage_replaced``).

Generations: ``welcome.generation`` changes when a teacher resets or clears the room, or its
storage expires. A client that synced an older generation discards its document (its offline
edits included) and loads the room afresh, instead of merging old content back.

Calls: :meth:`call` queues a ``call`` (sent once in the room) and returns its id; the server's
``result`` or ``error`` of that id becomes a ``call_result`` or ``call_error`` notification. A
call in flight when the connection drops fails with the code ``disconnected``.

The classroom: the server sends this connection's whole classroom view (``class``) after
``welcome`` and whenever it changes; the core keeps the last one (:attr:`ClientRoom.class_view`)
and notifies ``class_view``.
"""

from __future__ import annotations

import logging
import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import pycrdt

from ..crdt import RootTypes, to_json
from ..errors import AuthorizationError, RoomClosedError
from ..protocol import (
    AUTH_CLOSE_CODES,
    EMPTY_UPDATE,
    FINAL_CLOSE_CODES,
    PERMANENT_STORAGE_REFUSALS,
    PERMISSION_REFUSALS,
    TRANSIENT_STORAGE_REFUSALS,
    ClassView,
    ErrorMessage,
    Event,
    Join,
    Joined,
    Left,
    MembersJoined,
    MembersLeft,
    PresenceBatch,
    PresenceUpdate,
    Result,
    SyncStep,
    Welcome,
    decode_server_message,
    decode_sync,
    sync,
)
from ..protocol.codec import ProtocolError
from ..protocol.codes import CloseCode, ErrorCode
from ..protocol.messages import Call
from .membership import Member, Membership

log = logging.getLogger("pluv_widget.client")

#: Transaction origin of updates from the server: never undone locally, never sent back.
REMOTE = "pluv-widget:remote"
#: Resending after a transient storage refusal waits 0.5 s, 1 s, 2 s ... at most 30 s.
RESYNC_FIRST_MS = 500.0
RESYNC_MAX_MS = 30_000.0
DEFAULT_RECONNECT_TIMEOUT_MS = 30_000
#: At most this much (or 10% of the wait plus 50 ms, if less) is added to a reconnect wait, so a
#: class whose server restarted does not return in one burst.
JITTER_MS = 500

ReconnectTimeout = int | Callable[[int], int]


# -- what the core hands to user code ----------------------------------------------------------


class ConnectionState(StrEnum):
    UNTOUCHED = "untouched"  # created, never entered
    CONNECTING = "connecting"  # entering for the first time
    OPEN = "open"  # in the room
    UNAVAILABLE = "unavailable"  # connection lost; reconnecting
    CLOSED = "closed"  # left, or refused for good


class StorageState(StrEnum):
    LOADING = "loading"  # no sync with the server yet: reads would show an empty document
    SYNCED = "synced"  # in sync; edits travel as they happen
    OFFLINE = "offline"  # synced before, disconnected now; edits are kept and merged on reconnect


@dataclass(frozen=True)
class User:
    """A person in the room: one entry per user id, however many connections it has.

    Without auth the id is the connection id: every connection is its own person.
    ``presence`` is the user's most recently updated connection's presence (as in pluv).
    """

    id: str
    connection_id: str
    connection_ids: list[str]
    presence: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OthersChange:
    """Why ``others`` changed: a user entered, left, or updated presence or connections."""

    kind: Literal["enter", "leave", "update"]
    user: User


@dataclass(frozen=True)
class RoomEvent:
    """A broadcast event, stamped by the server. ``connection_id`` is None from the server itself."""

    event: str
    data: Any
    connection_id: str | None
    user: dict[str, Any] | None


@dataclass(frozen=True)
class ServerError:
    """An ``error`` message: the server refused one of this client's messages (see ErrorCode).

    After a permanent storage refusal (``reloaded`` True) the room was reloaded from the server
    and ``message`` says so; ``discarded`` maps each storage root whose local content differed
    from the server's copy to the local JSON that was dropped (empty: nothing local was lost).
    """

    code: str
    message: str
    discarded: dict[str, Any] = field(default_factory=dict)
    reloaded: bool = False


# -- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """Something subscribers hear: ``topic`` is ``connection``, ``storage_state``, ``others``,
    ``my_presence``, ``error`` or ``event:<name>``; ``args`` are the callback's arguments."""

    topic: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Wait ``delay_ms``, then connect again. ``attempts`` is what ``reconnect_timeout_ms`` got."""

    delay_ms: float
    attempts: int


@dataclass(frozen=True, slots=True)
class Fail:
    """The token was refused: call ``on_authorization_fail(error)`` once; the room is closed."""

    error: AuthorizationError


@dataclass(frozen=True, slots=True)
class Closed:
    """The room is closed for good: left (``left``), or refused with a final close code."""

    error: RoomClosedError
    left: bool = False


Decision = Reconnect | Fail | Closed


# -- the state machine ---------------------------------------------------------------------------


class ClientRoom:
    """One room as one client sees it. See the module docstring for how to drive it."""

    def __init__(
        self,
        name: str,
        *,
        presence: dict[str, Any] | None = None,
        root_types: RootTypes | None = None,
        initial_storage: Callable[[], bytes] | None = None,
        reconnect_timeout_ms: ReconnectTimeout = DEFAULT_RECONNECT_TIMEOUT_MS,
        random: Callable[[], float] = _random.random,
        on_edit: Callable[[], None] | None = None,
    ) -> None:
        """``on_edit()`` is called (from the document's observer) when a local edit starts
        waiting: the adapter should call :meth:`flush` soon (once per loop turn merges a burst)."""
        self.name = name
        self.presence: dict[str, Any] = dict(presence or {})
        self.state = ConnectionState.UNTOUCHED
        self.storage_state = StorageState.LOADING
        self.connection_id: str | None = None
        self.user: dict[str, Any] | None = None  # as the server stamped it in the last welcome
        self.members = Membership()  # every other connection, my own other tabs included
        self.metadata: Any = None
        self.entered = False  # welcomed and synced on the current connection
        self._initial_storage = initial_storage
        self._reconnect_timeout_ms = reconnect_timeout_ms
        self._random = random
        self._attempts = 0  # failed connection attempts since the last open connection
        self._welcomed = False  # on the current connection
        self._synced_here = False  # a sync step 2 arrived on the current connection
        self._left = False
        self._out: list[str | bytes] = []
        self._notes: list[Notification] = []
        self._on_edit = on_edit
        self._warned_detached: set[int] = set()
        # Storage: the document, its roots (typed by the storage declaration), undo, pending edits.
        self._root_types: RootTypes = dict(root_types or {})
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.roots: dict[str, Any] = {}
        self.undo_manager: pycrdt.UndoManager = pycrdt.UndoManager(capture_timeout_millis=0)
        self._pending: list[bytes] = []
        self._applying_remote = False
        self._ever_synced = False
        # The protected document (read-only) and what the server said about the room.
        self.protected_doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.protected_roots: tuple[str, ...] = ()
        self.teacher_only_roots: tuple[str, ...] = ()
        self.generation: str | None = None  # of the last welcome; None: never welcomed
        #: The last classroom view the server sent (None: none yet). Replaced whole, never mutated,
        #: so another thread may read it without a lock.
        self.class_view: dict[str, Any] | None = None
        self._new_protected(self.protected_doc)
        self._next_call = 0
        self._queued_calls: list[Call] = []
        self._calls_in_flight: set[int] = set()
        self._observing: pycrdt.Doc[Any] | None = None
        self._new_document(self.doc)
        # Refusals, per connection: update frames sent that the server may still refuse, step 1
        # frames not yet answered, and the reload under way (after a permanent refusal).
        self._refusable = 0
        self._refused_dropped = 0
        self._unanswered_step1 = 0
        self._reload: _Reload | None = None
        self._reloaded_here = False  # a reload started on the current connection
        self._failure: RoomClosedError | None = None
        # Transient refusals: the resend backoff.
        self._resync_attempts = 0
        self._resync_wanted: float | None = None  # a delay the adapter has not taken yet
        self._resync_scheduled = False
        self._verifying = False  # resending until the server's state vector covers ours

    def __repr__(self) -> str:
        return f"<ClientRoom {self.name!r} {self.state.value} {self.storage_state.value}>"

    # -- outputs ---------------------------------------------------------------------------------

    def data_to_send(self) -> list[str | bytes]:
        """Frames to send, in order (text frames are ``str``, sync frames ``bytes``); drains them."""
        frames, self._out = self._out, []
        return frames

    def notifications(self) -> list[Notification]:
        """What subscribers should hear, in order; drains them."""
        notes, self._notes = self._notes, []
        return notes

    @property
    def pending_updates(self) -> int:
        """Local edits not yet handed to a sync frame (offline edits, or a burst before a flush)."""
        return len(self._pending)

    def resync_delay_ms(self) -> float | None:
        """After a transient storage refusal: call :meth:`resync` after this many milliseconds
        (None: nothing to schedule). Drains it."""
        delay, self._resync_wanted = self._resync_wanted, None
        return delay

    @property
    def close_expected(self) -> bool:
        """The core gave up on this room (a refusal that would loop): close the socket; the
        following :meth:`closed` returns :class:`Closed` with the reason."""
        return self._failure is not None

    @property
    def reloading(self) -> bool:
        """A permanent refusal dropped the document; the server's copy has not arrived yet."""
        return self._reload is not None

    # -- the connection's life -------------------------------------------------------------------

    def start(self, metadata: Any = None) -> None:
        """Start (or restart, after a leave) entering the room."""
        self._left = False
        self._failure = None
        self._attempts = 0
        self.metadata = metadata

    def connecting(self) -> None:
        """A connection attempt begins (before fetching a token)."""
        first = self._attempts == 0 and self.connection_id is None
        self._set_state(ConnectionState.CONNECTING if first else ConnectionState.UNAVAILABLE)

    def opened(self) -> None:
        """The socket is open: send ``join`` and our state vector (sync step 1)."""
        self._welcomed = False
        self._synced_here = False
        self.entered = False
        self._refusable = self._refused_dropped = 0  # a new connection: nothing on it is refused yet
        self._reloaded_here = False
        self._unanswered_step1 = 0
        offer = None
        if self._initial_storage is not None and not self._ever_synced:
            offer = self._initial_storage()  # the server applies it only if the room has no storage
        generation = self.generation if self._ever_synced else None
        self._out.append(Join(self.presence, self.metadata, offer, generation=generation).encode())
        self._send_step1()  # during a reload: the fresh document's empty state vector

    def closed(self, code: int | None, reason: str = "") -> Decision:
        """The connection ended (``code`` None: it never opened, or dropped without a close frame)."""
        was_open = self._welcomed
        self._welcomed = False
        self.entered = False
        if self._left:
            return Closed(RoomClosedError(f"left room {self.name!r}"), left=True)
        if self._failure is not None:
            self._close()
            return Closed(self._failure)
        if code in AUTH_CLOSE_CODES:
            return self.refused(AuthorizationError(code, reason))
        if code in FINAL_CLOSE_CODES:
            error = RoomClosedError(f"the server closed the room ({code}): {reason}")
            self._close()
            return Closed(error)
        self._fail_calls_in_flight()
        if code == CloseCode.ROOM_RESET:  # a new generation: come back at once and reload
            self._attempts = 1
            self._set_state(ConnectionState.UNAVAILABLE)
            if self.storage_state == StorageState.SYNCED:
                self._set_storage_state(StorageState.OFFLINE)
            return Reconnect(self._random() * 100, 0)
        if was_open:
            self._attempts = 0  # it was open: the next wait starts from the first attempt
        attempts = self._attempts
        self._attempts += 1
        self._set_state(ConnectionState.UNAVAILABLE)
        if self.storage_state == StorageState.SYNCED:
            self._set_storage_state(StorageState.OFFLINE)
        return Reconnect(self.reconnect_delay_ms(attempts), attempts)

    def refused(self, error: AuthorizationError) -> Fail:
        """The token was refused (by the server's close code or by the auth endpoint)."""
        self._fail_calls_in_flight()
        self._close()
        return Fail(error)

    def leave(self) -> Closed:
        """Leave for good: no reconnect. The adapter closes the socket with 1001."""
        self._left = True
        self.entered = False
        self._close()
        return Closed(RoomClosedError(f"left room {self.name!r}"), left=True)

    def reconnect_delay_ms(self, attempts: int) -> float:
        timeout = self._reconnect_timeout_ms
        base = float(timeout(attempts) if callable(timeout) else timeout)
        return max(0.0, base) + self._random() * min(JITTER_MS, 0.1 * max(base, 0.0) + 50)

    def _close(self) -> None:
        self._reload = None
        self._set_state(ConnectionState.CLOSED)
        if self.storage_state == StorageState.SYNCED:
            self._set_storage_state(StorageState.OFFLINE)

    # -- frames from the server ------------------------------------------------------------------

    def receive_text(self, frame: str) -> None:
        """A text frame. Raises :class:`ProtocolError` for a frame that is not a server message,
        or a first message that is not ``welcome`` (the adapter drops the connection)."""
        message = decode_server_message(frame)
        if not self._welcomed and not isinstance(message, Welcome):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"expected a welcome, got {type(message).__name__}")
        if isinstance(message, Welcome):
            self._on_welcome(message)
        elif isinstance(message, (PresenceUpdate, PresenceBatch)):
            changed: list[tuple[str, Literal["enter", "update"]]] = []
            for update in message.updates if isinstance(message, PresenceBatch) else (message,):
                member = self.members.patch(update.connection_id or "", update.patch)  # mine: not a member
                if member is not None:
                    changed.append((member.user_id, "update"))
            self._notify_users(changed)
        elif isinstance(message, (Joined, MembersJoined)):
            changed = []
            for info in message.members if isinstance(message, MembersJoined) else (message.member,):
                if info.connection_id == self.connection_id:
                    continue  # a coalesced ``joined`` goes to everyone, me included
                user_id = str(info.user["id"])
                known = bool(self.members.of_user(user_id))
                self.members.add(Member.from_info(info))
                changed.append((user_id, "update" if known else "enter"))
            self._notify_users(changed)
        elif isinstance(message, (Left, MembersLeft)):
            for connection_id in message.connection_ids if isinstance(message, MembersLeft) else (
                    message.connection_id,):
                gone = self.members.remove(connection_id)
                if gone is not None:
                    if self.members.of_user(gone.user_id):
                        self._notify_user(gone.user_id, "update")
                    elif not self._is_me(gone.user_id):
                        self._notify("others", self.others, OthersChange("leave", _user_of([gone])))
        elif isinstance(message, Event):
            self._notify(f"event:{message.event}",
                         RoomEvent(message.event, message.data, message.connection_id, message.user))
        elif isinstance(message, ClassView):
            self.class_view = message.view
            self._notify("class_view", message.view)
        elif isinstance(message, Result):
            if message.id in self._calls_in_flight:
                self._calls_in_flight.discard(message.id)
                self._notify("call_result", message.id, message.data)
        elif isinstance(message, ErrorMessage) and message.id is not None:
            self._calls_in_flight.discard(message.id)
            self._notify("call_error", message.id, message.code, message.message)
            self._notify("error", ServerError(message.code, message.message))
        elif isinstance(message, ErrorMessage):
            if message.storage and message.code in PERMISSION_REFUSALS:
                self._on_permanent_refusal(message.code, message.message)
            elif message.code in PERMANENT_STORAGE_REFUSALS:
                self._on_permanent_refusal(message.code, message.message)
            elif message.code in TRANSIENT_STORAGE_REFUSALS:
                self._on_transient_refusal(message.code, message.message)
            else:
                self._notify("error", ServerError(message.code, message.message))

    def receive_binary(self, frame: bytes) -> None:
        """A sync frame. Raises ``ValueError`` for a frame that is not one."""
        message = decode_sync(frame)
        if message.protected:
            if message.step != SyncStep.STEP1:  # the server never asks for our protected state
                self._apply_protected(message.payload)
            return
        if message.step == SyncStep.STEP1:
            # The server's state vector: answer with what it lacks, offline edits included.
            self._pending.clear()
            missing = self.doc.get_update(message.payload)
            if missing == EMPTY_UPDATE:
                # The server holds every edit of ours: a resend after a transient refusal is done,
                # and nothing we sent can still be refused.
                self._refusable = 0
                self._verifying = False
                self._resync_attempts = 0
            else:
                self._refusable += 1
                if self._verifying:
                    self._want_resync()  # check again (with backoff) that it was stored this time
            self._out.append(sync.step2(missing))
            return
        if message.step == SyncStep.STEP2:
            self._unanswered_step1 = max(0, self._unanswered_step1 - 1)
            if self._reload is not None and self._unanswered_step1 > 0:
                return  # the answer to a step 1 of the dropped document: the reload's follows
        if self._reload is not None and message.step == SyncStep.UPDATE:
            return  # sent before the server saw our reload: the reload's step 2 contains it
        self._apply_remote(message.payload)
        if message.step == SyncStep.STEP2:
            self._ever_synced = True
            self._set_storage_state(StorageState.SYNCED)
            self._synced_here = True
            if self._reload is not None:
                self._finish_reload(self._reload)
            self.flush()
            if self._welcomed:
                self.entered = True  # registered, knows the others, has storage

    def _on_welcome(self, welcome: Welcome) -> None:
        before = {user.id: user for user in self.others}
        self._welcomed = True
        self._attempts = 0
        self.connection_id = welcome.connection_id
        self.user = welcome.user
        stale = self.generation is not None and welcome.generation != self.generation and self._ever_synced
        self.generation = welcome.generation
        roots_changed = (welcome.protected_roots, welcome.teacher_only_roots) != (
            self.protected_roots, self.teacher_only_roots)
        self.protected_roots, self.teacher_only_roots = welcome.protected_roots, welcome.teacher_only_roots
        if stale:
            # The room was reset, cleared or expired since we synced: never merge old content back.
            self._new_protected(self._fresh_doc(self.protected_doc))
            self._start_reload("room_reset", "the room was reset by a teacher (or its storage expired) "
                                             "while this client was away")
        elif roots_changed:
            self._new_document(self.doc)  # roots now live in the protected document, or no longer do
            self._notify("storage_replaced")
        self._out.append(sync.step1(self.protected_doc.get_state(), protected=True))
        for call in self._queued_calls:
            self._out.append(call.encode())
            self._calls_in_flight.add(call.id)
        self._queued_calls.clear()
        self.members.clear()
        for info in welcome.others:
            self.members.add(Member.from_info(info))
        others = self.others  # built once: a welcome may list a thousand people
        after = {user.id: user for user in others}
        self._set_state(ConnectionState.OPEN)
        if self.storage_state == StorageState.OFFLINE:
            self._set_storage_state(StorageState.SYNCED)  # the sync exchange follows at once
        self.entered = self._synced_here
        for user_id, user in before.items():
            if user_id not in after:
                self._notify("others", others, OthersChange("leave", user))
        for user_id, user in after.items():
            self._notify("others", others, OthersChange("update" if user_id in before else "enter", user))

    # -- local inputs ----------------------------------------------------------------------------

    def set_presence(self, presence: dict[str, Any]) -> None:
        """My (validated) presence is now ``presence``: send what changed, if connected."""
        changed = {key: value for key, value in presence.items() if self.presence.get(key) != value}
        self.presence = dict(presence)
        if changed:
            if self.state == ConnectionState.OPEN:
                self._out.append(PresenceUpdate(changed).encode())
            self._notify("my_presence", dict(self.presence))

    def call(self, procedure: str, data: Any = None) -> int:
        """Queue a call of the server's ``procedure`` (sent once in the room); returns its id."""
        self._next_call += 1
        call = Call(self._next_call, procedure, data)
        if self._welcomed and self.state == ConnectionState.OPEN:
            self._out.append(call.encode())
            self._calls_in_flight.add(call.id)
        else:
            self._queued_calls.append(call)
        return call.id

    def _fail_calls_in_flight(self) -> None:
        for call_id in sorted(self._calls_in_flight):
            self._notify("call_error", call_id, "disconnected",
                         "the connection dropped before the server answered; it may or may not have applied it")
        self._calls_in_flight.clear()

    @property
    def role(self) -> str:
        """My role as the server stamped it (``teacher`` without auth)."""
        from ..protocol.roles import TEACHER, role_of

        return TEACHER if self.user is None else str(role_of(self.user))

    def broadcast(self, event: str, data: Any = None) -> None:
        """Send ``event`` to the rest of the room; dropped while not connected (as in pluv)."""
        if self.state == ConnectionState.OPEN:
            self._out.append(Event(event, data).encode())

    def local_update(self, update: bytes) -> bool:
        """The document changed (its observer calls this). True when this is the first edit
        waiting: the adapter should :meth:`flush` soon (once per loop turn merges a burst)."""
        if self._applying_remote:
            return False
        self._pending.append(update)
        return len(self._pending) == 1

    def flush(self) -> None:
        """Send the waiting local edits as one update, if synced (else they wait for the sync)."""
        if not self._pending or self.storage_state != StorageState.SYNCED or not self._welcomed:
            return
        updates, self._pending = self._pending, []
        self._refusable += 1
        self._out.append(sync.update(updates[0] if len(updates) == 1 else pycrdt.merge_updates(*updates)))

    def resync(self) -> None:
        """The delay of :meth:`resync_delay_ms` passed: run the sync exchange again (our state
        vector; the server answers what we lack and its own, and we answer what it lacks).
        Without a connection it does nothing: reconnecting runs the same exchange."""
        self._resync_scheduled = False
        if self._welcomed and self._synced_here and self._reload is None:
            self._send_step1()

    def _send_step1(self) -> None:
        self._unanswered_step1 += 1
        self._out.append(sync.step1(self.doc.get_state()))

    # -- storage refusals ------------------------------------------------------------------------

    def _on_transient_refusal(self, code: str, text: str) -> None:
        if self._reload is not None:
            self._refused_dropped = max(0, self._refused_dropped - 1)
            return  # an update of the dropped document: nothing to resend
        self._refusable = max(0, self._refusable - 1)
        if not self._verifying:
            self._notify("error", ServerError(code, f"{text} (the edits are kept and sent again)"))
        self._verifying = True
        self._want_resync()

    def _want_resync(self) -> None:
        if self._resync_scheduled:
            return
        self._resync_scheduled = True
        self._resync_wanted = min(RESYNC_MAX_MS, RESYNC_FIRST_MS * 2 ** min(self._resync_attempts, 16))
        self._resync_attempts += 1

    def _on_permanent_refusal(self, code: str, text: str) -> None:
        # The server answers a connection's frames in order, so while our reload is under way a
        # refusal is about an update sent before it (already dropped with its document), unless
        # none was in flight: then the reload itself was refused. After the reload, a refusal
        # when nothing was sent since is the same loop. Either way: stop, do not reload again.
        if self._reload is not None:
            if self._refused_dropped > 0:
                self._refused_dropped -= 1
                return
        elif self._refusable > 0 or not self._reloaded_here:
            self._refusable = max(0, self._refusable - 1)
            self._start_reload(code, text)
            return
        self._fail(code, f"the server refused room {self.name!r} again right after reloading it "
                         f"({code}: {text}); the room is closed")

    def _start_reload(self, code: str, text: str) -> None:
        self._reload = _Reload(code, text, self._json())
        self._reloaded_here = True
        self._refused_dropped += self._refusable  # what is still in flight may be refused too
        self._refusable = 0
        self._pending.clear()
        self._verifying = False
        self._resync_attempts = 0
        self._new_document(self._fresh_doc(self.doc))
        self._notify("storage_replaced")
        self._set_storage_state(StorageState.LOADING)
        if self._welcomed:
            self._send_step1()  # a fresh document's state vector is empty: the server starts over

    def _finish_reload(self, reload: _Reload) -> None:
        self._reload = None
        self._refused_dropped = 0  # answered in order: every refusal of the dropped updates came
        reloaded = self._json()
        discarded = {key: value for key, value in reload.local.items() if reloaded.get(key) != value}
        if discarded:
            lost = f"local changes to {', '.join(map(repr, sorted(discarded)))} were discarded"
        else:
            lost = "no local changes were lost"
        message = f"{reload.text}; the room's storage was reloaded from the server and {lost}"
        self._notify("error", ServerError(reload.code, message, discarded, reloaded=True))

    def _fail(self, code: str, text: str) -> None:
        self._failure = RoomClosedError(text)
        self._reload = None
        self._notify("error", ServerError(code, text))

    def _json(self) -> dict[str, Any]:
        return {key: to_json(root) for key, root in self.roots.items()}

    @staticmethod
    def _fresh_doc(old: pycrdt.Doc[Any]) -> pycrdt.Doc[Any]:
        fresh: pycrdt.Doc[Any] = pycrdt.Doc()
        while fresh.client_id == old.client_id:
            fresh = pycrdt.Doc()
        return fresh

    def _new_document(self, doc: pycrdt.Doc[Any]) -> None:
        """Make ``doc`` the room's document: its roots, a fresh undo history, its observer."""
        if doc is not self._observing:
            doc.observe(lambda event: self._observed(doc, event.update))
            self._observing = doc
        self.doc = doc
        self.roots = {key: self._root_in(key, kind) for key, kind in self._root_types.items()}
        writable = [root for key, root in self.roots.items() if key not in self.protected_roots]
        self.undo_manager = pycrdt.UndoManager(scopes=writable, capture_timeout_millis=0)

    def _root_in(self, key: str, kind: Any) -> Any:
        doc = self.protected_doc if key in self.protected_roots else self.doc
        return doc.get(key, type=kind)

    def protected_root(self, key: str, kind: Any) -> Any:
        """The protected document's root ``key`` (of type ``kind``): read-only, see the module docstring."""
        return self.protected_doc.get(key, type=kind)

    def _new_protected(self, doc: pycrdt.Doc[Any]) -> None:
        self.protected_doc = doc
        doc.observe(lambda event: self._protected_observed(doc, event.update))
        if hasattr(self, "roots"):
            self.roots = {key: self._root_in(key, kind) for key, kind in self._root_types.items()}

    def _protected_observed(self, doc: pycrdt.Doc[Any], update: bytes) -> None:
        if doc is not self.protected_doc or self._applying_remote:
            return
        if self.role == "teacher" and self.teacher_only_roots and self._welcomed:
            self._out.append(sync.update(update, protected=True))
            if self._on_edit is not None:
                self._on_edit()
            return
        # Never sent: the protected document is the server's. Drop it and load it again.
        log.warning("room %s: a local edit to the protected (read-only) storage was not sent and is "
                    "undone; change it through the server's procedures", self.name)
        self._new_protected(self._fresh_doc(doc))
        self._notify("storage_replaced")
        if self._welcomed:
            self._out.append(sync.step1(b"\x00", protected=True))
        if self._on_edit is not None:
            self._on_edit()  # the adapter pumps: the reload request leaves now

    def _apply_protected(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            with self.protected_doc.transaction(origin=REMOTE):
                self.protected_doc.apply_update(update)
        finally:
            self._applying_remote = False

    def _observed(self, doc: pycrdt.Doc[Any], update: bytes) -> None:
        if doc is not self.doc:
            if doc.client_id not in self._warned_detached:
                self._warned_detached.add(doc.client_id)
                log.warning("room %s: an edit to a storage handle detached by a reload was ignored; "
                            "use room.storage(key) again", self.name)
            return
        if self.local_update(update) and self._on_edit is not None:
            self._on_edit()

    def _apply_remote(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            with self.doc.transaction(origin=REMOTE):
                self.doc.apply_update(update)
        finally:
            self._applying_remote = False

    # -- people ----------------------------------------------------------------------------------

    @property
    def others(self) -> list[User]:
        """Everyone else, one entry per user; my own other tabs count as myself."""
        return [_user_of(group) for user_id, group in self.members.by_user().items() if not self._is_me(user_id)]

    @property
    def myself(self) -> User | None:
        if self.connection_id is None or self.user is None:
            return None
        user_id = str(self.user["id"])
        tabs = [member.connection_id for member in self.members.of_user(user_id)]
        return User(user_id, self.connection_id, [self.connection_id, *tabs], dict(self.presence), dict(self.user))

    def other(self, connection_id: str) -> User | None:
        """The user one of whose connections is ``connection_id`` (my other tabs included)."""
        member = self.members.get(connection_id)
        return None if member is None else _user_of(self.members.of_user(member.user_id))

    def _is_me(self, user_id: str) -> bool:
        return self.user is not None and user_id == str(self.user["id"])

    def _notify_user(self, user_id: str, kind: Literal["enter", "update"]) -> None:
        self._notify_users([(user_id, kind)])

    def _notify_users(self, changes: list[tuple[str, Literal["enter", "update"]]]) -> None:
        """One ``others`` notification per change, all carrying the list after the last one (a
        coalesced frame changes many users at once; the list is built once, not once per user)."""
        others: list[User] | None = None
        for user_id, kind in changes:
            if self._is_me(user_id):
                continue  # my own other tabs are not "others"
            group = self.members.of_user(user_id)
            if group:
                if others is None:
                    others = self.others
                self._notify("others", others, OthersChange(kind, _user_of(group)))

    # -- notifications ---------------------------------------------------------------------------

    def _notify(self, topic: str, *args: Any) -> None:
        self._notes.append(Notification(topic, args))

    def _set_state(self, state: ConnectionState) -> None:
        if self.state != state:
            self.state = state
            self._notify("connection", state.value)

    def _set_storage_state(self, state: StorageState) -> None:
        if self.storage_state != state:
            self.storage_state = state
            self._notify("storage_state", state.value)


@dataclass(frozen=True, slots=True)
class _Reload:
    """A reload under way: the refusal that caused it and the local JSON it dropped."""

    code: str
    text: str
    local: dict[str, Any]


def _user_of(connections: list[Member]) -> User:
    latest = max(connections, key=lambda member: member.touched)
    return User(latest.user_id, latest.connection_id, [member.connection_id for member in connections],
                dict(latest.presence), dict(latest.user))
