"""Typed procedures, server broadcasts and hooks."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import until
from pydantic import BaseModel

from pluv_widget import RoomEvent, ServerError, create_io
from pluv_widget.server import Context


class Poll(BaseModel):
    question: str
    options: list[str]


async def test_a_procedure_validates_and_transforms_for_the_whole_room(start_server: Any, make_client: Any) -> None:
    io = create_io()

    @io.procedure("ask", input=Poll)
    async def ask(poll: Poll, ctx: Context) -> dict[str, Any]:
        return {"poll_opened": {"question": poll.question.upper(), "by": ctx.connection_id}}

    server = await io.start("127.0.0.1", 0)
    try:
        teacher = await make_client(server).enter("class")
        student = await make_client(server).enter("class")
        seen: dict[str, list[RoomEvent]] = {"teacher": [], "student": []}
        teacher.subscribe.event("poll_opened", seen["teacher"].append)
        student.subscribe.event("poll_opened", seen["student"].append)
        errors: list[ServerError] = []
        teacher.subscribe.error(errors.append)
        teacher.broadcast("ask", {"question": "Lunch?"})  # no options: invalid
        await until(teacher, lambda: errors)
        assert errors[0].code == "invalid_input" and "options" in errors[0].message
        teacher.broadcast("ask", {"question": "lunch?", "options": ["yes", "no"]})
        await until(student, lambda: seen["student"])
        await until(teacher, lambda: seen["teacher"])  # procedure output reaches the sender too
        assert seen["student"][0].data == {"question": "LUNCH?", "by": teacher.connection_id}
        assert seen["student"][0].connection_id == teacher.connection_id
    finally:
        await server.close()


async def test_a_procedure_without_handler_relays_validated_input(start_server: Any, make_client: Any) -> None:
    io = create_io()
    io.procedure("vote", input=Poll)
    server = await io.start("127.0.0.1", 0)
    try:
        a = await make_client(server).enter("r")
        b = await make_client(server).enter("r")
        votes: list[RoomEvent] = []
        b.subscribe.event("vote", votes.append)
        a.broadcast("vote", {"question": "q", "options": ["x"], "extra": "dropped"})
        await until(b, lambda: votes)
        assert votes[0].data == {"question": "q", "options": ["x"]}
    finally:
        await server.close()


async def test_a_failing_procedure_answers_its_sender_only(make_client: Any) -> None:
    io = create_io()

    @io.procedure("boom", input=Poll)
    def boom(poll: Poll, ctx: Context) -> None:
        raise RuntimeError("kaput")

    server = await io.start("127.0.0.1", 0)
    try:
        a = await make_client(server).enter("r")
        errors: list[ServerError] = []
        a.subscribe.error(errors.append)
        a.broadcast("boom", {"question": "q", "options": []})
        await until(a, lambda: errors)
        assert errors[0].code == "procedure_failed" and "kaput" in errors[0].message
        assert a.state == "open"
    finally:
        await server.close()


async def test_the_server_can_broadcast_into_a_room(server: Any, make_client: Any) -> None:
    a = await make_client(server).enter("r")
    elsewhere = await make_client(server).enter("other")
    got: list[RoomEvent] = []
    heard_elsewhere: list[RoomEvent] = []
    a.subscribe.event("notice", got.append)
    elsewhere.subscribe.event("notice", heard_elsewhere.append)
    await server.io.broadcast("r", "notice", {"text": "5 minutes left"})
    await until(a, lambda: got)
    assert got[0].data == {"text": "5 minutes left"} and got[0].connection_id is None and got[0].user is None
    assert heard_elsewhere == []


async def test_hooks_see_users_connect_disconnect_and_rooms_end(make_client: Any) -> None:
    calls: list[tuple[str, Any]] = []
    destroyed = asyncio.Event()

    async def on_destroyed(room: str) -> None:
        calls.append(("destroyed", room))
        destroyed.set()

    io = create_io(
        on_user_connected=lambda ctx: calls.append(("connected", ctx.metadata)),
        on_user_disconnected=lambda ctx: calls.append(("disconnected", ctx.connection_id)),
        on_room_destroyed=on_destroyed,
    )
    server = await io.start("127.0.0.1", 0)
    try:
        client = make_client(server)
        room = await client.enter("r", metadata={"seat": 4})
        connection_id = room.connection_id
        client.leave(room)
        await asyncio.wait_for(destroyed.wait(), 20)
        assert calls == [("connected", {"seat": 4}), ("disconnected", connection_id), ("destroyed", "r")]
        assert server.rooms == {}
    finally:
        await server.close()


async def test_a_hook_that_raises_does_not_hurt_the_room(make_client: Any) -> None:
    def broken(ctx: Context) -> None:
        raise ValueError("hook bug")

    server = await create_io(on_user_connected=broken).start("127.0.0.1", 0)
    try:
        a = await make_client(server).enter("r")
        b = await make_client(server).enter("r")
        await until(a, lambda: len(a.others) == 1)
        assert b.state == "open"
    finally:
        await server.close()
