"""One WebSocket connection, start to end: room name, token, ``join``, then frames to its room.

Everything a connection goes through is here, in order: the room name in the URL (refused with
4005), the token when the server requires one (4001–4004), the ``join`` message within
``join_timeout_s`` (4006; an invalid one 4000, as is an initial storage pycrdt cannot decode),
the room (1013 while its shared store is unreachable), at most ``max_connections_per_user``
connections of one token user in one room (4008), then the member's frames, paced at
``max_messages_per_s`` and ``max_bytes_per_s`` and never read faster than the member reads
what the server sends (backpressure: a flood is slowed down, never dropped; a member that does
not read at all is cut with 4007, see :mod:`.guard`).

A path under ``/yjs/`` is a stock Yjs client's (:mod:`.yjs_connection`): the same room, token,
limits and pacing, without ``join``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..core import Member
from ..core.server_room import update_problem
from ..protocol import TEACHER, CloseCode, ErrorCode, Join, ProtocolError, is_valid_room_name
from ..protocol.routes import DASHBOARD_LIVE_PATH, parse_room_path, parse_yjs_path
from .config import ServerConfig
from .guard import ConnectionGate, GuardedConnection
from .hub import unprefixed
from .live_room import LiveRoom
from .registry import RoomRegistry
from .storage.base import StorageUnavailableError
from .tokens import TokenError, verify_token
from .yjs_connection import YjsConnectionHandler

log = logging.getLogger("pluv_widget.server")

#: A close reason is at most 123 bytes: longer explanations are cut.
MAX_REASON_CHARS = 120


def _reason(text: str) -> str:
    """A close reason fits in 123 UTF-8 bytes: cut longer ones (never inside a character)."""
    return text.encode("utf-8", "replace")[:MAX_REASON_CHARS].decode("utf-8", "ignore")


class ConnectionHandler:
    """The ``websockets`` handler of a server: one call per connection."""

    def __init__(self, config: ServerConfig, registry: RoomRegistry, gate: ConnectionGate | None = None) -> None:
        self.config = config
        self.registry = registry
        self.gate = gate
        self.connections = 0  # joined connections, for /health
        self._per_user: dict[tuple[str, str], int] = {}  # (room, token user id) -> connections
        self.yjs = YjsConnectionHandler(self)
        #: The teacher dashboard's live feed (``/dashboard/live``), set by the running server.
        self.dashboard: Callable[[ServerConnection, str | None], Awaitable[None]] | None = None

    async def __call__(self, socket: ServerConnection) -> None:
        assert socket.request is not None
        path = unprefixed(socket.request.path, self.config.path_prefix)
        yjs = parse_yjs_path(path)
        if yjs is not None:
            await self.yjs(socket, *yjs)
            return
        name, token = parse_room_path(path)
        if "/" + name == DASHBOARD_LIVE_PATH and self.dashboard is not None:
            await self.dashboard(socket, token)
            return
        connection_id = secrets.token_urlsafe(9)
        # Without auth (the zero-config local server) there is no one to tell people apart: each
        # connection is its own person, and everyone may do everything, so everyone is a teacher.
        user = await self.admit(socket, name, token, {"id": connection_id, "role": TEACHER})
        if user is None:
            return
        join = await self._await_join(socket)
        if join is None:
            return
        async with self.slot(socket, name, user) as admitted:
            if not admitted:
                return
            async with self.in_room(socket, name, connection_id, user, join.initial_storage) as room:
                if room is None:
                    return
                try:
                    await room.join(socket, Member(connection_id, user, join.presence), join.metadata,
                                    join.generation, join.protocol)
                    log.info("room %s: %s joined (user %s)", name, connection_id, user["id"])
                    await self._serve(socket, room, connection_id)
                except ConnectionClosed:
                    pass

    # -- what every room connection goes through (pluv's and stock Yjs clients') -----------

    async def admit(self, socket: ServerConnection, name: str, token: str | None,
                    anonymous: dict[str, Any]) -> dict[str, Any] | None:
        """The connection's user: the token's (checked for this room), or ``anonymous`` on a
        server without auth; None once the socket is closed (4005 for the name, 4001-4004)."""
        if not is_valid_room_name(name):
            await socket.close(CloseCode.INVALID_ROOM, f"invalid room name {name[:64]!r}")
            return None
        if self.config.secret is None:
            return anonymous
        try:
            return verify_token(self.config.secret, token, room=name)
        except TokenError as error:
            log.info("refused a connection to %s: %s", name, error.reason)
            await socket.close(error.code, _reason(error.reason))
            return None

    @asynccontextmanager
    async def slot(self, socket: ServerConnection, name: str, user: dict[str, Any]) -> AsyncIterator[bool]:
        """Count one more connection of ``user`` in ``name`` while inside; yields False (the socket
        closed with 4008) when the user has ``max_connections_per_user`` there already."""
        key, limit = (name, str(user["id"])), self.config.limits.max_connections_per_user
        if self.config.secret is not None and self._per_user.get(key, 0) >= limit:
            log.info("refused a connection to %s: user %s has too many connections", name, user["id"])
            await socket.close(CloseCode.TOO_MANY_CONNECTIONS, f"over {limit} connections of this user here")
            yield False
            return
        self._per_user[key] = self._per_user.get(key, 0) + 1
        try:
            yield True
        finally:
            self._per_user[key] -= 1
            if self._per_user[key] <= 0:
                del self._per_user[key]

    @asynccontextmanager
    async def in_room(self, socket: ServerConnection, name: str, connection_id: str, user: dict[str, Any],
                      initial_storage: bytes | None) -> AsyncIterator[LiveRoom | None]:
        """The room held while inside (None: the socket was closed — the store is away, or the user
        was removed); leaving it takes the member out and releases the room."""
        room = await self._enter(socket, name, initial_storage)
        if room is None:
            yield None
            return
        if str(user["id"]) in room.core.rules.removed:
            log.info("refused a connection to %s: user %s was removed", name, user["id"])
            self.registry.release(room)
            await socket.close(CloseCode.REMOVED, "a teacher removed you from this room")
            yield None
            return
        if self.gate is not None and isinstance(socket, GuardedConnection):
            self.gate.joined(socket)
        self.connections += 1
        try:
            yield room
        finally:
            self.connections -= 1
            await room.leave(connection_id)
            log.info("room %s: %s left", name, connection_id)
            self.registry.release(room)

    async def _await_join(self, socket: ServerConnection) -> Join | None:
        """Read and validate the ``join`` message; on failure close the socket and return None."""
        try:
            frame = await asyncio.wait_for(socket.recv(), self.config.limits.join_timeout_s)
        except TimeoutError:
            await socket.close(CloseCode.JOIN_TIMEOUT, "no join message in time")
            return None
        except ConnectionClosed:
            return None
        try:
            join = Join.decode(frame, self.config.limits)
        except ProtocolError as error:
            await socket.close(CloseCode.PROTOCOL_ERROR, str(error)[:MAX_REASON_CHARS])
            return None
        problem = update_problem(join.initial_storage) if join.initial_storage else None
        if problem is not None:
            await socket.close(CloseCode.PROTOCOL_ERROR, f"invalid initial_storage: {problem}"[:MAX_REASON_CHARS])
            return None
        return join

    async def _enter(self, socket: ServerConnection, name: str, initial_storage: bytes | None) -> LiveRoom | None:
        """The room, held, with its initial storage settled; or None (and the socket closed with
        TRY_AGAIN_LATER, so the client retries) while the room's shared store is unreachable."""
        room: LiveRoom | None = None
        try:
            room = await self.registry.acquire(name)
            if initial_storage is not None and not room.core.has_storage:
                await room.offer_initial_storage(initial_storage)
            return room
        except StorageUnavailableError as error:
            if room is not None:
                self.registry.release(room)
            log.warning("room %s: %s; the client will retry", name, error)
            await socket.close(CloseCode.TRY_AGAIN_LATER, "room storage unreachable: retry later")
            return None

    async def _serve(self, socket: ServerConnection, room: LiveRoom, connection_id: str,
                     receive: Callable[[str, str | bytes], Awaitable[None]] | None = None) -> None:
        """Feed the connection's frames to its room, pacing a flood instead of dropping it.

        Two token buckets, messages and bytes: a frame is charged when read, and a connection in
        debt is not read again until it is paid off (TCP then slows the sender). A frame larger
        than the byte burst still passes, followed by a pause. Before each frame, reading also
        waits while this connection's own unsent data is above ``send_buffer_pause_bytes``.
        ``receive``: what takes each frame (default: the room).
        """
        receive = receive or room.receive
        limits = self.config.limits
        messages, data = float(limits.message_burst), float(limits.byte_burst)
        refilled, warned = time.monotonic(), False
        guarded = socket if isinstance(socket, GuardedConnection) else None
        while True:
            # Under websockets' high-water mark (not ``paused``) the buffer is under the pause mark
            # too, unless the limits set them the other way round: then always ask.
            if guarded is not None and (guarded.paused or guarded.unchecked_send_bytes < 0):
                await guarded.wait_writable()
            frame = await socket.recv()
            size = len(frame) if isinstance(frame, bytes) or frame.isascii() else len(frame.encode())
            now = time.monotonic()
            messages = min(float(limits.message_burst), messages + (now - refilled) * limits.max_messages_per_s) - 1
            data = min(float(limits.byte_burst), data + (now - refilled) * limits.max_bytes_per_s) - size
            refilled = now
            await receive(connection_id, frame)
            debt = max(-messages / limits.max_messages_per_s, -data / limits.max_bytes_per_s)
            if debt > 0:
                if not warned:
                    warned = True
                    which = (f"{limits.max_messages_per_s:g} messages/s" if messages < 0
                             else f"{limits.max_bytes_per_s:g} bytes/s")
                    room.send_error(connection_id, ErrorCode.RATE_LIMITED, f"more than {which}: reading is paused")
                # Backpressure: not reading lets TCP slow the sender; nothing is dropped.
                await asyncio.sleep(debt)
            else:
                warned = False
