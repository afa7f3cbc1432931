# pluv-widget on JupyterHub: rooms for the whole hub, nothing for students to configure.
#
# Add this to your jupyterhub_config.py (or load it from there with
# ``load_subconfig("/path/to/this/file.py")``). It is the file tests/test_jupyterhub.py runs a real
# hub with (jupyterhub 5/6). What it does:
#
# * runs ``pluv-widget serve --jupyterhub`` as a hub-managed service named "pluv": the hub starts
#   it, gives it JUPYTERHUB_API_TOKEN / _API_URL / _SERVICE_PREFIX / _SERVICE_URL, and its proxy
#   routes /services/pluv/ (unstripped; the service answers there and directly) to it;
# * gives every kernel PLUV_WIDGET_URL (the service through the hub's proxy) and
#   PLUV_WIDGET_HUB_TOKEN: a token of the server's own user, minted when the server starts,
#   that can only identify that user (JupyterHub's "identify" scopes: read its own name and
#   groups). It cannot reach the user's server or files. It is revoked when the server stops;
# * the service asks the hub whose token it is (never cached) and signs room tokens for that
#   user only: id and name are the hub user's name, role "teacher" for members of the hub group
#   "teachers" (``--teacher-group``; add ``--hub-admins-are-teachers`` for hub admins), else
#   "student". The single-user server's own JUPYTERHUB_API_TOKEN is never handed out.
#
# Then a student types ``RoomWidget("class")`` and is their hub user; a teacher too, and is a
# teacher. Put teachers in the group: ``c.JupyterHub.load_groups = {"teachers": {"users": [...]}}``
# or the hub's admin page.

import os
import sys

c = get_config()  # noqa: F821 - JupyterHub's config loader provides get_config

#: Where the single-user servers reach the hub's public address (JupyterHub.bind_url), as a
#: ws:// (http) or wss:// (https) URL. The kernel's client connects from the server side.
PLUV_HUB_WS_URL = os.environ.get("PLUV_HUB_WS_URL", "ws://127.0.0.1:8000")
#: The service's own address, behind the proxy (the hub tells the service to listen there).
PLUV_SERVICE_URL = os.environ.get("PLUV_SERVICE_URL", "http://127.0.0.1:1999")
#: Rooms (SQLite) and the secret that signs room tokens (generated there on first start, 0600).
PLUV_DATA_DIR = os.environ.get("PLUV_DATA_DIR", "/srv/pluv-widget")
#: Members of this hub group are teachers.
PLUV_TEACHER_GROUP = os.environ.get("PLUV_TEACHER_GROUP", "teachers")

PLUV_SERVICE = "pluv"
PLUV_TOKEN_NOTE = "pluv-widget identity"

c.JupyterHub.services = [
    {
        "name": PLUV_SERVICE,
        "url": PLUV_SERVICE_URL,
        "command": [
            sys.executable, "-m", "pluv_widget", "serve", "--jupyterhub",
            "--teacher-group", PLUV_TEACHER_GROUP, "--data-dir", PLUV_DATA_DIR,
            # the hub's proxy on this machine: per-address limits then see the kernels behind it
            "--trusted-proxy", "127.0.0.1",
        ],
    },
]

# The service needs no scopes: it resolves a kernel's token by calling GET /hub/api/user *with
# that token*, which any token may do for its own owner. The role is declared (empty) so that
# nothing more is ever granted to it by default.
c.JupyterHub.load_roles = [
    {
        "name": "pluv-widget-service",
        "description": "pluv-widget resolves kernels' identity tokens with the tokens themselves",
        "scopes": [],
        "services": [PLUV_SERVICE],
    },
]


def _token_note(spawner):
    return f"{PLUV_TOKEN_NOTE} ({spawner.name or 'default'} server)"


def revoke_pluv_identity(spawner):
    """post_stop_hook: the server stopped, so its kernels' identity token stops working."""
    user, note = spawner.user, _token_note(spawner)
    stale = [token for token in user.orm_user.api_tokens if token.note == note]
    for token in stale:
        user.db.delete(token)
    if stale:
        user.db.commit()


def mint_pluv_identity(spawner):
    """c.Spawner.environment callable, run in the hub at each server start: a token of the
    server's user with JupyterHub's identify-only scopes (its own name and groups). Minted with
    the hub's own API (the single-user server's default "server" role cannot mint tokens)."""
    revoke_pluv_identity(spawner)  # one per server: drop any left by a hub that died
    return spawner.user.new_api_token(
        note=_token_note(spawner),
        scopes=["read:users:name!user", "read:users:groups!user"],
    )


c.Spawner.environment.update(
    {
        "PLUV_WIDGET_URL": f"{PLUV_HUB_WS_URL.rstrip('/')}/services/{PLUV_SERVICE}/",
        "PLUV_WIDGET_HUB_TOKEN": mint_pluv_identity,
    }
)
c.Spawner.post_stop_hook = revoke_pluv_identity
