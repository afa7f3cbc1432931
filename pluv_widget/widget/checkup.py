"""``RoomWidget.doctor()``: what only the kernel and the browser can see, added to ``pluv-widget doctor``.

Three things break a widget that the command line cannot check:

* **the kernel's loop** — the client lives on the kernel's asyncio loop; if that loop does not
  run tasks between cells, nothing reaches the room or the view while the kernel is idle. A task
  is made on the client's loop when ``doctor()`` is called; it must run there while the cell
  awaits, or after the cell ends.
* **comms** — a ``doctor-ping`` message goes to every displayed view of the widget, and the first
  ``doctor-pong`` proves the round trip kernel → browser → kernel. With no view displayed (no
  view ever sent the kernel anything) it says so instead of failing.
* **versions** — anywidget and ipywidgets in the kernel, and the host (JupyterLab, Notebook,
  marimo…) and widget manager as the view reports them.

The command-line doctor's checks (:func:`pluv_widget.local.doctor.run`: the server, versions,
clock, open files, JupyterHub) run in a thread, with the widget's own URL.

In a notebook: ``await w.doctor()`` returns a :class:`Report` (shown as text); ``w.doctor()``
without ``await`` as a Jupyter cell's last line shows the report in the cell's output and fills
it in as the checks finish (they need the loop, which runs once the cell ends). marimo hands the
kernel the view's messages only between runs: keep ``checkup = w.doctor()`` and show
``checkup.report()`` from a later run. A ping sent before any view rendered is sent again to
each view that renders (its first ``sync-request``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from ..local import doctor as cli_doctor
from ..local.doctor import Finding

#: How long a check waits for the loop or for the view's answer.
CHECK_TIMEOUT_S = 5.0
PING, PONG = "doctor-ping", "doctor-pong"

_ids = itertools.count(1)


@dataclass(frozen=True)
class Report:
    """The findings, in words with their fixes; ``str()`` / the cell shows them."""

    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)

    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if not finding.ok]

    def __str__(self) -> str:
        return cli_doctor.report(self.findings)

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        printer.text(str(self))


def loop_probe(schedule: Callable[[Callable[[], None]], None],
               client_loop: asyncio.AbstractEventLoop) -> concurrent.futures.Future[bool]:
    """Make a task on the client's loop (through ``schedule``, thread-safe); the future says
    whether it ran there (``True``) — it stays pending while the loop does not run tasks."""
    ran: concurrent.futures.Future[bool] = concurrent.futures.Future()

    async def probe() -> None:
        await asyncio.sleep(0)  # a task that yields once: the loop runs it, not just call_soon
        if not ran.done():
            ran.set_result(asyncio.get_running_loop() is client_loop)

    def start() -> None:
        client_loop.create_task(probe())

    schedule(start)
    return ran


def loop_finding(ran: concurrent.futures.Future[bool], *, private_thread: bool, timeout: float,
                 waiting: bool = False) -> Finding:
    """The loop check in words (``ran`` as :func:`loop_probe` made it; ``waiting`` while its time
    is not up)."""
    where = ("the client's own loop thread (no loop ran where the widget was made)" if private_thread
             else "the kernel's asyncio loop")
    if not ran.done() and waiting:
        return Finding(False, f"still checking that {where} runs the widget's tasks (it runs them once "
                              "this cell ends)", "look at the report again in a moment")
    if not ran.done():
        return Finding(False, f"a task made on {where} did not run within {timeout:.0f} s: between cells "
                              "nothing reaches the room or the view",
                       "use a kernel whose asyncio loop runs between cells (ipykernel 6 or newer, marimo); "
                       "do not block the kernel (time.sleep, a busy loop) while the room should be live; "
                       "restart the kernel if a cell hangs")
    if not ran.result():
        return Finding(False, f"a task made on {where} ran on another loop",
                       "create the RoomWidget on the thread that runs the kernel's loop (a notebook cell), "
                       "not in a thread of your own")
    return Finding(True, f"the widget's tasks run on {where}, between and during cells")


def comm_finding(pong: concurrent.futures.Future[dict[str, Any]], *, views_seen: bool, timeout: float,
                 started: float, waiting: bool = False, in_cell: bool = False) -> Finding:
    """The comm round trip in words. ``in_cell``: the report is made inside a cell, on the kernel's
    loop — where most hosts hand the kernel the view's answer only after the cell."""
    if pong.done():
        answer = pong.result()
        took = float(answer.get("_received", time.monotonic())) - started
        return Finding(True, f"comms reach the kernel: a view answered the kernel's ping in {took * 1000:.0f} ms")
    if waiting:
        return Finding(False, "still waiting for a view to answer the kernel's ping (most hosts deliver it "
                              "once this cell ends)", "look at the report again in a moment")
    if in_cell:
        return Finding(False, "no view answered while this cell ran: not checked — some hosts (marimo) hand "
                              "the kernel widget messages only between cells, so an awaited doctor cannot "
                              "see the answer",
                       "run `w.doctor()` as a cell's last line, without await (Jupyter fills the report in "
                       "after the cell), or keep `d = w.doctor()` and show `d.report()` from a later run "
                       "(marimo: a cell behind a mo.ui.run_button)")
    if not views_seen:
        return Finding(False, "no view of this widget is displayed (no view has talked to the kernel): the comm "
                              "round trip was not checked",
                       "display the widget (put `w` last in a cell) and run the doctor again; if the view "
                       "shows but this persists, the browser's messages do not reach the kernel (below)")
    return Finding(False, f"a view is displayed but did not answer the kernel's ping within {timeout:.0f} s: "
                          "messages between the browser and the kernel are lost",
                   "reload the page (the view may be from before a kernel restart); check that the "
                   "widget manager (jupyterlab_widgets / ipywidgets 8, or your host's) is installed "
                   "and enabled; in JupyterLab try Settings → Kernel → 'Kernel Comms over subshells' "
                   "= Disabled, and report it")


