"""Bad input from a raw socket: the sender gets a documented error or close code; the server, the
room and everyone else carry on untouched."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from helpers import until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pluv_widget import CloseCode, Limits
from pluv_widget.protocol import sync
from pluv_widget.server.room_server import RoomServer


async def raw(server: RoomServer, room: str = "r", presence: dict[str, Any] | None = None) -> ClientConnection:
    """A bare connection that has joined: its first frames (welcome, sync) are drained."""
    socket = await connect(f"ws://127.0.0.1:{server.port}/{room}", max_size=None)
    await socket.send(json.dumps({"type": "join", "protocol": 2, "presence": presence or {}}))
    welcome = json.loads(await socket.recv())
    assert welcome["type"] == "welcome"
    return socket


async def next_message(socket: ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            frame = await socket.recv()
            if isinstance(frame, str) and (message := json.loads(frame))["type"] == kind:
                return dict(message)


async def closed_with(socket: ClientConnection) -> int:
    """The close code the server sent (its reason must say something too)."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(20):
            while True:
                await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.reason
    return closed.value.rcvd.code


@pytest.fixture
async def room_with_a_bystander(server: RoomServer, make_client: Any) -> Any:
    bystander = await make_client(server).enter("r")
    return bystander


BAD_FRAMES = [
    ("{not json", "invalid_message"),
    ('"just a string"', "invalid_message"),
    ('{"no": "type"}', "invalid_message"),
    ('{"type": "teleport"}', "unknown_type"),
    ('{"type": "presence", "patch": [1, 2]}', "invalid_message"),
    ('{"type": "presence", "patch": {"x": "' + "y" * 600 + '"}}', "presence_too_large"),
    ('{"type": "event", "event": "bad name!", "data": 1}', "invalid_event"),
    ('{"type": "event", "event": "big", "data": "' + "z" * 70_000 + '"}', "invalid_event"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES, ids=[code + str(i) for i, (_, code) in enumerate(BAD_FRAMES)])
async def test_bad_messages_get_an_error_and_the_room_carries_on(server: RoomServer, room_with_a_bystander: Any,
                                                                 frame: str, code: str) -> None:
    bystander = room_with_a_bystander
    socket = await raw(server)
    await socket.send(frame)
    error = await next_message(socket, "error")
    assert error["code"] == code and error["message"]
    # the sender is still connected and the room still works for everyone
    await socket.send(json.dumps({"type": "presence", "patch": {"ok": True}}))
    await until(bystander, lambda: any(user.presence.get("ok") for user in bystander.others))
    await socket.close()


@pytest.mark.parametrize(
    "frame",
    [b"\x07garbage", sync.update(b"\x00\x05\xff\xff"), b""],
    ids=["not-sync", "corrupt-update", "empty"],
)
async def test_bad_binary_frames_are_refused(server: RoomServer, room_with_a_bystander: Any, frame: bytes) -> None:
    socket = await raw(server)
    await socket.send(frame)
    assert (await next_message(socket, "error"))["code"] == "storage_rejected"
    await socket.close()
    assert room_with_a_bystander.state == "open"


async def test_an_oversized_frame_closes_only_its_sender_with_1009(start_server: Any, make_client: Any) -> None:
    server = await start_server(limits=Limits(max_frame_bytes=100_000))
    bystander = await make_client(server).enter("r")
    socket = await raw(server)
    await socket.send(json.dumps({"type": "event", "event": "huge", "data": "x" * 200_000}))
    assert await closed_with(socket) == CloseCode.MESSAGE_TOO_BIG
    await until(bystander, lambda: bystander.others == [])
    assert bystander.state == "open"


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ('{"type": "presence", "patch": {}}', CloseCode.PROTOCOL_ERROR),
        ('{"type": "join", "protocol": 99, "presence": {}}', CloseCode.PROTOCOL_ERROR),
        ('{"type": "join", "protocol": 2, "presence": "me"}', CloseCode.PROTOCOL_ERROR),
        ('{"type": "join", "protocol": 2, "presence": {}, "initial_storage": "%%%"}', CloseCode.PROTOCOL_ERROR),
        (b"\x00\x00\x01\x00", CloseCode.PROTOCOL_ERROR),
    ],
    ids=["not-join", "protocol-99", "presence-string", "bad-storage", "binary"],
)
async def test_a_bad_first_frame_closes_with_protocol_error(server: RoomServer, first: str | bytes, code: int) -> None:
    socket = await connect(f"ws://127.0.0.1:{server.port}/r")
    await socket.send(first)
    assert await closed_with(socket) == code


async def test_no_join_in_time_closes_with_join_timeout(start_server: Any) -> None:
    server = await start_server(limits=Limits(join_timeout_s=0.2))
    socket = await connect(f"ws://127.0.0.1:{server.port}/r")
    assert await closed_with(socket) == CloseCode.JOIN_TIMEOUT


async def test_an_invalid_room_in_the_url_closes_with_invalid_room(server: RoomServer) -> None:
    socket = await connect(f"ws://127.0.0.1:{server.port}/bad%20room")
    assert await closed_with(socket) == CloseCode.INVALID_ROOM


async def test_a_flood_is_paced_not_dropped_and_others_are_unaffected(start_server: Any, make_client: Any) -> None:
    server = await start_server(limits=Limits(max_messages_per_s=200, message_burst=50))
    bystander = await make_client(server).enter("r")
    got: list[Any] = []
    bystander.subscribe.event("n", lambda event: got.append(event.data))
    flooder = await raw(server)
    for i in range(400):
        await flooder.send(json.dumps({"type": "event", "event": "n", "data": i}))
    assert (await next_message(flooder, "error"))["code"] == "rate_limited"
    await until(bystander, lambda: len(got) == 400)
    assert got == list(range(400))  # nothing lost, nothing reordered
    other = await make_client(server).enter("quiet")
    assert other.state == "open"


async def test_a_protocol_1_client_still_joins_and_hears_the_room(server: RoomServer) -> None:
    """A kernel still running pluv-widget 0.1 (protocol 1) against an upgraded server."""
    old = await connect(f"ws://127.0.0.1:{server.port}/r", max_size=None)
    await old.send(json.dumps({"type": "join", "protocol": 1, "presence": {"name": "old"}}))
    assert json.loads(await old.recv())["type"] == "welcome"
    new = await raw(server)
    await new.send(json.dumps({"type": "presence", "patch": {"name": "new"}}))
    heard = await next_message(old, "presence")
    assert heard["patch"] == {"name": "new"}
    await old.close()
    await new.close()
