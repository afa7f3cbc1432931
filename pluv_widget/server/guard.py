"""Sockets as a hostile client sees them: who they are, how many, and what they may cost.

Every TCP connection is a :class:`GuardedConnection` (``serve(create_connection=...)``), counted
by the server's :class:`ConnectionGate` from ``connection_made`` to ``connection_lost``:

* **Pending** sockets (accepted, handshaking or waiting for ``join``) are limited per source
  address and in total; **every** socket per source address and in total. A socket over a limit
  is refused at once: ``HTTP 503`` with ``Retry-After``, then closed, before any handshake. The
  total is derived from ``RLIMIT_NOFILE`` (raised to its hard limit at start) minus
  ``Limits.fd_headroom``, and pending sockets may take at most half of it, so students can
  still join while idle sockets pile up.
* Behind a proxy many users share one address: ``X-Forwarded-For`` is believed only from a
  configured trusted proxy (its right-most untrusted address is the client), and the per-address
  limits apply to that address once the request is read.
* **Outbound memory.** Frames go out with :func:`~pluv_widget.server.outbound.send`, which never
  waits: unsent data piles up in the transport. :meth:`GuardedConnection.send_allowed` is asked
  before each send; a connection whose unsent data passes ``max_send_buffer_bytes``, or stays above
  ``send_buffer_pause_bytes`` for ``send_stall_timeout_s``, is cut with 4007 (a close frame,
  then the transport is aborted ``close_grace_s`` later if the handshake cannot finish). A
  sweep every second applies the same rule to quiet connections, so the keepalive never waits
  behind a full buffer: such a connection is cut before its ping could time out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request
from websockets.protocol import State

from ..protocol import CloseCode, Limits
from ..protocol.routes import API_ROOT
from .http_exchange import Handler, HttpExchange

log = logging.getLogger("pluv_widget.server")

#: Said to a socket refused before its handshake (it may not even speak HTTP yet).
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
)
#: How often quiet connections' send buffers are checked (seconds).
SWEEP_INTERVAL_S = 1.0


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("could not raise the open file limit from %d to %d: %s", soft, target, error)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def parse_proxies(proxies: Iterable[str]) -> frozenset[str]:
    """Trusted proxy addresses, normalised; ``ValueError`` for one that is not an IP address."""
    return frozenset(str(ipaddress.ip_address(proxy.strip())) for proxy in proxies)


def _normal(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


class ConnectionGate:
    """The server's socket counts and the limits on them."""

    def __init__(self, limits: Limits, trusted_proxies: frozenset[str] = frozenset(), fd_limit: int | None = None):
        self.limits = limits
        self.trusted_proxies = trusted_proxies
        budget = max(16, (fd_limit if fd_limit is not None else raise_fd_limit()) - limits.fd_headroom)
        self.max_total = min(limits.max_connections, budget)
        self.max_pending = min(limits.max_pending_connections, max(1, self.max_total // 2))
        self.open: set[GuardedConnection] = set()
        self.pending = 0
        self.by_address: Counter[str] = Counter()
        self.pending_by_address: Counter[str] = Counter()
        self.refused = 0  # sockets refused by a limit, for /health
        self.cut = 0  # connections cut for not reading, for /health
        self._sweeper: asyncio.Task[None] | None = None

    # -- counting ---------------------------------------------------------------------------

    def admit(self, connection: GuardedConnection) -> str | None:
        """Count a new socket; or say why it is refused (and count nothing)."""
        address = connection.address
        problem = None
        if len(self.open) >= self.max_total:
            problem = f"the server has {self.max_total} sockets open"
        elif self.pending >= self.max_pending:
            problem = f"{self.max_pending} sockets are waiting to join"
        elif address not in self.trusted_proxies:
            problem = self._address_problem(address)
        if problem is not None:
            self.refused += 1
            log.warning("refused a socket from %s: %s", address, problem)
            return problem
        self.open.add(connection)
        self.pending += 1
        self.by_address[address] += 1
        self.pending_by_address[address] += 1
        return None

    def _address_problem(self, address: str) -> str | None:
        if self.pending_by_address[address] >= self.limits.max_pending_per_address:
            return f"{self.limits.max_pending_per_address} sockets from {address} are waiting to join"
        if self.by_address[address] >= self.limits.max_connections_per_address:
            return f"{self.limits.max_connections_per_address} sockets from {address} are open"
        return None

    def identify(self, connection: GuardedConnection, request: Request) -> str | None:
        """Re-key a socket from a trusted proxy by its ``X-Forwarded-For`` client; or say why
        that client is over its limits (the socket is then refused with 503)."""
        if connection.peer not in self.trusted_proxies:
            return None
        client = forwarded_client(request.headers.get_all("X-Forwarded-For"), self.trusted_proxies)
        if client is None or client == connection.address:
            return None
        problem = self._address_problem(client)
        if problem is not None:
            self.refused += 1
            log.warning("refused a request from %s (via %s): %s", client, connection.peer, problem)
            return problem
        self._move(connection, client)
        return None

    def _move(self, connection: GuardedConnection, address: str) -> None:
        self._uncount(connection)
        connection.address = address
        self.by_address[address] += 1
        if not connection.joined:
            self.pending_by_address[address] += 1

    def joined(self, connection: GuardedConnection) -> None:
        """The socket entered a room: it no longer counts as pending."""
        if connection in self.open and not connection.joined:
            connection.joined = True
            self.pending -= 1
            _decrement(self.pending_by_address, connection.address)

    def release(self, connection: GuardedConnection) -> None:
        if connection not in self.open:
            return
        self._uncount(connection)
        self.open.discard(connection)
        if not connection.joined:
            self.pending -= 1

    def _uncount(self, connection: GuardedConnection) -> None:
        _decrement(self.by_address, connection.address)
        if not connection.joined:
            _decrement(self.pending_by_address, connection.address)

    # -- the sweep --------------------------------------------------------------------------

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            for connection in list(self.open):
                if connection.joined:
                    connection.send_allowed(0)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def forwarded_client(values: list[str], trusted: frozenset[str]) -> str | None:
    """The client a chain of trusted proxies forwarded: the right-most ``X-Forwarded-For``
    address that is not itself a trusted proxy (the ones left of it could be forged)."""
    hops = [hop.strip() for value in values for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _normal(hop)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return None  # garbage: keep the proxy's own address
        if address not in trusted:
            return address
    return None


class GuardedConnection(ServerConnection):
    """A server connection that counts itself with its gate and watches its send buffer.

    It reads the request line before websockets does: a request for the HTTP API (``/api/...``,
    which may carry a body websockets refuses) is answered by an :class:`HttpExchange` and
    never reaches websockets; anything else is handed to websockets unchanged."""

    gate: ConnectionGate  # set on the per-server subclass made by :func:`connection_class`
    api: Handler | None = None  # the HTTP API, and the path prefix its routes also answer under
    api_prefix: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer = ""  # the TCP peer's address
        self.address = ""  # the client's address: the peer's, or a trusted proxy's X-Forwarded-For
        self.joined = False
        self.refused = False
        self.stalled_since: float | None = None
        # While the transport is under its high-water mark (websockets' ``paused`` is False), a
        # frame this large can be queued without passing any limit: no need to ask the transport.
        limits = self.gate.limits
        self.unchecked_send_bytes = (limits.max_send_buffer_bytes - self.write_limit_high
                                     if self.write_limit_high <= limits.send_buffer_pause_bytes else -1)
        self._head: bytearray | None = None  # the first bytes, until the request line is known
        self._exchange: HttpExchange | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer = self.address = _normal(str(peer[0])) if peer else ""
        problem = self.gate.admit(self)
        if problem is not None:
            self.refused = True
            body = f"refused: {problem}\n".encode()
            transport.write(_REFUSAL % (len(body), body))  # type: ignore[attr-defined]
            transport.close()
            return
        if self.api is None:
            super().connection_made(transport)
            return
        self._head = bytearray()
        self._pending_transport = transport
        # websockets' opening timeout does not run yet: bound the wait for a request line here.
        self._sniff_timer = asyncio.get_running_loop().call_later(self.gate.limits.handshake_timeout_s,
                                                                  transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self.gate.release(self)
        if self._head is not None or self._exchange is not None:  # websockets never saw it
            if self._head is not None:
                self._sniff_timer.cancel()
            if self._exchange is not None:
                self._exchange.close()
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self._exchange is not None:
            self._exchange.feed(data)
        elif self._head is not None:
            self._sniff(data)
        else:
            super().data_received(data)

    def eof_received(self) -> None:
        if self.refused:
            return
        if self._exchange is not None:
            self._exchange.eof()
        elif self._head is not None:
            self._pending_transport.close()
        else:
            super().eof_received()

    def _sniff(self, data: bytes) -> None:
        """Buffer until the request line is in; then choose the API or websockets."""
        assert self._head is not None
        self._head += data
        end = self._head.find(b"\n")
        if end < 0 and len(self._head) < _MAX_REQUEST_LINE:
            return
        head, self._head = bytes(self._head), None
        self._sniff_timer.cancel()
        transport = self._pending_transport
        if self.api is not None and _is_api_request(head[: max(end, 0)], self.api_prefix):
            self._exchange = HttpExchange(transport, self.api, self.address)  # type: ignore[arg-type]
            self._exchange.feed(head)
            return
        super().connection_made(transport)
        super().data_received(head)

    # -- outbound ---------------------------------------------------------------------------

    def send_allowed(self, size: int) -> bool:
        """May ``size`` more bytes be queued? No (and the connection is being cut with 4007)
        when its unsent data would pass ``max_send_buffer_bytes`` or has stayed above
        ``send_buffer_pause_bytes`` for ``send_stall_timeout_s``."""
        if self.protocol.state is not State.OPEN:
            return False
        limits = self.gate.limits
        unsent = self.transport.get_write_buffer_size()
        if unsent + size > limits.max_send_buffer_bytes:
            self.cut(CloseCode.SLOW_CONSUMER, f"not reading: over {limits.max_send_buffer_bytes} bytes unsent")
            return False
        if unsent <= limits.send_buffer_pause_bytes:
            self.stalled_since = None
            return True
        now = time.monotonic()
        if self.stalled_since is None:
            self.stalled_since = now
        elif now - self.stalled_since > limits.send_stall_timeout_s:
            self.cut(CloseCode.SLOW_CONSUMER, f"not reading: data unsent for {limits.send_stall_timeout_s:g} s")
            return False
        return True

    def resume_writing(self) -> None:
        super().resume_writing()
        self.stalled_since = None  # drained below the low-water mark, far under the pause mark

    async def wait_writable(self) -> None:
        """Wait while this connection's unsent data is above ``send_buffer_pause_bytes``: its
        requests are not read faster than it reads the answers (a flood of sync step 1 costs
        one document at a time). Returns when it drained, or when it is cut or closed."""
        limits = self.gate.limits
        while (self.protocol.state is State.OPEN
               and self.transport.get_write_buffer_size() > limits.send_buffer_pause_bytes
               and self.send_allowed(0)):
            await asyncio.sleep(0.05)

    def cut(self, code: int, reason: str) -> None:
        """Close without waiting for the send buffer: a close frame, then abort the transport
        ``close_grace_s`` later if the client has not completed the close handshake."""
        if self.protocol.state is State.OPEN:
            self.gate.cut += 1
            log.warning("closing a connection from %s with %d: %s", self.address, code, reason)
            self.protocol.send_close(code, reason)
            self.send_data()
            self.loop.call_later(self.gate.limits.close_grace_s, self._abort)
        elif self.protocol.state is State.CONNECTING:
            self._abort()

    def _abort(self) -> None:
        if not self.connection_lost_waiter.done():
            self.transport.abort()


def connection_class(gate: ConnectionGate, api: Handler | None = None, api_prefix: str = "") -> type[GuardedConnection]:
    """A :class:`GuardedConnection` class bound to ``gate`` (and the HTTP API), for
    ``serve(create_connection=...)``."""
    return type("Connection", (GuardedConnection,), {"gate": gate, "api": api, "api_prefix": api_prefix})


#: A request line longer than this is not the API's: websockets refuses it as it always did.
_MAX_REQUEST_LINE = 8192


def _is_api_request(request_line: bytes, prefix: str) -> bool:
    """``METHOD /api/... HTTP/1.1`` (or under ``prefix``): a request for the HTTP API."""
    parts = request_line.split(b" ")
    if len(parts) < 2:
        return False
    path = parts[1].split(b"?", 1)[0].decode("latin-1")
    if prefix and path.startswith(prefix.rstrip("/") + "/"):
        path = path[len(prefix.rstrip("/")):]
    return path == API_ROOT or path.startswith(API_ROOT + "/")


def may_send(socket: ServerConnection, size: int) -> bool:
    """Before queueing ``size`` bytes for ``socket``: False when it must not get them (it is
    being cut for not reading). Sockets not made by a guarded server are always allowed."""
    if not isinstance(socket, GuardedConnection):
        return True
    if not socket.paused and size <= socket.unchecked_send_bytes:  # the common case, once per recipient
        return socket.protocol.state is State.OPEN
    return socket.send_allowed(size)
