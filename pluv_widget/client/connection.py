"""The socket, the heartbeat and the retry loop that drive one :class:`ClientRoom`.

Everything here runs on the client's loop. Each pass: fetch a token, open a socket (trying the
endpoints in turn), feed the core every frame, send what it returns, hand its notifications to
the room's subscribers; when the socket ends, ask the core what to do (reconnect after a delay,
report a refused token once, or stop). Heartbeats are websockets' pings, with the timings of
:class:`~pluv_widget.protocol.Limits`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from ssl import SSLContext
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ..core.client_room import ClientRoom, Closed, Decision, Fail, Notification, Reconnect
from ..errors import AuthorizationError
from ..protocol import CloseCode, Limits
from .auth import AuthEndpoint, fetch_token

log = logging.getLogger("pluv_widget.client")

OPEN_TIMEOUT_S = 10.0  # the handshake, and then the server's welcome
_LIMITS = Limits()


class Connection:
    """Drives ``core`` over websockets until it is left or refused for good."""

    def __init__(
        self,
        core: ClientRoom,
        *,
        loop: asyncio.AbstractEventLoop,
        urls: Callable[[str | None], Iterator[str]],
        auth_endpoint: AuthEndpoint | None,
        deliver: Callable[[Notification], None],
        on_authorization_fail: Callable[[AuthorizationError], Any] | None,
        ssl: SSLContext | None = None,
    ) -> None:
        self.core = core
        self._loop = loop
        self._urls = urls
        self._auth_endpoint = auth_endpoint
        self._deliver = deliver
        self._on_authorization_fail = on_authorization_fail
        self._ssl = ssl  # verifies wss:// and https:// (a private CA); None: the system's CAs
        self._socket: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._entered: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._resync: asyncio.TimerHandle | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    # -- life --------------------------------------------------------------------------------

    def start(self, metadata: Any) -> asyncio.Future[None]:
        """Start connecting unless already running; the future resolves once entered."""
        if self._entered is None or (self._entered.done() and self.core.state == "closed"):
            self._entered = self._loop.create_future()
        if self._task is None or self._task.done():
            self.core.start(metadata)
            self._task = self._loop.create_task(self._run(), name=f"pluv-room-{self.core.name}")
        return self._entered

    def stop(self) -> asyncio.Task[None] | None:
        """Leave for good. Returns the closing handshake's task, if a socket was open."""
        self.core.flush()  # edits made just before leaving still reach the room
        self.pump()
        closed = self.core.leave()
        closing = None
        if self._socket is not None:
            closing = self._loop.create_task(self._socket.close(CloseCode.GOING_AWAY, "left the room"))
        if self._task is not None:
            self._task.cancel()
        self._cancel_resync()
        self._finish(closed)
        return closing

    # -- driving the core --------------------------------------------------------------------

    def pump(self) -> None:
        """Send what the core wants sent; tell subscribers what it has to say."""
        socket = self._socket
        for frame in self.core.data_to_send():
            if socket is not None:
                websockets.broadcast([socket], frame)  # a synchronous, ordered write
        for note in self.core.notifications():
            self._deliver(note)
        if self.core.entered and self._entered is not None and not self._entered.done():
            self._entered.set_result(None)
        delay = self.core.resync_delay_ms()
        if delay is not None:  # a transient storage refusal: resend after the backoff
            self._cancel_resync()
            self._resync = self._loop.call_later(delay / 1000, self._run_resync)

    def schedule_flush(self) -> None:
        """The core's ``on_edit``: a local edit waits; flush once per loop turn (a burst of
        edits leaves as one merged update)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _run_resync(self) -> None:
        self._resync = None
        self.core.resync()
        self.pump()

    def _cancel_resync(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            self._resync = None

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.core.flush()
        self.pump()

    def _finish(self, decision: Closed | Fail) -> None:
        self.pump()
        if self._entered is not None and not self._entered.done():
            self._entered.set_exception(decision.error)
            self._entered.exception()  # retrieved: enter_soon callers may never await it

    async def _run(self) -> None:
        try:
            while True:
                self.core.connecting()
                self.pump()
                decision = await self._connect_once()
                if isinstance(decision, Reconnect):
                    self.pump()
                    await asyncio.sleep(decision.delay_ms / 1000)
                    continue
                self._finish(decision)
                if isinstance(decision, Fail):
                    log.warning("room %s: %s", self.core.name, decision.error)
                    if self._on_authorization_fail is not None:
                        try:
                            self._on_authorization_fail(decision.error)
                        except Exception:
                            log.exception("room %s: on_authorization_fail raised", self.core.name)
                elif not decision.left:
                    log.error("room %s: %s", self.core.name, decision.error)
                return
        except asyncio.CancelledError:
            pass
        finally:
            self._socket = None

    async def _connect_once(self) -> Decision:
        """One connection: token, socket, join, frames until it ends; then the core's decision."""
        try:
            token = await fetch_token(self._auth_endpoint, self.core.name, ssl=self._ssl)
        except AuthorizationError as error:
            return self.core.refused(error)
        except OSError as error:
            log.info("room %s: auth endpoint unreachable: %s", self.core.name, error)
            return self.core.closed(None, str(error))
        try:
            socket = await self._open_socket(token)
        except (OSError, InvalidHandshake, TimeoutError) as error:
            return self.core.closed(None, str(error))
        except Exception as error:  # e.g. an invalid URL: say so, and keep the retry loop alive
            log.error("room %s: cannot connect: %r", self.core.name, error)
            return self.core.closed(None, str(error))
        self._socket = socket
        try:
            self.core.opened()
            self.pump()
            first = True
            while True:
                frame = await (asyncio.wait_for(socket.recv(), OPEN_TIMEOUT_S) if first else socket.recv())
                first = False
                if isinstance(frame, str):
                    self.core.receive_text(frame)
                else:
                    self.core.receive_binary(frame)
                self.pump()
                if self.core.close_expected:  # the core gave up on the room (a refusal loop)
                    break
        except ConnectionClosed:
            pass
        except TimeoutError:
            log.info("room %s: no welcome within %s s", self.core.name, OPEN_TIMEOUT_S)
        except ValueError as error:  # a frame the core refused (ProtocolError is a ValueError)
            log.warning("room %s: dropping the connection: %s", self.core.name, error)
        except Exception:  # never lose the room to one bad frame: drop this connection only
            log.exception("room %s: unexpected error; reconnecting", self.core.name)
        finally:
            self._socket = None
            await socket.close()
        if self.core.close_expected:
            return self.core.closed(None)
        received = socket.protocol.close_rcvd
        return self.core.closed(received.code if received else None, received.reason if received else "")

    async def _open_socket(self, token: str | None) -> ClientConnection:
        error: BaseException | None = None
        for url in self._urls(token):
            try:
                tls: dict[str, Any] = {"ssl": self._ssl} if self._ssl is not None and url.startswith("wss:") else {}
                return await connect(url, max_size=None, compression=None, open_timeout=OPEN_TIMEOUT_S,
                                     ping_interval=_LIMITS.ping_interval_s, ping_timeout=_LIMITS.ping_timeout_s,
                                     **tls)
            except (OSError, InvalidHandshake, TimeoutError) as failure:
                log.info("room %s: %s unreachable: %s", self.core.name, url.split("?")[0], failure)
                error = failure
        assert error is not None
        raise error
