"""Text frames as JSON: the one place a text frame becomes a value and a value a frame.

Decoding refuses what JSON allows but a room must not carry: ``NaN``, ``Infinity`` and numbers
beyond a double's range (not JSON to any other parser), lone UTF-16 surrogates (``"\\ud800"``:
they cannot be encoded again, so relaying them would fail), and nesting deeper than
:data:`MAX_JSON_DEPTH` (deep values exhaust the stack of whoever encodes them next).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from .codes import ErrorCode

#: How deeply objects and arrays may nest in a message (the message itself is depth 1).
MAX_JSON_DEPTH = 32

# A \uD800-\uDFFF escape: the only way a surrogate reaches a str, since websockets decodes
# text frames as strict UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class ProtocolError(ValueError):
    """A frame that is not a valid message; ``code`` is the :class:`ErrorCode` to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode_json(value: Any) -> str:
    """Compact JSON text. A fan-out encodes once, never per recipient."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_size(value: Any) -> int:
    """Size in bytes of ``value`` as compact UTF-8 JSON: what the limits measure."""
    return len(encode_json(value).encode())


def _refuse(problem: str) -> NoReturn:
    raise ProtocolError(ErrorCode.INVALID_MESSAGE, problem)


def _refuse_constant(name: str) -> NoReturn:
    _refuse(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity
        _refuse(f"{text[:20]} is out of range for a JSON number")
    return value


def _check_nesting(value: Any, surrogates: bool) -> None:
    """Walk ``value`` without recursion: depth, and (when escapes suggest it) lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
            if surrogates:
                for key in item:
                    if _LONE_SURROGATE.search(key):
                        _refuse("a string holds a lone UTF-16 surrogate")
        elif isinstance(item, list):
            children = item
        else:
            if surrogates and isinstance(item, str) and _LONE_SURROGATE.search(item):
                _refuse("a string holds a lone UTF-16 surrogate")
            continue
        if depth > MAX_JSON_DEPTH:
            _refuse(f"the message nests deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def decode_json(text: str) -> Any:
    """Parse untrusted JSON text with the protocol's checks (no NaN/Infinity/1e400, no lone
    surrogates, at most :data:`MAX_JSON_DEPTH` deep), or raise :class:`ProtocolError`."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        _refuse(f"the message nests deeper than {MAX_JSON_DEPTH} levels")
    except ValueError as error:
        if isinstance(error, ProtocolError):
            raise
        _refuse(f"frame is not JSON: {error}")
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    if surrogates or text.count("{") + text.count("[") > MAX_JSON_DEPTH:
        _check_nesting(value, surrogates)
    return value


def decode_object(frame: str) -> dict[str, Any]:
    """Parse a text frame into a JSON object with a string ``type``, or raise :class:`ProtocolError`."""
    message = decode_json(frame)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        _refuse("a message is a JSON object with a string 'type'")
    return message
