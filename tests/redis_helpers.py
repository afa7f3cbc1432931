"""Helpers for the Redis tests: a real ``redis-server`` on a free port, and server processes
sharing it (``python -m pluv_widget serve --redis ...``), each logging to its own file."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from pathlib import Path
from typing import Any

from helpers import DEADLINE_S, free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """A throwaway ``redis-server``: no RDB, no AOF, loopback only. ``restart()`` brings it back
    on the same port *empty* — a Redis that lost its data."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError(f"{REDIS_SERVER} not found: apt-get install redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()[-2000:]}")
            if self.ping():
                return self
            time.sleep(0.05)  # polling a port that is not open yet: nothing to await
        raise TimeoutError("redis-server did not start")

    def ping(self) -> bool:
        with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        """Kill it: whatever it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE_S)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()


class ServerProcess:
    """``python -m pluv_widget serve --redis URL`` on a free port, its log in a file."""

    def __init__(self, redis_url: str, directory: Path, *args: str, name: str = "server") -> None:
        self.port = free_port()
        self.args = ["--redis", redis_url, *args]
        self.log_path = directory / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", "pluv_widget", "serve", "--port", str(self.port), *self.args]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()[-3000:]}")
            with suppress(OSError, ValueError):
                self.health()
                return self
            time.sleep(0.05)  # polling a port that is not open yet: nothing to await
        raise TimeoutError(f"server did not start: {self.log()[-3000:]}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
            answer: dict[str, Any] = json.load(response)
            return answer

    async def until_health(self, condition: Any, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """Poll ``/health`` until ``condition(answer)``: a server's state has no event to await."""
        async with asyncio.timeout(timeout):
            while True:
                with suppress(OSError, ValueError):
                    answer = await asyncio.to_thread(self.health)
                    if condition(answer):
                        return answer
                await asyncio.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9: no goodbye, no cleanup."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(DEADLINE_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.kill()
