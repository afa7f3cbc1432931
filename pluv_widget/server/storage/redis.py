"""Room storage in Redis, shared by every server process on it.

Each room is one Redis list of Yjs updates (snapshot first, then the tail). Appends from all
rooms that arrive while a write is in flight go to Redis together in one pipeline (group
commit; order within a room is kept), and an append returns only once Redis acknowledged it,
so the server's rule holds: nothing reaches a reader before Redis has it.

*Initial storage* is claimed with a Lua script, atomically across processes: exactly one
process ever writes a room's first state. *Compaction* merges the room's stored updates (and
the caller's snapshot) into one snapshot and swaps it in with a version-checked script that
keeps every update appended meanwhile by any process, so no process ever drops an update it
has not seen.

*Outages.* When Redis cannot be reached, appends are kept in this process's memory, in order,
and reported committed: the room keeps working for the connections of this process, and the
kept updates are written to Redis as soon as it answers again (checked every ``RETRY_S``).
Meanwhile they live only in this process and in the clients that saw them (see
``docs/scaling.md`` for exactly what is and is not guaranteed). Loading a room and claiming
initial storage need Redis: they raise :class:`StorageUnavailableError` instead of guessing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pycrdt
import redis.asyncio
import redis.exceptions

from ..persistence import StorageUnavailableError
from . import _scripts
from ._common import RETRY_S, SETTLE_S, UNREACHABLE, Keys, check_url, connect, new_token

log = logging.getLogger("pluv_widget.server.redis")

_Append = tuple[str, bytes, "asyncio.Future[None]"]


def merge(updates: list[bytes]) -> bytes:
    """One update holding all of ``updates`` (applied to a fresh document, so deleted content
    is garbage-collected as in any snapshot)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    snapshot: bytes = doc.get_update()
    return snapshot


