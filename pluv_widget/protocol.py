"""The wire protocol shared by the server and the client. Nothing else defines a message.

A connection is a WebSocket to ``<base>/<room>?token=<token>`` (the token only when the
server requires auth). Two kinds of frame travel on it:

* **Text frames** carry one JSON object with a ``"type"`` field: the control, presence and
  event messages below.
* **Binary frames** carry Yjs sync messages exactly as y-websocket frames them
  (``varuint(0) · varuint(step) · varbytes(payload)``; step 0 = state vector, 1 = diff,
  2 = incremental update), built with pycrdt's ``create_sync_message`` family, so the
  same rooms can later serve stock Yjs clients.

The client's first frame must be ``join``; the server answers ``welcome`` (with everyone
already in the room) and then syncs storage. Errors that do not end the connection arrive
as ``error`` messages; those that do arrive as a close code listed in :class:`CloseCode`.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Literal, NotRequired, TypedDict

import pycrdt

PROTOCOL_VERSION = 1
SERVER_NAME = "pluv-widget"
DEFAULT_PORT = 1999

ROOM_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
EVENT_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")


class CloseCode(IntEnum):
    """Close codes the server uses; the close reason says more in words."""

    GOING_AWAY = 1001  # the client left
    MESSAGE_TOO_BIG = 1009  # a frame above ``Limits.max_frame_bytes``
    SERVICE_RESTART = 1012  # the server is shutting down: reconnect
    TRY_AGAIN_LATER = 1013  # the room's shared store (Redis) is unreachable: reconnect later
    PROTOCOL_ERROR = 4000  # first frame was not a valid ``join``, or wrong protocol version
    TOKEN_MISSING = 4001  # the server requires auth and no token was given
    TOKEN_INVALID = 4002  # the token is malformed or its signature is wrong
    TOKEN_EXPIRED = 4003  # the token's ``exp`` has passed
    TOKEN_WRONG_ROOM = 4004  # the token was minted for another room
    INVALID_ROOM = 4005  # the room name in the URL is not a valid room name
    JOIN_TIMEOUT = 4006  # no ``join`` within ``Limits.join_timeout_s``


#: Close codes after which retrying with the same credentials cannot succeed.
AUTH_CLOSE_CODES = frozenset(
    {CloseCode.TOKEN_MISSING, CloseCode.TOKEN_INVALID, CloseCode.TOKEN_EXPIRED, CloseCode.TOKEN_WRONG_ROOM}
)


class ErrorCode(StrEnum):
    """``error`` message codes: the message was refused, the connection stays open."""

    INVALID_MESSAGE = "invalid_message"  # not JSON, not an object, or fields of the wrong type
    UNKNOWN_TYPE = "unknown_type"  # ``type`` is not a message this side accepts
    PRESENCE_TOO_LARGE = "presence_too_large"  # merged presence above ``max_presence_bytes``
    INVALID_EVENT = "invalid_event"  # bad event name, or data above ``max_event_bytes``
    INVALID_INPUT = "invalid_input"  # a typed procedure's input model refused the data
    PROCEDURE_FAILED = "procedure_failed"  # a procedure handler raised
    STORAGE_REJECTED = "storage_rejected"  # a CRDT update pycrdt cannot decode or apply
    STORAGE_TOO_LARGE = "storage_too_large"  # the update would pass ``max_storage_bytes``
    RATE_LIMITED = "rate_limited"  # above ``max_messages_per_s``: reading is paused


class Limits:
    """Server limits, with their documented defaults. Pass overrides to ``create_io``."""

    def __init__(
        self,
        *,
        max_frame_bytes: int = 16 * 1024 * 1024,
        max_presence_bytes: int = 512,
        max_event_bytes: int = 64 * 1024,
        max_storage_bytes: int = 64 * 1024 * 1024,
        max_messages_per_s: float = 1000.0,
        message_burst: int = 4000,
        join_timeout_s: float = 10.0,
        ping_interval_s: float = 20.0,
        ping_timeout_s: float = 40.0,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_presence_bytes = max_presence_bytes
        self.max_event_bytes = max_event_bytes
        self.max_storage_bytes = max_storage_bytes
        self.max_messages_per_s = max_messages_per_s
        self.message_burst = message_burst
        self.join_timeout_s = join_timeout_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s


# -- message shapes ------------------------------------------------------------------------


class User(TypedDict):
    """The server-stamped identity: ``id`` plus whatever the token's user model carries."""

    id: str


class Member(TypedDict):
    connection_id: str
    user: dict[str, Any]
    presence: dict[str, Any]


class JoinMessage(TypedDict):
    type: Literal["join"]
    protocol: int
    presence: dict[str, Any]
    metadata: NotRequired[Any]
    initial_storage: NotRequired[str | None]  # base64 of a Yjs update


