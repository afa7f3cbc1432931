"""Old spellings, kept only while the adapters move to the typed messages. TO BE REMOVED."""

from __future__ import annotations

from typing import Any

from .codec import decode_object, encode_json
from .codes import ErrorCode
from .limits import Limits
from .messages import Join
from .sync import SyncMessage, SyncStep, decode_sync

Member = dict[str, Any]
encode = encode_json
decode = decode_object


def error_message(code: ErrorCode, text: str) -> dict[str, Any]:
    return {"type": "error", "code": code.value, "message": text}


def parse_join(frame: str | bytes, limits: Limits) -> Join:
    return Join.decode(frame, limits)


def sync_frame(step: Any, payload: bytes) -> bytes:
    return SyncMessage(SyncStep(int(step)), payload).encode()


def read_sync_frame(frame: bytes) -> tuple[int, bytes]:
    message = decode_sync(frame)
    return int(message.step), message.payload
