"""The browser's cost of one new message in a room of 10,000 messages.

One headless Chromium page on JupyterLab shows ``RoomWidget`` in a room seeded with ``--seed``
messages (the local server started as "nothing configured" does). Then, ``--runs`` times, another
person (a plain client in this process) appends one message, and the page measures:

* ``latency_ms`` — from the append (this process's wall clock, taken just before the
  transaction) to the new row in the page's DOM (``performance.timeOrigin + performance.now()``,
  the same machine clock), through server → kernel → comm → browser;
* ``script_ms`` — main-thread time the page spent that was not idle between the append and
  300 ms after the row appeared: the sum of the long tasks (PerformanceObserver ``longtask``,
  tasks of 50 ms or more) plus the longest gap a 4 ms timer probe saw, whichever is larger
  (a single task under 50 ms is still counted by the probe).

Medians over the runs. The same script measures any checkout: run it with that checkout's
package on ``PYTHONPATH`` from that checkout (the kernels import the checkout this file is in).

    python bench/big_room.py [--seed 10000] [--runs 20] [--out bench/baseline/widget-after.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import expect

import pluv_widget
from pluv_widget import crdt, create_client
from tests.e2e.lab import DOM_TIMEOUT_MS, environ, room_lab, widget_cells

try:  # where the launcher lives moved in issue 10; measure either checkout
    from pluv_widget.local import ensure_local_server
except ImportError:  # the checkout before it
    from pluv_widget.server.local import ensure_local_server  # type: ignore[no-redef]

ROOM = "bench-big-room"

# Installs the probes once: a long-task observer and a 4 ms timer that records the longest gap.
PROBES = """() => {
    window.__longtasks = [];
    new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) window.__longtasks.push([entry.startTime, entry.duration]);
    }).observe({ entryTypes: ["longtask"] });
    window.__ticks = [];
    const tick = () => { window.__ticks.push(performance.now()); setTimeout(tick, 4); };
    tick();
}"""

# Resolves window.__arrivedAt when a row with `text` is in the DOM. Looks only at the added nodes,
# last first (the new row, or the chunk holding it), so watching costs next to nothing.
WATCH_ROW = """(text) => {
    window.__arrivedAt = null;
    window.__ticks = [];
    const list = document.querySelector(".pluv-messages");
    const holds = (node) => {
        if (!(node instanceof Element)) return false;
        const row = node.matches(".pluv-message") ? node : node.lastElementChild;
        return row !== null && row.querySelector(".pluv-text")?.textContent === text;
    };
    const observer = new MutationObserver((records) => {
        for (const record of records) {
            const added = record.addedNodes;
            for (let i = added.length - 1; i >= 0; i--) {
                if (holds(added[i])) {
                    window.__arrivedAt = performance.timeOrigin + performance.now();
                    observer.disconnect();
                    return;
                }
            }
        }
    });
    observer.observe(list, { subtree: true, childList: true });
}"""

# Main-thread busy time in [start, end] (epoch ms): long tasks, or the longest timer gap.
BUSY = """([start, end]) => {
    const from = start - performance.timeOrigin, to = end - performance.timeOrigin;
    const long = window.__longtasks
        .filter(([at, duration]) => at + duration >= from && at <= to)
        .reduce((sum, [, duration]) => sum + duration, 0);
    const ticks = window.__ticks.filter((t) => t >= from && t <= to);
    let gap = 0;
    for (let i = 1; i < ticks.length; i++) gap = Math.max(gap, ticks[i] - ticks[i - 1] - 4);
    return { long, gap };
}"""


def message(n: int, text: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:16], "author": "Seeder", "color": "#4363d8", "text": text, "time": n}


def seed_and_poster(url: str, count: int) -> tuple[Any, Any]:
    """A plain client in the room; appends ``count`` messages in chunks, returns (client, room)."""
    client = create_client(ws_endpoint=url)
    room = client.create_room(
        ROOM,
        initial_presence={"name": "Seeder", "color": "#4363d8", "selection_id": None},
        initial_storage=crdt.doc(lambda: {"messages": crdt.array([])}),
    )
    asyncio.run_coroutine_threadsafe(client.enter(room), client.loop).result(60)
    while room.storage_state != "synced":
        time.sleep(0.05)

    def append_chunk(start: int, stop: int) -> None:
        messages = room.storage("messages")
        room.transact(lambda: messages.extend([crdt.map(message(n, f"seed {n}")) for n in range(start, stop)]))

    for start in range(0, count, 1000):
        client.call_soon(append_chunk, start, min(count, start + 1000))
    deadline = time.monotonic() + 120
    while len(room.storage_json()["messages"]) < count:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise RuntimeError("seeding timed out")
        time.sleep(0.1)
    time.sleep(2.0)  # let the last updates reach the server
    return client, room


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", help="also write the result (JSON) here")
    args = parser.parse_args()
    expect.set_options(timeout=DOM_TIMEOUT_MS * 3)
    notebooks = {"ada.ipynb": widget_cells(ROOM, "Ada")}
    latencies: list[float] = []
    busy: list[float] = []
    longtasks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, room_lab(Path(tmp), notebooks) as lab:
        with environ(PLUV_WIDGET_HOME=str(lab.home), PLUV_WIDGET_PORT=str(lab.port)):
            url = ensure_local_server()
        started = time.monotonic()
        # Not on this thread: Playwright's sync API keeps an asyncio loop here, which the client
        # would adopt as "the kernel's loop"; on a plain thread it runs its own loop in a thread.
        made: list[tuple[Any, Any]] = []
        seeder = threading.Thread(target=lambda: made.append(seed_and_poster(url, args.seed)))
        seeder.start()
        seeder.join()
        if not made:
            raise RuntimeError("seeding failed (see above)")
        client, room = made[0]
        seeded_s = time.monotonic() - started
        page = lab.open("ada", "ada.ipynb")
        started = time.monotonic()
        expect(page.locator(".pluv-message")).to_have_count(args.seed)
        first_render_s = time.monotonic() - started
        page.evaluate(PROBES)
        page.wait_for_timeout(1000)
        for run in range(args.runs + 1):  # run 0 warms up
            text = f"probe {run} {uuid.uuid4().hex[:6]}"
            page.evaluate(WATCH_ROW, text)
            posted_at = time.time() * 1000
            client.call_soon(
                lambda text=text: room.transact(lambda: room.storage("messages").append(crdt.map(message(0, text))))
            )
            page.wait_for_function("() => window.__arrivedAt !== null", timeout=DOM_TIMEOUT_MS)
            page.wait_for_timeout(300)
            arrived_at = page.evaluate("() => window.__arrivedAt")
            spent = page.evaluate(BUSY, [posted_at, arrived_at + 300])
            if run == 0:
                continue
            latencies.append(arrived_at - posted_at)
            longtasks.append(spent["long"])
            busy.append(max(spent["long"], spent["gap"]))
            page.wait_for_timeout(200)
        expect(page.locator(".pluv-message")).to_have_count(args.seed + args.runs + 1)
        client.leave(room)
    result = {
        "bench": "big_room",
        "seed_messages": args.seed,
        "runs": len(latencies),
        "latency_median_ms": round(statistics.median(latencies), 1),
        "latency_min_ms": round(min(latencies), 1),
        "latency_max_ms": round(max(latencies), 1),
        "script_median_ms": round(statistics.median(busy), 1),
        "longtask_median_ms": round(statistics.median(longtasks), 1),
        "latency_all_ms": [round(t, 1) for t in latencies],
        "script_all_ms": [round(t, 1) for t in busy],
        "first_render_s": round(first_render_s, 2),
        "seed_s": round(seeded_s, 2),
        "package": os.path.dirname(pluv_widget.__file__),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
