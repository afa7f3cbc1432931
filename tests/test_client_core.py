"""The client core alone: plain function calls, no sockets, no loop, no clock, no randomness.

A tiny in-test relay plays the server with the protocol's own encoders, so two or three cores
can share a room and exchange frames deterministically.
"""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from pluv_widget import crdt
from pluv_widget.core.client_room import (
    ClientRoom,
    Closed,
    Fail,
    Notification,
    Reconnect,
)
from pluv_widget.errors import AuthorizationError
from pluv_widget.protocol import (
    EMPTY_UPDATE,
    CloseCode,
    ErrorCode,
    ErrorMessage,
    Event,
    Join,
    Joined,
    Left,
    Limits,
    MemberInfo,
    PresenceUpdate,
    ProtocolError,
    SyncStep,
    Welcome,
    decode_client_message,
    decode_sync,
    sync,
)

MESSAGES = crdt.doc(lambda: {"messages": crdt.array([])})


def core(name: str = "r", *, presence: dict[str, Any] | None = None, storage: crdt.StorageFactory | None = MESSAGES,
         timeout: Any = 1_000, jitter: float = 0.0, on_edit: Any = None) -> ClientRoom:
    return ClientRoom(name, presence=presence or {}, root_types=storage.root_types if storage else None,
                      initial_storage=storage.encode if storage else None, reconnect_timeout_ms=timeout,
                      random=lambda: jitter, on_edit=on_edit)


class Relay:
    """The server's part, just enough: welcome, sync, stamping and relaying, leaving."""

    def __init__(self) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.connected: dict[str, tuple[ClientRoom, dict[str, Any], dict[str, Any]]] = {}
        self.count = 0
        self.seen: dict[str, list[str | bytes]] = {}
        # Storage refusals, as the server's contract has them: an update above ``max_update``
        # bytes is refused for good, and so is every later update of that connection until it
        # sends a sync step 1 with an empty state vector; ``unavailable``: the store fails.
        self.max_update: int | None = None
        self.unavailable = False
        self.poisoned: dict[str, str] = {}
        self.honours_reload = True
        self.refusals: list[str] = []

    def connect(self, room: ClientRoom, user_id: str | None = None) -> str:
        room.connecting()
        room.opened()
        join_frame, step1 = room.data_to_send()
        join = Join.decode(join_frame, Limits())
        assert isinstance(step1, bytes)
        self.count += 1
        cid = f"c{self.count}"
        user = {"id": user_id or cid}
        if join.initial_storage is not None and self.doc.get_state() == b"\x00":
            self.doc.apply_update(join.initial_storage)
        others = tuple(MemberInfo(other, u, p) for other, (_, u, p) in self.connected.items())
        room.receive_text(Welcome("r", cid, user, join.presence, others).encode())
        room.receive_binary(sync.step2(self.doc.get_update(decode_sync(step1).payload)))
        room.receive_binary(sync.step1(self.doc.get_state()))
        self._to_others(cid, Joined(MemberInfo(cid, user, join.presence)).encode())
        self.connected[cid] = (room, user, dict(join.presence))
        self.pump()
        return cid

    def drop(self, cid: str, code: int | None = None) -> Any:
        room, _, _ = self.connected.pop(cid)
        self.pump()
        room.data_to_send()  # whatever it still wanted to send is lost with the socket
        self._to_others(cid, Left(cid).encode())
        return room.closed(code, "")

    def pump(self) -> None:
        """Deliver every frame any connected core wants to send, until all is quiet."""
        busy = True
        while busy:
            busy = False
            for cid, (room, user, presence) in list(self.connected.items()):
                for frame in room.data_to_send():
                    busy = True
                    self.seen.setdefault(cid, []).append(frame)
                    if isinstance(frame, bytes):
                        message = decode_sync(frame)
                        if message.step == SyncStep.STEP1:
                            if message.payload == b"\x00" and self.honours_reload:
                                self.poisoned.pop(cid, None)
                            room.receive_binary(sync.step2(self.doc.get_update(message.payload)))
                            room.receive_binary(sync.step1(self.doc.get_state()))
                        elif message.payload != EMPTY_UPDATE:
                            refusal = self._refusal(cid, message.payload)
                            if refusal is not None:
                                self.refusals.append(refusal)
                                room.receive_text(ErrorMessage(refusal, "refused").encode())
                                continue
                            self.doc.apply_update(message.payload)
                            self._to_others(cid, sync.update(message.payload))
                        continue
                    decoded = decode_client_message(frame, Limits())
                    if isinstance(decoded, PresenceUpdate):
                        presence.update(decoded.patch)
                        self._to_others(cid, PresenceUpdate(decoded.patch, cid).encode())
                    else:
                        stamped = Event(decoded.event, decoded.data, cid, user, stamped=True)
                        self._to_others(cid, stamped.encode())

    def _refusal(self, cid: str, update: bytes) -> str | None:
        if cid in self.poisoned:
            return self.poisoned[cid]
        if self.max_update is not None and len(update) > self.max_update:
            self.poisoned[cid] = ErrorCode.STORAGE_TOO_LARGE
            return self.poisoned[cid]
        return ErrorCode.STORAGE_UNAVAILABLE if self.unavailable else None

    def _to_others(self, sender: str, frame: str | bytes) -> None:
        for cid, (room, _, _) in self.connected.items():
            if cid != sender:
                if isinstance(frame, str):
                    room.receive_text(frame)
                else:
                    room.receive_binary(frame)


