"""Run every workload against every system and print a table of figures and ratios.

    python -m bench.run            # full run: three repetitions, about ten minutes
    python -m bench.run --smoke    # seconds-long: every workload completes against every system

Systems: pluv-widget (``python -m pluv_widget serve`` with its shipped defaults: limits on,
SQLite store on in a temporary ``--data-dir``), pycrdt-websocket (``bench/peers/pycrdt_server.py``),
@y/websocket-server 0.1.1 on yjs 13 (its stock ``server.js``, from ``bench/node``), and a raw
``websockets`` relay (``bench/peers/relay_server.py``). Each runs as its own process; the load
comes from two client worker processes (``bench/loadgen.py``), the same load for every system
with only the protocol adapter differing. Repetitions are interleaved across systems (their
order rotates), and each figure is the median with the min–max of the repetitions. The
client processes' CPU is shown next to each throughput or latency figure: near 100 % of a core
means that figure is bounded by the load generator, not by the server.

Writes ``results.md``, ``results.json`` and ``bench.png`` into ``--out`` (default
``bench/results``, or ``bench/results/smoke`` with ``--smoke``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/run.py``
    sys.path.insert(0, str(ROOT))

from bench.loadgen import now as now  # noqa: E402  (re-exported for bench/redis_spread.py)
from bench.loadgen import worker_main  # noqa: E402

BENCH = ROOT / "bench"
NODE_DIR = BENCH / "node"
NODE_SERVER = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
WORKERS = 2
PLUV = "pluv-widget"


# -- systems -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    key: str
    adapter: str
    command: Callable[[int, Path], list[str]]
    env: Callable[[int], dict[str, str]] = lambda port: {}
    check: Callable[[], str | None] = lambda: None


def _python_module(module: str) -> Callable[[], str | None]:
    def check() -> str | None:
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
        if probe.returncode:
            return f"cannot import {module}: {probe.stderr.strip().splitlines()[-1:]}"
        return None

    return check


def _node_check() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not NODE_SERVER.exists():
        if shutil.which("npm") is None:
            return "npm is not installed"
        print("installing bench/node (npm ci) ...", flush=True)
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True)
        if done.returncode or not NODE_SERVER.exists():
            return f"npm ci failed in bench/node: {done.stderr.strip()[-300:]}"
    return None


SYSTEMS = [
    System(
        PLUV,
        "pluv",
        lambda port, data: [
            sys.executable,
            "-m",
            "pluv_widget",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data),
        ],
        check=_python_module("pluv_widget.server.cli"),
    ),
    System(
        "@y/websocket-server",
        "yjs",
        lambda port, data: ["node", str(NODE_SERVER)],
        env=lambda port: {"HOST": "127.0.0.1", "PORT": str(port)},
        check=_node_check,
    ),
    System(
        "pycrdt-websocket",
        "yjs",
        lambda port, data: [sys.executable, "-m", "bench.peers.pycrdt_server", "--port", str(port)],
        check=_python_module("pycrdt.websocket"),
    ),
    System(
        "raw relay",
        "relay",
        lambda port, data: [sys.executable, "-m", "bench.peers.relay_server", "--port", str(port)],
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def machine_busy() -> float:
    """CPU seconds the machine spent busy or stolen by the hypervisor, all cores together."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return 0.0


