"""Every text message, defined once: its fields, its encoder and its decoder.

The client's first frame is :class:`Join`; the server answers :class:`Welcome` (everyone already
in the room) and then, as they happen, :class:`Joined`, :class:`Left`, :class:`PresenceUpdate`,
:class:`Event`, :class:`Result`, :class:`ErrorMessage` and :class:`ClassView`. After joining, a client sends
:class:`PresenceUpdate`, :class:`Event` and :class:`Call` (a typed procedure with a reply: the
server answers the sender only, with a :class:`Result` or an :class:`ErrorMessage` of the same
``id``). Values cross the wire as ``{"type": ..., fields...}``; a field the server
stamps (who sent it) is left out when a client sends the message.

Coalesced forms (protocol 2; the server sends them when several happened within one tick of its
event loop — a join storm, a busy room's presence): :class:`MembersJoined` is ``joined`` with
``members`` (a list of members) instead of one member's fields, and :class:`PresenceBatch` is
``presence`` with ``updates`` (each sender's patches of that tick merged into one) instead of
``patch``. Both go to everyone in the room in one frame, so they may name the receiver itself
(skipped) or a member its ``welcome`` already listed (taken as is). One event of a tick is still
sent in the single form.

Lists are compact (protocol 3): a member in ``welcome``'s ``others`` and ``joined``'s ``members``
is the array ``[connection_id, user, presence]`` and an entry of ``updates`` is
``[connection_id, patch]`` — in a join storm every client decodes a thousand members, and an
array decodes ~3× faster than an object with the same fields. A server sends a client that
joined with protocol 1 or 2 the object forms ``{"connection_id", "user", "presence"}`` and
``{"connection_id", "patch"}`` (``compact=False``); decoders take both. Protocol 3 also
coalesces leaves: :class:`MembersLeft` is ``left`` with ``connection_ids``.

:class:`ClassView` (``{"type": "class", "view": {...}}``) is one connection's whole view of the
room's classroom (polls, hands, pulse — what its role may see, built by the server); the server
sends it after ``welcome`` and again whenever it changes. Clients never send it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .codec import ProtocolError, decode_object, encode_json, json_size
from .codes import ErrorCode
from .constants import PROTOCOL_VERSION, SUPPORTED_PROTOCOLS
from .limits import Limits
from .names import is_valid_event_name


def _need(condition: bool, problem: str) -> None:
    if not condition:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, problem)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A connection in a room as the others see it: who (stamped by the server) and presence."""

    connection_id: str
    user: dict[str, Any]
    presence: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"connection_id": self.connection_id, "user": self.user, "presence": self.presence}

    def encode(self, *, compact: bool = True) -> str:
        """This member as a list entry's JSON text: what :attr:`Welcome.encoded_others` and
        :meth:`MembersJoined.encode` splice in (encode a member once, not once per joiner)."""
        return encode_json([self.connection_id, self.user, self.presence] if compact else self.to_wire())

    @classmethod
    def from_wire(cls, value: Any) -> MemberInfo:
        """A member's fields (``joined``, the ``welcome`` itself) or a list entry in either form."""
        if isinstance(value, list):
            _need(len(value) == 3, "a member is [connection_id, user, presence]")
            value = dict(zip(("connection_id", "user", "presence"), value, strict=True))
        _need(_is_object(value), "a member is an object")
        connection_id, user, presence = value.get("connection_id"), value.get("user"), value.get("presence", {})
        _need(isinstance(connection_id, str), "a member needs a string 'connection_id'")
        _need(_is_object(user) and isinstance(user.get("id"), str), "a member needs a 'user' with a string 'id'")
        _need(_is_object(presence), "a member's 'presence' is an object")
        return cls(connection_id, user, presence)


