"""The "nothing configured" local server: started once, recognised by /health, stopped by pid."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DEADLINE_S, free_port

from pluv_widget import __version__, local
from pluv_widget.protocol import PROTOCOL_VERSION


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
    starter = "from pluv_widget.local import ensure_local_server; print(ensure_local_server())"
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


OLD_SERVER = """
import http.server, json, os, sys

port, protocol, connections = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
health = {"server": "pluv-widget", "protocol": protocol, "version": "0.0.1", "pid": os.getpid(),
          "connections": connections, "rooms": 0}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(health).encode())

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def start_old_server(tmp_path: Path, home: Path, protocol: int, connections: int) -> subprocess.Popen[bytes]:
    """An older pluv-widget's local server, as an upgrade finds it: a ``python -m pluv_widget serve``
    process this machine started (``server.json`` names it) whose /health says version 0.0.1."""
    package = tmp_path / "old" / "pluv_widget"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(OLD_SERVER)
    port = local.local_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pluv_widget", "serve", str(port), str(protocol), str(connections)],
        cwd=tmp_path / "old",
        env={"PYTHONPATH": str(tmp_path / "old"), "PATH": "/usr/bin:/bin"},
    )
    home.mkdir(parents=True, exist_ok=True)
    (home / "server.json").write_text(json.dumps({"pid": process.pid, "port": port, "url": f"ws://127.0.0.1:{port}"}))
    deadline = time.monotonic() + DEADLINE_S
    while local.local_status() is None:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return process


@pytest.mark.parametrize("protocol", [PROTOCOL_VERSION, PROTOCOL_VERSION - 1])
def test_an_idle_older_local_server_is_replaced(home: Path, tmp_path: Path, protocol: int) -> None:
    old = start_old_server(tmp_path, home, protocol, connections=0)
    try:
        assert local.ensure_local_server() == f"ws://127.0.0.1:{local.local_port()}"
        assert old.wait(timeout=DEADLINE_S) is not None  # stopped
        status = local.local_status()
        assert status is not None and status["health"]["version"] == __version__
        assert status["pid"] == status["health"]["pid"] != old.pid
    finally:
        old.kill()
        old.wait()


def test_a_busy_older_local_server_is_kept_when_it_speaks_our_protocol(home: Path, tmp_path: Path) -> None:
    old = start_old_server(tmp_path, home, PROTOCOL_VERSION, connections=2)
    try:
        assert local.ensure_local_server() == f"ws://127.0.0.1:{local.local_port()}"
        assert old.poll() is None  # its users keep their rooms
        status = local.local_status()
        assert status is not None and status["pid"] == old.pid and status["health"]["version"] == "0.0.1"
    finally:
        old.kill()
        old.wait()


def test_a_busy_older_local_server_of_another_protocol_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    old = start_old_server(tmp_path, home, PROTOCOL_VERSION - 1, connections=1)
    try:
        with pytest.raises(local.IncompatibleServerError, match=r"1 connection\(s\).*replaced by itself once"):
            local.ensure_local_server()
        assert old.poll() is None
    finally:
        old.kill()
        old.wait()
