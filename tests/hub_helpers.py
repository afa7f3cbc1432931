"""A real JupyterHub for the tests, run with docs/jupyterhub_config.py (the documented config).

The hub gets its own port, database, cookie secret and proxy on 127.0.0.1; the dummy
authenticator (any password), the simple local-process spawner (single-user servers run as root
here, so ``--allow-root``), a ``teachers`` group, and configurable-http-proxy from
``tests/hub/node_modules`` (``npm ci`` there; ``.ci/run`` does it). The test's only addition to
the documented config is a ``test-admin`` service whose token drives the hub's REST API.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import free_port

REPO = Path(__file__).resolve().parents[1]
DOCS_CONFIG = REPO / "docs" / "jupyterhub_config.py"
PROXY_BIN = REPO / "tests" / "hub" / "node_modules" / ".bin"
HUB_START_TIMEOUT_S = 60.0
SPAWN_TIMEOUT_S = 60.0

TEACHER, STUDENTS = "teacher", ("alice", "bob")

TEST_CONFIG = """
c = get_config()  # noqa: F821
load_subconfig({docs!r})  # noqa: F821 - the documented config, unchanged

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}
c.JupyterHub.db_url = "sqlite:///{db}"
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.pid_file = {hub_pid!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root", "--LabApp.expose_app_in_browser=True"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.environment.update({kernel_env!r})
c.JupyterHub.load_groups = {{"teachers": {{"users": [{teacher!r}]}}}}
c.Authenticator.allowed_users = {users!r}
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {admin_token!r}}})
c.JupyterHub.load_roles.append({{"name": "test-admin", "scopes": ["admin:users", "admin:servers",
    "admin:server_state", "tokens", "read:users"], "services": ["test-admin"]}})
"""


@dataclass
class Hub:
    """A running hub: ``api()`` calls its REST API as the test-admin service."""

    directory: Path
    port: int
    service_port: int
    admin_token: str
    process: subprocess.Popen[bytes]
    log: Path
    homes: Path
    spawned: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pluv_url(self) -> str:
        """The pluv-widget service through the hub's proxy (what kernels are given)."""
        return f"ws://127.0.0.1:{self.port}/services/pluv/"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/hub/api{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.admin_token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def start_server(self, *names: str) -> None:
        """Start these users' single-user servers (together) and wait until all are ready."""
        for name in names:
            try:
                self.api("POST", f"/users/{name}/server")  # 202 while it spawns
            except urllib.error.HTTPError as error:
                if error.code != 400:  # 400: already running
                    raise
            self.spawned.add(name)
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        for name in names:
            while not self.api("GET", f"/users/{name}")["servers"].get("", {}).get("ready"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}'s server did not start:\n{self.tail()}")
                time.sleep(0.3)

    def stop_server(self, name: str) -> None:
        try:
            self.api("DELETE", f"/users/{name}/server")
        except urllib.error.HTTPError as error:
            if error.code != 400:
                raise
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        while self.api("GET", f"/users/{name}")["servers"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}'s server did not stop:\n{self.tail()}")
            time.sleep(0.3)
        self.spawned.discard(name)

    def server_environment(self, name: str) -> dict[str, str]:
        """The environment the hub gave ``name``'s single-user server (and so its kernels)."""
        state = self.api("GET", f"/users/{name}")["servers"][""]["state"]
        raw = Path(f"/proc/{state['pid']}/environ").read_bytes()
        return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        for name in list(self.spawned):
            try:
                self.stop_server(name)
            except (OSError, RuntimeError):
                pass
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the hub stops its service and proxy
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_hub(directory: Path) -> Hub:
    if not (PROXY_BIN / "configurable-http-proxy").exists():
        raise RuntimeError(f"configurable-http-proxy is missing: (cd {PROXY_BIN.parents[1]} && npm ci)")
    directory.mkdir(parents=True, exist_ok=True)
    homes, state = directory / "homes", directory / "state"
    homes.mkdir(exist_ok=True)
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, service_port, admin_token = free_port(), free_port(), secrets.token_hex(16)
    kernel_env = {
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "PLUV_WIDGET_HOME": str(state / "pluv-home"),  # the widget must never need a local server
    }
    config = directory / "jupyterhub_config.py"
    config.write_text(TEST_CONFIG.format(
        docs=str(DOCS_CONFIG), port=port, hub_port=free_port(), proxy_api_port=free_port(),
        proxy_pid=str(directory / "proxy.pid"), db=directory / "hub.sqlite", hub_pid=str(directory / "hub.pid"),
        cookie_secret=str(directory / "cookie_secret"), homes=str(homes), python=sys.executable,
        kernel_env=kernel_env, teacher=TEACHER, users={TEACHER, *STUDENTS}, admin_token=admin_token))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PLUV_WIDGET_", "JUPYTERHUB_", "JUPYTER_"))}
    env.update(
        PATH=os.pathsep.join([str(PROXY_BIN), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
        PLUV_HUB_WS_URL=f"ws://127.0.0.1:{port}",
        PLUV_SERVICE_URL=f"http://127.0.0.1:{service_port}",
        PLUV_DATA_DIR=str(directory / "pluv-data"),
    )
    log = directory / "hub.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=directory)
    hub = Hub(directory, port, service_port, admin_token, process, log, homes)
    deadline = time.monotonic() + HUB_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyterhub exited with {process.returncode}:\n{hub.tail()}")
        try:
            hub.api("GET", "/")
            with urllib.request.urlopen(f"{hub.url}/services/pluv/health", timeout=5):
                break
        except OSError:
            if time.monotonic() > deadline:
                hub.stop()
                raise RuntimeError(f"the hub or its pluv service did not answer in {HUB_START_TIMEOUT_S} s:\n"
                                   f"{hub.tail()}") from None
            time.sleep(0.3)
    return hub
