"""The URL contract: where a room's socket lives and what the HTTP routes answer.

* ``ws://host:port/<room>?token=<token>`` — a room connection (the token only when the server
  requires auth).
* ``ws://host:port/yjs/<room>?token=<token>`` — the same room for a stock Yjs client (the
  y-websocket protocol, see ``server/yjs_connection.py``); without auth ``?name=`` names it.
* ``GET /health`` — a :class:`Health` object: how the local launcher recognises our server.
* ``GET /token?room=R&name=N&join_code=C[&claim=K]`` — ``{"token": ..., "user": {"id", "name",
  "role"}, "claim": K}``: ``claim`` is the per-person secret that proves, next time, that the
  name is yours (409 without it when someone holds the name; 400 for a name that cannot be one).
* ``POST /names/release?room=R&name=N`` with ``Authorization: Bearer <teacher's token for R>`` —
  ``{"released": bool}``: a teacher frees a name (403 for any other role).
  On a JupyterHub service, ``GET /token?room=R&hub_token=T`` (or ``Authorization: token T``) instead.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .constants import PROTOCOL_VERSION, SERVER_NAME

HEALTH_PATH = "/health"
#: The HTTP API's routes live under this path (see ``server/rest.py``).
API_ROOT = "/api"
TOKEN_PATH = "/token"
#: A teacher frees a claimed name (``POST``, the teacher's room token as ``Authorization: Bearer``).
RELEASE_NAME_PATH = "/names/release"
#: ``/token``'s query parameter with the per-person secret of a claimed name.
CLAIM_PARAM = "claim"
#: ``/token``'s query parameter with a JupyterHub identity token (a hub service, ``serve --jupyterhub``).
HUB_TOKEN_PARAM = "hub_token"
#: Paths the server answers over HTTP, so no room can have these names.
#: Stock Yjs clients connect at ``/yjs/<room>`` (y-websocket appends ``/<room>`` to its server URL).
YJS_ROOT = "/yjs"
#: The teacher dashboard's page.
DASHBOARD_PATH = "/dashboard"
#: Paths the server answers itself (HTTP routes, the Yjs endpoint), so no room can have these names.
RESERVED_ROOM_NAMES = frozenset(
    path.lstrip("/") for path in (HEALTH_PATH, TOKEN_PATH, API_ROOT, YJS_ROOT, DASHBOARD_PATH))

_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


def room_url(base: str, room: str, token: str | None = None) -> str:
    """The socket URL of ``room`` under a ws base URL."""
    query = "?" + urlencode({"token": token}) if token else ""
    return f"{base.rstrip('/')}/{quote(room)}{query}"


def parse_room_path(path: str) -> tuple[str, str | None]:
    """``(room, token)`` from a socket request's path (``/<room>?token=...``); not validated."""
    url = urlsplit(path)
    token = None
    for key, value in parse_qsl(url.query):
        if key == "token":
            token = value
    return unquote(url.path.lstrip("/")), token


#: The dashboard's live feed (a websocket; the page itself is ``DASHBOARD_PATH``).
DASHBOARD_LIVE_PATH = DASHBOARD_PATH + "/live"


def parse_yjs_path(path: str) -> tuple[str, str | None, str | None] | None:
    """``(room, token, name)`` from a Yjs socket's path (``/yjs/<room>?token=...&name=...``), or
    None when the path is not under :data:`YJS_ROOT`; the room is not validated."""
    url = urlsplit(path)
    if not url.path.startswith(YJS_ROOT + "/"):
        return None
    params = dict(parse_qsl(url.query))
    return unquote(url.path[len(YJS_ROOT) + 1:]), params.get("token"), params.get("name")


def yjs_url(base: str, room: str, token: str | None = None) -> str:
    """The Yjs endpoint of ``room`` under a ws base URL (y-websocket: server URL ``base/yjs``)."""
    query = "?" + urlencode({"token": token}) if token else ""
    return f"{base.rstrip('/')}{YJS_ROOT}/{quote(room)}{query}"


def http_base(ws_base: str) -> str:
    """The HTTP(S) base URL of a server given by its ws(s) base URL."""
    parts = urlsplit(ws_base)
    return urlunsplit((_HTTP_SCHEMES.get(parts.scheme, parts.scheme), parts.netloc, parts.path.rstrip("/"), "", ""))


def token_url(ws_base: str, **params: str) -> str:
    """The server's ``/token`` route for a ws base URL, with ``params`` as its query."""
    return http_base(ws_base) + TOKEN_PATH + ("?" + urlencode(params) if params else "")


def release_name_url(ws_base: str, *, room: str, name: str) -> str:
    """The server's ``POST /names/release`` route for ``name``, authorised by a token for ``room``."""
    return http_base(ws_base) + RELEASE_NAME_PATH + "?" + urlencode({"room": room, "name": name})


def health_url(ws_base: str) -> str:
    return http_base(ws_base) + HEALTH_PATH


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` set in its query (replacing parameters of the same name)."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))


def query_params(path: str) -> dict[str, str]:
    """The query of a request path as a dict (the last value of a repeated key wins)."""
    return dict(parse_qsl(urlsplit(path).query))


def request_path(path: str) -> str:
    return urlsplit(path).path


class Health(TypedDict):
    """``GET /health``."""

    server: str
    protocol: int
    version: str
    node: str
    pid: int
    auth: bool
    rooms: int
    connections: int
    storage: str
    redis: NotRequired[str]
    quarantined: NotRequired[int]  # stored updates set aside since start: they no longer applied
    time: NotRequired[float]  # the server's clock (``pluv-widget doctor`` compares it with the kernel's)


def is_our_health(body: Any) -> bool:
    """True when ``body`` is a pluv-widget server's ``/health`` answer (any version)."""
    return isinstance(body, dict) and body.get("server") == SERVER_NAME and isinstance(body.get("protocol"), int)


def speaks_our_protocol(body: Any) -> bool:
    return is_our_health(body) and body["protocol"] == PROTOCOL_VERSION


def claim_from_answer(body: Any) -> str | None:
    """The ``claim`` of a ``/token`` answer, if it has one."""
    claim = body.get(CLAIM_PARAM) if isinstance(body, dict) else None
    return claim if isinstance(claim, str) and claim else None


def token_from_answer(body: Any) -> str | None:
    """The token of a ``/token`` answer, or None when the answer has none."""
    token = body.get("token") if isinstance(body, dict) else None
    return token if isinstance(token, str) else None
