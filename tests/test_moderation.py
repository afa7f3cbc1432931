"""Moderation with real servers: remove/readmit, reset and generations, expiry, the durable log,
and moderation state that survives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pycrdt
from helpers import until
from test_permissions import SECRET, STORAGE, endpoint, enter, eventually, messages

from pluv_widget import create_io
from pluv_widget.errors import AuthorizationError, PermissionDenied
from pluv_widget.protocol import CloseCode


async def test_a_removed_user_is_closed_and_refused_until_readmitted(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    teacher = await enter(make_client, server, "teacher", "teacher")
    failures: list[AuthorizationError] = []
    bob_client = make_client(server, auth_endpoint=endpoint(server, "bob", "student"), initial_storage=STORAGE)
    bob = bob_client.create_room("class", on_authorization_fail=failures.append, initial_storage=STORAGE)
    await bob_client.enter(bob)
    await until(teacher, lambda: len(teacher.others) == 1)
    await teacher.call("users.remove", {"user_id": "bob"})
    await until(bob, lambda: failures)
    assert failures[0].code == CloseCode.REMOVED and bob.state == "closed"
    # a fresh token for the same user is refused too
    again = make_client(server, auth_endpoint=endpoint(server, "bob", "student"), initial_storage=STORAGE)
    refused: list[AuthorizationError] = []
    room = again.create_room("class", on_authorization_fail=refused.append, initial_storage=STORAGE)
    try:
        await again.enter(room)
    except Exception:
        pass
    await eventually(lambda: refused)
    assert refused[0].code == CloseCode.REMOVED
    await teacher.call("users.readmit", {"user_id": "bob"})
    back = await enter(make_client, server, "bob", "student")
    assert back.state == "open"
    log = await server.io.moderation_log("class")
    assert [entry["action"] for entry in log] == ["users.remove", "users.readmit"]
    assert log[0]["by"] == "teacher" and log[0]["target"] == "bob" and log[0]["at"] > 0


async def test_reset_gives_a_new_generation_and_an_offline_client_discards_its_document(
    start_server: Any, make_client: Any
) -> None:
    server = await start_server(secret=SECRET)
    teacher = await enter(make_client, server, "teacher", "teacher")
    ada = await enter(make_client, server, "ada", "student")
    ada.storage("notes").append("before the reset")
    await teacher.call("messages.post", {"id": "m1", "text": "old"})
    await eventually(lambda: teacher.storage_json()["notes"] == ["before the reset"])
    generation = ada._core.generation
    # ada goes offline and keeps editing
    ada._client.leave(ada)
    await asyncio.sleep(0.1)
    ada.storage("notes").append("offline edit")
    answer = await teacher.call("room.reset", {})
    assert answer["generation"] != generation
    await eventually(lambda: teacher.storage_json() is not None and teacher.storage_json()["notes"] == []
                     and teacher._core.generation == answer["generation"])
    assert await messages(teacher) == []
    await ada._client.enter(ada)  # back, with a document of the old generation
    await eventually(lambda: ada._core.generation == answer["generation"] and ada.storage_state == "synced"
                     and not ada._core.reloading)
    await asyncio.sleep(0.3)
    assert ada.storage_json()["notes"] == []
    assert teacher.storage_json()["notes"] == []  # nothing old merged back
    assert (await server.io.storage_json("class")).get("notes", []) == []


async def test_clear_empties_the_messages_with_a_new_generation(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    teacher = await enter(make_client, server, "teacher", "teacher")
    ada = await enter(make_client, server, "ada", "student")
    await ada.call("messages.post", {"id": "a", "text": "one"})
    before = teacher._core.generation
    assert (await teacher.call("messages.clear", {})) == {"cleared": 1}
    await until(ada, lambda: ada._core.generation != before and ada.state == "open")
    await eventually(lambda: ada.state == "open" and ada.storage_state == "synced")
    assert await messages(ada) == []


async def test_storage_expires(start_server: Any, make_client: Any) -> None:
    server = await start_server(storage_ttl_s=0.5)
    room = await make_client(server, initial_storage=STORAGE).enter("brief")
    room.storage("notes").append("soon gone")
    await eventually(lambda: room.storage_json()["notes"] == ["soon gone"])
    room._client.leave(room)
    await asyncio.sleep(1.0)
    assert server.io is not None
    assert (await server.io.storage_json("brief")).get("notes", []) == []  # dropped on opening
    log = await server.io.moderation_log("brief")
    assert log[-1]["action"] == "room.expire"


async def test_an_open_room_expires_on_time_and_its_members_reload_it_empty(
        start_server: Any, make_client: Any) -> None:
    server = await start_server(storage_ttl_s=1.0)
    room = await make_client(server, initial_storage=STORAGE).enter("brief-open")
    room.storage("notes").append("soon gone")
    await eventually(lambda: room.storage_json()["notes"] == ["soon gone"])
    before = room._core.generation
    await until(room, lambda: room._core.generation != before and room.state == "open", timeout=15)
    await eventually(lambda: room.storage_state == "synced" and room.storage_json().get("notes", []) == [])
    assert server.io is not None
    assert (await server.io.moderation_log("brief-open"))[-1]["action"] == "room.expire"


async def test_moderation_state_survives_a_restart(tmp_path: Path, make_client: Any) -> None:
    io = create_io(secret=SECRET, data_dir=tmp_path)
    server = await io.start("127.0.0.1", 0)
    try:
        teacher = await enter(make_client, server, "teacher", "teacher")
        await teacher.call("messages.post", {"id": "kept", "text": "still here"})
        await teacher.call("users.mute", {"user_id": "ada"})
        await teacher.call("room.lock", {})
        teacher._client.leave(teacher)
    finally:
        await server.close()
    io = create_io(secret=SECRET, data_dir=tmp_path)
    server = await io.start("127.0.0.1", 0)
    try:
        ada = await enter(make_client, server, "ada", "student")
        await eventually(lambda: ada.storage_state == "synced")
        await eventually(lambda: [m["id"] for m in ada._core.protected_doc.get("messages", type=pycrdt.Array).to_py()]
                         == ["kept"])
        try:
            await ada.call("messages.post", {"id": "x", "text": "muted?"})
            raise AssertionError("a muted user posted")
        except PermissionDenied as error:
            assert error.code == "muted"
        assert [e["action"] for e in await io.moderation_log("class")] == ["users.mute", "room.lock"]
    finally:
        await server.close()


async def test_the_server_can_moderate_itself(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    assert server.io is not None
    await server.io.call("class", "room.lock", {})
    bob = await enter(make_client, server, "bob", "student")
    try:
        await bob.call("messages.post", {"id": "b", "text": "locked"})
        raise AssertionError("posted in a locked room")
    except PermissionDenied as error:
        assert error.code == "room_locked"
    try:
        await server.io.call("class", "room.unlock", {}, user={"id": "bob", "role": "student"})
        raise AssertionError("a student unlocked the room")
    except PermissionDenied:
        pass
