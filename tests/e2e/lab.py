"""Start JupyterLab and Debian's Chromium, open notebooks, run them: shared by tests/e2e and bench/.

Every fact this relies on is in ../shared/DESIGN.md ("Jupyter facts found on this machine"):
a token-protected lab on a free loopback port with its own config/runtime/settings dirs, one
workspace per page, ``metadata.kernelspec`` in every notebook, the status bar's "| Idle", and
sessions deleted before and after because kernels outlive pages.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Page as AsyncPage
from playwright.async_api import async_playwright
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from pluv_widget.widget import STATIC

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAB_START_TIMEOUT_S = 90.0
#: Deadline for one DOM condition (ms): generous, for a cold 2-core machine.
DOM_TIMEOUT_MS = 60_000
#: "Nothing configured": kernels must not inherit a room server from the caller's environment.
UNSET = ("PLUV_WIDGET_URL", "PLUV_WIDGET_JOIN_CODE", "JUPYTERHUB_USER")


def widget_cells(room: str, user: str) -> list[str]:
    """One cell, what a person types: import, create, display."""
    return [f"from pluv_widget import RoomWidget\n\nw = RoomWidget({room!r}, user={user!r})\nw"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def markdown(source: str) -> dict[str, str]:
    """A markdown cell for :func:`write_notebook` (plain strings are code cells)."""
    return {"cell_type": "markdown", "source": source}


def write_notebook(path: Path, cells: Sequence[str | dict[str, str]]) -> None:
    """A notebook of code cells (and :func:`markdown` ones) with a python3 kernelspec, so no
    kernel picker appears."""

    def cell(i: int, source: str | dict[str, str]) -> dict[str, Any]:
        if isinstance(source, dict):
            return {"cell_type": "markdown", "id": f"cell-{i}", "metadata": {}, "source": source["source"]}
        return {"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {}, "outputs": [],
                "source": source}

    notebook = {
        "cells": [cell(i, source) for i, source in enumerate(cells)],
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1))


@dataclass
class Lab:
    """A running JupyterLab server; ``stop()`` ends it and every kernel it started."""

    root: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(repr=False)
    app: str = "lab"  # or "notebook": Notebook 7 (one notebook per page, no workspaces)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def page_url(self, workspace: str, notebook: str) -> str:
        if self.app == "notebook":
            return f"{self.url}/notebooks/{notebook}?token={self.token}"
        return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook}?token={self.token}"

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def delete_sessions(self) -> None:
        for session in self.api("GET", "/api/sessions"):
            try:
                self.api("DELETE", f"/api/sessions/{session['id']}")
            except urllib.error.HTTPError:
                pass  # already gone

    def stop(self) -> None:
        try:
            self.delete_sessions()
        except OSError:
            pass
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # jupyter shuts its kernels down on SIGTERM
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_lab(root: Path, state: Path, env: dict[str, str] | None = None, *, app: str = "lab") -> Lab:
    """JupyterLab (``app="notebook"``: Notebook 7) serving ``root``, its config/runtime/settings
    under ``state``; kernels get ``env``."""
    for name in ("config", "runtime", "settings", "workspaces"):
        (state / name).mkdir(parents=True, exist_ok=True)
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    token = secrets.token_hex(16)
    port = free_port()
    lab_env = {key: value for key, value in os.environ.items() if key not in UNSET}
    lab_env.update(env or {})
    lab_env.update(
        JUPYTER_CONFIG_DIR=str(state / "config"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
        # Kernels import this checkout even when it is not pip-installed.
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), lab_env.get("PYTHONPATH", "")])),
    )
    log = state / "lab.log"
    command = [
        sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--JupyterNotebookApp.expose_app_in_browser=True" if app == "notebook"
        else "--LabApp.expose_app_in_browser=True",
        f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=lab_env, cwd=root)
    lab = Lab(root=root, port=port, token=token, process=process, log=log, env=lab_env, app=app)
    deadline = time.monotonic() + LAB_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter {app} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            lab.api("GET", "/api/status")
            break
        except OSError:
            if time.monotonic() > deadline:
                lab.stop()
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"jupyter lab did not answer in {LAB_START_TIMEOUT_S} s:\n{tail}") from None
            time.sleep(0.2)
    lab.delete_sessions()
    return lab


def launch_chromium(playwright: Playwright, user_data_dir: Path) -> BrowserContext:
    """Debian's chromium (``playwright install`` cannot download browsers here), a fresh profile."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    context = playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(DOM_TIMEOUT_MS)
    return context


