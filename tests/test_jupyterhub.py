"""pluv-widget on a real JupyterHub (docs/jupyterhub_config.py), started once for this module.

A teacher (hub group ``teachers``) and two students. Their single-user servers are spawned by the
hub, which gives each one ``PLUV_WIDGET_URL`` and an identify-only ``PLUV_WIDGET_HUB_TOKEN``;
the tests read those from the spawned server's real environment (``/proc/<pid>/environ``) and
use them as a kernel would: through the hub's proxy, under ``/services/pluv/``. The last test
logs into the hub in Chromium and runs ``RoomWidget("class")`` in the teacher's spawned lab.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from helpers import until
from hub_helpers import STUDENTS, TEACHER, Hub, start_hub

from pluv_widget import create_client
from pluv_widget.client.client import PluvClient
from pluv_widget.protocol import CloseCode
from pluv_widget.protocol.routes import token_url

ALICE, BOB = STUDENTS
ROOM = "class"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    running = start_hub(tmp_path_factory.mktemp("hub"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def kernel_env(hub: Hub) -> dict[str, dict[str, str]]:
    """Each user's spawned server's environment (what their kernels inherit)."""
    hub.start_server(TEACHER, *STUDENTS)
    return {name: hub.server_environment(name) for name in (TEACHER, *STUDENTS)}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def ask_token(env: dict[str, str], *, room: str = ROOM, **params: str) -> tuple[int, Any]:
    """``/token`` the way the widget asks it, from a kernel's environment."""
    query = {"name": env.get("JUPYTERHUB_USER", "x"), "hub_token": env["PLUV_WIDGET_HUB_TOKEN"], **params}
    return get(token_url(env["PLUV_WIDGET_URL"], room=room, **query))


