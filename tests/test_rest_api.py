"""The REST admin API over real HTTP on the server's port: teacher tokens (room-scoped and
server-scoped), every route, refusals with documented codes, hostile HTTP, several processes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from helpers import until
from redis_helpers import RedisServer
from test_permissions import SECRET, STORAGE, enter, eventually

from pluv_widget.server.room_server import RoomServer

TEACHER_CODE = "TEACH-7"


def base(server: RoomServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def _request(url: str, method: str, token: str | None, body: Any) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


async def call(server: RoomServer, method: str, path: str, token: str | None = None,
               body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(_request, base(server) + path, method, token, body)


def token(server: RoomServer, room: str, user_id: str, role: str) -> str:
    assert server.io is not None
    return server.io.create_token(room=room, user={"id": user_id, "name": user_id.title(), "role": role})


async def raw_http(server: RoomServer, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=20)
    writer.close()
    return answer


async def test_tokens_decide_who_may_use_the_api(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET, teacher_codes=[TEACHER_CODE], join_codes=["STUDENTS-1"])
    status, body = await call(server, "GET", "/api/rooms/algebra")
    assert (status, body["code"]) == (401, "unauthorized")
    status, body = await call(server, "GET", "/api/rooms/algebra", token(server, "algebra", "ada", "student"))
    assert (status, body["code"]) == (403, "forbidden")
    status, body = await call(server, "GET", "/api/rooms/algebra", "not-a-token")
    assert (status, body["code"]) == (401, "token_invalid")
    room_token = token(server, "algebra", "ms-l", "teacher")
    assert (await call(server, "GET", "/api/rooms/algebra", room_token))[0] == 200
    status, body = await call(server, "GET", "/api/rooms/geometry", room_token)
    assert (status, body["code"]) == (403, "wrong_room")
    # A server-scoped token comes from /token with a teacher code and no room; a student code gets none.
    status, answer = await call(server, "GET", f"/token?join_code={TEACHER_CODE}&name=Ms%20L")
    assert status == 200 and answer["scope"] == "server" and answer["user"]["role"] == "teacher"
    assert (await call(server, "GET", "/api/rooms/geometry", answer["token"]))[0] == 200
    assert (await call(server, "GET", "/token?join_code=STUDENTS-1&name=Ada"))[0] == 403
    # ...and no room's socket takes a server-scoped token.
    failures: list[Any] = []
    client = make_client(server, auth_endpoint=lambda _room: answer["token"], initial_storage=STORAGE)
    room = client.create_room("algebra", on_authorization_fail=failures.append, initial_storage=STORAGE)
    client.enter_soon(room)
    await eventually(lambda: bool(failures))


async def test_rooms_occupants_storage_broadcast_and_moderation(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    teacher_token = token(server, "*", "ms-l", "teacher")  # server-scoped
    ada = await enter(make_client, server, "ada", "student", "algebra")
    ada.storage("notes").append("x = 2")
    await eventually(lambda: ada.storage_json()["notes"] == ["x = 2"])

    status, listing = await call(server, "GET", "/api/rooms", teacher_token)
    assert status == 200
    row = next(row for row in listing["rooms"] if row["name"] == "algebra")
    assert row["occupants"] == 1 and row["storage_bytes"] > 0 and row["last_activity"] > time.time() - 60

    status, detail = await call(server, "GET", "/api/rooms/algebra", teacher_token)
    assert status == 200 and [o["user"]["id"] for o in detail["occupants"]] == ["ada"]
    assert "presence" in detail["occupants"][0]

    status, stored = await call(server, "GET", "/api/rooms/algebra/storage", teacher_token)
    assert status == 200 and stored["storage"]["notes"] == ["x = 2"]

    heard: list[Any] = []
    ada.subscribe.event("announce", heard.append)
    status, _ = await call(server, "POST", "/api/rooms/algebra/broadcast", teacher_token,
                           {"event": "announce", "data": {"text": "5 minutes left"}})
    assert status == 200
    await until(ada, lambda: bool(heard))
    assert heard[0].data == {"text": "5 minutes left"}

    status, body = await call(server, "POST", "/api/rooms/algebra/broadcast", teacher_token, {"data": 1})
    assert (status, body["code"]) == (400, "invalid_body")

    assert (await call(server, "POST", "/api/rooms/algebra/users/ada/mute", teacher_token))[0] == 200
    with pytest.raises(Exception, match="mute"):
        await ada.call("messages.post", {"id": "m1", "text": "muted?"})
    assert (await call(server, "POST", "/api/rooms/algebra/users/ada/unmute", teacher_token))[0] == 200
    status, locked = await call(server, "POST", "/api/rooms/algebra/lock", teacher_token)
    assert status == 200 and locked["rules"]["locked"] is True
    assert (await call(server, "POST", "/api/rooms/algebra/unlock", teacher_token))[0] == 200
    assert server.io is not None
    log = await server.io.moderation_log("algebra")
    assert [entry["action"] for entry in log][-4:] == ["users.mute", "users.unmute", "room.lock", "room.unlock"]
    assert log[-1]["by"] == "ms-l"

    before = ada._core.generation
    status, deleted = await call(server, "DELETE", "/api/rooms/algebra", teacher_token)
    assert status == 200 and deleted["deleted"] is True
    await until(ada, lambda: ada._core.generation != before and ada.state == "open", timeout=20)
    await eventually(lambda: ada.storage_state == "synced" and ada.storage_json().get("notes", []) == [])

    assert (await call(server, "GET", "/api/rooms", teacher_token))[0] == 200
    status, body = await call(server, "PUT", "/api/rooms/algebra/lock", teacher_token)
    assert (status, body["code"]) == (405, "method_not_allowed")
    status, body = await call(server, "GET", "/api/nothing-here", teacher_token)
    assert (status, body["code"]) == (404, "not_found")


async def test_openapi_describes_every_route(start_server: Any) -> None:
    server = await start_server(secret=SECRET)
    status, spec = await call(server, "GET", "/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/api/rooms", "/api/rooms/{room}", "/api/rooms/{room}/storage", "/api/rooms/{room}/broadcast",
            "/api/rooms/{room}/reset", "/api/rooms/{room}/{action}",
            "/api/rooms/{room}/users/{target}/{action}"} <= set(spec["paths"])
    assert "delete" in spec["paths"]["/api/rooms/{room}"]


async def test_hostile_http_gets_an_answer_and_the_server_carries_on(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    ada = await enter(make_client, server, "ada", "student", "algebra")
    teacher_token = token(server, "*", "ms-l", "teacher")
    huge = b"x" * (4 * 1024 * 1024)  # still arriving when the server answers 413: the answer must not be lost
    answer = await raw_http(server, b"POST /api/rooms/algebra/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                            + teacher_token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(huge) + huge)
    assert answer.startswith(b"HTTP/1.1 413")
    answer = await raw_http(server, b"GET /api/rooms HTTP/1.1\r\nHost x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    answer = await raw_http(server, b"POST /api/rooms/algebra/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                            + teacher_token.encode() + b"\r\nContent-Length: 9\r\n\r\n[[[[[[[[[")
    assert answer.startswith(b"HTTP/1.1 400")
    status, _ = await call(server, "GET", "/health")  # the websockets side is untouched
    assert status == 200
    ada.storage("notes").append("still here")
    await eventually(lambda: ada.storage_json()["notes"] == ["still here"])
    # a client that opens the API and sends nothing more is cut by the request timeout, not kept
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /api/rooms HTTP/1.1\r\n")
    sock.settimeout(30)
    assert (await asyncio.to_thread(sock.recv, 100)).startswith(b"HTTP/1.1 408")
    sock.close()


async def test_the_listing_spans_processes_on_redis(redis_server: RedisServer, start_server: Any,
                                                    make_client: Any) -> None:
    room = f"spread-{time.monotonic_ns()}"
    a = await start_server(redis=redis_server.url, secret=SECRET)
    b = await start_server(redis=redis_server.url, secret=SECRET)
    await enter(make_client, a, "ada", "student", room)
    await enter(make_client, b, "bob", "student", room)
    teacher_token = token(b, "*", "ms-l", "teacher")

    async def occupants() -> int:
        status, listing = await call(b, "GET", "/api/rooms", teacher_token)
        assert status == 200
        return next((row["occupants"] for row in listing["rooms"] if row["name"] == room), 0)

    async with asyncio.timeout(20):
        while await occupants() != 2:
            await asyncio.sleep(0.2)
