"""Plain HTTP requests with bodies on the websocket port: one request, one answer, then close.

The websockets library reads a handshake request and refuses any body (``Content-Length`` must be
0), so the REST API (``/api/...``) cannot go through it. :class:`GuardedConnection` reads the
request line of every new socket first; a request for the API is handed to an
:class:`HttpExchange` instead of websockets. It parses with ``h11`` (a maintained sans-I/O HTTP/1.1
implementation), bounded like every other input:

* the request head at most :data:`MAX_HEAD_BYTES`, the body at most :data:`MAX_BODY_BYTES`
  (``413``), and the whole request within :data:`REQUEST_TIMEOUT_S` (a client that trickles
  bytes is cut);
* malformed HTTP gets ``400``; every answer is JSON and closes the connection (no keep-alive:
  an admin API does not need it, and a socket that stays costs a slot) — after a short linger
  when the answer came before the whole request, so that the client reads it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11

log = logging.getLogger("pluv_widget.server")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 256 * 1024
REQUEST_TIMEOUT_S = 10.0
#: After answering a request before all of it arrived (413, 400, 408): how long what the client
#: still sends is read and dropped before the socket closes.
LINGER_S = 2.0


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes
    address: str  # the client's address (the gate's: a trusted proxy's X-Forwarded-For applied)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: Any  # JSON, or bytes with ``content_type``
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpExchange:
    """One HTTP request on ``transport``, answered by ``handler``; ``done`` is called once the
    connection is closed (the gate releases its slot)."""

    def __init__(self, transport: asyncio.Transport, handler: Handler, address: str) -> None:
        self.transport = transport
        self.handler = handler
        self.address = address
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.answered = False
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(REQUEST_TIMEOUT_S, self._timed_out)
        self.task: asyncio.Task[None] | None = None

    def feed(self, data: bytes) -> None:
        if self.answered:
            return  # lingering (see _linger), or the handler is at work: nothing more is read
        self.h11.receive_data(data)
        while not self.answered:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                self._answer(HttpResponse(error.error_status_hint, {"error": f"bad HTTP request: {error}",
                                                                   "code": "invalid_request"}))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request = event
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > MAX_BODY_BYTES:
                    self._answer(HttpResponse(413, {"error": f"the body is over {MAX_BODY_BYTES} bytes",
                                                    "code": "too_large"}))
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
                return
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    def eof(self) -> None:
        self.feed(b"")

    def _dispatch(self) -> None:
        assert self.request is not None
        request = HttpRequest(
            self.request.method.decode("ascii", "replace"),
            self.request.target.decode("ascii", "replace"),
            {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.request.headers},
            bytes(self.body),
            self.address,
        )
        self.answered = True  # no more input is read
        self.task = asyncio.get_running_loop().create_task(self._run(request))

    async def _run(self, request: HttpRequest) -> None:
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("the HTTP API failed on %s %s", request.method, request.target[:200])
            response = HttpResponse(500, {"error": "the server failed on this request", "code": "internal_error"})
        self._write(response)

    def _answer(self, response: HttpResponse) -> None:
        self.answered = True
        self._write(response)

    def _write(self, response: HttpResponse) -> None:
        if self.transport.is_closing():
            return
        if isinstance(response.body, bytes | bytearray):
            body = bytes(response.body)
        else:
            body = (json.dumps(response.body, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        headers = [("content-type", response.content_type), ("content-length", str(len(body))),
                   ("connection", "close"), ("access-control-allow-origin", "*"), *response.headers]
        try:
            if self.h11.our_state in (h11.SEND_RESPONSE, h11.IDLE):
                data = self.h11.send(h11.Response(status_code=response.status, headers=headers))
                data = (data or b"") + (self.h11.send(h11.Data(data=body)) or b"")
                data += self.h11.send(h11.EndOfMessage()) or b""
            else:
                data = b"HTTP/1.1 %d \r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (
                    response.status, len(body), body)
        except h11.LocalProtocolError:  # the request was too broken to answer in protocol
            data = b"HTTP/1.1 %d \r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (
                response.status, len(body), body)
        self.transport.write(data)
        if self.h11.their_state is h11.DONE:
            self.close()
        else:
            self._linger()

    def _linger(self) -> None:
        """Answered before the whole request arrived: closing now, with the client's bytes still
        coming, would make the kernel reset the connection — and the client would lose the answer
        (a 413 arrives as "connection reset"). So: end our side after the answer, drop what still
        comes, close when the client does or after :data:`LINGER_S`."""
        self.timer.cancel()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(LINGER_S, self.close)

    def _timed_out(self) -> None:
        if not self.answered:
            self._answer(HttpResponse(408, {"error": f"the request took over {REQUEST_TIMEOUT_S:g} s",
                                            "code": "timeout"}))

    def close(self) -> None:
        self.timer.cancel()
        if not self.transport.is_closing():
            self.transport.close()
