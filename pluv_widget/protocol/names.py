"""What a room name and an event name may be."""

from __future__ import annotations

import re
from typing import Any

from .routes import RESERVED_ROOM_NAMES

ROOM_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
EVENT_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")


def is_valid_room_name(name: Any) -> bool:
    return isinstance(name, str) and bool(ROOM_NAME_PATTERN.match(name)) and name not in RESERVED_ROOM_NAMES


def check_room_name(name: Any) -> str:
    """Return ``name`` or raise ``ValueError`` saying what a room name may be."""
    if not is_valid_room_name(name):
        reserved = ", ".join(repr(reserved) for reserved in sorted(RESERVED_ROOM_NAMES))
        raise ValueError(
            f"invalid room name {name!r}: 1-128 characters of letters, digits, '_', '-', '.', "
            f"starting with a letter or digit (not {reserved})"
        )
    return str(name)


def is_valid_event_name(name: Any) -> bool:
    return isinstance(name, str) and bool(EVENT_NAME_PATTERN.match(name))


def check_event_name(name: Any) -> str:
    """Return ``name`` or raise ``ValueError``."""
    if not is_valid_event_name(name):
        raise ValueError(
            f"invalid event name {name!r}: up to 64 letters, digits, '_', '.', ':', '-', starting with a letter or '_'"
        )
    return str(name)
