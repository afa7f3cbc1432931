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

*Server-held state* is a hash ``<prefix>:state:<scope>`` (key → JSON; ``if_absent`` is ``HSETNX``,
atomic across processes) and a list ``<prefix>:log:<scope>`` of JSON entries. It is never kept
in memory during an outage: every call raises :class:`StorageUnavailableError` while Redis is
unreachable, so no process decides on state the others cannot see.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import redis.asyncio
import redis.exceptions

from ...core.server_room import replay
from .. import _redis
from .._redis import RETRY_S, SETTLE_S, UNREACHABLE, Keys, check_url, connect, new_token
from .base import Quarantined, StorageUnavailableError

log = logging.getLogger("pluv_widget.server.redis")

_Append = tuple[str, bytes, "asyncio.Future[None]"]


def merge(updates: list[bytes]) -> bytes:
    """One update holding all of ``updates`` (applied to a fresh document, so deleted content
    is garbage-collected as in any snapshot). Updates that no longer apply are left out: the
    process that loaded the room quarantined them (see ``Persistence.quarantine``)."""
    snapshot: bytes = replay(updates).doc.get_update()
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
            self._claim = self._client.register_script(_redis.CLAIM_INITIAL)
            self._compact = self._client.register_script(_redis.COMPACT)
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

    def _quarantine_key(self, room: str) -> str:
        return f"{self.keys.prefix}:quarantine:{room}"

    async def quarantine(self, room: str, update: bytes, reason: str) -> None:
        """Kept in the list ``<prefix>:quarantine:<room>``, one JSON record per update."""
        record = json.dumps({"at": time.time(), "reason": reason, "update": base64.b64encode(update).decode()})
        try:
            await self.client.rpush(self._quarantine_key(room), record)
        except UNREACHABLE as error:
            self._went_down(error)
            raise StorageUnavailableError(f"Redis is unreachable: cannot quarantine in room {room!r}") from error

    async def quarantined(self, room: str) -> list[Quarantined]:
        records = await self.client.lrange(self._quarantine_key(room), 0, -1)
        kept = [json.loads(record) for record in records]
        return [Quarantined(room, item["at"], item["reason"], base64.b64decode(item["update"])) for item in kept]

    # -- server-held state ------------------------------------------------------------------

    def _state_key(self, scope: str) -> str:
        return f"{self.keys.prefix}:state:{scope}"

    def _log_key(self, scope: str) -> str:
        return f"{self.keys.prefix}:log:{scope}"

    async def _call(self, what: str, call: Any) -> Any:
        try:
            return await call
        except UNREACHABLE as error:
            self._went_down(error)
            raise StorageUnavailableError(f"Redis is unreachable: cannot {what}") from error

    async def get_value(self, scope: str, key: str) -> Any | None:
        raw = await self._call(f"read {scope}", self.client.hget(self._state_key(scope), key))
        return None if raw is None else json.loads(raw)

    async def put_value(self, scope: str, key: str, value: Any, *, if_absent: bool = False) -> bool:
        raw = json.dumps(value)
        name = self._state_key(scope)
        if if_absent:
            stored = await self._call(f"write {scope}", self.client.hsetnx(name, key, raw))
            return bool(stored)
        await self._call(f"write {scope}", self.client.hset(name, key, raw))
        return True

    async def delete_value(self, scope: str, key: str) -> bool:
        deleted = await self._call(f"write {scope}", self.client.hdel(self._state_key(scope), key))
        return bool(deleted)

    async def list_values(self, scope: str) -> dict[str, Any]:
        raw = await self._call(f"read {scope}", self.client.hgetall(self._state_key(scope)))
        return {(key.decode() if isinstance(key, bytes) else key): json.loads(value) for key, value in raw.items()}

    async def append_log(self, scope: str, entry: dict[str, Any]) -> None:
        await self._call(f"write {scope}", self.client.rpush(self._log_key(scope), json.dumps(entry)))

    async def read_log(self, scope: str, limit: int | None = None) -> list[dict[str, Any]]:
        if limit is not None and limit <= 0:
            return []
        start = 0 if limit is None else -limit
        raw = await self._call(f"read {scope}", self.client.lrange(self._log_key(scope), start, -1))
        return [json.loads(entry) for entry in raw]

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
