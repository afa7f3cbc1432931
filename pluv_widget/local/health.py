"""Asking a port who answers: ``GET /health``, and what its answer means to this pluv-widget."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..protocol import routes
from .errors import PortTakenError
from .files import HOST, ws_url


def probe(port: int) -> dict[str, Any] | None:
    """``/health`` of a pluv-widget server on ``port``; ``None`` when nothing listens there.

    Raises :class:`PortTakenError` when something else answers (not HTTP, an HTTP error, not our
    JSON). Whatever version or protocol the server speaks, its answer is returned.
    """
    try:
        with urllib.request.urlopen(routes.health_url(ws_url(port)), timeout=5) as response:
            body = json.loads(response.read())
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None
        raise port_taken(port, error) from None
    except ConnectionRefusedError:
        return None
    except (OSError, ValueError) as error:  # not HTTP, timed out, HTTP error status, not JSON
        raise port_taken(port, error) from None
    if not routes.is_our_health(body):
        raise port_taken(port, "its /health answer is not a pluv-widget server's")
    return dict(body)


def speaks_our_protocol(health: dict[str, Any]) -> bool:
    return routes.speaks_our_protocol(health)


def is_current(health: dict[str, Any]) -> bool:
    """The same pluv-widget as this one: same protocol and same package version."""
    from .. import __version__

    return speaks_our_protocol(health) and health.get("version") == __version__


def is_idle(health: dict[str, Any]) -> bool:
    return health.get("connections") == 0


def describe(health: dict[str, Any]) -> str:
    return f"version {health.get('version')}, protocol {health.get('protocol')}"


def port_taken(port: int, why: object) -> PortTakenError:
    return PortTakenError(
        f"port {port} on {HOST} is taken by something that is not a pluv-widget server ({why}); "
        "stop it, or pass url=... / set PLUV_WIDGET_URL to a pluv-widget server"
    )
