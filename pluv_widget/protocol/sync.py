"""Binary frames: Yjs sync messages exactly as y-websocket frames them.

``varuint(0) · varuint(step) · varbytes(payload)``; step 0 carries a state vector (sync step 1),
step 1 the diff that answers it (sync step 2), step 2 an incremental update. Built and read with
pycrdt's encoder, so stock Yjs clients frame them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import pycrdt

#: y-websocket's message type for sync messages (1 is awareness, which this protocol does not use).
SYNC_MESSAGE = 0
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

    def encode(self) -> bytes:
        return bytes([SYNC_MESSAGE, self.step]) + pycrdt.write_message(self.payload)


def step1(state_vector: bytes) -> bytes:
    return SyncMessage(SyncStep.STEP1, state_vector).encode()


def step2(diff: bytes) -> bytes:
    return SyncMessage(SyncStep.STEP2, diff).encode()


def update(update: bytes) -> bytes:
    return SyncMessage(SyncStep.UPDATE, update).encode()


def decode_sync(frame: bytes) -> SyncMessage:
    """Read a binary frame; ``ValueError`` says why it is not a sync message."""
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
    try:
        return SyncMessage(SyncStep(step), bytes(payload))
    except ValueError:
        raise ValueError(f"unknown sync step {step}") from None
