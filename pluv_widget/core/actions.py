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
class Batch:
    """Queued updates to persist together (``ServerRoom.take_batch``): ``update`` is all of
    them as one update, the one to persist and then hand to ``ServerRoom.commit_batch``."""

    commits: tuple[Commit, ...]
    update: bytes
    #: What the committed document applies: ``(update,)`` when ``update`` is a diff of the
    #: proof document, else the original updates one by one (see ``ServerRoom.commit``).
    parts: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Invoke:
    """An event or a ``call`` of a procedure the sender may run (permissions were checked): run
    it, then ``ServerRoom.emit`` its output. ``call_id``: answer the sender with a ``result`` or
    an ``error`` of this id (None: a fire-and-forget event)."""

    connection_id: str
    event: str
    data: Any
    call_id: int | None = None


@dataclass(frozen=True, slots=True)
class ProtectedEdit:
    """A teacher's update of the protected document (allowed by ``teacher_only_roots``): prove,
    persist and commit it like the server's own protected edits."""

    connection_id: str
    update: bytes


@dataclass(frozen=True, slots=True)
class Mirror:
    """An input this process accepted: publish it so the other processes apply it too."""

    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Resync:
    """Converge with the shared store (see ``ResyncRequested``); ``reseed``: store what this
    process holds first."""

    reseed: bool


Action = Send | Commit | Invoke | ProtectedEdit | Mirror | Resync
