"""Permissions, enforced by a real server: protected storage, typed calls, roles — over the public
API and over raw frames. A refused action gets its documented code and the room's document,
storage and other clients never see it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pycrdt
import pytest
import websockets
from helpers import until, url_of

from pluv_widget import crdt
from pluv_widget.errors import MutedError, PermissionDenied, ProcedureError, RoomLockedError
from pluv_widget.protocol import PROTOCOL_VERSION, sync
from pluv_widget.protocol.sync import decode_sync
from pluv_widget.server.room_server import RoomServer

SECRET = "s3cret-for-tests-only-32-bytes-long!"
STORAGE = crdt.doc(lambda: {"messages": crdt.array([]), "notes": crdt.array([]), "grades": crdt.map()})


def endpoint(server: RoomServer, user_id: str, role: str) -> Any:
    assert server.io is not None
    io = server.io
    return lambda room: io.create_token(room=room, user={"id": user_id, "name": user_id.title(), "role": role})


async def enter(make_client: Any, server: RoomServer, user_id: str, role: str, room: str = "class") -> Any:
    client = make_client(server, auth_endpoint=endpoint(server, user_id, role), initial_storage=STORAGE)
    return await client.enter(room)


async def messages(room: Any) -> list[dict[str, Any]]:
    return list(crdt.to_json(room.protected_storage("messages")))


async def eventually(condition: Any, timeout: float = 20.0) -> None:
    """Poll ``condition()``: protected updates notify nobody but the roots' own observers."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def until_messages(room: Any, condition: Any) -> list[dict[str, Any]]:
    await eventually(lambda: condition(crdt.to_json(room._core.protected_doc.get("messages", type=pycrdt.Array))))
    return await messages(room)


@pytest.fixture
async def classroom(start_server: Any, make_client: Any) -> dict[str, Any]:
    server = await start_server(secret=SECRET, protected_roots=["grades"])
    return {
        "server": server,
        "teacher": await enter(make_client, server, "teacher", "teacher"),
        "ada": await enter(make_client, server, "ada", "student"),
        "bob": await enter(make_client, server, "bob", "student"),
        "screen": await enter(make_client, server, "screen", "observer"),
    }


async def test_a_post_is_stamped_by_the_server_and_seen_by_everyone(classroom: dict[str, Any]) -> None:
    ada, bob = classroom["ada"], classroom["bob"]
    message = await ada.call("messages.post", {"id": "m1", "text": "hello", "author": "Ms Lovelace"})
    assert message["author"] == "Ada" and message["author_id"] == "ada" and message["text"] == "hello"
    seen = await until_messages(bob, lambda items: len(items) == 1)
    assert seen[0]["author_id"] == "ada" and seen[0]["id"] == "m1"
    screen = await until_messages(classroom["screen"], lambda items: len(items) == 1)
    assert screen == seen


async def test_students_delete_only_their_own_and_never_clear(classroom: dict[str, Any]) -> None:
    ada, bob, teacher = classroom["ada"], classroom["bob"], classroom["teacher"]
    await ada.call("messages.post", {"id": "a1", "text": "mine"})
    await bob.call("messages.post", {"id": "b1", "text": "bob's"})
    with pytest.raises(PermissionDenied) as refused:
        await ada.call("messages.delete", {"id": "b1"})
    assert refused.value.code == "forbidden"
    with pytest.raises(PermissionDenied):
        await ada.call("messages.clear", {})
    for procedure, data in [("users.mute", {"user_id": "bob"}), ("users.remove", {"user_id": "bob"}),
                            ("room.lock", {}), ("room.reset", {})]:
        with pytest.raises(PermissionDenied):
            await ada.call(procedure, data)
    assert (await ada.call("messages.delete", {"id": "a1"})) == {"deleted": True}
    seen = await until_messages(teacher, lambda items: [m["id"] for m in items] == ["b1"])
    assert [m["id"] for m in seen] == ["b1"]
    assert (await teacher.call("messages.delete", {"id": "b1"})) == {"deleted": True}  # teachers: any
    await until_messages(bob, lambda items: items == [])


async def test_observers_are_read_only(classroom: dict[str, Any]) -> None:
    screen, teacher = classroom["screen"], classroom["teacher"]
    with pytest.raises(PermissionDenied):
        await screen.call("messages.post", {"id": "s1", "text": "from the projector"})
    errors: list[Any] = []
    screen.subscribe.error(errors.append)
    screen.storage("notes").append("scribble")  # a plain storage write: refused, then reloaded
    await until(screen, lambda: any(e.code == "forbidden" and e.reloaded for e in errors))
    assert screen.storage_json()["notes"] == []
    await asyncio.sleep(0.2)
    assert teacher.storage_json()["notes"] == [] and await messages(teacher) == []


async def test_unknown_procedures_and_bad_input_are_refused(classroom: dict[str, Any]) -> None:
    ada = classroom["ada"]
    with pytest.raises(ProcedureError) as unknown:
        await ada.call("no.such", {})
    assert unknown.value.code == "unknown_procedure"
    with pytest.raises(ProcedureError) as bad:
        await ada.call("messages.post", {"id": "has spaces", "text": "x"})
    assert bad.value.code == "invalid_input"


