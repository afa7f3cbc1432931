"""Signed webhooks against a real local HTTP receiver: signatures verified with the reference
``standardwebhooks`` library, retries that keep the id, a receiver that hangs never blocks a room,
and the room events a server sends."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from redis_helpers import RedisServer
from standardwebhooks import Webhook
from test_permissions import SECRET as TEST_SECRET
from test_permissions import enter

from pluv_widget.server.webhooks import WebhookConfigError, WebhookSender

SECRET = "whsec_" + base64.b64encode(b"a webhook secret of 32 bytes!!!!").decode()
DEADLINE_S = 20.0


class Receiver:
    """An HTTP server on 127.0.0.1 recording each POST; ``fail_first`` answers 500 that many times,
    ``hang`` keeps every request waiting until the test ends."""

    def __init__(self, *, fail_first: int = 0, hang: bool = False) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if hang:
                    receiver.released.wait(30)
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = 500 if len(receiver.requests) <= receiver.fail_first else 204
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _headers, body in self.requests]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


async def until(condition: Any, timeout: float = DEADLINE_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_an_event_is_signed_as_standard_webhooks_says(receiver: Receiver) -> None:
    sender = WebhookSender(receiver.url, SECRET)
    sender.send("user.entered", "algebra", {"user": {"id": "ada", "name": "Ada"}})
    await until(lambda: receiver.requests)
    headers, body = receiver.requests[0]
    payload = Webhook(SECRET).verify(body, headers)  # raises unless the signature matches
    assert payload["type"] == "user.entered" and payload["room"] == "algebra"
    assert payload["data"] == {"user": {"id": "ada", "name": "Ada"}}
    assert abs(payload["timestamp"] - time.time()) < 60
    # The README's snippet, by hand: HMAC-SHA256 of "id.timestamp.body" with the decoded secret.
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + base64.b64encode(b"another secret").decode()).verify(body, headers)
    await sender.close()


async def test_a_failed_delivery_is_retried_with_the_same_id() -> None:
    receiver = Receiver(fail_first=2)
    try:
        sender = WebhookSender(receiver.url, SECRET, retry_base_s=0.05)
        sender.send("room.created", "algebra")
        await until(lambda: sender.delivered == 1)
        assert len(receiver.requests) == 3
        assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1
        await sender.close()
    finally:
        receiver.close()


async def test_a_receiver_that_hangs_never_blocks_the_sender_and_memory_stays_bounded() -> None:
    receiver = Receiver(hang=True)
    try:
        sender = WebhookSender(receiver.url, SECRET)
        started = time.perf_counter()
        for index in range(5000):
            sender.send("user.entered", "algebra", {"n": index})
        assert time.perf_counter() - started < 2.0  # returns at once, whatever the receiver does
        assert len(sender._queue) <= 1000 and sender.dropped >= 4000
        receiver.released.set()
        await sender.close()
    finally:
        receiver.close()


async def test_storage_updated_is_debounced_to_one_a_second_per_room(receiver: Receiver) -> None:
    sender = WebhookSender(receiver.url, SECRET)
    size = {"bytes": 0}
    for _ in range(50):
        size["bytes"] += 10
        sender.storage_updated("algebra", lambda: size["bytes"])
    sender.storage_updated("geometry", lambda: 7)
    await until(lambda: len(receiver.requests) >= 3)
    events = receiver.events()
    algebra = [event for event in events if event["room"] == "algebra"]
    assert [event["data"]["bytes"] for event in algebra] == [10, 500]  # the first now, the latest after a second
    assert algebra[1]["timestamp"] - algebra[0]["timestamp"] >= 0.9
    assert [event["data"] for event in events if event["room"] == "geometry"] == [{"bytes": 7}]
    await sender.close()


def test_a_bad_configuration_is_refused_with_words() -> None:
    with pytest.raises(WebhookConfigError, match="http"):
        WebhookSender("ftp://example.org", SECRET)
    with pytest.raises(WebhookConfigError, match="whsec_"):
        WebhookSender("http://127.0.0.1:1/", "whsec_")


async def test_a_server_sends_each_room_event_once(receiver: Receiver, redis_server: RedisServer,
                                                   start_server: Any, make_client: Any) -> None:
    room = f"hooked-{time.monotonic_ns()}"
    options = {"redis": redis_server.url, "secret": TEST_SECRET, "webhook_url": receiver.url, "webhook_secret": SECRET}
    a = await start_server(**options)
    b = await start_server(**options)
    ada = await enter(make_client, a, "ada", "student", room)
    bob = await enter(make_client, b, "bob", "student", room)
    ada.storage("notes").append("one")
    await until(lambda: any(event["type"] == "storage.updated" for event in receiver.events()))
    bob._client.leave(bob)
    await until(lambda: any(event["type"] == "user.left" for event in receiver.events()))
    assert a.io is not None
    teacher = a.io.create_token(room="*", user={"id": "ms-l", "name": "Ms L", "role": "teacher"})
    request = urllib.request.Request(f"http://127.0.0.1:{a.port}/api/rooms/{room}", method="DELETE",
                                     headers={"Authorization": f"Bearer {teacher}"})
    assert (await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=20).status)) == 200
    await until(lambda: any(event["type"] == "room.deleted" for event in receiver.events()))

    def since_deleted() -> list[str]:
        kinds = [event["type"] for event in receiver.events() if event["room"] == room]
        return kinds[kinds.index("room.deleted"):]

    await until(lambda: "user.entered" in since_deleted())  # Ada's client reconnects by itself
    for headers, body in receiver.requests:
        Webhook(SECRET).verify(body, headers)
    mine = [event for event in receiver.events() if event["room"] == room]
    kinds = [event["type"] for event in mine]
    # Ada is still in the room when it is deleted: when she reconnects the room is created anew.
    before, after = kinds[:kinds.index("room.deleted")], kinds[kinds.index("room.deleted"):]
    assert before.count("room.created") == 1 and before.index("room.created") < before.index("user.entered")
    assert after.count("room.created") == 1 and after.index("room.created") < after.index("user.entered")
    entered = [event["data"]["user"]["id"] for event in mine if event["type"] == "user.entered"]
    assert sorted(entered[:2]) == ["ada", "bob"] and entered[2:] == ["ada"] and "user.left" in before
    assert next(event["data"]["user"]["id"] for event in mine if event["type"] == "user.left") == "bob"
    stored = [event["timestamp"] for event in mine if event["type"] == "storage.updated"]
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(stored))  # debounced
    assert kinds.count("room.deleted") == 1


async def test_a_raised_hand_and_a_closed_poll_are_sent_without_what_is_private(
        receiver: Receiver, start_server: Any, make_client: Any) -> None:
    server = await start_server(secret=TEST_SECRET, webhook_url=receiver.url, webhook_secret=SECRET)
    ada = await enter(make_client, server, "ada", "student", "class-hooks")
    teacher = await enter(make_client, server, "ms-l", "teacher", "class-hooks")
    await ada.call("hands.raise", {"note": "stuck on 3b"})
    poll = await teacher.call("polls.create", {"question": "Stable?", "options": ["yes", "no"]})
    await ada.call("polls.vote", {"poll": poll["id"], "choice": "yes"})
    await teacher.call("polls.close", {"poll": poll["id"]})
    await until(lambda: any(event["type"] == "poll.closed" for event in receiver.events()))
    await until(lambda: any(event["type"] == "hand.raised" for event in receiver.events()))
    hand = next(event for event in receiver.events() if event["type"] == "hand.raised")
    assert hand["data"] == {"user": "ada", "name": "Ada"}  # not the note
    closed = next(event for event in receiver.events() if event["type"] == "poll.closed")
    assert closed["data"] == {"poll": poll["id"], "question": "Stable?", "counts": {"yes": 1, "no": 0}}
