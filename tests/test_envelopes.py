"""Envelopes between server processes: their Redis codec, how they change a bus's membership,
and their one dispatch (``ServerRoom.apply_envelope``). No Redis, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pycrdt
import pytest

from pluv_widget.core import Member, Membership, Mirror, Resync, Send, ServerRoom
from pluv_widget.core.envelopes import (
    Envelope,
    EventSent,
    MemberJoined,
    MemberLeft,
    PresencePatched,
    ResyncRequested,
    StorageUpdated,
    decode_envelope,
    encode_envelope,
    own_prefix,
)
from pluv_widget.protocol import MemberInfo

ADA = MemberInfo("c1", {"id": "ada"}, {"x": 1})

EVERY_KIND: list[Envelope] = [
    MemberJoined(ADA, "node-a"),
    MemberLeft("c1", "node-a"),
    PresencePatched("c1", {"x": 2, "é": "ü"}, "node-a"),
    EventSent("wave", {"hi": [1, 2]}, "c1", include_sender=False, node="node-a"),
    EventSent("notice", None, None, node="node-a"),
    StorageUpdated(b"\x00\x01\xff", "node-a"),
    ResyncRequested(reseed=True, node="node-a"),
]


@pytest.mark.parametrize("envelope", EVERY_KIND, ids=lambda envelope: envelope.kind)
def test_every_envelope_survives_the_redis_wire(envelope: Envelope) -> None:
    data = encode_envelope(envelope)
    assert data.startswith(own_prefix("node-a"))  # a node skips its own envelopes undecoded
    assert decode_envelope(data) == envelope


def test_the_wire_shape_is_the_one_the_reaper_script_writes() -> None:
    assert json.loads(encode_envelope(MemberLeft("ghost", "dying"))) == {
        "node": "dying", "kind": "leave", "connection_id": "ghost"}
    # what the Lua reaper publishes (cjson), read back as typed envelopes
    assert decode_envelope(b'{"kind":"leave","connection_id":"ghost","node":"dying"}') == MemberLeft("ghost", "dying")
    assert decode_envelope(b'{"reseed":false,"kind":"resync","node":"dying"}') == ResyncRequested(False, "dying")
    assert json.loads(encode_envelope(StorageUpdated(b"\x01\x02")))["update"] == "AQI="


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1]",
        b'{"kind":"launch"}',
        b'{"kind":"join","member":{"connection_id":1}}',
        b'{"kind":"presence","connection_id":"c","patch":"x"}',
        b'{"kind":"update","update":"%%%"}',
        b'{"kind":"leave"}',
    ],
)
def test_undecodable_envelopes_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_envelope(data)


def test_envelopes_track_a_membership_with_the_one_presence_merge() -> None:
    members = Membership()
    for envelope in [MemberJoined(ADA), PresencePatched("c1", {"y": 3}), EventSent("wave", 1, "c1"),
                     StorageUpdated(b"\x00\x00"), ResyncRequested()]:
        envelope.track(members)
    assert [member.info() for member in members] == [MemberInfo("c1", {"id": "ada"}, {"x": 1, "y": 3})]
    MemberLeft("c1").track(members)
    assert len(members) == 0
    assert {envelope.connection_id for envelope in EVERY_KIND} == {"c1", None}


def sends(actions: list[Any]) -> list[Send]:
    return [action for action in actions if isinstance(action, Send)]


def test_each_kind_is_applied_to_the_room_without_being_mirrored_again() -> None:
    room = ServerRoom("r")
    room.join(Member("here", {"id": "here"}))
    room.tick()
    doc = pycrdt.Doc()
    doc.get("messages", type=pycrdt.Array).append("hi")
    update = doc.get_update()
    applied = [  # joins, leaves and presence go out at the room's next tick (issue 15)
        room.apply_envelope(MemberJoined(ADA, "far")) + room.tick(),
        room.apply_envelope(PresencePatched("c1", {"x": 5}, "far")) + room.tick(),
        room.apply_envelope(EventSent("wave", 1, "c1", node="far")),
        room.apply_envelope(StorageUpdated(update, "far")),
        room.apply_envelope(MemberLeft("c1", "far")) + room.tick(),
    ]
    assert not any(isinstance(action, Mirror) for actions in applied for action in actions)
    assert [len(sends(actions)) for actions in applied] == [1, 1, 1, 1, 1]
    assert room.doc.get("messages", type=pycrdt.Array).to_py() == ["hi"]
    assert "c1" not in room.members
    assert room.apply_envelope(ResyncRequested(reseed=True)) == [Resync(True)]


def test_a_remote_members_presence_is_merged_like_a_local_one() -> None:
    room = ServerRoom("r")
    room.apply_envelope(MemberJoined(ADA, "far"))
    room.apply_envelope(PresencePatched("c1", {"y": 2}, "far"))
    assert room.members["c1"].presence == {"x": 1, "y": 2} and not room.members["c1"].local


def test_local_inputs_are_mirrored_as_typed_envelopes() -> None:
    room = ServerRoom("r")
    mirrored = [action.envelope for action in room.join(Member("c1", {"id": "ada"}, {"x": 1}))
                if isinstance(action, Mirror)]
    mirrored += [action.envelope for action in room.receive_text("c1", '{"type":"presence","patch":{"x":2}}')
                 if isinstance(action, Mirror)]
    mirrored += [action.envelope for action in room.leave("c1") if isinstance(action, Mirror)]
    assert mirrored == [MemberJoined(ADA), PresencePatched("c1", {"x": 2}), MemberLeft("c1")]
