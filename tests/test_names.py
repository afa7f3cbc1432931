"""Names as identities, over real servers: normalisation and confusable skeletons, 409 for a
name someone holds, the claim that proves it is yours, claims that survive a restart (SQLite)
and hold across processes (Redis), a teacher releasing a name, and the widget keeping its claim."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from helpers import DEADLINE_S
from helpers import until as wait_for
from helpers import until_widget as until

from pluv_widget import create_client
from pluv_widget.errors import PermissionDenied
from pluv_widget.server.names import BadNameError, name_key, normalize_name
from pluv_widget.widget import RoomWidget

SECRET = "s3cret-for-tests-only-32-bytes-long!"
CODES = ("--secret", SECRET, "--join-code", "STUDENTS", "--teacher-code", "TEACH")


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def base_of(target: Any) -> str:
    port = target.port
    return f"http://127.0.0.1:{port}"


async def token(target: Any, name: str, code: str = "STUDENTS", room: str = "class",
                **extra: str) -> tuple[int, dict[str, Any]]:
    url = f"{base_of(target)}/token?{urlencode({'room': room, 'name': name, 'join_code': code, **extra})}"
    return await asyncio.to_thread(http, url)


async def release(target: Any, name: str, bearer: str, room: str = "class") -> tuple[int, dict[str, Any]]:
    url = f"{base_of(target)}/names/release?{urlencode({'room': room, 'name': name})}"
    return await asyncio.to_thread(http, url, "POST", {"Authorization": f"Bearer {bearer}"})


# -- names, without a server ------------------------------------------------------------------


def test_look_alike_names_are_one_name() -> None:
    keys = {name_key(normalize_name(name)) for name in ["Ada", "ada", "ＡＤＡ", "Аda", " Ada ", "ADA", "Ꭺda"]}
    assert len(keys) == 1
    assert name_key("Ada Lovelace") == name_key(normalize_name("Ada   Lovelace"))
    assert len({name_key(name) for name in ["Ada", "Bob", "Adam", "李雷", "Zoë", "Zoe"]}) == 6


@pytest.mark.parametrize("bad", [
    "A\u202eda",  # right-to-left override
    "A\u2066da",  # left-to-right isolate
    "A\u200bda",  # zero-width space
    "A\u200dda",  # zero-width joiner
    "\ufeffAda",  # zero-width no-break space
    "Ad\x00a", "Ad\x1ba", "Ada\n", "\u3164", "", "   ", "x" * 41,
])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(BadNameError):
        normalize_name(bad)


def test_names_are_normalised() -> None:
    assert normalize_name("  ＡＤＡ  ") == "ADA"
    assert normalize_name("Ada \u3000  Lovelace") == "Ada Lovelace"
    assert normalize_name("x" * 40) == "x" * 40


# -- claims over a real server ------------------------------------------------------------------


async def test_a_taken_name_is_409_and_the_claim_gets_the_same_id(start_server: Any) -> None:
    server = await start_server(secret=SECRET, join_code="STUDENTS", teacher_codes=["TEACH"])
    status, first = await token(server, "Ada")
    assert status == 200 and first["user"]["id"].startswith("u-") and first["claim"]
    for impostor in ["Ada", "ada", "ＡＤＡ", "Аda"]:
        status, body = await token(server, impostor)
        assert status == 409, (impostor, body)
        reason = f"the name {normalize_name(impostor)!r} is taken in this class; ask your teacher to release it"
        assert body["error"] == reason
    status, body = await token(server, "Ada", claim="not-the-claim")
    assert status == 409
    status, again = await token(server, "ada", claim=first["claim"])
    assert status == 200 and again["user"]["id"] == first["user"]["id"] and again["claim"] == first["claim"]
    # A teacher code does not take someone's name either.
    status, _ = await token(server, "Ada", code="TEACH")
    assert status == 409
    status, bob = await token(server, "Bob")
    assert status == 200 and bob["user"]["id"] != first["user"]["id"]


@pytest.mark.parametrize("bad", ["A\u202eda", "A\u200bda", "Ad\x07a", "x" * 41])
async def test_a_bad_name_is_400(start_server: Any, bad: str) -> None:
    server = await start_server(secret=SECRET, join_code="STUDENTS")
    status, body = await token(server, bad)
    assert status == 400 and "invalid name" in body["error"]


async def test_the_client_reports_409_and_reconnects_as_itself(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET, join_code="STUDENTS")
    endpoint = f"{base_of(server)}/token?name=Grace&join_code=STUDENTS"
    first = await make_client(server, auth_endpoint=endpoint).enter("class")
    assert first.myself is not None
    failures: list[Exception] = []
    other = make_client(server, auth_endpoint=f"{base_of(server)}/token?name=grace&join_code=STUDENTS&claim=nope")
    handle = other.create_room("class", on_authorization_fail=failures.append, reconnect_timeout_ms=0)
    with pytest.raises(Exception) as raised:
        await other.enter(handle)
    assert failures and getattr(failures[0], "code", None) == 409
    assert "is taken in this class" in str(raised.value)


async def test_a_client_remembers_its_claim_for_its_endpoint(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET, join_code="STUDENTS")
    endpoint = f"{base_of(server)}/token?name=Hopper&join_code=STUDENTS"
    a = await make_client(server, auth_endpoint=endpoint).enter("room-a")
    b = await make_client(server, auth_endpoint=endpoint).enter("room-b")
    assert a.myself is not None and b.myself is not None and a.myself.id == b.myself.id


async def test_a_teacher_releases_a_name(start_server: Any) -> None:
    server = await start_server(secret=SECRET, join_code="STUDENTS", teacher_codes=["TEACH"])
    _, ada = await token(server, "Ada")
    _, student = await token(server, "Bob")
    status, body = await release(server, "Ada", student["token"])
    assert status == 403 and "teacher" in body["error"]
    status, _ = await release(server, "Ada", "forged")
    assert status == 403
    _, teacher = await token(server, "Ms L", code="TEACH")
    status, body = await release(server, "ａda", teacher["token"])
    assert status == 200 and body == {"released": True}
    status, newcomer = await token(server, "Ada")
    assert status == 200 and newcomer["user"]["id"] != ada["user"]["id"]
    status, body = await release(server, "Nobody", teacher["token"])
    assert status == 200 and body == {"released": False}
    url = f"{base_of(server)}/names/release?room=class&name=Ada"
    status, _ = await asyncio.to_thread(http, url, "GET", {"Authorization": f"Bearer {teacher['token']}"})
    assert status == 405


async def test_scoped_codes_keep_separate_claims(start_server: Any) -> None:
    server = await start_server(secret=SECRET, join_codes=["ALG@algebra-", "GEO@geometry-"])
    status, _ = await token(server, "Ada", code="ALG", room="algebra-1")
    assert status == 200
    status, _ = await token(server, "Ada", code="ALG", room="algebra-2")
    assert status == 409  # one prefix, one class
    status, _ = await token(server, "Ada", code="GEO", room="geometry-1")
    assert status == 200  # another class


async def test_claims_survive_a_restart_on_sqlite(server_process: Callable[..., Any], tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    process = server_process("--data-dir", data, *CODES)
    status, ada = await token(process, "Ada")
    assert status == 200
    process.stop()
    restarted = server_process("--data-dir", data, *CODES, port=process.port)
    status, _ = await token(restarted, "Ada")
    assert status == 409
    status, again = await token(restarted, "Ada", claim=ada["claim"])
    assert status == 200 and again["user"]["id"] == ada["user"]["id"]


async def test_claims_hold_across_processes_on_redis(redis_server: Any, redis_processes: Any) -> None:
    name = f"Ada-{time.monotonic_ns() % 10**9}"
    one = redis_processes(redis_server.url, *CODES, name="one")
    two = redis_processes(redis_server.url, *CODES, name="two")
    status, ada = await token(one, name)
    assert status == 200
    status, _ = await token(two, name.lower())
    assert status == 409
    status, again = await token(two, name, claim=ada["claim"])
    assert status == 200 and again["user"]["id"] == ada["user"]["id"]
    _, teacher = await token(two, f"T-{name}", code="TEACH")
    status, _ = await release(two, name, teacher["token"])
    assert status == 200
    status, fresh = await token(one, name)
    assert status == 200 and fresh["user"]["id"] != ada["user"]["id"]


# -- the widget -----------------------------------------------------------------------------------


@pytest.fixture
def widgets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[RoomWidget]]:
    monkeypatch.setenv("PLUV_WIDGET_HOME", str(tmp_path / "home"))
    made: list[RoomWidget] = []
    yield made
    for widget in made:
        widget.leave()


def test_the_widget_keeps_its_claim_and_rejoins_as_itself(
    server_process: Callable[..., Any], widgets: list[RoomWidget], tmp_path: Path
) -> None:
    url = server_process("--memory", *CODES).url
    ada = RoomWidget("class", user="Ada", url=url, join_code="STUDENTS")
    widgets.append(ada)
    until(ada, lambda: ada.connection_state == "open" and ada.me.get("id"))
    first_id = ada.me["id"]
    assert first_id.startswith("u-") and ada.me["role"] == "student"
    claims = tmp_path / "home" / "claims.json"
    assert stat.S_IMODE(os.stat(claims).st_mode) == 0o600
    stored = json.loads(claims.read_text())
    assert list(stored) == [f"{url} ada"]
    ada.leave()
    again = RoomWidget("class", user="ada", url=url, join_code="STUDENTS")  # a restarted kernel
    widgets.append(again)
    until(again, lambda: again.connection_state == "open" and again.me.get("id"))
    assert again.me["id"] == first_id
    # Another machine (no claims file) asking for the name is told why, clearly.
    claims.unlink()
    impostor = RoomWidget("class", user="ADA", url=url, join_code="STUDENTS")
    widgets.append(impostor)
    until(impostor, lambda: impostor.error != "")
    assert impostor.error == "the name 'ADA' is taken in this class; ask your teacher to release it"


def test_roles_in_me_and_others_and_release_name(
    server_process: Callable[..., Any], widgets: list[RoomWidget], tmp_path: Path
) -> None:
    url = server_process("--memory", *CODES).url
    base = url.replace("ws://", "http://")
    teacher = RoomWidget("class", user="Ms Lovelace", url=url, join_code="TEACH")
    widgets.append(teacher)
    bob_client = create_client(ws_endpoint=url, auth_endpoint=f"{base}/token?name=Bob&join_code=STUDENTS")
    try:
        bob = bob_client.create_room("class", initial_presence={"name": "Bob", "color": "#123456"})
        asyncio.run_coroutine_threadsafe(bob_client.enter(bob), bob_client.loop).result(DEADLINE_S)
        until(teacher, lambda: teacher.me.get("role") == "teacher" and len(teacher.others) == 1)
        assert teacher.others[0]["role"] == "student" and teacher.others[0]["name"] == "Bob"
        # Bob hears of the teacher in his welcome or, if she joined after him, a moment later.
        heard = wait_for(bob, lambda: len(bob.others) == 1)
        asyncio.run_coroutine_threadsafe(heard, bob_client.loop).result(DEADLINE_S)
        assert [other.info["role"] for other in bob.others] == ["teacher"]
        student = RoomWidget("class-b", user="Cy", url=url, join_code="STUDENTS")
        widgets.append(student)
        until(student, lambda: student.me.get("role") == "student")
        with pytest.raises(PermissionDenied):
            student.release_name("Bob")
        until(student, lambda: "only a teacher" in student.error)
        assert teacher.release_name("Bob").result(DEADLINE_S) is True
        assert teacher.release_name("Bob").result(DEADLINE_S) is False
        # Another device may now be Bob (a new person: a new id).
        status, body = http(f"{base}/token?" + urlencode({"room": "class", "name": "BOB", "join_code": "STUDENTS"}))
        assert status == 200 and bob.myself is not None and body["user"]["id"] != bob.myself.id
    finally:
        bob_client.close()


async def test_release_name_is_awaitable(server_process: Callable[..., Any], widgets: list[RoomWidget]) -> None:
    url = server_process("--memory", *CODES).url
    teacher = RoomWidget("class", user="Ms L", url=url, join_code="TEACH")
    widgets.append(teacher)
    assert await teacher.release_name("Nobody") is False


def test_without_auth_the_widget_is_a_teacher(server_process: Callable[..., Any], widgets: list[RoomWidget]) -> None:
    url = server_process("--memory").url
    me = RoomWidget("open", user="Ada", url=url)
    widgets.append(me)
    until(me, lambda: me.me.get("role") == "teacher")
