"""js/classroom.js alone in Chromium, with a stand-in model: the teacher's and the student's views
drawn from a ``classroom`` view, the calls their buttons send, and "follow the teacher" in a
stand-in notebook DOM (JupyterLab's class names) — found by heading, by position when the heading
is not rendered, and shown as text when there is no notebook. No JupyterLab, no kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .lab import DOM_TIMEOUT_MS, widget_page

PAGE = """<!doctype html><html><head><link rel="stylesheet" href="/widget.css">
<style>.jp-WindowedPanel-outer { height: 400px; overflow: auto; } .jp-Cell { min-height: 120px; }</style>
</head><body>
<div class="jp-Notebook"><div class="jp-WindowedPanel-outer"><div class="jp-WindowedPanel-inner">
  <div class="jp-Cell jp-CodeCell" data-windowed-list-index="0"><div id="el"></div></div>
  __CELLS__
</div></div></div>
<div id="outside"></div>
<script type="module">
import widget from "/widget.js";
function mount(target, state) {
  const listeners = {};
  const sent = [];
  const model = {
    get: (key) => state[key],
    set: (key, value) => { state[key] = value; for (const f of listeners["change:" + key] ?? []) f(); },
    save_changes: () => {},
    on: (event, f) => (listeners[event] ??= []).push(f),
    off: () => {},
    send: (content) => sent.push(content),
  };
  widget.render({ model, el: target });
  return { model, sent };
}
const base = () => ({ room_name: "class", connection_state: "open", error: "", selection: null, others: [],
  classroom: {}, progress: {} });
