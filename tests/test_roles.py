"""Roles from codes, over a real server: each code gives its role, scoped codes refuse other
rooms, nothing in the request raises a role, and a server without auth makes everyone a teacher."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from helpers import until

from pluv_widget import AuthorizationError
from pluv_widget.errors import ServerConfigError
from pluv_widget.server.room_server import RoomServer

SECRET = "s3cret-for-tests-only-32-bytes-long!"
CODES: dict[str, Any] = {"join_codes": ["STUDENTS-42"], "teacher_codes": ["TEACH-7"], "observer_codes": ["SCREEN"]}


def token_url(server: RoomServer, **params: str) -> str:
    return f"http://127.0.0.1:{server.port}/token?{urlencode(params)}"


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    def get() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(url) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    return await asyncio.to_thread(get)


def role_in(token: str) -> str:
    return str(jwt.decode(token, SECRET, algorithms=["HS256"])["user"]["role"])


@pytest.mark.parametrize(("code", "role"), [("STUDENTS-42", "student"), ("TEACH-7", "teacher"), ("SCREEN", "observer")])
async def test_each_code_gives_its_role(start_server: Any, code: str, role: str) -> None:
    server = await start_server(secret=SECRET, **CODES)
    status, body = await get_json(token_url(server, room="class", name=f"someone-{role}", join_code=code))
    assert status == 200, body
    assert body["user"]["role"] == role and role_in(body["token"]) == role
    assert set(body) == {"token", "user", "claim"} and body["user"]["name"] == f"someone-{role}"


async def test_a_student_code_never_yields_a_teacher(start_server: Any) -> None:
    server = await start_server(secret=SECRET, **CODES)
    url = token_url(server, room="class", name="Mallory", join_code="STUDENTS-42", role="teacher",
                    user='{"role": "teacher"}')
    status, body = await get_json(url)
    assert status == 200 and body["user"]["role"] == "student" and role_in(body["token"]) == "student"


async def test_scoped_codes_are_valid_only_for_their_rooms(start_server: Any) -> None:
    server = await start_server(secret=SECRET, join_codes=["ALG@algebra-", "GEO@geometry-"],
                                teacher_codes=["BOSS"])
    status, body = await get_json(token_url(server, room="algebra-1", name="Ada", join_code="ALG"))
    assert status == 200 and body["user"]["role"] == "student"
    status, body = await get_json(token_url(server, room="geometry-1", name="Ada", join_code="ALG"))
    assert status == 403 and body["error"] == "wrong join code"
    status, body = await get_json(token_url(server, room="geometry-1", name="Bob", join_code="GEO"))
    assert status == 200
    status, _ = await get_json(token_url(server, room="history", name="Cy", join_code="GEO"))
    assert status == 403
    status, body = await get_json(token_url(server, room="history", name="Ms L", join_code="BOSS"))
    assert status == 200 and body["user"]["role"] == "teacher"


async def test_wrong_codes_are_still_rate_limited(start_server: Any) -> None:
    server = await start_server(secret=SECRET, **CODES)
    statuses = [(await get_json(token_url(server, room="class", name="x", join_code=f"guess{i}")))[0]
                for i in range(30)]
    assert statuses[0] == 403 and statuses[-1] == 429


async def test_roles_are_seen_by_everyone_in_the_room(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET, **CODES)
    base = f"http://127.0.0.1:{server.port}/token"
    teacher = await make_client(server, auth_endpoint=f"{base}?name=Ms+L&join_code=TEACH-7").enter("class")
    student = await make_client(server, auth_endpoint=f"{base}?name=Ada&join_code=STUDENTS-42").enter("class")
    screen = await make_client(server, auth_endpoint=f"{base}?name=Projector&join_code=SCREEN").enter("class")
    await until(teacher, lambda: len(teacher.others) == 2)
    assert sorted(other.info["role"] for other in teacher.others) == ["observer", "student"]
    await until(screen, lambda: len(screen.others) == 2)
    assert {other.info["name"]: other.info["role"] for other in screen.others} == {"Ms L": "teacher", "Ada": "student"}
    assert student.myself is not None and student.myself.info["role"] == "student"


async def test_without_auth_everyone_is_a_teacher(server: RoomServer, make_client: Any) -> None:
    a = await make_client(server).enter("open")
    b = await make_client(server).enter("open")
    await until(a, lambda: len(a.others) == 1)
    assert a.myself is not None and a.myself.info == {"id": a.myself.connection_id, "role": "teacher"}
    assert a.others[0].info["role"] == "teacher" and b.myself is not None and b.myself.info["role"] == "teacher"


async def test_create_token_validates_and_defaults_the_role(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    io = server.io
    assert role_in(io.create_token(room="r", user={"id": "a"})) == "student"
    assert role_in(io.create_token(room="r", user={"id": "t", "name": "T", "role": "teacher"})) == "teacher"
    with pytest.raises(ValueError, match="role"):
        io.create_token(room="r", user={"id": "x", "role": "admin"})
    # A token signed with an unknown role is refused at the door.
    forged = jwt.encode({"room": "r", "user": {"id": "x", "role": "god"}, "exp": 2**31}, SECRET, algorithm="HS256")
    client = make_client(server, auth_endpoint=lambda _room: forged)
    with pytest.raises(AuthorizationError):
        await client.enter(client.create_room("r", reconnect_timeout_ms=0))


async def test_mint_user_roles_default_to_student_and_are_checked(start_server: Any) -> None:
    server = await start_server(secret=SECRET, mint_user=lambda ask: {"id": ask.name, "name": ask.name})
    status, body = await get_json(token_url(server, room="r", name="sso-ada"))
    assert status == 200 and body["user"]["role"] == "student" and role_in(body["token"]) == "student"
    other = await start_server(secret=SECRET, mint_user=lambda ask: {"id": ask.name, "role": "king"})
    status, body = await get_json(token_url(other, room="r", name="x"))
    assert status == 400 and "role" in body["error"]


async def test_codes_on_the_command_line(server_process: Any) -> None:
    process = server_process("--memory", "--secret", SECRET, "--join-code", "S1", "--join-code", "S2@alg-",
                             "--teacher-code", "T1@alg-", "--observer-code", "O1")
    base = process.url.replace("ws://", "http://") + "/token?"
    for code, room, expected in [("S1", "any", 200), ("S2", "alg-1", 200), ("S2", "geo-1", 403),
                                 ("T1", "alg-2", 200), ("T1", "geo", 403), ("O1", "geo", 200)]:
        status, body = await get_json(base + urlencode({"room": room, "name": f"n-{code}-{room}", "join_code": code}))
        assert status == expected, (code, room, body)
        if status == 200:
            assert body["user"]["role"] == {"S": "student", "T": "teacher", "O": "observer"}[code[0]]


def test_one_code_for_two_roles_is_a_clear_error() -> None:
    result = subprocess.run([sys.executable, "-m", "pluv_widget", "serve", "--memory", "--secret", SECRET,
                             "--join-code", "SAME", "--teacher-code", "SAME@x-"], capture_output=True, timeout=60)
    assert result.returncode != 0 and b"both a teacher and a student code" in result.stderr


def test_one_code_cannot_give_two_roles() -> None:
    from pluv_widget import create_io

    with pytest.raises(ServerConfigError):
        create_io(secret=SECRET, join_codes=["X"], teacher_codes=["X@alg-"])
    with pytest.raises(ServerConfigError):
        create_io(teacher_codes=["T"])  # codes need a secret
    assert create_io(secret=SECRET, join_code="A", join_codes=["B"]).join_codes == ["A", "B"]
