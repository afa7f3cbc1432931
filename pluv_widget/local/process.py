"""The local server as a process: start it detached, wait for it, recognise it, stop it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import LocalServerError
from .files import HOST
from .health import probe

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# The Popen of a server this process started: kept so it is not reported as a leaked resource
# and so a stop can reap it.
_started: subprocess.Popen[bytes] | None = None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock: one kernel at a time starts or replaces the server."""
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


def spawn(home: Path, port: int) -> subprocess.Popen[bytes]:
    """``python -m pluv_widget serve`` in its own session (it outlives the kernel), logging to
    ``home/server.log``."""
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


def wait_until_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalServerError(
                f"the local pluv-widget server exited with code {process.returncode} while starting; "
                f"last lines of {log}:\n{tail(log)}"
            )
        try:
            if probe(port) is not None:
                return
        except LocalServerError:
            process.terminate()
            raise
        time.sleep(0.05)
    process.terminate()
    raise LocalServerError(f"the local pluv-widget server did not answer within {START_TIMEOUT_S:.0f} s; see {log}")


def terminate(pid: int) -> bool:
    """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`; ``False`` if ``pid`` is not running
    our server. Reaps it when this process started it."""
    global _started
    stopped = False
    if alive(pid) and is_our_server(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        stopped = True
    if _started is not None and _started.pid == pid:
        _started.wait()
        _started = None
    return stopped


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def alive(pid: int) -> bool:
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


def is_our_server(pid: int) -> bool:
    """Guard against a recycled pid: on Linux, check the command line."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust server.json
    return b"pluv_widget" in cmdline and b"serve" in cmdline