def test_kernels_get_the_service_and_an_identify_only_token(hub: Hub, kernel_env: dict[str, dict[str, str]]) -> None:
    for name, env in kernel_env.items():
        assert env["PLUV_WIDGET_URL"] == hub.pluv_url
        token = env["PLUV_WIDGET_HUB_TOKEN"]
        assert token and token != env["JUPYTERHUB_API_TOKEN"]  # never the server's own token
        (model,) = [t for t in hub.api("GET", f"/users/{name}/tokens")["api_tokens"]
                    if t["note"].startswith("pluv-widget identity")]
        assert sorted(model["scopes"]) == [f"read:users:groups!user={name}", f"read:users:name!user={name}"]
    # The identity token cannot reach the student's own server.
    alice = kernel_env[ALICE]
    request = urllib.request.Request(f"{hub.url}/user/{ALICE}/api/contents",
                                     headers={"Authorization": f"token {alice['PLUV_WIDGET_HUB_TOKEN']}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403


def test_identities_and_roles_come_from_the_hub(hub: Hub, kernel_env: dict[str, dict[str, str]]) -> None:
    for name, env in kernel_env.items():
        status, answer = ask_token(env)
        role = "teacher" if name == TEACHER else "student"
        assert (status, answer["user"]) == (200, {"id": name, "name": name, "role": role})
        claims = jwt.decode(answer["token"], options={"verify_signature": False})
        assert claims["user"] == answer["user"] and claims["room"] == ROOM
    # The header form, and every route both under the service prefix and directly.
    teacher = kernel_env[TEACHER]
    status, answer = get(f"{hub.url}/services/pluv/token?room={ROOM}&name=t",
                         {"Authorization": f"token {teacher['PLUV_WIDGET_HUB_TOKEN']}"})
    assert (status, answer["user"]["role"]) == (200, "teacher")
    direct = f"http://127.0.0.1:{hub.service_port}"
    status, answer = get(f"{direct}/token?room={ROOM}&name=t&hub_token={teacher['PLUV_WIDGET_HUB_TOKEN']}")
    assert (status, answer["user"]["id"]) == (200, TEACHER)
    for base in (f"{hub.url}/services/pluv", direct):
        status, health = get(f"{base}/health")
        assert (status, health["server"], health["auth"]) == (200, "pluv-widget", True)


async def test_three_people_in_a_room_through_the_proxy(hub: Hub, kernel_env: dict[str, dict[str, str]]) -> None:
    clients: list[PluvClient] = []
    try:
        rooms = {}
        for name, env in kernel_env.items():
            auth = token_url(env["PLUV_WIDGET_URL"], name=name, hub_token=env["PLUV_WIDGET_HUB_TOKEN"])
            client = create_client(ws_endpoint=env["PLUV_WIDGET_URL"], auth_endpoint=auth)
            clients.append(client)
            rooms[name] = await client.enter(ROOM, timeout=30)
        for name, room in rooms.items():
            await until(room, lambda room=room: len(room.others) == 2)
            seen = {user.id: user.info["role"] for user in room.others}
            expected = {other: "teacher" if other == TEACHER else "student" for other in kernel_env if other != name}
            assert seen == expected
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


async def test_forged_and_other_users_tokens_are_refused(hub: Hub, kernel_env: dict[str, dict[str, str]]) -> None:
    bob = kernel_env[BOB]
    # A made-up hub token, and a service's token (it identifies no person).
    for fake in ("0123456789abcdef0123456789abcdef", hub.admin_token):
        status, answer = ask_token({**bob, "PLUV_WIDGET_HUB_TOKEN": fake})
        assert status == 403, answer
    status, _ = ask_token({**bob, "PLUV_WIDGET_HUB_TOKEN": ""})
    assert status == 403
    # Asking for someone else's name gets your own identity, never theirs.
    status, answer = ask_token(bob, name=TEACHER, user=TEACHER, id=TEACHER, role="teacher")
    assert (status, answer["user"]) == (200, {"id": BOB, "name": BOB, "role": "student"})
    # A room token claiming to be the teacher, signed with anything but the service's secret.
    forged = jwt.encode({"room": ROOM, "user": {"id": TEACHER, "name": TEACHER, "role": "teacher"},
                         "exp": int(time.time()) + 600}, "x" * 40, algorithm="HS256")
    failures: list[Exception] = []
    client = create_client(ws_endpoint=bob["PLUV_WIDGET_URL"], auth_endpoint=lambda _room: forged)
    try:
        room = client.create_room(ROOM, on_authorization_fail=failures.append)
        with pytest.raises(Exception) as refused:
            await client.enter(room, timeout=30)
        assert getattr(refused.value, "code", None) == CloseCode.TOKEN_INVALID
        assert len(failures) == 1
    finally:
        await client.aclose()


def test_a_token_is_refused_once_its_server_stopped(hub: Hub, kernel_env: dict[str, dict[str, str]]) -> None:
    old = kernel_env[BOB]
    assert ask_token(old)[0] == 200
    hub.stop_server(BOB)
    status, answer = ask_token(old)  # no cache: refused at once
    assert status == 403, answer
    notes = [t["note"] for t in hub.api("GET", f"/users/{BOB}/tokens")["api_tokens"]]
    assert not any(note.startswith("pluv-widget identity") for note in notes)
    hub.start_server(BOB)
    kernel_env[BOB] = new = hub.server_environment(BOB)
    assert new["PLUV_WIDGET_HUB_TOKEN"] != old["PLUV_WIDGET_HUB_TOKEN"]
    assert ask_token(new)[1]["user"]["id"] == BOB
    assert ask_token(old)[0] == 403


@pytest.mark.e2e
def test_the_widget_in_a_spawned_server(hub: Hub, kernel_env: dict[str, dict[str, str]], tmp_path: Path) -> None:
    """The teacher logs in through the hub's login page and runs ``RoomWidget("class")`` — nothing
    configured — in their spawned lab; alice (a client with her kernel's environment) is in the room."""
    from e2e.lab import launch_chromium, run_all_cells, screenshot, write_notebook
    from playwright.sync_api import sync_playwright

    cell = f"from pluv_widget import RoomWidget\n\nw = RoomWidget({ROOM!r})\nw"  # what a person types
    write_notebook(hub.homes / TEACHER / "class.ipynb", [cell])
    alice = kernel_env[ALICE]
    client = create_client(ws_endpoint=alice["PLUV_WIDGET_URL"], auth_endpoint=token_url(
        alice["PLUV_WIDGET_URL"], name=ALICE, hub_token=alice["PLUV_WIDGET_HUB_TOKEN"]))
    try:
        room = client.enter_soon(ROOM)
        with sync_playwright() as playwright:
            context = launch_chromium(playwright, tmp_path / "chromium")
            try:
                page = context.new_page()
                page.goto(f"{hub.url}/hub/login?next=/user/{TEACHER}/lab/workspaces/hub/tree/class.ipynb")
                page.fill("#username_input", TEACHER)
                page.fill("#password_input", "any password")
                page.click("#login_submit")
                try:
                    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=120_000)
                except Exception:  # say where the page got stuck, and keep a picture of it
                    screenshot(page, "jupyterhub-teacher-stuck")
                    raise AssertionError(f"no notebook at {page.url}: {page.inner_text('body')[:500]!r}") from None
                page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\|\s*Idle")).wait_for()
                run_all_cells(page)
                try:
                    page.locator(f'.pluv-person.pluv-me[data-name="{TEACHER}"]').wait_for()
                    page.locator(f'.pluv-person:not(.pluv-me)[data-name="{ALICE}"]').wait_for()
                finally:
                    screenshot(page, "jupyterhub-teacher")
                assert "private local server" not in page.locator(".jp-OutputArea").first.inner_text()
                deadline = time.monotonic() + 30
                while not any(user.id == TEACHER for user in room.others):
                    assert time.monotonic() < deadline, f"alice never saw the teacher: {room.others}"
                    time.sleep(0.1)
                (teacher,) = [user for user in room.others if user.id == TEACHER]
                assert teacher.info == {"id": TEACHER, "name": TEACHER, "role": "teacher"}
                assert teacher.presence["name"] == TEACHER
            finally:
                context.close()
    finally:
        client.close()
