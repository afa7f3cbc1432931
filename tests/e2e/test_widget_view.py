"""js/widget.js alone in Chromium, with a stand-in model: messages applied in place from deltas.

The view gets a snapshot, then many random deltas (inserts anywhere, deletes, edits) as the
kernel sends them (:mod:`pluv_widget.widget.feed`); after each, its rows must be the list the
kernel holds, in order, keyed by id. No JupyterLab, no kernel: a second or two.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page

from .lab import widget_page

PAGE = """<!doctype html><html><head><link rel="stylesheet" href="/widget.css"></head><body>
<div id="el"></div>
<script type="module">
import widget from "/widget.js";
const listeners = {};
const state = {
  room_name: "r", connection_state: "open", error: "", selection: null, others: [],
  me: { connection_id: "c1", name: "Ada", color: "#e6194b", presence: { name: "Ada", selection_id: null } },
};
window.__sent = [];
const model = {
  get: (key) => state[key],
  set: (key, value) => { state[key] = value; for (const f of listeners["change:" + key] ?? []) f(); },
  save_changes: () => window.__sent.push({ saved: { selection: state.selection } }),
  on: (event, f) => (listeners[event] ??= []).push(f),
  off: () => {},
  send: (content) => window.__sent.push(content),
};
window.__emit = (content) => { for (const f of listeners["msg:custom"] ?? []) f(content); };
window.__set = (key, value) => model.set(key, value);
widget.render({ model, el: document.getElementById("el") });
window.__ready = true;
</script></body></html>"""


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with widget_page(PAGE) as view:
        yield view


def shown_ids(page: Page) -> list[str]:
    return list(page.evaluate("() => [...document.querySelectorAll('.pluv-message')].map((row) => row.dataset.id)"))


def message(n: int) -> dict[str, Any]:
    return {"id": f"m{n}", "author": "Bob", "color": "#4363d8", "text": f"text {n}", "time": 0}


@pytest.mark.e2e
def test_the_view_applies_deltas_in_place(page: Page) -> None:
    assert page.evaluate("() => window.__sent")[0] == {"type": "sync-request"}  # asked when rendered
    rng = random.Random(10)
    items = [message(n) for n in range(450)]
    page.evaluate("(m) => window.__emit({type: 'messages-snapshot', version: 1, messages: m})", items)
    assert shown_ids(page) == [m["id"] for m in items]
    page.evaluate("() => document.querySelector('.pluv-message[data-id=\"m7\"]').dataset.keep = 'yes'")
    counter, version = 1000, 1
    for _ in range(60):
        ops: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(["insert", "insert", "delete", "set"]) if items else "insert"
            if kind == "insert":
                index = rng.choice([len(items), rng.randint(0, len(items))])
                new = [message(counter + k) for k in range(rng.choice([1, 1, 3, 250]))]
                counter += len(new)
                items[index:index] = new
                ops.append({"index": index, "insert": new})
            elif kind == "delete":
                index = rng.randrange(len(items))
                count = rng.randint(1, 120)
                del items[index : index + count]
                ops.append({"index": index, "delete": count})
            else:
                index = rng.randrange(len(items))
                items[index] = {**items[index], "text": "edited"}
                ops.append({"index": index, "set": items[index]})
        delta = {"type": "messages-delta", "base": version, "version": version + 1, "ops": ops}
        version += 1
        page.evaluate("(d) => window.__emit(d)", delta)
        page.evaluate("(d) => window.__emit(d)", delta)  # a duplicate is ignored
        assert shown_ids(page) == [m["id"] for m in items]
    texts = page.evaluate("() => [...document.querySelectorAll('.pluv-text')].map((node) => node.textContent)")
    assert texts == [m["text"] for m in items]
    if any(m["id"] == "m7" for m in items):  # rows are kept in place, not re-rendered
        assert page.evaluate("() => document.querySelector('.pluv-message[data-id=\"m7\"]').dataset.keep") == "yes"
    # A gap (a delta on top of a version the view does not hold) asks for a snapshot.
    page.evaluate("() => { window.__sent = []; }")
    gap = {"type": "messages-delta", "base": version + 5, "version": version + 6, "ops": []}
    page.evaluate("(d) => window.__emit(d)", gap)
    assert page.evaluate("() => window.__sent") == [{"type": "sync-request"}]


@pytest.mark.e2e
def test_a_click_sets_the_selection_traitlet_itself(page: Page) -> None:
    items = [message(n) for n in range(3)]
    page.evaluate("(m) => window.__emit({type: 'messages-snapshot', version: 100, messages: m})", items)
    page.evaluate("() => { window.__sent = []; }")
    page.locator('.pluv-message[data-id="m1"]').click()
    assert page.evaluate("() => window.__sent") == [{"saved": {"selection": "m1"}}]
    row = page.locator('.pluv-message[data-id="m1"]')
    assert row.get_attribute("data-selected-by") == "you"
    page.evaluate(
        """() => window.__set("others", [{connection_id: "c2", connection_ids: ["c2"], name: "Bob",
            color: "#4363d8", presence: {name: "Bob", selection_id: "m1"}}])"""
    )
    assert row.get_attribute("data-selected-by") == "you,Bob"
    page.locator('.pluv-message[data-id="m1"]').click()  # clicking my selection again clears it
    assert page.evaluate("() => window.__sent")[-1] == {"saved": {"selection": None}}
    assert row.get_attribute("data-selected-by") == "Bob"
