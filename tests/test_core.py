"""The room core, driven directly: no sockets, no loop."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pycrdt
import pytest

from pluv_widget.core import Commit, Invoke, Member, Mirror, Send, ServerRoom
from pluv_widget.core.envelopes import EventSent, MemberJoined
from pluv_widget.core.server_room import replay, update_problem
from pluv_widget.protocol import Limits, MemberInfo, decode_sync, sync


def sends(actions: list[Any]) -> list[Send]:
    return [action for action in actions if isinstance(action, Send)]


def message(send: Send) -> dict[str, Any]:
    assert isinstance(send.frame, str)
    decoded: dict[str, Any] = json.loads(send.frame)
    return decoded


def room_with(*ids: str, **options: Any) -> ServerRoom:
    core = ServerRoom("room", **options)
    for connection_id in ids:
        core.join(Member(connection_id, {"id": connection_id}, {"n": 0}))
    core.tick()
    return core


def test_join_welcomes_the_newcomer_with_everyone_and_tells_the_others() -> None:
    core = room_with("a")
    actions = core.join(Member("b", {"id": "b"}, {"x": 1}))
    assert core.has_output
    welcome, joined = sends(actions + core.tick())  # the others hear of it at the tick
    assert welcome.to == ("b",)
    assert message(welcome)["others"] == [["a", {"id": "a"}, {"n": 0}]]  # [connection_id, user, presence]
    assert joined.exclude == "b" and message(joined)["type"] == "joined"
    member = MemberInfo("b", {"id": "b"}, {"x": 1})
    assert Mirror(MemberJoined(member)) in actions


def test_presence_patches_merge_and_reach_only_the_others() -> None:
    core = room_with("a", "b")
    (relay,) = sends(core.receive_text("a", '{"type":"presence","patch":{"n":5}}') + core.tick())
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
        ('{"type": "join", "protocol": 2, "presence": {}}', "invalid_message"),
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
    core.leave("a")
    assert core.leave("a") == [] and core.has_output
    (left,) = sends(core.tick())  # at the end of the loop's turn, with whoever else left in it
    assert message(left) == {"type": "left", "connection_id": "a"}
    assert core.tick() == []


def test_every_mirrored_input_carries_the_core_s_node() -> None:
    """The bus skips a process's own envelopes by their node: an unstamped one would come back."""
    core = ServerRoom("room", node="n1")
    actions = core.join(Member("a", {"id": "a"}, {}))
    actions += core.patch_presence("a", {"x": 1})
    actions += core.emit("e", 1, sender="a")
    actions += core.leave("a")
    mirrored = [action.envelope for action in actions if isinstance(action, Mirror)]
    assert len(mirrored) == 4 and {envelope.node for envelope in mirrored} == {"n1"}


def update_appending(*items: str) -> bytes:
    doc = pycrdt.Doc()
    array = doc.get("messages", type=pycrdt.Array)
    for item in items:
        array.append(item)
    return doc.get_update()


def test_storage_updates_are_committed_before_they_are_applied_or_relayed() -> None:
    core = room_with("a", "b")
    update = update_appending("hello")
    frame = sync.update(update)
    assert core.receive_binary("a", frame) == [Commit(update, "a")]
    assert core.doc.get("messages", type=pycrdt.Array).to_py() == []  # not visible before commit
    batch = core.take_batch()
    assert batch is not None and batch.update == update
    relay = sends(core.commit_batch(batch))[0]
    assert relay.exclude == "a" and relay.frame == frame
    assert core.doc.get("messages", type=pycrdt.Array).to_py() == ["hello"]


def test_sync_step1_gets_the_missing_diff_and_the_servers_state_vector() -> None:
    core = room_with("a")
    update = update_appending("x", "y")
    core.commit(update)
    diff, state = sends(core.receive_binary("a", sync.step1(b"\x00")))
    joiner = pycrdt.Doc()
    joiner.apply_update(pycrdt.read_message(diff.frame[2:]))  # type: ignore[index]
    assert joiner.get("messages", type=pycrdt.Array).to_py() == ["x", "y"]
    assert state.frame[1] == pycrdt.YSyncMessageType.SYNC_STEP1


