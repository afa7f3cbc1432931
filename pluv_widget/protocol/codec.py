"""Text frames as JSON: the one place a text frame becomes a value and a value a frame."""

from __future__ import annotations

import json
from typing import Any

from .codes import ErrorCode


class ProtocolError(ValueError):
    """A frame that is not a valid message; ``code`` is the :class:`ErrorCode` to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode_json(value: Any) -> str:
    """Compact JSON text. A fan-out encodes once, never per recipient."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_size(value: Any) -> int:
    """Size in bytes of ``value`` as compact UTF-8 JSON: what the limits measure."""
    return len(encode_json(value).encode())


def decode_object(frame: str) -> dict[str, Any]:
    """Parse a text frame into a JSON object with a string ``type``, or raise :class:`ProtocolError`."""
    try:
        message = json.loads(frame)
    except ValueError as error:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"frame is not JSON: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message is a JSON object with a string 'type'")
    return message
