"""``marimo run``: every viewer is a session (its own loop in a thread of one process) and their own
person — a second viewer's ``RoomWidget("room")`` does not replace the first's, as it does in one
kernel; without auth each session has its own colour. Against the real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import DEADLINE_S

from pluv_widget.widget import RoomWidget
from pluv_widget.widget.identity import session_person


@pytest.fixture
def url(server_process: Callable[..., Any]) -> str:
    return str(server_process("--memory").url)


def in_session(make: Callable[[], RoomWidget], ready: threading.Event, done: threading.Event) -> list[Any]:
    """A viewer's session: a thread running its own loop, where ``make()`` runs as a cell would."""
    made: list[Any] = []

    async def session() -> None:
        widget = make()
        made.append(widget)
        await widget.wait_until(lambda: len(widget.others) == 1, timeout=DEADLINE_S)
        ready.set()
        await asyncio.to_thread(done.wait, DEADLINE_S)
        made.append([other["name"] for other in widget.others])
        await widget.client.aclose()  # leave, and wait until the server heard it, before this loop ends
        widget.leave()

    threading.Thread(target=lambda: asyncio.run(session()), daemon=True).start()
    return made


def test_two_viewers_of_one_process_are_two_people(url: str) -> None:
    done = threading.Event()
    ada_ready, bob_ready = threading.Event(), threading.Event()
    ada = in_session(lambda: RoomWidget("viewers", user="Ada", url=url), ada_ready, done)
    bob = in_session(lambda: RoomWidget("viewers", user="Bob", url=url), bob_ready, done)
    assert ada_ready.wait(DEADLINE_S) and bob_ready.wait(DEADLINE_S), "each viewer should see the other"
    assert ada[0].session != bob[0].session
    assert ada[0].connection_state == bob[0].connection_state == "open"  # nobody was replaced
    # Without auth the colour comes from the session's own person (a kernel's, a viewer's).
    assert session_person(ada[0].session) != session_person(bob[0].session)
    done.set()
    for made in (ada, bob):
        deadline = time.monotonic() + DEADLINE_S
        while len(made) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert ada[1] == ["Bob"] and bob[1] == ["Ada"]


async def test_in_one_session_a_new_widget_replaces_the_old_one(url: str) -> None:
    first = RoomWidget("rerun", user="Ada", url=url)
    second = RoomWidget("rerun", user="Ada", url=url)
    try:
        assert first.session == second.session != 0
        await second.wait_until(timeout=DEADLINE_S)
        assert first.connection_state == "closed"
        assert "replaced by a newer RoomWidget" in first.error
    finally:
        await second.client.aclose()  # leave, and wait until the server heard it, before this loop ends
        second.leave()
        async with asyncio.timeout(DEADLINE_S):
            while first.room.state != "closed":  # the replaced one's leave, too
                await asyncio.sleep(0.02)
