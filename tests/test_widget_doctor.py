"""``RoomWidget.doctor()``, kernel side, against the real server on 127.0.0.1.

The browser half of the comm round trip runs in tests/e2e/test_hosts_e2e.py; here a "view" is a
thread that answers the widget's ping the way the ESM view does (on another thread, as comms over
subshells deliver it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pluv_widget.widget import RoomWidget
from pluv_widget.widget.checkup import Report, comm_finding, loop_finding, loop_probe


@pytest.fixture
def url(server_process: Callable[..., Any]) -> str:
    return str(server_process("--memory").url)


def answer_pings(widget: RoomWidget, **info: str) -> list[dict[str, Any]]:
    """Make ``widget``'s view a fake one that answers every ping from another thread."""
    sent: list[dict[str, Any]] = []
    original = widget.send

    def send(content: dict[str, Any], buffers: Any = None) -> None:
        sent.append(content)
        if content.get("type") == "doctor-ping":
            pong = {"type": "doctor-pong", "id": content["id"], **info}
            threading.Thread(target=lambda: asyncio.run(deliver(widget, pong))).start()
        else:
            original(content, buffers)

    widget.send = send  # type: ignore[method-assign]
    return sent


async def deliver(widget: RoomWidget, content: dict[str, Any]) -> None:
    widget._on_frontend_message(widget, content, [])


def test_without_a_view_it_says_so_and_the_rest_passes(url: str, widgets: list[RoomWidget]) -> None:
    widget = RoomWidget("doctor", user="Ada", url=url)
    widgets.append(widget)
    report = widget.doctor(timeout=1.0).result()
    assert isinstance(report, Report)
    text = str(report)
    assert f"the server at {url} answers" in text
    assert "the widget's tasks run on the client's own loop thread" in text  # a script: a private loop
    assert "no view of this widget is displayed" in text
    assert "display the widget" in text  # the fix, in words
    assert "in the kernel: anywidget " in text
    assert "in the browser" not in text
    assert [finding.what for finding in report.problems()] == [
        "no view of this widget is displayed (no view has talked to the kernel): the comm round trip was not checked"
    ]


def test_a_view_answers_the_ping(url: str, widgets: list[RoomWidget]) -> None:
    widget = RoomWidget("doctor", user="Ada", url=url)
    widgets.append(widget)
    sent = answer_pings(widget, host="JupyterLab 4.6.6", manager="a widget manager")
    report = widget.doctor().result()
    assert report.ok, str(report)
    text = str(report)
    assert "comms reach the kernel: a view answered the kernel's ping in" in text
    assert "in the browser: JupyterLab 4.6.6, a widget manager" in text
    assert [content["type"] for content in sent] == ["doctor-ping"]


def test_a_view_that_spoke_but_does_not_answer_means_lost_messages(url: str, widgets: list[RoomWidget]) -> None:
    widget = RoomWidget("doctor", user="Ada", url=url)
    widgets.append(widget)
    widget.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    asyncio.run(deliver(widget, {"type": "sync-request"}))  # a view rendered and spoke once
    report = widget.doctor(timeout=0.5).result()
    assert "did not answer the kernel's ping within" in str(report)
    assert "Kernel Comms over subshells" in str(report)
    assert not report.ok


async def test_in_a_kernel_the_tasks_run_on_its_loop_and_doctor_is_awaitable(
    url: str, widgets: list[RoomWidget]
) -> None:
    """A widget made where a loop runs (a notebook cell) borrows that loop; ``await w.doctor()``."""
    widget = RoomWidget("doctor", user="Ada", url=url)
    widgets.append(widget)
    assert widget.client.loop is asyncio.get_running_loop()
    answer_pings(widget, host="Notebook 7.6.5")
    report = await widget.doctor()
    assert report.ok, str(report)
    assert "the widget's tasks run on the kernel's asyncio loop" in str(report)
    await widget.client.aclose()  # leave, and wait until the server heard it, before this loop ends


def test_a_loop_that_does_not_run_tasks_is_reported_with_a_fix() -> None:
    stopped = asyncio.new_event_loop()  # never run: like a kernel blocked in a cell
    try:
        ran = loop_probe(lambda start: stopped.call_soon(start), stopped)
        finding = loop_finding(ran, private_thread=False, timeout=5.0)
        assert not finding.ok
        assert "did not run within 5 s" in finding.what
        assert "ipykernel 6 or newer" in finding.fix
        stopped.run_until_complete(asyncio.sleep(0.01))  # now it runs: the probe says so
        assert ran.result(timeout=1) is True
        assert loop_finding(ran, private_thread=False, timeout=5.0).ok
    finally:
        stopped.close()


def test_comm_finding_words() -> None:
    pending: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
    assert "no view" in comm_finding(pending, views_seen=False, timeout=5, started=0).what
    assert "lost" in comm_finding(pending, views_seen=True, timeout=5, started=0).what
    pending.set_result({"_received": 1.25})
    assert comm_finding(pending, views_seen=True, timeout=5, started=1.0).what.endswith("in 250 ms")


async def test_awaited_in_a_cell_where_the_answer_waits_for_the_cell_it_says_not_checked(
    url: str, widgets: list[RoomWidget]
) -> None:
    """marimo hands the kernel widget messages between runs: an awaited doctor cannot see the pong."""
    widget = RoomWidget("doctor", user="Ada", url=url)
    widgets.append(widget)
    widget.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    widget._on_frontend_message(widget, {"type": "sync-request"}, [])
    checkup = widget.doctor(timeout=0.3)
    report = await checkup
    assert "no view answered while this cell ran: not checked" in str(report)
    assert "mo.ui.run_button" in str(report)
    # The answer that comes after the cell still counts: a later report() shows it.
    widget._on_frontend_message(widget, {"type": "doctor-pong", "id": checkup.ping_id, "host": "marimo 0.25.2"}, [])
    await asyncio.sleep(0.05)
    assert checkup.report().ok, str(checkup.report())
    assert "in the browser: marimo 0.25.2" in str(checkup.report())
    await widget.client.aclose()


def test_a_view_that_renders_after_the_doctor_started_gets_the_ping_again(
    url: str, widgets: list[RoomWidget]
) -> None:
    widget = RoomWidget("doctor", user="Ada", url=url)
    widgets.append(widget)
    sent: list[dict[str, Any]] = []
    widget.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    checkup = widget.doctor(timeout=10)
    asyncio.run(deliver(widget, {"type": "sync-request"}))  # the view renders now
    deadline = time.monotonic() + 5
    while [c.get("id") for c in sent if c.get("type") == "doctor-ping"] != [checkup.ping_id] * 2:
        assert time.monotonic() < deadline, sent
        time.sleep(0.02)
