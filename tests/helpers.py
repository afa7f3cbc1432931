"""Test helpers: event-driven waits (a condition is re-checked whenever the room reports a change),
free ports, and the server as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from pluv_widget import PluvRoom
from pluv_widget.server.room_server import RoomServer

DEADLINE_S = 20.0  # generous: the machine is small and shared


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def until(room: PluvRoom, condition: Callable[[], Any], timeout: float = DEADLINE_S) -> None:
    """Wait until ``condition()`` is true, re-checking it whenever ``room`` reports anything."""
    changed = asyncio.Event()
    loop = asyncio.get_running_loop()
    unsubscribe = room.subscribe.all(lambda _topic: loop.call_soon_threadsafe(changed.set))
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()


async def until_storage(room: PluvRoom, key: str, condition: Callable[[Any], Any], timeout: float = DEADLINE_S) -> Any:
    """Wait until ``condition(json of storage root key)`` holds; returns that JSON."""
    await until(room, lambda: room.storage_state != "loading", timeout)
    changed = asyncio.Event()
    loop = asyncio.get_running_loop()
    unsubscribe = room.subscribe.storage(key, lambda _value: loop.call_soon_threadsafe(changed.set))
    try:
        async with asyncio.timeout(timeout):
            while not condition(room.storage_json()[key]):  # type: ignore[index]
                await changed.wait()
                changed.clear()
        return room.storage_json()[key]  # type: ignore[index]
    finally:
        unsubscribe()


def url_of(server: RoomServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


class ServerProcess:
    """``python -m pluv_widget serve`` as a real subprocess (for restarts, SIGTERM and kill -9)."""

    def __init__(self, *args: str, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = tempfile.NamedTemporaryFile(prefix="pluv-server-", suffix=".log", delete=False)

    @property
    def log(self) -> bytes:
        """Everything the server printed so far (a file, so a chatty server never blocks on a pipe)."""
        return Path(self.log_file.name).read_bytes()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", "pluv_widget", "serve", "--port", str(self.port), *self.args]
        self.process = subprocess.Popen(command, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.decode()}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)  # polling a port that is not open yet: nothing to await
        raise TimeoutError("server did not start")

    def signal(self, sig: int) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(DEADLINE_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)




def until_widget(widget: Any, condition: Callable[[], Any], timeout: float = DEADLINE_S) -> None:
    """Wait (in the test's thread) until ``condition()`` holds, re-checking whenever one of the
    widget's traitlets changes, and now and then: a room can change alone."""
    import threading

    import traitlets

    changed = threading.Event()

    def notice(_change: Any) -> None:
        changed.set()

    widget.observe(notice, names=traitlets.All)
    try:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                shown = widget.get_state(["connection_state", "error", "me", "others", "messages", "classroom"])
                raise AssertionError(f"timed out; the widget shows {shown}")
            changed.wait(min(remaining, 0.5))
            changed.clear()
    finally:
        widget.unobserve(notice, names=traitlets.All)
