"""Where room storage lives between processes and restarts: the interface every store implements.

Every implementation keeps, per room, a list of Yjs updates whose merge is the document:
normally one snapshot followed by a tail of recent updates. The server never lets anyone see an
update before :meth:`Persistence.append` returned, so whatever a store has acknowledged is what
survives a crash.

*Quarantine.* An update that a store holds but that no longer applies (it panics pycrdt, or a
later check refuses it) would make its room impossible to load. Loading a room sets such updates
aside with :meth:`Persistence.quarantine` — kept, with the room, the time and the reason, for an
operator to look at — and the room opens with the rest (its history is then rewritten as one
snapshot of the good state).

*Server-held state.* Besides rooms, a store keeps what the server itself decides and must not
forget on a restart nor disagree about across processes: name claims, removed and muted users,
locks, generations, the moderation log. Two shapes, each named by a ``scope`` string (any text,
for example ``"claims:algebra-"``): a map of JSON values (:meth:`Persistence.get_value`,
:meth:`~Persistence.put_value`, :meth:`~Persistence.delete_value`,
:meth:`~Persistence.list_values`; ``put_value(..., if_absent=True)`` is atomic across processes on
a shared store, so exactly one of racing writers wins) and an append-only log of JSON objects
(:meth:`~Persistence.append_log`, :meth:`~Persistence.read_log`). Values are whatever
``json.dumps`` takes (dicts, lists, strings, numbers, booleans, None — a stored None reads back as
None, like an absent key); they are stored as JSON, so tuples come back as lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ...errors import StorageUnavailableError as StorageUnavailableError


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A stored update set aside because it no longer applies."""

    room: str
    at: float  # seconds since the epoch
    reason: str
    update: bytes


class Persistence(Protocol):
    """The storage interface, the shape of pluv's ``AbstractPersistence``."""

    async def load(self, room: str) -> list[bytes]:
        """All updates of ``room`` (snapshot first), or an empty list for a new room."""
        ...

    async def append(self, room: str, update: bytes) -> None:
        """Durably add one update. Returns once it is committed; calls may be group-committed."""
        ...

    async def claim_initial(self, room: str, update: bytes) -> bool:
        """Atomically store ``update`` as the room's first state, if the room has none yet.

        Returns True for exactly one caller per room, however many race (across processes for
        a shared store); everyone else gets False and must :meth:`load` the winner's storage.
        """
        ...

    async def compact(self, room: str, snapshot: bytes, replaces: int) -> None:
        """Replace the room's first ``replaces`` stored updates by ``snapshot`` (their merge).

        Updates appended after those (by another process sharing the store) are kept.
        """
        ...

    async def quarantine(self, room: str, update: bytes, reason: str) -> None:
        """Keep ``update`` aside (with the time and ``reason``): the room loads without it.

        The caller then compacts the room, which removes it from the room's history."""
        ...

    async def quarantined(self, room: str) -> list[Quarantined]:
        """What :meth:`quarantine` kept for ``room``, oldest first."""
        ...

    # -- server-held state ----------------------------------------------------------------------

    async def get_value(self, scope: str, key: str) -> Any | None:
        """The JSON value stored under ``key`` in ``scope``, or None."""
        ...

    async def put_value(self, scope: str, key: str, value: Any, *, if_absent: bool = False) -> bool:
        """Store ``value`` (JSON) under ``key`` in ``scope``; True once stored.

        With ``if_absent``, store it only if ``key`` holds nothing yet and return False (storing
        nothing) when it does: atomic, across processes for a shared store."""
        ...

    async def delete_value(self, scope: str, key: str) -> bool:
        """Remove ``key`` from ``scope``; True if it was there."""
        ...

    async def list_values(self, scope: str) -> dict[str, Any]:
        """Every key of ``scope`` with its value (empty for an unknown scope)."""
        ...

    async def append_log(self, scope: str, entry: dict[str, Any]) -> None:
        """Durably add ``entry`` (a JSON object) at the end of the log ``scope``."""
        ...

    async def read_log(self, scope: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The log ``scope``, oldest first; with ``limit``, only its last ``limit`` entries."""
        ...

    def status(self) -> str | None:
        """The shared backend's state for ``/health``: None for a store of this process alone,
        else ``ok``, ``connecting``, ``unavailable`` or ``recovering``. Optional: callers fall back to None."""
        ...

    async def close(self) -> None: ...
