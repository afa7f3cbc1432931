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

:class:`PluvIO` is what you build: its options may change until the server starts (the CLI sets
``--secret`` and ``--redis`` on an ``--app`` object). ``io.start()`` freezes them into a
:class:`~.config.ServerConfig` and runs a :class:`~.room_server.RoomServer` with it; ``io``'s
powers (``broadcast``, ``storage_json``, ``update_storage``, ``rooms``) then act on that server.
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import ServerConfigError, ServerNotRunningError
from ..protocol import DEFAULT_HOST, DEFAULT_PORT, Limits
from .access import build_codes
from .bus.base import PubSub
from .bus.local import LocalPubSub
from .config import MintUser, ServerConfig
from .guard import parse_proxies
from .hooks import Hook
from .procedures import Procedure, ProcedureHandler
from .storage.base import Persistence
from .storage.memory import MemoryPersistence
from .tokens import DEFAULT_TOKEN_MAX_AGE_S, check_secret, issue_token
from .webhooks import WebhookConfigError, WebhookSender, with_webhooks

if TYPE_CHECKING:
    from .live_room import StorageEdit
    from .room_server import RoomServer

#: The SQLite file of a server given a ``data_dir``.
SQLITE_FILE = "rooms.sqlite3"


class PluvIO:
    """The server as built in code, and its public powers (tokens, broadcast, storage)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        user: type[BaseModel] | None = None,
        join_code: str | None = None,
        join_codes: Iterable[str] = (),
        teacher_codes: Iterable[str] = (),
        observer_codes: Iterable[str] = (),
        token_max_age_s: float = DEFAULT_TOKEN_MAX_AGE_S,
        mint_user: MintUser | None = None,
        path_prefix: str = "",
        limits: Limits | None = None,
        persistence: Persistence | None = None,
        pubsub: PubSub | None = None,
        redis: str | None = None,
        data_dir: str | Path | None = None,
        trusted_proxies: Iterable[str] = (),
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        on_user_connected: Hook | None = None,
        on_user_disconnected: Hook | None = None,
        on_room_destroyed: Hook | None = None,
        on_storage_updated: Hook | None = None,
        protected_roots: Iterable[str] = (),
        teacher_only_roots: Iterable[str] = (),
        storage_ttl_s: float | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.secret = secret
        self.user_model = user
        #: Student codes (``CODE`` or ``CODE@room-prefix``); ``join_code=`` is one more of them.
        self.join_codes = [*([join_code] if join_code is not None else []), *join_codes]
        #: Codes giving a teacher's token, and an observer's (read-only), scoped the same way.
        self.teacher_codes = list(teacher_codes)
        self.observer_codes = list(observer_codes)
        if self.has_codes and secret is None:
            raise ServerConfigError("a join code needs a secret to sign the tokens it hands out")
        build_codes(join_codes=self.join_codes, teacher_codes=self.teacher_codes,
                    observer_codes=self.observer_codes)  # refuse a bad code now
        self.token_max_age_s = token_max_age_s
        self.mint_user = mint_user
        #: Every route also answers under this path (a JupyterHub service's ``/services/<name>/``).
        self.path_prefix = path_prefix
        self.limits = limits or Limits()
        self.persistence = persistence
        self.pubsub = pubsub
        if redis is not None:
            self.use_redis(redis)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        #: Addresses whose ``X-Forwarded-For`` is believed (a reverse proxy, JupyterHub's proxy).
        self.trusted_proxies = list(trusted_proxies)
        #: A certificate chain and its key: serve ``wss://`` and ``https://``.
        self.certfile = certfile
        self.keyfile = keyfile
        self.on_user_connected = on_user_connected
        self.on_user_disconnected = on_user_disconnected
        self.on_room_destroyed = on_room_destroyed
        self.on_storage_updated = on_storage_updated
        #: Storage roots clients may only read: they live in each room's protected document,
        #: written by the server (procedures, ``update_storage(..., protected=True)``). The
        #: widget's ``messages`` always live there (written by the ``messages.*`` procedures).
        #: Teacher-only roots are protected roots a teacher's client may also write directly.
        self.protected_roots = list(protected_roots)
        self.teacher_only_roots = list(teacher_only_roots)
        #: Seconds after which a room's storage is dropped (reset to its initial storage, with a
        #: new generation); None: kept for ever.
        self.storage_ttl_s = storage_ttl_s
        #: Where signed webhooks go, and their Standard Webhooks secret (``whsec_...``).
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self._webhooks()  # refuse a bad URL or secret now
        self.procedures: dict[str, Procedure] = {}
        self.server: RoomServer | None = None

    # -- building ---------------------------------------------------------------------------

    @property
    def join_code(self) -> str | None:
        """The first student code (``create_io(join_code=...)``); setting it replaces the student codes."""
        return self.join_codes[0] if self.join_codes else None

    @join_code.setter
    def join_code(self, code: str | None) -> None:
        self.join_codes = [] if code is None else [code]

    @property
    def has_codes(self) -> bool:
        """True when any join, teacher or observer code is configured."""
        return bool(self.join_codes or self.teacher_codes or self.observer_codes)

    def procedure(
        self, event: str, *, input: type[BaseModel]  # noqa: A002 - pluv's name
    ) -> Callable[[ProcedureHandler], ProcedureHandler]:
        """Register a typed event (pluv's ``io.procedure.input(Model).broadcast(fn)``).

        Invalid input gets an ``invalid_input`` error to its sender only. Without a handler the
        validated input is relayed to the room as ``event``. A handler ``fn(data, ctx)`` (sync
        or async) returns ``{event_name: data, ...}`` to broadcast to the whole room, sender
        included, or ``None`` to broadcast nothing.
        """
        self.procedures[event] = Procedure(event, input)

        def register(handler: ProcedureHandler) -> ProcedureHandler:
            self.procedures[event] = Procedure(event, input, handler)
            return handler

        return register

    def create_token(self, *, room: str, user: dict[str, Any] | BaseModel, max_age: float | None = None) -> str:
        """A signed token for ``user`` to enter ``room``, valid ``max_age`` seconds."""
        return issue_token(self.secret, room=room, user=user, max_age=max_age or self.token_max_age_s,
                           user_model=self.user_model)

    def use_redis(self, url: str) -> None:
        """Share storage and fan-out with every process on ``redis://host:port/db``."""
        from .bus.redis import RedisPubSub
        from .storage.redis import RedisPersistence

        self.persistence = RedisPersistence(url)
        self.pubsub = RedisPubSub(url)

    def _webhooks(self) -> WebhookSender | None:
        if self.webhook_url is None and self.webhook_secret is None:
            return None
        if self.webhook_url is None or self.webhook_secret is None:
            raise ServerConfigError("webhooks need both a URL and a secret (whsec_...)")
        try:
            return WebhookSender(self.webhook_url, self.webhook_secret)
        except WebhookConfigError as error:
            raise ServerConfigError(str(error)) from None

    def config(self) -> ServerConfig:
        """The frozen configuration a server started now runs with (its store and bus are
        created here when none was given: memory, or SQLite in ``data_dir``; the in-process bus)."""
        if self.has_codes and self.secret is None:
            raise ServerConfigError("a join code needs a secret to sign the tokens it hands out")
        access_codes = build_codes(join_codes=self.join_codes, teacher_codes=self.teacher_codes,
                                   observer_codes=self.observer_codes)
        if self.secret is not None:
            check_secret(self.secret)
        try:
            trusted_proxies = parse_proxies(self.trusted_proxies)
        except ValueError as error:
            raise ServerConfigError(f"a trusted proxy must be an IP address: {error}") from None
        if self.persistence is None:
            if self.data_dir is None:
                self.persistence = MemoryPersistence()
            else:
                from .storage.sqlite import SqlitePersistence

                self.persistence = SqlitePersistence(self.data_dir / SQLITE_FILE)
        if self.pubsub is None:
            self.pubsub = LocalPubSub()
        webhooks = self._webhooks()
        hooks = (self.on_user_connected, self.on_user_disconnected, self.on_storage_updated)
        if webhooks is not None:
            hooks = with_webhooks(webhooks, self.persistence, on_user_connected=self.on_user_connected,
                                  on_user_disconnected=self.on_user_disconnected,
                                  on_storage_updated=self.on_storage_updated)
        return ServerConfig(
            persistence=self.persistence,
            pubsub=self.pubsub,
            limits=self.limits,
            secret=self.secret,
            user_model=self.user_model,
            access_codes=access_codes,
            token_max_age_s=self.token_max_age_s,
            mint_user=self.mint_user,
            path_prefix=self.path_prefix,
            trusted_proxies=trusted_proxies,
            procedures=MappingProxyType(dict(self.procedures)),
            protected_roots=tuple(dict.fromkeys(self.protected_roots)),
            teacher_only_roots=tuple(dict.fromkeys(self.teacher_only_roots)),
            storage_ttl_s=self.storage_ttl_s,
            webhooks=webhooks,
            on_user_connected=hooks[0],
            on_user_disconnected=hooks[1],
            on_room_destroyed=self.on_room_destroyed,
            on_storage_updated=hooks[2],
        )

    # -- running ----------------------------------------------------------------------------

    def ssl_context(self) -> _ssl.SSLContext | None:
        """The TLS context of ``certfile`` / ``keyfile``, or None without them."""
        if self.certfile is None:
            if self.keyfile is not None:
                raise ServerConfigError("a keyfile needs its certfile")
            return None
        context = _ssl.create_default_context(_ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, _ssl.SSLError) as error:
            raise ServerConfigError(f"cannot load the certificate {self.certfile}: {error}") from None
        return context

    async def start(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                    ssl: _ssl.SSLContext | None = None) -> RoomServer:
        """Start serving in the running loop; returns the server (``await server.close()``).

        ``ssl`` (or ``certfile``/``keyfile``) serves ``wss://`` and ``https://`` on the port."""
        from .room_server import RoomServer

        context = ssl if ssl is not None else self.ssl_context()
        server = RoomServer(self.config(), self)
        await server.start(host, port, ssl=context)
        self.server = server
        return server

    async def serve(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                    ssl: _ssl.SSLContext | None = None) -> None:
        """Serve until cancelled or SIGTERM/SIGINT (connections then close with 1012)."""
        server = await self.start(host, port, ssl=ssl)
        await server.serve_until_stopped()

    def _running(self) -> RoomServer:
        if self.server is None:
            raise ServerNotRunningError("the server is not running: await io.start() first")
        return self.server

    async def broadcast(self, room: str, event: str, data: Any) -> None:
        """Send an event from the server itself to everyone in ``room``."""
        await self._running().broadcast(room, event, data)

    async def storage_json(self, room: str) -> dict[str, Any]:
        """The room's committed storage as JSON (loads it if no one is in the room)."""
        return await self._running().storage_json(room)

    async def update_storage(self, room: str, edit: StorageEdit, *, protected: bool = False) -> None:
        """Edit a room's storage as the server: ``edit(doc)`` runs on a copy; its changes are
        committed and relayed like any client's update. ``protected``: edit the room's protected
        document instead (the roots of ``protected_roots``, which clients cannot write)."""
        await self._running().update_storage(room, edit, protected=protected)

    async def call(self, room: str, procedure: str, input: Any, *,  # noqa: A002 - the wire's name
                   user: dict[str, Any] | None = None) -> Any:
        """Run a built-in procedure (``messages.post``, ``room.reset``...) as the server, or as
        ``user`` (checked like a member with that user's role); returns its result or raises
        :class:`~pluv_widget.errors.PermissionDenied` / :class:`~pluv_widget.errors.ProcedureError`."""
        return await self._running().call(room, procedure, input, user=user)

    async def moderation_log(self, room: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The room's moderation log (who did what, when), oldest first."""
        return await self._running().moderation_log(room, limit)

    def rooms(self) -> list[str]:
        return self._running().room_names()


def create_io(**options: Any) -> PluvIO:
    """Build a server; see :class:`PluvIO` for the options."""
    return PluvIO(**options)
