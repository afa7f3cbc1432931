"""Presence, events, membership and isolation between real clients and a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import until
from pydantic import BaseModel, ValidationError

from pluv_widget import RoomEvent
from pluv_widget.server.room_server import RoomServer


class Presence(BaseModel):
    selection_id: str | None = None
    name: str = ""


async def enter_all(make_client: Any, server: RoomServer, room: str, *names: str) -> list[Any]:
    rooms = []
    for name in names:
        client = make_client(server, presence=Presence)
        rooms.append(await client.enter(client.create_room(room, initial_presence={"name": name})))
    return rooms


async def test_three_clients_see_each_others_presence(server: RoomServer, make_client: Any) -> None:
    a, b, c = await enter_all(make_client, server, "class", "ada", "bob", "cy")
    for room in (a, b, c):
        await until(room, lambda room=room: len(room.others) == 2)
    assert sorted(user.presence["name"] for user in c.others) == ["ada", "bob"]
    a.update_my_presence({"selection_id": "m1"})
    for room in (b, c):
        await until(room, lambda room=room: room.other(a.connection_id).presence["selection_id"] == "m1")
    assert a.my_presence == {"selection_id": "m1", "name": "ada"}


async def test_a_joiner_knows_everyone_when_enter_returns(server: RoomServer, make_client: Any) -> None:
    a, b = await enter_all(make_client, server, "r", "ada", "bob")
    a.update_my_presence({"selection_id": "m9"})
    await until(b, lambda: b.other(a.connection_id).presence["selection_id"] == "m9")
    (c,) = await enter_all(make_client, server, "r", "cy")
    assert {user.presence["name"] for user in c.others} == {"ada", "bob"}
    assert c.other(a.connection_id).presence["selection_id"] == "m9"


async def test_events_reach_the_rest_of_the_room_stamped_with_the_sender(server: RoomServer, make_client: Any) -> None:
    a, b, c = await enter_all(make_client, server, "r", "ada", "bob", "cy")
    received: dict[str, list[RoomEvent]] = {"a": [], "b": [], "c": []}
    for key, room in (("a", a), ("b", b), ("c", c)):
        room.subscribe.event("wave", received[key].append)
    a.broadcast("wave", {"hand": "left"})
    await until(b, lambda: received["b"])
    await until(c, lambda: received["c"])
    assert received["b"][0].data == {"hand": "left"}
    assert received["b"][0].connection_id == a.connection_id
    assert received["b"][0].user == {"id": a.connection_id, "role": "teacher"}  # no auth: everyone teaches
    assert received["a"] == []  # the sender does not get its own broadcast


async def test_rooms_are_isolated(server: RoomServer, make_client: Any) -> None:
    (a,) = await enter_all(make_client, server, "one", "ada")
    (b,) = await enter_all(make_client, server, "two", "bob")
    (a2,) = await enter_all(make_client, server, "one", "ann")
    heard: list[RoomEvent] = []
    b.subscribe.event("wave", heard.append)
    got_in_one: list[RoomEvent] = []
    a2.subscribe.event("wave", got_in_one.append)
    a.update_my_presence({"selection_id": "x"})
    a.broadcast("wave", 1)
    await until(a2, lambda: got_in_one and a2.other(a.connection_id).presence["selection_id"] == "x")
    assert b.others == [] and heard == []


async def test_leave_is_seen_by_the_others_and_never_reconnects(server: RoomServer, make_client: Any) -> None:
    a, b = await enter_all(make_client, server, "r", "ada", "bob")
    await until(a, lambda: len(a.others) == 1)
    changes: list[str] = []
    a.subscribe.others(lambda others, change: changes.append(change.kind))
    b_client = b._client
    b_client.leave(b)
    await until(a, lambda: a.others == [])
    assert changes[-1] == "leave"
    assert b.state == "closed"
    await until(b, lambda: b._task is None or b._task.done())
    assert b.state == "closed" and server.connections == 1


async def test_leaving_an_unknown_room_does_nothing(server: RoomServer, make_client: Any) -> None:
    client = make_client(server)
    assert client.leave("never-entered") is None


async def test_entering_twice_returns_the_same_room(server: RoomServer, make_client: Any) -> None:
    client = make_client(server)
    room = await client.enter("r")
    assert await client.enter("r") is room
    assert await client.enter(room) is room
    assert server.connections == 1


async def test_invalid_presence_raises_and_sends_nothing(server: RoomServer, make_client: Any) -> None:
    a, b = await enter_all(make_client, server, "r", "ada", "bob")
    with pytest.raises(ValidationError):
        a.update_my_presence({"selection_id": 42})
    a.update_my_presence({"name": "ada2"})
    await until(b, lambda: b.other(a.connection_id).presence["name"] == "ada2")
    assert b.other(a.connection_id).presence["selection_id"] is None


async def test_initial_presence_is_required_and_validated_with_a_presence_model(server: RoomServer,
                                                                               make_client: Any) -> None:
    client = make_client(server, presence=Presence)
    with pytest.raises(ValueError, match="initial_presence is required"):
        client.create_room("r")
    with pytest.raises(ValidationError):
        client.create_room("r", initial_presence={"name": 3})


@pytest.mark.parametrize("name", ["", "has space", "x" * 200, "../etc", "health", "é"])
async def test_invalid_room_names_are_refused_with_a_clear_error(server: RoomServer, make_client: Any,
                                                                 name: str) -> None:
    client = make_client(server)
    with pytest.raises(ValueError, match="invalid room name"):
        client.create_room(name)


async def test_metadata_is_required_and_validated_before_any_io(server: RoomServer, make_client: Any) -> None:
    class Metadata(BaseModel):
        seat: int

    client = make_client(server, metadata=Metadata)
    with pytest.raises(ValueError, match="metadata is required"):
        await client.enter("r")
    with pytest.raises(ValidationError):
        await client.enter("r", metadata={"seat": "front"})
    assert server.connections == 0
    room = await client.enter("r", metadata={"seat": 3})
    assert room.state == "open"


async def test_anonymous_connections_are_separate_people(server: RoomServer, make_client: Any) -> None:
    *_, c = await enter_all(make_client, server, "r", "same", "same", "other")
    await until(c, lambda: len(c.others) == 2)
    assert {len(user.connection_ids) for user in c.others} == {1}


async def test_subscriptions_report_connection_states_and_unsubscribe(server: RoomServer, make_client: Any) -> None:
    client = make_client(server)
    room = client.create_room("r")
    assert room.state == "untouched"
    states: list[str] = []
    unsubscribe = room.subscribe.connection(states.append)
    await client.enter(room)
    assert states == ["connecting", "open"]
    unsubscribe()
    client.leave(room)
    assert states == ["connecting", "open"]


async def test_my_presence_subscription(server: RoomServer, make_client: Any) -> None:
    (a,) = await enter_all(make_client, server, "r", "ada")
    seen: list[dict[str, Any]] = []
    a.subscribe.my_presence(seen.append)
    a.update_my_presence({"selection_id": "s"})
    await asyncio.sleep(0)
    assert seen == [{"selection_id": "s", "name": "ada"}]


async def test_pluv_style_subscriptions_with_one_argument(server: RoomServer, make_client: Any) -> None:
    (a,) = await enter_all(make_client, server, "r", "ada")
    snapshots: list[list[Any]] = []
    states: list[str] = []
    a.subscribe("others", snapshots.append)
    a.subscribe("connection", states.append)
    (b,) = await enter_all(make_client, server, "r", "bob")
    await until(a, lambda: snapshots and len(snapshots[-1]) == 1)
    assert snapshots[-1][0].connection_id == b.connection_id
    with pytest.raises(ValueError, match="unknown subscription"):
        a.subscribe("nonsense", print)
