"""Two people, two notebooks, two kernels, one room — in real JupyterLab and Chromium.

Nothing is configured: the first kernel's ``RoomWidget`` starts the local server (in a temp
``PLUV_WIDGET_HOME``, on a free ``PLUV_WIDGET_PORT``), the second finds it; the fixture stops
it. JupyterLab runs with its default settings, so comm messages from the browser reach the
kernels over subshells. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from pluv_widget.local import ensure_local_server, stop_local_server

from .lab import DOM_TIMEOUT_MS, RoomLab, environ, room_lab, screenshot, shutdown_kernel, widget_cells

ROOM = "e2e-room"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoomLab]:
    expect.set_options(timeout=DOM_TIMEOUT_MS)
    notebooks = {"ada.ipynb": widget_cells(ROOM, "Ada"), "bob.ipynb": widget_cells(ROOM, "Bob")}
    with room_lab(tmp_path_factory.mktemp("e2e"), notebooks) as running:
        yield running


def other(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(".pluv-person:not(.pluv-me)", has_text=name)


def color_of(page: Page, selector: str) -> str:
    # The inline style, not the computed one: a node re-rendered meanwhile computes to "".
    return str(page.locator(selector).first.evaluate("el => el.style.getPropertyValue('--pluv-color')"))


@pytest.mark.e2e
def test_two_notebooks_share_a_room(lab: RoomLab) -> None:
    ada = lab.open("ada", "ada.ipynb")
    expect(ada.locator('.pluv-room[data-state="open"]')).to_be_visible()
    # Nothing was configured: Ada's kernel started the local server in our private home.
    info = json.loads((lab.home / "server.json").read_text())
    assert info["port"] == lab.port

    bob = lab.open("bob", "bob.ipynb")
    expect(bob.locator('.pluv-room[data-state="open"]')).to_be_visible()

    # Each page lists the other person.
    expect(other(ada, "Bob")).to_be_visible()
    expect(other(bob, "Ada")).to_be_visible()
    expect(ada.locator(".pluv-me", has_text="Ada (you)")).to_be_visible()

    # A message posted in Ada's page appears in Bob's.
    ada.locator(".pluv-input").fill("hello from Ada")
    ada.locator(".pluv-post").click()
    in_bob = bob.locator(".pluv-message", has_text="hello from Ada")
    expect(in_bob).to_be_visible()
    expect(in_bob.locator(".pluv-author")).to_have_text("Ada")

    # A selection clicked in Ada's page is shown in Bob's, with Ada's name and colour.
    ada.locator(".pluv-message", has_text="hello from Ada").click()
    expect(in_bob.locator(".pluv-selector", has_text="Ada")).to_be_visible()
    expect(in_bob).to_have_class(re.compile(r"\bpluv-selected\b"))
    ada_color = color_of(ada, ".pluv-me")
    assert color_of(bob, ".pluv-message.pluv-selected") == ada_color
    expect(ada.locator(".pluv-message.pluv-selected-by-me", has_text="hello from Ada")).to_be_visible()

    screenshot(ada, "e2e-ada")
    screenshot(bob, "e2e-bob")

    # Shutting Ada's kernel down removes her from Bob's list, and her selection with her.
    shutdown_kernel(ada)
    expect(other(bob, "Ada")).to_have_count(0)
    expect(in_bob.locator(".pluv-selector")).to_have_count(0)
    expect(in_bob).to_be_visible()  # the message stays: it is in the room's storage
    path: Path = screenshot(bob, "e2e-bob-after-ada-left")
    assert path.exists()

    # The server goes away: Bob's widget greys out and says so; it returns by itself, and the
    # message is still there (the local server keeps rooms in SQLite).
    with environ(PLUV_WIDGET_HOME=str(lab.home), PLUV_WIDGET_PORT=str(lab.port)):
        assert stop_local_server()
        expect(bob.locator('.pluv-room[data-state="unavailable"]')).to_be_visible()
        expect(bob.locator(".pluv-status")).to_have_text("reconnecting…")
        screenshot(bob, "e2e-bob-reconnecting")
        ensure_local_server()
    expect(bob.locator('.pluv-room[data-state="open"]')).to_be_visible()
    expect(bob.locator(".pluv-message", has_text="hello from Ada")).to_be_visible()
