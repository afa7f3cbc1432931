"""Dropped connections: reconnect with restored presence, the attempts count, and leave."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import free_port, until

from pluv_widget.server.room_server import RoomServer


async def test_clients_reconnect_after_a_server_restart_with_presence_restored(start_server: Any,
                                                                             make_client: Any) -> None:
    port = free_port()
    first = await start_server(port=port)
    attempts_seen: list[int] = []

    def quick(attempts: int) -> int:
        attempts_seen.append(attempts)
        return 50 * attempts

    a_client = make_client(first)
    a = await a_client.enter(a_client.create_room("r", reconnect_timeout_ms=quick))
    b_client = make_client(first)
    b = await b_client.enter(b_client.create_room("r", reconnect_timeout_ms=quick))
    a.update_my_presence({"hand": "up"})
    await until(b, lambda: b.others and b.others[0].presence == {"hand": "up"})
    states: list[str] = []
    b.subscribe.connection(states.append)
    await first.close()  # closes every connection with 1012
    await until(b, lambda: b.state == "unavailable")
    second: RoomServer = await start_server(port=port)
    await until(a, lambda: a.state == "open")
    await until(b, lambda: b.state == "open" and len(b.others) == 1)
    assert b.others[0].presence == {"hand": "up"}
    assert second.connections == 2
    assert states[0] == "unavailable" and states[-1] == "open"
    assert attempts_seen[0] == 0  # attempts counts already failed attempts, from zero


async def test_attempts_count_failed_reconnects_from_zero(start_server: Any, make_client: Any) -> None:
    port = free_port()
    server = await start_server(port=port)
    seen: list[int] = []
    retried = asyncio.Event()

    def timeout(attempts: int) -> int:
        seen.append(attempts)
        if attempts >= 3:
            retried.set()
        return 20

    client = make_client(server)
    room = await client.enter(client.create_room("r", reconnect_timeout_ms=timeout))
    await server.close()
    await asyncio.wait_for(retried.wait(), 20)
    assert seen[:4] == [0, 1, 2, 3]
    client.leave(room)
    await until(room, lambda: room.state == "closed")


async def test_no_reconnect_after_leave(start_server: Any, make_client: Any) -> None:
    port = free_port()
    server = await start_server(port=port)
    client = make_client(server)
    room = await client.enter(client.create_room("r", reconnect_timeout_ms=20))
    await server.close()
    await until(room, lambda: room.state == "unavailable")
    client.leave(room)
    assert room.state == "closed"
    again = await start_server(port=port)
    watcher = await make_client(again).enter("r")
    assert watcher.others == []
    assert room.state == "closed" and (room._task is None or room._task.done() or room._task.cancelled())


async def test_enter_waits_for_a_server_that_starts_late(start_server: Any, make_client: Any) -> None:
    port = free_port()
    client = make_client(f"ws://127.0.0.1:{port}")
    room = client.create_room("r", reconnect_timeout_ms=50)
    entering = asyncio.create_task(client.enter(room))
    await until(room, lambda: room.state == "unavailable")
    await start_server(port=port)
    assert await asyncio.wait_for(entering, 20) is room


async def test_a_list_of_endpoints_is_tried_in_turn(start_server: Any, make_client: Any) -> None:
    server = await start_server()
    dead = f"ws://127.0.0.1:{free_port()}"
    room = await make_client([dead, f"ws://127.0.0.1:{server.port}"]).enter("r")
    assert room.state == "open"
