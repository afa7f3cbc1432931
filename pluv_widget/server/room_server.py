"""The running server: one ``websockets`` server, its rooms and connections, until it closes.

Built by ``io.start()`` from a frozen :class:`~.config.ServerConfig`. One port serves the HTTP
routes (:mod:`.routes`) and room connections (:mod:`.connection`).

Heartbeats: the server pings every ``ping_interval_s`` (20 s) and drops a connection whose pong
has not come ``ping_timeout_s`` (40 s) later. A kernel cell that blocks the kernel's event loop
for longer than about a minute therefore loses its connection; the client reconnects by itself
afterwards and restores its presence. A connection whose send buffer is full cannot hold its
ping back: it is cut with 4007 first (:mod:`.guard`). Compression is off: permessage-deflate
costs ~50 KiB of memory per connection and our frames are small.

Sockets are counted from TCP accept (:class:`~.guard.ConnectionGate`); the WebSocket handshake
must end within ``handshake_timeout_s``; with ``ssl`` (``--certfile/--keyfile``) the same port
serves ``wss://`` and ``https://``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import ssl as _ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, serve

from .. import __version__
from ..protocol import PROTOCOL_VERSION, SERVER_NAME, CloseCode
from ..protocol.routes import Health
from .config import ServerConfig
from .connection import ConnectionHandler
from .dashboard import DashboardFeed
from .directory import RoomDirectory
from .guard import ConnectionGate, connection_class
from .live_room import LiveRoom, StorageEdit
from .logfilter import install as install_log_filter
from .registry import RoomRegistry
from .rest import RestApi
from .routes import HttpRoutes
from .webhooks import forget_room

if TYPE_CHECKING:
    from .io import PluvIO

log = logging.getLogger("pluv_widget.server")

#: Connections the kernel queues before they are accepted. asyncio's default (100) drops the
#: SYNs of a class entering at once, and a dropped SYN is retried only after a second (issue 15).
LISTEN_BACKLOG = 2048

#: ``/health``'s ``redis``: the worst state of the store and the bus wins.
_REDIS_STATES = ("unavailable", "recovering", "connecting", "ok")


class RoomServer:
    """One server process's rooms and connections. ``io`` is the ``create_io`` object that
    started it (``None`` when built from a config directly)."""

    def __init__(self, config: ServerConfig, io: PluvIO | None = None) -> None:
        self.config = config
        self.io = io
        self.node = secrets.token_hex(6)
        self.registry = RoomRegistry(config, self.node)
        self.gate = ConnectionGate(config.limits, config.trusted_proxies)
        self.handler = ConnectionHandler(config, self.registry, self.gate)
        self.directory = RoomDirectory(config.persistence, self.node, lambda: self.registry.rooms)
        self.api = RestApi(self)
        self.dashboard = DashboardFeed(self)
        self.handler.dashboard = self.dashboard
        self._server: Server | None = None
        self.tls = False
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        return self.handler.connections

    @property
    def rooms(self) -> Mapping[str, LiveRoom]:
        """The rooms open on this process, by name."""
        return self.registry.rooms

    async def start(self, host: str, port: int, *, ssl: _ssl.SSLContext | None = None) -> None:
        limits = self.config.limits
        install_log_filter(limits.log_lines_per_min)
        self._server = await serve(
            self.handler,
            host,
            port,
            process_request=HttpRoutes(self.config, self.health, self.gate),
            create_connection=connection_class(self.gate, self.api, self.config.path_prefix),
            max_size=limits.max_frame_bytes,
            max_queue=limits.max_queued_frames,
            compression=None,
            open_timeout=limits.handshake_timeout_s,
            ping_interval=limits.ping_interval_s,
            ping_timeout=limits.ping_timeout_s,
            close_timeout=limits.close_grace_s,
            server_header=f"{SERVER_NAME}/{__version__}",
            ssl=ssl,
            backlog=LISTEN_BACKLOG,
        )
        self.tls = ssl is not None
        self.gate.start()
        self.directory.start()
        log.info("pluv-widget %s serving on %s://%s:%d (node %s, auth %s, storage %s, at most %d sockets)",
                 __version__, "wss" if self.tls else "ws", host, self.port, self.node,
                 "on" if self.config.auth else "off", type(self.config.persistence).__name__, self.gate.max_total)

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

    async def close(self) -> None:
        """Close every connection with 1012 (clients reconnect), flush storage, release stores."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self.gate.stop()
        log.info("shutting down: closing connections with 1012")
        server.close(close_connections=True, code=CloseCode.SERVICE_RESTART, reason="server restarting")
        await server.wait_closed()
        await self.registry.drain()
        await self.dashboard.close()
        await self.directory.stop()
        if self.config.webhooks is not None:
            await self.config.webhooks.close()
        await self.config.persistence.close()
        await self.config.pubsub.close()
        self._stopped.set()

    # -- what /health says ------------------------------------------------------------------

    def health(self) -> Health:
        return {
            "server": SERVER_NAME,
            "protocol": PROTOCOL_VERSION,
            "version": __version__,
            "node": self.node,
            "pid": os.getpid(),
            "auth": self.config.auth,
            "rooms": len(self.registry),
            "connections": self.connections,
            "storage": type(self.config.persistence).__name__,
            "redis": self.redis_status(),
            "quarantined": self.registry.quarantined,
            "time": time.time(),
        }

    def redis_status(self) -> str:
        """``off`` without a shared backend, else the worst of the store's and the bus's states:
        ``unavailable``, ``recovering``, ``connecting`` or ``ok`` (see docs/scaling.md)."""
        parts = (self.config.persistence, self.config.pubsub)
        states = {getattr(part, "status", lambda: None)() for part in parts} - {None}
        for state in _REDIS_STATES:
            if state in states:
                return state
        return "off"

    # -- the server's own powers (``io.broadcast``, ``io.storage_json``, ...) ------------------

    def room_names(self) -> list[str]:
        return self.registry.names()

    async def broadcast(self, name: str, event: str, data: Any) -> None:
        async with self.registry.held(name) as room:
            await room.emit(event, data)

    async def storage_json(self, name: str) -> dict[str, Any]:
        async with self.registry.held(name) as room:
            return room.storage_json()

    async def update_storage(self, name: str, edit: StorageEdit, *, protected: bool = False) -> None:
        async with self.registry.held(name) as room:
            await room.update_storage(edit, protected=protected)

    async def call(self, name: str, procedure: str, data: Any, *, user: dict[str, Any] | None = None) -> Any:
        """Run a built-in procedure as the server (a teacher), or as ``user`` (its role checked)."""
        from ..core.permissions import BUILTIN_PROCEDURES, Refusal, Role, call_refusal, role_of
        from ..errors import procedure_error
        from .moderation import BUILTINS, run_builtin

        rule = BUILTIN_PROCEDURES.get(procedure)
        if rule is None or procedure not in BUILTINS:
            raise procedure_error("unknown_procedure", f"no built-in procedure {procedure!r}")
        async with self.registry.held(name) as room:
            who = user or {"id": "server", "name": "server"}
            role = role_of(user, room.core.default_role) if user else Role.TEACHER
            caller: dict[str, Any] = {"user": who, "presence": {}, "role": role}
            refusal = call_refusal(rule, procedure, role, str(who.get("id", "")), room.core.rules)
            answer = refusal if refusal is not None else await run_builtin(room, procedure, data, caller)
            if isinstance(answer, Refusal):
                raise procedure_error(answer.code, answer.message)
            return answer

    async def delete_room(self, name: str, user: dict[str, Any] | None = None) -> str:
        """Drop a room's storage (to empty: its initial storage is forgotten too, and not applied
        again: the room has a history) with a new generation; its members reconnect (4010) and
        reload. Returns the new generation."""
        from .live_room import state_scope

        async with self.registry.held(name) as room:
            who = user or {"id": "server", "name": "server"}
            caller: dict[str, Any] = {"user": who, "presence": {}, "role": who.get("role", "teacher")}
            await room.log(caller, "room.delete", None)
            await self.config.persistence.delete_value(state_scope(name), "initial")
            # Announced before the members are closed: one who reconnects opens the room again,
            # and its room.created must come after this room.deleted, never before or not at all.
            if self.config.webhooks is not None:
                await forget_room(self.config.persistence, name)
                self.config.webhooks.send("room.deleted", name, {"by": who.get("id")})
            await room.reset_storage(caller, "a teacher deleted the room")
            generation = room.core.rules.generation
        await self.directory.forget(name)
        return generation

    async def moderation_log(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        from .live_room import state_scope

        return await self.config.persistence.read_log(state_scope(name), limit)
