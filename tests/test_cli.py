"""``pluv-widget serve`` as users run it: --app, /health, auth flags, clear errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from helpers import until

from pluv_widget import RoomEvent
from pluv_widget.protocol import PROTOCOL_VERSION

APP = """
from pydantic import BaseModel
from pluv_widget import create_io

class Shout(BaseModel):
    text: str

io = create_io()

@io.procedure("shout", input=Shout)
def shout(data, ctx):
    return {"shouted": {"text": data.text.upper()}}
"""


async def health(url: str) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        with urllib.request.urlopen(url.replace("ws://", "http://") + "/health") as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    return await asyncio.to_thread(get)


async def test_serve_loads_an_app_with_its_procedures(server_process: Any, make_client: Any, tmp_path: Path) -> None:
    (tmp_path / "my_app.py").write_text(APP)
    process = server_process("--app", f"{tmp_path / 'my_app.py'}:io", "--memory")
    a = await make_client(process.url).enter("r")
    b = await make_client(process.url).enter("r")
    heard: list[RoomEvent] = []
    b.subscribe.event("shouted", heard.append)
    a.broadcast("shout", {"text": "hello"})
    await until(b, lambda: heard)
    assert heard[0].data == {"text": "HELLO"}
    answer = await health(process.url)
    assert answer["server"] == "pluv-widget" and answer["protocol"] == PROTOCOL_VERSION
    assert answer["rooms"] == 1 and answer["connections"] == 2 and answer["auth"] is False


async def test_serve_with_a_secret_and_join_code_hands_out_tokens(server_process: Any, make_client: Any) -> None:
    process = server_process("--memory", "--secret", "x" * 32, "--join-code", "maple")
    endpoint = process.url.replace("ws://", "http://") + "/token?join_code=maple&name=Ada"
    room = await make_client(process.url, auth_endpoint=endpoint).enter("class")
    assert room.myself is not None and room.myself.info["name"] == "Ada" and room.myself.info["role"] == "student"
    assert (await health(process.url))["auth"] is True


def test_a_join_code_with_redis_and_no_secret_is_a_clear_error() -> None:
    # Every process sharing Redis must sign with the same secret: none is generated.
    result = subprocess.run([sys.executable, "-m", "pluv_widget", "serve", "--join-code", "x",
                             "--redis", "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--join-code with --redis needs --secret" in result.stderr


def test_a_short_secret_is_refused_at_start() -> None:
    result = subprocess.run([sys.executable, "-m", "pluv_widget", "serve", "--memory", "--secret", "s3cret"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "at least 32 are needed" in result.stderr


def test_a_busy_port_is_a_clear_error(server_process: Any) -> None:
    process = server_process("--memory")
    result = subprocess.run([sys.executable, "-m", "pluv_widget", "serve", "--memory", "--port", str(process.port)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and f"cannot serve on 127.0.0.1:{process.port}" in result.stderr
