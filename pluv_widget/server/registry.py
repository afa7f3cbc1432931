"""The rooms open on this process: opened on first use, closed when nobody holds them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .config import ServerConfig
from .live_room import LiveRoom


class RoomRegistry:
    """Live rooms by name. A connection or a server call :meth:`acquire` s a room and
    :meth:`release` s it; the last release closes it (after its pending commits)."""

    def __init__(self, config: ServerConfig, node: str) -> None:
        self.config = config
        self.node = node
        self.rooms: dict[str, LiveRoom] = {}
        self._opening: dict[str, asyncio.Task[LiveRoom]] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}
        #: Stored updates set aside as unusable by rooms this process opened (``/health``).
        self.quarantined = 0

    def __len__(self) -> int:
        return len(self.rooms)

    def names(self) -> list[str]:
        return sorted(self.rooms)

    async def acquire(self, name: str) -> LiveRoom:
        """The live room ``name`` (loaded if no one is in it here), held until :meth:`release`."""
        while True:
            room = self.rooms.get(name)
            if room is None:
                if name not in self._opening:
                    self._opening[name] = asyncio.create_task(self._open(name))
                room = await asyncio.shield(self._opening[name])
                if self.rooms.get(name) is not room:  # released and closed while we waited
                    continue
            room.holders += 1
            return room

    async def _open(self, name: str) -> LiveRoom:
        try:
            if name in self._closing:  # let the last incarnation finish its commits first
                await self._closing[name]
            room = LiveRoom(name, self.config, self.node)
            try:
                await room.open()
            finally:
                self.quarantined += room.quarantined
            self.rooms[name] = room
            return room
        finally:
            del self._opening[name]

    def release(self, room: LiveRoom) -> None:
        room.holders -= 1
        if room.holders == 0 and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            task = asyncio.create_task(room.close())
            self._closing[room.name] = task
            task.add_done_callback(lambda _: self._closing.pop(room.name, None))

    @asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[LiveRoom]:
        """``async with registry.held(name) as room``: acquire, then release whatever happens."""
        room = await self.acquire(name)
        try:
            yield room
        finally:
            self.release(room)

    async def drain(self) -> None:
        """Wait for closing rooms and for every open room's pending commits."""
        await asyncio.gather(*self._closing.values(), return_exceptions=True)
        for room in list(self.rooms.values()):
            await room.flushed()
