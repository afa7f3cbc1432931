"""Binary frames: Yjs sync messages exactly as y-websocket frames them.

``varuint(type) · varuint(step) · varbytes(payload)``; step 0 carries a state vector (sync step 1),
step 1 the diff that answers it (sync step 2), step 2 an incremental update. Built and read with
pycrdt's encoder, so stock Yjs clients frame them the same way.

Two documents per room, told apart by the message type:

* ``0`` (:data:`SYNC_MESSAGE`, y-websocket's sync): the room's storage, which clients write.
* ``8`` (:data:`PROTECTED_MESSAGE`): the room's *protected* document, written only by the server
  (its procedures). A client sends only a step 1 of it (to load it, and to subscribe to its
  updates); the server answers with a step 2 and then relays each protected update as a step 2
  update. A protected step 2 or update from a client is refused with ``forbidden`` and nothing
  of it is applied. The server relays protected frames only to connections that asked (sent a
  protected step 1), so stock y-websocket clients never see a message type they do not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import pycrdt

from .yupdate import InvalidUpdate, read_varuint

#: y-websocket's message type for sync messages (1 is awareness, which this protocol does not use).
SYNC_MESSAGE = 0
#: pluv-widget's message type for the protected document (y-websocket uses 0-3).
PROTECTED_MESSAGE = 8
#: An update that changes nothing (no structs, no deletions).
EMPTY_UPDATE = b"\x00\x00"


class SyncStep(IntEnum):
    STEP1 = int(pycrdt.YSyncMessageType.SYNC_STEP1)  # a state vector: "send me what I lack"
    STEP2 = int(pycrdt.YSyncMessageType.SYNC_STEP2)  # the answer to a step 1: what it lacked
    UPDATE = int(pycrdt.YSyncMessageType.SYNC_UPDATE)  # an incremental update


@dataclass(frozen=True, slots=True)
class SyncMessage:
    step: SyncStep
    payload: bytes
    protected: bool = False  # about the protected document (message type ``PROTECTED_MESSAGE``)

    def encode(self) -> bytes:
        kind = PROTECTED_MESSAGE if self.protected else SYNC_MESSAGE
        return bytes([kind, self.step]) + pycrdt.write_message(self.payload)


def step1(state_vector: bytes, *, protected: bool = False) -> bytes:
    return SyncMessage(SyncStep.STEP1, state_vector, protected).encode()


def step2(diff: bytes, *, protected: bool = False) -> bytes:
    return SyncMessage(SyncStep.STEP2, diff, protected).encode()


def update(update: bytes, *, protected: bool = False) -> bytes:
    return SyncMessage(SyncStep.UPDATE, update, protected).encode()


_STEPS = tuple(SyncStep)


def decode_sync(frame: bytes) -> SyncMessage:
    """Read a binary frame; ``ValueError`` says why it is not a sync message."""
    # Read here rather than with pycrdt.Decoder: every storage frame passes through, and its
    # Python-level decoder costs more than the rest of the frame's checks.
    try:
        kind, pos = read_varuint(frame, 0)
        if kind not in (SYNC_MESSAGE, PROTECTED_MESSAGE):
            raise ValueError(f"unsupported binary message type {kind}")
        step, pos = read_varuint(frame, pos)
        length, pos = read_varuint(frame, pos)
    except InvalidUpdate:
        raise ValueError("truncated sync message") from None
    if length != len(frame) - pos:
        raise ValueError("payload length does not match the frame")
    if step >= len(_STEPS):
        raise ValueError(f"unknown sync step {step}")
    return SyncMessage(_STEPS[step], frame[pos:], kind == PROTECTED_MESSAGE)