def topics(notes: list[Notification]) -> list[str]:
    return [note.topic for note in notes]


def messages(room: ClientRoom) -> list[Any]:
    return room.roots["messages"].to_py()  # type: ignore[no-any-return]


# -- join and sync ---------------------------------------------------------------------------------


def test_opening_sends_join_then_the_state_vector() -> None:
    room = core(presence={"name": "ada"})
    room.start(metadata={"seat": 3})
    room.connecting()
    assert room.state == "connecting"
    room.opened()
    join_frame, step1 = room.data_to_send()
    join = Join.decode(join_frame, Limits())
    assert join.presence == {"name": "ada"} and join.metadata == {"seat": 3}
    assert join.initial_storage is not None  # offered while storage is loading
    assert isinstance(step1, bytes) and decode_sync(step1).step == SyncStep.STEP1
    assert topics(room.notifications()) == ["connection"]


def test_welcome_then_step2_enters_the_room() -> None:
    room = core()
    room.opened()
    room.data_to_send()
    other = MemberInfo("c1", {"id": "c1"}, {"name": "bob"})
    room.receive_text(Welcome("r", "c2", {"id": "c2"}, {}, (other,)).encode())
    assert room.state == "open" and room.connection_id == "c2" and not room.entered
    assert room.storage_state == "loading"
    server: pycrdt.Doc[Any] = pycrdt.Doc()
    server.get("messages", type=pycrdt.Array).append("hello")
    room.receive_binary(sync.step2(server.get_update()))
    assert room.entered and room.storage_state == "synced" and messages(room) == ["hello"]
    assert [user.presence for user in room.others] == [{"name": "bob"}]
    notes = room.notifications()
    assert topics(notes) == ["connection", "others", "storage_state"]
    assert notes[1].args[1].kind == "enter"


def test_the_servers_step1_is_answered_with_what_it_lacks() -> None:
    room = core()
    relay = Relay()
    relay.connect(room)
    room.roots["messages"].append("local")
    assert room.pending_updates == 1  # the core observes its document
    server_state = pycrdt.Doc().get_state()
    room.receive_binary(sync.step1(server_state))
    (answer,) = room.data_to_send()
    assert isinstance(answer, bytes)
    message = decode_sync(answer)
    assert message.step == SyncStep.STEP2
    copy: pycrdt.Doc[Any] = pycrdt.Doc()
    copy.apply_update(message.payload)
    assert copy.get("messages", type=pycrdt.Array).to_py() == ["local"]
    assert room.pending_updates == 0  # the answer carried it


def test_initial_storage_is_offered_only_before_the_first_sync() -> None:
    relay = Relay()
    room = core(storage=crdt.doc(lambda: {"messages": crdt.array(["seed"])}))
    cid = relay.connect(room)
    assert messages(room) == ["seed"]
    relay.drop(cid)
    room.opened()
    join = Join.decode(room.data_to_send()[0], Limits())
    assert join.initial_storage is None


