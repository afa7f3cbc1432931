"""Chaos: clients edit several rooms while compaction runs, the server is ``kill -9``'d and
restarted on the same port and data directory again and again, and connections are cut at random.

*Acknowledged edit*, precisely: an edit that the *other* client of its room holds in its replica
(polled every 50 ms). The server relays an update only after the store committed it, so an edit
another client holds was committed; it is counted from the moment the test saw it there.

Checked: (1) after every ``kill -9`` and restart, before any old client may reconnect (the proxy
refuses them), a fresh joiner straight to the server sees every edit acknowledged before the
kill — the store lost nothing; (2) at the end every replica converges to the server's document,
which holds every edit acknowledged at any time; (3) compaction ran (the rooms' stored rows are far
fewer than their stored updates).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from helpers import ServerProcess, free_port

from pluv_widget import crdt, create_client

ROOMS = [f"chaos-{n}" for n in range(4)]
WRITERS = 2
CYCLES = 5
EDIT_S = 3.5  # editing time per server life
STORAGE = crdt.doc(lambda: {"items": crdt.array([])})


class CuttingProxy:
    """A TCP proxy in front of the server that can cut every connection, or refuse new ones."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.open = True
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self.pairs.append(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            with contextlib.suppress(ValueError):
                self.pairs.remove(pair)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def cut(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        self.cuts += 1
        for side in pair:
            side.transport.abort()

    def cut_all(self) -> None:
        for pair in list(self.pairs):
            self.cut(pair)

    async def close(self) -> None:
        self.cut_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def items_of(room: Any) -> list[str]:
    state = room.storage_json()
    return list(state["items"]) if state else []


async def fresh_view(url: str, name: str) -> list[str]:
    client = create_client(ws_endpoint=url, initial_storage=STORAGE)
    try:
        room = await client.enter(client.create_room(name), timeout=20)
        return items_of(room)
    finally:
        await client.aclose()


async def test_kill_9_restarts_and_cut_connections_lose_no_acknowledged_edit(tmp_path: Path) -> None:
    rng = random.Random(11)
    data = tmp_path / "data"
    env = {"PLUV_WIDGET_HOME": str(tmp_path / "home")}
    server = ServerProcess("--data-dir", str(data), env=env).start()
    proxy = CuttingProxy(server.port)
    await proxy.start()
    url = f"ws://127.0.0.1:{proxy.port}"
    clients = [create_client(ws_endpoint=url, initial_storage=STORAGE) for _ in range(len(ROOMS) * WRITERS)]
    rooms: dict[tuple[str, int], Any] = {}
    for index, client in enumerate(clients):
        name, writer = ROOMS[index // WRITERS], index % WRITERS
        room = client.create_room(name, reconnect_timeout_ms=lambda attempts: 50 + 100 * min(attempts, 5))
        rooms[(name, writer)] = await client.enter(room, timeout=20)
    acked: dict[str, set[str]] = {name: set() for name in ROOMS}
    written = 0
    editing = True

    async def write(name: str, writer: int) -> None:
        nonlocal written
        room = rooms[(name, writer)]
        n = 0
        while editing:
            with contextlib.suppress(Exception):  # storage loading / reloading: try again soon
                room.storage("items").append(f"{name}:{writer}:{n}")
                n += 1
                written += 1
            await asyncio.sleep(rng.uniform(0.002, 0.02))

    async def observe() -> None:
        while editing:
            for name in ROOMS:
                for writer in range(WRITERS):
                    theirs = f"{name}:{1 - writer}:"
                    acked[name].update(item for item in items_of(rooms[(name, writer)]) if item.startswith(theirs))
            await asyncio.sleep(0.05)

    async def cut_at_random() -> None:
        while editing:
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            if proxy.pairs:
                proxy.cut(rng.choice(proxy.pairs))

    tasks = [asyncio.create_task(write(name, w)) for name in ROOMS for w in range(WRITERS)]
    tasks += [asyncio.create_task(observe()), asyncio.create_task(cut_at_random())]
    cycles = 0
    started = time.monotonic()
    try:
        for _ in range(CYCLES):
            await asyncio.sleep(EDIT_S)
            before = {name: set(items) for name, items in acked.items()}
            proxy.open = False
            assert server.signal(signal.SIGKILL) == -signal.SIGKILL
            proxy.cut_all()
            server = ServerProcess("--data-dir", str(data), port=server.port, env=env).start()
            cycles += 1
            for name in ROOMS:  # the store kept every acknowledged edit
                view = set(await fresh_view(server.url, name))
                assert before[name] <= view, f"{name}: lost {sorted(before[name] - view)[:5]}"
            proxy.open = True
        editing = False
        await asyncio.gather(*tasks)
        # every replica converges to the server's document, which holds every acknowledged edit
        deadline = time.monotonic() + 30
        while True:
            truth = {name: await fresh_view(server.url, name) for name in ROOMS}
            replicas = {key: items_of(room) for key, room in rooms.items()}
            if all(replicas[(name, w)] == truth[name] for name in ROOMS for w in range(WRITERS)):
                break
            assert time.monotonic() < deadline, "replicas did not converge"
            await asyncio.sleep(0.2)
        for name in ROOMS:
            assert acked[name] <= set(truth[name])
            assert len(truth[name]) == len(set(truth[name]))
        acknowledged = sum(map(len, acked.values()))
        in_documents = sum(map(len, truth.values()))
        server.stop()
        with sqlite3.connect(data / "rooms.sqlite3") as db:
            rows, top = db.execute("SELECT count(*), max(seq) FROM updates").fetchone()
        print(f"\nchaos: {cycles} kill -9 cycles, {proxy.cuts} connections cut, {written} edits written, "
              f"{acknowledged} acknowledged (all kept), {in_documents} in the final documents, "
              f"{rows} stored rows of {top} appended, {time.monotonic() - started:.1f} s")
        assert cycles == CYCLES and acknowledged > 1000
        assert rows * 4 < top  # compaction ran while all this happened
    finally:
        editing = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
        await proxy.close()
        server.stop()