class RedisPersistence:
    """Room storage in the Redis at ``url`` (``redis://host:port/db``), keys under ``prefix``.

    Run Redis with AOF (``appendonly yes``) for durability across a Redis restart; see
    ``docs/scaling.md``.
    """

    def __init__(self, url: str, *, prefix: str = "pluv", settle_s: float = SETTLE_S) -> None:
        self.url = check_url(url)
        self.keys = Keys(prefix)
        self.settle_s = settle_s
        self._client: redis.asyncio.Redis | None = None
        self._claim: Any = None
        self._compact: Any = None
        self._queue: list[_Append] = []
        self._writer: asyncio.Task[None] | None = None
        # Updates acknowledged while Redis was unreachable, per room in commit order.
        self._unsaved: dict[str, list[bytes]] = {}
        self._down_since: float | None = None
        self._retrying: asyncio.Task[None] | None = None

    @property
    def client(self) -> redis.asyncio.Redis:
        # Built on first use, inside the event loop that will use it.
        if self._client is None:
            self._client = connect(self.url)
            self._claim = self._client.register_script(_scripts.CLAIM_INITIAL)
            self._compact = self._client.register_script(_scripts.COMPACT)
        return self._client

    def status(self) -> str:
        """``ok``, or ``unavailable`` while Redis cannot be reached (updates kept in memory)."""
        return "ok" if self._down_since is None else "unavailable"

    @property
    def unsaved_updates(self) -> int:
        """Updates acknowledged during an outage and not yet in Redis."""
        return sum(map(len, self._unsaved.values()))

    # -- the interface ----------------------------------------------------------------------

    async def load(self, room: str) -> list[bytes]:
        try:
            stored: list[bytes] = await self.client.lrange(self.keys.updates(room), 0, -1)  # type: ignore[assignment]
        except UNREACHABLE as error:
            self._went_down(error)
            raise StorageUnavailableError(f"Redis is unreachable: cannot load room {room!r}") from error
        # Updates this process committed during an outage are part of the room, Redis or not.
        return [*stored, *self._unsaved.get(room, ())]

    async def append(self, room: str, update: bytes) -> None:
        # Always through the queue, even during an outage: it is what keeps a room's order.
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((room, update, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        await future

    async def claim_initial(self, room: str, update: bytes) -> bool:
        if self._unsaved.get(room):
            return False  # it has storage, only not in Redis yet
        self.client  # noqa: B018 - registers the scripts
        while True:
            try:
                claimed: int = await self._claim(
                    keys=[self.keys.updates(room), self.keys.instance, self.keys.settle],
                    args=[update, new_token(), int(self.settle_s * 1000)],
                )
            except UNREACHABLE as error:
                self._went_down(error)
                raise StorageUnavailableError(f"Redis is unreachable: cannot claim room {room!r}") from error
            if claimed != -1:
                return claimed == 1
            # Redis was just found empty: processes holding rooms are re-seeding them.
            await asyncio.sleep(0.25)

    async def compact(self, room: str, snapshot: bytes, replaces: int) -> None:
        # ``replaces`` counts what the caller stored, but other processes append to the same
        # list: merge everything stored up to now instead, so nothing unseen is dropped.
        if self._down_since is not None or self._unsaved.get(room):
            return  # compaction is an optimisation; it waits for Redis
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.version(room))
                pipe.lrange(self.keys.updates(room), 0, -1)
                version, stored = await pipe.execute()
            merged = await asyncio.to_thread(merge, [*stored, snapshot])
            swapped = await self._compact(
                keys=[self.keys.updates(room), self.keys.version(room)],
                args=[version or b"0", len(stored), merged],
            )
        except UNREACHABLE as error:
            self._went_down(error)
            return
        if not swapped:
            log.debug("room %s: another process compacted first", room)

    async def close(self) -> None:
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._retrying is not None:
            self._retrying.cancel()
        if self._unsaved:
            await self._flush_unsaved()
        if self._unsaved:
            log.error(
                "Redis is unreachable: %d acknowledged updates of rooms %s were never stored",
                self.unsaved_updates,
                ", ".join(sorted(self._unsaved)),
            )
        if self._client is not None:
            await self._client.aclose()

    # -- group commit -----------------------------------------------------------------------

    async def _write(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                if self._down_since is not None:
                    self._keep(batch)
                    continue
                rooms: dict[str, list[bytes]] = {}
                for room, update, _ in batch:
                    rooms.setdefault(room, []).append(update)
                pipe = self.client.pipeline(transaction=False)
                for room, updates in rooms.items():
                    pipe.rpush(self.keys.updates(room), *updates)
                try:
                    results = await pipe.execute(raise_on_error=False)
                except UNREACHABLE as error:
                    self._went_down(error)
                    self._keep(batch)
                    continue
                except Exception as error:  # a refusal of the whole batch: each sender is told
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                refused = {
                    room: result for room, result in zip(rooms, results, strict=True) if isinstance(result, Exception)
                }
                for room, _, future in batch:
                    if future.done():
                        continue
                    if room in refused:  # e.g. OOM: a real refusal, the sender is told
                        future.set_exception(refused[room])
                    else:
                        future.set_result(None)
        except BaseException as error:
            for _, _, future in self._queue:
                if not future.done():
                    future.set_exception(error)
            self._queue = []
            raise
        finally:
            self._writer = None

    # -- outages ----------------------------------------------------------------------------

    def _keep(self, batch: list[_Append]) -> None:
        """Acknowledge ``batch`` from memory; it goes to Redis when Redis answers again."""
        for room, update, future in batch:
            self._unsaved.setdefault(room, []).append(update)
            if not future.done():
                future.set_result(None)
        if self._retrying is None:
            self._retrying = asyncio.create_task(self._retry())

    def _went_down(self, error: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "Redis storage unreachable (%s): rooms keep serving this process's connections; "
                "their updates are kept in memory until Redis is back",
                error,
            )
        if self._retrying is None:
            self._retrying = asyncio.create_task(self._retry())

    async def _retry(self) -> None:
        try:
            while self._down_since is not None:
                await asyncio.sleep(RETRY_S)
                await self._flush_unsaved()
        finally:
            self._retrying = None

    async def _flush_unsaved(self) -> None:
        """Write the kept updates (or just ping); on success, storage is up again."""
        pending = {room: list(updates) for room, updates in self._unsaved.items()}
        pipe = self.client.pipeline(transaction=False)
        for room, updates in pending.items():
            pipe.rpush(self.keys.updates(room), *updates)
        pipe.ping()
        try:
            await pipe.execute()
        except UNREACHABLE:
            return
        except redis.exceptions.RedisError as error:
            log.warning("Redis refused the kept updates (%s); trying again", error)
            return
        for room, updates in pending.items():
            kept = self._unsaved[room]
            del kept[: len(updates)]  # later ones were appended behind them: keep those
            if not kept:
                del self._unsaved[room]
        if not self._unsaved and self._down_since is not None:
            log.warning(
                "Redis storage is back after %.1f s; kept updates written (rooms: %s)",
                time.monotonic() - self._down_since,
                ", ".join(sorted(pending)) or "none",
            )
            self._down_since = None