def test_a_first_message_that_is_not_a_welcome_is_refused() -> None:
    room = core()
    room.opened()
    with pytest.raises(ProtocolError):
        room.receive_text(Left("c9").encode())
    with pytest.raises(ProtocolError):
        room.receive_text('{"type": "nonsense"}')
    with pytest.raises(ValueError):
        room.receive_binary(b"\x07\x07")


# -- presence and people ---------------------------------------------------------------------------


def test_presence_updates_reach_the_others_and_only_when_open() -> None:
    relay = Relay()
    ada, bob = core(presence={"name": "ada"}), core(presence={"name": "bob"})
    relay.connect(ada)
    relay.connect(bob)
    ada.notifications()
    bob.notifications()
    ada.set_presence({"name": "ada", "cursor": 3})
    assert topics(ada.notifications()) == ["my_presence"]
    relay.pump()
    (change,) = bob.notifications()
    assert change.topic == "others" and change.args[1].kind == "update"
    assert bob.others[0].presence == {"name": "ada", "cursor": 3}
    ada.set_presence({"name": "ada", "cursor": 3})  # nothing changed: nothing sent
    assert ada.data_to_send() == [] and ada.notifications() == []


def test_without_auth_every_connection_is_its_own_person() -> None:
    relay = Relay()
    rooms = [core(presence={"n": i}) for i in range(3)]
    for room in rooms:
        relay.connect(room)
    assert sorted(user.presence["n"] for user in rooms[0].others) == [1, 2]
    assert rooms[0].myself is not None and rooms[0].myself.connection_ids == [rooms[0].connection_id]


def test_with_auth_one_users_tabs_are_one_other_and_my_tabs_are_myself() -> None:
    relay = Relay()
    ada1, ada2, bob1, bob2 = (core(presence={"tab": name}) for name in ("ada1", "ada2", "bob1", "bob2"))
    relay.connect(ada1, "ada")
    relay.connect(bob1, "bob")
    relay.connect(ada2, "ada")
    relay.connect(bob2, "bob")
    ada1.notifications()
    (bob,) = ada1.others
    assert bob.id == "bob" and len(bob.connection_ids) == 2
    assert bob.presence == {"tab": "bob2"}  # the most recently updated connection's
    bob1.set_presence({"tab": "bob1", "typing": True})
    relay.pump()
    assert ada1.others[0].presence == {"tab": "bob1", "typing": True}
    assert ada1.myself is not None and set(ada1.myself.connection_ids) == {ada1.connection_id, ada2.connection_id}
    assert ada1.other(ada2.connection_id or "") is not None  # my other tab is a known connection
    ada2.set_presence({"tab": "ada2", "x": 1})
    relay.pump()
    assert topics(ada1.notifications()) == ["others"]  # bob's update only: my own tab is not news
    relay.drop(bob2.connection_id or "")
    notes = ada1.notifications()
    assert [(n.topic, n.args[1].kind) for n in notes] == [("others", "update")]
    relay.drop(bob1.connection_id or "")
    notes = ada1.notifications()
    assert [(n.topic, n.args[1].kind) for n in notes] == [("others", "leave")] and ada1.others == []


def test_events_and_errors_become_notifications() -> None:
    relay = Relay()
    ada, bob = core(), core()
    relay.connect(ada, "ada")
    relay.connect(bob, "bob")
    bob.notifications()
    ada.broadcast("wave", {"hi": 1})
    relay.pump()
    (note,) = bob.notifications()
    assert note.topic == "event:wave" and note.args[0].data == {"hi": 1} and note.args[0].user == {"id": "ada"}
    bob.receive_text(ErrorMessage("rate_limited", "slow down").encode())
    (error,) = bob.notifications()
    assert error.topic == "error" and error.args[0].code == "rate_limited"


# -- storage ---------------------------------------------------------------------------------------


def test_local_edits_leave_merged_on_flush_once_synced() -> None:
    relay = Relay()
    edits: list[int] = []
    ada, bob = core(on_edit=lambda: edits.append(1)), core()
    relay.connect(ada)
    relay.connect(bob)
    ada.roots["messages"].append("one")
    ada.roots["messages"].append("two")
    assert ada.pending_updates == 2 and edits == [1]  # on_edit once: the adapter flushes once
    ada.flush()
    (frame,) = ada.data_to_send()
    assert isinstance(frame, bytes) and decode_sync(frame).step == SyncStep.UPDATE
    bob.receive_binary(frame)
    assert messages(bob) == ["one", "two"]