def version_findings(pong: concurrent.futures.Future[dict[str, Any]]) -> list[Finding]:
    """anywidget / ipywidgets in the kernel, and what the view reported about its host."""
    import anywidget

    kernel = [f"anywidget {getattr(anywidget, '__version__', '?')}"]
    try:
        kernel.append(f"ipywidgets {metadata.version('ipywidgets')}")
    except metadata.PackageNotFoundError:  # marimo renders anywidgets without ipywidgets
        pass
    findings = [Finding(True, "in the kernel: " + ", ".join(kernel))]
    if pong.done():
        answer = pong.result()
        parts = [str(answer[key]) for key in ("host", "manager") if answer.get(key)]
        findings.append(Finding(True, "in the browser: " + (", ".join(parts) or "a host that does not say its "
                                                                              "name or widget manager")))
    return findings


@dataclass(repr=False)
class Checkup:
    """A running ``doctor()``: ``await`` it for its :class:`Report`, or let the cell display it."""

    widget: Any  # the RoomWidget (not imported: it imports us)
    timeout: float = CHECK_TIMEOUT_S
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        widget = self.widget
        client = widget.client
        self._expired = False  # set once a waiter gave up: what is missing then is reported as such
        self.ping_id = next(_ids)
        self.pong: concurrent.futures.Future[dict[str, Any]] = widget._expect_pong(self.ping_id)
        self.views_seen = bool(widget._views_seen)
        self.private_thread = client._loop.thread is not None
        self.ran = loop_probe(client.call_soon, client.loop)
        client.call_soon(widget.send, {"type": PING, "id": self.ping_id})
        self.cli: concurrent.futures.Future[list[Finding]] = concurrent.futures.Future()
        url = widget.url

        def command_line() -> None:
            try:
                self.cli.set_result(cli_doctor.run(url=url))
            except Exception as error:  # a doctor that raises helps nobody
                self.cli.set_result([Finding(False, f"the command-line checks failed: {error}",
                                             "run `pluv-widget doctor` in a terminal")])

        threading.Thread(target=command_line, name="pluv-widget-doctor", daemon=True).start()

    def __repr__(self) -> str:  # where no IPython display runs (marimo, a script)
        return (f"<pluv-widget doctor: checks running for up to {self.timeout:.0f} s; `await` it, or "
                f"show .report() later>")

    def _parts(self) -> list[concurrent.futures.Future[Any]]:
        return [self.ran, self.pong, self.cli]

    def report(self, *, in_cell: bool = False) -> Report:
        """The findings so far: a check whose time is not up says it is still running; one whose
        time is up says what is wrong (an answer that comes later still counts)."""
        waiting = not self._expired and time.monotonic() < self.started + self.timeout
        cli = self.cli.result() if self.cli.done() else [
            Finding(False, "still checking the server", "look at the report again in a moment")]
        return Report([
            *cli,
            loop_finding(self.ran, private_thread=self.private_thread, timeout=self.timeout, waiting=waiting),
            comm_finding(self.pong, views_seen=self.views_seen or bool(self.widget._views_seen),
                         timeout=self.timeout, started=self.started, waiting=waiting, in_cell=in_cell),
            *version_findings(self.pong),
        ])

    async def _wait(self) -> Report:
        parts = [asyncio.wrap_future(part) for part in self._parts()]
        await asyncio.wait(parts, timeout=max(0.0, self.started + self.timeout - time.monotonic()))
        self._expired = True
        in_cell = asyncio.get_running_loop() is self.widget.client.loop and self.private_thread is False
        return self.report(in_cell=in_cell)

    def __await__(self) -> Generator[Any, None, Report]:
        return self._wait().__await__()

    def result(self) -> Report:
        """From a thread that is not the client's loop (a script): wait, then report."""
        concurrent.futures.wait(self._parts(), timeout=max(0.0, self.started + self.timeout - time.monotonic()))
        self._expired = True
        return self.report()

    def _ipython_display_(self) -> None:
        """``w.doctor()`` as a cell's last line: shown now, completed in place once the loop ran."""
        from IPython.display import display

        handle = display(_Waiting(self), display_id=True)  # type: ignore[no-untyped-call]
        client = self.widget.client

        def finish() -> None:
            deadline = self.started + self.timeout

            def update() -> None:
                if handle is not None:
                    handle.update(self.report())

            for part in self._parts():
                try:
                    part.result(timeout=max(0.0, deadline - time.monotonic()))
                except concurrent.futures.TimeoutError:
                    pass
            self._expired = True
            client.call_soon(update)  # the kernel's thread sends the update

        threading.Thread(target=finish, name="pluv-widget-doctor-display", daemon=True).start()


@dataclass(frozen=True)
class _Waiting:
    checkup: Checkup

    def __str__(self) -> str:
        return (f"pluv-widget doctor: checking the server, the kernel's loop and the view "
                f"(this updates within {self.checkup.timeout:.0f} s)…")

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        printer.text(str(self))
