"""``pluv-widget doctor`` as a user runs it: a subprocess against a real server, a dead address,
a server of another protocol, and a JupyterHub server whose hub gives kernels no service."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pluv_widget.protocol import SERVER_NAME


async def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("PLUV_WIDGET", "JUPYTERHUB"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pluv_widget", "doctor", *args, env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, output.decode()


async def test_a_healthy_server_passes(server: Any) -> None:
    code, output = await doctor("--url", f"ws://127.0.0.1:{server.port}")
    assert code == 0, output
    assert "answers: pluv-widget" in output and "clock within" in output and "no problem found" in output


async def test_a_dead_address_fails_with_the_fix_in_words() -> None:
    code, output = await doctor(env={"PLUV_WIDGET_URL": "ws://127.0.0.1:9"})
    assert code == 1
    assert "does not answer" in output and "fix: check the address in PLUV_WIDGET_URL" in output


@contextmanager
def old_server(health: dict[str, Any]) -> Iterator[str]:
    """A server of another pluv-widget version: only its /health answer matters here."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(health).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"ws://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_another_protocol_and_a_skewed_clock_are_problems() -> None:
    import time

    health = {"server": SERVER_NAME, "protocol": 1, "version": "0.0.1", "rooms": 0, "connections": 0,
              "time": time.time() - 600}
    with old_server(health) as url:
        code, output = await doctor("--url", url)
    assert code == 1
    assert "speaks protocol 1" in output and "pip install 'pluv-widget==0.0.1'" in output
    assert "off the server's" in output and "NTP" in output


async def test_a_hub_server_without_the_service_is_a_problem() -> None:
    code, output = await doctor(env={"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api"})
    assert code == 1
    assert "students would not see each other" in output and "docs/jupyterhub_config.py" in output
