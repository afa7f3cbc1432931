"""One room spread over several real server processes (``pluv-widget serve --redis``) sharing a
real redis-server, with real clients connected to different processes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio
from helpers import until, until_storage
from redis_helpers import RedisServer, ServerProcess

from pluv_widget import PluvRoom, RoomEvent, crdt
from pluv_widget.server.tokens import create_token

LONG_S = 60.0  # deadline for what includes a failover or a Redis restart: the machine is small and shared
SECRET = "a-test-secret-that-is-long-enough-for-hs256"
_rooms = itertools.count()
Spawn = Callable[..., ServerProcess]


def room_name(label: str) -> str:
    """A room of this test alone: tests share the session's Redis."""
    return f"{label}-{time.monotonic_ns()}-{next(_rooms)}"


def storage(*items: str) -> crdt.StorageFactory:
    return crdt.doc(lambda: {"items": crdt.array(list(items))})


def fast_reconnect(attempts: int) -> int:
    return 200


async def enter(make_client: Any, endpoint: str | list[str], room: str, **room_options: Any) -> PluvRoom:
    client = make_client(endpoint, initial_storage=room_options.pop("initial_storage", storage()))
    return await client.enter(client.create_room(room, reconnect_timeout_ms=fast_reconnect, **room_options))


def items(room: PluvRoom) -> list[Any]:
    json = room.storage_json()
    assert json is not None
    return list(json["items"])


async def converged(rooms: list[PluvRoom], count: int, timeout: float = LONG_S) -> list[Any]:
    """Wait until every room's items hold ``count`` entries; they must then be equal."""
    for room in rooms:
        await until_storage(room, "items", lambda value: len(value) == count, timeout)
    documents = [items(room) for room in rooms]
    assert all(document == documents[0] for document in documents), documents
    return documents[0]


def presence_of(room: PluvRoom, connection_id: str | None) -> dict[str, Any]:
    user = room.other(connection_id or "")
    return user.presence if user is not None else {}


def connection_ids(room: PluvRoom) -> set[str]:
    return {connection for user in room.others for connection in user.connection_ids}


async def test_everyone_on_every_process_is_in_the_first_snapshot(
    redis_server: RedisServer, redis_processes: Spawn, make_client: Any
) -> None:
    servers = [redis_processes(redis_server.url, name=f"p{i}") for i in range(3)]
    room = room_name("presence")
    rooms: list[PluvRoom] = []
    for i in range(6):
        entered = await enter(make_client, servers[i % 3].url, room, initial_presence={"name": f"user{i}"})
        # enter() returns on the welcome: its first snapshot already has everyone, on any process.
        assert sorted(user.presence["name"] for user in entered.others) == [f"user{j}" for j in range(i)]
        rooms.append(entered)
    for entered in rooms:
        await until(entered, lambda entered=entered: len(entered.others) == 5)

    rooms[0].update_my_presence({"cursor": 5})
    for other in rooms[1:]:
        await until(other, lambda other=other: presence_of(other, rooms[0].connection_id).get("cursor") == 5)

    waves: dict[int, list[RoomEvent]] = {i: [] for i in range(6)}
    for i, entered in enumerate(rooms):
        entered.subscribe.event("wave", lambda event, i=i: waves[i].append(event))
    rooms[4].broadcast("wave", {"from": 4})
    for i, entered in enumerate(rooms):
        if i != 4:
            await until(entered, lambda i=i: bool(waves[i]))
            assert waves[i][0].data == {"from": 4} and waves[i][0].connection_id == rooms[4].connection_id
    assert waves[4] == []  # not echoed to its sender

    leaving = rooms.pop(2)
    gone = leaving.connection_id
    assert gone is not None
    leaving._client.leave(leaving)
    for entered in rooms:
        await until(entered, lambda entered=entered: gone not in connection_ids(entered))
    for server in servers:
        assert server.health()["redis"] == "ok"


async def test_storage_converges_across_three_processes(
    redis_server: RedisServer, redis_processes: Spawn, make_client: Any
) -> None:
    servers = [redis_processes(redis_server.url, name=f"p{i}") for i in range(3)]
    room = room_name("storage")
    rooms = [await enter(make_client, servers[i % 3].url, room) for i in range(6)]
    for entered in rooms:
        await until(entered, lambda entered=entered: entered.storage_state == "synced")

    async def write(index: int, entered: PluvRoom) -> None:
        for k in range(20):
            entered.storage("items").append(f"{index}:{k}")
            await asyncio.sleep(0)  # interleave the writers

    await asyncio.gather(*(write(i, entered) for i, entered in enumerate(rooms)))
    document = await converged(rooms, 120)
    assert sorted(document) == sorted(f"{i}:{k}" for i in range(6) for k in range(20))


