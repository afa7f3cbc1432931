"""``create_client``: rooms, their shared settings, and the loop they run on.

Everything but ``enter`` and ``aclose`` is synchronous and may be called from any thread; which
call runs where is the thread contract in :mod:`.loop`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from ..core.client_room import DEFAULT_RECONNECT_TIMEOUT_MS
from ..crdt import StorageFactory
from ..errors import AuthorizationError, UsageError
from ..protocol import DEFAULT_PORT
from ..protocol.routes import room_url
from .auth import AuthEndpoint
from .loop import ClientLoop
from .room import Room
from .types import ConnectionState, ReconnectTimeout, WsEndpoint

LEAVE_TIMEOUT_S = 5.0  # how long close() waits for the server to hear the leaves


def default_endpoint() -> str:
    return os.environ.get("PLUV_WIDGET_URL") or f"ws://127.0.0.1:{DEFAULT_PORT}"


def ssl_context(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext | None:
    """The context verifying ``wss://`` and ``https://`` servers: the system's CAs plus
    ``ca_file`` (else ``$PLUV_WIDGET_CA_FILE``); None when neither is set (the defaults apply)."""
    path = ca_file if ca_file is not None else os.environ.get("PLUV_WIDGET_CA_FILE") or None
    if path is None:
        return None
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=os.fspath(path))
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"cannot use {os.fspath(path)!r} as a CA file: {error}") from None
    return context


class Client:
    """A room client (pluv's ``createClient``); build it with :func:`create_client`."""

    def __init__(
        self,
        *,
        presence: type[BaseModel] | None = None,
        metadata: type[BaseModel] | None = None,
        initial_storage: StorageFactory | None = None,
        ws_endpoint: WsEndpoint | None = None,
        auth_endpoint: AuthEndpoint | None = None,
        debug: bool = False,
        ssl_ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.presence_model = presence
        self.metadata_model = metadata
        self.initial_storage = initial_storage
        self.ws_endpoint: WsEndpoint = ws_endpoint or default_endpoint()
        self.auth_endpoint = auth_endpoint
        self.ssl_context = ssl_context(ssl_ca_file)
        self.debug = debug
        if debug:
            import logging

            logging.getLogger("pluv_widget.client").setLevel(logging.DEBUG)
        self._rooms: dict[str, Room] = {}
        self._loop = ClientLoop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop every room of this client lives on."""
        return self._loop.loop

    # -- rooms ------------------------------------------------------------------------------

    def create_room(
        self,
        name: str,
        *,
        initial_presence: dict[str, Any] | BaseModel | None = None,
        initial_storage: StorageFactory | None = None,
        on_authorization_fail: Callable[[AuthorizationError], Any] | None = None,
        reconnect_timeout_ms: ReconnectTimeout = DEFAULT_RECONNECT_TIMEOUT_MS,
    ) -> Room:
        """A room handle (no I/O). ``initial_presence`` is required and validated when the client
        has a presence model. A room of that name that is not closed is returned as it is."""
        existing = self._rooms.get(name)
        if existing is not None and existing.state != ConnectionState.CLOSED:
            return existing
        room = Room(
            self,
            name,
            initial_presence=initial_presence,
            initial_storage=initial_storage or self.initial_storage,
            on_authorization_fail=on_authorization_fail,
            reconnect_timeout_ms=reconnect_timeout_ms,
        )
        self._rooms[name] = room
        return room

    def get_room(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def get_rooms(self) -> list[Room]:
        return list(self._rooms.values())

    async def enter(self, room: str | Room, *, metadata: Any = None, timeout: float | None = None) -> Room:
        """Connect to ``room`` and return it once it is registered, knows the others and has storage.

        Metadata is validated (and required, when the client has a metadata model) before any
        network I/O. Entering an entered room returns it. While the server is unreachable the
        room keeps retrying (``reconnect_timeout_ms``); pass ``timeout`` (seconds) to give up.
        Raises :class:`~pluv_widget.errors.AuthorizationError` when the token is refused.
        May be awaited on any loop.
        """
        target = self._enter_target(room, metadata)
        checked = self._metadata_json(metadata)
        # Shielded: giving up on waiting (timeout) does not stop the room from entering.
        await self._loop.wait(lambda: asyncio.shield(target._start(checked)), timeout)
        return target

    def enter_soon(self, room: str | Room, *, metadata: Any = None) -> Room:
        """Start entering ``room`` without waiting (for widgets and synchronous code)."""
        target = self._enter_target(room, metadata)
        self._loop.call_soon(target._start, self._metadata_json(metadata))
        return target

    def leave(self, room: str | Room) -> None:
        """Leave ``room`` for good: others see the user leave, it never reconnects.

        Leaving a room this client does not know (or already left) does nothing.
        """
        name = room.name if isinstance(room, Room) else room
        target = self._rooms.get(name)
        if target is None or (isinstance(room, Room) and target is not room):
            return
        del self._rooms[name]
        self._loop.call_soon(target._stop)

    def _enter_target(self, room: str | Room, metadata: Any) -> Room:
        self._metadata_json(metadata)  # validate before anything else happens
        if isinstance(room, Room):
            if room._client is not self:
                raise UsageError("that room belongs to another client")
            self._rooms[room.name] = room
            return room
        return self._rooms.get(room) or self.create_room(room)

    # -- validation -------------------------------------------------------------------------

    def _validate_presence(self, presence: dict[str, Any] | BaseModel | None) -> dict[str, Any]:
        if isinstance(presence, BaseModel):
            presence = presence.model_dump(mode="json")
        if self.presence_model is None:
            if presence is None:
                return {}
            if not isinstance(presence, dict):
                raise TypeError("presence must be a dict")
            return dict(presence)
        if presence is None:
            raise UsageError("initial_presence is required: this client declares a presence model")
        return self.presence_model.model_validate(presence).model_dump(mode="json")

    def _metadata_json(self, metadata: Any) -> Any:
        if self.metadata_model is None:
            return metadata.model_dump(mode="json") if isinstance(metadata, BaseModel) else metadata
        if metadata is None:
            raise UsageError("metadata is required: this client declares a metadata model")
        return self.metadata_model.model_validate(
            metadata.model_dump() if isinstance(metadata, BaseModel) else metadata
        ).model_dump(mode="json")

    # -- endpoints --------------------------------------------------------------------------

    def _urls(self, room: str, token: str | None) -> Iterator[str]:
        """The URLs to try for ``room``, in order: ``<base>/<room>?token=<token>``."""
        endpoint = self.ws_endpoint
        if callable(endpoint):
            yield endpoint(room)
            return
        for base in [endpoint] if isinstance(endpoint, str) else endpoint:
            yield room_url(base, room, token)

    # -- loop -------------------------------------------------------------------------------

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` on the client's loop: now if we are on it, else as soon as it can.

        Thread-safe: the way for code on other threads (a widget's comm handlers) to touch a room.
        """
        self._loop.call_soon(callback, *args)

    async def aclose(self, timeout: float = LEAVE_TIMEOUT_S) -> None:
        """Leave every room and wait (up to ``timeout`` seconds) until the server has heard it."""
        rooms = list(self._rooms.values())
        self._rooms.clear()
        await self._loop.wait(lambda: _leave_all(rooms, timeout))

    def close(self) -> None:
        """Leave every room. A client with a private loop thread also waits (up to 5 s) for the
        leaves to reach the server, then stops its thread."""
        rooms = list(self._rooms.values())
        self._rooms.clear()
        if self._loop.thread is None or self._loop.on_loop():  # cannot wait for the loop here
            for room in rooms:
                self._loop.call_soon(room._stop)
            return
        if self._loop.thread.is_alive():
            self._loop.run_coroutine(lambda: _leave_all(rooms, LEAVE_TIMEOUT_S), LEAVE_TIMEOUT_S + 1)
            self._loop.stop()


async def _leave_all(rooms: list[Room], timeout: float) -> None:
    closing = [task for room in rooms if (task := room._stop()) is not None]
    if closing:
        await asyncio.wait(closing, timeout=timeout)


PluvClient = Client


def create_client(
    *,
    presence: type[BaseModel] | None = None,
    metadata: type[BaseModel] | None = None,
    initial_storage: StorageFactory | None = None,
    ws_endpoint: WsEndpoint | None = None,
    auth_endpoint: AuthEndpoint | None = None,
    debug: bool = False,
    ssl_ca_file: str | os.PathLike[str] | None = None,
) -> Client:
    """Create a client (pluv's ``createClient``). ``ws_endpoint`` defaults to ``$PLUV_WIDGET_URL``
    or ``ws://127.0.0.1:1999``; rooms are at ``<ws_endpoint>/<room>?token=<token>``.

    ``ssl_ca_file`` (else ``$PLUV_WIDGET_CA_FILE``): a PEM file of CA certificates trusted, on
    top of the system's, for ``wss://`` rooms and an ``https://`` ``auth_endpoint`` — a class
    server with a private or self-signed certificate."""
    return Client(
        presence=presence,
        metadata=metadata,
        initial_storage=initial_storage,
        ws_endpoint=ws_endpoint,
        auth_endpoint=auth_endpoint,
        debug=debug,
        ssl_ca_file=ssl_ca_file,
    )