def test_offline_edits_are_replayed_after_a_reconnect() -> None:
    relay = Relay()
    ada, bob = core(), core()
    ada_id = relay.connect(ada)
    relay.connect(bob)
    ada.roots["messages"].append("before")
    ada.flush()
    relay.pump()
    assert messages(bob) == ["before"]
    decision = relay.drop(ada_id)
    assert isinstance(decision, Reconnect) and ada.storage_state == "offline" and ada.state == "unavailable"
    ada.roots["messages"].append("while offline")
    bob.roots["messages"].append("bob meanwhile")
    bob.flush()
    relay.pump()
    ada.flush()
    assert ada.pending_updates == 1 and ada.data_to_send() == []  # kept, not sent into the void
    relay.connect(ada)
    assert ada.storage_state == "synced" and ada.pending_updates == 0
    assert sorted(messages(ada)) == sorted(messages(bob)) == ["before", "bob meanwhile", "while offline"]


def test_undo_takes_back_my_edits_only() -> None:
    relay = Relay()
    ada, bob = core(), core()
    relay.connect(ada)
    relay.connect(bob)
    ada.roots["messages"].append("ada's")
    ada.flush()
    relay.pump()
    bob.roots["messages"].append("bob's")
    bob.flush()
    relay.pump()
    assert messages(ada) == ["ada's", "bob's"]
    assert ada.undo_manager.undo()
    assert messages(ada) == ["bob's"]
    assert ada.pending_updates == 1  # the undo is a local edit: it syncs like one
    assert not ada.undo_manager.can_undo()


# -- reconnect decisions ---------------------------------------------------------------------------


def test_attempts_count_failed_attempts_from_zero_and_reset_once_open() -> None:
    seen: list[int] = []

    def timeout(attempts: int) -> int:
        seen.append(attempts)
        return attempts * 1_000

    room = core(timeout=timeout)
    room.start()
    room.connecting()
    assert room.closed(None) == Reconnect(0.0, 0)
    room.connecting()
    assert room.state == "unavailable"
    assert room.closed(None) == Reconnect(1_000.0, 1)
    assert room.closed(1006) == Reconnect(2_000.0, 2)
    relay = Relay()
    cid = relay.connect(room)  # open: the count starts again
    assert relay.drop(cid) == Reconnect(0.0, 0)
    assert seen == [0, 1, 2, 0]


def test_jitter_is_at_most_half_a_second() -> None:
    assert core(timeout=30_000, jitter=0.999999).closed(None).delay_ms == pytest.approx(30_500, abs=0.01)  # type: ignore[union-attr]
    assert core(timeout=30_000, jitter=0.0).closed(None).delay_ms == 30_000  # type: ignore[union-attr]
    small = core(timeout=100, jitter=0.999999).closed(None)
    assert isinstance(small, Reconnect) and 100 <= small.delay_ms <= 160  # 10% + 50 ms when less


@pytest.mark.parametrize("code", sorted(CloseCode.__members__.values()))
def test_close_codes_decide(code: CloseCode) -> None:
    relay = Relay()
    room = core()
    cid = relay.connect(room)
    decision = relay.drop(cid, code)
    if code in (4001, 4002, 4003, 4004, 4009):  # 4009: removed by a teacher
        assert isinstance(decision, Fail) and isinstance(decision.error, AuthorizationError)
        assert decision.error.code == code and room.state == "closed"
    elif code in (4000, 4005):
        assert isinstance(decision, Closed) and not decision.left and room.state == "closed"
    else:
        assert isinstance(decision, Reconnect) and room.state == "unavailable"


def test_an_auth_failure_is_reported_once_then_the_room_is_closed() -> None:
    room = core()
    room.start()
    room.connecting()
    decision = room.refused(AuthorizationError(403, "no"))
    assert isinstance(decision, Fail)
    assert room.state == "closed"
    assert topics(room.notifications()) == ["connection", "connection"]  # connecting, closed