@dataclass(frozen=True, slots=True)
class Join:
    """client → server, first: the protocol it speaks, its presence, and what it offers."""

    presence: dict[str, Any]
    metadata: Any = None
    initial_storage: bytes | None = None  # a Yjs update, for a room that has no storage yet
    protocol: int = PROTOCOL_VERSION
    #: The room's generation this client's document belongs to (None: it never synced). A
    #: client of an older generation discards its document; the server refuses its old updates.
    generation: str | None = None

    def encode(self) -> str:
        message: dict[str, Any] = {"type": "join", "protocol": self.protocol, "presence": self.presence}
        if self.metadata is not None:
            message["metadata"] = self.metadata
        if self.generation is not None:
            message["generation"] = self.generation
        if self.initial_storage is not None:
            message["initial_storage"] = base64.b64encode(self.initial_storage).decode()
        return encode_json(message)

    @classmethod
    def decode(cls, frame: str | bytes, limits: Limits) -> Join:
        """Validate a connection's first frame; :class:`ProtocolError` says what is wrong with it."""
        _need(isinstance(frame, str), "the first message must be a text 'join' message")
        assert isinstance(frame, str)
        message = decode_object(frame)
        presence = message.get("presence", {})
        initial = message.get("initial_storage")
        _need(message["type"] == "join", "the first message must be a text 'join' message")
        _need(
            type(message.get("protocol")) is int and message["protocol"] in SUPPORTED_PROTOCOLS,
            f"unsupported protocol {message.get('protocol')!r}; this server speaks "
            f"{', '.join(map(str, sorted(SUPPORTED_PROTOCOLS)))}",
        )
        _need(_is_object(presence), "join 'presence' must be an object")
        _need(json_size(presence) <= limits.max_presence_bytes,
              f"initial presence is over {limits.max_presence_bytes} bytes")
        _need(initial is None or isinstance(initial, str), "join 'initial_storage' must be base64 text")
        generation = message.get("generation")
        _need(generation is None or (isinstance(generation, str) and len(generation) <= 64),
              "join 'generation' must be a short string")
        try:
            storage = base64.b64decode(initial, validate=True) if initial else None
        except (binascii.Error, ValueError) as error:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"invalid initial_storage: {error}") from None
        return cls(presence, message.get("metadata"), storage, message["protocol"], generation)


@dataclass(frozen=True, slots=True)
class Welcome:
    """server → a joiner: who it is (as the server stamps it) and everyone already in the room."""

    room: str
    connection_id: str
    user: dict[str, Any]
    presence: dict[str, Any]
    others: tuple[MemberInfo, ...] = ()
    protocol: int = PROTOCOL_VERSION
    #: The room's generation: a new one after a reset, a clear or an expiry (see ``Join``).
    generation: str = ""
    #: Roots of the protected document (written by the server only; read-only for clients).
    protected_roots: tuple[str, ...] = ()
    #: Protected roots a teacher's client may also write directly (protected update frames).
    teacher_only_roots: tuple[str, ...] = ()
    #: ``others`` already encoded (:meth:`MemberInfo.encode`): sent instead of ``others``.
    encoded_others: Sequence[str] | None = field(default=None, compare=False, repr=False)
    #: ``others`` as arrays (protocol 3) or as objects (for a protocol 1 or 2 joiner).
    compact: bool = field(default=True, compare=False)

    def encode(self) -> str:
        head = encode_json({
            "type": "welcome",
            "protocol": self.protocol,
            "room": self.room,
            "connection_id": self.connection_id,
            "user": self.user,
            "presence": self.presence,
            "generation": self.generation,
            "protected_roots": list(self.protected_roots),
            "teacher_only_roots": list(self.teacher_only_roots),
        })
        others = self.encoded_others
        if others is None:
            others = [other.encode(compact=self.compact) for other in self.others]
        return _with_list(head, "others", others)

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> Welcome:
        me = MemberInfo.from_wire(message)
        others = message.get("others", [])
        _need(isinstance(others, list), "welcome 'others' is a list")
        protected, teacher_only = message.get("protected_roots", []), message.get("teacher_only_roots", [])
        for roots in (protected, teacher_only):
            _need(isinstance(roots, list) and all(isinstance(root, str) for root in roots),
                  "welcome's roots are lists of strings")
        return cls(str(message.get("room", "")), me.connection_id, me.user, me.presence,
                   tuple(MemberInfo.from_wire(other) for other in others), int(message.get("protocol") or 0),
                   str(message.get("generation") or ""), tuple(protected), tuple(teacher_only))


@dataclass(frozen=True, slots=True)
class Joined:
    """server → the others: a connection entered the room."""

    member: MemberInfo

    def encode(self) -> str:
        return encode_json({"type": "joined", **self.member.to_wire()})

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> Joined:
        return cls(MemberInfo.from_wire(message))


@dataclass(frozen=True, slots=True)
class MembersJoined:
    """server → everyone in the room: the connections that entered within one server tick, in
    the order they entered, each as it was when the frame was built. A receiver skips its own
    entry and takes an entry for a member it knows as that member's current state."""

    members: tuple[MemberInfo, ...]
    #: ``members`` already encoded (:meth:`MemberInfo.encode`): sent instead of ``members``.
    encoded: Sequence[str] | None = field(default=None, compare=False, repr=False)

    def encode(self, *, compact: bool = True) -> str:
        parts = self.encoded if self.encoded is not None and compact else [
            member.encode(compact=compact) for member in self.members]
        return _with_list(encode_json({"type": "joined"}), "members", parts)

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> MembersJoined:
        members = message.get("members")
        _need(isinstance(members, list) and len(members) > 0, "joined 'members' is a non-empty list")
        assert isinstance(members, list)
        return cls(tuple(MemberInfo.from_wire(member) for member in members))


