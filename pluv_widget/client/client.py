"""``create_client``: rooms, their shared settings, and the event loop they run on.

The client binds to the asyncio loop running where it is created (a notebook's, or a script's
``asyncio.run``); created where no loop runs, it starts a private loop in a daemon thread.
Everything but ``enter`` is synchronous and may be called from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from pydantic import BaseModel

from ..crdt import StorageFactory
from ..errors import AuthorizationError
from ..protocol import DEFAULT_PORT
from .auth import AuthEndpoint
from .room import DEFAULT_RECONNECT_TIMEOUT_MS, PluvRoom, ReconnectTimeout
from .types import ConnectionState

T = TypeVar("T")

#: A base URL (``ws://host:port``), several tried in turn (failover), or ``callable(room) -> URL``.
WsEndpoint = str | list[str] | Callable[[str], str]


def default_endpoint() -> str:
    return os.environ.get("PLUV_WIDGET_URL") or f"ws://127.0.0.1:{DEFAULT_PORT}"


class PluvClient:
    def __init__(
        self,
        *,
        presence: type[BaseModel] | None = None,
        metadata: type[BaseModel] | None = None,
        initial_storage: StorageFactory | None = None,
        ws_endpoint: WsEndpoint | None = None,
        auth_endpoint: AuthEndpoint | None = None,
        debug: bool = False,
    ) -> None:
        self.presence_model = presence
        self.metadata_model = metadata
        self.initial_storage = initial_storage
        self.ws_endpoint: WsEndpoint = ws_endpoint or default_endpoint()
        self.auth_endpoint = auth_endpoint
        self.debug = debug
        if debug:
            import logging

            logging.getLogger("pluv_widget.client").setLevel(logging.DEBUG)
        self._rooms: dict[str, PluvRoom] = {}
        try:
            self.loop = asyncio.get_running_loop()
            self._thread: threading.Thread | None = None
        except RuntimeError:
            self.loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self.loop.run_forever, name="pluv-client", daemon=True)
            self._thread.start()

    # -- rooms ------------------------------------------------------------------------------

    def create_room(
        self,
        name: str,
        *,
        initial_presence: dict[str, Any] | BaseModel | None = None,
        initial_storage: StorageFactory | None = None,
        on_authorization_fail: Callable[[AuthorizationError], Any] | None = None,
        reconnect_timeout_ms: ReconnectTimeout = DEFAULT_RECONNECT_TIMEOUT_MS,
    ) -> PluvRoom:
        """A room handle (no I/O). ``initial_presence`` is required and validated when the client
        has a presence model. A room of that name that is not closed is returned as it is."""
        existing = self._rooms.get(name)
        if existing is not None and existing.state != ConnectionState.CLOSED:
            return existing
        room = PluvRoom(
            self,
            name,
            initial_presence=initial_presence,
            initial_storage=initial_storage or self.initial_storage,
            on_authorization_fail=on_authorization_fail,
            reconnect_timeout_ms=reconnect_timeout_ms,
        )
        self._rooms[name] = room
        return room

    def get_room(self, name: str) -> PluvRoom | None:
        return self._rooms.get(name)

    def get_rooms(self) -> list[PluvRoom]:
        return list(self._rooms.values())

    async def enter(self, room: str | PluvRoom, *, metadata: Any = None, timeout: float | None = None) -> PluvRoom:
        """Connect to ``room`` and return it once it is registered and knows the others.

        Metadata is validated (and required, when the client has a metadata model) before any
        network I/O. Entering an entered room returns it. While the server is unreachable the
        room keeps retrying (``reconnect_timeout_ms``); pass ``timeout`` (seconds) to give up.
        Raises :class:`~pluv_widget.errors.AuthorizationError` when the token is refused.
        """
        target = self._enter_target(room, metadata)
        opened = self._on_loop(lambda: target._start(self._metadata_json(metadata)))
        if _running_loop() is self.loop:
            await asyncio.wait_for(asyncio.shield(opened.result()), timeout)
        else:
            wait = asyncio.run_coroutine_threadsafe(_await(opened.result()), self.loop)
            await asyncio.wait_for(asyncio.wrap_future(wait), timeout)
        return target

    def enter_soon(self, room: str | PluvRoom, *, metadata: Any = None) -> PluvRoom:
        """Start entering ``room`` without waiting (for widgets and synchronous code)."""
        target = self._enter_target(room, metadata)
        self.call_soon(target._start, self._metadata_json(metadata))
        return target

    def leave(self, room: str | PluvRoom) -> None:
        """Leave ``room`` for good: others see the user leave, it never reconnects.

        Leaving a room this client does not know (or already left) does nothing.
        """
        name = room.name if isinstance(room, PluvRoom) else room
        target = self._rooms.get(name)
        if target is None or (isinstance(room, PluvRoom) and target is not room):
            return
        del self._rooms[name]
        self.call_soon(target._stop)

    def _enter_target(self, room: str | PluvRoom, metadata: Any) -> PluvRoom:
        self._metadata_json(metadata)  # validate before anything else happens
        if isinstance(room, PluvRoom):
            if room._client is not self:
                raise ValueError("that room belongs to another client")
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
            raise ValueError("initial_presence is required: this client declares a presence model")
        return self.presence_model.model_validate(presence).model_dump(mode="json")

    def _metadata_json(self, metadata: Any) -> Any:
        if self.metadata_model is None:
            return metadata.model_dump(mode="json") if isinstance(metadata, BaseModel) else metadata
        if metadata is None:
            raise ValueError("metadata is required: this client declares a metadata model")
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
        query = "?" + urlencode({"token": token}) if token else ""
        for base in [endpoint] if isinstance(endpoint, str) else endpoint:
            yield f"{base.rstrip('/')}/{quote(room)}{query}"

    # -- loop -------------------------------------------------------------------------------

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` on the client's loop: now if we are on it, else as soon as it can.

        Thread-safe: the way for code on other threads (a widget's comm handlers) to touch a room.
        """
        if _running_loop() is self.loop:
            callback(*args)
        else:
            self.loop.call_soon_threadsafe(callback, *args)

    def _on_loop(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``function`` on the loop and return its result as a (thread-safe) future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as error:
                future.set_exception(error)

        if _running_loop() is self.loop:
            run()
        else:
            self.loop.call_soon_threadsafe(run)
            future.result()  # the loop answers promptly: it only schedules
        return future

    async def aclose(self, timeout: float = 5.0) -> None:
        """Leave every room and wait (up to ``timeout`` seconds) until the server has heard it."""
        rooms = list(self._rooms.values())
        self._rooms.clear()

        async def leave_all() -> None:
            closing = [task for room in rooms if (task := room._stop()) is not None]
            if closing:
                await asyncio.wait(closing, timeout=timeout)

        if _running_loop() is self.loop:
            await leave_all()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(leave_all(), self.loop))

    def close(self) -> None:
        """Leave every room. A client with a private loop thread also waits (up to 5 s) for the
        leaves to reach the server, then stops its thread."""
        rooms = list(self._rooms.values())
        self._rooms.clear()
        if self._thread is None:
            for room in rooms:
                self.call_soon(room._stop)
            return

        async def leave_all() -> None:
            closing = [task for room in rooms if (task := room._stop()) is not None]
            await asyncio.wait(closing, timeout=5) if closing else None

        if self._thread.is_alive():
            with contextlib.suppress(concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(leave_all(), self.loop).result(timeout=6)
            self.loop.call_soon_threadsafe(self.loop.stop)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _await(future: asyncio.Future[T]) -> T:
    return await future


def create_client(
    *,
    presence: type[BaseModel] | None = None,
    metadata: type[BaseModel] | None = None,
    initial_storage: StorageFactory | None = None,
    ws_endpoint: WsEndpoint | None = None,
    auth_endpoint: AuthEndpoint | None = None,
    debug: bool = False,
) -> PluvClient:
    """Create a client (pluv's ``createClient``). ``ws_endpoint`` defaults to ``$PLUV_WIDGET_URL``
    or ``ws://127.0.0.1:1999``; rooms are at ``<ws_endpoint>/<room>?token=<token>``."""
    return PluvClient(
        presence=presence,
        metadata=metadata,
        initial_storage=initial_storage,
        ws_endpoint=ws_endpoint,
        auth_endpoint=auth_endpoint,
        debug=debug,
    )
