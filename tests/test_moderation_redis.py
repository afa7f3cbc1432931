"""Moderation holds across server processes that share Redis: a teacher on one process mutes,
locks and removes a student connected to another, and a process started later knows it all."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from helpers import until
from redis_helpers import RedisServer
from test_permissions import SECRET, STORAGE, endpoint, enter

from pluv_widget.errors import AuthorizationError, MutedError, RoomLockedError
from pluv_widget.protocol import CloseCode

_rooms = itertools.count()


async def test_mute_lock_and_remove_cross_processes_and_outlive_them(
    redis_server: RedisServer, start_server: Any, make_client: Any
) -> None:
    room = f"moderated-{time.monotonic_ns()}-{next(_rooms)}"
    a = await start_server(redis=redis_server.url, secret=SECRET)
    b = await start_server(redis=redis_server.url, secret=SECRET)
    teacher = await enter(make_client, a, "teacher", "teacher", room)
    bob = await enter(make_client, b, "bob", "student", room)
    await until(teacher, lambda: len(teacher.others) == 1)

    await teacher.call("users.mute", {"user_id": "bob"})
    with pytest.raises(MutedError):
        await bob.call("messages.post", {"id": "m1", "text": "from a muted student"})
    # Both views say so, on either process: the student's UI can tell them, the teacher's buttons.
    await until(bob, lambda: (bob.class_view or {}).get("muted") is True)
    await until(teacher, lambda: (teacher.class_view or {}).get("muted") == ["bob"])
    await teacher.call("users.unmute", {"user_id": "bob"})
    await bob.call("messages.post", {"id": "m2", "text": "allowed again"})
    await until(bob, lambda: (bob.class_view or {}).get("muted") is False)

    await teacher.call("room.lock", {})
    with pytest.raises(RoomLockedError):
        await bob.call("messages.post", {"id": "m3", "text": "in a locked room"})
    await until(bob, lambda: (bob.class_view or {}).get("locked") is True)
    # a process started after the lock reads it from Redis
    c = await start_server(redis=redis_server.url, secret=SECRET)
    late = await enter(make_client, c, "carol", "student", room)
    with pytest.raises(RoomLockedError):
        await late.call("messages.post", {"id": "m4", "text": "late, still locked"})
    await teacher.call("room.unlock", {})

    failures: list[AuthorizationError] = []
    bob_again_client = make_client(b, auth_endpoint=endpoint(b, "bob", "student"), initial_storage=STORAGE)
    bob_again = bob_again_client.create_room(room, on_authorization_fail=failures.append, initial_storage=STORAGE)
    await bob_again_client.enter(bob_again)
    await teacher.call("users.remove", {"user_id": "bob"})  # on a; bob's connections are on b
    await until(bob_again, lambda: bool(failures))
    assert failures[0].code == CloseCode.REMOVED
