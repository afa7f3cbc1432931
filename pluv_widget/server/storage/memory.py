"""Where room storage lives between processes and restarts: the interface and the in-memory store.

Every implementation keeps, per room, a list of Yjs updates whose merge is the document:
normally one snapshot followed by a tail of recent updates. The server never lets anyone see an
update before :meth:`Persistence.append` returned, so whatever a store has acknowledged is what
survives a crash.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class StorageUnavailableError(RuntimeError):
    """A shared store cannot be reached now: the room cannot be loaded or claimed here yet.

    The server closes such a connection with ``CloseCode.TRY_AGAIN_LATER`` and the client
    retries; rooms already open keep serving (see ``docs/scaling.md``).
    """


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

    def status(self) -> str | None:
        """The shared backend's state for ``/health``: None for a store of this process alone,
        else ``ok``, ``connecting``, ``unavailable`` or ``recovering``. Optional: callers fall back to None."""
        ...

    async def close(self) -> None: ...


class MemoryPersistence:
    """Keeps storage in this process only: for tests and ``--memory``; lost on exit."""

    def __init__(self) -> None:
        self._rooms: dict[str, list[bytes]] = {}
        self._lock = asyncio.Lock()

    async def load(self, room: str) -> list[bytes]:
        return list(self._rooms.get(room, ()))

    async def append(self, room: str, update: bytes) -> None:
        self._rooms.setdefault(room, []).append(update)

    async def claim_initial(self, room: str, update: bytes) -> bool:
        async with self._lock:
            if self._rooms.get(room):
                return False
            self._rooms[room] = [update]
            return True

    async def compact(self, room: str, snapshot: bytes, replaces: int) -> None:
        updates = self._rooms.get(room, [])
        self._rooms[room] = [snapshot, *updates[replaces:]]

    def status(self) -> str | None:
        return None

    async def close(self) -> None:
        pass
