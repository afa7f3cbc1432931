"""The room core, driven directly: no sockets, no loop."""

from __future__ import annotations

import json
from typing import Any

import pycrdt
import pytest

from pluv_widget.core import Commit, Invoke, Member, Mirror, RoomCore, Send, sync_frame
from pluv_widget.protocol import Limits


def sends(actions: list[Any]) -> list[Send]:
    return [action for action in actions if isinstance(action, Send)]


def message(send: Send) -> dict[str, Any]:
    assert isinstance(send.frame, str)
    decoded: dict[str, Any] = json.loads(send.frame)
    return decoded


def room_with(*ids: str, **options: Any) -> RoomCore:
    core = RoomCore("room", **options)
    for connection_id in ids:
        core.join(Member(connection_id, {"id": connection_id}, {"n": 0}))
    return core


def test_join_welcomes_the_newcomer_with_everyone_and_tells_the_others() -> None:
    core = room_with("a")
    actions = core.join(Member("b", {"id": "b"}, {"x": 1}))
    welcome, joined = sends(actions)
    assert welcome.to == ("b",)
    assert message(welcome)["others"] == [{"connection_id": "a", "user": {"id": "a"}, "presence": {"n": 0}}]
    assert joined.exclude == "b" and message(joined)["type"] == "joined"
    member = {"connection_id": "b", "user": {"id": "b"}, "presence": {"x": 1}}
    assert Mirror({"kind": "join", "member": member}) in actions


def test_presence_patches_merge_and_reach_only_the_others() -> None:
    core = room_with("a", "b")
    (relay,) = sends(core.receive_text("a", '{"type":"presence","patch":{"n":5}}'))
    assert relay.exclude == "a"
    assert message(relay) == {"type": "presence", "connection_id": "a", "patch": {"n": 5}}
    assert core.members["a"].presence == {"n": 5}


def test_presence_over_the_cap_is_refused_and_unchanged() -> None:
    core = room_with("a", "b", limits=Limits(max_presence_bytes=64))
    (error,) = sends(core.receive_text("a", json.dumps({"type": "presence", "patch": {"big": "x" * 100}})))
    assert error.to == ("a",) and message(error)["code"] == "presence_too_large"
    assert core.members["a"].presence == {"n": 0}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ('{"type": 3}', "invalid_message"),
        ('{"type": "launch"}', "unknown_type"),
        ('{"type": "presence", "patch": "x"}', "invalid_message"),
        ('{"type": "event", "event": "no spaces allowed", "data": 1}', "invalid_event"),
        ('{"type": "event", "event": 7, "data": 1}', "invalid_event"),
        ('{"type": "join", "protocol": 1, "presence": {}}', "invalid_message"),
    ],
)
def test_bad_text_frames_answer_the_sender_only(frame: str, code: str) -> None:
    core = room_with("a", "b")
    (error,) = sends(core.receive_text("a", frame))
    assert error.to == ("a",)
    assert message(error)["code"] == code


def test_events_are_stamped_with_the_sender_and_skip_it() -> None:
    core = room_with("a", "b")
    (relay,) = sends(core.receive_text("a", '{"type":"event","event":"wave","data":{"hi":1},"connection_id":"b"}'))
    assert relay.exclude == "a"
    assert message(relay) == {"type": "event", "event": "wave", "data": {"hi": 1}, "connection_id": "a",
                              "user": {"id": "a"}}


def test_an_event_with_a_procedure_is_handed_to_the_adapter() -> None:
    core = room_with("a", procedures={"poll"})
    actions = core.receive_text("a", '{"type":"event","event":"poll","data":{"q":"?"}}')
    assert actions == [Invoke("a", "poll", {"q": "?"})]


def test_leave_tells_everyone_once() -> None:
    core = room_with("a", "b")
    (left,) = sends(core.leave("a"))
    assert message(left) == {"type": "left", "connection_id": "a"}
    assert core.leave("a") == []


def update_appending(*items: str) -> bytes:
    doc = pycrdt.Doc()
    array = doc.get("messages", type=pycrdt.Array)
    for item in items:
        array.append(item)
    return doc.get_update()


def test_storage_updates_are_committed_before_they_are_applied_or_relayed() -> None:
    core = room_with("a", "b")
    update = update_appending("hello")
    frame = sync_frame(pycrdt.YSyncMessageType.SYNC_UPDATE, update)
    assert core.receive_binary("a", frame) == [Commit(update, "a")]
    assert core.doc.get("messages", type=pycrdt.Array).to_py() == []  # not visible before commit
    relay = sends(core.commit(update, ["a"], released=len(update)))[0]
    assert relay.exclude == "a" and relay.frame == frame
    assert core.doc.get("messages", type=pycrdt.Array).to_py() == ["hello"]


def test_sync_step1_gets_the_missing_diff_and_the_servers_state_vector() -> None:
    core = room_with("a")
    update = update_appending("x", "y")
    core.commit(update)
    diff, state = sends(core.receive_binary("a", sync_frame(pycrdt.YSyncMessageType.SYNC_STEP1, b"\x00")))
    joiner = pycrdt.Doc()
    joiner.apply_update(pycrdt.read_message(diff.frame[2:]))  # type: ignore[index]
    assert joiner.get("messages", type=pycrdt.Array).to_py() == ["x", "y"]
    assert state.frame[1] == pycrdt.YSyncMessageType.SYNC_STEP1


@pytest.mark.parametrize(
    "frame",
    [
        b"\x05\x00\x00",  # not a sync message
        b"\x00\x02\x05\x01\x02",  # length does not match
        sync_frame(pycrdt.YSyncMessageType.SYNC_UPDATE, b"\x01\x02garbage"),
    ],
)
def test_corrupt_storage_frames_are_refused_and_change_nothing(frame: bytes) -> None:
    core = room_with("a", "b")
    before = core.doc.get_update()
    (error,) = sends(core.receive_binary("a", frame))
    assert message(error)["code"] == "storage_rejected" and error.to == ("a",)
    assert core.doc.get_update() == before


def test_an_update_past_the_storage_cap_is_refused() -> None:
    core = room_with("a", limits=Limits(max_storage_bytes=1000))
    small = update_appending("ok")
    assert core.receive_binary("a", sync_frame(pycrdt.YSyncMessageType.SYNC_UPDATE, small)) == [Commit(small, "a")]
    big = update_appending("z" * 2000)
    (error,) = sends(core.receive_binary("a", sync_frame(pycrdt.YSyncMessageType.SYNC_UPDATE, big)))
    assert message(error)["code"] == "storage_too_large"


def test_inputs_from_another_process_reach_local_members_without_being_mirrored_again() -> None:
    core = room_with("local")
    actions = core.apply_envelope({"kind": "join", "member": {"connection_id": "far", "user": {"id": "far"},
                                                             "presence": {}}})
    assert not any(isinstance(action, Mirror) for action in actions)
    assert [message(send)["type"] for send in sends(actions)] == ["joined"]
    actions = core.apply_envelope({"kind": "event", "event": "wave", "data": 1, "sender": "far"})
    assert not any(isinstance(action, Mirror) for action in actions)
    assert message(sends(actions)[0])["user"] == {"id": "far"}
