"""The HTTP routes, on the WebSocket port (the contract is :mod:`pluv_widget.protocol.routes`).

* ``GET /health`` — a ``Health`` object: how the local launcher recognises our server.
* ``GET /token?room=R&name=N&join_code=C`` — ``{"token": ..., "user": {...}}`` for the classroom
  flow (``create_io(join_code=...)``, or a deployment's ``mint_user``); 404 without a secret,
  403 when refused, 400 for a bad room or name, 429 (with ``Retry-After``) after too many
  refusals from one source address (``Limits.max_wrong_codes_per_min``: guessing is slow).

A request from a trusted proxy is first re-keyed by its ``X-Forwarded-For`` client (503 when
that client is over its socket limits, see :mod:`.guard`). Anything else is a WebSocket
handshake and goes on to the connection handler.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import math
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from ..protocol import encode_json, is_valid_room_name
from ..protocol.routes import HEALTH_PATH, TOKEN_PATH, Health, query_params, request_path
from .config import ServerConfig
from .guard import ConnectionGate, GuardedConnection
from .hub import unprefixed
from .tokens import TokenRequest

log = logging.getLogger("pluv_widget.server")

#: The longest display name the token route accepts.
MAX_DISPLAY_NAME = 64
#: Source addresses the wrong-code limiter remembers at once (the fullest buckets are forgotten).
MAX_TRACKED_SOURCES = 10_000


class RefusalLimiter:
    """A token bucket per source address, spent by refused ``/token`` requests: guessing a join
    code takes ``1 / max_wrong_codes_per_min`` minutes per guess once the burst is spent."""

    def __init__(self, per_min: float, burst: int) -> None:
        self.rate = per_min / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try again; 0 when it may now."""
        tokens = self._tokens(address, time.monotonic())
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))

    def refused(self, address: str) -> None:
        now = time.monotonic()
        tokens = self._tokens(address, now) - 1
        self._buckets.pop(address, None)
        if len(self._buckets) >= MAX_TRACKED_SOURCES:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[address] = (tokens, now)


class HttpRoutes:
    """``process_request`` for ``websockets.serve``: answers the HTTP routes, passes the rest."""

    def __init__(self, config: ServerConfig, health: Callable[[], Health], gate: ConnectionGate | None = None) -> None:
        self.config = config
        self.health = health
        self.gate = gate
        self.limiter = RefusalLimiter(config.limits.max_wrong_codes_per_min, config.limits.wrong_code_burst)

    async def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.gate is not None and isinstance(connection, GuardedConnection):
            problem = self.gate.identify(connection, request)
            if problem is not None:
                response = _json(connection, HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"refused: {problem}"})
                response.headers["Retry-After"] = "5"
                return response
        path = request_path(unprefixed(request.path, self.config.path_prefix))
        if path == HEALTH_PATH:
            return _json(connection, HTTPStatus.OK, dict(self.health()))
        if path == TOKEN_PATH:
            return await self._token(connection, request, query_params(request.path))
        return None

    async def _token(self, connection: ServerConnection, request: Request, params: dict[str, str]) -> Response:
        config = self.config
        if config.secret is None:
            return _json(connection, HTTPStatus.NOT_FOUND, {"error": "this server does not use tokens"})
        room, name = params.get("room", ""), params.get("name", "").strip()
        if not is_valid_room_name(room):
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": f"invalid room name {room!r}"})
        if not name or len(name) > MAX_DISPLAY_NAME:
            return _json(connection, HTTPStatus.BAD_REQUEST,
                         {"error": f"a display name of 1-{MAX_DISPLAY_NAME} characters is needed"})
        source = connection.address if isinstance(connection, GuardedConnection) else _peer(connection)
        wait = self.limiter.retry_after(source)
        if wait:
            response = _json(connection, HTTPStatus.TOO_MANY_REQUESTS,
                             {"error": f"too many refused requests: retry in {wait} s"})
            response.headers["Retry-After"] = str(wait)
            return response
        ask = TokenRequest(room, name, params.get("join_code"), params, dict(request.headers.raw_items()))
        user: dict[str, Any] | None
        if config.mint_user is not None:
            minted = config.mint_user(ask)
            user = await minted if inspect.isawaitable(minted) else minted
        elif config.join_code is None:
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "the token route is closed (no join code)"})
        elif not _same_code(ask.join_code or "", config.join_code):
            self.limiter.refused(source)
            log.info("token refused for room %s: wrong join code from %s", room, source)
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "wrong join code"})
        else:
            # In a class, the display name is the identity: the same name in two tabs is one person.
            user = {"id": name, "name": name}
        if user is None:
            self.limiter.refused(source)
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "token refused"})
        try:
            token = config.create_token(room=room, user=user)
        except (ValidationError, ValueError) as error:
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": str(error)})
        return _json(connection, HTTPStatus.OK, {"token": token, "user": user})


def _same_code(given: str, expected: str) -> bool:
    """Compare join codes in constant time, as UTF-8 bytes (any Unicode code works)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else ""


def _json(connection: ServerConnection, status: HTTPStatus, body: dict[str, Any]) -> Response:
    response = connection.respond(status, encode_json(body) + "\n")
    response.headers["Content-Type"] = "application/json"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
