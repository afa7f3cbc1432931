"""Close codes (the connection ends) and error codes (one message was refused)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


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
    SLOW_CONSUMER = 4007  # the client did not read: its send buffer passed ``max_send_buffer_bytes``
    TOO_MANY_CONNECTIONS = 4008  # this user (or address) has ``max_connections_per_user`` open already
    REMOVED = 4009  # a teacher removed this user from the room: its tokens are refused until readmitted
    ROOM_RESET = 4010  # the room got a new generation (reset, cleared, expired): reconnect and reload


#: Close codes after which retrying with the same credentials cannot succeed: the client reports
#: them through ``on_authorization_fail`` and closes the room.
AUTH_CLOSE_CODES = frozenset(
    {CloseCode.TOKEN_MISSING, CloseCode.TOKEN_INVALID, CloseCode.TOKEN_EXPIRED, CloseCode.TOKEN_WRONG_ROOM,
     CloseCode.REMOVED}
)
#: Close codes after which the room is closed for good (retrying would be refused the same way).
FINAL_CLOSE_CODES = frozenset({CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_ROOM})


class ErrorCode(StrEnum):
    """``error`` message codes: the message was refused, the connection stays open."""

    INVALID_MESSAGE = "invalid_message"  # not JSON, not an object, or fields of the wrong type
    UNKNOWN_TYPE = "unknown_type"  # ``type`` is not a message this side accepts
    PRESENCE_TOO_LARGE = "presence_too_large"  # merged presence above ``max_presence_bytes``
    INVALID_EVENT = "invalid_event"  # bad event name, or data above ``max_event_bytes``
    INVALID_INPUT = "invalid_input"  # a typed procedure's input model refused the data
    PROCEDURE_FAILED = "procedure_failed"  # a procedure handler raised
    # Storage refusals. Permanent: the update can never be stored; the client drops its unsaved
    # edits and reloads the room. Transient: the store failed; the client sends them again.
    STORAGE_REJECTED = "storage_rejected"  # permanent: a CRDT update that cannot be decoded or applied
    STORAGE_TOO_LARGE = "storage_too_large"  # permanent: the update would pass ``max_storage_bytes``
    STORAGE_UNAVAILABLE = "storage_unavailable"  # transient: the store could not commit it now
    RATE_LIMITED = "rate_limited"  # above the message or byte rate: reading is paused
    # Permissions (checked by the server before anything is applied; see core/permissions.py).
    FORBIDDEN = "forbidden"  # the sender's role may not do this (observers write nothing; students
    #                          never clear, never touch another's message; nobody writes protected roots)
    MUTED = "muted"  # a teacher muted this user: read-only until unmuted
    ROOM_LOCKED = "room_locked"  # a teacher locked the room: read-only for students
    UNKNOWN_PROCEDURE = "unknown_procedure"  # a ``call`` names no procedure of this server


#: Storage refusals after which the update can never be stored (the client reloads the room).
PERMANENT_STORAGE_REFUSALS = frozenset({ErrorCode.STORAGE_REJECTED, ErrorCode.STORAGE_TOO_LARGE})
#: Refusals of a member's *right* to write: sent for a storage update with ``"storage": true``
#: (the client then drops its unsent edits and reloads, as after a permanent refusal).
PERMISSION_REFUSALS = frozenset({ErrorCode.FORBIDDEN, ErrorCode.MUTED, ErrorCode.ROOM_LOCKED})
#: Storage refusals after which the client sends its edits again, with backoff.
TRANSIENT_STORAGE_REFUSALS = frozenset({ErrorCode.STORAGE_UNAVAILABLE})