class Server:
    """One system's server process on a free loopback port."""

    def __init__(self, system: System, workdir: Path, cwd: Path = ROOT) -> None:
        self.system = system
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.data = Path(tempfile.mkdtemp(prefix="data-", dir=workdir))
        self.log_path = workdir / f"{system.key.replace('/', '_').replace('@', '')}-{self.port}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            system.command(self.port, self.data),
            cwd=cwd,
            env={**os.environ, **system.env(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.process = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{system.key} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{system.key} did not listen within 30 s: {self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-800:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu(self) -> float:
        return sum(cpu_seconds(process) for process in self.processes())

    def rss(self) -> int:
        total = 0
        for process in self.processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total

    def wait_quiet(self, max_wait: float = 20.0) -> None:
        """Wait until the server has used under 2 % of a core for two quarter-second samples."""
        deadline, quiet, last = time.monotonic() + max_wait, 0, self.cpu()
        while time.monotonic() < deadline and quiet < 2:
            time.sleep(0.25)
            current = self.cpu()
            quiet = quiet + 1 if current - last < 0.005 else 0
            last = current

    def stop(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.data, ignore_errors=True)


# -- client workers -----------------------------------------------------------------------------


class Workers:
    """The two client processes, driven one command at a time."""

    #: What each worker process runs: ``(pipe, index, count)``, serving commands until ``exit``.
    main: Callable[[Connection, int, int], None] = staticmethod(worker_main)

    def __init__(self, count: int = WORKERS) -> None:
        self.count = count
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.start()

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for index in range(self.count):
            parent, child = context.Pipe()
            process = context.Process(target=self.main, args=(child, index, self.count), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.procs.append(process)
        self.processes = [psutil.Process(process.pid) for process in self.procs]

    def restart(self) -> None:
        for process in self.procs:
            process.kill()
            process.join(5)
        self.pipes, self.procs = [], []
        self.start()

    def send(self, index: int, command: dict[str, Any]) -> None:
        self.pipes[index].send(command)

    def receive(self, index: int, timeout: float) -> dict[str, Any]:
        if not self.pipes[index].poll(timeout):
            raise TimeoutError(f"worker {index} gave no answer within {timeout:.0f} s")
        reply: dict[str, Any] = self.pipes[index].recv()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def ask_each(self, command: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        """Send ``command`` to one worker after the other (setup order matters: writer, seeder first)."""
        replies = []
        for index in range(self.count):
            self.send(index, command)
            replies.append(self.receive(index, timeout))
        return replies

    def ask_all(self, command: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        for index in range(self.count):
            self.send(index, command)
        deadline = time.monotonic() + timeout
        return [self.receive(index, max(0.1, deadline - time.monotonic())) for index in range(self.count)]

    def cpu(self) -> list[float]:
        return [cpu_seconds(process) for process in self.processes]

    def close(self) -> None:
        for index in range(self.count):
            try:
                self.send(index, {"op": "exit"})
                self.pipes[index].poll(5)
            except (OSError, EOFError):
                pass
        for process in self.procs:
            process.join(5)
            if process.is_alive():
                process.kill()


# -- workloads and their figures ------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool | None  # None: context (CPU), no ratio
    digits: int = 0


@dataclass
class Variant:
    key: str
    title: str
    workload: str
    params: dict[str, Any]
    metrics: list[Metric]
    timeout: float = 120.0
    #: the systems this variant means something for (None: every one)
    only: tuple[str, ...] | None = None

    def applies_to(self, system: System) -> bool:
        return self.only is None or system.key in self.only


CPU_METRICS = [
    Metric("client_cpu", "client CPU, busiest process", "% core", None),
    Metric("server_cpu", "server CPU", "% core", None),
    Metric("other_cpu", "other processes' CPU (noise)", "% core", None),
]
STORM_METRICS = [
    Metric("time", "time until all are in with a complete view", "s", False, 2),
    Metric("connected", "time until all are in (joined, synced)", "s", False, 2),
    Metric("server_cpu", "server CPU", "% core", None),
    Metric("client_cpu", "client CPU, busiest process", "% core", None),
]


def variants(smoke: bool) -> list[Variant]:
    """The workloads of issue 6 (and issue 2's all-to-all); ``smoke`` shrinks every load."""
    s = smoke
    presence = [
        Metric("p50", "latency p50", "ms", False, 1),
        Metric("p99", "latency p99", "ms", False, 1),
        Metric("rate", "deliveries/s", "/s", True),
        Metric("delivered", "delivered", "%", True, 1),
        Metric("server_us", "server CPU per delivery", "µs", False, 1),
        *CPU_METRICS,
    ]
    duration = 1 if s else 10
    result: list[Variant] = []
    for n in (20, 50):
        readers, edits = (3, 50) if s else (n, 2000)
        result.append(
            Variant(
                f"fanout-{n}",
                f"storage fan-out: 1 writer × {readers} readers, {edits:,} edits",
                "fanout",
                {"readers": readers, "edits": edits, "timeout": 20 if s else 90},
                [Metric("rate", "edits delivered/s", "/s", True), *CPU_METRICS],
            )
        )
    for key, hz, full in (("presence-5hz", 5, 60), ("presence-10hz", 10, 60), ("presence-5hz-120", 5, 120)):
        clients = 6 if s else full
        result.append(
            Variant(
                key,
                f"presence fan-out: {clients} clients × {hz} Hz × {duration} s",
                "presence",
                {"clients": clients, "hz": hz, "updates": hz * duration, "drain": 2 if s else 5},
                presence,
            )
        )
    clients, updates = (5, 5) if s else (50, 50)
    result.append(
        Variant(
            "presence-burst",
            f"presence all-to-all: {clients} clients × {updates} updates each (issue 2)",
            "presence",
            {"clients": clients, "hz": 0, "updates": updates, "drain": 10 if s else 60},
            [Metric("time", "time until all received", "s", False, 2), *CPU_METRICS],
        )
    )
    strings = 2000 if s else 50_000
    result.append(
        Variant(
            "join",
            f"join: a new client receives a {strings / 10_000:g} MB document ({strings:,} × ~100 B)",
            "join",
            {"strings": strings, "timeout": 60},
            [
                Metric("time", "time to receive and apply", "ms", False, 1),
                Metric("client_cpu", "joiner CPU", "% core", None),
            ],
        )
    )
    storm = 40 if s else 1000
    result.append(
        Variant(
            "storm-1000",
            f"join storm: {storm:,} clients enter one room at once (issue 15)",
            "storm",
            {"clients": storm, "addresses": 200, "timeout": 60},
            STORM_METRICS,
            timeout=90,
        )
    )
    result.append(
        Variant(
            "storm-1000-named",
            f"join storm with presence: {storm:,} clients, each with a name and colour, enter one room at once"
            " and learn everyone's",
            "storm",
            {"clients": storm, "addresses": 200, "timeout": 60, "announce": True},
            STORM_METRICS,
            timeout=90,
            # The relay keeps no state, and pycrdt-websocket does not send a newcomer the states it
            # holds: there, a newcomer learns the others only as each renews (a provider: every 15 s).
            only=(PLUV, YWS),
        )
    )
    connections, rooms = (20, 20) if s else (1000, 2000)
    result.append(
        Variant(
            "memory-room",
            f"memory: {connections:,} idle connections in one room",
            "idle",
            {"connections": connections, "one_room": True, "warm": 5 if s else 20},
            [Metric("per", "server RSS per connection", "KiB", False, 1)],
        )
    )
    result.append(
        Variant(
            "memory-rooms",
            f"memory: {rooms:,} rooms of one idle connection",
            "idle",
            {"connections": rooms, "one_room": False, "warm": 5 if s else 20},
            [Metric("per", "server RSS per room", "KiB", False, 1)],
        )
    )
    return result


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; ``inf`` marks what never arrived."""
    if not values:
        return float("inf")
    return values[min(len(values) - 1, max(0, math.ceil(fraction * len(values)) - 1))]


def summarize(
    variant: Variant, replies: list[dict[str, Any]], t0: float, wall: float, cpu: dict[str, float]
) -> dict[str, float]:
    p = variant.params
    figures: dict[str, float] = dict(cpu)
    if variant.workload == "fanout":
        readers = sum(reply["readers"] for reply in replies)
        done = [instant for reply in replies for instant in reply["done"]]
        if len(done) == readers:
            figures["rate"] = readers * p["edits"] / (max(done) - t0)
        else:
            delivered = sum(reply["delivered"] for reply in replies)
            figures["rate"] = delivered / p["timeout"]
            figures["incomplete"] = 1
    elif variant.workload == "presence":
        latencies: list[float] = []
        for reply in replies:
            chunk = array("d")
            chunk.frombytes(reply["latencies"])
            latencies.extend(chunk)
        expected = sum(reply["expected"] for reply in replies)
        delivered = sum(reply["delivered"] for reply in replies)
        latencies.sort()
        latencies.extend([float("inf")] * max(0, expected - len(latencies)))
        figures["p50"] = percentile(latencies, 0.50) * 1000
        figures["p99"] = percentile(latencies, 0.99) * 1000
        figures["delivered"] = 100.0 * delivered / expected
        last = max(reply["last"] for reply in replies)
        span = max(p["updates"] / p["hz"] if p["hz"] else 0.0, last - t0)
        figures["rate"] = delivered / span if span > 0 else 0.0
        figures["lateness_ms"] = max(reply["lateness_max"] for reply in replies) * 1000
        if delivered:
            figures["server_us"] = cpu["server_cpu"] / 100 * wall / delivered * 1e6
        if p["hz"] == 0:
            done = [reply["done"] for reply in replies]
            figures["time"] = max(done) - t0 if all(d is not None for d in done) else float("inf")
    elif variant.workload == "join":
        figures["time"] = replies[1]["elapsed"] * 1000
    elif variant.workload == "storm":
        clients = sum(reply["clients"] for reply in replies)
        connected = [instant for reply in replies for instant in reply["connected"]]
        done = [instant for reply in replies for instant in reply["done"]]
        figures["connected"] = max(connected) - t0 if len(connected) == clients else float("inf")
        figures["time"] = max(done) - t0 if len(done) == clients else float("inf")
        views = [reply["smallest_view"] for reply in replies if reply["smallest_view"] is not None]
        if views:
            figures["smallest_view"] = min(views)
    return figures


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class Results:
    systems: list[str]
    variants: list[Variant]
    smoke: bool = False
    runs: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    errors: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def add(self, variant: str, system: str, figures: dict[str, float]) -> None:
        self.runs.setdefault(variant, {}).setdefault(system, []).append(figures)

    def error(self, variant: str, system: str, text: str) -> None:
        self.errors.setdefault(variant, {}).setdefault(system, []).append(text)

    def values(self, variant: str, system: str, metric: str) -> list[float]:
        return [run[metric] for run in self.runs.get(variant, {}).get(system, []) if metric in run]

    def median(self, variant: str, system: str, metric: str) -> float | None:
        values = self.values(variant, system, metric)
        return statistics.median(values) if values else None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="pluv-bench-"))
        self.systems = [s for s in SYSTEMS if not args.systems or s.key in args.systems]
        self.variants = [v for v in variants(args.smoke) if not args.variants or v.key in args.variants]
        self.results = Results([s.key for s in self.systems], self.variants, args.smoke)
        self.workers = Workers()

    def log(self, text: str) -> None:
        print(text, flush=True)

    def wait_calm(self) -> None:
        """Before a run, wait (a bounded time) until other processes leave the machine alone."""
        deadline, calm, last = time.monotonic() + self.args.calm_wait, 0, machine_busy()
        while time.monotonic() < deadline and calm < 2:
            time.sleep(0.25)
            current = machine_busy()
            calm = calm + 1 if (current - last) / 0.25 * 100 <= self.args.noise_limit else 0
            last = current

    def command(self, variant: Variant, system: System, server: Server, rep: int, **extra: Any) -> dict[str, Any]:
        return {
            "op": "setup",
            "workload": variant.workload,
            "adapter": system.adapter,
            "url": server.url,
            "compression": None if self.args.client_compression == "none" else "deflate",
            "room": f"{variant.key}-{rep}-{uuid.uuid4().hex[:8]}",
            **variant.params,
            **extra,
        }

    def measure(self, variant: Variant, system: System, rep: int) -> dict[str, float]:
        if variant.workload == "idle":
            return self.measure_memory(variant, system, rep)
        # A fresh server for every run, alone on the machine: a peer still working through
        # the last run's backlog must not slow the next system down.
        server = self.start(system)
        try:
            self.workers.ask_each(self.command(variant, system, server, rep), variant.timeout)
            server.wait_quiet(max_wait=0 if self.args.smoke else 5)
            t0 = now() + 0.3
            for index in range(WORKERS):
                self.workers.send(index, {"op": "go", "t0": t0})
            time.sleep(max(0.0, t0 - now()))
            server_cpu, client_cpu, busy = server.cpu(), self.workers.cpu(), machine_busy()
            replies = [self.workers.receive(index, variant.timeout) for index in range(WORKERS)]
            wall = now() - t0
            server_used, clients_used = server.cpu() - server_cpu, self.workers.cpu()
            cpu = {
                "server_cpu": 100 * server_used / wall,
                "client_cpu": max(100 * (b - a) / wall for a, b in zip(client_cpu, clients_used, strict=True)),
                "other_cpu": max(
                    0.0,
                    100 * (machine_busy() - busy - server_used - sum(clients_used) + sum(client_cpu)) / wall,
                ),
            }
            if variant.workload == "join":
                cpu["client_cpu"] = 100 * (self.workers.cpu()[1] - client_cpu[1]) / wall
            errors = [error for reply in replies for error in reply.get("errors", [])]
            if errors:
                self.results.error(variant.key, system.key, f"client errors: {errors[:3]}")
            return summarize(variant, replies, t0, wall, cpu)
        finally:
            server.stop()  # first: a backlogged server would slow every client's close down
            self.workers.ask_all({"op": "teardown"}, 60)

    def start(self, system: System) -> Server:
        """A fresh server; pluv-widget's from ``--pluv-root`` (to measure a candidate change)."""
        cwd = self.args.pluv_root.resolve() if system.key == PLUV and self.args.pluv_root else ROOT
        return Server(system, self.workdir, cwd)

    def measure_memory(self, variant: Variant, system: System, rep: int) -> dict[str, float]:
        server = self.start(system)
        try:
            warm = self.command(variant, system, server, rep, connections=variant.params["warm"])
            self.workers.ask_each(warm, variant.timeout)
            self.workers.ask_all({"op": "teardown"}, 60)
            server.wait_quiet(max_wait=0.5 if self.args.smoke else 20)
            before = server.rss()
            self.workers.ask_each(self.command(variant, system, server, rep), variant.timeout)
            server.wait_quiet(max_wait=0.5 if self.args.smoke else 20)
            after = server.rss()
            return {"per": (after - before) / variant.params["connections"] / 1024, "rss_mib": after / 2**20}
        finally:
            server.stop()  # first, as in measure()
            self.workers.ask_all({"op": "teardown"}, 120)

    def run(self) -> Results:
        for system in self.systems:
            reason = system.check()
            if reason:
                self.results.unavailable[system.key] = reason
                self.log(f"skipping {system.key}: {reason}")
        systems = [s for s in self.systems if s.key not in self.results.unavailable]
        reps = self.args.reps or (1 if self.args.smoke else 3)
        for variant in self.variants:
            self.log(f"{variant.title}")
            for rep in range(reps):
                shift = rep % max(1, len(systems))
                for system in systems[shift:] + systems[:shift]:
                    if not variant.applies_to(system):
                        continue
                    started = time.monotonic()
                    try:
                        self.wait_calm()
                        figures = self.measure(variant, system, rep)
                        for _ in range(self.args.retries):
                            if figures.get("other_cpu", 0.0) <= self.args.noise_limit:
                                break
                            self.log(
                                f"  rep {rep + 1} {system.key:20} disturbed: other processes used "
                                f"{figures['other_cpu']:.0f} % of a core; running it again"
                            )
                            self.wait_calm()
                            again = self.measure(variant, system, rep)
                            if again.get("other_cpu", 0.0) < figures["other_cpu"]:
                                figures = again
                    except Exception as error:  # one failure must not lose the rest of the table
                        text = f"{type(error).__name__}: {str(error).strip()[-600:]}"
                        self.results.error(variant.key, system.key, text)
                        self.log(f"  rep {rep + 1} {system.key:20} FAILED {text}")
                        if isinstance(error, TimeoutError):
                            self.workers.restart()
                        continue
                    self.results.add(variant.key, system.key, figures)
                    shown = "  ".join(f"{m.key}={format_value(figures.get(m.key), m.digits)}" for m in variant.metrics)
                    self.log(f"  rep {rep + 1} {system.key:20} {shown}  ({time.monotonic() - started:.1f} s)")
        return self.results

    def close(self) -> None:
        self.workers.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- the table ------------------------------------------------------------------------------------


def format_value(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if value == float("inf"):
        return "∞"
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.{digits}f}"


def cell(results: Results, variant: str, system: str, metric: Metric) -> str:
    values = results.values(variant, system, metric.key)
    if not values:
        if system in results.unavailable:
            return "n/a"
        return "failed" if results.errors.get(variant, {}).get(system) else "—"
    middle = format_value(statistics.median(values), metric.digits)
    if len(values) == 1:
        return middle
    return f"{middle} ({format_value(min(values), metric.digits)}–{format_value(max(values), metric.digits)})"


def ratio(results: Results, variant: str, peer: str, metric: Metric) -> str:
    ours, theirs = results.median(variant, PLUV, metric.key), results.median(variant, peer, metric.key)
    if metric.higher_is_better is None or ours is None or theirs is None:
        return ""
    if theirs == 0 or ours == float("inf") or theirs == float("inf"):
        return "—"
    return f"{ours / theirs:.2f}×"


YWS, PYCRDT, RELAY = "@y/websocket-server", "pycrdt-websocket", "raw relay"


def _fanout_target(variant: str) -> Callable[[Results], bool | None]:
    def check(results: Results) -> bool | None:
        ours, yws, pyc = (results.median(variant, s, "rate") for s in (PLUV, YWS, PYCRDT))
        if ours is None or yws is None or pyc is None:
            return None
        return ours >= yws and ours >= 3 * pyc

    return check


def _presence_target(results: Results) -> bool | None:
    ours, relay, yws = (results.median("presence-5hz", s, "p99") for s in (PLUV, RELAY, YWS))
    if ours is None or relay is None or yws is None:
        return None
    delivered = results.values("presence-5hz", PLUV, "delivered")
    return ours <= 1.5 * relay and ours < yws and all(d >= 100.0 for d in delivered)


def _presence_batched(variant: str) -> Callable[[Results], bool | None]:
    """Issue 15: p99 within 1.2× the relay's, less server CPU per delivery, all delivered."""

    def check(results: Results) -> bool | None:
        p99, relay_p99 = (results.median(variant, s, "p99") for s in (PLUV, RELAY))
        cost, relay_cost = (results.median(variant, s, "server_us") for s in (PLUV, RELAY))
        if p99 is None or relay_p99 is None or cost is None or relay_cost is None:
            return None
        delivered = results.values(variant, PLUV, "delivered")
        return p99 <= 1.2 * relay_p99 and cost < relay_cost and all(d >= 100.0 for d in delivered)

    return check


def _storm_target(results: Results) -> bool | None:
    """Issue 15: all in with a complete view within 1.5× the time y-ws and the relay take."""
    ours, yws, relay = (results.median("storm-1000", s, "time") for s in (PLUV, YWS, RELAY))
    if ours is None or yws is None or relay is None:
        return None
    return ours <= 1.5 * yws and ours <= 1.5 * relay


def _below(variant: str, metric: str, limit: float) -> Callable[[Results], bool | None]:
    def check(results: Results) -> bool | None:
        ours = results.median(variant, PLUV, metric)
        return None if ours is None else ours <= limit

    return check


#: issue 6's targets for pluv-widget, by (variant, metric): (what the target says, its check)
TARGETS: dict[tuple[str, str], tuple[str, Callable[[Results], bool | None]]] = {
    ("fanout-20", "rate"): ("≥1× y-ws, ≥3× pycrdt", _fanout_target("fanout-20")),
    ("fanout-50", "rate"): ("≥1× y-ws, ≥3× pycrdt", _fanout_target("fanout-50")),
    ("presence-5hz", "p99"): ("≤1.5× relay, <y-ws, all delivered", _presence_target),
    ("presence-5hz", "server_us"): ("issue 15: p99 ≤1.2× relay, µs < relay, all delivered",
                                    _presence_batched("presence-5hz")),
    ("presence-5hz-120", "server_us"): ("issue 15: p99 ≤1.2× relay, µs < relay, all delivered",
                                        _presence_batched("presence-5hz-120")),
    ("storm-1000", "time"): ("issue 15: ≤1.5× y-ws and relay", _storm_target),
    ("join", "time"): ("< 200 ms", _below("join", "time", 199.999)),
    ("memory-room", "per"): ("≤ 20 KiB", _below("memory-room", "per", 20)),
    ("memory-rooms", "per"): ("≤ 30 KiB", _below("memory-rooms", "per", 30)),
}


def table(results: Results) -> str:
    peers = [s for s in results.systems if s != PLUV]
    header = ["workload", "figure", "better", *results.systems]
    if PLUV in results.systems:
        header += [f"{PLUV} ÷ {peer}" for peer in peers] + ["issue-6 target"]
    rows = [header]
    for variant in results.variants:
        for metric in variant.metrics:
            better = {True: "higher", False: "lower", None: ""}[metric.higher_is_better]
            row = [variant.title, f"{metric.label} ({metric.unit})", better]
            row += [cell(results, variant.key, system, metric) for system in results.systems]
            if PLUV in results.systems:
                row += [ratio(results, variant.key, peer, metric) for peer in peers]
                target = TARGETS.get((variant.key, metric.key))
                if target is None:
                    row.append("")
                elif results.smoke:
                    row.append("not judged on a smoke run")
                else:
                    verdict = target[1](results)
                    row.append(f"{target[0]}: " + {True: "met", False: "MISSED", None: "n/a"}[verdict])
            rows.append(row)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def environment() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    def node_version(package: str) -> str:
        path = NODE_DIR / "node_modules" / package / "package.json"
        return json.loads(path.read_text())["version"] if path.exists() else "absent"

    node = (
        subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("node")
        else "absent"
    )
    return {
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}",
        "python": platform.python_version(),
        "node": node,
        "pycrdt": version("pycrdt"),
        "pycrdt-websocket": version("pycrdt-websocket"),
        "websockets": version("websockets"),
        "@y/websocket-server": node_version("@y/websocket-server"),
        "yjs": node_version("yjs"),
    }


def report(results: Results, args: argparse.Namespace, out: Path, elapsed: float) -> str:
    env = environment()
    reps = args.reps or (1 if args.smoke else 3)
    lines = [
        f"# pluv-widget bench{' (smoke)' if args.smoke else ''}",
        "",
        f"{reps} repetition(s), median (min–max); 2 client processes; clients offer "
        f"permessage-deflate: {args.client_compression != 'none'}; run took {elapsed:.0f} s.",
        "Ratios are pluv-widget's median ÷ the peer's (for 'lower' figures, below 1× is better).",
        *([f"pluv-widget served from {args.pluv_root.resolve()} (--pluv-root)."] if args.pluv_root else []),
        "",
        "; ".join(f"{key} {value}" for key, value in env.items()),
        "",
        table(results),
    ]
    for system, reason in results.unavailable.items():
        lines.append(f"\n{system} unavailable: {reason}")
    for variant, by_system in results.errors.items():
        for system, texts in by_system.items():
            for text in texts[:3]:
                lines.append(f"\n{variant} / {system}: {text}")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    raw = {
        "environment": env,
        "smoke": args.smoke,
        "systems": results.systems,
        "variants": [{"key": v.key, "title": v.title, "params": v.params} for v in results.variants],
        "runs": results.runs,
        "errors": results.errors,
        "unavailable": results.unavailable,
    }
    (out / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    return text


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny loads, one repetition: checks only that everything runs"
    )
    parser.add_argument("--reps", type=int, help="repetitions (default 3, smoke 1)")
    parser.add_argument("--systems", nargs="*", help=f"subset of: {', '.join(s.key for s in SYSTEMS)}")
    parser.add_argument("--variants", nargs="*", help=f"subset of: {', '.join(v.key for v in variants(False))}")
    parser.add_argument("--out", type=Path, help="output folder (default bench/results[/smoke])")
    parser.add_argument(
        "--client-compression",
        choices=["deflate", "none"],
        default="deflate",
        help="whether clients offer permessage-deflate, as browsers do (default deflate)",
    )
    parser.add_argument(
        "--noise-limit",
        type=float,
        default=25.0,
        help="a run during which other processes used more %% of a core than this is run again",
    )
    parser.add_argument("--retries", type=int, help="how often a disturbed run is run again (default 1, smoke 0)")
    parser.add_argument(
        "--calm-wait",
        type=float,
        help="seconds to wait for a calm machine before each run (default 10, smoke 0)",
    )
    parser.add_argument(
        "--pluv-root",
        type=Path,
        help="serve pluv-widget from the pluv_widget package in this folder (a candidate change) "
        "instead of this checkout's",
    )
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    if args.retries is None:
        args.retries = 0 if args.smoke else 1
    if args.calm_wait is None:
        args.calm_wait = 0.0 if args.smoke else 10.0
    out: Path = args.out or (BENCH / "results" / ("smoke" if args.smoke else ""))
    out.mkdir(parents=True, exist_ok=True)
    raise_open_files()
    started = time.monotonic()
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    text = report(results, args, out, time.monotonic() - started)
    print("\n" + text)
    if not args.no_chart:
        from bench.chart import chart

        print(f"chart: {chart(results, out / 'bench.png')}")
    systems = {system.key: system for system in SYSTEMS}
    failed = [
        f"{variant.key}/{key}"
        for variant in results.variants
        for key in results.systems
        if variant.applies_to(systems[key]) and not results.runs.get(variant.key, {}).get(key)
    ]
    if failed:
        print(f"no figure for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
