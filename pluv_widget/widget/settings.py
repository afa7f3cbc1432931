"""Where a widget connects: the URL, the join code, and how it retries.

``url=`` or ``$PLUV_WIDGET_URL`` (a ws base URL); ``join_code=`` or ``$PLUV_WIDGET_JOIN_CODE``
when that server requires auth. With neither, the local server (:mod:`pluv_widget.local`) is
started if needed.

On JupyterHub the hub's config gives every kernel ``$PLUV_WIDGET_URL`` (the pluv-widget
service through the hub's proxy) and ``$PLUV_WIDGET_HUB_TOKEN`` (an identify-only hub token of
the kernel's user): the widget proves who it is with that token at the service's ``/token``
route, and is the hub user — nothing to configure. The single-user server's own
``$JUPYTERHUB_API_TOKEN`` is never sent: it can reach the user's server.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from ..local import ensure_local_server
from ..protocol.routes import HUB_TOKEN_PARAM, token_url
from .identity import color_for, display_name, session_person

#: The kernel's identify-only hub token, given by the hub's ``c.Spawner.environment``.
HUB_TOKEN_ENV = "PLUV_WIDGET_HUB_TOKEN"
HUB_WITHOUT_URL = (
    "this JupyterHub runs no pluv-widget service for kernels (no PLUV_WIDGET_URL): this kernel "
    "starts its own private local server, so students will not see each other. Run pluv-widget "
    "as a hub service (README, 'On JupyterHub'; docs/jupyterhub_config.py): every kernel then gets "
    "the service's URL and its hub identity, with nothing for students to configure."
)


def reconnect_backoff_ms(attempts: int) -> int:
    """0.5 s, 1 s, 2 s … up to 10 s: back soon after a long cell, gentle on a restarted server.

    (pluv's default, a flat 30 s, is long to stare at a greyed widget; the client adds jitter.)
    """
    return int(min(500 * 2**attempts, 10_000))


def token_endpoint(ws_url: str, *, name: str, join_code: str) -> str:
    """The server's token route for a ws base URL: ``http(s)://host:port[/path]/token?...``."""
    return token_url(ws_url, join_code=join_code, name=name)


@dataclass(frozen=True)
class WidgetSettings:
    """A widget's resolved configuration."""

    name: str
    url: str
    auth_endpoint: str | None
    color: str

    @classmethod
    def resolve(cls, *, user: str | None, url: str | None, join_code: str | None, session: int = 0) -> WidgetSettings:
        """Arguments, else the environment, else the local server (started if needed);
        ``session`` (:func:`.registry.session_key`) picks the colour of a person without auth."""
        name = user or display_name()
        hub_url = os.environ.get("PLUV_WIDGET_URL") or None
        url = url or hub_url
        join_code = join_code or os.environ.get("PLUV_WIDGET_JOIN_CODE") or None
        # The hub token goes only to the service the hub named, never to a URL typed in a cell.
        hub_token = (os.environ.get(HUB_TOKEN_ENV) or None) if url == hub_url else None
        if url is None:
            if os.environ.get("JUPYTERHUB_USER"):
                warnings.warn(HUB_WITHOUT_URL, stacklevel=4)
            url = ensure_local_server()
            hub_token = None  # the local server knows nothing of the hub
        if join_code:
            auth: str | None = token_endpoint(url, name=name, join_code=join_code)
        elif hub_token:
            # The hub user is the identity (the service ignores ``name``): show that name too.
            name = os.environ.get("JUPYTERHUB_USER") or name
            auth = token_url(url, name=name, **{HUB_TOKEN_PARAM: hub_token})
        else:
            auth = None
        # With auth the colour follows the name (the server's id is the name's claim); without, each
        # session (a kernel, a viewer of `marimo run`) is a person.
        return cls(name=name, url=url, auth_endpoint=auth, color=color_for(name if auth else session_person(session)))
