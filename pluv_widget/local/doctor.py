"""``pluv-widget doctor``: what breaks rooms on this machine, each finding in words with its fix.

Run where the kernels run (a student's machine, a JupyterHub single-user server) or on the class
server. It checks, in order: which server the widget would use and whether it answers; its
version and protocol against this package's; the clock against the server's (tokens carry
expiry times); the open-file limit (every connection is a file); and, inside a JupyterHub
single-user server, that the hub gives kernels the pluv-widget service (its URL and the kernel's
identity token) and that the service accepts that identity. Nothing here changes anything: no
name is claimed, no room is entered.
"""

from __future__ import annotations

import json
import os
import resource
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..protocol import PROTOCOL_VERSION, routes
from .files import local_port, ws_url
from .health import probe

#: Kernels and servers disagreeing by more than this break tokens (``exp``, ``iat``).
MAX_CLOCK_SKEW_S = 30.0
#: Below this soft limit a class server runs out of sockets (each connection is a file).
MIN_OPEN_FILES = 1024
URL_ENV, HUB_TOKEN_ENV, HUB_ENV = "PLUV_WIDGET_URL", "PLUV_WIDGET_HUB_TOKEN", "JUPYTERHUB_API_URL"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""  # how to fix it, in words (empty when ok)

    def line(self) -> str:
        return f"✓ {self.what}" if self.ok else f"✗ {self.what}\n    fix: {self.fix}"


def _get_json(url: str, timeout: float = 5.0) -> tuple[int, Any, float]:
    """(status, JSON body, the local time halfway through the request)."""
    started = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as error:
        status, raw = int(error.code), error.read()
    middle = (started + time.time()) / 2
    try:
        return status, json.loads(raw or b"null"), middle
    except ValueError:
        return status, None, middle


def check_server(url: str | None) -> list[Finding]:
    """Reachability, version, protocol and clock of the server the widget would use."""
    findings: list[Finding] = []
    if url is None:
        port = local_port()
        url = ws_url(port)
        try:
            health = probe(port)
        except Exception as error:  # something else holds the port
            return [Finding(False, f"the local server's port {port} answers, but not as pluv-widget ({error})",
                            f"free port {port}, or choose another with PLUV_WIDGET_PORT")]
        if health is None:
            return [Finding(True, f"no local server runs on port {port} yet: the first RoomWidget starts one")]
    try:
        status, health, middle = _get_json(routes.health_url(url))
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return [Finding(False, f"the server at {url} does not answer ({reason})",
                        "check the address in PLUV_WIDGET_URL (or url=...), that the server runs "
                        "(pluv-widget serve ...), and that no firewall or proxy blocks the port")]
    if status != 200 or not routes.is_our_health(health):
        return [Finding(False, f"{routes.health_url(url)} answers, but not as a pluv-widget server (HTTP {status})",
                        "point PLUV_WIDGET_URL at the pluv-widget server itself (ws://host:port, or the "
                        "hub's /services/<name>/ address)")]
    findings.append(Finding(True, f"the server at {url} answers: pluv-widget {health.get('version')}, "
                                  f"{health.get('connections', 0)} connections in {health.get('rooms', 0)} rooms"))
    if health["protocol"] != PROTOCOL_VERSION:
        findings.append(Finding(False, f"the server speaks protocol {health['protocol']}, this kernel's "
                                       f"pluv-widget {__version__} speaks {PROTOCOL_VERSION}",
                                f"install the same pluv-widget version on the server and in the kernels "
                                f"(pip install 'pluv-widget=={health.get('version')}')"))
    elif health.get("version") != __version__:
        findings.append(Finding(True, f"versions differ (server {health.get('version')}, here {__version__}) "
                                      "but speak the same protocol"))
    server_time = health.get("time")
    if isinstance(server_time, int | float):
        skew = middle - float(server_time)
        if abs(skew) > MAX_CLOCK_SKEW_S:
            findings.append(Finding(False, f"this clock is {skew:+.0f} s off the server's: tokens look expired "
                                           "or not yet valid", "turn on time synchronisation (NTP) here and on the "
                                                               "server (timedatectl set-ntp true)"))
        else:
            findings.append(Finding(True, f"clock within {abs(skew):.1f} s of the server's"))
    return findings


def check_open_files() -> Finding:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < MIN_OPEN_FILES:
        return Finding(False, f"at most {soft} open files (the hard limit is {hard}): a class server needs one "
                              "per connection", f"raise it before starting the server: ulimit -n {max(hard, 4096)} "
                                                "(or LimitNOFILE= in a systemd unit)")
    return Finding(True, f"open files: up to {soft} (the server also raises it to the hard limit, {hard})")


def check_hub(env: dict[str, str]) -> list[Finding]:
    """Inside a JupyterHub single-user server: is the pluv-widget service given to kernels?"""
    if HUB_ENV not in env:
        return []
    url, token = env.get(URL_ENV), env.get(HUB_TOKEN_ENV)
    if not url:
        return [Finding(False, "this is a JupyterHub server, but kernels get no PLUV_WIDGET_URL: each kernel "
                               "would start its own private server and students would not see each other",
                        "run pluv-widget as a hub service: add docs/jupyterhub_config.py to the hub's config "
                        "(README, 'On JupyterHub') and restart the hub and this server")]
    if not token:
        return [Finding(False, "kernels get the service's URL but no PLUV_WIDGET_HUB_TOKEN: they cannot say who "
                               "they are", "use docs/jupyterhub_config.py's c.Spawner.environment, then restart "
                                           "this server from the hub's control panel")]
    probe_url = routes.token_url(url, room="doctor-check", **{routes.HUB_TOKEN_PARAM: token})
    try:
        status, body, _ = _get_json(probe_url)
    except (OSError, ValueError) as error:
        return [Finding(False, f"the service's /token route does not answer ({error})",
                        "check that the service runs (the hub's log) and PLUV_WIDGET_URL")]
    if status != 200:
        words = body.get("error") if isinstance(body, dict) else f"HTTP {status}"
        return [Finding(False, f"the service refuses this server's hub identity: {words}",
                        "restart this server from the hub's control panel (a new identity token is minted "
                        "at each start); if it persists, check the service's --teacher-group and the hub's log")]
    user = body.get("user", {}) if isinstance(body, dict) else {}
    return [Finding(True, f"the hub service knows this server's user: {user.get('name')} ({user.get('role')})")]


def run(url: str | None = None, env: dict[str, str] | None = None) -> list[Finding]:
    """Every check; ``url`` defaults to ``$PLUV_WIDGET_URL``, else the local server."""
    env = dict(os.environ) if env is None else env
    return [*check_server(url or env.get(URL_ENV) or None), check_open_files(), *check_hub(env)]


def report(findings: list[Finding]) -> str:
    problems = sum(not finding.ok for finding in findings)
    summary = "no problem found" if not problems else f"{problems} problem{'s' if problems > 1 else ''} found"
    return "\n".join([*(finding.line() for finding in findings), summary])
