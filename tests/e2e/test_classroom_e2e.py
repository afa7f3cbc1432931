"""A lesson in two browsers: the teacher's notebook and a student's, two kernels, one class server
with teacher and student codes — in real JupyterLab (default settings) and Chromium.

The teacher asks a poll from the widget's form; the student answers by clicking, a second student
(a plain client in this process) answers too, and the teacher's histogram grows; the reveal
reaches the student's view. The student raises a hand with a note; the teacher sees it in the
queue and clicks "done". The teacher moves to a cell under "Part 3"; the student's "jump there"
scrolls their own notebook to that heading. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from helpers import ServerProcess
from playwright.sync_api import Locator, Page, expect

from pluv_widget import create_client

from .lab import DOM_TIMEOUT_MS, RoomLab, markdown, room_lab, screenshot

ROOM = "lesson"
SECRET = "s3cret-for-tests-only-32-bytes-long!"
HEADINGS = ["Part 1 — warm-up", "Part 2 — sorting", "Part 3 — merging"]


def lesson(name: str, code: str, url: str) -> list[str | dict[str, str]]:
    """The same lesson notebook for everyone, with their own widget cell on top."""
    cells: list[str | dict[str, str]] = [
        f"from pluv_widget import RoomWidget\n\nw = RoomWidget({ROOM!r}, user={name!r}, url={url!r}, "
        f"join_code={code!r})\nw",
        markdown("# Sorting, stably"),
    ]
    for part, heading in enumerate(HEADINGS):
        cells.append(markdown(f"## {heading}\n\nSome words about part {part + 1}."))
        cells += [f"# exercise {part + 1}.{n}\nx_{part}_{n} = {n}\n" + "\n" * 12 for n in range(8)]
    return cells


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("class-server")
    process = ServerProcess("--memory", "--secret", SECRET, "--join-code", "STUDENTS", "--teacher-code", "TEACH",
                            env={"PLUV_WIDGET_HOME": str(home)}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, server: ServerProcess) -> Iterator[RoomLab]:
    expect.set_options(timeout=DOM_TIMEOUT_MS)
    notebooks = {"teacher.ipynb": lesson("Ms L", "TEACH", server.url),
                 "student.ipynb": lesson("Ada", "STUDENTS", server.url)}
    with room_lab(tmp_path_factory.mktemp("class-e2e"), notebooks) as running:
        yield running


@pytest.fixture
def bob(server: ServerProcess) -> Iterator[Any]:
    """A second student, as another kernel's widget would be: a plain client of the room."""
    token = f"http://127.0.0.1:{server.port}/token?name=Bob&join_code=STUDENTS"
    # Made on a thread of its own: Playwright's sync API keeps its event loop "running" on this
    # one, and a client created here would adopt that loop (as it adopts a kernel's).
    with ThreadPoolExecutor(1) as pool:
        client = pool.submit(create_client, ws_endpoint=server.url, auth_endpoint=token).result()
    room = client.create_room(ROOM)
    asyncio.run_coroutine_threadsafe(client.enter(room), client.loop).result(DOM_TIMEOUT_MS / 1000)
    yield room
    client.leave(room)


def widget(page: Page) -> Locator:
    return page.locator(".pluv-room").first


def in_view(page: Page, text: str) -> bool:
    """Whether the heading with ``text`` is inside the notebook's visible area."""
    return bool(page.evaluate(
        """(text) => {
            const heading = [...document.querySelectorAll('.jp-RenderedMarkdown h2')]
                .find((h) => h.textContent.includes(text));
            if (!heading) return false;
            const box = heading.getBoundingClientRect();
            const panel = heading.closest('.jp-Notebook').getBoundingClientRect();
            return box.bottom > panel.top && box.top < panel.bottom;
        }""",
        text,
    ))


