"""SQLite compaction while other rooms append: no statement is left open, no append fails.

The old store returned the cursor of ``PRAGMA wal_checkpoint(TRUNCATE)`` as the job's result, so
the statement stayed open on the writer's connection until the event loop dropped it, and the
next group commit's ``SAVEPOINT`` failed with "SQL statements in progress": the appends of every
room in that group were refused (clients got ``storage_rejected``) and their edits were lost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pycrdt

from pluv_widget.server import SqlitePersistence

ROOMS = [f"room-{n}" for n in range(4)]


def appends(room: str, count: int) -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    items = doc.get("items", type=pycrdt.Array)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for n in range(count):
        items.append(f"{room}:{n}")
    return updates


def replay(updates: list[bytes]) -> list[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return doc.get("items", type=pycrdt.Array).to_py() or []


async def test_compaction_under_concurrent_appends_to_several_rooms_loses_nothing(tmp_path: Path) -> None:
    store = SqlitePersistence(tmp_path / "rooms.sqlite3")
    per_room = 300
    failures: list[BaseException] = []
    stored: dict[str, int] = dict.fromkeys(ROOMS, 0)

    async def writer(room: str) -> None:
        history = appends(room, per_room)
        for n, update in enumerate(history):
            try:
                await store.append(room, update)
                stored[room] += 1
            except Exception as error:  # the bug: "SQL statements in progress"
                failures.append(error)
            if n % 25 == 24:  # compaction runs now and then, while the other rooms keep appending
                doc: pycrdt.Doc[Any] = pycrdt.Doc()
                for part in await store.load(room):
                    doc.apply_update(part)
                await store.compact(room, doc.get_update(), stored[room])
                stored[room] = 1
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(writer(room) for room in ROOMS))
        assert failures == []
        for room in ROOMS:
            assert replay(await store.load(room)) == [f"{room}:{n}" for n in range(per_room)]
    finally:
        await store.close()
    # and the file reopens with everything in it
    again = SqlitePersistence(tmp_path / "rooms.sqlite3")
    try:
        for room in ROOMS:
            assert len(replay(await again.load(room))) == per_room
    finally:
        await again.close()
