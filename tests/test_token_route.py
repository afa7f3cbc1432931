"""How the client treats the token route's answers, against a tiny real HTTP server: every 4xx
(429 with its Retry-After, 409 ...) is a refusal reported once through ``on_authorization_fail``;
a 5xx or a network error is retried like a lost connection."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pluv_widget import AuthorizationError
from pluv_widget.client.auth import fetch_token


class TokenRoute:
    """An HTTP server on 127.0.0.1 answering each GET with the next of ``answers``
    (status, headers, body); the last answer repeats."""

    def __init__(self, *answers: tuple[int, dict[str, str], bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[str] = []
        route = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route.requests.append(self.path)
                status, headers, body = route.answers[min(len(route.requests), len(route.answers)) - 1]
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token?join_code=x&name=ada"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def routes() -> Iterator[list[TokenRoute]]:
    made: list[TokenRoute] = []
    yield made
    for route in made:
        route.close()


def error(text: str) -> bytes:
    return json.dumps({"error": text}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "words"),
    [
        (429, {"Retry-After": "30"}, "too many wrong join codes"),
        (409, {}, "that name is taken"),
        (400, {}, "bad room"),
        (403, {}, "token refused"),
        (418, {}, "teapot"),
    ],
)
async def test_a_4xx_of_the_token_route_is_reported_once_and_never_retried(
    status: int, headers: dict[str, str], words: str, server: Any, make_client: Any, routes: list[TokenRoute]
) -> None:
    route = TokenRoute((status, headers, error(words)))
    routes.append(route)
    failures: list[AuthorizationError] = []
    client = make_client(server, auth_endpoint=route.url)
    room = client.create_room("r", on_authorization_fail=failures.append, reconnect_timeout_ms=0)
    with pytest.raises(AuthorizationError) as raised:
        await client.enter(room, timeout=10)
    assert raised.value.code == status and words in raised.value.reason
    if status == 429:
        assert "Retry-After: 30" in str(raised.value)
    await asyncio.sleep(0.5)  # no silent retry loop: one request, one report, a closed room
    assert len(route.requests) == 1 and "room=r" in route.requests[0]
    assert [failure.code for failure in failures] == [status] and room.state == "closed"


async def test_a_5xx_of_the_token_route_is_retried_until_it_answers(
    server: Any, make_client: Any, routes: list[TokenRoute]
) -> None:
    route = TokenRoute((503, {}, error("starting")), (500, {}, b"oops"), (200, {}, json.dumps({"token": "t"}).encode()))
    routes.append(route)
    failures: list[AuthorizationError] = []
    client = make_client(server, auth_endpoint=route.url)
    room = client.create_room("r", on_authorization_fail=failures.append, reconnect_timeout_ms=0)
    await client.enter(room, timeout=10)
    assert room.state == "open" and len(route.requests) == 3 and failures == []


async def test_fetch_token_words_and_network_errors(routes: list[TokenRoute]) -> None:
    route = TokenRoute((429, {"Retry-After": "7"}, b"slow down\nplease"))
    routes.append(route)
    with pytest.raises(AuthorizationError) as raised:
        await fetch_token(route.url, "r")
    assert raised.value.code == 429 and raised.value.reason == "auth endpoint refused: slow down (Retry-After: 7 s)"
    route.close()
    with pytest.raises(OSError):  # unreachable: retryable, not a refusal
        await fetch_token(route.url, "r")
    routes.remove(route)
