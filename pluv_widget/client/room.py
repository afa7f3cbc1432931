"""``Room``: the public face of one room — presence, the others, events, storage.

Thin: what the room knows lives in its :class:`~pluv_widget.core.client_room.ClientRoom`, the
socket in its :class:`~.connection.Connection`, and every call from another thread goes through
:class:`~.loop.ClientLoop` (the thread contract is written there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from ..core.client_room import ClientRoom, ConnectionState, Notification, StorageState, User
from ..crdt import StorageFactory, to_json
from ..errors import (
    AuthorizationError,
    InvalidNameError,
    StorageLoadingError,
    UnknownStorageRootError,
    procedure_error,
)
from ..protocol import check_event_name, check_room_name, json_size
from .connection import Connection, log
from .loop import LoopBound
from .subscriptions import Listeners, RoomSubscriptions, Unsubscribe
from .types import ReconnectTimeout

if TYPE_CHECKING:
    import pycrdt

    from .client import Client

T = TypeVar("T")


@dataclass(eq=False)
class _StorageWatch:
    """A ``subscribe.storage`` callback, moved to the new document's root after a reload."""

    key: str
    callback: Callable[[Any], None]
    shared: Any = None
    subscription: Any = None


class Pending:
    """The answer to a :meth:`Room.call`, awaitable from any loop (``await pending``) or waited
    for from a thread (``pending.result(timeout)``). It raises the server's refusal:
    :class:`~pluv_widget.errors.PermissionDenied` for ``forbidden`` (``MutedError``,
    ``RoomLockedError`` for ``muted``, ``room_locked``), else a ``ProcedureError``."""

    def __init__(self, future: concurrent.futures.Future[Any] | None = None) -> None:
        self.future: concurrent.futures.Future[Any] = future or concurrent.futures.Future()

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self.future).__await__()

    def result(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()


class Room:
    """A room of a :class:`~pluv_widget.client.Client`; create it with ``client.create_room``."""

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        initial_presence: dict[str, Any] | BaseModel | None,
        initial_storage: StorageFactory | None,
        on_authorization_fail: Callable[[AuthorizationError], Any] | None,
        reconnect_timeout_ms: ReconnectTimeout,
    ) -> None:
        try:
            self.name = check_room_name(name)
        except ValueError as error:
            raise InvalidNameError(str(error)) from None
        self._client = client
        self._loop = client._loop
        self._core = ClientRoom(
            self.name,
            presence=client._validate_presence(initial_presence),
            root_types=initial_storage.root_types if initial_storage is not None else None,
            initial_storage=initial_storage.encode if initial_storage is not None else None,
            reconnect_timeout_ms=reconnect_timeout_ms,
            on_edit=lambda: self._connection.schedule_flush(),
        )
        self._listeners = Listeners()
        self._watches: list[_StorageWatch] = []
        self._calls: dict[int, Pending] = {}
        self.subscribe = RoomSubscriptions(self)
        self._connection = Connection(
            self._core,
            loop=self._loop.loop,
            urls=lambda token: client._urls(self.name, token),
            auth_endpoint=client.auth_endpoint,
            deliver=self._deliver,
            on_authorization_fail=on_authorization_fail,
            ssl=client.ssl_context,
        )

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {self.state.value}>"

    # -- state (plain reads, any thread) --------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._core.state

    @property
    def storage_state(self) -> StorageState:
        return self._core.storage_state

    @property
    def connection_id(self) -> str | None:
        return self._core.connection_id

    @property
    def doc(self) -> pycrdt.Doc[Any]:
        """The room's pycrdt document (touch it on the client's loop only)."""
        return self._core.doc

    @property
    def _task(self) -> asyncio.Task[None] | None:
        return self._connection.task

    # -- presence and people --------------------------------------------------------------------

    @property
    def my_presence(self) -> dict[str, Any]:
        return self._loop.run(lambda: dict(self._core.presence))

    @property
    def myself(self) -> User | None:
        """This user (None before the first welcome), with all its connections in the room."""
        return self._loop.run(lambda: self._core.myself)

    @property
    def others(self) -> list[User]:
        """Everyone else in the room, one entry per user (a user's other tabs count as myself)."""
        return self._loop.run(lambda: self._core.others)

    def other(self, connection_id: str) -> User | None:
        """The user one of whose connections is ``connection_id``."""
        return self._loop.run(self._core.other, connection_id)

    def update_my_presence(self, patch: dict[str, Any] | BaseModel) -> None:
        """Merge ``patch`` into my presence, validated by the client's presence model; raises
        ``pydantic.ValidationError`` (and sends nothing) when the result is invalid."""
        if isinstance(patch, BaseModel):
            patch = patch.model_dump(mode="json", exclude_unset=True)
        self._loop.run(self._update_presence, dict(patch))

    def _update_presence(self, patch: dict[str, Any]) -> None:
        self._core.set_presence(self._client._validate_presence({**self._core.presence, **patch}))
        self._connection.pump()

    def broadcast(self, event: str, data: Any = None) -> None:
        """Send ``event`` to the rest of the room (dropped while not connected, like pluv)."""
        try:
            check_event_name(event)
        except ValueError as error:
            raise InvalidNameError(str(error)) from None
        json_size(data)  # raises TypeError now for data that is not JSON
        self._loop.call_soon(self._broadcast, event, data)

    def _broadcast(self, event: str, data: Any) -> None:
        self._core.broadcast(event, data)
        self._connection.pump()

    # -- calls (typed server procedures with replies) -------------------------------------------

    @property
    def class_view(self) -> dict[str, Any] | None:
        """The last classroom view the server sent this connection (None before the first): polls,
        hands and pulse as my role may see them. Thread-safe; treat it as read-only (each new view
        replaces it whole). ``subscribe.class_view(cb)`` hears each new one."""
        return self._core.class_view

    @property
    def role(self) -> str:
        """My role as the server stamped it in my token: ``teacher``, ``student`` or ``observer``
        (``teacher`` on a server without auth, and before the first welcome)."""
        return self._core.role

    def call(self, procedure: str, input: Any = None) -> Pending:  # noqa: A002 - the wire's name
        """Call the server's ``procedure`` (a built-in such as ``messages.post``, or the app's);
        the returned :class:`Pending` resolves with its result once the server applied it, or
        raises its refusal. Sent once in the room (queued while connecting). Thread-safe."""
        try:
            check_event_name(procedure)
        except ValueError as error:
            raise InvalidNameError(str(error)) from None
        json_size(input)  # raises TypeError now for input that is not JSON
        pending = Pending()
        self._loop.call_soon(self._call, procedure, input, pending)
        return pending

    def _call(self, procedure: str, data: Any, pending: Pending) -> None:
        self._calls[self._core.call(procedure, data)] = pending
        self._connection.pump()

    # -- storage --------------------------------------------------------------------------------

    def _root(self, key: str) -> Any:
        root = self._core.roots.get(key)
        if root is None:
            raise UnknownStorageRootError(
                f"room {self.name!r} has no storage root {key!r}; declare it in initial_storage"
            )
        return root

    def _check_loaded(self) -> None:
        if self._core.storage_state == StorageState.LOADING:
            raise StorageLoadingError(f"room {self.name!r} storage is loading: await client.enter(room) first")

    def storage(self, key: str) -> Any:
        """The live pycrdt shared type at ``key`` (edits sync to everyone). On a thread other
        than the client's loop, a :class:`~.loop.LoopBound` proxy that runs every use there.

        After a permanent storage refusal the room reloads its storage into a new document:
        call ``storage(key)`` again for the new shared type. A handle taken before is detached —
        it still reads the old content, but edits to it stay local, are never sent, and are
        logged as a warning. ``subscribe.storage`` callbacks follow the new document by
        themselves.

        A root the server declares protected (``welcome``'s ``protected_roots``: the app's
        ``create_io(protected_roots=...)``) comes from the room's protected document and is
        **read-only**: a local edit to it is never sent, and the protected document is reloaded
        from the server (see :meth:`protected_storage`)."""
        self._check_loaded()
        root = self._root(key)
        if self._loop.on_loop() or not self._loop.loop.is_running():
            return root
        return LoopBound(root, self._loop)

    def protected_storage(self, key: str, kind: Any = None) -> Any:
        """The protected document's root ``key`` (``kind``: ``pycrdt.Array`` by default, or
        ``pycrdt.Map`` / ``pycrdt.Text``): storage written by the server only — the widget's
        ``messages``, an app's ``protected_roots``. **Read-only**: a local edit is never sent;
        the protected document is dropped and loaded again from the server (take the root
        again after that; ``subscribe.storage`` callbacks of protected roots follow)."""
        import pycrdt

        self._check_loaded()
        return self._loop.run(self._core.protected_root, key, kind or pycrdt.Array)

    def storage_json(self) -> dict[str, Any] | None:
        """All storage roots as JSON, or None while storage is loading."""
        return self._loop.run(self._storage_json)

    def _storage_json(self) -> dict[str, Any] | None:
        if self._core.storage_state == StorageState.LOADING:
            return None
        return {key: to_json(root) for key, root in self._core.roots.items()}

    def transact(self, edit: Callable[[], T]) -> T:
        """Run ``edit()`` as one transaction (on the client's loop): one update, one undo step."""
        self._check_loaded()
        return self._loop.run(lambda: self._transact(edit))

    def _transact(self, edit: Callable[[], T]) -> T:
        with self._core.doc.transaction():
            result: T = edit()
        return result

    def undo(self) -> bool:
        """Undo this user's last edit (never someone else's)."""
        return self._loop.run(lambda: bool(self._core.undo_manager.undo()))

    def redo(self) -> bool:
        return self._loop.run(lambda: bool(self._core.undo_manager.redo()))

    @property
    def can_undo(self) -> bool:
        return self._loop.run(lambda: bool(self._core.undo_manager.can_undo()))

    @property
    def can_redo(self) -> bool:
        return self._loop.run(lambda: bool(self._core.undo_manager.can_redo()))

    # -- the connection (on the loop) -----------------------------------------------------------

    def _watch_storage(self, key: str, callback: Callable[[Any], None]) -> Unsubscribe:
        self._root(key)  # an unknown root raises here
        watch = _StorageWatch(key, callback)
        self._loop.run(self._attach, watch)

        def unsubscribe() -> None:
            self._loop.run(self._detach, watch)

        return unsubscribe

    def _attach(self, watch: _StorageWatch) -> None:
        shared = self._core.roots[watch.key]
        watch.shared = shared
        watch.subscription = shared.observe_deep(lambda _events: watch.callback(to_json(shared)))
        self._watches.append(watch)

    def _detach(self, watch: _StorageWatch) -> None:
        if watch in self._watches:
            self._watches.remove(watch)
            watch.shared.unobserve(watch.subscription)

    def _deliver(self, note: Notification) -> None:
        if note.topic in ("call_result", "call_error"):
            pending = self._calls.pop(note.args[0], None)
            if pending is not None and not pending.future.done():
                if note.topic == "call_result":
                    pending.future.set_result(note.args[1])
                else:
                    pending.future.set_exception(procedure_error(note.args[1], note.args[2]))
            return
        if note.topic == "storage_replaced":  # a reload: storage callbacks follow the new document
            for watch in list(self._watches):
                self._detach(watch)
                self._attach(watch)
            return
        if note.topic == "connection":
            log.debug("room %s: %s", self.name, note.args[0])
        elif note.topic == "error":
            log.warning("room %s: server refused a message: %s", self.name, note.args[0])
        self._listeners.emit(note.topic, *note.args)

    def _start(self, metadata: Any) -> asyncio.Future[None]:
        return self._connection.start(metadata)

    def _stop(self) -> asyncio.Task[None] | None:
        return self._connection.stop()


PluvRoom = Room