class PresenceMessage(TypedDict):
    type: Literal["presence"]
    patch: dict[str, Any]
    connection_id: NotRequired[str]  # stamped by the server


class EventMessage(TypedDict):
    type: Literal["event"]
    event: str
    data: Any
    connection_id: NotRequired[str | None]  # stamped by the server; None from the server itself
    user: NotRequired[dict[str, Any] | None]


class WelcomeMessage(TypedDict):
    type: Literal["welcome"]
    protocol: int
    room: str
    connection_id: str
    user: dict[str, Any]
    presence: dict[str, Any]
    others: list[Member]


class JoinedMessage(Member):
    type: Literal["joined"]


class LeftMessage(TypedDict):
    type: Literal["left"]
    connection_id: str


class ErrorMessage(TypedDict):
    type: Literal["error"]
    code: str
    message: str


# -- codec ---------------------------------------------------------------------------------


class ProtocolError(ValueError):
    """A frame that is not a valid message; ``code`` is the :class:`ErrorCode` to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode(message: dict[str, Any] | Any) -> str:
    """One compact JSON text frame. Encoded once per fan-out, never per recipient."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def decode(frame: str) -> dict[str, Any]:
    """Parse a text frame into a message with a string ``type``, or raise :class:`ProtocolError`."""
    try:
        message = json.loads(frame)
    except ValueError as error:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"frame is not JSON: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message is a JSON object with a string 'type'")
    return message


def error_message(code: ErrorCode, text: str) -> ErrorMessage:
    return {"type": "error", "code": code.value, "message": text}


#: Paths the server answers over HTTP, so no room can have these names.
RESERVED_ROOM_NAMES = frozenset({"health", "token"})


@dataclass(frozen=True)
class Join:
    """A validated ``join`` message."""

    presence: dict[str, Any]
    metadata: Any
    initial_storage: bytes | None


def parse_join(frame: str | bytes, limits: Limits) -> Join:
    """Validate a connection's first frame; :class:`ProtocolError` says what is wrong with it."""
    if not isinstance(frame, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "the first message must be a text 'join' message")
    message = decode(frame)
    presence = message.get("presence", {})
    initial = message.get("initial_storage")
    if message["type"] != "join":
        problem = "the first message must be a text 'join' message"
    elif message.get("protocol") != PROTOCOL_VERSION:
        problem = f"unsupported protocol {message.get('protocol')!r}; this server speaks {PROTOCOL_VERSION}"
    elif not isinstance(presence, dict):
        problem = "join 'presence' must be an object"
    elif json_size(presence) > limits.max_presence_bytes:
        problem = f"initial presence is over {limits.max_presence_bytes} bytes"
    elif initial is not None and not isinstance(initial, str):
        problem = "join 'initial_storage' must be base64 text"
    else:
        try:
            storage = base64.b64decode(initial, validate=True) if initial else None
            if storage is not None:
                pycrdt.get_state(storage)  # decodable, or refused now
        except Exception as error:
            problem = f"invalid initial_storage: {error}"
        else:
            return Join(presence, message.get("metadata"), storage)
    raise ProtocolError(ErrorCode.INVALID_MESSAGE, problem)


# -- binary frames: Yjs sync messages as y-websocket frames them ------------------------------

SYNC_MESSAGE = 0


def sync_frame(step: pycrdt.YSyncMessageType, payload: bytes) -> bytes:
    """A binary frame carrying one sync message (step 1 state vector, step 2 diff, or update)."""
    return bytes([SYNC_MESSAGE, step]) + pycrdt.write_message(payload)


def read_sync_frame(frame: bytes) -> tuple[int, bytes]:
    """Split a binary frame into (sync step, payload); ``ValueError`` if it is not one."""
    decoder = pycrdt.Decoder(frame)
    try:
        kind = decoder.read_var_uint()
        if kind != SYNC_MESSAGE:
            raise ValueError(f"unsupported binary message type {kind}")
        step = decoder.read_var_uint()
        payload = decoder.read_message()
    except (IndexError, RuntimeError):
        raise ValueError("truncated sync message") from None
    if payload is None or decoder.length != 0:
        raise ValueError("payload length does not match the frame")
    return step, bytes(payload)


def is_valid_room_name(name: str) -> bool:
    return bool(ROOM_NAME_PATTERN.match(name)) and name not in RESERVED_ROOM_NAMES


def check_room_name(name: str) -> str:
    """Return ``name`` or raise ``ValueError`` saying what a room name may be."""
    if not isinstance(name, str) or not is_valid_room_name(name):
        raise ValueError(
            f"invalid room name {name!r}: 1-128 characters of letters, digits, '_', '-', '.', "
            "starting with a letter or digit (not 'health' or 'token')"
        )
    return name


def json_size(value: Any) -> int:
    """Size in bytes of ``value`` as compact UTF-8 JSON: what the limits measure."""
    return len(encode(value).encode())
