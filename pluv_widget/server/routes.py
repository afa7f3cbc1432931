"""The HTTP routes, on the WebSocket port (the contract is :mod:`pluv_widget.protocol.routes`).

* ``GET /health`` — a ``Health`` object: how the local launcher recognises our server.
* ``GET /token?room=R&name=N&join_code=C[&claim=K]`` — ``{"token": ..., "user": {"id", "name",
  "role"}, "claim": K}`` for the classroom flow (join, teacher and observer codes, see
  :mod:`.access`: the role is the matched code's), or a deployment's ``mint_user``; 404 without a
  secret, 403 when refused (a wrong code, or a code not valid for this room), 400 for a bad room
  or name, 409 for a name someone else claimed (:mod:`.claims`), 429 (with ``Retry-After``) after
  too many refusals from one source address (``Limits.max_wrong_codes_per_min``: guessing is slow).
* ``POST /names/release?room=R&name=N`` with a teacher's token for room R (``Authorization:
  Bearer T`` or ``&token=T``) — ``{"released": bool}``: frees the name in every claim scope that
  covers R; 403 for a student's or observer's token.

A request from a trusted proxy is first re-keyed by its ``X-Forwarded-For`` client (503 when
that client is over its socket limits, see :mod:`.guard`). Anything else is a WebSocket
handshake and goes on to the connection handler.
"""

from __future__ import annotations

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

