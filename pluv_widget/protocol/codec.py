"""Text frames as JSON: the one place a text frame becomes a value and a value a frame.

Decoding (pydantic-core's ``from_json``: 1.4–3× faster than ``json.loads``, 4–6× faster than
``json.loads`` with the hooks these checks once needed — every frame a room relays passes here,
and a client in a join storm decodes a thousand members per frame) refuses what JSON allows but
a room must not carry: ``NaN``, ``Infinity`` and numbers beyond a double's range (not JSON to
any other parser), lone UTF-16 surrogates (``"\\ud800"``: they cannot be encoded again, so
relaying them would fail), and nesting deeper than :data:`MAX_JSON_DEPTH` (deep values exhaust
the stack of whoever encodes them next).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from pydantic_core import from_json

from .codes import ErrorCode

#: How deeply objects and arrays may nest in a message (the message itself is depth 1).
MAX_JSON_DEPTH = 32

# A number that may overflow a double to infinity: a three-digit exponent, or 309+ digits.
# ``from_json`` refuses NaN and Infinity as words but, like every parser, reads 1e400 as inf.
_HUGE_NUMBER = re.compile(r"[eE][+]?[0-9]{3}|[0-9]{309}")


class ProtocolError(ValueError):
    """A frame that is not a valid message; ``code`` is the :class:`ErrorCode` to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# One encoder for every frame: ``json.dumps`` with options builds a new one per call (~40 % of
# the time a small frame takes to encode).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_json(value: Any) -> str:
    """Compact JSON text. A fan-out encodes once, never per recipient."""
    return _ENCODER.encode(value)


def json_size(value: Any) -> int:
    """Size in bytes of ``value`` as compact UTF-8 JSON: what the limits measure."""
    return len(encode_json(value).encode())


def _refuse(problem: str) -> NoReturn:
    raise ProtocolError(ErrorCode.INVALID_MESSAGE, problem)


def _check_depth_and_numbers(value: Any) -> None:
    """Walk ``value`` without recursion: nesting depth, and numbers that overflowed."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, float) and not math.isfinite(item):
                _refuse("a number is out of range for a JSON number")
            continue
        if depth > MAX_JSON_DEPTH:
            _refuse(f"the message nests deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def decode_json(text: str) -> Any:
    """Parse untrusted JSON text with the protocol's checks (no NaN/Infinity/1e400, no lone
    surrogates, at most :data:`MAX_JSON_DEPTH` deep), or raise :class:`ProtocolError`."""
    try:
        value = from_json(text, allow_inf_nan=False)  # refuses lone surrogates itself
    except (ValueError, TypeError) as error:  # TypeError: a str holding a raw lone surrogate
        if "recursion limit" in str(error):
            _refuse(f"the message nests deeper than {MAX_JSON_DEPTH} levels")
        _refuse(f"frame is not JSON: {error}")
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH or _HUGE_NUMBER.search(text):
        _check_depth_and_numbers(value)
    return value


def decode_object(frame: str) -> dict[str, Any]:
    """Parse a text frame into a JSON object with a string ``type``, or raise :class:`ProtocolError`."""
    message = decode_json(frame)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        _refuse("a message is a JSON object with a string 'type'")
    return message
