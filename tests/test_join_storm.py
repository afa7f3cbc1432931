"""Issue 15: join storms and presence coalesced per tick — the core, the wire, the client core, and
hundreds of real clients on a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from helpers import DEADLINE_S, until
from websockets.asyncio.client import connect

from pluv_widget.core import Member, Send, ServerRoom
from pluv_widget.core.client_room import ClientRoom
from pluv_widget.core.envelopes import MemberJoined
from pluv_widget.protocol import (
    PROTOCOL_VERSION,
    Limits,
    MemberInfo,
    MembersJoined,
    MembersLeft,
    PresenceBatch,
    PresenceUpdate,
    ProtocolError,
    Welcome,
    decode_server_message,
)
from pluv_widget.server.room_server import RoomServer


def sends(actions: list[Any]) -> list[Send]:
    return [action for action in actions if isinstance(action, Send)]


def decoded(send: Send) -> dict[str, Any]:
    assert isinstance(send.frame, str)
    value: dict[str, Any] = json.loads(send.frame)
    return value


def member(connection_id: str, **presence: Any) -> Member:
    return Member(connection_id, {"id": connection_id}, dict(presence))


# -- the core ------------------------------------------------------------------------------------


def test_a_storm_of_joins_is_one_joined_frame_at_the_tick() -> None:
    core = ServerRoom("r")
    core.join(member("old"))
    core.tick()
    welcomes = []
    for i in range(50):
        actions = core.join(member(f"c{i}", n=i))
        (welcome,) = sends(actions)  # the joiner's welcome only: nobody else hears of it yet
        welcomes.append(decoded(welcome))
    assert core.has_output
    (joined,) = sends(core.tick())
    assert not core.has_output and core.tick() == []
    assert joined.to is None and joined.exclude is None  # everyone, the joiners too
    message = decoded(joined)
    assert [m[0] for m in message["members"]] == [f"c{i}" for i in range(50)]  # [connection_id, user, presence]
    assert message["members"][7] == ["c7", {"id": "c7"}, {"n": 7}]
    # Each welcome lists those announced before; the tick's batch (which reaches the joiners
    # too) the rest: nobody is sent twice to a joiner.
    assert [w["others"] for w in welcomes] == [[["old", {"id": "old"}, {}]]] * 50


def test_a_member_from_another_process_is_in_the_next_welcome_even_before_the_tick() -> None:
    core = ServerRoom("r")
    core.apply_envelope(MemberJoined(MemberInfo("far", {"id": "far"}, {})))
    (welcome,) = sends(core.join(member("near")))
    assert [other[0] for other in decoded(welcome)["others"]] == ["far"]


def test_a_single_join_keeps_the_single_form() -> None:
    core = ServerRoom("r")
    core.join(member("a"))
    core.tick()
    core.join(member("b", x=1))
    (joined,) = sends(core.tick())
    assert joined.exclude == "b"
    assert decoded(joined) == {"type": "joined", "connection_id": "b", "user": {"id": "b"}, "presence": {"x": 1}}


def test_welcome_lists_members_with_their_latest_presence() -> None:
    core = ServerRoom("r")
    core.join(member("a", n=0))
    core.patch_presence("a", {"n": 1})
    core.tick()
    (welcome,) = sends(core.join(member("b")))
    assert decoded(welcome)["others"] == [["a", {"id": "a"}, {"n": 1}]]
    core.patch_presence("a", {"n": 2, "s": "x"})  # the cached encoding of a is refreshed
    core.tick()
    (welcome,) = sends(core.join(member("c")))
    assert decoded(welcome)["others"][0][2] == {"n": 2, "s": "x"}


def test_a_member_who_leaves_before_the_tick_is_never_announced() -> None:
    core = ServerRoom("r")
    core.join(member("a"))
    core.tick()
    core.join(member("b"))
    core.patch_presence("b", {"n": 1})
    assert sends(core.leave("b")) == []
    (left,) = sends(core.tick())  # its left only (a joiner of this tick may have it in its welcome)
    assert decoded(left) == {"type": "left", "connection_id": "b"}
    assert core.tick() == [] and not core.has_output


def test_a_storm_of_leaves_is_one_left_frame_at_the_tick() -> None:
    core = ServerRoom("r")
    for i in range(50):
        core.join(member(f"c{i}"))
    core.tick()
    for i in range(40):
        assert sends(core.leave(f"c{i}")) == []
    (left,) = sends(core.tick())
    assert left.to is None and decoded(left) == {"type": "left", "connection_ids": [f"c{i}" for i in range(40)]}
    assert decode_server_message(left.frame) == MembersLeft(tuple(f"c{i}" for i in range(40)))


def test_presence_is_coalesced_per_tick_keeping_each_senders_latest_state() -> None:
    core = ServerRoom("r")
    for name in ("a", "b", "c"):
        core.join(member(name))
    core.tick()
    for seq in range(5):
        for name in ("a", "b"):
            assert sends(core.receive_text(name, json.dumps({"type": "presence", "patch": {"s": seq}}))) == []
    core.patch_presence("a", {"x": 1})  # a later patch of another key merges with the earlier ones
    (batch,) = sends(core.tick())
    assert batch.to is None and batch.exclude is None
    assert decoded(batch) == {"type": "presence", "updates": [["a", {"s": 4, "x": 1}], ["b", {"s": 4}]]}
    assert core.members["a"].presence == {"s": 4, "x": 1}
    core.patch_presence("c", {"s": 9})
    (single,) = sends(core.tick())  # one sender: the single form, not sent back to it
    assert single.exclude == "c" and decoded(single) == {"type": "presence", "connection_id": "c", "patch": {"s": 9}}


def test_joins_go_before_presence_and_events_after_both() -> None:
    core = ServerRoom("r")
    core.join(member("a"))
    core.tick()
    core.join(member("b"))
    core.patch_presence("b", {"n": 1})
    core.patch_presence("a", {"n": 2})
    frames = [decoded(send)["type"] for send in sends(core.emit("wave", None, sender="a"))]
    assert frames == ["joined", "presence", "event"]  # an event never overtakes its sender's presence
    assert not core.has_output


def test_clients_of_older_protocols_are_sent_the_forms_they_read() -> None:
    """A kernel still on pluv-widget 0.1 (protocol 1) or 0.2 (2) in a room of current clients."""
    core = ServerRoom("r")
    core.join(member("one"), protocol=1)
    core.join(member("two"), protocol=2)
    core.join(member("three"))
    core.tick()
    (welcome,) = sends(core.join(member("late2"), protocol=2))
    assert decoded(welcome)["others"][0] == {"connection_id": "one", "user": {"id": "one"}, "presence": {}}
    core.join(member("a", n=1))
    for name in ("one", "a"):
        core.patch_presence(name, {"p": name})
    frames = [(send.to, decoded(send)) for send in sends(core.tick())]
    by_recipient: dict[str, list[dict[str, Any]]] = {}
    for to, message in frames:
        assert to is not None
        for recipient in to:
            by_recipient.setdefault(recipient, []).append(message)
    assert by_recipient["three"][0]["members"][1] == ["a", {"id": "a"}, {"n": 1, "p": "a"}]  # as at the tick
    assert by_recipient["three"][1]["updates"] == [["one", {"p": "one"}], ["a", {"p": "a"}]]
    assert by_recipient["two"][0]["members"][1] == {"connection_id": "a", "user": {"id": "a"},
                                                    "presence": {"n": 1, "p": "a"}}
    assert by_recipient["two"][1]["updates"][0] == {"connection_id": "one", "patch": {"p": "one"}}
    # Protocol 1 has no lists: one frame per member and per patch, never its own.
    assert by_recipient["one"] == [
        {"type": "joined", "connection_id": "late2", "user": {"id": "late2"}, "presence": {}},
        {"type": "joined", "connection_id": "a", "user": {"id": "a"}, "presence": {"n": 1, "p": "a"}},
        {"type": "presence", "connection_id": "a", "patch": {"p": "a"}}]
    # Leaves: one list for protocol 3; protocols 1 and 2 had none, so one frame per leave.
    core.leave("a")
    core.leave("late2")
    heard: dict[str, list[dict[str, Any]]] = {}
    for send in sends(core.tick()):
        assert send.to is not None
        for recipient in send.to:
            heard.setdefault(recipient, []).append(decoded(send))
    assert heard["three"] == [{"type": "left", "connection_ids": ["a", "late2"]}]
    assert heard["two"] == heard["one"] == [{"type": "left", "connection_id": "a"},
                                             {"type": "left", "connection_id": "late2"}]


# -- the wire ------------------------------------------------------------------------------------


def test_the_coalesced_forms_round_trip_and_are_validated() -> None:
    infos = (MemberInfo("a", {"id": "a"}, {"n": 1}), MemberInfo("b", {"id": "b"}, {}))
    assert decode_server_message(MembersJoined(infos).encode()) == MembersJoined(infos)
    batch = PresenceBatch((PresenceUpdate({"n": 1}, "a"), PresenceUpdate({}, "b")))
    assert decode_server_message(batch.encode()) == batch
    welcome = Welcome("r", "me", {"id": "me"}, {}, infos)
    assert decode_server_message(welcome.encode()) == welcome
    spliced = Welcome("r", "me", {"id": "me"}, {}, encoded_others=[info.encode() for info in infos])
    assert decode_server_message(spliced.encode()) == welcome
    for compact in (True, False):  # protocol 3's arrays and the objects older clients are sent
        assert decode_server_message(MembersJoined(infos).encode(compact=compact)) == MembersJoined(infos)
        assert decode_server_message(batch.encode(compact=compact)) == batch
        assert decode_server_message(Welcome("r", "me", {"id": "me"}, {}, infos, compact=compact).encode()) == welcome
    for bad in ('{"type":"joined","members":[]}', '{"type":"joined","members":[{"user":{"id":"x"}}]}',
                '{"type":"presence","updates":[{"patch":{}}]}', '{"type":"presence","updates":{}}',
                '{"type":"presence","updates":[{"connection_id":"a","patch":1}]}',
                '{"type":"joined","members":[["a",{"id":"a"}]]}', '{"type":"joined","members":[[1,{"id":"a"},{}]]}',
                '{"type":"presence","updates":[["a"]]}', '{"type":"presence","updates":[["a",{},{}]]}',
                '{"type":"left","connection_ids":[]}', '{"type":"left","connection_ids":["a",1]}'):
        with pytest.raises(ProtocolError):
            decode_server_message(bad)


def test_the_client_core_takes_coalesced_frames_and_skips_its_own_entries() -> None:
    room = ClientRoom("r", presence={"n": 0}, root_types=None, initial_storage=None,
                      reconnect_timeout_ms=1_000, random=lambda: 0.0)
    room.start()
    room.connecting()
    room.opened()
    room.receive_text(Welcome("r", "me", {"id": "me"}, {"n": 0}, (MemberInfo("a", {"id": "a"}, {}),)).encode())
    room.notifications()
    room.receive_text(MembersJoined((MemberInfo("a", {"id": "a"}, {"n": 3}), MemberInfo("me", {"id": "me"}, {}),
                                     MemberInfo("b", {"id": "b"}, {"n": 4}))).encode())
    assert sorted(user.id for user in room.others) == ["a", "b"]
    changes = [note.args[1].kind for note in room.notifications() if note.topic == "others"]
    assert changes == ["update", "enter"]  # a was known (from the welcome), b is new, me is skipped
    room.receive_text(PresenceBatch((PresenceUpdate({"n": 5}, "a"), PresenceUpdate({"n": 99}, "me"),
                                     PresenceUpdate({"n": 6}, "b"))).encode())
    assert {user.id: user.presence for user in room.others} == {"a": {"n": 5}, "b": {"n": 6}}
    assert room.presence == {"n": 0}  # my own echo changes nothing
    room.notifications()
    room.receive_text(MembersLeft(("a", "b", "never-here")).encode())
    assert room.others == []
    assert [note.args[1].kind for note in room.notifications() if note.topic == "others"] == ["leave", "leave"]


# -- real clients, a real server -----------------------------------------------------------------

STORM = 300
#: One machine plays every student here: let its sockets in as if they came from many.
MANY_MACHINES = Limits(max_pending_per_address=4 * STORM, max_connections_per_address=4 * STORM)


class Observer:
    """A raw socket in the room that records every text frame the server sends it: one frame of
    a kind per broadcast, however many others got it too."""

    def __init__(self, server: RoomServer, room: str) -> None:
        self.url = f"ws://127.0.0.1:{server.port}/{room}"
        self.frames: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        socket = await connect(self.url)
        await socket.send(json.dumps({"type": "join", "protocol": PROTOCOL_VERSION, "presence": {}}))
        joined = asyncio.Event()

        async def read() -> None:
            async for frame in socket:
                if isinstance(frame, str):
                    self.frames.append(json.loads(frame))
                    joined.set()

        self.socket = socket
        self.task = asyncio.create_task(read())
        await asyncio.wait_for(joined.wait(), DEADLINE_S)
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.socket.close()
        assert self.task is not None
        await self.task

    def count(self, kind: str) -> int:
        return sum(frame["type"] == kind for frame in self.frames)


async def test_a_storm_of_real_clients_all_end_with_everyone_and_their_presence(
    start_server: Any, make_client: Any
) -> None:
    server: RoomServer = await start_server(limits=MANY_MACHINES)
    async with Observer(server, "storm") as observer:
        clients = [make_client(server) for _ in range(STORM)]
        rooms = await asyncio.wait_for(asyncio.gather(*(
            client.enter(client.create_room("storm", initial_presence={"n": i}))
            for i, client in enumerate(clients))), DEADLINE_S * 3)
        expected = {room.connection_id: {"n": i} for i, room in enumerate(rooms)}
        for room in rooms:
            await until(room, lambda room=room: len(room.others) == STORM, DEADLINE_S * 3)  # + the observer
            assert {user.connection_id: user.presence for user in room.others
                    if user.connection_id in expected} == {
                cid: presence for cid, presence in expected.items() if cid != room.connection_id}
        assert len({room.connection_id for room in rooms}) == STORM  # every one was welcomed
        # One ``joined`` per tick, not one per join (today's storms put several joins in each tick).
        joined = observer.count("joined")
        assert 0 < joined < STORM // 2, joined
        # The class closes its laptops at once: a few ``left`` frames name every one of them.
        await asyncio.wait_for(asyncio.gather(*(client.aclose() for client in clients)), DEADLINE_S * 3)

        def gone() -> set[str]:
            return {c for frame in observer.frames if frame["type"] == "left"
                    for c in frame.get("connection_ids", [frame.get("connection_id")])}

        async with asyncio.timeout(DEADLINE_S):
            while gone() != set(expected):
                await asyncio.sleep(0.05)
        left = observer.count("left")
        assert 0 < left < STORM // 2, left


async def test_a_presence_burst_arrives_coalesced_with_every_senders_latest_state(
    start_server: Any, make_client: Any
) -> None:
    senders, updates = 20, 10
    server: RoomServer = await start_server()
    clients = [make_client(server) for _ in range(senders)]
    rooms = [await client.enter(client.create_room("burst", initial_presence={"s": -1})) for client in clients]
    async with Observer(server, "burst") as observer:
        for room in rooms:
            await until(room, lambda room=room: len(room.others) == senders)  # + the observer
        observer.frames.clear()
        for seq in range(updates):
            for room in rooms:
                room.update_my_presence({"s": seq})
            await asyncio.sleep(0)
        for room in rooms:
            await until(room, lambda room=room: all(user.presence.get("s", updates - 1) == updates - 1
                                                    for user in room.others))
        presence = [frame for frame in observer.frames if frame["type"] == "presence"]
        patches = [update[0] if "updates" in frame else frame["connection_id"]  # a batch, or one patch
                   for frame in presence for update in frame.get("updates", [None])]
        assert len(set(patches)) == senders
        # Fewer frames than the patches they carry (one frame per patch before issue 15).
        assert 0 < len(presence) < len(patches) // 2, (len(presence), len(patches))
