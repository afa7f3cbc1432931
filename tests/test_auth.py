"""Tokens, the join-code route, and identity: accepted and refused, over real sockets."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
import pytest
from helpers import until
from pydantic import BaseModel

from pluv_widget import AuthorizationError, CloseCode
from pluv_widget.server.room_server import RoomServer

SECRET = "s3cret-for-tests-only-32-bytes-long!"


class UserModel(BaseModel):
    id: str
    name: str


def token_url(server: RoomServer, **params: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"http://127.0.0.1:{server.port}/token?{query}"


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """GET from a thread: the server under test runs on this test's event loop."""
    return await asyncio.to_thread(_get_json, url)


def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def refused(make_client: Any, server: RoomServer, room: str, auth_endpoint: Any) -> AuthorizationError:
    failures: list[AuthorizationError] = []
    client = make_client(server, auth_endpoint=auth_endpoint)
    handle = client.create_room(room, on_authorization_fail=failures.append, reconnect_timeout_ms=0)
    with pytest.raises(AuthorizationError) as raised:
        await client.enter(handle)
    assert failures == [raised.value]  # called once: no retry loop
    assert handle.state == "closed"
    return raised.value


async def test_a_valid_token_enters_and_its_user_is_the_identity(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET, user=UserModel)
    io = server.io
    client = make_client(
        server, auth_endpoint=lambda room: io.create_token(room=room, user={"id": "u1", "name": "Ada"})
    )
    room = await client.enter("r")
    assert room.myself is not None and room.myself.id == "u1" and room.myself.info["name"] == "Ada"


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (
            lambda io, room: jwt.encode(
                {"room": room, "user": {"id": "u"}, "exp": time.time() + 60}, "wrong-secret-of-32-bytes-at-least!!"
            ),
            CloseCode.TOKEN_INVALID,
        ),
        (lambda io, room: "not.a.token", CloseCode.TOKEN_INVALID),
        (
            lambda io, room: jwt.encode({"room": room, "user": {"id": "u"}, "exp": time.time() - 5}, SECRET),
            CloseCode.TOKEN_EXPIRED,
        ),
        (
            lambda io, room: io.create_token(room="another-room", user={"id": "u", "name": "x"}),
            CloseCode.TOKEN_WRONG_ROOM,
        ),
    ],
    ids=["wrong-secret", "garbage", "expired", "other-room"],
)
async def test_refused_tokens_close_with_a_documented_code(
    start_server: Any, make_client: Any, make_token: Any, code: int
) -> None:
    server = await start_server(secret=SECRET)
    error = await refused(make_client, server, "r", lambda room: make_token(server.io, room))
    assert error.code == code
    assert server.connections == 0


async def test_no_token_is_refused(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    error = await refused(make_client, server, "r", None)
    assert error.code == CloseCode.TOKEN_MISSING and "requires a token" in error.reason


async def test_token_max_age_is_in_seconds(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET)
    token = server.io.create_token(room="r", user={"id": "u"}, max_age=1)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 1
    await until_expired(claims["exp"])
    error = await refused(make_client, server, "r", lambda room: token)
    assert error.code == CloseCode.TOKEN_EXPIRED


async def until_expired(exp: int) -> None:
    await asyncio.sleep(max(0.0, exp - time.time()) + 1.1)  # waiting for a wall clock, not for an event


async def test_join_code_route_mints_tokens_for_a_room_and_a_name(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET, join_code="blue-fox")
    status, body = await get_json(token_url(server, room="class", name="Ada", join_code="wrong"))
    assert status == 403 and body["error"] == "wrong join code"
    endpoint = token_url(server, name="Ada", join_code="blue-fox")
    room = await make_client(server, auth_endpoint=endpoint).enter("class")
    assert room.myself is not None and room.myself.id.startswith("u-")
    assert room.myself.info == {"id": room.myself.id, "name": "Ada", "role": "student"}


async def test_wrong_join_code_calls_on_authorization_fail(start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=SECRET, join_code="blue-fox")
    error = await refused(make_client, server, "class", token_url(server, name="Ada", join_code="nope"))
    assert error.code == 403 and "wrong join code" in error.reason


async def test_token_route_is_closed_with_a_secret_and_no_join_code(start_server: Any) -> None:
    server = await start_server(secret=SECRET)
    status, body = await get_json(token_url(server, room="class", name="Ada", join_code="x"))
    assert status == 403 and "closed" in body["error"]


async def test_a_deployment_can_mint_its_own_users(start_server: Any, make_client: Any) -> None:
    server = await start_server(
        secret=SECRET, mint_user=lambda ask: {"id": f"sso-{ask.name}"} if ask.params.get("ticket") == "ok" else None
    )
    assert (await get_json(token_url(server, room="r", name="Ada", ticket="bad")))[0] == 403
    room = await make_client(server, auth_endpoint=token_url(server, name="Ada", ticket="ok")).enter("r")
    assert room.myself is not None and room.myself.id == "sso-Ada"


async def test_one_authenticated_user_twice_is_one_other_with_two_connections(
    start_server: Any, make_client: Any
) -> None:
    server = await start_server(secret=SECRET)
    io = server.io

    def as_user(user_id: str) -> Any:
        return lambda room: io.create_token(room=room, user={"id": user_id})

    tab1 = await make_client(server, auth_endpoint=as_user("ada")).enter("r")
    tab2 = await make_client(server, auth_endpoint=as_user("ada")).enter("r")
    bob = await make_client(server, auth_endpoint=as_user("bob")).enter("r")
    await until(bob, lambda: len(bob.others) == 1 and len(bob.others[0].connection_ids) == 2)
    (ada,) = bob.others
    assert ada.id == "ada" and set(ada.connection_ids) == {tab1.connection_id, tab2.connection_id}
    assert bob.other(tab1.connection_id) == bob.other(tab2.connection_id)
    # the presence shown is the user's latest
    tab2.update_my_presence({"where": "tab2"})
    await until(bob, lambda: bob.others[0].presence.get("where") == "tab2")
    tab1.update_my_presence({"where": "tab1"})
    await until(bob, lambda: bob.others[0].presence.get("where") == "tab1")
    # my other tab is me, not an "other"
    assert [user.id for user in tab1.others] == ["bob"]
    assert set(tab1.myself.connection_ids) == {tab1.connection_id, tab2.connection_id}  # type: ignore[union-attr]
    tab2._client.leave(tab2)
    await until(bob, lambda: bob.others[0].connection_ids == [tab1.connection_id])