from ..errors import TokenError
from ..protocol import TEACHER, encode_json, is_valid_room_name, role_of
from ..protocol.routes import (
    CLAIM_PARAM,
    DASHBOARD_LIVE_PATH,
    DASHBOARD_PATH,
    HEALTH_PATH,
    RELEASE_NAME_PATH,
    TOKEN_PATH,
    Health,
    query_params,
    request_path,
)
from .access import match_code
from .claims import NameTaken, claim_name, release_name
from .config import ServerConfig
from .dashboard import static_file
from .guard import ConnectionGate, GuardedConnection
from .hub import unprefixed
from .names import BadNameError, normalize_name
from .storage.base import StorageUnavailableError
from .tokens import SERVER_SCOPE, TokenRequest, verify_token

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
        if path == RELEASE_NAME_PATH:
            return await self._release(connection, request, query_params(request.path))
        if path == DASHBOARD_PATH + "/":  # the page's relative links need the path without "/"
            response = connection.respond(HTTPStatus.MOVED_PERMANENTLY, "")
            response.headers["Location"] = request.path.split("?", 1)[0].rstrip("/")
            return response
        if path == DASHBOARD_PATH or (path.startswith(DASHBOARD_PATH + "/") and path != DASHBOARD_LIVE_PATH):
            found = static_file(path[len(DASHBOARD_PATH) + 1:])
            if found is None:
                return _json(connection, HTTPStatus.NOT_FOUND, {"error": "no such file"})
            response = connection.respond(HTTPStatus.OK, "")
            response.body = found[0]
            del response.headers["Content-Type"], response.headers["Content-Length"]  # Headers appends
            response.headers["Content-Type"] = found[1]
            response.headers["Content-Length"] = str(len(found[0]))
            return response
        return None

    async def _token(self, connection: ServerConnection, request: Request, params: dict[str, str]) -> Response:
        config = self.config
        if config.secret is None:
            return _json(connection, HTTPStatus.NOT_FOUND, {"error": "this server does not use tokens"})
        room, name = params.get("room", ""), params.get("name", "").strip()
        if not room and params.get("join_code"):  # a teacher's token for the whole server (the HTTP API)
            return await self._server_token(connection, params)
        if not is_valid_room_name(room):
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": f"invalid room name {room!r}"})
        if not name or len(name) > MAX_DISPLAY_NAME:
            return _json(connection, HTTPStatus.BAD_REQUEST,
                         {"error": f"a display name of 1-{MAX_DISPLAY_NAME} characters is needed"})
        source = _source(connection)
        throttled = self._throttled(connection, source)
        if throttled is not None:
            return throttled
        ask = TokenRequest(room, name, params.get("join_code"), params, dict(request.headers.raw_items()))
        user: dict[str, Any] | None
        if config.mint_user is not None:
            minted = config.mint_user(ask)
            user = await minted if inspect.isawaitable(minted) else minted
        elif not config.access_codes:
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "the token route is closed (no join code)"})
        else:
            code = match_code(ask.join_code or "", config.access_codes, room)
            if code is None:  # wrong, or not valid for this room: the same answer, the same cost
                self.limiter.refused(source)
                log.info("token refused for room %s: wrong join code from %s", room, source)
                return _json(connection, HTTPStatus.FORBIDDEN, {"error": "wrong join code"})
            return await self._claimed_token(connection, room, name, code.prefix, code.role, params.get(CLAIM_PARAM))
        if user is None:
            self.limiter.refused(source)
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "token refused"})
        try:
            token = config.create_token(room=room, user=user)
        except (ValidationError, ValueError) as error:
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": str(error)})
        return _json(connection, HTTPStatus.OK, {"token": token, "user": {**user, "role": role_of(user)}})

    def _throttled(self, connection: ServerConnection, source: str) -> Response | None:
        """429 while ``source`` is paying for its refused codes (guessing costs time)."""
        wait = self.limiter.retry_after(source)
        if not wait:
            return None
        response = _json(connection, HTTPStatus.TOO_MANY_REQUESTS,
                         {"error": f"too many refused requests: retry in {wait} s"})
        response.headers["Retry-After"] = str(wait)
        return response

    async def _server_token(self, connection: ServerConnection, params: dict[str, str]) -> Response:
        """A server-scoped teacher token (``room`` claim ``*``): for the HTTP API and the dashboard,
        never for a room's socket. Only an unscoped teacher code gives one."""
        source = _source(connection)
        throttled = self._throttled(connection, source)
        if throttled is not None:
            return throttled
        code = match_code(params.get("join_code", ""), self.config.access_codes, "")
        if code is None or code.role != TEACHER:
            self.limiter.refused(source)
            return _json(connection, HTTPStatus.FORBIDDEN,
                         {"error": "a token for the whole server needs a teacher code valid for every room"})
        name = params.get("name", "").strip() or "teacher"
        user = {"id": f"teacher:{name}"[:200], "name": name[:MAX_DISPLAY_NAME], "role": TEACHER}
        token = self.config.create_token(room=SERVER_SCOPE, user=user)
        return _json(connection, HTTPStatus.OK, {"token": token, "user": user, "scope": "server"})

    async def _claimed_token(self, connection: ServerConnection, room: str, raw_name: str, prefix: str,
                             role: Any, claim: str | None) -> Response:
        """Under a code the name is the identity, held by whoever claimed it first (:mod:`.claims`)."""
        try:
            name = normalize_name(raw_name)
        except BadNameError as error:
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": f"invalid name: {error}"})
        try:
            identity = await claim_name(self.config.persistence, prefix, name, secret=claim or None, role=role)
        except NameTaken as taken:
            log.info("token refused for room %s: the name %r is claimed", room, name)
            return _json(connection, HTTPStatus.CONFLICT, {"error": taken.reason})
        except StorageUnavailableError as error:
            return _json(connection, HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(error)})
        user = {"id": identity.id, "name": identity.name, "role": role}
        token = self.config.create_token(room=room, user=user)
        return _json(connection, HTTPStatus.OK, {"token": token, "user": user, "claim": identity.claim})

    async def _release(self, connection: ServerConnection, request: Request, params: dict[str, str]) -> Response:
        """A teacher frees a claimed name in every claim scope covering the token's room."""
        config = self.config
        if getattr(request, "method", "GET") != "POST":
            return _json(connection, HTTPStatus.METHOD_NOT_ALLOWED, {"error": "POST to release a name"})
        if config.secret is None:
            return _json(connection, HTTPStatus.NOT_FOUND, {"error": "this server does not use tokens"})
        room, name = params.get("room", ""), params.get("name", "")
        authorization = request.headers.get("Authorization", "")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else params.get("token")
        try:
            user = verify_token(config.secret, token, room=room)
        except TokenError as error:
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": error.reason})
        if role_of(user) != TEACHER:
            return _json(connection, HTTPStatus.FORBIDDEN, {"error": "only a teacher can release a name"})
        try:
            name = normalize_name(name)
        except BadNameError as error:
            return _json(connection, HTTPStatus.BAD_REQUEST, {"error": f"invalid name: {error}"})
        prefixes = sorted({code.prefix for code in config.access_codes if code.admits(room)})
        try:
            released = await release_name(config.persistence, prefixes, name)
        except StorageUnavailableError as error:
            return _json(connection, HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(error)})
        log.info("room %s: %s released the name %r", room, user.get("id"), name)
        return _json(connection, HTTPStatus.OK, {"released": released})


def _source(connection: ServerConnection) -> str:
    """Who is asking: the gate's address (a trusted proxy's X-Forwarded-For applied), or the peer."""
    return connection.address if isinstance(connection, GuardedConnection) else _peer(connection)


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else ""


def _json(connection: ServerConnection, status: HTTPStatus, body: dict[str, Any]) -> Response:
    response = connection.respond(status, encode_json(body) + "\n")
    response.headers["Content-Type"] = "application/json"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