async def test_initial_storage_is_applied_once_when_processes_race(
    redis_server: RedisServer, redis_processes: Spawn, make_client: Any
) -> None:
    servers = [redis_processes(redis_server.url, name=f"p{i}") for i in range(3)]
    room = room_name("race")
    rooms = await asyncio.gather(
        *(enter(make_client, servers[i % 3].url, room, initial_storage=storage(f"initial {i}")) for i in range(9))
    )
    for entered in rooms:
        await until_storage(entered, "items", lambda value: len(value) >= 1)
    # A round trip through every process: a second claim would have shown by now.
    rooms[0].storage("items").append("done")
    document = await converged(list(rooms), 2)
    assert document[0].startswith("initial ") and document[1] == "done"


async def test_a_room_moves_between_processes_with_its_storage(
    redis_server: RedisServer, redis_processes: Spawn, make_client: Any
) -> None:
    a, b = redis_processes(redis_server.url, name="a"), redis_processes(redis_server.url, name="b")
    room = room_name("move")
    writer = await enter(make_client, a.url, room)
    reader = await enter(make_client, a.url, room)
    await until(writer, lambda: writer.storage_state == "synced")
    for k in range(600):  # one stored update each: past the compaction threshold (500)
        writer.storage("items").append(k)
        await asyncio.sleep(0.002)
    await converged([writer, reader], 600)
    # Compacted in Redis as in the SQLite store: a snapshot and a short tail, not 600 updates.
    store = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert int(await store.get(f"pluv:room:{room}:version") or 0) >= 1
        assert await store.llen(f"pluv:room:{room}:updates") < 300  # type: ignore[misc]
    finally:
        await store.aclose()
    for left in (writer, reader):
        left._client.leave(left)
    await a.until_health(lambda health: health["rooms"] == 0)

    on_b = await enter(make_client, b.url, room)
    assert await until_storage(on_b, "items", lambda value: len(value) == 600) == list(range(600))
    on_b.storage("items").append("from b")
    await until_storage(on_b, "items", lambda value: len(value) == 601)
    on_b._client.leave(on_b)
    await b.until_health(lambda health: health["rooms"] == 0)

    back_on_a = await enter(make_client, a.url, room)
    assert (await until_storage(back_on_a, "items", lambda value: len(value) == 601))[-1] == "from b"


async def test_procedures_and_one_users_connections_across_processes(
    redis_server: RedisServer, redis_processes: Spawn, make_client: Any, tmp_path: Path
) -> None:
    app = tmp_path / "vote_app.py"
    app.write_text(
        "from pydantic import BaseModel\n"
        "from pluv_widget import create_io\n"
        "class Vote(BaseModel):\n"
        "    choice: str\n"
        "io = create_io()\n"
        "@io.procedure('vote', input=Vote)\n"
        "def vote(data, ctx):\n"
        "    return {'voted': {'choice': data.choice.upper(), 'by': ctx.user['id']}}\n"
    )
    a, b = (redis_processes(redis_server.url, "--app", f"{app}:io", "--secret", SECRET, name=name) for name in "ab")
    room = room_name("procedures")

    def token_for(user: str) -> Any:
        return lambda room: create_token(SECRET, room=room, user={"id": user}, max_age=600)

    def join(endpoint: str, user: str) -> Any:
        client = make_client(endpoint, auth_endpoint=token_for(user))
        return client.enter(client.create_room(room, reconnect_timeout_ms=fast_reconnect))

    ada_on_a = await join(a.url, "ada")
    bob_on_b = await join(b.url, "bob")
    ada_on_b = await join(b.url, "ada")
    # Ada's two connections, on two processes, are one person with two connections for Bob.
    await until(bob_on_b, lambda: len(bob_on_b.others) == 1 and len(bob_on_b.others[0].connection_ids) == 2)
    assert bob_on_b.others[0].id == "ada"
    assert ada_on_b.others[0].id == "bob"  # and myself is not an "other"

    votes: dict[str, list[RoomEvent]] = {"ada_on_a": [], "bob_on_b": [], "ada_on_b": []}
    for label, entered in (("ada_on_a", ada_on_a), ("bob_on_b", bob_on_b), ("ada_on_b", ada_on_b)):
        entered.subscribe.event("voted", lambda event, label=label: votes[label].append(event))
    errors: list[Any] = []
    ada_on_a.subscribe.error(errors.append)
    ada_on_a.broadcast("vote", {"wrong": 1})  # invalid input: an error to Ada on A only
    await until(ada_on_a, lambda: bool(errors))
    ada_on_a.broadcast("vote", {"choice": "yes"})  # handled on A; the output reaches everyone
    for label, entered in (("ada_on_a", ada_on_a), ("bob_on_b", bob_on_b), ("ada_on_b", ada_on_b)):
        await until(entered, lambda label=label: bool(votes[label]))
        assert [event.data for event in votes[label]] == [{"choice": "YES", "by": "ada"}]
        assert votes[label][0].user == {"id": "ada", "role": "student"}  # a token without a role: a student


