"""Several room servers in this test's process, each with its own Redis connections (to Redis,
separate processes): what only the server API can trigger — the server's own broadcasts and
storage edits — crosses processes, and /health reports Redis."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pycrdt
from helpers import until, until_storage
from redis_helpers import RedisServer

from pluv_widget import RoomEvent, crdt
from pluv_widget.server.bus.local import LocalPubSub
from pluv_widget.server.storage.memory import MemoryPersistence

_rooms = itertools.count()


def room_name(label: str) -> str:
    return f"{label}-{time.monotonic_ns()}-{next(_rooms)}"


async def test_server_broadcasts_and_storage_edits_reach_other_processes(
    redis_server: RedisServer, start_server: Any, make_client: Any
) -> None:
    a = await start_server(redis=redis_server.url)
    b = await start_server(redis=redis_server.url)
    room = room_name("server-api")
    client = make_client(a, initial_storage=crdt.doc(lambda: {"items": crdt.array([])}))
    on_a = await client.enter(client.create_room(room))
    events: list[RoomEvent] = []
    on_a.subscribe.event("news", events.append)

    await b.io.broadcast(room, "news", {"headline": "from process b"})
    await until(on_a, lambda: bool(events))
    assert events[0].data == {"headline": "from process b"} and events[0].connection_id is None

    def edit(doc: pycrdt.Doc[Any]) -> None:
        doc.get("items", type=pycrdt.Array).append("edited by process b")

    await until(on_a, lambda: on_a.storage_state == "synced")
    await b.io.update_storage(room, edit)
    await until_storage(on_a, "items", lambda items: items == ["edited by process b"])
    # Process b loads the room complete (checked through a client: io.storage_json cannot type the
    # roots of a document loaded from a store).
    reader = make_client(b, initial_storage=crdt.doc(lambda: {"items": crdt.array([])}))
    on_b = await reader.enter(reader.create_room(room))
    assert await until_storage(on_b, "items", lambda items: len(items) == 1) == ["edited by process b"]
    assert a.health()["redis"] == b.health()["redis"] == "ok"


async def test_health_says_off_without_redis(start_server: Any) -> None:
    server = await start_server()
    assert server.health()["redis"] == "off"


async def test_the_in_process_bus_also_gives_a_complete_first_snapshot(start_server: Any, make_client: Any) -> None:
    bus, store = LocalPubSub(), MemoryPersistence()
    a = await start_server(pubsub=bus, persistence=store)
    b = await start_server(pubsub=bus, persistence=store)
    first = make_client(a)
    on_a = await first.enter(first.create_room("shared", initial_presence={"name": "ada"}))
    on_a.update_my_presence({"name": "ada lovelace"})
    second = make_client(b)
    on_b = await second.enter(second.create_room("shared", initial_presence={"name": "bob"}))
    assert [user.connection_id for user in on_b.others] == [on_a.connection_id]
    await until(on_b, lambda: on_b.others[0].presence["name"] == "ada lovelace")
    await until(on_a, lambda: [user.connection_id for user in on_a.others] == [on_b.connection_id])