@pytest.mark.parametrize(
    "frame",
    [
        b"\x05\x00\x00",  # not a sync message
        b"\x00\x02\x05\x01\x02",  # length does not match
        sync.update(b"\x01\x02garbage"),
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
    assert core.receive_binary("a", sync.update(small)) == [Commit(small, "a")]
    big = update_appending("z" * 2000)
    (error,) = sends(core.receive_binary("a", sync.update(big)))
    assert message(error)["code"] == "storage_too_large"


def test_inputs_from_another_process_reach_local_members_without_being_mirrored_again() -> None:
    core = room_with("local")
    actions = core.apply_envelope(MemberJoined(MemberInfo("far", {"id": "far"}, {}))) + core.tick()
    assert not any(isinstance(action, Mirror) for action in actions)
    assert [message(send)["type"] for send in sends(actions)] == ["joined"]
    actions = core.apply_envelope(EventSent("wave", 1, "far"))
    assert not any(isinstance(action, Mirror) for action in actions)
    assert message(sends(actions)[0])["user"] == {"id": "far"}


def test_receive_routes_text_and_binary_frames() -> None:
    core = room_with("a", "b")
    (relay,) = sends(core.receive("a", '{"type":"presence","patch":{"n":1}}') + core.tick())
    assert message(relay)["type"] == "presence"
    update = update_appending("x")
    assert core.receive("a", sync.update(update)) == [Commit(update, "a")]


def test_update_problem_says_why_an_update_cannot_be_applied() -> None:
    assert update_problem(update_appending("fine")) is None
    assert update_problem(b"\x01\x02garbage") is not None


# -- proof before commit, poisoned connections, quarantine -----------------------------------

#: Client 123456 inserts "x" into the root array ``items``.
INSERTS_X = bytes.fromhex("0101c0c407000801056974656d730177017800")
#: The same, with its clock replaced by a 7-byte varuint: pycrdt 0.14.13 panics in BlockStore::push.
CLOCK_OVERFLOW = bytes.fromhex("0101c0c407ffffffffffff010801056974656d730177017800")
#: Found by tests/fuzz_server.py: passes ``check_update`` and ``pycrdt.get_state``, but pycrdt
#: cannot apply it after FUZZ_BASE ("block parent ... must be deleted or shared ref type").
FUZZ_BASE = bytes.fromhex("0101ebd0caab05000801056974656d73017e00")
FUZZ_MUTANT = bytes.fromhex(
    "0104ebd0caab05012701056e6f746573026b31012800ebd0caab05010176017c3f8000002700ebd0caab0501"
    "0174020400ebd0caab050002686900")


def items_room(*ids: str) -> ServerRoom:
    core = room_with(*ids)
    core.load([update_with_items()])
    return core


def update_with_items() -> bytes:
    doc = pycrdt.Doc()
    doc.get("items", type=pycrdt.Array)
    doc.get("items", type=pycrdt.Array).append("seed")
    return doc.get_update()


def codes(actions: list[Any]) -> list[str]:
    return [message(send)["code"] for send in sends(actions) if message(send)["type"] == "error"]


def commit_all(core: ServerRoom) -> None:
    batch = core.take_batch()
    if batch:
        core.commit_batch(batch)


def test_hostile_updates_are_refused_before_they_count_and_the_room_stays_usable() -> None:
    core = items_room("a", "b")
    assert core.receive_binary("a", sync.update(INSERTS_X)) == [Commit(INSERTS_X, "a")]
    commit_all(core)
    assert codes(core.receive_binary("a", sync.update(CLOCK_OVERFLOW))) == ["storage_rejected"]
    # a mutant that pycrdt's own decoder accepts but cannot apply: the proof refuses it
    assert update_problem(FUZZ_MUTANT) is not None
    assert pycrdt.get_state(FUZZ_MUTANT)  # get_state alone would have let it through
    assert codes(core.receive_binary("b", sync.update(FUZZ_BASE))) == []
    commit_all(core)
    assert codes(core.receive_binary("b", sync.update(FUZZ_MUTANT))) == ["storage_rejected"]
    assert core.pending == deque() and core.pending_bytes == 0
    # the committed document and the proof are fine: an honest edit still goes through
    honest = pycrdt.Doc()
    honest.apply_update(core.doc.get_update())
    before = honest.get_state()
    honest.get("items", type=pycrdt.Array).append("after")
    edit = honest.get_update(before)
    assert codes(core.receive_binary("c", sync.update(edit))) == []
    commit_all(core)
    assert (core.doc.get("items", type=pycrdt.Array).to_py() or [])[-1] == "after"


def test_after_a_permanent_refusal_later_updates_are_refused_until_the_connection_starts_over() -> None:
    core = items_room("a")
    assert codes(core.receive_binary("a", sync.update(CLOCK_OVERFLOW))) == ["storage_rejected"]
    (refused,) = sends(core.receive_binary("a", sync.update(update_appending("later"))))
    assert message(refused)["code"] == "storage_rejected" and "earlier update" in message(refused)["message"]
    assert core.pending == deque()
    core.receive_binary("a", sync.step1(b"\x00"))  # starts over under a new client id
    fresh = update_appending("fresh")
    assert core.receive_binary("a", sync.update(fresh)) == [Commit(fresh, "a")]


def test_updates_with_missing_dependencies_are_refused_transiently_never_kept_pending() -> None:
    doc = pycrdt.Doc()
    array = doc.get("messages", type=pycrdt.Array)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    array.append("one")
    array.append("two")
    core = room_with("a")
    assert codes(core.receive_binary("a", sync.update(updates[1]))) == ["storage_unavailable"]
    assert core.pending == deque()
    # the client sends everything the server lacks: both apply
    assert codes(core.receive_binary("a", sync.update(doc.get_update()))) == []
    commit_all(core)
    assert core.doc.get("messages", type=pycrdt.Array).to_py() == ["one", "two"]


def test_a_failed_commit_refuses_the_batch_and_its_dependents_transiently() -> None:
    doc = pycrdt.Doc()
    array = doc.get("messages", type=pycrdt.Array)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    array.append("one")
    core = room_with("a", "b")
    core.receive_binary("a", sync.update(updates[0]))
    batch = core.take_batch()
    assert batch is not None
    array.append("two")  # depends on "one", which is being stored
    independent = update_appending("b's")
    assert codes(core.receive_binary("a", sync.update(updates[1]))) == []
    assert codes(core.receive_binary("b", sync.update(independent))) == []
    actions = core.batch_failed(batch, "disk full")
    assert sorted(codes(actions)) == ["storage_unavailable", "storage_unavailable"]
    assert [commit.update for commit in core.pending] == [independent]
    assert "a" not in core.poisoned  # transient: the client sends its edits again
    commit_all(core)
    assert core.doc.get("messages", type=pycrdt.Array).to_py() == ["b's"]
    assert codes(core.receive_binary("a", sync.update(doc.get_update()))) == []


def test_loading_quarantines_stored_updates_that_no_longer_apply() -> None:
    stored = [update_with_items(), INSERTS_X, CLOCK_OVERFLOW, FUZZ_BASE, FUZZ_MUTANT, update_appending("m")]
    result = replay(stored)
    assert [update for update, _ in result.quarantined] == [CLOCK_OVERFLOW, FUZZ_MUTANT]
    core = ServerRoom("room")
    bad = core.load_stored(stored)
    assert [update for update, _ in bad] == [CLOCK_OVERFLOW, FUZZ_MUTANT]
    assert all(reason for _, reason in bad)
    assert sorted(map(str, core.doc.get("items", type=pycrdt.Array).to_py() or [])) == ["None", "seed", "x"]
    assert core.doc.get("messages", type=pycrdt.Array).to_py() == ["m"]


def test_missing_dependencies_are_found_even_when_the_proof_state_is_known() -> None:
    """The proof document's state vector is cached between updates: an update that refers to
    another client's item the server never saw must still be refused, not kept pending."""
    ada: pycrdt.Doc[Any] = pycrdt.Doc(client_id=11)
    bob: pycrdt.Doc[Any] = pycrdt.Doc(client_id=22)
    ada_items = ada.get("messages", type=pycrdt.Array)
    bob_items = bob.get("messages", type=pycrdt.Array)
    ada_items.append("from ada")  # never reaches the server
    bob.apply_update(ada.get_update())
    before = bob.get_state()
    bob_items.append("from bob, after ada's")  # its origin is ada's item
    bobs_own = bob.get_update(before)
    carol: pycrdt.Doc[Any] = pycrdt.Doc(client_id=33)
    carol.get("messages", type=pycrdt.Array).append("from carol")
    core = room_with("a", "b")
    assert codes(core.receive_binary("a", sync.update(carol.get_update()))) == []  # the state is now cached
    assert codes(core.receive_binary("a", sync.update(carol.get_update()))) == []  # a duplicate: known
    assert codes(core.receive_binary("b", sync.update(bobs_own))) == ["storage_unavailable"]
    commit_all(core)
    assert core.doc.get("messages", type=pycrdt.Array).to_py() == ["from carol"]
    # with ada's item, bob's update applies
    assert codes(core.receive_binary("b", sync.update(bob.get_update()))) == []
    commit_all(core)
    assert sorted(core.doc.get("messages", type=pycrdt.Array).to_py()) == [
        "from ada", "from bob, after ada's", "from carol"]


def test_a_batch_of_several_updates_is_persisted_applied_and_relayed_as_one_diff() -> None:
    core = room_with("a", "b", "c")
    writer: pycrdt.Doc[Any] = pycrdt.Doc()
    array = writer.get("messages", type=pycrdt.Array)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    for text in ("one", "two", "three"):
        array.append(text)
    del array[0]
    for update in updates:
        assert core.receive_binary("a", sync.update(update)) == [Commit(update, "a")]
    assert codes(core.receive_binary("b", sync.update(update_appending("b's")))) == []
    batch = core.take_batch()
    assert batch is not None and len(batch.commits) == 5 and batch.parts == (batch.update,)
    relay = sends(core.commit_batch(batch))[0]
    assert relay.exclude is None  # two senders: everyone gets the frame
    expected = ["two", "three", "b's"]
    assert sorted(core.doc.get("messages", type=pycrdt.Array).to_py()) == sorted(expected)
    for stored_or_relayed in (batch.update, decode_sync(relay.frame).payload):  # type: ignore[arg-type]
        reader: pycrdt.Doc[Any] = pycrdt.Doc()
        reader.apply_update(stored_or_relayed)
        assert sorted(reader.get("messages", type=pycrdt.Array).to_py()) == sorted(expected)
    assert core.storage_bytes == len(batch.update) and core.pending_bytes == 0
