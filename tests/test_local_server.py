"""The "nothing configured" local server: started once, recognised by /health, stopped by pid."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DEADLINE_S, free_port

from pluv_widget.server import local


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PLUV_WIDGET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PLUV_WIDGET_PORT", str(free_port()))
    yield tmp_path / "home"
    local.stop_local_server()


def fake_server(body: bytes, status: int = 200) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_started_once_by_concurrent_kernels_then_status_and_stop(home: Path) -> None:
    starter = "from pluv_widget.server.local import ensure_local_server; print(ensure_local_server())"
    kernels = [subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE) for _ in range(3)]
    urls = {kernel.communicate(timeout=DEADLINE_S * 3)[0].decode().strip() for kernel in kernels}
    assert urls == {f"ws://127.0.0.1:{local.local_port()}"}
    assert (home / "server.log").read_text().count("starting:") == 1

    status = local.local_status()
    assert status is not None
    info = json.loads((home / "server.json").read_text())
    assert status["pid"] == info["pid"] == status["health"]["pid"]  # it outlived the kernels that started it
    assert status["health"]["server"] == "pluv-widget" and status["health"]["storage"] == "SqlitePersistence"
    assert status["log"] == str(home / "server.log") and status["data_dir"] == str(home / "data")
    assert local.ensure_local_server() == next(iter(urls))  # found, not started again

    assert local.stop_local_server()
    assert local.local_status() is None
    assert not (home / "server.json").exists()
    assert not local.stop_local_server()


def test_a_port_taken_by_something_else_is_an_error(home: Path) -> None:
    server = fake_server(b"<html>hello</html>", status=404)
    try:
        with pytest.raises(local.PortTakenError, match="not a pluv-widget server"):
            local.ensure_local_server(server.server_port)
    finally:
        server.shutdown()
    server = fake_server(json.dumps({"server": "something", "protocol": 1}).encode())
    try:
        with pytest.raises(local.PortTakenError):
            local.ensure_local_server(server.server_port)
    finally:
        server.shutdown()


def test_an_incompatible_protocol_version_is_an_error(home: Path) -> None:
    server = fake_server(json.dumps({"server": "pluv-widget", "protocol": 99, "version": "9.0"}).encode())
    try:
        with pytest.raises(local.IncompatibleServerError, match="protocol 99"):
            local.ensure_local_server(server.server_port)
    finally:
        server.shutdown()


def test_a_server_that_fails_to_start_says_why(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # "python" exits at once
    with pytest.raises(local.LocalServerError, match=r"exited with code 1 while starting(.|\n)*starting: /bin/false"):
        local.ensure_local_server()
    monkeypatch.setattr(sys, "executable", str(home / "no-such-python"))
    with pytest.raises(local.LocalServerError, match="cannot start"):
        local.ensure_local_server()