@pytest.mark.e2e
def test_a_lesson_poll_help_queue_and_follow(lab: RoomLab, bob: Any) -> None:
    teacher = lab.open("teacher", "teacher.ipynb")
    expect(teacher.locator('.pluv-room[data-state="open"][data-role="teacher"]')).to_be_visible()
    student = lab.open("student", "student.ipynb")
    expect(student.locator('.pluv-room[data-state="open"][data-role="student"]')).to_be_visible()
    mine, theirs = widget(teacher), widget(student)

    # -- a poll, asked from the teacher's form --------------------------------------------------
    expect(theirs.get_by_test_id("pluv-poll-form")).to_be_hidden()
    mine.get_by_test_id("pluv-poll-question").fill("Which sort is stable?")
    mine.get_by_test_id("pluv-poll-options").fill("quicksort\nmergesort\nheapsort")
    mine.get_by_test_id("pluv-poll-ask").click()
    card = mine.get_by_test_id("pluv-poll")
    expect(card.get_by_test_id("pluv-voters")).to_have_text("0 voters of 2 present")
    bar = card.locator('[data-testid="pluv-bar"][data-option="mergesort"]')
    expect(bar).to_have_attribute("data-count", "0")

    their_card = theirs.get_by_test_id("pluv-poll")
    expect(their_card).to_contain_text("Which sort is stable?")
    expect(their_card.get_by_test_id("pluv-histogram")).to_have_count(0)  # no counts before the reveal
    their_card.locator('[data-testid="pluv-poll-option"][data-option="mergesort"]').click()
    expect(bar).to_have_attribute("data-count", "1")
    width_one = float(bar.get_attribute("width") or 0)
    poll_id = card.get_attribute("data-poll-id")
    bob.call("polls.vote", {"poll": poll_id, "choice": "mergesort"}).result(30)
    expect(bar).to_have_attribute("data-count", "2")
    expect(card.get_by_test_id("pluv-voters")).to_have_text("2 voters of 2 present")
    assert width_one > 0  # the bar is drawn from the first vote (and scaled to the largest)
    expect(their_card.locator('[data-testid="pluv-poll-option"][data-option="mergesort"]')).to_have_attribute(
        "aria-pressed", "true")
    screenshot(teacher, "classroom-teacher-poll")

    card.get_by_test_id("pluv-poll-reveal").click()
    their_bar = their_card.locator('[data-testid="pluv-bar"][data-option="mergesort"]')
    expect(their_bar).to_have_attribute("data-count", "2")
    expect(their_card).to_have_attribute("data-revealed", "true")
    screenshot(student, "classroom-student-revealed")

    # -- the help queue ---------------------------------------------------------------------------
    theirs.get_by_test_id("pluv-hand-note").fill("stuck on 3b")
    theirs.get_by_test_id("pluv-hand-raise").click()
    expect(theirs.get_by_test_id("pluv-hand-position")).to_have_text("You are 1st of 1 in the queue")
    item = mine.get_by_test_id("pluv-queue-item")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("Ada")
    expect(item).to_contain_text("stuck on 3b")
    expect(item.locator(".pluv-wait")).to_have_text(re.compile(r"^\d+ s$"))
    screenshot(teacher, "classroom-teacher-queue")
    item.get_by_test_id("pluv-queue-done").click()
    expect(item).to_have_count(0)
    expect(theirs.get_by_test_id("pluv-hand-raise")).to_be_visible()
    expect(theirs.get_by_test_id("pluv-hand-position")).to_have_text("")

    # -- follow the teacher -------------------------------------------------------------------------
    # The teacher moves to an exercise in part 3 (as a click on that cell would).
    target = 2 + 2 * 9 + 3  # the widget, the title, parts 1 and 2 (heading + 8 cells each), part 3's heading, 2 cells
    teacher.evaluate("(index) => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = index; }", target)
    expect(mine.get_by_test_id("pluv-follow-me")).to_contain_text(HEADINGS[2])
    follow = theirs.get_by_test_id("pluv-follow")
    expect(follow).to_contain_text(f"Ms L is at “{HEADINGS[2]}”")
    assert not in_view(student, HEADINGS[2])
    follow.get_by_test_id("pluv-follow-jump").click()
    expect(follow).to_have_attribute("data-jumped", "heading")
    assert in_view(student, HEADINGS[2])
    screenshot(student, "classroom-student-followed")
