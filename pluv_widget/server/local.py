"""The local server that "nothing configured" falls back on.

``RoomWidget("my-room")`` with no URL calls :func:`ensure_local_server`: when nothing answers on
``127.0.0.1:1999`` it starts ``python -m pluv_widget serve`` as a detached process (its own session,
so it outlives the kernel that started it) shared by every kernel on the machine. Each kernel is
still its own person there; the server only gives them a room to meet in.

Locations (``$PLUV_WIDGET_HOME``, default ``~/.pluv-widget``):

* ``server.log`` — the server's log (appended to);
* ``server.json`` — pid, port, URL, log and data locations of the server this module started;
* ``data/`` — the server's SQLite store, so rooms survive a server restart;
* ``server.lock`` — held while starting, so two kernels starting at once start one server.

``$PLUV_WIDGET_PORT`` (default 1999) moves the local server to another port.

The server is recognised by its ``/health`` answer (``{"server": "pluv-widget", "protocol": 1}``);
anything else on the port is an error, never silently shared. These functions print nothing:
``pluv-widget status`` / ``pluv-widget stop`` print what they return.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pluv_widget.protocol import DEFAULT_PORT, PROTOCOL_VERSION, SERVER_NAME

__all__ = [
    "IncompatibleServerError",
    "LocalServerError",
    "PortTakenError",
    "ensure_local_server",
    "local_home",
    "local_port",
    "local_status",
    "stop_local_server",
]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# The Popen of a server this process started: kept so it is not reported as a leaked resource
# and so stop_local_server() can reap it.
_started: subprocess.Popen[bytes] | None = None


class LocalServerError(RuntimeError):
    """The local server could not be found, started or stopped."""


class PortTakenError(LocalServerError):
    """Something that is not a pluv-widget server answers on the port."""


class IncompatibleServerError(LocalServerError):
    """A pluv-widget server speaking another protocol version answers on the port."""


def local_home() -> Path:
    """``$PLUV_WIDGET_HOME``, default ``~/.pluv-widget``: where the log, pid file and data live."""
    return Path(os.environ.get("PLUV_WIDGET_HOME") or Path.home() / ".pluv-widget").expanduser()


def local_port() -> int:
    """``$PLUV_WIDGET_PORT``, default 1999: the local server's port (tests use a free one)."""
    return int(os.environ.get("PLUV_WIDGET_PORT") or DEFAULT_PORT)


def ensure_local_server(port: int | None = None) -> str:
    """Return the WebSocket base URL of the local server on ``port``, starting it if needed.

    ``port`` defaults to :func:`local_port`.
    Blocks until the server answers ``/health`` (about a second on a cold start). Raises
    :class:`PortTakenError` or :class:`IncompatibleServerError` when the port is taken by something
    else, and :class:`LocalServerError` when the server fails to start (with its log's last lines).
    """
    port = local_port() if port is None else port
    url = f"ws://{HOST}:{port}"
    if _health(port) is not None:
        return url
    home = local_home()
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / "server.lock"):
        if _health(port) is not None:  # another kernel started it while we waited for the lock
            return url
        process = _spawn(home, port)
        _wait_until_healthy(process, port, home / "server.log")
        info = {
            "pid": process.pid,
            "host": HOST,
            "port": port,
            "url": url,
            "log": str(home / "server.log"),
            "data_dir": str(home / "data"),
            "started_at": time.time(),
            "python": sys.executable,
        }
        (home / "server.json").write_text(json.dumps(info, indent=2) + "\n")
    logger.info("started the local pluv-widget server at %s (pid %d, log %s)", url, process.pid, info["log"])
    return url