window.__views = {
  inside: mount(document.getElementById("el"), { ...base(),
    me: { connection_id: "c1", id: "u-ada", role: "student", name: "Ada", color: "#e6194b", presence: {} } }),
  outside: mount(document.getElementById("outside"), { ...base(),
    me: { connection_id: "c2", id: "u-ms", role: "teacher", name: "Ms L", color: "#4363d8", presence: {} } }),
};
window.__ready = true;
</script></body></html>"""


def cells() -> str:
    parts = []
    for i in range(1, 40):
        if i % 10 == 0:
            parts.append(f'<div class="jp-Cell jp-MarkdownCell" data-windowed-list-index="{i}">'
                         f'<div class="jp-RenderedMarkdown"><h2>Part {i // 10}'
                         f'<a class="jp-InternalAnchorLink">¶</a></h2></div></div>')
        else:
            parts.append(f'<div class="jp-Cell jp-CodeCell" data-windowed-list-index="{i}"><pre>x = {i}</pre></div>')
    return "\n".join(parts)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    expect.set_options(timeout=DOM_TIMEOUT_MS)
    with widget_page(PAGE.replace("__CELLS__", cells())) as view:
        yield view


def set_state(page: Page, which: str, key: str, value: Any) -> None:
    page.evaluate("([which, key, value]) => window.__views[which].model.set(key, value)", [which, key, value])


def sent(page: Page, which: str) -> list[dict[str, Any]]:
    return list(page.evaluate("(which) => window.__views[which].sent.splice(0)", which))


POLL = {"id": "p1", "question": "Which sort is stable?", "options": ["quick", "merge", "heap"], "multiple": False,
        "anonymous": False, "state": "open", "revealed": False, "created": 1.0, "voters": 0}


@pytest.mark.e2e
def test_teacher_view_polls_queue_and_pulse(page: Page) -> None:
    teacher = page.locator("#outside")
    sent(page, "outside")
    expect(teacher.get_by_test_id("pluv-poll-form")).to_be_visible()
    teacher.get_by_test_id("pluv-poll-question").fill("Which sort is stable?")
    teacher.get_by_test_id("pluv-poll-options").fill("quick\nmerge\n\nheap")
    teacher.get_by_test_id("pluv-poll-ask").click()
    assert sent(page, "outside") == [{"type": "call", "procedure": "polls.create", "input": {
        "question": "Which sort is stable?", "options": ["quick", "merge", "heap"], "multiple": False,
        "anonymous": False}}]
    view = {"role": "teacher", "now": 1000.0, "present": 3, "hands": [], "pulse": {}, "status": [],
            "polls": [{**POLL, "counts": {"quick": 0, "merge": 0, "heap": 0}, "votes": {}, "names": {}}]}
    set_state(page, "outside", "classroom", view)
    card = teacher.get_by_test_id("pluv-poll")
    expect(card.get_by_test_id("pluv-voters")).to_have_text("0 voters of 3 present")
    for voters, counts in ((1, {"quick": 0, "merge": 1, "heap": 0}), (2, {"quick": 1, "merge": 1, "heap": 0})):
        polls = [{**POLL, "voters": voters, "counts": counts, "votes": {}, "names": {}}]
        set_state(page, "outside", "classroom", {**view, "polls": polls})
        expect(card.locator('[data-testid="pluv-bar"][data-option="merge"]')).to_have_attribute("data-count", "1")
    expect(card.get_by_test_id("pluv-voters")).to_have_text("2 voters of 3 present")
    widths = card.locator('[data-testid="pluv-bar"]').evaluate_all(
        "(bars) => bars.map((b) => Number(b.getAttribute('width')))")
    assert widths[0] == widths[1] > 0 and widths[2] == 0
    card.get_by_test_id("pluv-poll-reveal").click()
    card.get_by_test_id("pluv-poll-close").click()
    assert [m["procedure"] for m in sent(page, "outside")] == ["polls.reveal", "polls.close"]

    hands = [{"user": "u-ada", "name": "Ada", "note": "stuck on 3b", "since": 1000.0 - 125},
             {"user": "u-bob", "name": "Bob", "note": "", "since": 1000.0 - 3}]
    status = [{"user": "u-ada", "name": "Ada", "present": True, "sharing": True, "cells_run": 12,
               "last_error": "KeyError", "last_active": 990.0, "checkpoints": ["ex1"]},
              {"user": "u-bob", "name": "Bob", "present": False, "sharing": False, "cells_run": None,
               "last_error": None, "last_active": None, "checkpoints": []}]
    pulse = {"ex1": {"done": 1, "of": 3, "who": ["Ada"]}}
    set_state(page, "outside", "classroom", {**view, "hands": hands, "status": status, "pulse": pulse})
    items = teacher.get_by_test_id("pluv-queue-item")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("Ada")
    expect(items.first).to_contain_text("stuck on 3b")
    expect(items.first.locator(".pluv-wait")).to_have_text("2 min 05 s")
    expect(items.first.locator(".pluv-wait")).to_have_text("2 min 06 s")  # the clock ticks
    items.first.get_by_test_id("pluv-queue-done").click()
    assert sent(page, "outside") == [{"type": "call", "procedure": "hands.resolve", "input": {"user_id": "u-ada"}}]
    grid = teacher.get_by_test_id("pluv-status-grid")
    expect(grid.locator('tr[data-user="u-ada"]')).to_contain_text("KeyError")
    expect(grid.locator('tr[data-user="u-ada"]')).to_contain_text("12")
    expect(teacher.get_by_test_id("pluv-checkpoints").locator('[data-checkpoint="ex1"]')).to_contain_text("1/3")
    # Moderation: next to people and messages, in the teacher's view only.
    set_state(page, "outside", "others", [{"connection_id": "c1", "connection_ids": ["c1"], "id": "u-ada",
                                           "role": "student", "name": "Ada", "color": "#e6194b", "presence": {}}])
    teacher.get_by_test_id("pluv-user-mute").click()
    teacher.get_by_test_id("pluv-room-lock").click()
    assert [(m["procedure"], m["input"]) for m in sent(page, "outside")] == [
        ("users.mute", {"user_id": "u-ada"}), ("room.lock", {})]
    # The buttons show what the server's view says, not what was clicked: another teacher's
    # change shows too, and a refused click changes nothing.
    expect(teacher.get_by_test_id("pluv-user-mute")).to_have_text("mute")
    set_state(page, "outside", "classroom", {**view, "locked": True, "muted": ["u-ada"]})
    expect(teacher.get_by_test_id("pluv-user-mute")).to_have_text("unmute")
    expect(teacher.get_by_test_id("pluv-room-lock")).to_have_text("unlock room")
    teacher.get_by_test_id("pluv-room-lock").click()
    assert [m["procedure"] for m in sent(page, "outside")] == ["room.unlock"]


@pytest.mark.e2e
def test_student_view_votes_hand_pulse_and_follow(page: Page) -> None:
    student = page.locator("#el")
    sent(page, "inside")
    expect(student.get_by_test_id("pluv-poll-form")).to_be_hidden()
    expect(student.get_by_test_id("pluv-room-lock")).to_be_hidden()
    view = {"role": "student", "now": 1000.0, "polls": [{**POLL, "counts": None, "my_choice": []}],
            "hand": {"raised": False, "position": None, "queue_length": 0, "note": ""}, "checkpoints": [],
            "sharing": False}
    set_state(page, "inside", "classroom", view)
    notice = student.locator(".pluv-notice")
    expect(notice).to_be_hidden()
    set_state(page, "inside", "classroom", {**view, "locked": True, "muted": False})
    expect(notice).to_have_text("Your teacher locked the room: you can read, not post.")
    set_state(page, "inside", "classroom", {**view, "locked": False, "muted": True})
    expect(notice).to_have_text("Your teacher muted you: you can read, not post.")
    set_state(page, "inside", "classroom", view)
    expect(notice).to_be_hidden()
    student.locator('[data-testid="pluv-poll-option"][data-option="merge"]').click()
    assert sent(page, "inside") == [
        {"type": "call", "procedure": "polls.vote", "input": {"poll": "p1", "choice": "merge"}}]
    expect(student.get_by_test_id("pluv-histogram")).to_have_count(0)  # no counts before the reveal
    revealed = {**POLL, "revealed": True, "voters": 2, "counts": {"quick": 0, "merge": 2, "heap": 0},
                "my_choice": ["merge"]}
    set_state(page, "inside", "classroom", {**view, "polls": [revealed]})
    expect(student.locator('[data-testid="pluv-bar"][data-option="merge"]')).to_have_attribute("data-count", "2")
    merge = student.locator('[data-testid="pluv-poll-option"][data-option="merge"]')
    expect(merge).to_have_attribute("aria-pressed", "true")

    student.get_by_test_id("pluv-hand-note").fill("stuck on 3b")
    student.get_by_test_id("pluv-hand-raise").click()
    assert sent(page, "inside") == [{"type": "call", "procedure": "hands.raise", "input": {"note": "stuck on 3b"}}]
    set_state(page, "inside", "classroom", {**view, "hand": {"raised": True, "position": 2, "queue_length": 3,
                                                             "note": "stuck on 3b"}})
    expect(student.get_by_test_id("pluv-hand-position")).to_have_text("You are 2nd of 3 in the queue")
    expect(student.get_by_test_id("pluv-hand-raise")).to_be_hidden()

    # The pulse: exactly what would be shared, before anything is.
    set_state(page, "inside", "progress", {"sharing": False, "cells_run": 7, "last_error": "NameError",
                                           "last_active": None, "counting": True})
    preview = student.get_by_test_id("pluv-pulse-preview")
    expect(preview).to_contain_text("cells run 7")
    expect(preview).to_contain_text("NameError")
    student.get_by_test_id("pluv-pulse-share").check()
    assert sent(page, "inside") == [{"type": "share-progress", "share": True}]

    # Follow: the teacher is at "Part 3" (cell 30 of 40): jump there by heading.
    follow = student.get_by_test_id("pluv-follow")
    expect(follow).to_be_hidden()
    teacher = {"connection_id": "c9", "connection_ids": ["c9"], "id": "u-ms", "role": "teacher", "name": "Ms L",
               "color": "#4363d8", "presence": {}, "cell": {"heading": "Part 3", "index": 31, "count": 40}}
    set_state(page, "inside", "others", [teacher])
    expect(follow).to_contain_text("Ms L is at “Part 3” (cell 32 of 40)")
    heading = page.locator("h2", has_text="Part 3")
    assert not in_view(page, heading)
    student.get_by_test_id("pluv-follow-jump").click()
    expect(follow).to_have_attribute("data-jumped", "heading")
    assert in_view(page, heading)
    # Not rendered (a detached cell): scrolled by position, the heading shown as text.
    page.evaluate("() => document.querySelector('.jp-WindowedPanel-outer').scrollTop = 0")
    set_state(page, "inside", "others", [{**teacher, "cell": {"heading": "Part 9", "index": 20, "count": 40}}])
    follow.get_by_test_id("pluv-follow-jump").click()
    expect(follow).to_have_attribute("data-jumped", "position")
    expect(follow.get_by_test_id("pluv-follow-fallback")).to_contain_text("Part 9")
    assert page.evaluate("() => document.querySelector('.jp-WindowedPanel-outer').scrollTop") > 0
    # Follow: each new position is jumped to by itself.
    follow.get_by_test_id("pluv-follow-toggle").check()
    set_state(page, "inside", "others", [{**teacher, "cell": {"heading": "Part 1", "index": 10, "count": 40}}])
    expect(follow).to_have_attribute("data-jumped", "heading")
    assert in_view(page, page.locator("h2", has_text="Part 1"))


@pytest.mark.e2e
def test_outside_a_notebook_the_heading_is_shown(page: Page) -> None:
    # The teacher's own view is outside the notebook: it has no active cell to report...
    assert not any(m.get("type") == "cell" for m in sent(page, "outside"))
    # ... and a student view there (set its role to student) falls back to the heading's text.
    set_state(page, "outside", "me", {"connection_id": "c2", "id": "u-x", "role": "student", "name": "X",
                                       "color": "#000", "presence": {}})
    set_state(page, "outside", "classroom", {"role": "student", "now": 1.0, "polls": []})
    set_state(page, "outside", "others", [{"connection_id": "c9", "connection_ids": ["c9"], "id": "u-ms",
                                           "role": "teacher", "name": "Ms L", "color": "#4363d8", "presence": {},
                                           "cell": {"heading": "Part 2", "index": 20, "count": 40}}])
    follow = page.locator("#outside").get_by_test_id("pluv-follow")
    follow.get_by_test_id("pluv-follow-jump").click()
    expect(follow).to_have_attribute("data-jumped", "none")
    expect(follow.get_by_test_id("pluv-follow-fallback")).to_have_text("Go to “Part 2” in your notebook.")


@pytest.mark.e2e
def test_the_teacher_view_reports_its_active_cell(page: Page) -> None:
    set_state(page, "inside", "me", {"connection_id": "c1", "id": "u-ms", "role": "teacher", "name": "Ms L",
                                      "color": "#4363d8", "presence": {}})
    set_state(page, "inside", "classroom", {"role": "teacher", "now": 1.0, "polls": []})
    sent(page, "inside")
    page.evaluate("() => document.querySelector('[data-windowed-list-index=\"23\"]').classList.add('jp-mod-active')")
    page.wait_for_function("() => window.__views.inside.sent.some((m) => m.type === 'cell')")
    cells = [m for m in sent(page, "inside") if m.get("type") == "cell"]
    assert cells[-1] == {"type": "cell", "heading": "Part 2", "index": 23, "count": 40}


def in_view(page: Page, locator: Any) -> bool:
    return bool(locator.evaluate("""(el) => {
        const box = el.getBoundingClientRect();
        const outer = document.querySelector('.jp-WindowedPanel-outer').getBoundingClientRect();
        return box.top >= outer.top - 1 && box.top < outer.bottom;
    }"""))
