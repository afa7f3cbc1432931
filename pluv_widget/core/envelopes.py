"""Envelopes: what one server process tells the others about a room they share.

A process publishes every room input it accepted — a member joined, left or patched its
presence, an event was sent, a storage update committed, a classroom entry recorded — and the
others apply it to their own copy of the room (``ServerRoom.apply_envelope``, the one place
envelopes are dispatched). A bus may also hand a room :class:`ResyncRequested` of its own: it
may have lost envelopes, or the shared store may have lost data.

Each envelope carries the ``node`` (server process) that published it, and knows how it changes a
bus's view of who is in the room (:meth:`track`: the buses keep a :class:`Membership` per node so
a room opening on another process learns everyone at once).

On the Redis wire an envelope is compact JSON, ``{"node": ..., "kind": ..., fields...}``; the
node comes first so a process can skip its own envelopes undecoded (:func:`own_prefix`), and
an update's bytes travel as base64. The Redis reaper script (``server/_redis.py``) writes
``leave`` and ``resync`` envelopes in this shape too.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from ..protocol import MemberInfo, encode_json
from .membership import Member, Membership


@dataclass(frozen=True, slots=True)
class MemberJoined:
    kind: ClassVar[str] = "join"
    member: MemberInfo
    node: str = ""

    @property
    def connection_id(self) -> str:
        return self.member.connection_id

    def fields(self) -> dict[str, Any]:
        return {"member": self.member.to_wire()}

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> MemberJoined:
        return cls(MemberInfo.from_wire(value.get("member")), node)

    def track(self, membership: Membership) -> None:
        membership.add(Member.from_info(self.member, local=False))


@dataclass(frozen=True, slots=True)
class MemberLeft:
    kind: ClassVar[str] = "leave"
    connection_id: str
    node: str = ""

    def fields(self) -> dict[str, Any]:
        return {"connection_id": self.connection_id}

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> MemberLeft:
        return cls(_string(value, "connection_id"), node)

    def track(self, membership: Membership) -> None:
        membership.remove(self.connection_id)


@dataclass(frozen=True, slots=True)
class PresencePatched:
    kind: ClassVar[str] = "presence"
    connection_id: str
    patch: dict[str, Any]
    node: str = ""

    def fields(self) -> dict[str, Any]:
        return {"connection_id": self.connection_id, "patch": self.patch}

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> PresencePatched:
        patch = value.get("patch")
        if not isinstance(patch, dict):
            raise ValueError("a presence envelope's 'patch' is an object")
        return cls(_string(value, "connection_id"), patch, node)

    def track(self, membership: Membership) -> None:
        membership.patch(self.connection_id, self.patch)


@dataclass(frozen=True, slots=True)
class EventSent:
    kind: ClassVar[str] = "event"
    event: str
    data: Any
    sender: str | None = None  # None: the server itself
    include_sender: bool = True
    node: str = ""
    connection_id: ClassVar[None] = None

    def fields(self) -> dict[str, Any]:
        return {"event": self.event, "data": self.data, "sender": self.sender, "include_sender": self.include_sender}

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> EventSent:
        sender = value.get("sender")
        if sender is not None and not isinstance(sender, str):
            raise ValueError("an event envelope's 'sender' is a string")
        return cls(_string(value, "event"), value.get("data"), sender, bool(value.get("include_sender", True)), node)

    def track(self, membership: Membership) -> None:
        pass


def _update_fields(update: bytes) -> dict[str, Any]:
    """A Yjs update in an envelope (JSON on the Redis wire): base64."""
    return {"update": base64.b64encode(update).decode("ascii")}


def _read_update(value: dict[str, Any], what: str) -> bytes:
    try:
        return base64.b64decode(_string(value, "update"), validate=True)
    except binascii.Error as error:
        raise ValueError(f"{what}'s 'update' is not base64: {error}") from None


@dataclass(frozen=True, slots=True)
class StorageUpdated:
    kind: ClassVar[str] = "update"
    update: bytes
    node: str = ""
    connection_id: ClassVar[None] = None

    def fields(self) -> dict[str, Any]:
        return _update_fields(self.update)

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> StorageUpdated:
        return cls(_read_update(value, "an update envelope"), node)

    def track(self, membership: Membership) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ProtectedUpdated:
    """A committed update of the room's protected document (written by the server only)."""

    kind: ClassVar[str] = "protected"
    update: bytes
    node: str = ""
    connection_id: ClassVar[None] = None

    def fields(self) -> dict[str, Any]:
        return _update_fields(self.update)

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> ProtectedUpdated:
        return cls(_read_update(value, "a protected envelope"), node)

    def track(self, membership: Membership) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RulesChanged:
    """A teacher changed the room's moderation state (``RoomRules.to_json``): muted, removed,
    locked, generation. The other processes adopt it, close removed users' connections, and
    after a new generation reload the room's storage and close every connection with 4010."""

    kind: ClassVar[str] = "rules"
    rules: dict[str, Any]
    node: str = ""
    connection_id: ClassVar[None] = None

    def fields(self) -> dict[str, Any]:
        return {"rules": self.rules}

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> RulesChanged:
        rules = value.get("rules")
        if not isinstance(rules, dict):
            raise ValueError("a rules envelope's 'rules' is an object")
        return cls(rules, node)

    def track(self, membership: Membership) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ClassRecorded:
    """An entry of the room's classroom log (``core/classroom.py``) one process accepted and
    stored: the others apply it to their own fold and refresh their connections' views."""

    kind: ClassVar[str] = "class"
    entry: dict[str, Any]
    node: str = ""
    connection_id: ClassVar[None] = None

    def fields(self) -> dict[str, Any]:
        return {"entry": self.entry}

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> ClassRecorded:
        entry = value.get("entry")
        if not isinstance(entry, dict):
            raise ValueError("a class envelope's 'entry' is an object")
        return cls(entry, node)

    def track(self, membership: Membership) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ResyncRequested:
    """From a bus, not a process: converge with the shared store (``reseed``: first store and
    publish what this process holds)."""

    kind: ClassVar[str] = "resync"
    reseed: bool = False
    node: str = ""
    connection_id: ClassVar[None] = None

    def fields(self) -> dict[str, Any]:
        return {"reseed": self.reseed}

    @classmethod
    def from_fields(cls, value: dict[str, Any], node: str) -> ResyncRequested:
        return cls(bool(value.get("reseed")), node)

    def track(self, membership: Membership) -> None:
        pass


