"""The REST admin API: ``/api/...`` on the websocket port, JSON in and out, teacher tokens.

``Authorization: Bearer <token>``: a teacher's token. A token for a room (``/token?room=R`` with a
teacher code) works for that room's routes; a **server-scoped** one (``/token`` with a teacher
code and no ``room``: its ``room`` claim is ``*``) for all of them. No token: 401; a student's or
an observer's: 403. A server without a secret (the zero-config local server, where everyone is a
teacher) needs no token. Errors are ``{"error": <words>, "code": <documented code>}``.

| route | does |
|---|---|
| ``GET /api/rooms`` | every room with storage or occupants, across processes (see :mod:`.directory`) |
| ``GET /api/rooms/<room>`` | occupants with presence, rules, storage bytes |
| ``GET /api/rooms/<room>/storage`` | storage (and the protected document) as JSON |
| ``POST /api/rooms/<room>/broadcast`` | body ``{"event", "data"}``: an event to everyone in the room |
| ``POST /api/rooms/<room>/reset`` | back to the initial storage, new generation |
| ``DELETE /api/rooms/<room>`` | storage dropped (empty, not initial), new generation |
| ``POST /api/rooms/<room>/lock`` / ``unlock`` | read-only for students, or not |
| ``POST /api/rooms/<room>/users/<id>/remove`` / ``readmit`` / ``mute`` / ``unmute`` | moderation |
| ``GET /api/openapi.json`` | this, as OpenAPI 3.1 |

Moderation goes through the same built-in procedures as a teacher's widget (logged with the
token's user as who did it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..crdt import untyped_to_json
from ..errors import PluvError, TokenError
from ..protocol import CloseCode, ErrorCode, ProtocolError, is_valid_event_name, is_valid_room_name
from ..protocol.codec import decode_json
from ..protocol.roles import TEACHER, role_of
from ..protocol.routes import API_ROOT
from .http_exchange import HttpRequest, HttpResponse
from .tokens import SERVER_SCOPE, verify_token

if TYPE_CHECKING:
    from .room_server import RoomServer


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: str  # the RestApi method answering it
    summary: str
    body: bool = False


_ROOM = r"(?P<room>[^/]+)"
ROUTES = (
    Route("GET", re.compile(r"^/rooms$"), "list_rooms", "Every room with storage or occupants"),
    Route("GET", re.compile(rf"^/rooms/{_ROOM}$"), "room", "One room: occupants with presence, rules"),
    Route("GET", re.compile(rf"^/rooms/{_ROOM}/storage$"), "storage", "The room's storage as JSON"),
    Route("POST", re.compile(rf"^/rooms/{_ROOM}/broadcast$"), "broadcast",
          "Send an event ({event, data}) to everyone in the room", body=True),
    Route("POST", re.compile(rf"^/rooms/{_ROOM}/reset$"), "reset", "Reset the room to its initial storage"),
    Route("DELETE", re.compile(rf"^/rooms/{_ROOM}$"), "delete", "Drop the room's storage"),
    Route("POST", re.compile(rf"^/rooms/{_ROOM}/(?P<action>lock|unlock)$"), "lock",
          "Make the room read-only for students, or not"),
    Route("POST", re.compile(rf"^/rooms/{_ROOM}/users/(?P<target>[^/]+)/(?P<action>remove|readmit|mute|unmute)$"),
          "moderate", "Remove, readmit, mute or unmute a user"),
)

_MODERATION = {"remove": "users.remove", "readmit": "users.readmit", "mute": "users.mute",
               "unmute": "users.unmute", "lock": "room.lock", "unlock": "room.unlock"}


def _error(status: int, code: str, words: str) -> HttpResponse:
    return HttpResponse(status, {"error": words, "code": code})


class RestApi:
    """Answers ``/api/...`` requests for one server process."""

    def __init__(self, server: RoomServer) -> None:
        self.server = server

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        path = unquote(urlsplit(request.target).path)
        prefix = self.server.config.path_prefix.rstrip("/")
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix):]
        path = path[len(API_ROOT):] or "/"
        if request.method == "OPTIONS":  # a browser's preflight (the dashboard on another origin)
            return HttpResponse(204, b"", headers=(("access-control-allow-methods", "GET, POST, DELETE"),
                                                  ("access-control-allow-headers", "authorization, content-type")))
        if path == "/openapi.json" and request.method == "GET":
            return HttpResponse(200, openapi())
        allowed: list[str] = []
        for route in ROUTES:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            params = match.groupdict()
            room = params.get("room")
            if room is not None and not is_valid_room_name(room):
                return _error(400, "invalid_room", f"invalid room name {room[:80]!r}")
            refusal, user = self._authorize(request, room)
            if refusal is not None:
                return refusal
            try:
                return await getattr(self, route.handler)(request, user, **params)  # type: ignore[no-any-return]
            except PluvError as error:
                code = str(getattr(error, "code", "refused"))
                return _error(403 if code == ErrorCode.FORBIDDEN else 409, code, str(error))
        if allowed:
            return _error(405, "method_not_allowed", f"{request.method} is not allowed here; use {', '.join(allowed)}")
        return _error(404, "not_found", f"no API route {path[:200]!r}; see {API_ROOT}/openapi.json")

    # -- who is asking ----------------------------------------------------------------------

    def _authorize(self, request: HttpRequest, room: str | None) -> tuple[HttpResponse | None, dict[str, Any]]:
        """(refusal, user): a teacher's token for ``room`` (or server-scoped) is needed."""
        secret = self.server.config.secret
        if secret is None:
            return None, {"id": "api", "name": "api", "role": TEACHER}
        authorization = request.headers.get("authorization", "")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        if not token:
            return _error(401, "unauthorized", "this API needs 'Authorization: Bearer <teacher token>'"), {}
        try:
            user = verify_token(secret, token, room=room or SERVER_SCOPE)
        except TokenError as error:
            # Only a token for another room may be a server-scoped one.
            if room is None or error.code != CloseCode.TOKEN_WRONG_ROOM:
                return _error(401, "token_invalid", error.reason), {}
            try:
                user = verify_token(secret, token, room=SERVER_SCOPE)
            except TokenError:
                return _error(403, "wrong_room", error.reason), {}
        if role_of(user) != TEACHER:
            return _error(403, "forbidden", f"only a teacher's token may use this API (this one is a "
                                            f"{role_of(user)}'s)"), {}
        return None, user

    # -- routes -----------------------------------------------------------------------------

    async def list_rooms(self, _request: HttpRequest, _user: dict[str, Any]) -> HttpResponse:
        return HttpResponse(200, {"rooms": await self.server.directory.rooms()})

    async def room(self, _request: HttpRequest, _user: dict[str, Any], room: str) -> HttpResponse:
        async with self.server.registry.held(room) as live:
            members = [info.to_wire() for info in live.core.members.infos()]
            return HttpResponse(200, {"room": room, "occupants": members, "rules": live.core.rules.to_json(),
                                      "storage_bytes": live.core.storage_bytes})

    async def storage(self, _request: HttpRequest, _user: dict[str, Any], room: str) -> HttpResponse:
        async with self.server.registry.held(room) as live:
            protected = live.core.protected
            return HttpResponse(200, {"room": room, "storage": live.storage_json(),
                                      "protected": untyped_to_json(protected.get_update(), list(protected.keys()))})

    async def broadcast(self, request: HttpRequest, _user: dict[str, Any], room: str) -> HttpResponse:
        try:
            body = decode_json(request.body.decode("utf-8"))
        except (ProtocolError, UnicodeDecodeError) as error:
            return _error(400, "invalid_body", f"the body must be a JSON object {{event, data}}: {error}")
        if not isinstance(body, dict):
            return _error(400, "invalid_body", "the body must be a JSON object {event, data}")
        event = body.get("event")
        if not isinstance(event, str) or not is_valid_event_name(event):
            return _error(400, "invalid_body", "'event' must be an event name (letters, digits, . _ - :)")
        await self.server.broadcast(room, event, body.get("data"))
        return HttpResponse(200, {"room": room, "event": event, "sent": True})

    async def reset(self, _request: HttpRequest, user: dict[str, Any], room: str) -> HttpResponse:
        answer = await self.server.call(room, "room.reset", {}, user=user)
        return HttpResponse(200, {"room": room, **answer})

    async def delete(self, _request: HttpRequest, user: dict[str, Any], room: str) -> HttpResponse:
        generation = await self.server.delete_room(room, user)
        return HttpResponse(200, {"room": room, "deleted": True, "generation": generation})

    async def lock(self, _request: HttpRequest, user: dict[str, Any], room: str, action: str) -> HttpResponse:
        answer = await self.server.call(room, _MODERATION[action], {}, user=user)
        return HttpResponse(200, {"room": room, **answer})

    async def moderate(self, _request: HttpRequest, user: dict[str, Any], room: str, target: str,
                       action: str) -> HttpResponse:
        answer = await self.server.call(room, _MODERATION[action], {"user_id": target}, user=user)
        return HttpResponse(200, {"room": room, "user_id": target, **answer})


def openapi() -> dict[str, Any]:
    """The routes as an OpenAPI 3.1 document."""
    paths: dict[str, Any] = {}
    schema = {"schema": {"$ref": "#/components/schemas/Error"}}
    error = {"description": "refused", "content": {"application/json": schema}}
    for route in ROUTES:
        template = route.pattern.pattern.strip("^$")
        template = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", template)
        for action in ("lock|unlock", "remove|readmit|mute|unmute"):
            template = template.replace(f"(?P<action>{action})", "{action}")
        operation: dict[str, Any] = {
            "summary": route.summary,
            "security": [{"bearer": []}],
            "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                           for name in re.findall(r"{(\w+)}", template)],
            "responses": {"200": {"description": "done", "content": {"application/json": {}}},
                          "400": error, "401": error, "403": error, "404": error},
        }
        if route.body:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["event"],
                "properties": {"event": {"type": "string"}, "data": {}}}}}}
        paths.setdefault(API_ROOT + template, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "pluv-widget admin API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": {"type": "object", "required": ["error", "code"],
                                  "properties": {"error": {"type": "string"}, "code": {"type": "string"}}}},
        },
    }

