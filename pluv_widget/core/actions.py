"""What the server room core asks its adapter to do: the values :class:`ServerRoom` returns.

Every core method returns a list of actions to carry out in order. The core never does I/O;
the adapter (``server/live_room.py``) sends, persists, runs procedures and publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .envelopes import Envelope


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` to the listed connections, or to every local member but ``exclude``."""

    frame: str | bytes
    to: tuple[str, ...] | None = None
    exclude: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """A validated storage update: persist it, then hand it to ``ServerRoom.commit``.

    ``connection_id`` is empty for an update the server itself makes."""

    update: bytes
    connection_id: str


@dataclass(frozen=True, slots=True)
class Invoke:
    """An event with a registered procedure: run it, then ``ServerRoom.emit`` its output."""

    connection_id: str
    event: str
    data: Any


@dataclass(frozen=True, slots=True)
class Mirror:
    """An input this process accepted: publish it so the other processes apply it too."""

    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Resync:
    """Converge with the shared store (see ``ResyncRequested``); ``reseed``: store what this
    process holds first."""

    reseed: bool


Action = Send | Commit | Invoke | Mirror | Resync
