"""One room spread over two pluv-widget processes sharing Redis, against the same room on one.

    python -m bench.redis_spread             # 3 repetitions of each workload and layout
    python -m bench.redis_spread --smoke     # seconds-long

Layouts: ``1 process + Redis`` (``serve --redis``: the same store and bus, one process),
``2 processes + Redis`` (every client connects to one of the two, alternately, so each edit
and presence update crosses Redis to reach half the room), and ``1 process, SQLite`` (the
default server) for reference. Redis runs with ``appendonly yes, appendfsync everysec``, the
setting ``docs/scaling.md`` recommends.

Everything else is the shared load generator's: its ``fanout`` and ``presence`` workloads run
by two client worker processes (``bench/loadgen.py``), and ``bench/run.py``'s server, worker
and summary code. The only addition is where a client connects (round robin over the URLs).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/redis_spread.py``
    sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.run import CPU_METRICS, WORKERS, Metric, Server, System, Variant, Workers, free_port, now, summarize  # noqa: E402

LAYOUTS = ["1 process + Redis", "2 processes + Redis", "1 process, SQLite"]


# -- client workers that spread their clients over several servers ------------------------------


def spread_worker_main(conn: Connection, worker: int, workers: int) -> None:
    """``loadgen.worker_main``, with each new client connecting to the next of ``params["urls"]``."""
    original = loadgen.Workload.client

    def client(self: loadgen.Workload, room: str, **kwargs: Any) -> Any:
        urls = self.params.get("urls") or [self.base_url]
        made = len(self.clients)
        self.base_url = urls[(self.worker + made) % len(urls)]
        return original(self, room, **kwargs)

    loadgen.Workload.client = client  # type: ignore[method-assign]
    loadgen.worker_main(conn, worker, workers)


class SpreadWorkers(Workers):
    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for index in range(self.count):
            parent, child = context.Pipe()
            process = context.Process(target=spread_worker_main, args=(child, index, self.count), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.procs.append(process)
        self.processes = [psutil.Process(process.pid) for process in self.procs]


# -- servers ------------------------------------------------------------------------------------------


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory = workdir / "redis"
        directory.mkdir()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(directory),
            ],
            stdout=(directory / "redis.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.process = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout != b"PONG\n":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def pluv(*extra: str) -> System:
    def command(port: int, data: Path) -> list[str]:
        return [sys.executable, "-m", "pluv_widget", "serve", "--host", "127.0.0.1", "--port", str(port), *extra]

    return System("pluv-widget", "pluv", command)


def variants(smoke: bool) -> list[Variant]:
    duration = 1 if smoke else 10
    return [
        Variant(
            "fanout-50",
            "storage fan-out 1 writer × 50 readers, 2000 edits",
            "fanout",
            {"readers": 4 if smoke else 50, "edits": 50 if smoke else 2000, "timeout": 20 if smoke else 90},
            [Metric("rate", "edits delivered/s", "/s", True), *CPU_METRICS],
        ),
        # 20 clients: what the hop through Redis adds to latency; 60: the shared bench's load.
        *(
            Variant(
                f"presence-{clients}x10hz",
                f"presence fan-out {clients} clients × 10 Hz × 10 s",
                "presence",
                {"clients": 6 if smoke else clients, "hz": 10, "updates": 10 * duration, "drain": 2 if smoke else 5},
                [
                    Metric("p50", "latency p50", "ms", False, 1),
                    Metric("p99", "latency p99", "ms", False, 1),
                    Metric("rate", "deliveries/s", "/s", True),
                    Metric("delivered", "delivered", "%", True, 1),
                    *CPU_METRICS,
                ],
            )
            for clients in (20, 60)
        ),
    ]


def measure(
    workers: Workers, servers: list[Server], redis: Redis | None, variant: Variant, rep: int
) -> dict[str, float]:
    for server in servers:
        server.wait_quiet(max_wait=10)
    command = {
        "op": "setup",
        "workload": variant.workload,
        "adapter": "pluv",
        "url": servers[0].url,
        "urls": [server.url for server in servers],
        "compression": None,
        "room": f"{variant.key}-{rep}-{uuid.uuid4().hex[:8]}",
        **variant.params,
    }
    try:
        workers.ask_each(command, variant.timeout)
        for server in servers:
            server.wait_quiet(max_wait=10)
        t0 = now() + 0.3
        for index in range(WORKERS):
            workers.send(index, {"op": "go", "t0": t0})
        time.sleep(max(0.0, t0 - now()))
        server_cpu, client_cpu = sum(s.cpu() for s in servers), workers.cpu()
        redis_cpu = redis.cpu() if redis else 0.0
        replies = [workers.receive(index, variant.timeout) for index in range(WORKERS)]
        wall = now() - t0
        cpu = {
            "server_cpu": 100 * (sum(s.cpu() for s in servers) - server_cpu) / wall,
            "client_cpu": max(100 * (b - a) / wall for a, b in zip(client_cpu, workers.cpu(), strict=True)),
            "redis_cpu": 100 * ((redis.cpu() if redis else 0.0) - redis_cpu) / wall,
        }
        errors = [error for reply in replies for error in reply.get("errors", [])]
        if errors:
            print(f"    client errors: {errors[:3]}", flush=True)
        return summarize(variant, replies, t0, wall, cpu)
    finally:
        workers.ask_all({"op": "teardown"}, 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--reps", type=int, default=0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the cleanup below on kill, too
    reps = args.reps or (1 if args.smoke else 3)
    workdir = Path(tempfile.mkdtemp(prefix="pluv-redis-bench-"))
    redis = Redis(workdir)
    layouts: dict[str, list[Server]] = {
        LAYOUTS[0]: [Server(pluv("--redis", redis.url), workdir)],
        LAYOUTS[1]: [Server(pluv("--redis", redis.url), workdir) for _ in range(2)],
        LAYOUTS[2]: [Server(pluv("--data-dir", str(workdir / "sqlite")), workdir)],
    }
    workers = SpreadWorkers()
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for variant in variants(args.smoke):
            print(variant.title, flush=True)
            for rep in range(reps):
                order = LAYOUTS[rep % 3 :] + LAYOUTS[: rep % 3]  # rotate, as bench/run.py does
                for layout in order:
                    figures = measure(workers, layouts[layout], redis if "Redis" in layout else None, variant, rep)
                    results.setdefault((variant.key, layout), []).append(figures)
                    shown = "  ".join(f"{k}={v:.1f}" for k, v in sorted(figures.items()))
                    print(f"  rep {rep + 1} {layout:22} {shown}", flush=True)
        print("\nmedians [min-max]:")
        for (variant_key, layout), runs in results.items():
            shown = []
            for key in ("rate", "p50", "p99", "server_cpu", "redis_cpu", "client_cpu", "lateness_ms"):
                values = sorted(run[key] for run in runs if key in run)
                if values:
                    shown.append(f"{key}={statistics.median(values):.1f} [{values[0]:.1f}-{values[-1]:.1f}]")
            print(f"  {variant_key:18} {layout:20} " + "  ".join(shown))
    finally:
        workers.close()
        for servers in layouts.values():
            for server in servers:
                server.stop()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