def test_leaving_closes_for_good() -> None:
    relay = Relay()
    room = core()
    cid = relay.connect(room)
    left = room.leave()
    assert left.left and room.state == "closed" and room.storage_state == "offline"
    after = relay.drop(cid)  # the socket closing after a leave: no reconnect
    assert isinstance(after, Closed) and after.left
    room.start()  # entering again is allowed
    room.connecting()
    assert room.state == "unavailable"  # it was in the room before: this is a return


# -- storage refusals ------------------------------------------------------------------------------


def two_in_a_room(relay: Relay) -> tuple[ClientRoom, ClientRoom]:
    ada, bob = core(), core()
    relay.connect(ada)
    relay.connect(bob)
    ada.roots["messages"].append("kept")
    ada.flush()
    relay.pump()
    ada.notifications()
    bob.notifications()
    return ada, bob


def test_a_permanent_refusal_reloads_the_room_under_a_new_client_id_and_says_what_was_lost() -> None:
    relay = Relay()
    ada, bob = two_in_a_room(relay)
    relay.max_update = 200
    old_doc, old_messages, old_client_id = ada.doc, ada.roots["messages"], ada.doc.client_id
    old_messages.append("x" * 500)
    assert ada.undo_manager.can_undo()
    ada.flush()
    relay.pump()
    assert relay.refusals == ["storage_too_large"]
    # Reloaded: a fresh document (new client id) holding exactly the server's copy.
    assert ada.doc is not old_doc and ada.doc.client_id != old_client_id
    assert messages(ada) == messages(bob) == ["kept"] and ada.storage_state == "synced"
    reload_step1 = [decode_sync(f) for f in relay.seen[ada.connection_id or ""] if isinstance(f, bytes)][-2]
    assert reload_step1.step == SyncStep.STEP1 and reload_step1.payload == b"\x00"  # an empty state vector
    notes = ada.notifications()
    assert topics(notes) == ["storage_replaced", "storage_state", "storage_state", "error"]
    assert [n.args[0] for n in notes[1:3]] == ["loading", "synced"]
    error = notes[-1].args[0]
    assert error.code == "storage_too_large" and error.reloaded
    assert error.discarded == {"messages": ["kept", "x" * 500]} and "'messages'" in error.message
    assert not ada.undo_manager.can_undo()  # the undo history went with the document
    assert relay.poisoned == {}  # the empty step 1 started the connection over
    # The old handle is detached: editing it sends nothing and changes nothing.
    old_messages.append("into the void")
    assert ada.pending_updates == 0 and ada.data_to_send() == [] and messages(ada) == ["kept"]
    # And the room works again: new edits reach the others.
    ada.roots["messages"].append("again")
    ada.flush()
    relay.pump()
    assert messages(bob) == messages(ada) == ["kept", "again"]
    assert relay.refusals == ["storage_too_large"]


def test_refusals_of_updates_sent_before_the_reload_do_not_reload_again() -> None:
    relay = Relay()
    ada, bob = two_in_a_room(relay)
    relay.max_update = 200
    ada.roots["messages"].append("y" * 500)
    ada.flush()
    ada.roots["messages"].append("small one")
    ada.flush()
    ada.roots["messages"].append("small two")
    ada.flush()
    relay.pump()
    assert relay.refusals == ["storage_too_large"] * 3  # the two in flight were refused too
    notes = ada.notifications()
    assert topics(notes).count("error") == 1 and topics(notes).count("storage_replaced") == 1
    assert not ada.close_expected and ada.state == "open"
    assert messages(ada) == messages(bob) == ["kept"]
    ada.roots["messages"].append("after")
    ada.flush()
    relay.pump()
    assert messages(bob) == ["kept", "after"]


def test_a_refusal_of_the_reload_itself_closes_the_room_instead_of_looping() -> None:
    relay = Relay()
    ada, _ = two_in_a_room(relay)
    relay.max_update = 200
    relay.honours_reload = False  # a server that keeps refusing
    ada.roots["messages"].append("z" * 500)
    ada.flush()
    relay.pump()
    assert ada.storage_state == "synced" and not ada.close_expected  # reloaded once
    ada.notifications()
    # Refused again although nothing was sent since the reload: no second reload, the room closes.
    ada.receive_text(ErrorMessage("storage_rejected", "still poisoned").encode())
    assert ada.close_expected and not ada.reloading
    (note,) = ada.notifications()
    assert note.topic == "error" and "right after reloading" in note.args[0].message
    decision = ada.closed(1000, "")
    assert isinstance(decision, Closed) and not decision.left and ada.state == "closed"
    assert "right after reloading" in str(decision.error)