def local_status(port: int | None = None) -> dict[str, Any] | None:
    """What runs locally: ``server.json``'s fields plus ``health`` (the ``/health`` answer).

    ``None`` when no pluv-widget server answers on the port (``server.json``'s port, else
    :func:`local_port`). A server someone started by hand is reported too, with ``pid`` ``None``.
    """
    info = _read_info()
    if port is None:
        port = int(info["port"]) if info and "port" in info else local_port()
    health = _health(port)
    if health is None:
        return None
    ours = info is not None and info.get("port") == port and _alive(int(info.get("pid", 0)))
    status: dict[str, Any] = dict(info) if ours and info else {"pid": None, "port": port, "url": f"ws://{HOST}:{port}"}
    status.setdefault("log", str(local_home() / "server.log"))
    status.setdefault("data_dir", str(local_home() / "data"))
    status["health"] = health
    return status


def stop_local_server() -> bool:
    """Stop the server this module started (SIGTERM, then SIGKILL); ``False`` if none runs."""
    global _started
    info = _read_info()
    if info is None:
        return False
    pid = int(info.get("pid", 0))
    stopped = False
    if _alive(pid) and _is_our_server(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        stopped = True
    if _started is not None and _started.pid == pid:
        _started.wait()
        _started = None
    (local_home() / "server.json").unlink(missing_ok=True)
    return stopped


# -- helpers -------------------------------------------------------------------------------


def _health(port: int) -> dict[str, Any] | None:
    """``/health`` of our server on ``port``; ``None`` when nothing listens; raises if not ours."""
    where = f"{HOST}:{port}"
    try:
        with urllib.request.urlopen(f"http://{where}/health", timeout=5) as response:
            body = json.loads(response.read())
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None
        raise _port_taken(port, error) from None
    except ConnectionRefusedError:
        return None
    except (OSError, ValueError) as error:  # not HTTP, timed out, HTTP error status, not JSON
        raise _port_taken(port, error) from None
    if not isinstance(body, dict) or body.get("server") != SERVER_NAME:
        raise _port_taken(port, "its /health answer is not a pluv-widget server's")
    if body.get("protocol") != PROTOCOL_VERSION:
        raise IncompatibleServerError(
            f"the pluv-widget server on {where} speaks protocol {body.get('protocol')} "
            f"(version {body.get('version')}), this pluv-widget speaks protocol {PROTOCOL_VERSION}; "
            "stop it with `pluv-widget stop` (or end the process) and try again"
        )
    return body


def _port_taken(port: int, why: object) -> PortTakenError:
    return PortTakenError(
        f"port {port} on {HOST} is taken by something that is not a pluv-widget server ({why}); "
        "stop it, or pass url=... / set PLUV_WIDGET_URL to a pluv-widget server"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        deadline = time.monotonic() + START_TIMEOUT_S * 2
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LocalServerError(
                        f"timed out waiting for {path} (another kernel is starting the server)"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _spawn(home: Path, port: int) -> subprocess.Popen[bytes]:
    global _started
    command = [sys.executable, "-m", "pluv_widget", "serve", "--host", HOST, "--port", str(port)]
    command += ["--data-dir", str(home / "data")]
    # Run the same pluv_widget this process imported, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PLUV_WIDGET_HOME=str(home), PYTHONPATH=python_path, PYTHONUNBUFFERED="1")
    with (home / "server.log").open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        log.flush()
        try:
            _started = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=home,
                env=env,
                start_new_session=True,  # not killed with the kernel's process group
                close_fds=True,
            )
        except OSError as error:
            raise LocalServerError(f"cannot start the local pluv-widget server: {error}") from None
    return _started


def _wait_until_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalServerError(
                f"the local pluv-widget server exited with code {process.returncode} while starting; "
                f"last lines of {log}:\n{_tail(log)}"
            )
        try:
            if _health(port) is not None:
                return
        except LocalServerError:
            process.terminate()
            raise
        time.sleep(0.05)
    process.terminate()
    raise LocalServerError(f"the local pluv-widget server did not answer within {START_TIMEOUT_S:.0f} s; see {log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_info() -> dict[str, Any] | None:
    try:
        info = json.loads((local_home() / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_server(pid: int) -> bool:
    """Guard against a recycled pid: on Linux, check the command line."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust server.json
    return b"pluv_widget" in cmdline and b"serve" in cmdline
