"""A room as the client sees it: presence, the others, events, storage, and the connection loop.

Threading: the room lives on its client's event loop. Public methods are synchronous and may be
called from any thread: they validate in the caller's thread (so a bad patch raises there and
nothing is sent) and hand the I/O to the loop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pycrdt
import websockets
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .. import protocol
from ..crdt import StorageFactory, to_json
from ..errors import AuthorizationError, RoomClosedError, StorageLoadingError
from ..protocol import CloseCode, read_sync_frame, sync_frame
from .auth import fetch_token
from .subscriptions import Listeners, RoomSubscriptions
from .types import ConnectionState, OthersChange, RoomEvent, ServerError, StorageState, User

if TYPE_CHECKING:
    from .client import PluvClient

log = logging.getLogger("pluv_widget.client")

DEFAULT_RECONNECT_TIMEOUT_MS = 30_000
JITTER_MS = 500  # at most this much (or 10% of the wait, if less) is added, so a class does not return at once
OPEN_TIMEOUT_S = 10.0
REMOTE = "pluv-widget:remote"  # transaction origin of updates from the server: never undone locally
T = TypeVar("T")

ReconnectTimeout = int | Callable[[int], int]


@dataclass
class _Connection:
    """Another connection in the room, as the server described it."""

    connection_id: str
    user: dict[str, Any]
    presence: dict[str, Any]
    touched: int  # order of its last presence change: the user's latest presence wins


class PluvRoom:
    """A room of a :class:`~pluv_widget.client.PluvClient`; create it with ``client.create_room``."""

    def __init__(
        self,
        client: PluvClient,
        name: str,
        *,
        initial_presence: dict[str, Any] | BaseModel | None,
        initial_storage: StorageFactory | None,
        on_authorization_fail: Callable[[AuthorizationError], Any] | None,
        reconnect_timeout_ms: ReconnectTimeout,
    ) -> None:
        self.name = protocol.check_room_name(name)
        self._client = client
        self._presence = client._validate_presence(initial_presence)
        self._storage_factory = initial_storage
        self._on_authorization_fail = on_authorization_fail
        self._reconnect_timeout_ms = reconnect_timeout_ms
        self._listeners = Listeners()
        self.subscribe = RoomSubscriptions(self)
        self.state = ConnectionState.UNTOUCHED
        self.storage_state = StorageState.LOADING
        self.connection_id: str | None = None
        self._user: dict[str, Any] | None = None
        self._connections: dict[str, _Connection] = {}
        self._touches = 0
        self._socket: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[PluvRoom] | None = None
        self._metadata: Any = None
        self._left = False
        # Storage: the document, its root types (from the storage factory), and undo.
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self._roots: dict[str, Any] = {}
        if initial_storage is not None:
            for key, kind in initial_storage.root_types.items():
                self._roots[key] = self.doc.get(key, type=kind)
        self._undo = pycrdt.UndoManager(scopes=list(self._roots.values()), capture_timeout_millis=0)
        self._applying_remote = False
        self._outbox: list[bytes] = []
        self.doc.observe(self._on_doc_change)

    def __repr__(self) -> str:
        return f"<PluvRoom {self.name!r} {self.state.value}>"

    # -- presence and people ----------------------------------------------------------------

    @property
    def my_presence(self) -> dict[str, Any]:
        return dict(self._presence)

    @property
    def myself(self) -> User | None:
        """This user (None before the first welcome), with all its connections in the room."""
        if self.connection_id is None or self._user is None:
            return None
        own = [c for c in self._connections.values() if c.user.get("id") == self._user["id"]]
        return User(self._user["id"], self.connection_id, [self.connection_id, *(c.connection_id for c in own)],
                    dict(self._presence), dict(self._user))

    @property
    def others(self) -> list[User]:
        """Everyone else in the room, one entry per user (a user's other tabs count as myself)."""
        by_user: dict[str, list[_Connection]] = {}
        for connection in self._connections.values():
            by_user.setdefault(connection.user["id"], []).append(connection)
        mine = self._user["id"] if self._user else None
        return [_user_of(connections) for user_id, connections in by_user.items() if user_id != mine]

    def other(self, connection_id: str) -> User | None:
        """The user one of whose connections is ``connection_id``."""
        connection = self._connections.get(connection_id)
        if connection is None:
            return None
        return self._user_by_id(connection.user["id"])

    def _user_by_id(self, user_id: str) -> User | None:
        connections = [c for c in self._connections.values() if c.user["id"] == user_id]
        return _user_of(connections) if connections else None

    def update_my_presence(self, patch: dict[str, Any] | BaseModel) -> None:
        """Merge ``patch`` into my presence, validated by the client's presence model; raises
        ``pydantic.ValidationError`` (and sends nothing) when the result is invalid."""
        if isinstance(patch, BaseModel):
            patch = patch.model_dump(mode="json", exclude_unset=True)
        merged = self._client._validate_presence({**self._presence, **patch})
        changed = {key: value for key, value in merged.items() if self._presence.get(key) != value}
        self._presence = merged
        if changed:
            self._client.call_soon(self._send_presence, changed)

    def _send_presence(self, patch: dict[str, Any]) -> None:
        self._send({"type": "presence", "patch": patch})
        self._listeners.emit("my_presence", dict(self._presence))

    def broadcast(self, event: str, data: Any = None) -> None:
        """Send ``event`` to the rest of the room (dropped while not connected, like pluv)."""
        if not protocol.EVENT_NAME_PATTERN.match(event):
            raise ValueError(f"invalid event name {event!r}")
        protocol.json_size(data)  # raises TypeError now for data that is not JSON
        self._client.call_soon(self._send, {"type": "event", "event": event, "data": data})

    # -- storage ----------------------------------------------------------------------------

    def _root(self, key: str) -> Any:
        if key not in self._roots:
            raise KeyError(f"room {self.name!r} has no storage root {key!r}; declare it in initial_storage")
        return self._roots[key]

    def storage(self, key: str) -> Any:
        """The live pycrdt shared type at ``key`` (edits sync to everyone)."""
        if self.storage_state == StorageState.LOADING:
            raise StorageLoadingError(f"room {self.name!r} storage is loading: await client.enter(room) first")
        return self._root(key)

    def storage_json(self) -> dict[str, Any] | None:
        """All storage roots as JSON, or None while storage is loading."""
        if self.storage_state == StorageState.LOADING:
            return None
        return {key: to_json(root) for key, root in self._roots.items()}

    def transact(self, edit: Callable[[], T]) -> T:
        """Run ``edit()`` as one transaction: one update on the wire, one undo step."""
        if self.storage_state == StorageState.LOADING:
            raise StorageLoadingError(f"room {self.name!r} storage is loading")
        with self.doc.transaction():
            return edit()

    def undo(self) -> bool:
        """Undo this user's last edit (never someone else's)."""
        return bool(self._undo.undo())

    def redo(self) -> bool:
        return bool(self._undo.redo())

    @property
    def can_undo(self) -> bool:
        return bool(self._undo.can_undo())

    @property
    def can_redo(self) -> bool:
        return bool(self._undo.can_redo())

    def _on_doc_change(self, event: pycrdt.TransactionEvent) -> None:
        if self._applying_remote:
            return
        # Queue, then send once per loop turn: a burst of edits leaves as one merged frame.
        self._outbox.append(event.update)
        if len(self._outbox) == 1:
            self._client.call_soon(self._flush_outbox)

    def _flush_outbox(self) -> None:
        updates, self._outbox = self._outbox, []
        if not updates or self.storage_state != StorageState.SYNCED:
            return  # offline: the sync exchange on reconnect carries these edits
        update = updates[0] if len(updates) == 1 else pycrdt.merge_updates(*updates)
        self._send_frame(sync_frame(pycrdt.YSyncMessageType.SYNC_UPDATE, update))

    def _apply_remote(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            with self.doc.transaction(origin=REMOTE):
                self.doc.apply_update(update)
        finally:
            self._applying_remote = False

    def _set_storage_state(self, state: StorageState) -> None:
        if self.storage_state != state:
            self.storage_state = state
            self._listeners.emit("storage_state", state.value)

    # -- connection -------------------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        if self.state != state:
            self.state = state
            log.debug("room %s: %s", self.name, state.value)
            self._listeners.emit("connection", state.value)

    def _start(self, metadata: Any) -> asyncio.Future[PluvRoom]:
        """On the loop: start connecting unless already started; the future resolves when open."""
        if self._opened is None or (self._opened.done() and self.state == ConnectionState.CLOSED):
            self._opened = self._client.loop.create_future()
        if self._task is None or self._task.done():
            self._left = False
            self._metadata = metadata
            self._task = self._client.loop.create_task(self._run(), name=f"pluv-room-{self.name}")
        return self._opened

    def _stop(self) -> asyncio.Task[None] | None:
        """On the loop: leave for good. Returns the closing handshake's task, if any."""
        self._left = True
        closing = None
        if self._socket is not None:
            closing = self._client.loop.create_task(self._socket.close(CloseCode.GOING_AWAY, "left the room"))
        if self._task is not None:
            self._task.cancel()
        self._closed(RoomClosedError(f"left room {self.name!r}"))
        return closing

    def _closed(self, error: BaseException) -> None:
        self._set_state(ConnectionState.CLOSED)
        if self.storage_state == StorageState.SYNCED:
            self._set_storage_state(StorageState.OFFLINE)
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(error)
            self._opened.exception()  # mark retrieved: enter_soon callers may never await it

    async def _run(self) -> None:
        attempts = 0
        try:
            while not self._left:
                self._set_state(ConnectionState.CONNECTING if attempts == 0 and self.connection_id is None
                                else ConnectionState.UNAVAILABLE)
                try:
                    if await self._connect_once():
                        attempts = 0  # it was open: the next wait starts from the first attempt
                except AuthorizationError as error:
                    log.warning("room %s: %s", self.name, error)
                    self._closed(error)
                    if self._on_authorization_fail is not None:
                        try:
                            self._on_authorization_fail(error)
                        except Exception:
                            log.exception("room %s: on_authorization_fail raised", self.name)
                    return
                except RoomClosedError as error:
                    log.error("room %s: %s", self.name, error)
                    self._closed(error)
                    return
                except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as error:
                    log.info("room %s: connection failed: %s", self.name, error)
                except Exception:  # a frame we could not handle: drop this connection, not the room
                    log.exception("room %s: unexpected error; reconnecting", self.name)
                if self._left:
                    break
                self._set_state(ConnectionState.UNAVAILABLE)
                if self.storage_state == StorageState.SYNCED:
                    self._set_storage_state(StorageState.OFFLINE)
                delay_ms = self._reconnect_delay_ms(attempts)
                attempts += 1
                await asyncio.sleep(delay_ms / 1000)
        except asyncio.CancelledError:
            pass
        finally:
            self._socket = None

    def _reconnect_delay_ms(self, attempts: int) -> float:
        timeout = self._reconnect_timeout_ms
        base = timeout(attempts) if callable(timeout) else timeout
        return max(0.0, float(base)) + random.uniform(0, min(JITTER_MS, 0.1 * max(base, 0) + 50))

    async def _connect_once(self) -> bool:
        """Connect, join and serve until the connection drops; True if it was open."""
        token = await fetch_token(self._client.auth_endpoint, self.name)
        socket = await self._open_socket(token)
        self._socket = socket
        try:
            join: dict[str, Any] = {"type": "join", "protocol": protocol.PROTOCOL_VERSION, "presence": self._presence}
            if self._metadata is not None:
                join["metadata"] = self._metadata
            factory = self._storage_factory
            if factory is not None and self.storage_state == StorageState.LOADING:
                join["initial_storage"] = base64.b64encode(factory.encode()).decode()
            await socket.send(protocol.encode(join))
            await socket.send(sync_frame(pycrdt.YSyncMessageType.SYNC_STEP1, self.doc.get_state()))
            try:
                welcome = await asyncio.wait_for(socket.recv(), OPEN_TIMEOUT_S)
            except ConnectionClosed as closed:
                _raise_for_close(closed)
                raise
            if not isinstance(welcome, str):
                raise RoomClosedError("the server did not answer with a welcome")
            self._on_welcome(protocol.decode(welcome))
            async for frame in socket:
                if isinstance(frame, str):
                    self._on_message(protocol.decode(frame))
                else:
                    self._on_sync(frame)
            _raise_for_close(ConnectionClosed(socket.protocol.close_rcvd, socket.protocol.close_sent))
            return True
        except ConnectionClosed as closed:
            _raise_for_close(closed)
            return self.state == ConnectionState.OPEN
        finally:
            self._socket = None
            await socket.close()

    async def _open_socket(self, token: str | None) -> ClientConnection:
        error: BaseException | None = None
        for url in self._client._urls(self.name, token):
            try:
                return await connect(url, max_size=None, compression=None, open_timeout=OPEN_TIMEOUT_S,
                                     ping_interval=20, ping_timeout=40)
            except (OSError, InvalidHandshake, TimeoutError) as failure:
                log.info("room %s: %s unreachable: %s", self.name, url.split("?")[0], failure)
                error = failure
        assert error is not None
        raise error

    def _send(self, message: dict[str, Any]) -> None:
        if self.state == ConnectionState.OPEN:
            self._send_frame(protocol.encode(message))

    def _send_frame(self, frame: str | bytes) -> None:
        if self._socket is not None:
            websockets.broadcast([self._socket], frame)  # a synchronous, ordered write

    # -- incoming ---------------------------------------------------------------------------

    def _on_welcome(self, message: dict[str, Any]) -> None:
        if message.get("type") != "welcome":
            raise RoomClosedError(f"expected a welcome, got {message.get('type')!r}")
        before = {user.id: user for user in self.others}
        self.connection_id = message["connection_id"]
        self._user = message["user"]
        self._connections = {}
        for member in message["others"]:
            self._add_connection(member)
        after = {user.id: user for user in self.others}
        self._set_state(ConnectionState.OPEN)
        if self.storage_state == StorageState.OFFLINE:
            self._set_storage_state(StorageState.SYNCED)  # the sync exchange follows at once
        for user_id, user in before.items():
            if user_id not in after:
                self._listeners.emit("others", self.others, OthersChange("leave", user))
        for user_id, user in after.items():
            self._listeners.emit("others", self.others,
                                 OthersChange("update" if user_id in before else "enter", user))

    def _add_connection(self, member: dict[str, Any]) -> None:
        self._touches += 1
        self._connections[member["connection_id"]] = _Connection(
            member["connection_id"], member["user"], dict(member.get("presence") or {}), self._touches
        )

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "presence":
            connection = self._connections.get(message["connection_id"])
            if connection is not None:
                self._touches += 1
                connection.presence.update(message["patch"])
                connection.touched = self._touches
                self._notify_user(connection.user["id"], "update")
        elif kind == "joined":
            user_id = message["user"]["id"]
            known = self._user_by_id(user_id) is not None
            self._add_connection(message)
            self._notify_user(user_id, "update" if known else "enter")
        elif kind == "left":
            connection = self._connections.pop(message["connection_id"], None)
            if connection is not None:
                user_id = connection.user["id"]
                remaining = self._user_by_id(user_id)
                if remaining is not None:
                    self._notify_user(user_id, "update")
                elif self._user is None or user_id != self._user["id"]:
                    gone = _user_of([connection])
                    self._listeners.emit("others", self.others, OthersChange("leave", gone))
        elif kind == "event":
            event = RoomEvent(message["event"], message.get("data"), message.get("connection_id"), message.get("user"))
            self._listeners.emit(f"event:{event.event}", event)
        elif kind == "error":
            log.warning("room %s: server refused a message: %s: %s", self.name, message.get("code"),
                        message.get("message"))
            self._listeners.emit("error", ServerError(str(message.get("code")), str(message.get("message"))))

    def _notify_user(self, user_id: str, kind: str) -> None:
        if self._user is not None and user_id == self._user["id"]:
            return  # my own other tabs are not "others"
        user = self._user_by_id(user_id)
        if user is not None:
            self._listeners.emit("others", self.others, OthersChange(kind, user))  # type: ignore[arg-type]

    def _on_sync(self, frame: bytes) -> None:
        step, payload = read_sync_frame(frame)
        if step == pycrdt.YSyncMessageType.SYNC_STEP1:
            # The server's state vector: send what it lacks (edits made while offline).
            diff = self.doc.get_update(payload)
            self._send_frame(sync_frame(pycrdt.YSyncMessageType.SYNC_STEP2, diff))
        else:
            self._apply_remote(payload)
            if step == pycrdt.YSyncMessageType.SYNC_STEP2:
                self._set_storage_state(StorageState.SYNCED)
                self._flush_outbox()
                if self._opened is not None and not self._opened.done():
                    self._opened.set_result(self)  # entered: registered, knows the others, has storage


def _user_of(connections: list[_Connection]) -> User:
    latest = max(connections, key=lambda c: c.touched)
    return User(
        latest.user["id"],
        latest.connection_id,
        [c.connection_id for c in connections],
        dict(latest.presence),
        dict(latest.user),
    )


def _raise_for_close(closed: ConnectionClosed) -> None:
    """Turn a close the client must not retry into its exception."""
    close = closed.rcvd
    if close is None:
        return
    if close.code in protocol.AUTH_CLOSE_CODES:
        raise AuthorizationError(close.code, close.reason)
    if close.code in (CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_ROOM):
        raise RoomClosedError(f"the server closed the room ({close.code}): {close.reason}")