Envelope = (MemberJoined | MemberLeft | PresencePatched | EventSent | StorageUpdated | ProtectedUpdated
            | RulesChanged | ClassRecorded | ResyncRequested)

_KINDS: dict[str, Any] = {
    kind.kind: kind for kind in (MemberJoined, MemberLeft, PresencePatched, EventSent, StorageUpdated,
                                 ProtectedUpdated, RulesChanged, ClassRecorded, ResyncRequested)
}


def _string(value: dict[str, Any], key: str) -> str:
    item = value.get(key)
    if not isinstance(item, str):
        raise ValueError(f"an envelope's {key!r} is a string")
    return item


def encode_envelope(envelope: Envelope) -> bytes:
    """The envelope as compact JSON, its node first (see :func:`own_prefix`)."""
    return encode_json({"node": envelope.node, "kind": envelope.kind, **envelope.fields()}).encode()


def own_prefix(node: str) -> bytes:
    """How every envelope ``node`` publishes starts (see :func:`encode_envelope`)."""
    return b'{"node":' + encode_json(node).encode() + b","


def decode_envelope(data: bytes | str) -> Envelope:
    """An envelope from its JSON; ``ValueError`` when it is not one."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("an envelope is a JSON object")
    kind = _KINDS.get(value.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        raise ValueError(f"unknown envelope kind {value.get('kind')!r}")
    node = value.get("node") or ""
    envelope: Envelope = kind.from_fields(value, node if isinstance(node, str) else "")
    return envelope
