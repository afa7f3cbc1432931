"""``create_io``: the server built in code — auth, limits, stores, typed procedures and hooks.

>>> from pydantic import BaseModel
>>> from pluv_widget import create_io
>>> class Poll(BaseModel):
...     question: str
>>> io = create_io()
>>> @io.procedure("poll", input=Poll)
... def poll(data: Poll, ctx):
...     return {"poll": {"question": data.question.strip()}}

Run it with ``pluv-widget serve --app mymodule:io`` or ``await io.serve(port=1999)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pycrdt
from pydantic import BaseModel

from ..protocol import Limits, check_room_name
from .persistence import MemoryPersistence, Persistence
from .pubsub import LocalPubSub, PubSub
from .tokens import create_token

if TYPE_CHECKING:
    from .app import RoomServer

log = logging.getLogger("pluv_widget.server")

Hook = Callable[..., Any]
DEFAULT_TOKEN_MAX_AGE_S = 3600.0


@dataclass(frozen=True)
class Context:
    """Who triggered a hook or procedure."""

    room: str
    connection_id: str | None
    user: dict[str, Any] | None
    metadata: Any = None


@dataclass(frozen=True)
class TokenRequest:
    """A request to the ``/token`` route, for a deployment's own ``mint_user`` hook."""

    room: str
    name: str
    join_code: str | None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


ProcedureHandler = Callable[[Any, Context], Any]


@dataclass
class Procedure:
    """A typed event: its input model, and an optional handler returning ``{event: data}``."""

    event: str
    input: type[BaseModel]
    handler: ProcedureHandler | None = None


async def call_hook(hook: Hook | None, *args: Any) -> Any:
    """Run a sync or async user hook; its exceptions are logged, never fatal to the server."""
    if hook is None:
        return None
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            result = await result
        return result
    except Exception:
        log.exception("hook %s failed", getattr(hook, "__name__", hook))
        return None


class PluvIO:
    """The server's configuration and its public powers (tokens, broadcast, storage)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        user: type[BaseModel] | None = None,
        join_code: str | None = None,
        token_max_age_s: float = DEFAULT_TOKEN_MAX_AGE_S,
        mint_user: Callable[[TokenRequest], dict[str, Any] | None] | None = None,
        limits: Limits | None = None,
        persistence: Persistence | None = None,
        pubsub: PubSub | None = None,
        redis: str | None = None,
        data_dir: str | Path | None = None,
        on_user_connected: Hook | None = None,
        on_user_disconnected: Hook | None = None,
        on_room_destroyed: Hook | None = None,
        on_storage_updated: Hook | None = None,
    ) -> None:
        if join_code is not None and secret is None:
            raise ValueError("a join code needs a secret to sign the tokens it hands out")
        self.secret = secret
        self.user_model = user
        self.join_code = join_code
        self.token_max_age_s = token_max_age_s
        self.mint_user = mint_user
        self.limits = limits or Limits()
        self.persistence = persistence
        self.pubsub = pubsub
        if redis is not None:
            self.use_redis(redis)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.on_user_connected = on_user_connected
        self.on_user_disconnected = on_user_disconnected
        self.on_room_destroyed = on_room_destroyed
        self.on_storage_updated = on_storage_updated
        self.procedures: dict[str, Procedure] = {}
        self.server: RoomServer | None = None

    # -- building ---------------------------------------------------------------------------

    def procedure(
        self, event: str, *, input: type[BaseModel]  # noqa: A002 - pluv's name
    ) -> Callable[[ProcedureHandler], ProcedureHandler]:
        """Register a typed event (pluv's ``io.procedure.input(Model).broadcast(fn)``).

        Invalid input gets an ``invalid_input`` error to its sender only. Without a handler the
        validated input is relayed to the room as ``event``. A handler ``fn(data, ctx)`` (sync
        or async) returns ``{event_name: data, ...}`` to broadcast to the whole room, sender
        included, or ``None`` to broadcast nothing.
        """
        procedure = Procedure(event, input)
        self.procedures[event] = procedure

        def register(handler: ProcedureHandler) -> ProcedureHandler:
            procedure.handler = handler
            return handler

        return register

    def create_token(self, *, room: str, user: dict[str, Any] | BaseModel, max_age: float | None = None) -> str:
        """A signed token for ``user`` to enter ``room``, valid ``max_age`` seconds."""
        if self.secret is None:
            raise RuntimeError("create_io(secret=...) is needed to create tokens")
        check_room_name(room)
        data = user.model_dump(mode="json") if isinstance(user, BaseModel) else dict(user)
        if self.user_model is not None:
            data = self.user_model.model_validate(data).model_dump(mode="json")
        return create_token(self.secret, room=room, user=data, max_age=max_age or self.token_max_age_s)

    def use_redis(self, url: str) -> None:
        """Share storage and fan-out with every process on ``redis://host:port/db``."""
        from .redis import RedisPersistence, RedisPubSub

        self.persistence = RedisPersistence(url)
        self.pubsub = RedisPubSub(url)

    def make_persistence(self) -> Persistence:
        if self.persistence is None:
            if self.data_dir is None:
                self.persistence = MemoryPersistence()
            else:
                from .sqlite import SqlitePersistence

                self.persistence = SqlitePersistence(self.data_dir / "rooms.sqlite3")
        return self.persistence

    def make_pubsub(self) -> PubSub:
        if self.pubsub is None:
            self.pubsub = LocalPubSub()
        return self.pubsub

    # -- running ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 1999) -> RoomServer:
        """Start serving in the running loop; returns the server (``await server.close()``)."""
        from .app import RoomServer

        server = RoomServer(self)
        await server.start(host, port)
        self.server = server
        return server

    async def serve(self, host: str = "127.0.0.1", port: int = 1999) -> None:
        """Serve until cancelled or SIGTERM/SIGINT (connections then close with 1012)."""
        server = await self.start(host, port)
        await server.serve_until_stopped()

    def _running(self) -> RoomServer:
        if self.server is None:
            raise RuntimeError("the server is not running: await io.start() first")
        return self.server

    async def broadcast(self, room: str, event: str, data: Any) -> None:
        """Send an event from the server itself to everyone in ``room``."""
        await self._running().broadcast(room, event, data)

    async def storage_json(self, room: str) -> dict[str, Any]:
        """The room's committed storage as JSON (loads it if no one is in the room)."""
        return await self._running().storage_json(room)

    async def update_storage(self, room: str, edit: Callable[[pycrdt.Doc[Any]], Awaitable[None] | None]) -> None:
        """Edit a room's storage as the server: ``edit(doc)`` runs on a copy; its changes are
        committed and relayed like any client's update."""
        await self._running().update_storage(room, edit)

    def rooms(self) -> list[str]:
        return self._running().room_names()


def create_io(**options: Any) -> PluvIO:
    """Build a server configuration; see :class:`PluvIO` for the options."""
    return PluvIO(**options)

