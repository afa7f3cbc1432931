"""The running server's configuration: frozen, built from ``create_io(...)`` when it starts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from ..protocol import Limits
from .access import AccessCode
from .bus.base import PubSub
from .hooks import Hook
from .procedures import Procedure
from .storage.base import Persistence
from .tokens import DEFAULT_TOKEN_MAX_AGE_S, TokenRequest, issue_token
from .webhooks import WebhookSender

#: ``create_io(mint_user=...)``: the user a ``/token`` request gets (sync or async), None to refuse.
MintUser = Callable[[TokenRequest], dict[str, Any] | Awaitable[dict[str, Any] | None] | None]


@dataclass(frozen=True)
class ServerConfig:
    """Everything a running server is told, fixed for its lifetime.

    The store and the bus are live objects, but which ones a server uses is fixed here.
    """

    persistence: Persistence
    pubsub: PubSub
    limits: Limits = field(default_factory=Limits)
    secret: str | None = None
    user_model: type[BaseModel] | None = None
    access_codes: tuple[AccessCode, ...] = ()  # join (student), teacher and observer codes
    token_max_age_s: float = DEFAULT_TOKEN_MAX_AGE_S
    mint_user: MintUser | None = None
    path_prefix: str = ""  # every route also answers under it (a JupyterHub service's prefix)
    trusted_proxies: frozenset[str] = frozenset()  # X-Forwarded-For is believed from these only
    procedures: Mapping[str, Procedure] = field(default_factory=lambda: MappingProxyType({}))
    #: Roots of each room's protected document (read-only for clients, written by the server);
    #: the widget's ``messages`` always live there. Teacher-only roots: teachers may also write them.
    protected_roots: tuple[str, ...] = ()
    teacher_only_roots: tuple[str, ...] = ()
    #: Drop a room's storage (back to its initial storage, new generation) this long after its
    #: generation began; None: never.
    storage_ttl_s: float | None = None
    #: Signed webhooks (``create_io(webhook_url=, webhook_secret=)``); None: none are sent.
    webhooks: WebhookSender | None = None
    on_user_connected: Hook | None = None
    on_user_disconnected: Hook | None = None
    on_room_destroyed: Hook | None = None
    on_storage_updated: Hook | None = None

    @property
    def auth(self) -> bool:
        """True when connections need a signed token."""
        return self.secret is not None

    def create_token(self, *, room: str, user: dict[str, Any] | BaseModel, max_age: float | None = None) -> str:
        return issue_token(self.secret, room=room, user=user, max_age=max_age or self.token_max_age_s,
                           user_model=self.user_model)
