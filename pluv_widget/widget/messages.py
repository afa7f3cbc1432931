"""A message: its shape in the room's ``messages`` array and as the browser shows it."""

from __future__ import annotations

import time
import uuid
from typing import Any

from .identity import color_for

#: The storage root that holds the messages (a ``pycrdt.Array`` of maps).
MESSAGES = "messages"
MAX_MESSAGE_CHARS = 2000


def new_message(presence: dict[str, Any], text: str) -> dict[str, Any]:
    """A message by the person with ``presence``: ``{id, author, color, text, time}``.

    Raises ``ValueError`` for an empty or too long text.
    """
    text = str(text).strip()
    if not text:
        raise ValueError("a message needs some text")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValueError(f"a message is at most {MAX_MESSAGE_CHARS} characters")
    return {
        "id": uuid.uuid4().hex[:16],
        "author": presence.get("name", ""),
        "color": presence.get("color", ""),
        "text": text,
        "time": int(time.time() * 1000),
    }


def shown(index: int, item: Any) -> dict[str, Any]:
    """A stored message as the browser shows it, whatever another client wrote."""
    if not isinstance(item, dict):
        item = {"text": str(item)}
    author = str(item.get("author") or "?")
    return {
        "id": str(item.get("id") or f"item-{index}"),
        "author": author,
        "color": str(item.get("color") or color_for(author)),
        "text": str(item.get("text") or ""),
        "time": int(item.get("time") or 0),
    }
