"""Signed webhooks: the server tells another service what happens in its rooms.

``create_io(webhook_url=..., webhook_secret="whsec_...")`` (``--webhook-url``, ``--webhook-secret``).
Each event is one ``POST`` of ``{"type", "room", "data", "timestamp"}`` (JSON), signed as the
Standard Webhooks specification says — ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``) — with the reference
``standardwebhooks`` library, so any receiver verifies it with that library or ten lines of HMAC.

Delivery never blocks a room: :meth:`WebhookSender.send` puts the event in a bounded queue and
returns; one task per server process posts the queue in order, in a worker thread (the standard
library's HTTP client), and retries a failed delivery (a connection error, a timeout, a 5xx, a 429)
with exponential backoff, keeping the same ``webhook-id`` so the receiver can drop a duplicate.
When the receiver stays down the queue fills and the oldest events are dropped, with a warning:
memory stays bounded. Events are sent by the process that accepted what caused them (its own
members' entries, its own commits), so with several processes on Redis each event is sent once.

Events: ``user.entered`` / ``user.left`` (``{"user", "connection_id"}``), ``storage.updated``
(``{"bytes"}``: debounced, at most one a second per room), ``room.created`` (the first time a room
is opened on any process; ``{}``), ``room.deleted``, and the classroom's ``hand.raised`` and
``poll.closed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

from .hooks import Context, Hook, call_hook
from .storage.base import Persistence

log = logging.getLogger(__name__)

#: Events waiting to be delivered, per process; beyond it the oldest are dropped.
MAX_QUEUED_EVENTS = 1000
#: Attempts per event (the first and the retries), and the backoff before retry k: BASE * 2**k.
MAX_ATTEMPTS = 6
RETRY_BASE_S = 0.5
#: One delivery's HTTP timeout.
TIMEOUT_S = 10.0
#: ``storage.updated`` is sent at most this often per room.
STORAGE_DEBOUNCE_S = 1.0
#: The store's key-value scope of the webhooks' own state (which rooms were created).
SCOPE = "webhooks"

EVENT_TYPES = ("user.entered", "user.left", "storage.updated", "room.created", "room.deleted",
               "hand.raised", "poll.closed")


class WebhookConfigError(ValueError):
    """A webhook URL without a secret (or the reverse), or a secret that is not ``whsec_<base64>``."""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    body: bytes
    timestamp: float


class WebhookSender:
    """Queue, sign and deliver one process's webhook events (see the module docstring)."""

    def __init__(self, url: str, secret: str, *, retry_base_s: float = RETRY_BASE_S) -> None:
        if not url.startswith(("http://", "https://")):
            raise WebhookConfigError(f"the webhook URL must be http:// or https://, not {url!r}")
        try:
            self._webhook = Webhook(secret)
        except Exception as error:
            raise WebhookConfigError(f"the webhook secret must be 'whsec_' + base64 ({error})") from None
        self.url = url
        self._retry_base_s = retry_base_s
        self._queue: deque[WebhookEvent] = deque()
        self._task: asyncio.Task[None] | None = None
        self._storage_due: dict[str, asyncio.TimerHandle] = {}
        self._storage_sent: dict[str, float] = {}
        self.delivered = 0
        self.dropped = 0

    # -- producing (never blocks) -----------------------------------------------------------

    def send(self, event_type: str, room: str, data: dict[str, Any] | None = None) -> None:
        """Queue one event for delivery; returns at once."""
        now = time.time()
        body = json.dumps({"type": event_type, "room": room, "data": data or {}, "timestamp": now},
                          separators=(",", ":")).encode()
        if len(self._queue) >= MAX_QUEUED_EVENTS:
            self._queue.popleft()
            self.dropped += 1
            log.warning("webhooks: %d events waiting for %s; dropped the oldest", MAX_QUEUED_EVENTS, self.url)
        self._queue.append(WebhookEvent(f"msg_{secrets.token_hex(12)}", body, now))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._deliver_all())

    def storage_updated(self, room: str, size: Callable[[], int]) -> None:
        """A commit in ``room``: send ``storage.updated`` now, or once the debounce second ends
        (``size`` is asked then, so the event tells the latest size)."""
        if room in self._storage_due:
            return
        wait = self._storage_sent.get(room, 0.0) + STORAGE_DEBOUNCE_S - time.monotonic()

        def fire() -> None:
            self._storage_due.pop(room, None)
            self._storage_sent[room] = time.monotonic()
            self.send("storage.updated", room, {"bytes": size()})

        if wait <= 0:
            fire()
        else:
            self._storage_due[room] = asyncio.get_running_loop().call_later(wait, fire)

    # -- delivering -------------------------------------------------------------------------

    async def _deliver_all(self) -> None:
        while self._queue:
            event = self._queue[0]
            await self._deliver(event)
            if self._queue and self._queue[0] is event:
                self._queue.popleft()

    async def _deliver(self, event: WebhookEvent) -> None:
        headers = self.headers(event)
        for attempt in range(MAX_ATTEMPTS):
            try:
                status = await asyncio.to_thread(_post, self.url, event.body, headers)
            except Exception as error:  # refused, reset, timed out: the receiver is not there
                problem = f"{type(error).__name__}: {error}"
            else:
                if status < 300:
                    self.delivered += 1
                    return
                if status < 500 and status != 429:  # the receiver refuses it: retrying will not help
                    log.warning("webhooks: %s answered %d to %s; not retried", self.url, status, event.id)
                    return
                problem = f"HTTP {status}"
            if attempt + 1 < MAX_ATTEMPTS:
                await asyncio.sleep(self._retry_base_s * 2**attempt)
        log.warning("webhooks: gave up on %s after %d attempts (%s)", event.id, MAX_ATTEMPTS, problem)

    def headers(self, event: WebhookEvent) -> dict[str, str]:
        """The Standard Webhooks headers of ``event`` (the same on every retry)."""
        stamp = datetime.fromtimestamp(int(event.timestamp), tz=UTC)
        return {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(event.timestamp)),
            "webhook-signature": self._webhook.sign(event.id, stamp, event.body),
        }

    async def close(self) -> None:
        """Stop: pending debounced events are sent now; the queue gets a last chance to drain."""
        for handle in list(self._storage_due.values()):
            handle.cancel()
        self._storage_due.clear()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=2.0)
            except TimeoutError:
                self._task.cancel()


