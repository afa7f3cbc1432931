"""The asyncio server: HTTP routes, the WebSocket handshake, auth, and one loop per connection.

Routes on one port:

* ``GET /health`` — ``{"server": "pluv-widget", "protocol": 1, "version": ..., "rooms": n,
  "connections": n, "node": ..., "pid": ...}``.
* ``GET /token?room=R&name=N&join_code=C`` — ``{"token": ...}`` for the classroom flow (see
  ``create_io(join_code=...)`` and ``mint_user``); 404 without a secret, 403 when refused.
* ``ws://host:port/<room>?token=<token>`` — a room connection (see :mod:`pluv_widget.protocol`).

Heartbeats: the server pings every ``ping_interval_s`` (20 s) and drops a connection whose pong
has not come ``ping_timeout_s`` (40 s) later. A kernel cell that blocks the kernel's event loop
for longer than about a minute therefore loses its connection; the client reconnects by itself
afterwards and restores its presence. Compression is off: permessage-deflate costs ~50 KiB of
memory per connection and our frames are small.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .. import __version__, protocol
from ..core import Member
from ..protocol import CloseCode, ErrorCode
from .io import PluvIO, TokenRequest
from .live_room import LiveRoom
from .persistence import StorageUnavailableError
from .tokens import TokenError, verify_token

log = logging.getLogger("pluv_widget.server")


class RoomServer:
    """One server process's rooms and connections (see :class:`~pluv_widget.server.io.PluvIO`)."""

    def __init__(self, io: PluvIO) -> None:
        self.io = io
        self.node = secrets.token_hex(6)
        self.persistence = io.make_persistence()
        self.pubsub = io.make_pubsub()
        self.rooms: dict[str, LiveRoom] = {}
        self._opening: dict[str, asyncio.Task[LiveRoom]] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}
        self._server: Server | None = None
        self._stopped = asyncio.Event()
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        limits = self.io.limits
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            max_size=limits.max_frame_bytes,
            compression=None,
            ping_interval=limits.ping_interval_s,
            ping_timeout=limits.ping_timeout_s,
            server_header=f"pluv-widget/{__version__}",
        )
        log.info("pluv-widget %s serving on ws://%s:%d (node %s, auth %s, storage %s)", __version__, host,
                 self.port, self.node, "on" if self.io.secret else "off", type(self.persistence).__name__)

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stopped.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        """Close every connection with 1012 (clients reconnect), flush storage, release stores."""
        if self._server is None:
            return
        server, self._server = self._server, None
        log.info("shutting down: closing connections with 1012")
        server.close(close_connections=True, code=CloseCode.SERVICE_RESTART, reason="server restarting")
        await server.wait_closed()
        await asyncio.gather(*self._closing.values(), return_exceptions=True)
        for room in list(self.rooms.values()):
            await room.flushed()
        await self.persistence.close()
        await self.pubsub.close()
        self._stopped.set()

    def room_names(self) -> list[str]:
        return sorted(self.rooms)

    # -- HTTP -------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/health":
            return _json(connection, HTTPStatus.OK, self.health())
        if url.path == "/token":
            return self._token_route(connection, request, {k: v[-1] for k, v in parse_qs(url.query).items()})
        return None

    def health(self) -> dict[str, Any]:
        return {
            "server": protocol.SERVER_NAME,
            "protocol": protocol.PROTOCOL_VERSION,
            "version": __version__,
            "node": self.node,
            "pid": os.getpid(),
            "auth": self.io.secret is not None,
            "rooms": len(self.rooms),
            "connections": self.connections,
            "storage": type(self.persistence).__name__,
            "redis": self.redis_status(),
        }

    def redis_status(self) -> str:
        """``off`` without a shared backend, else the worst of the store's and the bus's states:
        ``unavailable``, ``recovering``, ``connecting`` or ``ok`` (see docs/scaling.md)."""
        states = {getattr(part, "status", lambda: None)() for part in (self.persistence, self.pubsub)} - {None}
        for state in ("unavailable", "recovering", "connecting", "ok"):
            if state in states:
                return state
        return "off"

    def _token_route(self, connection: ServerConnection, request: Request, params: dict[str, str]) -> Response:
        if self.io.secret is None:
            return _json(connection, HTTPStatus.NOT_FOUND, {"error": "this server does not use tokens"})
        room, name = params.get("room", ""), params.get("name", "").strip()
        if not protocol.is_valid_room_name(room):
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": f"invalid room name {room!r}"})
        if not name or len(name) > 64:
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": "a display name of 1-64 characters is needed"})
        ask = TokenRequest(room, name, params.get("join_code"), params, dict(request.headers.raw_items()))
        user: dict[str, Any] | None
        if self.io.mint_user is not None:
            user = self.io.mint_user(ask)
        elif self.io.join_code is None:
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "the token route is closed (no join code)"})
        elif not secrets.compare_digest(ask.join_code or "", self.io.join_code):
            log.info("token refused for room %s: wrong join code", room)
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "wrong join code"})
        else:
            # In a class, the display name is the identity: the same name in two tabs is one person.
            user = {"id": name, "name": name}
        if user is None:
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "token refused"})
        try:
            token = self.io.create_token(room=room, user=user)
        except (ValidationError, ValueError) as error:
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": str(error)})
        return _json(connection, HTTPStatus.OK, {"token": token, "user": user})

    # -- rooms ------------------------------------------------------------------------------

    async def acquire(self, name: str) -> LiveRoom:
        """The live room ``name`` (loaded if no one is in it here), held until :meth:`release`."""
        while True:
            room = self.rooms.get(name)
            if room is None:
                if name not in self._opening:
                    self._opening[name] = asyncio.create_task(self._open(name))
                room = await asyncio.shield(self._opening[name])
                if self.rooms.get(name) is not room:  # released and closed while we waited
                    continue
            room.holders += 1
            return room

    async def _open(self, name: str) -> LiveRoom:
        try:
            if name in self._closing:  # let the last incarnation finish its commits first
                await self._closing[name]
            room = LiveRoom(name, self)
            await room.open()
            self.rooms[name] = room
            return room
        finally:
            del self._opening[name]

    def release(self, room: LiveRoom) -> None:
        room.holders -= 1
        if room.holders == 0 and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            task = asyncio.create_task(room.close())
            self._closing[room.name] = task
            task.add_done_callback(lambda _: self._closing.pop(room.name, None))

    async def broadcast(self, name: str, event: str, data: Any) -> None:
        room = await self.acquire(name)
        try:
            await room.emit(event, data)
        finally:
            self.release(room)

    async def storage_json(self, name: str) -> dict[str, Any]:
        room = await self.acquire(name)
        try:
            return room.storage_json()
        finally:
            self.release(room)

    async def update_storage(self, name: str, edit: Any) -> None:
        room = await self.acquire(name)
        try:
            await room.update_storage(edit)
        finally:
            self.release(room)

    # -- connections ------------------------------------------------------------------------

    async def _handle(self, socket: ServerConnection) -> None:
        assert socket.request is not None
        url = urlsplit(socket.request.path)
        name = unquote(url.path.lstrip("/"))
        token = parse_qs(url.query).get("token", [None])[-1]
        if not protocol.is_valid_room_name(name):
            await socket.close(CloseCode.INVALID_ROOM, f"invalid room name {name[:64]!r}")
            return
        connection_id = secrets.token_urlsafe(9)
        user: dict[str, Any] = {"id": connection_id}
        if self.io.secret is not None:
            try:
                user = verify_token(self.io.secret, token, room=name)
            except TokenError as error:
                log.info("refused a connection to %s: %s", name, error.reason)
                await socket.close(error.code, error.reason)
                return
        join = await self._await_join(socket)
        if join is None:
            return
        room = await self._enter(socket, name, join.initial_storage)
        if room is None:
            return
        self.connections += 1
        try:
            await room.join(socket, Member(connection_id, user, join.presence), join.metadata)
            log.info("room %s: %s joined (user %s)", name, connection_id, user["id"])
            await self._serve(socket, room, connection_id)
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            await room.leave(connection_id)
            log.info("room %s: %s left", name, connection_id)
            self.release(room)

    async def _enter(self, socket: ServerConnection, name: str, initial_storage: bytes | None) -> LiveRoom | None:
        """The room, held, with its initial storage settled; or None (and the socket closed with
        TRY_AGAIN_LATER, so the client retries) while the room's shared store is unreachable."""
        room: LiveRoom | None = None
        try:
            room = await self.acquire(name)
            if initial_storage is not None and not room.core.has_storage:
                await room.offer_initial_storage(initial_storage)
            return room
        except StorageUnavailableError as error:
            if room is not None:
                self.release(room)
            log.warning("room %s: %s; the client will retry", name, error)
            await socket.close(CloseCode.TRY_AGAIN_LATER, "room storage unreachable: retry later")
            return None

    async def _await_join(self, socket: ServerConnection) -> protocol.Join | None:
        """Read and validate the ``join`` message; on failure close the socket and return None."""
        try:
            frame = await asyncio.wait_for(socket.recv(), self.io.limits.join_timeout_s)
        except TimeoutError:
            await socket.close(CloseCode.JOIN_TIMEOUT, "no join message in time")
            return None
        except ConnectionClosed:
            return None
        try:
            return protocol.parse_join(frame, self.io.limits)
        except protocol.ProtocolError as error:
            await socket.close(CloseCode.PROTOCOL_ERROR, str(error)[:120])
            return None

    async def _serve(self, socket: ServerConnection, room: LiveRoom, connection_id: str) -> None:
        """Feed the connection's frames to its room, pacing a flood instead of dropping it."""
        limits = self.io.limits
        tokens, refilled, warned = float(limits.message_burst), time.monotonic(), False
        async for frame in socket:
            now = time.monotonic()
            tokens = min(float(limits.message_burst), tokens + (now - refilled) * limits.max_messages_per_s)
            refilled = now
            if tokens < 1:
                if not warned:
                    warned = True
                    room.send_error(connection_id, ErrorCode.RATE_LIMITED,
                                    f"more than {limits.max_messages_per_s:g} messages/s: reading is paused")
                # Backpressure: not reading lets TCP slow the sender; nothing is dropped.
                await asyncio.sleep((1 - tokens) / limits.max_messages_per_s)
                tokens, refilled = 1.0, time.monotonic()
            else:
                warned = False
            tokens -= 1
            await room.receive(connection_id, frame)


def _json(connection: ServerConnection, status: HTTPStatus, body: dict[str, Any]) -> Response:
    response = connection.respond(status, json.dumps(body) + "\n")
    response.headers["Content-Type"] = "application/json"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response

