"""A poll in a class of 30 (issue 13): how soon the teacher sees the last vote, and what a vote
costs the server.

    python -m bench.classroom_poll              # 10 polls (rounds)
    python -m bench.classroom_poll --rounds 3   # quicker

A real ``pluv-widget serve`` subprocess (shipped defaults, SQLite store, tokens with roles) and,
in this process, 1 teacher and 30 student clients (``create_client``, real sockets on
127.0.0.1). Each round the teacher creates a poll; once every student's view shows it, the 30
students vote as fast as the client takes the calls. Figures:

* **last vote → teacher**: from the moment the 30th vote is handed to its client until the
  teacher's ``class_view`` shows 30 voters (its ``subscribe.class_view`` callback's clock);
* **server CPU per vote**: the server process's CPU time (user + system) over the voting phase
  of the round — from the first vote sent to the teacher seeing the 30th — divided by 30. It
  includes storing each vote (SQLite), rebuilding and sending 31 views per change, coalesced
  once per loop turn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/classroom_poll.py``
    sys.path.insert(0, str(ROOT))

from pluv_widget import create_client  # noqa: E402
from pluv_widget.server.tokens import create_token  # noqa: E402

SECRET = "bench-classroom-secret-32-bytes-long!!"
STUDENTS = 30
OPTIONS = ["quicksort", "mergesort", "heapsort"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, "-m", "pluv_widget", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir), "--secret", SECRET, "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, port
        except OSError:
            time.sleep(0.05)  # the port is not open yet
    process.kill()
    raise TimeoutError("the server did not start")


async def enter(url: str, user_id: str, role: str) -> Any:
    def token(room: str) -> str:
        return create_token(SECRET, room=room, user={"id": user_id, "name": user_id.title(), "role": role},
                            max_age=3600)

    return await create_client(ws_endpoint=url, auth_endpoint=token).enter("lesson")


async def wait_for(room: Any, condition: Any, timeout: float = 30) -> float:
    """Wait until ``condition(view)``; the clock when the view that satisfied it arrived."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()

    def check(view: Any) -> None:
        if view is not None and condition(view) and not done.done():
            done.set_result(time.perf_counter())

    unsubscribe = room.subscribe.class_view(lambda view: loop.call_soon_threadsafe(check, view))
    loop.call_soon_threadsafe(check, room.class_view)
    try:
        return await asyncio.wait_for(done, timeout)
    finally:
        unsubscribe()


def voters_are(poll_id: str, n: int) -> Any:
    """A condition on a view: poll ``poll_id`` shows ``n`` voters."""
    def condition(view: Any) -> bool:
        return next((p["voters"] for p in view["polls"] if p["id"] == poll_id), -1) == n

    return condition


async def run(rounds: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="pluv-classroom-bench-"))
    process, port = start_server(data_dir)
    server = psutil.Process(process.pid)
    url = f"ws://127.0.0.1:{port}"
    latencies, cpu_per_vote = [], []
    try:
        teacher = await enter(url, "teacher", "teacher")
        students = await asyncio.gather(*(enter(url, f"s{index:02d}", "student") for index in range(STUDENTS)))
        await wait_for(teacher, lambda view: view["present"] == STUDENTS)
        for round_ in range(rounds):
            poll = await teacher.call("polls.create", {"question": f"round {round_}?", "options": OPTIONS})
            await asyncio.gather(*(wait_for(student, voters_are(poll["id"], 0)) for student in students))
            await asyncio.sleep(0.2)  # let the server go quiet before measuring
            cpu = server.cpu_times()
            calls = []
            for index, student in enumerate(students):
                calls.append(student.call("polls.vote", {"poll": poll["id"], "choice": OPTIONS[index % 3]}))
            last_sent = time.perf_counter()
            seen = await wait_for(teacher, voters_are(poll["id"], STUDENTS))
            after = server.cpu_times()
            for call in calls:
                await call
            latencies.append((seen - last_sent) * 1000)
            cpu_per_vote.append((after.user + after.system - cpu.user - cpu.system) / STUDENTS * 1000)
        return {"rounds": rounds, "latencies_ms": latencies, "cpu_ms_per_vote": cpu_per_vote}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    figures = asyncio.run(run(args.rounds))
    latencies, cpu = figures["latencies_ms"], figures["cpu_ms_per_vote"]
    print(f"classroom poll: {STUDENTS} students + 1 teacher, {args.rounds} polls, server {os.cpu_count()} cores")
    print(f"  30th vote sent -> teacher's view shows 30 voters: median {statistics.median(latencies):.1f} ms "
          f"(min {min(latencies):.1f}, max {max(latencies):.1f})")
    print(f"  server CPU per vote: median {statistics.median(cpu):.2f} ms (min {min(cpu):.2f}, max {max(cpu):.2f})")


if __name__ == "__main__":
    main()