def test_a_refusal_while_reloading_with_nothing_in_flight_closes_the_room() -> None:
    room = core()
    room.opened()
    room.data_to_send()
    room.receive_text(Welcome("r", "c1", {"id": "c1"}, {}, ()).encode())
    room.receive_binary(sync.step2(pycrdt.Doc().get_update()))
    room.receive_text(ErrorMessage("storage_rejected", "bad").encode())  # e.g. a hostile frame
    assert room.reloading and not room.close_expected
    _protected_step1, step1 = room.data_to_send()  # the protected document's is asked after the welcome
    assert isinstance(step1, bytes) and decode_sync(step1).payload == b"\x00"
    room.receive_text(ErrorMessage("storage_rejected", "bad again").encode())  # the reload refused
    assert room.close_expected and isinstance(room.closed(None), Closed)


def test_a_reload_interrupted_by_a_lost_connection_finishes_after_the_reconnect() -> None:
    relay = Relay()
    ada, bob = two_in_a_room(relay)
    relay.max_update = 200
    ada.roots["messages"].append("w" * 500)
    ada.flush()
    for frame in ada.data_to_send():  # the update reaches the server, the reload's step 1 does not
        relay.connected[ada.connection_id or ""][0].receive_text(ErrorMessage("storage_too_large", "big").encode())
        assert isinstance(frame, bytes)
    assert ada.reloading and ada.storage_state == "loading"
    relay.drop(ada.connection_id or "")
    ada.data_to_send()
    relay.connect(ada)  # a new connection: join + the fresh document's empty step 1
    assert not ada.reloading and messages(ada) == messages(bob) == ["kept"]
    assert ada.notifications()[-1].args[0].reloaded


def test_a_transient_refusal_resends_with_backoff_until_stored() -> None:
    relay = Relay()
    ada, bob = two_in_a_room(relay)
    relay.unavailable = True
    ada.roots["messages"].append("must not be lost")
    ada.flush()
    relay.pump()
    (note,) = ada.notifications()
    assert note.topic == "error" and note.args[0].code == "storage_unavailable" and not note.args[0].reloaded
    delays = []
    for _ in range(9):
        delay = ada.resync_delay_ms()
        assert delay is not None and ada.resync_delay_ms() is None  # drained
        delays.append(delay)
        ada.resync()  # the adapter's timer fired: the sync exchange again
        relay.pump()
    assert delays == [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
    assert ada.notifications() == []  # reported once per episode, not per retry
    assert messages(bob) == ["kept"] and messages(ada) == ["kept", "must not be lost"]
    relay.unavailable = False  # the store is back
    ada.resync_delay_ms()
    ada.resync()
    relay.pump()
    assert messages(bob) == ["kept", "must not be lost"] and relay.doc.get("messages", type=pycrdt.Array).to_py() == [
        "kept", "must not be lost"]
    assert ada.resync_delay_ms() is not None  # one more exchange confirms it was stored
    ada.resync()
    relay.pump()
    assert ada.resync_delay_ms() is None  # the server's state vector covers ours: done
    assert ada.storage_state == "synced" and ada.notifications() == []


def test_a_transient_refusal_while_offline_is_resent_by_the_reconnect() -> None:
    relay = Relay()
    ada, bob = two_in_a_room(relay)
    relay.unavailable = True
    ada.roots["messages"].append("later")
    ada.flush()
    relay.pump()
    relay.drop(ada.connection_id or "")
    ada.resync()  # the timer fires while offline: nothing to send, the reconnect does it
    assert ada.data_to_send() == []
    relay.unavailable = False
    relay.connect(ada)
    assert messages(bob) == ["kept", "later"]


def test_other_error_codes_change_nothing_but_are_reported() -> None:
    relay = Relay()
    ada, _ = two_in_a_room(relay)
    doc = ada.doc
    ada.receive_text(ErrorMessage("presence_too_large", "big").encode())
    assert ada.doc is doc and ada.resync_delay_ms() is None
    (note,) = ada.notifications()
    assert note.args[0].code == "presence_too_large" and note.args[0].discarded == {}
