"""The thread contract (pluv_widget/client/loop.py): every public call from a foreign thread, while
updates arrive on the client's loop, against the real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from helpers import until, until_storage, url_of

from pluv_widget import RoomEvent, crdt, create_client

MESSAGES = crdt.doc(lambda: {"messages": crdt.array([])})
THREADS = 4
ROUNDS = 25


async def test_every_public_call_from_foreign_threads_while_updates_arrive(server: Any, make_client: Any) -> None:
    writer = await make_client(server, initial_storage=MESSAGES).enter("threads")
    client = make_client(server, initial_storage=MESSAGES)
    room = await client.enter(client.create_room("threads", initial_presence={"name": "t"}))
    await until(room, lambda: len(room.others) == 1)
    loop_thread = threading.get_ident()
    callback_threads: set[int] = set()
    ticks: list[RoomEvent] = []
    writer.subscribe.event("tick", ticks.append)
    stop = threading.Event()
    errors: list[BaseException] = []

    async def write() -> None:  # remote updates and presence arrive all the time
        i = 0
        while not stop.is_set():
            writer.storage("messages").append(f"w{i}")
            writer.update_my_presence({"i": i})
            i += 1
            await asyncio.sleep(0.002)

    def worker(k: int) -> None:
        try:
            unsubscribe = room.subscribe.storage("messages", lambda _v: callback_threads.add(threading.get_ident()))
            for i in range(ROUNDS):
                snapshot = room.storage_json()
                assert snapshot is not None and isinstance(snapshot["messages"], list)
                room.transact(lambda i=i: room.storage("messages").append(f"t{k}-{i}"))
                messages = room.storage("messages")  # a loop-bound proxy on this thread
                messages.append(f"p{k}-{i}")
                assert len(messages) >= 2 and f"p{k}-{i}" in list(messages)
                room.update_my_presence({f"k{k}": i})
                assert room.my_presence[f"k{k}"] == i  # my own update is visible at once
                room.broadcast("tick", {"k": k, "i": i})
                (other,) = room.others
                assert other.connection_id == writer.connection_id
                found = room.other(writer.connection_id or "")
                assert found is not None and found.id == other.id  # presence may have moved on meanwhile
                myself = room.myself
                assert myself is not None and myself.connection_id == room.connection_id
                assert room.can_undo and room.state == "open" and room.storage_state == "synced"
            unsubscribe()
        except BaseException as error:  # reported by the test, not lost in a thread
            errors.append(error)

    writing = asyncio.create_task(write())
    await asyncio.gather(*(asyncio.to_thread(worker, k) for k in range(THREADS)))
    stop.set()
    await writing
    assert errors == []
    assert callback_threads == {loop_thread}  # storage callbacks ran on the client's loop

    ours = {f"{kind}{k}-{i}" for kind in "tp" for k in range(THREADS) for i in range(ROUNDS)}
    await until_storage(writer, "messages", lambda items: ours <= set(items))
    await until_storage(room, "messages", lambda items: items == writer.storage_json()["messages"])
    await until(writer, lambda: len(ticks) == THREADS * ROUNDS)
    assert {(event.data["k"], event.data["i"]) for event in ticks} == {
        (k, i) for k in range(THREADS) for i in range(ROUNDS)}
    await until(writer, lambda: writer.others and writer.others[0].presence.get(f"k{THREADS - 1}") == ROUNDS - 1)

    before = len(await asyncio.to_thread(lambda: room.storage_json()["messages"]))
    assert await asyncio.to_thread(room.undo)  # my last edit, never the writer's
    assert len(await asyncio.to_thread(lambda: room.storage_json()["messages"])) == before - 1
    assert await asyncio.to_thread(lambda: room.can_redo)
    assert await asyncio.to_thread(room.redo)

    await asyncio.to_thread(client.leave, room)
    await until(room, lambda: room.state == "closed")
    await until(writer, lambda: writer.others == [])


async def test_a_client_on_its_own_loop_thread_used_from_the_callers_thread(server: Any, make_client: Any) -> None:
    peer = await make_client(server, initial_storage=MESSAGES).enter("own-loop")
    # Created where no loop runs: the client starts its own loop in a daemon thread.
    client = await asyncio.to_thread(create_client, ws_endpoint=url_of(server), initial_storage=MESSAGES)
    assert client.loop is not asyncio.get_running_loop()
    try:
        room = await client.enter("own-loop")  # awaited on this loop, run on the client's
        for i in range(50):  # this thread is foreign to the client: every call is marshalled
            room.storage("messages").append(f"mine-{i}")
            peer.storage("messages").append(f"peer-{i}")
            assert room.storage_json() is not None
            await asyncio.sleep(0)
        room.update_my_presence({"x": 1})
        assert room.my_presence == {"x": 1}
        await until_storage(peer, "messages", lambda items: len(items) == 100)
        deadline = asyncio.get_running_loop().time() + 20
        while room.storage_json() != peer.storage_json():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
    finally:
        await asyncio.to_thread(client.close)
    thread = client._loop.thread
    assert thread is not None
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()  # close() stopped the client's own loop
    await until(peer, lambda: peer.others == [])