@dataclass(frozen=True, slots=True)
class PresenceBatch:
    """server → everyone in the room: the presence patches of one server tick, one per sender
    (a sender's patches of the tick merged, in order), each stamped with its ``connection_id``.
    A receiver applies them in order and skips its own."""

    updates: tuple[PresenceUpdate, ...]

    def encode(self, *, compact: bool = True) -> str:
        return encode_json({"type": "presence", "updates": [
            [update.connection_id, update.patch] if compact else
            {"connection_id": update.connection_id, "patch": update.patch} for update in self.updates]})

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> PresenceBatch:
        updates = message.get("updates")
        _need(isinstance(updates, list) and len(updates) > 0, "presence 'updates' is a non-empty list")
        assert isinstance(updates, list)
        decoded = []
        for update in updates:
            if isinstance(update, list):
                _need(len(update) == 2, "a presence update is [connection_id, patch]")
                update = {"connection_id": update[0], "patch": update[1]}
            _need(_is_object(update), "a presence update is an object")
            decoded.append(PresenceUpdate.from_wire(update))
            _need(decoded[-1].connection_id is not None, "a presence update needs its 'connection_id'")
        return cls(tuple(decoded))


def _with_list(head: str, key: str, parts: Sequence[str]) -> str:
    """The JSON object ``head`` with ``key`` added: a list of already encoded JSON values."""
    return f'{head[:-1]},"{key}":[{",".join(parts)}]}}'


@dataclass(frozen=True, slots=True)
class Left:
    """server → the others: a connection left the room."""

    connection_id: str

    def encode(self) -> str:
        return encode_json({"type": "left", "connection_id": self.connection_id})

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> Left:
        _need(isinstance(message.get("connection_id"), str), "'left' needs a string 'connection_id'")
        return cls(message["connection_id"])


@dataclass(frozen=True, slots=True)
class MembersLeft:
    """server → everyone in the room: the connections that left within one server tick, in one
    frame (protocol 3; a class closing its laptops, or a server process gone, is a storm too)."""

    connection_ids: tuple[str, ...]

    def encode(self) -> str:
        return encode_json({"type": "left", "connection_ids": list(self.connection_ids)})

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> MembersLeft:
        ids = message.get("connection_ids")
        _need(isinstance(ids, list) and len(ids) > 0 and all(isinstance(c, str) for c in ids),
              "left 'connection_ids' is a non-empty list of strings")
        assert isinstance(ids, list)
        return cls(tuple(ids))


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    """A presence patch (merged into the sender's presence). The server stamps ``connection_id``."""

    patch: dict[str, Any]
    connection_id: str | None = None

    def encode(self) -> str:
        message: dict[str, Any] = {"type": "presence", "patch": self.patch}
        if self.connection_id is not None:
            message["connection_id"] = self.connection_id
        return encode_json(message)

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> PresenceUpdate:
        patch, connection_id = message.get("patch"), message.get("connection_id")
        _need(_is_object(patch), "presence 'patch' must be an object")
        _need(connection_id is None or isinstance(connection_id, str), "presence 'connection_id' is a string")
        assert isinstance(patch, dict)
        return cls(patch, connection_id)


@dataclass(frozen=True, slots=True)
class Event:
    """A broadcast event. The server stamps its sender's ``connection_id`` and ``user``; both
    are None for an event the server itself sends."""

    event: str
    data: Any = None
    connection_id: str | None = None
    user: dict[str, Any] | None = None
    stamped: bool = field(default=False, compare=False)  # relayed by the server: send the stamp

    def encode(self) -> str:
        message: dict[str, Any] = {"type": "event", "event": self.event, "data": self.data}
        if self.stamped:
            message["connection_id"] = self.connection_id
            message["user"] = self.user
        return encode_json(message)

    @classmethod
    def from_wire(cls, message: dict[str, Any], limits: Limits | None = None) -> Event:
        event = message.get("event")
        if not is_valid_event_name(event):
            raise ProtocolError(ErrorCode.INVALID_EVENT, f"invalid event name {event!r}")
        data = message.get("data")
        if limits is not None:
            size = json_size(data)
            if size > limits.max_event_bytes:
                raise ProtocolError(
                    ErrorCode.INVALID_EVENT, f"event data is {size} bytes; the limit is {limits.max_event_bytes}"
                )
        connection_id, user = message.get("connection_id"), message.get("user")
        _need(connection_id is None or isinstance(connection_id, str), "event 'connection_id' is a string")
        _need(user is None or _is_object(user), "event 'user' is an object")
        return cls(event, data, connection_id, user, stamped=True)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """server → one connection: one of its messages was refused (see :class:`ErrorCode`).

    ``id``: the refused :class:`Call`'s id (None for other messages). ``storage``: a storage
    update was refused for the sender's rights (``forbidden``, ``muted``, ``room_locked``): the
    client drops its unsent edits and reloads, as after a permanent storage refusal."""

    code: str
    message: str
    id: int | None = None
    storage: bool = False

    def encode(self) -> str:
        message: dict[str, Any] = {"type": "error", "code": str(self.code), "message": self.message}
        if self.id is not None:
            message["id"] = self.id
        if self.storage:
            message["storage"] = True
        return encode_json(message)

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> ErrorMessage:
        call_id = message.get("id")
        return cls(str(message.get("code", "")), str(message.get("message", "")),
                   call_id if isinstance(call_id, int) and not isinstance(call_id, bool) else None,
                   message.get("storage") is True)