def with_webhooks(sender: WebhookSender, persistence: Persistence, *, on_user_connected: Hook | None,
                  on_user_disconnected: Hook | None, on_storage_updated: Hook | None) -> tuple[Hook, Hook, Hook]:
    """The server's three room hooks, each calling the app's own (if any) and then queueing the
    webhook events: ``room.created`` (once ever per room, across processes: the store decides),
    ``user.entered``, ``user.left`` and the debounced ``storage.updated``. The hooks run in the
    process that holds the connection, or that committed the update: each event is sent once."""

    async def entered(context: Context) -> None:
        await call_hook(on_user_connected, context)
        try:
            first = await persistence.put_value(SCOPE, f"created\t{context.room}", time.time(), if_absent=True)
        except Exception:  # the store is away: no room.created rather than a duplicate
            first = False
        if first:
            sender.send("room.created", context.room)
        sender.send("user.entered", context.room, {"user": context.user, "connection_id": context.connection_id})

    async def left(context: Context) -> None:
        await call_hook(on_user_disconnected, context)
        sender.send("user.left", context.room, {"user": context.user, "connection_id": context.connection_id})

    async def stored(room: str, doc: Any) -> None:
        await call_hook(on_storage_updated, room, doc)
        sender.storage_updated(room, lambda: len(doc.get_update()))

    return entered, left, stored


async def forget_room(persistence: Persistence, room: str) -> None:
    """A deleted room: its next first entry is a ``room.created`` again."""
    await persistence.delete_value(SCOPE, f"created\t{room}")


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
