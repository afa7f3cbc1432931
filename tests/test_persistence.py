"""The SQLite store for real: kill -9 loses nothing anyone saw; compaction keeps files small."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pycrdt
from helpers import until, until_storage

from pluv_widget import crdt
from pluv_widget.server import MemoryPersistence, SqlitePersistence

MESSAGES = crdt.doc(lambda: {"messages": crdt.array([])})


async def test_kill_9_loses_nothing_anyone_saw(server_process: Any, make_client: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = server_process("--data-dir", str(data))
    writer = await make_client(first.url, initial_storage=MESSAGES).enter("r")
    watcher = await make_client(first.url, initial_storage=MESSAGES).enter("r")
    for n in range(200):
        writer.storage("messages").append(f"m{n}")
        if n % 10 == 0:
            await asyncio.sleep(0)  # let some go out one by one, some merged
    seen = await until_storage(watcher, "messages", lambda items: len(items) == 200)
    assert first.signal(signal.SIGKILL) == -signal.SIGKILL
    second = server_process("--data-dir", str(data), port=first.port)
    joiner = await make_client(second.url, initial_storage=MESSAGES).enter("r")
    assert joiner.storage_json()["messages"] == seen  # type: ignore[index]


async def test_sigterm_closes_connections_with_1012_and_clients_return(server_process: Any,
                                                                       make_client: Any) -> None:
    first = server_process("--memory")
    client = make_client(first.url)
    room = await client.enter(client.create_room("r", reconnect_timeout_ms=100))
    closes: list[str] = []
    room.subscribe.connection(closes.append)
    assert first.signal(signal.SIGTERM) == 0
    await until(room, lambda: room.state == "unavailable")
    assert b"closing connections with 1012" in first.log
    server_process("--memory", port=first.port)
    await until(room, lambda: room.state == "open")
    assert closes == ["unavailable", "open"]


async def test_compaction_keeps_the_file_near_the_documents_size(start_server: Any, make_client: Any,
                                                                 tmp_path: Path) -> None:
    server = await start_server(data_dir=tmp_path)
    room = await make_client(server, initial_storage=MESSAGES).enter("busy")
    watcher = await make_client(server, initial_storage=MESSAGES).enter("busy")
    for n in range(10_000):
        room.storage("messages").append(n)
        await asyncio.sleep(0)  # one frame per edit: 10,000 small updates
    # relayed to the watcher = committed by the server
    await until_storage(watcher, "messages", lambda items: len(items) == 10_000, timeout=120)
    live = server.rooms["busy"]
    await live.flushed()
    document = len(live.core.doc.get_update())
    database = (tmp_path / "rooms.sqlite3").stat().st_size
    assert database < 4 * document + 64 * 1024, (database, document)
    # The write-ahead log is a bounded journal, not history: checkpointed every 256 pages.
    assert (tmp_path / "rooms.sqlite3-wal").stat().st_size <= 1100 * 1024
    stored = await server.config.persistence.load("busy")
    assert len(stored) < 600  # a snapshot and a short tail, not 10,000 rows
    copy = pycrdt.Doc()
    for update in stored:
        copy.apply_update(update)
    assert len(copy.get("messages", type=pycrdt.Array)) == 10_000


async def test_the_initial_claim_is_atomic_in_every_store(tmp_path: Path) -> None:
    for store in (MemoryPersistence(), SqlitePersistence(tmp_path / "claims.sqlite3")):
        results = await asyncio.gather(*(store.claim_initial("r", bytes([n])) for n in range(10)))
        assert sorted(results) == [False] * 9 + [True]
        assert len(await store.load("r")) == 1
        await store.close()


async def test_compaction_keeps_updates_appended_after_the_snapshot(tmp_path: Path) -> None:
    store = SqlitePersistence(tmp_path / "tail.sqlite3")
    for n in range(5):
        await store.append("r", bytes([n]))
    await store.compact("r", b"SNAPSHOT", 3)
    assert await store.load("r") == [b"SNAPSHOT", b"\x03", b"\x04"]
    await store.close()
