"""Storage refusals against a real server: what a client does after a permanent refusal (reload
under a new client id, tell the user what was discarded, edit again) and a transient one (resend
with backoff until stored)."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import until, until_storage

from pluv_widget import Limits, ServerError, crdt
from pluv_widget.protocol import sync
from pluv_widget.server.storage.memory import MemoryPersistence

MESSAGES = crdt.doc(lambda: {"messages": crdt.array(["keep me"])})


async def test_an_edit_past_the_cap_reloads_the_room_and_the_client_edits_again(start_server: Any,
                                                                                  make_client: Any) -> None:
    server = await start_server(limits=Limits(max_storage_bytes=20_000))
    a = await make_client(server, initial_storage=MESSAGES).enter("r")
    b = await make_client(server, initial_storage=MESSAGES).enter("r")
    errors: list[ServerError] = []
    a.subscribe.error(errors.append)
    followed: list[Any] = []
    a.subscribe.storage("messages", followed.append)
    old_handle, old_client_id = a.storage("messages"), a.doc.client_id
    old_handle.append("x" * 30_000)
    await until(a, lambda: errors)
    (error,) = errors
    assert error.code == "storage_too_large" and error.reloaded
    assert error.discarded == {"messages": ["keep me", "x" * 30_000]}
    assert "reloaded from the server" in error.message and "'messages'" in error.message
    assert a.storage_state == "synced" and a.state == "open"
    assert a.doc.client_id != old_client_id and a.storage_json() == {"messages": ["keep me"]}
    assert followed[-1] == ["keep me"]  # storage subscriptions follow the reloaded document
    assert not a.can_undo
    # The old handle is detached: an edit to it goes nowhere.
    old_handle.append("into the void")
    # The room works again: a new edit reaches the server and the others.
    a.storage("messages").append("small")
    await until_storage(b, "messages", lambda items: items == ["keep me", "small"])
    assert a.storage_json() == b.storage_json() == await server.io.storage_json("r")
    assert followed[-1] == ["keep me", "small"]
    b.storage("messages").append("from b")
    await until_storage(a, "messages", lambda items: items == ["keep me", "small", "from b"])
    assert errors == [error]


async def test_a_corrupt_update_in_the_clients_stream_triggers_a_reload(server: Any, make_client: Any) -> None:
    a = await make_client(server, initial_storage=MESSAGES).enter("r")
    b = await make_client(server, initial_storage=MESSAGES).enter("r")
    errors: list[ServerError] = []
    a.subscribe.error(errors.append)
    a.storage("messages").append("saved")
    await until_storage(b, "messages", lambda items: items == ["keep me", "saved"])
    old_client_id = a.doc.client_id
    socket = a._connection._socket
    assert socket is not None
    await socket.send(sync.update(b"\x01\x01\x99\x99\x99"))  # hostile bytes on the room's own socket
    await until(a, lambda: errors)
    (error,) = errors
    assert error.code == "storage_rejected" and error.reloaded and error.discarded == {}
    assert a.doc.client_id != old_client_id and a.storage_json() == {"messages": ["keep me", "saved"]}
    a.storage("messages").append("after the reload")
    await until_storage(b, "messages", lambda items: items[-1] == "after the reload")
    assert a.state == "open" and a.storage_json() == b.storage_json() == await server.io.storage_json("r")


class FlakyPersistence(MemoryPersistence):
    """A store whose appends fail while ``failing`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.failures = 0

    async def append(self, room: str, update: bytes) -> None:
        if self.failing:
            self.failures += 1
            raise OSError("disk unavailable")
        await super().append(room, update)


async def test_a_store_failure_is_retried_until_the_edit_is_stored(start_server: Any, make_client: Any) -> None:
    store = FlakyPersistence()
    server = await start_server(persistence=store)
    a = await make_client(server, initial_storage=MESSAGES).enter("r")
    b = await make_client(server, initial_storage=MESSAGES).enter("r")
    errors: list[ServerError] = []
    a.subscribe.error(errors.append)
    store.failing = True
    a.storage("messages").append("must survive")
    await until(a, lambda: errors)
    assert errors[0].code == "storage_unavailable" and not errors[0].reloaded, errors
    await asyncio.sleep(1.0)  # at least one resend fails too
    assert store.failures >= 2
    store.failing = False
    await until_storage(b, "messages", lambda items: items == ["keep me", "must survive"])
    assert await server.io.storage_json("r") == {"messages": ["keep me", "must survive"]}
    assert [e.code for e in errors] == ["storage_unavailable"]  # reported once, never reloaded


async def test_updates_in_flight_behind_a_refused_one_cause_one_reload_only(start_server: Any,
                                                                             make_client: Any) -> None:
    server = await start_server(limits=Limits(max_storage_bytes=20_000))
    a = await make_client(server, initial_storage=MESSAGES).enter("r")
    b = await make_client(server, initial_storage=MESSAGES).enter("r")
    errors: list[ServerError] = []
    a.subscribe.error(errors.append)
    a.storage("messages").append("x" * 30_000)
    for n in range(5):  # each leaves as its own update, before the refusal comes back
        await asyncio.sleep(0)
        a.storage("messages").append(f"small {n}")
    await until(a, lambda: errors)
    await asyncio.sleep(0.3)  # the refusals of the updates in flight arrive too: they change nothing
    assert [e.code for e in errors] == ["storage_too_large"] and errors[0].reloaded
    assert errors[0].discarded["messages"][:2] == ["keep me", "x" * 30_000]
    assert a.state == "open" and a.storage_json() == {"messages": ["keep me"]}
    a.storage("messages").append("fine")
    await until_storage(b, "messages", lambda items: items == ["keep me", "fine"])
    assert await server.io.storage_json("r") == {"messages": ["keep me", "fine"]}


async def test_a_refusal_right_after_a_reload_closes_the_room_instead_of_looping(server: Any,
                                                                                 make_client: Any) -> None:
    a = await make_client(server, initial_storage=MESSAGES).enter("r")
    errors: list[ServerError] = []
    a.subscribe.error(errors.append)
    hostile = sync.update(b"\x01\x01\x99\x99\x99")
    assert a._connection._socket is not None
    await a._connection._socket.send(hostile)
    await until(a, lambda: errors)
    assert errors[0].reloaded and a.state == "open"
    assert a._connection._socket is not None
    await a._connection._socket.send(hostile)  # refused again with nothing sent since the reload
    await until(a, lambda: a.state == "closed")
    assert len(errors) == 2 and "right after reloading" in errors[1].message
    await asyncio.sleep(0.3)
    assert a.state == "closed" and len(errors) == 2  # closed for good: no reconnect, no loop
