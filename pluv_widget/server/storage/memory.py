"""The in-memory store: for tests and ``--memory``; lost on exit."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from .base import Quarantined


class MemoryPersistence:
    """Keeps storage in this process only: for tests and ``--memory``; lost on exit."""

    def __init__(self) -> None:
        self._rooms: dict[str, list[bytes]] = {}
        self._lock = asyncio.Lock()
        self._quarantine: list[Quarantined] = []
        # Server-held state, kept as JSON text: what a caller reads back is a copy, as from a real store.
        self._values: dict[str, dict[str, str]] = {}
        self._logs: dict[str, list[str]] = {}

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

    async def quarantine(self, room: str, update: bytes, reason: str) -> None:
        self._quarantine.append(Quarantined(room, time.time(), reason, update))

    async def quarantined(self, room: str) -> list[Quarantined]:
        return [kept for kept in self._quarantine if kept.room == room]

    async def get_value(self, scope: str, key: str) -> Any | None:
        raw = self._values.get(scope, {}).get(key)
        return None if raw is None else json.loads(raw)

    async def put_value(self, scope: str, key: str, value: Any, *, if_absent: bool = False) -> bool:
        raw = json.dumps(value)
        values = self._values.setdefault(scope, {})
        if if_absent and key in values:
            return False
        values[key] = raw
        return True

    async def delete_value(self, scope: str, key: str) -> bool:
        values = self._values.get(scope, {})
        return values.pop(key, None) is not None

    async def list_values(self, scope: str) -> dict[str, Any]:
        return {key: json.loads(raw) for key, raw in self._values.get(scope, {}).items()}

    async def append_log(self, scope: str, entry: dict[str, Any]) -> None:
        self._logs.setdefault(scope, []).append(json.dumps(entry))

    async def read_log(self, scope: str, limit: int | None = None) -> list[dict[str, Any]]:
        entries = self._logs.get(scope, [])
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        return [json.loads(raw) for raw in entries]

    def status(self) -> str | None:
        return None

    async def close(self) -> None:
        pass