#: A call id is a non-negative integer below 2**53 (exact in JavaScript).
MAX_CALL_ID = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Call:
    """client → server: run ``procedure`` with ``input``; answered to the sender only with a
    :class:`Result` or an :class:`ErrorMessage` carrying the same ``id``."""

    id: int
    procedure: str
    input: Any = None

    def encode(self) -> str:
        return encode_json({"type": "call", "id": self.id, "procedure": self.procedure, "input": self.input})

    @classmethod
    def from_wire(cls, message: dict[str, Any], limits: Limits | None = None) -> Call:
        call_id, procedure = message.get("id"), message.get("procedure")
        _need(isinstance(call_id, int) and not isinstance(call_id, bool) and 0 <= call_id <= MAX_CALL_ID,
              "call 'id' must be a non-negative integer")
        if not is_valid_event_name(procedure):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"invalid procedure name {procedure!r}")
        data = message.get("input")
        if limits is not None and json_size(data) > limits.max_event_bytes:
            raise ProtocolError(ErrorCode.INVALID_INPUT,
                                f"call input is over {limits.max_event_bytes} bytes")
        return cls(call_id, procedure, data)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Result:
    """server → the caller: the call ``id`` was applied; ``data`` is the procedure's answer."""

    id: int
    data: Any = None

    def encode(self) -> str:
        return encode_json({"type": "result", "id": self.id, "data": self.data})

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> Result:
        call_id = message.get("id")
        _need(isinstance(call_id, int) and not isinstance(call_id, bool), "result 'id' is an integer")
        return cls(call_id, message.get("data"))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ClassView:
    """server → one connection: its whole current view of the classroom (``core/classroom.py``
    decides what each role may see; votes, notes and pulse reach teachers' connections only).
    Sent whole rather than as deltas: a view is small, and a connection that missed one (a
    reconnect) needs no history to be right again."""

    view: dict[str, Any]

    def encode(self) -> str:
        return encode_json({"type": "class", "view": self.view})

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> ClassView:
        view = message.get("view")
        _need(_is_object(view), "class 'view' must be an object")
        assert isinstance(view, dict)
        return cls(view)


ClientMessage = PresenceUpdate | Event | Call
ServerMessage = (Welcome | Joined | MembersJoined | Left | MembersLeft | PresenceUpdate | PresenceBatch | Event
                 | ErrorMessage | Result | ClassView)


def decode_client_message(frame: str, limits: Limits) -> ClientMessage:
    """A text frame a joined client sent, or :class:`ProtocolError` with the code to answer."""
    message = decode_object(frame)
    kind = message["type"]
    if kind == "presence":
        return PresenceUpdate(PresenceUpdate.from_wire(message).patch)
    if kind == "event":
        event = Event.from_wire(message, limits)
        return Event(event.event, event.data)  # the sender's own stamp is never trusted
    if kind == "call":
        return Call.from_wire(message, limits)
    if kind == "join":
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "already joined")
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}")


_SERVER_MESSAGES: dict[str, Callable[[dict[str, Any]], ServerMessage]] = {
    "welcome": Welcome.from_wire,
    "joined": lambda message: MembersJoined.from_wire(message) if "members" in message else Joined.from_wire(message),
    "left": lambda message: MembersLeft.from_wire(message) if "connection_ids" in message else Left.from_wire(message),
    "presence": lambda message: (PresenceBatch.from_wire(message) if "updates" in message
                                 else PresenceUpdate.from_wire(message)),
    "event": Event.from_wire,
    "error": ErrorMessage.from_wire,
    "result": Result.from_wire,
    "class": ClassView.from_wire,
}


def decode_server_message(frame: str) -> ServerMessage:
    """A text frame the server sent, or :class:`ProtocolError`."""
    message = decode_object(frame)
    decode = _SERVER_MESSAGES.get(message["type"])
    if decode is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {message['type']!r}")
    return decode(message)