async def test_protected_roots_are_read_only_for_clients(classroom: dict[str, Any]) -> None:
    server, ada, bob = classroom["server"], classroom["ada"], classroom["bob"]
    assert server.io is not None

    def grade(doc: pycrdt.Doc[Any]) -> None:
        doc.get("grades", type=pycrdt.Map)["ada"] = "A"

    await server.io.update_storage("class", grade, protected=True)
    await eventually(lambda: ada.storage_json()["grades"] == {"ada": "A"})
    ada.storage("grades")["ada"] = "A+"  # never sent: the protected document is reloaded
    await eventually(lambda: ada.storage_json()["grades"] == {"ada": "A"})
    await asyncio.sleep(0.2)
    assert bob.storage_json()["grades"] == {"ada": "A"}


async def test_muted_and_locked(classroom: dict[str, Any]) -> None:
    teacher, ada, bob = classroom["teacher"], classroom["ada"], classroom["bob"]
    await teacher.call("users.mute", {"user_id": "ada"})
    with pytest.raises(MutedError):
        await ada.call("messages.post", {"id": "m", "text": "hi"})
    await bob.call("messages.post", {"id": "b", "text": "still here"})
    await teacher.call("users.unmute", {"user_id": "ada"})
    await ada.call("messages.post", {"id": "m", "text": "back"})
    await teacher.call("room.lock", {})
    with pytest.raises(RoomLockedError):
        await bob.call("messages.post", {"id": "b2", "text": "locked?"})
    await teacher.call("messages.post", {"id": "t", "text": "teachers still write"})
    await teacher.call("room.unlock", {})
    await bob.call("messages.post", {"id": "b2", "text": "unlocked"})
    seen = await until_messages(teacher, lambda items: len(items) == 4)
    assert [m["id"] for m in seen] == ["b", "m", "t", "b2"]


# -- raw frames: a hostile client -------------------------------------------------------------------


async def raw(server: RoomServer, user_id: str, role: str) -> Any:
    token = endpoint(server, user_id, role)("class")
    socket = await websockets.connect(f"{url_of(server)}/class?token={token}")
    await socket.send(json.dumps({"type": "join", "protocol": PROTOCOL_VERSION, "presence": {}}))
    welcome = json.loads(await socket.recv())
    assert welcome["type"] == "welcome"
    return socket


async def next_text(socket: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            frame = await socket.recv()
            if isinstance(frame, str) and json.loads(frame)["type"] == kind:
                return dict(json.loads(frame))


async def test_raw_frames_cannot_write_the_protected_document(classroom: dict[str, Any]) -> None:
    server, teacher = classroom["server"], classroom["teacher"]
    socket = await raw(server, "mallory", "student")
    forged: pycrdt.Doc[Any] = pycrdt.Doc()
    forged.get("messages", type=pycrdt.Array).append(pycrdt.Map({"id": "x", "author": "Teacher", "text": "forged"}))
    for frame in (sync.update(forged.get_update(), protected=True), sync.step2(forged.get_update(), protected=True)):
        await socket.send(frame)
        error = await next_text(socket, "error")
        assert error["code"] == "forbidden"
    # a call of a teacher procedure, and a post with someone else's author
    await socket.send(json.dumps({"type": "call", "id": 7, "procedure": "messages.clear", "input": {}}))
    error = await next_text(socket, "error")
    assert error == {"type": "error", "id": 7, "code": "forbidden", "message": error["message"]}
    await socket.send(json.dumps({"type": "call", "id": 8, "procedure": "messages.post",
                                  "input": {"id": "p", "text": "hi", "author": "Teacher", "author_id": "teacher"}}))
    answer = await next_text(socket, "result")
    assert answer["id"] == 8 and answer["data"]["author_id"] == "mallory" and answer["data"]["author"] == "Mallory"
    seen = await until_messages(teacher, lambda items: len(items) == 1)
    assert seen[0]["author_id"] == "mallory" and not any(m["text"] == "forged" for m in seen)
    # the protected document loads read-only over its own message type
    await socket.send(sync.step1(b"\x00", protected=True))
    async with asyncio.timeout(10):
        while True:
            frame = await socket.recv()
            if isinstance(frame, bytes) and decode_sync(frame).protected:
                break
    loaded: pycrdt.Doc[Any] = pycrdt.Doc()
    loaded.apply_update(decode_sync(frame).payload)
    assert [m["id"] for m in loaded.get("messages", type=pycrdt.Array).to_py()] == ["p"]
    await socket.close()


async def test_a_raw_observer_cannot_write_storage(classroom: dict[str, Any]) -> None:
    server, teacher = classroom["server"], classroom["teacher"]
    socket = await raw(server, "projector", "observer")
    edit: pycrdt.Doc[Any] = pycrdt.Doc()
    edit.get("notes", type=pycrdt.Array).append("observer scribble")
    await socket.send(sync.update(edit.get_update()))
    error = await next_text(socket, "error")
    assert error["code"] == "forbidden" and error["storage"] is True
    await socket.send(json.dumps({"type": "event", "event": "shout", "data": 1}))
    assert (await next_text(socket, "error"))["code"] == "forbidden"
    await asyncio.sleep(0.2)
    assert teacher.storage_json()["notes"] == []
    assert "observer scribble" not in json.dumps(await server.storage_json("class"))
    await socket.close()


async def test_without_auth_everyone_is_a_teacher(server: RoomServer, make_client: Any) -> None:
    room = await make_client(server, initial_storage=STORAGE).enter("free")
    assert room.role == "teacher"
    await room.call("messages.post", {"id": "m", "text": "hi"})
    await room.call("room.lock", {})
    await room.call("messages.clear", {})
