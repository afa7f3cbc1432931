"""A page in Chromium with a ``<textarea>`` bound to a room's ``Y.Text`` through a stock y-websocket
provider at ``/yjs/<room>``, typing together with a pluv client; the page shows the pluv user from
awareness. yjs, y-websocket and lib0 are served unbundled from tests/interop/node_modules (a
loopback HTTP server in a thread) with an import map (their package ``exports``, browser
conditions first): no build step."""

from __future__ import annotations

import functools
import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import until_storage

from pluv_widget import crdt

from .lab import chromium_page

MODULES = Path(__file__).resolve().parents[1] / "interop" / "node_modules"
PACKAGES = ("yjs", "y-websocket", "y-protocols", "lib0", "isomorphic.js")
CONDITIONS = ("browser", "module", "import", "default")
STORAGE = crdt.doc(lambda: {"notes": crdt.text("")})

PAGE = """<!doctype html><html><head><script type="importmap">%s</script></head><body>
<textarea id="notes" rows="6" cols="60"></textarea><ul id="people"></ul>
<script type="module">
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
const params = new URLSearchParams(location.search);
const doc = new Y.Doc();
const provider = new WebsocketProvider(params.get("server"), params.get("room"), doc, { params: { name: "Page" } });
provider.awareness.setLocalStateField("user", { name: "Page", color: "#3bc9db" });
const text = doc.getText("notes");
const area = document.getElementById("notes");
window.__closes = 0;
provider.on("connection-close", () => window.__closes++);
// The binding: a local edit becomes the Y.Text change that turns the old value into the new one.
area.addEventListener("input", () => {
  const before = text.toString(), after = area.value;
  let start = 0;
  while (start < before.length && start < after.length && before[start] === after[start]) start++;
  let end = 0;
  while (end < before.length - start && end < after.length - start
         && before[before.length - 1 - end] === after[after.length - 1 - end]) end++;
  doc.transact(() => {
    text.delete(start, before.length - start - end);
    text.insert(start, after.slice(start, after.length - end));
  });
});
text.observe((event) => { if (!event.transaction.local) area.value = text.toString(); });
provider.awareness.on("change", () => {
  const names = [...provider.awareness.getStates()].filter(([id]) => id !== doc.clientID)
    .map(([, state]) => state.user?.name ?? "?");
  document.getElementById("people").innerHTML = names.map((name) => `<li>${name}</li>`).join("");
});
provider.on("sync", (synced) => { window.__synced = synced; });
</script></body></html>"""


def _target(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for condition in CONDITIONS:
            if condition in value:
                found = _target(value[condition])
                if found is not None:
                    return found
    return None


def import_map() -> dict[str, Any]:
    """Every ESM entry of the packages, as their ``exports`` say, under ``/node_modules/``."""
    imports: dict[str, str] = {}
    for package in PACKAGES:
        manifest = json.loads((MODULES / package / "package.json").read_text())
        exports = manifest.get("exports") or {".": manifest.get("module") or manifest["main"]}
        for key, value in exports.items():
            target = _target(value)
            if target is None or target.endswith((".cjs", ".d.ts", ".json")):
                continue
            name = package if key == "." else package + key[1:]
            imports[name] = f"/node_modules/{package}/{target.removeprefix('./')}"
    return {"imports": imports}


@contextmanager
def static_site(page_html: str) -> Iterator[str]:
    """The page and the node modules over HTTP on 127.0.0.1, in a thread; yields the base URL. (Not
    Playwright's routing: Chromium's local network access checks block a page that does not come
    from a local address, even a routed one, from opening loopback sockets.)"""
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "index.html").write_text(page_html)
        (Path(root) / "node_modules").symlink_to(MODULES)
        handler = functools.partial(_QuietHandler, directory=root)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript"}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.mark.e2e
async def test_a_yjs_bound_textarea_types_together_with_a_pluv_client(server: Any, make_client: Any) -> None:
    pluv = await make_client(server, initial_storage=STORAGE).enter("pad")
    pluv.update_my_presence({"cell": 2})
    page_html = PAGE % json.dumps(import_map())

    with static_site(page_html) as site:
        async with chromium_page() as (page, problems):
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            await page.goto(f"{site}/?server=ws://127.0.0.1:{server.port}/yjs&room=pad")
            try:
                await page.wait_for_function("() => window.__synced === true", timeout=20_000)
            except Exception:
                raise AssertionError(f"the page did not sync: {problems}") from None
            area = page.locator("#notes")
            await area.click()
            await page.keyboard.type("typed in Chromium")
            await until_storage(pluv, "notes", lambda text: text == "typed in Chromium")
            pluv.storage("notes").insert(0, ">> ")
            await page.wait_for_function(
                "() => document.getElementById('notes').value === '>> typed in Chromium'", timeout=20_000)
            await page.keyboard.press("End")
            await page.keyboard.type("!")
            await until_storage(pluv, "notes", lambda text: text == ">> typed in Chromium!")
            await page.wait_for_function(
                "() => document.getElementById('people').textContent === 'guest'", timeout=20_000)
            page_user = next(u for u in pluv.others)
            assert page_user.presence["user"] == {"name": "Page", "color": "#3bc9db"}
            assert await page.evaluate("() => window.__closes") == 0
