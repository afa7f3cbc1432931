"""Getting a token before each connection (so a reconnect gets a fresh one).

A token route that hands out names (join codes) answers a per-person ``claim`` with the first
token for a name; whoever asks for that name later without it is refused (409). The client
remembers the claim of each endpoint URL for as long as the process lives and sends it back
(``&claim=``), so its own reconnects stay the same person. (The widget also keeps it on disk:
:mod:`pluv_widget.widget.claims`.)"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from ssl import SSLContext

from ..errors import AuthorizationError, PermissionDenied
from ..protocol.routes import CLAIM_PARAM, claim_from_answer, query_params, token_from_answer, with_query

#: A URL answering ``{"token": ...}`` for ``?room=<name>``, or ``callable(room) -> token``.
AuthEndpoint = str | Callable[[str], str | Awaitable[str]]

TIMEOUT_S = 10.0

#: endpoint URL -> the claim its answer gave (process-wide: the same name on one server is one person).
_claims: dict[str, str] = {}


async def fetch_token(endpoint: AuthEndpoint | None, room: str, *, ssl: SSLContext | None = None) -> str | None:
    """The token for ``room``: None without an endpoint.

    Every 4xx answer of the token route is a refusal: it raises :class:`AuthorizationError`
    with the HTTP status as ``code`` and the server's words as ``reason`` (429 adds its
    ``Retry-After``); retrying on its own would only hammer the route (wrong join codes are
    rate-limited per source), so the room reports it through ``on_authorization_fail`` and
    stops. A 5xx answer and a network error raise ``OSError``: the room retries like a lost
    connection. ``ssl`` verifies ``https://`` endpoints (a private CA)."""
    if endpoint is None:
        return None
    if callable(endpoint):
        token = endpoint(room)
        if inspect.isawaitable(token):
            token = await token
        return str(token)
    url = with_query(endpoint, room=room)
    known = _claims.get(endpoint)
    if known is not None and CLAIM_PARAM not in query_params(endpoint):
        url = with_query(url, **{CLAIM_PARAM: known})
    answer = await asyncio.to_thread(fetch_answer, url, ssl)
    claim = claim_from_answer(answer)
    if claim is not None:
        _claims[endpoint] = claim
    return str(answer["token"])  # fetch_answer checked it is there


def fetch_answer(url: str, context: SSLContext | None = None) -> dict[str, object]:
    """GET a token route's answer (blocking): ``{"token": ..., ...}``; refusals raise as
    :func:`fetch_token` says."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        if 400 <= error.code < 500:
            reason = _words(error)
            retry_after = error.headers.get("Retry-After") if error.headers else None
            if retry_after:
                reason += f" (Retry-After: {retry_after} s)"
            raise AuthorizationError(error.code, f"auth endpoint refused: {reason}") from None
        raise OSError(f"auth endpoint failed: HTTP {error.code}") from None
    except http.client.HTTPException as error:  # a garbled answer: like a network error
        raise OSError(f"auth endpoint failed: {error!r}") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise AuthorizationError(502, "auth endpoint answered something that is not JSON") from None
    token = token_from_answer(body)
    if token is None:
        raise AuthorizationError(502, "auth endpoint answered without a token")
    return dict(body)


def _words(error: urllib.error.HTTPError) -> str:
    """The server's own words: ``{"error": ...}`` of a JSON body, else the body's first line,
    else the HTTP reason phrase."""
    try:
        text = error.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    if text and answer is None:
        return text.splitlines()[0][:200]
    return str(error.reason or f"HTTP {error.code}")


def post_release_name(url: str, token: str, context: SSLContext | None = None) -> bool:
    """``POST /names/release`` (blocking) with a teacher's ``token``: True if a claim was freed.

    403 raises :class:`PermissionDenied`, another 4xx :class:`AuthorizationError`, a 5xx or a
    network error ``OSError``."""
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        if error.code == 403:
            raise PermissionDenied(_words(error)) from None
        if 400 <= error.code < 500:
            raise AuthorizationError(error.code, _words(error)) from None
        raise OSError(f"release failed: HTTP {error.code}") from None
    except http.client.HTTPException as error:
        raise OSError(f"release failed: {error!r}") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise OSError("the release route answered something that is not JSON") from None
    return bool(isinstance(body, dict) and body.get("released"))
