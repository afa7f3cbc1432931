"""pluv-widget as a JupyterHub service: the hub says who a kernel is (``serve --jupyterhub``).

The hub starts the server as a managed service and routes ``/services/<name>/`` to it through
its proxy, unstripped. Each single-user server's kernels get, from ``c.Spawner.environment``
(see ``docs/jupyterhub_config.py``), the service's URL and an **identify-only** hub token of
their user, minted at server start and revoked when it stops. The widget hands that token to
``/token?room=R&hub_token=T`` (or ``Authorization: token T``); :class:`HubIdentity` asks the
hub who owns it (``HubAuth.user_for_token``, ``GET /hub/api/user`` with the token itself, never
cached, so a revoked token is refused at once) and signs a room token for that user only:

* ``id`` and ``name`` are the hub user's name — a request's ``name`` is ignored, so nobody gets
  a token for somebody else;
* ``role`` is ``"teacher"`` for members of the teacher group (``--teacher-group``, default
  ``teachers``) and, with ``--hub-admins-are-teachers``, hub admins; else ``"student"``;
* a token the hub does not know, a revoked one, or a service's token is refused (403).

The identify-only token cannot reach the student's server, so handing it to this service is
safe; the server's own ``JUPYTERHUB_API_TOKEN`` is never sent anywhere by the widget.

This module imports ``jupyterhub`` only when a :class:`HubIdentity` is built from the
environment: the rest of the server never needs it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ServerConfigError
from ..protocol import DEFAULT_HOST, DEFAULT_PORT
from ..protocol.routes import HUB_TOKEN_PARAM
from .tokens import SECRET_FILE, TokenRequest, stored_secret

log = logging.getLogger("pluv_widget.server")

#: Members of this hub group are teachers unless ``--teacher-group`` says otherwise.
DEFAULT_TEACHER_GROUP = "teachers"
#: What a hub-managed service is given by the hub.
HUB_SERVICE_ENV = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL")
_AUTHORIZATION = re.compile(r"(?:token|bearer)\s+(\S+)\s*$", re.IGNORECASE)


class HubUnavailableError(OSError):
    """The hub could not say whose a token is (down, or failing): the ``/token`` request fails
    with a 5xx, which a client retries like a lost connection."""


def unprefixed(path: str, prefix: str) -> str:
    """A request path without the service prefix the hub's proxy leaves on it.

    ``/services/pluv/health?x`` → ``/health?x``; ``/services/pluv/`` → ``/``; a path outside the
    prefix (a direct request) is returned as it is. Room names have no ``/``, so no room path
    is ever mistaken for a prefixed one. Every route — ``/health``, ``/token`` and the room
    sockets — goes through this one function.
    """
    base = prefix.rstrip("/")
    if not base or not path.startswith(base):
        return path
    rest = path[len(base):]
    if rest == "":
        return "/"
    if rest[0] == "/":
        return rest
    if rest[0] == "?":
        return "/" + rest
    return path  # /services/pluvious: another path that merely starts alike


def hub_token_of(request: TokenRequest) -> str | None:
    """The hub token a ``/token`` request presents: ``?hub_token=``, else ``Authorization: token``."""
    token = request.params.get(HUB_TOKEN_PARAM, "").strip()
    if token:
        return token
    for key, value in request.headers.items():
        if key.lower() == "authorization":
            match = _AUTHORIZATION.match(value.strip())
            if match:
                return match.group(1)
    return None


@dataclass(frozen=True)
class HubIdentity:
    """``create_io(mint_user=HubIdentity(...))``: room tokens for hub users, roles from hub groups.

    ``auth`` is a ``jupyterhub.services.auth.HubAuth`` (anything with its async
    ``user_for_token(token, use_cache=False, sync=False)``).
    """

    auth: Any
    teacher_group: str = DEFAULT_TEACHER_GROUP
    admins_are_teachers: bool = False

    @classmethod
    def from_environment(cls, *, teacher_group: str = DEFAULT_TEACHER_GROUP, admins_are_teachers: bool = False,
                         environ: Mapping[str, str] | None = None) -> HubIdentity:
        """The identity of a hub-managed service: ``JUPYTERHUB_API_TOKEN`` and ``JUPYTERHUB_API_URL``
        from the hub (a service's token needs no extra scope: resolving a token uses the token)."""
        env = os.environ if environ is None else environ
        missing = [name for name in HUB_SERVICE_ENV if not env.get(name)]
        if missing:
            raise ServerConfigError(
                f"--jupyterhub: {' and '.join(missing)} not set. Run pluv-widget as a hub-managed service "
                "(c.JupyterHub.services, see docs/jupyterhub_config.py), or set them by hand")
        try:
            from jupyterhub.services.auth import HubAuth  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise ServerConfigError(
                "--jupyterhub needs the jupyterhub package: pip install 'pluv-widget[hub]'") from None
        auth = HubAuth(api_token=env["JUPYTERHUB_API_TOKEN"], api_url=env["JUPYTERHUB_API_URL"], cache_max_age=0)
        return cls(auth, teacher_group=teacher_group, admins_are_teachers=admins_are_teachers)

    async def __call__(self, request: TokenRequest) -> dict[str, Any] | None:
        token = hub_token_of(request)
        if token is None:
            log.info("token refused for room %s: no hub token", request.room)
            return None
        # Never cached: a token revoked when its server stopped must stop working now. A hub
        # that cannot answer raises (the client sees a 5xx and retries); an unknown token is None.
        try:
            model = await self.auth.user_for_token(token, use_cache=False, sync=False)
        except Exception as error:  # HubAuth raises tornado's HTTPError for a hub that failed
            log.warning("token for room %s not resolved: the hub did not answer (%s)", request.room, error)
            raise HubUnavailableError(f"the hub did not answer: {error}") from None
        user = self.user_for(model)
        if user is None:
            log.info("token refused for room %s: the hub does not know this token as a user's", request.room)
        return user

    def user_for(self, model: Any) -> dict[str, Any] | None:
        """The pluv user of a hub user model (``GET /hub/api/user``); None for anything else."""
        if not isinstance(model, dict) or model.get("kind", "user") != "user":
            return None  # a service's token identifies no person
        name = model.get("name")
        if not isinstance(name, str) or not name:
            return None
        groups = model.get("groups")
        teacher = (isinstance(groups, list) and self.teacher_group in groups) or (
            self.admins_are_teachers and model.get("admin") is True)
        return {"id": name, "name": name, "role": "teacher" if teacher else "student"}


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """``serve --jupyterhub [--teacher-group G] [--hub-admins-are-teachers]``."""
    parser.add_argument("--jupyterhub", action="store_true",
                        help="run as a JupyterHub service: identities from the hub, every route also under "
                             "$JUPYTERHUB_SERVICE_PREFIX, listening on $JUPYTERHUB_SERVICE_URL unless "
                             "--host/--port say otherwise")
    parser.add_argument("--teacher-group", default=DEFAULT_TEACHER_GROUP, metavar="GROUP",
                        help="with --jupyterhub: members of this hub group are teachers "
                             f"(default {DEFAULT_TEACHER_GROUP})")
    parser.add_argument("--hub-admins-are-teachers", action="store_true",
                        help="with --jupyterhub: hub admins are teachers too")


def configure_hub(io: Any, args: argparse.Namespace, data_dir: Path,
                  environ: Mapping[str, str] | None = None) -> None:
    """Apply ``--jupyterhub`` to a :class:`~.io.PluvIO` being built by the CLI (a no-op without it).

    Tokens must be signed: ``--secret`` (or ``$PLUV_WIDGET_SECRET``), else the secret generated
    and kept in ``data_dir`` (refused with ``--redis``, where every process needs the same one).
    """
    if not getattr(args, "jupyterhub", False):
        return
    env = os.environ if environ is None else environ
    try:
        io.mint_user = HubIdentity.from_environment(
            teacher_group=args.teacher_group, admins_are_teachers=args.hub_admins_are_teachers, environ=env)
    except ServerConfigError as error:
        raise SystemExit(f"pluv-widget serve: {error}") from None
    io.path_prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "")
    service_url = env.get("JUPYTERHUB_SERVICE_URL")
    if service_url and args.host == DEFAULT_HOST and args.port == DEFAULT_PORT:
        url = urlsplit(service_url)
        args.host = url.hostname or args.host
        args.port = url.port or args.port
    if io.secret is None:
        if args.redis:
            raise SystemExit("--jupyterhub with --redis needs --secret (or PLUV_WIDGET_SECRET): every server "
                             "process must sign tokens with the same secret, so none can be generated")
        try:
            io.secret = stored_secret(data_dir)
        except (OSError, ServerConfigError) as error:
            raise SystemExit(f"cannot keep a generated secret in {data_dir / SECRET_FILE}: {error}") from None
        log.info("tokens signed with the secret kept in %s", data_dir / SECRET_FILE)
    log.info("JupyterHub service: identities from %s, teachers are group %r%s, routes also under %r",
             env.get("JUPYTERHUB_API_URL"), args.teacher_group,
             " and hub admins" if args.hub_admins_are_teachers else "", io.path_prefix or "/")
