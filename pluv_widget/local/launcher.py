"""Find the local server, start it, replace an older one, report it, stop it."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from .errors import IncompatibleServerError
from .files import (
    HOST,
    data_dir,
    forget_info,
    local_home,
    local_port,
    log_path,
    read_info,
    write_info,
    ws_url,
)
from .health import describe, is_current, is_idle, probe, speaks_our_protocol
from .process import alive, is_our_server, locked, spawn, terminate, wait_until_healthy

logger = logging.getLogger(__name__)


def ensure_local_server(port: int | None = None) -> str:
    """Return the WebSocket base URL of the local server on ``port``, starting it if needed.

    ``port`` defaults to :func:`~pluv_widget.local.local_port`. Blocks until the server answers
    ``/health`` (about a second on a cold start).

    A server of another pluv-widget version that this machine started (``server.json`` names its
    pid) is replaced when it has no connections. While it has some, it is used if it speaks this
    protocol; if not, :class:`IncompatibleServerError` says so (it is replaced as soon as it is
    idle). A server someone started by hand is used when it speaks this protocol, never stopped.

    Raises :class:`PortTakenError` when the port is taken by something else, and
    :class:`LocalServerError` when the server fails to start (with its log's last lines).
    """
    port = local_port() if port is None else port
    health = probe(port)
    if health is not None and is_current(health):
        return ws_url(port)
    home = local_home()
    home.mkdir(parents=True, exist_ok=True)
    with locked(home / "server.lock"):
        health = probe(port)  # another kernel may have started or replaced it meanwhile
        if health is not None:
            if is_current(health):
                return ws_url(port)
            if not _replaced_when_idle(port, health):
                return _use_older(port, health)
        _start(port)
    return ws_url(port)


def local_status(port: int | None = None) -> dict[str, Any] | None:
    """What runs locally: ``server.json``'s fields plus ``health`` (the ``/health`` answer).

    ``None`` when no pluv-widget server answers on the port (``server.json``'s port, else
    :func:`~pluv_widget.local.local_port`). A server someone started by hand is reported too,
    with ``pid`` ``None``.
    """
    info = read_info()
    if port is None:
        port = int(info["port"]) if info and "port" in info else local_port()
    health = probe(port)
    if health is None:
        return None
    status: dict[str, Any] = dict(info) if info and _started_here(port, health, info) else {
        "pid": None, "port": port, "url": ws_url(port),
    }  # fmt: skip
    status.setdefault("log", str(log_path()))
    status.setdefault("data_dir", str(data_dir()))
    status["health"] = health
    return status


def stop_local_server() -> bool:
    """Stop the server this machine started (SIGTERM, then SIGKILL); ``False`` if none runs."""
    info = read_info()
    if info is None:
        return False
    stopped = terminate(int(info.get("pid", 0)))
    forget_info()
    return stopped


def _start(port: int) -> None:
    process = spawn(local_home(), port)
    wait_until_healthy(process, port, log_path())
    write_info({
        "pid": process.pid,
        "host": HOST,
        "port": port,
        "url": ws_url(port),
        "log": str(log_path()),
        "data_dir": str(data_dir()),
        "started_at": time.time(),
        "python": sys.executable,
    })  # fmt: skip
    logger.info("started the local pluv-widget server at %s (pid %d, log %s)", ws_url(port), process.pid, log_path())


def _started_here(port: int, health: dict[str, Any], info: dict[str, Any] | None) -> bool:
    """Is the server answering on ``port`` the one ``server.json`` describes, still running?"""
    if info is None or info.get("port") != port:
        return False
    pid = int(info.get("pid") or 0)
    if "pid" in health and health["pid"] != pid:
        return False
    return alive(pid) and is_our_server(pid)


def _replaced_when_idle(port: int, health: dict[str, Any]) -> bool:
    """Stop an older server this machine started, if nobody uses it; ``True`` when stopped."""
    info = read_info()
    if info is None or not _started_here(port, health, info) or not is_idle(health):
        return False
    logger.info("replacing the idle local pluv-widget server (%s, pid %s)", describe(health), info.get("pid"))
    terminate(int(info["pid"]))
    forget_info()
    deadline = time.monotonic() + 10.0
    while probe(port) is not None and time.monotonic() < deadline:  # its socket closes with it
        time.sleep(0.05)
    return True


def _use_older(port: int, health: dict[str, Any]) -> str:
    """Another pluv-widget's server that cannot be replaced now: use it if it speaks our protocol."""
    from .. import __version__
    from ..protocol import PROTOCOL_VERSION

    where = f"{HOST}:{port}"
    if speaks_our_protocol(health):
        logger.info("using the local pluv-widget server on %s (%s; this is %s)", where, describe(health), __version__)
        return ws_url(port)
    busy = _started_here(port, health, read_info())
    why = (
        f"it still has {health.get('connections')} connection(s); it is replaced by itself once they "
        "end (or stop it now with `pluv-widget stop`)"
        if busy
        else "it was not started by this pluv-widget (stop it, or end the process) and try again"
    )
    raise IncompatibleServerError(
        f"the pluv-widget server on {where} speaks protocol {health.get('protocol')} "
        f"(version {health.get('version')}), this pluv-widget speaks protocol {PROTOCOL_VERSION}: {why}"
    )
