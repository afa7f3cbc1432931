"""Click → outline: from a click on a message in page A to its outline (with A's name) in page B.

Two headless Chromium pages on one JupyterLab, two notebooks, two kernels, the local server
started by the widget ("nothing configured"); the path measured is the whole product:
browser A → comm → kernel A → room server → kernel B → comm → browser B. Both timestamps are
taken inside the browser (``performance.timeOrigin + performance.now()``, one machine clock),
so Playwright's own round trips are not counted.

    python bench/click_to_outline.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import Page, expect

from tests.e2e.lab import DOM_TIMEOUT_MS, room_lab, screenshot, widget_cells

ROOM = "bench-click"

STAMP_CLICKS = """() => document.addEventListener(
    "click", () => { window.__clickAt = performance.timeOrigin + performance.now(); }, { capture: true })"""

# Resolves window.__outlineAt the moment message `id` shows `name` among its selectors.
WATCH_OUTLINE = """([id, name]) => {
    window.__outlineAt = null;
    const shown = () => {
        const row = document.querySelector(`.pluv-message[data-id="${id}"]`);
        return row !== null && (row.dataset.selectedBy || "").split(",").includes(name);
    };
    const observer = new MutationObserver(() => {
        if (shown()) { window.__outlineAt = performance.timeOrigin + performance.now(); observer.disconnect(); }
    });
    observer.observe(document.body, { subtree: true, childList: true, attributes: true });
}"""


def measure(a: Page, b: Page, ids: list[str], runs: int) -> list[float]:
    a.evaluate(STAMP_CLICKS)
    times = []
    for run in range(runs):
        target = ids[run % len(ids)]  # alternate: clicking one's own selection again would clear it
        b.evaluate(WATCH_OUTLINE, [target, "Ada"])
        a.locator(f'.pluv-message[data-id="{target}"]').click()
        b.wait_for_function("() => window.__outlineAt !== null", timeout=DOM_TIMEOUT_MS)
        clicked = a.evaluate("() => window.__clickAt")
        outlined = b.evaluate("() => window.__outlineAt")
        times.append(outlined - clicked)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    expect.set_options(timeout=DOM_TIMEOUT_MS)
    notebooks = {"ada.ipynb": widget_cells(ROOM, "Ada"), "bob.ipynb": widget_cells(ROOM, "Bob")}
    with tempfile.TemporaryDirectory() as tmp, room_lab(Path(tmp), notebooks) as lab:
        a, b = lab.open("ada", "ada.ipynb"), lab.open("bob", "bob.ipynb")
        for page, other in ((a, "Bob"), (b, "Ada")):
            expect(page.locator(".pluv-person:not(.pluv-me)", has_text=other)).to_be_visible()
        for text in ("first", "second"):
            a.locator(".pluv-input").fill(text)
            a.locator(".pluv-post").click()
            expect(b.locator(".pluv-message", has_text=text)).to_be_visible()
        ids = [str(b.locator(".pluv-message", has_text=text).get_attribute("data-id")) for text in ("first", "second")]
        times = measure(a, b, ids, args.runs)
        shot = screenshot(b, "bench-click-to-outline-b")
    result = {
        "runs": len(times),
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "all_ms": [round(t, 1) for t in times],
        "screenshot": str(shot),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