@contextlib.contextmanager
def widget_page(html: str) -> Iterator[Page]:
    """The widget's shipped ESM and CSS (``/widget.js``, ``/widget.css``) under a stand-in page
    ``html`` (it mounts the view on a stand-in model and sets ``window.__ready``), in Chromium:
    the view alone, without JupyterLab or a kernel."""
    files = {"/widget.js": ("text/javascript", STATIC / "widget.js"),
             "/widget.css": ("text/css", STATIC / "widget.css")}

    def serve(route: Any) -> None:
        path = "/" + route.request.url.split("/", 3)[3]
        if path in files:
            kind, file = files[path]
            route.fulfill(status=200, content_type=kind, body=file.read_bytes())
        else:
            route.fulfill(status=200, content_type="text/html", body=html)

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        context = launch_chromium(playwright, Path(tmp) / "chromium")
        try:
            view = context.new_page()
            view.route("http://view.test/**", serve)
            view.goto("http://view.test/")
            view.wait_for_function("() => window.__ready === true")
            yield view
        finally:
            context.close()


@contextlib.asynccontextmanager
async def chromium_page() -> AsyncIterator[tuple[AsyncPage, list[str]]]:
    """For async tests: a page of Debian's Chromium with a fresh profile, and the list its page
    errors are collected in (a test asserts it stays empty)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(Path(tmp) / "chromium"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = await context.new_page()
                problems: list[str] = []
                page.on("pageerror", lambda error: problems.append(str(error)))
                yield page, problems
            finally:
                await context.close()


def open_notebook(context: BrowserContext, lab: Lab, workspace: str, notebook: str) -> Page:
    """A new page on ``notebook`` in its own workspace, its kernel idle."""
    page = context.new_page()
    page.goto(lab.page_url(workspace, notebook))
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for()
    # The toolbar says idle too early; the status bar's "| Idle" means the kernel is ready.
    page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\|\s*Idle")).wait_for()
    return page


def run_all_cells(page: Page) -> None:
    page.evaluate(
        """async () => {
            const app = window.jupyterapp;
            const panel = app.shell.currentWidget;
            await panel.sessionContext.ready;
            await app.commands.execute('notebook:run-all-cells');
        }"""
    )


def shutdown_kernel(page: Page) -> None:
    """Shut the page's kernel down, as the Kernel menu does (without its confirmation dialog)."""
    page.evaluate("async () => { await window.jupyterapp.shell.currentWidget.sessionContext.shutdown(); }")


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class RoomLab:
    """JupyterLab + Chromium for widget notebooks, with a private local pluv-widget server home."""

    lab: Lab
    context: BrowserContext
    home: Path
    port: int

    def open(self, workspace: str, notebook: str, *, run: bool = True) -> Page:
        page = open_notebook(self.context, self.lab, workspace, notebook)
        if run:
            run_all_cells(page)
        return page


@contextlib.contextmanager
def room_lab(tmp: Path, notebooks: Mapping[str, Sequence[str | dict[str, str]]]) -> Iterator[RoomLab]:
    """Write ``notebooks``, start lab and chromium; at the end stop both and the local server.

    Kernels get nothing but ``PLUV_WIDGET_HOME`` (a temp dir) and ``PLUV_WIDGET_PORT`` (a free
    port), so the widget's "nothing configured" path starts a local server of its own, which is
    stopped here with ``stop_local_server`` like ``pluv-widget stop`` would.
    """
    from pluv_widget.local import stop_local_server

    root, home = tmp / "notebooks", tmp / "pluv-home"
    root.mkdir(parents=True, exist_ok=True)
    for name, cells in notebooks.items():
        write_notebook(root / name, cells)
    port = free_port()
    env = {"PLUV_WIDGET_HOME": str(home), "PLUV_WIDGET_PORT": str(port)}
    try:
        with sync_playwright() as playwright:
            lab = start_lab(root, tmp / "lab", env)
            try:
                context = launch_chromium(playwright, tmp / "chromium")
                try:
                    yield RoomLab(lab, context, home, port)
                finally:
                    context.close()
            finally:
                lab.stop()
    finally:
        with environ(**env):
            stop_local_server()
