"""Shared CRDT storage between real clients: convergence, initial storage, offline edits, limits, undo."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pycrdt
import pytest
from helpers import free_port, until, until_storage
from websockets.asyncio.client import connect

from pluv_widget import Limits, ServerError, StorageLoadingError, crdt
from pluv_widget.protocol import sync

MESSAGES = crdt.doc(lambda: {"messages": crdt.array([])})


def storage(*items: str) -> crdt.StorageFactory:
    return crdt.doc(lambda: {"messages": crdt.array(list(items)), "meta": crdt.map({"title": "t"}),
                             "notes": crdt.text("")})


async def test_concurrent_edits_from_five_clients_converge(server: Any, make_client: Any) -> None:
    rooms = [await make_client(server, initial_storage=MESSAGES).enter("r") for _ in range(5)]
    for index, room in enumerate(rooms):
        for n in range(20):
            room.storage("messages").append(f"{index}-{n}")
    for room in rooms:
        await until_storage(room, "messages", lambda items: len(items) == 100)
    first = rooms[0].storage_json()
    assert all(room.storage_json() == first for room in rooms)
    assert sorted(first["messages"]) == sorted(f"{i}-{n}" for i in range(5) for n in range(20))  # type: ignore[index]


async def test_two_clients_edit_maps_text_and_nested_types(server: Any, make_client: Any) -> None:
    factory = crdt.doc(lambda: {"board": crdt.map({"cards": crdt.array([crdt.map({"id": 1})])}),
                                "notes": crdt.text("hi")})
    a = await make_client(server, initial_storage=factory).enter("r")
    b = await make_client(server, initial_storage=factory).enter("r")
    a.storage("notes").insert(2, " there")
    b.storage("board")["cards"].append(crdt.map({"id": 2}))
    await until_storage(b, "notes", lambda text: text == "hi there")
    await until_storage(a, "board", lambda board: len(board["cards"]) == 2)
    assert a.storage_json() == b.storage_json()
    assert a.storage_json()["board"] == {"cards": [{"id": 1}, {"id": 2}]}  # type: ignore[index]


async def test_a_joiner_sees_existing_content(server: Any, make_client: Any) -> None:
    a = await make_client(server, initial_storage=storage("first")).enter("r")
    a.storage("messages").append("second")
    await until(a, lambda: True)
    joiner_client = make_client(server, initial_storage=storage("ignored"))
    joiner = joiner_client.create_room("r")
    assert joiner.storage_json() is None and joiner.storage_state == "loading"
    with pytest.raises(StorageLoadingError):
        joiner.storage("messages")
    await joiner_client.enter(joiner)
    await until_storage(joiner, "messages", lambda items: items == ["first", "second"])


async def test_initial_storage_is_applied_exactly_once_when_ten_clients_race(server: Any, make_client: Any) -> None:
    clients = [make_client(server, initial_storage=storage(f"from-{i}", f"also-{i}")) for i in range(10)]
    rooms = await asyncio.gather(*(client.enter("race") for client in clients))
    for room in rooms:
        await until(room, lambda room=room: room.storage_state == "synced")
    contents = {json.dumps(room.storage_json()) for room in rooms}
    assert len(contents) == 1
    (messages,) = {tuple(room.storage_json()["messages"]) for room in rooms}
    assert len(messages) == 2 and messages[0].replace("from", "also") == messages[1]


async def test_the_servers_storage_wins_over_a_later_initial_storage(server: Any, make_client: Any) -> None:
    a = await make_client(server, initial_storage=storage("original")).enter("r")
    a.storage("messages").append("edit")
    await until_storage(a, "messages", lambda items: len(items) == 2)
    a._client.leave(a)
    await until(a, lambda: a.state == "closed")
    room_override = make_client(server, initial_storage=storage("client default"))
    b = room_override.create_room("r", initial_storage=storage("room override"))
    await room_override.enter(b)
    await until_storage(b, "messages", lambda items: items == ["original", "edit"])


async def test_a_rooms_initial_storage_overrides_the_clients(server: Any, make_client: Any) -> None:
    client = make_client(server, initial_storage=storage("client default"))
    room = await client.enter(client.create_room("fresh", initial_storage=storage("room override")))
    await until_storage(room, "messages", lambda items: items == ["room override"])


async def test_offline_edits_are_merged_after_reconnect(start_server: Any, make_client: Any, tmp_path: Any) -> None:
    port = free_port()
    first = await start_server(port=port, data_dir=tmp_path)
    a_client = make_client(first, initial_storage=MESSAGES)
    a = await a_client.enter(a_client.create_room("r", reconnect_timeout_ms=50))
    a.storage("messages").append("before")
    await first.close()  # commits what it has, closes connections with 1012
    await until(a, lambda: a.storage_state == "offline")
    a.storage("messages").append("while offline")
    second = await start_server(port=port, data_dir=tmp_path)
    b = await make_client(second, initial_storage=MESSAGES).enter("r")
    b.storage("messages").append("from b")
    for room in (a, b):
        await until_storage(room, "messages", lambda items: len(items) == 3)
    assert a.storage_json() == b.storage_json()
    assert set(a.storage_json()["messages"]) == {"before", "while offline", "from b"}  # type: ignore[index]


async def test_undo_removes_only_my_edits_even_right_after_a_remote_one(server: Any, make_client: Any) -> None:
    a = await make_client(server, initial_storage=MESSAGES).enter("r")
    b = await make_client(server, initial_storage=MESSAGES).enter("r")
    assert not a.can_undo
    a.storage("messages").append("A1")
    await until_storage(b, "messages", lambda items: items == ["A1"])
    b.storage("messages").append("B1")
    await until_storage(a, "messages", lambda items: items == ["A1", "B1"])
    assert a.can_undo
    a.undo()  # B's edit arrived last; A's undo must still take A's own edit
    assert a.storage_json()["messages"] == ["B1"]  # type: ignore[index]
    await until_storage(b, "messages", lambda items: items == ["B1"])
    assert a.can_redo and not a.can_undo
    a.redo()
    await until_storage(b, "messages", lambda items: sorted(items) == ["A1", "B1"])
    assert not b.can_undo or b.undo()  # b's own undo takes B1 only
    await until_storage(a, "messages", lambda items: items == ["A1"])


async def test_transact_groups_edits_into_one_undo_step(server: Any, make_client: Any) -> None:
    a = await make_client(server, initial_storage=MESSAGES).enter("r")
    a.transact(lambda: [a.storage("messages").append(x) for x in "xyz"])
    a.undo()
    assert a.storage_json()["messages"] == []  # type: ignore[index]


async def test_storage_subscription_fires_on_local_and_remote_changes(server: Any, make_client: Any) -> None:
    a = await make_client(server, initial_storage=MESSAGES).enter("r")
    b = await make_client(server, initial_storage=MESSAGES).enter("r")
    seen: list[Any] = []
    a.subscribe.storage("messages", seen.append)
    a.storage("messages").append("mine")
    assert seen == [["mine"]]
    b.storage("messages").append("theirs")
    await until_storage(a, "messages", lambda items: len(items) == 2)
    assert sorted(seen[-1]) == ["mine", "theirs"] and seen[-1] == a.storage_json()["messages"]  # type: ignore[index]


async def test_an_update_past_the_cap_is_refused_and_the_room_is_unchanged(start_server: Any,
                                                                          make_client: Any) -> None:
    server = await start_server(limits=Limits(max_storage_bytes=20_000))
    a = await make_client(server, initial_storage=storage("keep me")).enter("r")
    errors: list[ServerError] = []
    a.subscribe.error(errors.append)
    a.storage("messages").append("x" * 30_000)
    await until(a, lambda: errors)
    assert errors[0].code == "storage_too_large"
    watcher = await make_client(server, initial_storage=storage("never applied")).enter("r")
    await until_storage(watcher, "messages", lambda items: items == ["keep me"])


async def test_a_corrupt_update_is_refused_and_changes_nothing(server: Any, make_client: Any) -> None:
    a = await make_client(server, initial_storage=storage("safe")).enter("r")
    async with connect(f"ws://127.0.0.1:{server.port}/r") as socket:
        await socket.send(json.dumps({"type": "join", "protocol": 2, "presence": {}}))
        await socket.send(sync.update(b"\x01\x01\x99\x99\x99"))
        async with asyncio.timeout(20):
            while True:
                frame = await socket.recv()
                if isinstance(frame, str) and json.loads(frame)["type"] == "error":
                    assert json.loads(frame)["code"] == "storage_rejected"
                    break
    joiner = await make_client(server, initial_storage=MESSAGES).enter("r")
    await until_storage(joiner, "messages", lambda items: items == ["safe"])
    assert a.storage_json()["messages"] == ["safe"]  # type: ignore[index]


async def test_a_5_mb_document_syncs_to_a_joiner(server: Any, make_client: Any) -> None:
    big = crdt.doc(lambda: {"messages": crdt.array([f"{i:06d}" + "x" * 94 for i in range(50_000)])})
    writer = await make_client(server, initial_storage=big).enter("big")
    assert len(writer.storage_json()["messages"]) == 50_000  # type: ignore[index]
    joiner = await make_client(server, initial_storage=MESSAGES).enter("big")
    await until_storage(joiner, "messages", lambda items: len(items) == 50_000)


async def test_the_server_reads_and_edits_a_rooms_storage(start_server: Any, make_client: Any) -> None:
    updates: list[dict[str, Any]] = []
    # Hooks are configuration: fixed when the server starts.
    server = await start_server(on_storage_updated=lambda room, doc: updates.append({"room": room}))
    a = await make_client(server, initial_storage=storage("hello")).enter("r")
    assert (await server.io.storage_json("r"))["messages"] == ["hello"]

    def edit(doc: pycrdt.Doc) -> None:
        doc.get("messages", type=pycrdt.Array).append("from the server")

    await server.io.update_storage("r", edit)
    await until_storage(a, "messages", lambda items: items == ["hello", "from the server"])
    assert updates == [{"room": "r"}]
