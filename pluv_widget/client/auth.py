"""Getting a token before each connection (so a reconnect gets a fresh one)."""

from __future__ import annotations

import asyncio
import inspect
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import AuthorizationError

#: A URL answering ``{"token": ...}`` for ``?room=<name>``, or ``callable(room) -> token``.
AuthEndpoint = str | Callable[[str], str | Awaitable[str]]

TIMEOUT_S = 10.0


async def fetch_token(endpoint: AuthEndpoint | None, room: str) -> str | None:
    """The token for ``room``: None without an endpoint. A refusal raises AuthorizationError;
    an unreachable endpoint raises OSError (the room then retries like a lost connection)."""
    if endpoint is None:
        return None
    if callable(endpoint):
        token = endpoint(room)
        if inspect.isawaitable(token):
            token = await token
        return str(token)
    return await asyncio.to_thread(_get, with_room(endpoint, room))


def with_room(url: str, room: str) -> str:
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "room"] + [("room", room)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code in (400, 401, 403, 404):
            try:
                reason = json.loads(error.read()).get("error", error.reason)
            except ValueError:
                reason = error.reason
            raise AuthorizationError(error.code, f"auth endpoint refused: {reason}") from None
        raise OSError(f"auth endpoint failed: HTTP {error.code}") from None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str):
        raise AuthorizationError(502, "auth endpoint answered without a token")
    return token
