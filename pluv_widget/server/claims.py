"""Name claims: under access codes, a name belongs to whoever took it first.

The first ``/token`` for a name (within a code's room prefix) creates a *claim*: a stable user id
(``u-`` + random) and a per-person secret returned once, in the answer's ``claim``. The store
keeps only the secret's SHA-256. Anyone else asking for that name — or for one that looks the
same (:func:`~.names.name_key`) — is refused (409) unless they send the secret back
(``&claim=``). Claims live in the server's durable state (``Persistence.put_value``, scope
``claims:<prefix>``), so they survive a restart and hold across every process of one Redis;
the claim is made with ``if_absent``, so two devices racing for a name cannot both win.

A teacher releases a name (``POST /names/release``): its claim is deleted, the next person to ask
for it gets a new id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..protocol import Role
from .names import name_key
from .storage.base import Persistence

SCOPE = "claims:"


class NameTaken(Exception):
    """The name is someone else's (the route answers 409 with :attr:`reason`)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reason = f"the name {name!r} is taken in this class; ask your teacher to release it"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token is for: the claim's user id and name, and the secret to send back."""

    id: str
    name: str
    claim: str


def scope_of(prefix: str) -> str:
    return SCOPE + prefix


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


async def claim_name(store: Persistence, prefix: str, name: str, *, secret: str | None,
                     role: Role) -> Identity:
    """The identity of ``name`` (normalised) under ``prefix``: the claimant's, with ``secret``;
    a new one when the name is free; :class:`NameTaken` otherwise."""
    key, scope = name_key(name), scope_of(prefix)
    if not secret:
        fresh = secrets.token_urlsafe(24)
        record = {"id": "u-" + secrets.token_urlsafe(12), "name": name, "hash": _digest(fresh),
                  "role": role, "at": time.time()}
        if await store.put_value(scope, key, record, if_absent=True):
            return Identity(str(record["id"]), name, fresh)
        raise NameTaken(name)
    held = await store.get_value(scope, key)
    if held is None:  # released (or never taken here): take it afresh with this secret
        record = {"id": "u-" + secrets.token_urlsafe(12), "name": name, "hash": _digest(secret),
                  "role": role, "at": time.time()}
        if await store.put_value(scope, key, record, if_absent=True):
            return Identity(str(record["id"]), name, secret)
        held = await store.get_value(scope, key)
    if _holds(held, secret):
        assert isinstance(held, dict)
        return Identity(str(held["id"]), str(held.get("name") or name), secret)
    raise NameTaken(name)


def _holds(record: Any, secret: str) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("hash"), str) and isinstance(record.get("id"), str)
            and hmac.compare_digest(record["hash"], _digest(secret)))


async def release_name(store: Persistence, prefixes: list[str], name: str) -> bool:
    """Delete the claims on ``name`` (and its look-alikes) under each prefix; True if one existed."""
    key = name_key(name)
    released = False
    for prefix in prefixes:
        released = await store.delete_value(scope_of(prefix), key) or released
    return released
