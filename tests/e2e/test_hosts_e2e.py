"""Every notebook host, two people each, in Debian's Chromium: JupyterLab with comms over subshells
on (its default) and off, Notebook 7, and marimo (``mo.ui.anywidget(RoomWidget(...))`` in ``marimo
edit``), and ``marimo run`` (two viewers of one app, one process: two people). The doctor's comm
round trip (kernel → view → kernel) runs in each Jupyter host, both as ``w.doctor()`` (filled in
after the cell) and as ``await w.doctor()``, and in marimo (the report shown by a later run).

One server per host for the whole module, all started at once (a cold JupyterLab takes ~10 s
on 2 cores), and one Chromium; nothing is configured, so the first kernel starts the local room
server (in a temp ``PLUV_WIDGET_HOME``) and every other kernel, of every host, finds it. Each test
has its own room and its own time budget.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from pluv_widget.local import stop_local_server

from .lab import (
    DOM_TIMEOUT_MS,
    LAB_START_TIMEOUT_S,
    REPO,
    UNSET,
    Lab,
    environ,
    free_port,
    launch_chromium,
    screenshot,
    start_lab,
    write_notebook,
)

#: Each test's budget, the shared servers' start included for the first (the module takes ~80 s
#: on 2 cores: ~5 s to start four servers at once, 8 to 21 s a host).
BUDGET_S = 150
SUBSHELLS = "@jupyterlab/apputils-extension:kernels-settings"


def jupyter_cells(room: str, user: str) -> list[str]:
    """The widget, then the doctor in its own cell (run once the view is up)."""
    return [f"from pluv_widget import RoomWidget\n\nw = RoomWidget({room!r}, user={user!r})\nw", "w.doctor()",
            "report = await w.doctor(timeout=3)\nprint(report)"]


def marimo_notebook(room: str, user: str) -> str:
    return textwrap.dedent(f'''\
        import marimo

        app = marimo.App()


        @app.cell
        def _():
            import marimo as mo
            from pluv_widget import RoomWidget

            w = RoomWidget({room!r}, user={user!r})
            view = mo.ui.anywidget(w)
            view
            return mo, w


        @app.cell
        def _(w):
            checkup = w.doctor(timeout=30)  # marimo hands the kernel the view's answer after this run
            return (checkup,)


        @app.cell
        def _(mo):
            show = mo.ui.run_button(label="doctor report")
            show
            return (show,)


        @app.cell
        def _(checkup, mo, show):
            mo.stop(not show.value)
            mo.plain_text(str(checkup.report()))
            return


        if __name__ == "__main__":
            app.run()
        ''')


def marimo_app(room: str) -> str:
    """An app for `marimo run`: every viewer runs it in their own session; ``?user=`` names them."""
    return textwrap.dedent(f'''\
        import marimo

        app = marimo.App()


        @app.cell
        def _():
            import marimo as mo
            from pluv_widget import RoomWidget

            w = RoomWidget({room!r}, user=mo.query_params().get("user") or None)
            mo.ui.anywidget(w)
            return


        if __name__ == "__main__":
            app.run()
        ''')


@dataclass
class Marimo:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def page_url(self, notebook: str = "", **query: str) -> str:
        params = "&".join(f"{key}={value}" for key, value in ({"file": notebook} if notebook else query).items())
        return f"http://127.0.0.1:{self.port}/?{params}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_marimo(root: Path, state: Path, env: dict[str, str], *, app: str | None = None) -> Marimo:
    """``marimo edit`` on ``root`` (no token, no update check, its own config home), or with
    ``app``: ``marimo run`` of that file (each viewer a session in a thread of one process)."""
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    run_env = {key: value for key, value in os.environ.items() if key not in UNSET}
    run_env.update(env, XDG_CONFIG_HOME=str(state / "config"), XDG_STATE_HOME=str(state / "state"),
                   XDG_CACHE_HOME=str(state / "cache"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), run_env.get("PYTHONPATH", "")])))
    log = state / "marimo.log"
    mode = ["run", str(root / app)] if app else ["edit", str(root), "--skip-update-check"]
    command = [sys.executable, "-m", "marimo", *mode, "--headless", "--host", "127.0.0.1",
               "--port", str(port), "--no-token"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=run_env, cwd=root)
    marimo = Marimo(port, process, log)
    deadline = time.monotonic() + LAB_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"marimo exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return marimo
        except OSError:
            if time.monotonic() > deadline:
                marimo.stop()
                raise RuntimeError(f"marimo did not answer:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


@dataclass
class Hosts:
    lab: Lab
    notebook: Lab
    marimo: Marimo
    marimo_run: Marimo
    context: BrowserContext


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    expect.set_options(timeout=DOM_TIMEOUT_MS)
    tmp = tmp_path_factory.mktemp("hosts")
    root = tmp / "notebooks"
    root.mkdir()
    for room in ("lab-on", "lab-off", "nb7"):
        for user in ("Ada", "Bob"):
            write_notebook(root / f"{room}-{user.lower()}.ipynb", jupyter_cells(room, user))
    for user in ("Ada", "Bob"):
        (root / f"mo_{user.lower()}.py").write_text(marimo_notebook("marimo", user))
    (root / "mo_app.py").write_text(marimo_app("marimo-run"))
    env = {"PLUV_WIDGET_HOME": str(tmp / "pluv-home"), "PLUV_WIDGET_PORT": str(free_port())}
    servers: list[Lab | Marimo] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            starting = [pool.submit(start_lab, root, tmp / "lab", env),
                        pool.submit(start_lab, root, tmp / "notebook", env, app="notebook"),
                        pool.submit(start_marimo, root, tmp / "marimo", env),
                        pool.submit(start_marimo, root, tmp / "marimo-run", env, app="mo_app.py")]
            for future in starting:
                try:
                    servers.append(future.result())
                except Exception:
                    for other in starting:  # stop the ones that did start
                        if other is not future and other.exception() is None:
                            other.result().stop()
                    raise
        lab, notebook, marimo, marimo_run = servers
        assert isinstance(lab, Lab) and isinstance(notebook, Lab)
        assert isinstance(marimo, Marimo) and isinstance(marimo_run, Marimo)
        with sync_playwright() as playwright:
            context = launch_chromium(playwright, tmp / "chromium")
            try:
                yield Hosts(lab, notebook, marimo, marimo_run, context)
            finally:
                context.close()
    finally:
        for server in servers:
            server.stop()
        with environ(**env):
            stop_local_server()


# -- Jupyter pages ------------------------------------------------------------------------------

def open_jupyter(context: BrowserContext, server: Lab, workspace: str, notebook: str) -> Page:
    """A page on ``notebook`` (Lab or Notebook 7), its kernel idle, its first cell run."""
    page = context.new_page()
    page.goto(server.page_url(workspace, notebook))
    page.wait_for_function(
        "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
        timeout=DOM_TIMEOUT_MS,
    )
    run_cell(page, 0)
    return page


def run_cell(page: Page, index: int) -> None:
    page.evaluate(
        """async (index) => {
            const app = window.jupyterapp;
            const panel = app.shell.currentWidget;
            await panel.sessionContext.ready;
            panel.content.activeCellIndex = index;
            await app.commands.execute('notebook:run-cell');
        }""",
        index,
    )


def comms_over_subshells(page: Page) -> str:
    return str(page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.commsOverSubshells"
    ))


def set_subshells(lab: Lab, value: str) -> None:
    """JupyterLab's Settings → Kernel → "Kernel Comms over subshells", for pages opened next."""
    request = urllib.request.Request(
        f"{lab.url}/lab/api/settings/{SUBSHELLS}", method="PUT",
        data=json.dumps({"raw": json.dumps({"commsOverSubshells": value})}).encode(),
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


# -- two people ---------------------------------------------------------------------------------

def widget(page: Page) -> Locator:
    return page.locator(".pluv-room")


def two_people(ada: Page, bob: Page, host: str) -> None:
    """Both connected, each lists the other; a post and a selection go from Ada to Bob."""
    expect(widget(ada).and_(ada.locator('[data-state="open"]'))).to_be_visible()
    expect(widget(bob).and_(bob.locator('[data-state="open"]'))).to_be_visible()
    expect(ada.locator(".pluv-person:not(.pluv-me)", has_text="Bob")).to_be_visible()
    expect(bob.locator(".pluv-person:not(.pluv-me)", has_text="Ada")).to_be_visible()
    ada.locator(".pluv-input").fill(f"hello from Ada in {host}")
    ada.locator(".pluv-post").click()
    in_bob = bob.locator(".pluv-message", has_text=f"hello from Ada in {host}")
    expect(in_bob).to_be_visible()
    ada.locator(".pluv-message", has_text=f"hello from Ada in {host}").click()  # the browser sets `selection`
    expect(in_bob.locator(".pluv-selector", has_text="Ada")).to_be_visible()
    screenshot(ada, f"hosts-{host}-ada")
    screenshot(bob, f"hosts-{host}-bob")


def doctor_round_trip(page: Page, host_name: str) -> None:
    """``w.doctor()`` in the second cell: shown at once, filled in after the cell with the view's pong."""
    run_cell(page, 1)
    output = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
    expect(output).to_contain_text("comms reach the kernel: a view answered the kernel's ping")
    expect(output).to_contain_text("the widget's tasks run on the kernel's asyncio loop")
    expect(output).to_contain_text(f"in the browser: {host_name}")
    expect(output).to_contain_text("in the kernel: anywidget")


def awaited_doctor(page: Page) -> Locator:
    """``print(await w.doctor())`` in the third cell: its output once the cell is done."""
    run_cell(page, 2)
    output = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea")
    expect(output).to_contain_text("found")  # "no problem found" / "1 problem found": the report is out
    return output


def jupyter_two_people(hosts: Hosts, server: Lab, room: str, host: str, host_name: str) -> tuple[Page, Page]:
    ada = open_jupyter(hosts.context, server, f"{room}-ada", f"{room}-ada.ipynb")
    bob = open_jupyter(hosts.context, server, f"{room}-bob", f"{room}-bob.ipynb")
    two_people(ada, bob, host)
    doctor_round_trip(ada, host_name)
    return ada, bob


def close(*pages: Page) -> None:
    for page in pages:
        page.evaluate("async () => { await window.jupyterapp?.shell?.currentWidget?.sessionContext?.shutdown(); }")
        page.close()


@pytest.mark.e2e
@pytest.mark.timeout(BUDGET_S)
def test_jupyterlab_with_comms_over_subshells(hosts: Hosts) -> None:
    set_subshells(hosts.lab, "perCommTarget")  # the default, said out loud
    ada, bob = jupyter_two_people(hosts, hosts.lab, "lab-on", "lab-subshells-on", "JupyterLab")
    assert comms_over_subshells(ada) != "disabled"
    # Subshells hand the view's answer to the kernel while the cell awaits it.
    expect(awaited_doctor(ada)).to_contain_text("comms reach the kernel: a view answered")
    close(ada, bob)


@pytest.mark.e2e
@pytest.mark.timeout(BUDGET_S)
def test_jupyterlab_without_comms_over_subshells(hosts: Hosts) -> None:
    set_subshells(hosts.lab, "disabled")
    try:
        ada, bob = jupyter_two_people(hosts, hosts.lab, "lab-off", "lab-subshells-off", "JupyterLab")
        assert comms_over_subshells(ada) == "disabled"
        # Without subshells too: ipykernel reads the view's answer while the cell awaits.
        expect(awaited_doctor(ada)).to_contain_text("comms reach the kernel: a view answered")
        close(ada, bob)
    finally:
        set_subshells(hosts.lab, "perCommTarget")


@pytest.mark.e2e
@pytest.mark.timeout(BUDGET_S)
def test_notebook_7(hosts: Hosts) -> None:
    ada, bob = jupyter_two_people(hosts, hosts.notebook, "nb7", "notebook7", "Jupyter Notebook")
    expect(awaited_doctor(ada)).to_contain_text("comms reach the kernel: a view answered")
    close(ada, bob)


def run_marimo_notebook(page: Page) -> None:
    """`marimo edit` opens a notebook without running it: press "run all" once its kernel is ready
    (a press before that is lost, so press again until the widget shows)."""
    deadline = time.monotonic() + DOM_TIMEOUT_MS / 1000
    while True:
        page.get_by_test_id("run-button").last.click()
        try:
            widget(page).wait_for(timeout=5_000)
            return
        except PlaywrightTimeoutError:
            if time.monotonic() > deadline:
                raise


@pytest.mark.e2e
@pytest.mark.timeout(BUDGET_S)
def test_marimo_edit(hosts: Hosts) -> None:
    pages = []
    for user in ("ada", "bob"):
        page = hosts.context.new_page()
        page.goto(hosts.marimo.page_url(f"mo_{user}.py"))
        run_marimo_notebook(page)
        pages.append(page)
    ada, bob = pages
    two_people(ada, bob, "marimo")
    # The doctor: started with the notebook, its report shown by a later run (a button's cell).
    ada.get_by_role("button", name="doctor report").click()
    expect(ada.get_by_text("comms reach the kernel: a view answered", exact=False)).to_be_visible()
    expect(ada.get_by_text("the widget's tasks run on the kernel's asyncio loop", exact=False)).to_be_visible()
    expect(ada.get_by_text("in the browser: marimo", exact=False)).to_be_visible()
    for page in pages:
        page.close()


@pytest.mark.e2e
@pytest.mark.timeout(BUDGET_S)
def test_marimo_run_viewers_are_each_their_own_person(hosts: Hosts) -> None:
    """`marimo run`: one process, a session per viewer (threads): two people, neither replaced."""
    ada, bob = (hosts.context.new_page() for _ in range(2))
    ada.goto(hosts.marimo_run.page_url(user="Ada"))
    bob.goto(hosts.marimo_run.page_url(user="Bob"))
    two_people(ada, bob, "marimo-run")
    expect(ada.locator(".pluv-room")).to_have_attribute("data-state", "open")  # Bob did not replace Ada
    for page in (ada, bob):
        page.close()
