"""Every room, across server processes: who is where, how big, when last active.

A process knows only the rooms it has open. So each process writes, into the shared store's
key-value scope :data:`SCOPE`, one entry per room it holds — keyed by room *and* process, so two
processes never write the same key — and the listing merges them: occupants are summed over the
entries still being refreshed (a process that died stops refreshing; its occupants stop counting
after :data:`STALE_AFTER_S`), the size and the last activity come from the latest entry. Entries are
written when something changed, at most every :data:`WRITE_INTERVAL_S`, and refreshed every
:data:`REFRESH_S`; a room that closes here writes its last entry with no occupants, so its size
and last activity stay listed after every process let it go (and after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .storage.base import Persistence

if TYPE_CHECKING:
    from .live_room import LiveRoom

log = logging.getLogger(__name__)

SCOPE = "directory"
WRITE_INTERVAL_S = 1.0
REFRESH_S = 20.0
STALE_AFTER_S = 3 * REFRESH_S
_SEPARATOR = "\t"  # room names never hold a tab


class RoomDirectory:
    """One process's share of the directory, and the merged listing."""

    def __init__(self, persistence: Persistence, node: str, rooms: Callable[[], Mapping[str, LiveRoom]]) -> None:
        self.persistence = persistence
        self.node = node
        self._rooms = rooms
        self._written: dict[str, tuple[int, int, float]] = {}  # room -> (occupants, bytes, written at)
        self._activity: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # closing: a store that is gone loses only the last figures
            await self.write()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(WRITE_INTERVAL_S)
            try:
                await self.write()
            except Exception as error:  # the store is away: the listing lags, rooms are untouched
                log.warning("room directory: could not write (%s)", error)

    async def write(self) -> None:
        """Write this process's entries that changed (or are due for a refresh)."""
        now = time.time()
        open_rooms = dict(self._rooms())
        for name in set(self._written) - set(open_rooms):  # closed here: occupants 0, figures kept
            occupants, size, _ = self._written.pop(name)
            await self._put(name, 0, size, now)
        for name, room in open_rooms.items():
            occupants = sum(1 for member in room.core.members if member.local)
            size = room.core.storage_bytes
            last = self._written.get(name)
            if last is None or last[:2] != (occupants, size):
                self._activity[name] = now
            elif now - last[2] < REFRESH_S:
                continue
            await self._put(name, occupants, size, now)
            self._written[name] = (occupants, size, now)

    async def _put(self, room: str, occupants: int, size: int, now: float) -> None:
        entry = {"room": room, "node": self.node, "occupants": occupants, "storage_bytes": size,
                 "last_activity": self._activity.get(room, now), "at": now}
        await self.persistence.put_value(SCOPE, f"{room}{_SEPARATOR}{self.node}", entry)

    async def rooms(self) -> list[dict[str, Any]]:
        """Every room with storage or occupants: name, occupants, storage bytes, last activity."""
        await self.write()
        now = time.time()
        merged: dict[str, dict[str, Any]] = {}
        for entry in (await self.persistence.list_values(SCOPE)).values():
            if not isinstance(entry, dict) or not isinstance(entry.get("room"), str):
                continue
            row = merged.setdefault(entry["room"], {"name": entry["room"], "occupants": 0, "storage_bytes": 0,
                                                    "last_activity": 0.0, "_at": 0.0})
            if now - float(entry.get("at", 0)) < STALE_AFTER_S:
                row["occupants"] += int(entry.get("occupants", 0))
            if float(entry.get("at", 0)) >= row["_at"]:
                row["storage_bytes"], row["_at"] = int(entry.get("storage_bytes", 0)), float(entry.get("at", 0))
            row["last_activity"] = max(row["last_activity"], float(entry.get("last_activity", 0)))
        listed = [row for row in merged.values() if row["occupants"] or row["storage_bytes"]]
        for row in listed:
            del row["_at"]
        return sorted(listed, key=lambda row: str(row["name"]))

    async def forget(self, room: str) -> None:
        """The room was deleted: drop every process's entry of it."""
        self._written.pop(room, None)
        for key in await self.persistence.list_values(SCOPE):
            if key.split(_SEPARATOR, 1)[0] == room:
                await self.persistence.delete_value(SCOPE, key)