async def test_kill_9_a_process_its_clients_fail_over_and_nothing_is_lost(
    redis_server: RedisServer, redis_processes: Spawn, make_client: Any
) -> None:
    a, b, c = (redis_processes(redis_server.url, name=name) for name in "abc")
    room = room_name("failover")
    on_a = [await enter(make_client, [a.url, b.url], room), await enter(make_client, [a.url, c.url], room)]
    on_b = await enter(make_client, b.url, room)
    on_c = await enter(make_client, c.url, room)
    everyone = [*on_a, on_b, on_c]
    for entered in everyone:
        await until(entered, lambda entered=entered: entered.storage_state == "synced" and len(entered.others) == 3)
    for i, entered in enumerate(everyone):
        for k in range(10):
            entered.storage("items").append(f"{i}:{k}")
    await converged(everyone, 40)
    dead = {entered.connection_id for entered in on_a}

    a.kill()
    for i, entered in enumerate(everyone):  # some offline (kept, merged on reconnect), some live
        for k in range(10, 15):
            entered.storage("items").append(f"{i}:{k}")
    for entered in on_a:  # A's clients reconnect to the next endpoint in their list
        await until(
            entered, lambda entered=entered: entered.state == "open" and entered.connection_id not in dead, LONG_S
        )
    started = time.monotonic()
    for entered in (on_b, on_c):  # A's users leave the others' lists once its heartbeat expires
        await until(entered, lambda entered=entered: not connection_ids(entered) & dead, LONG_S)
    assert time.monotonic() - started < LONG_S
    for entered in everyone:
        await until(entered, lambda entered=entered: len(entered.others) == 3, LONG_S)

    document = await converged(everyone, 60)
    assert sorted(document) == sorted(f"{i}:{k}" for i in range(4) for k in range(15))
    late = await enter(make_client, c.url, room)  # and Redis has all of it
    assert sorted(await until_storage(late, "items", lambda value: len(value) == 60)) == sorted(document)
    assert "stopped heartbeating" in b.log() + c.log()


async def test_redis_restarted_empty_loses_nothing(
    own_redis: RedisServer, redis_processes: Spawn, make_client: Any
) -> None:
    a, b = redis_processes(own_redis.url, name="a"), redis_processes(own_redis.url, name="b")
    room = room_name("restart")
    first_a, second_a = await enter(make_client, a.url, room), await enter(make_client, a.url, room)
    on_b = await enter(make_client, b.url, room, initial_presence={"mood": "calm"})
    everyone = [first_a, second_a, on_b]
    for i, entered in enumerate(everyone):
        await until(entered, lambda entered=entered: entered.storage_state == "synced")
        for k in range(5):
            entered.storage("items").append(f"{i}:{k}")
    await converged(everyone, 15)

    own_redis.stop()
    for server in (a, b):
        await server.until_health(lambda health: health["redis"] == "unavailable", LONG_S)
    # Each process keeps serving its own connections: A's two clients still see each other.
    first_a.storage("items").append("outage on a")
    await until_storage(second_a, "items", lambda value: "outage on a" in value)
    on_b.storage("items").append("outage on b")
    on_b.update_my_presence({"mood": "restless"})

    own_redis.start()  # empty: no AOF, no RDB
    for server in (a, b):
        await server.until_health(lambda health: health["redis"] == "ok", LONG_S)
    document = await converged(everyone, 17)
    assert {"outage on a", "outage on b"} <= set(document)
    await until(first_a, lambda: presence_of(first_a, on_b.connection_id).get("mood") == "restless", LONG_S)

    # The room is in Redis again: a process started now loads it all, and initial storage offered
    # by a newcomer is never applied to it.
    c = redis_processes(own_redis.url, name="c")
    late = await enter(make_client, c.url, room, initial_storage=storage("must not appear"))
    assert connection_ids(late) == {entered.connection_id for entered in everyone}  # in the first snapshot
    assert sorted(await until_storage(late, "items", lambda value: len(value) == 17, LONG_S)) == sorted(document)
    late.storage("items").append("after")
    await converged([*everyone, late], 18)
    assert "must not appear" not in items(late)
    assert "Redis lost its data" in a.log() and "Redis lost its data" in b.log()
