"""The rest of y-websocket's wire, for stock Yjs clients (``/yjs/<room>``): awareness and auth.

A y-websocket frame is ``varuint(message type) · ...``. Type ``0`` (sync) is :mod:`.sync`'s,
unchanged; this module reads and writes the others:

* ``1`` awareness — ``varuint(1) · varbytes(update)``; an update is ``varuint(n)`` entries of
  ``varuint(client id) · varuint(clock) · varstring(JSON state)``, the state ``null`` when the
  client is gone (y-protocols' ``awareness.js``). A receiver keeps an entry only if its clock is
  above the one it holds for that client id, and drops a remote state it has not heard of for
  30 s, so a sender renews its entries (a higher clock) within that time.
* ``2`` auth — ``varuint(2) · varuint(0) · varstring(reason)``: y-protocols' *permission denied*.
  Stock clients log it and stay connected.
* ``3`` query awareness — ``varuint(3)``: "send me every awareness state".

Presence and awareness are one value here: an awareness state is a member's presence with
``user.name`` (what editor bindings show beside a cursor) set by the server from the member's
identity (:func:`with_user_name`), whatever the client sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pycrdt

from .codec import ProtocolError, decode_json, encode_json
from .codes import ErrorCode
from .yupdate import InvalidUpdate, read_varuint

#: y-websocket's message types (``0`` is :data:`.sync.SYNC_MESSAGE`).
SYNC = 0
AWARENESS = 1
AUTH = 2
QUERY_AWARENESS = 3
#: y-protocols' auth message kind: permission denied.
PERMISSION_DENIED = 0
#: y-protocols drops a remote awareness state not renewed for this long (``outdatedTimeout``).
AWARENESS_TIMEOUT_S = 30.0
#: The server renews the awareness states it sends this often (half the timeout, as y-protocols
#: renews a local state). The renewal is also what keeps a y-websocket client, which reconnects
#: after 30 s without any message, connected through idle minutes.
AWARENESS_RENEW_S = 15.0
#: Awareness client ids the server derives for members that are not Yjs clients are below this.
MAX_DERIVED_ID = 2**31


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: dict[str, Any] | None  # None: the client is gone


def message_type(frame: bytes) -> int:
    """A y-websocket frame's message type; ``ValueError`` for an empty or truncated frame."""
    try:
        return read_varuint(frame, 0)[0]
    except InvalidUpdate:
        raise ValueError("not a y-websocket message") from None


def decode_awareness(frame: bytes, max_state_bytes: int) -> list[AwarenessEntry]:
    """The entries of an awareness message (type byte included), or :class:`ProtocolError`:
    ``invalid_message`` for a malformed frame or a state that is not a JSON object or null,
    ``presence_too_large`` for a state longer than ``max_state_bytes`` (not even parsed)."""
    try:
        kind, pos = read_varuint(frame, 0)
        if kind != AWARENESS:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"message type {kind} is not awareness")
        length, pos = read_varuint(frame, pos)
        if length != len(frame) - pos:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "awareness payload length does not match the frame")
        count, pos = read_varuint(frame, pos)
        if count > length:  # every entry takes at least three bytes
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "more awareness entries than bytes")
        entries = []
        for _ in range(count):
            client_id, pos = read_varuint(frame, pos)
            clock, pos = read_varuint(frame, pos)
            size, pos = read_varuint(frame, pos)
            if pos + size > len(frame):
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "truncated awareness state")
            if size > max_state_bytes:
                raise ProtocolError(ErrorCode.PRESENCE_TOO_LARGE,
                                    f"awareness state of {size} bytes; the limit is {max_state_bytes}")
            try:
                text = frame[pos:pos + size].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "awareness state is not UTF-8") from None
            pos += size
            state = decode_json(text) if text else None
            if state is not None and not isinstance(state, dict):
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "an awareness state is a JSON object or null")
            entries.append(AwarenessEntry(client_id, clock, state))
    except InvalidUpdate as error:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"malformed awareness message: {error}") from None
    if pos != len(frame):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "bytes after the awareness entries")
    return entries


def encode_awareness(entries: Iterable[AwarenessEntry]) -> bytes:
    """An awareness message (type byte included) carrying ``entries`` (none: a valid, empty one)."""
    items = list(entries)
    parts = [pycrdt.write_var_uint(len(items))]
    for entry in items:
        text = "null" if entry.state is None else encode_json(entry.state)
        parts += [pycrdt.write_var_uint(entry.client_id), pycrdt.write_var_uint(entry.clock),
                  pycrdt.write_message(text.encode())]
    return bytes(pycrdt.create_awareness_message(b"".join(parts)))


def permission_denied(reason: str) -> bytes:
    """y-protocols' auth message *permission denied*."""
    return bytes([AUTH, PERMISSION_DENIED]) + pycrdt.write_message(reason.encode())


def derived_client_id(connection_id: str) -> int:
    """The stable awareness client id of a member that announced none (a pluv client): the same
    on every server process, below :data:`MAX_DERIVED_ID`."""
    digest = hashlib.blake2b(connection_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % MAX_DERIVED_ID


def with_user_name(state: dict[str, Any], name: str) -> dict[str, Any]:
    """``state`` with ``user.name`` set to ``name`` (``user``'s other fields, such as ``color``,
    and the state's other fields kept): an awareness state from a presence, a presence from an
    awareness state."""
    user = state.get("user")
    return {**state, "user": {**(user if isinstance(user, dict) else {}), "name": name}}
