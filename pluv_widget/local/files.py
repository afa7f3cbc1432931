"""Where the local server lives: ``$PLUV_WIDGET_HOME``, its port, and ``server.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..protocol import DEFAULT_HOST, DEFAULT_PORT

#: The local server listens on loopback only.
HOST = DEFAULT_HOST


def local_home() -> Path:
    """``$PLUV_WIDGET_HOME``, default ``~/.pluv-widget``: where the log, pid file and data live."""
    return Path(os.environ.get("PLUV_WIDGET_HOME") or Path.home() / ".pluv-widget").expanduser()


def local_port() -> int:
    """``$PLUV_WIDGET_PORT``, default 1999: the local server's port (tests use a free one)."""
    return int(os.environ.get("PLUV_WIDGET_PORT") or DEFAULT_PORT)


def ws_url(port: int) -> str:
    return f"ws://{HOST}:{port}"


def info_path() -> Path:
    return local_home() / "server.json"


def log_path() -> Path:
    return local_home() / "server.log"


def data_dir() -> Path:
    return local_home() / "data"


def read_info() -> dict[str, Any] | None:
    """``server.json``: what the last server this machine started wrote about itself."""
    try:
        info = json.loads(info_path().read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def write_info(info: dict[str, Any]) -> None:
    info_path().write_text(json.dumps(info, indent=2) + "\n")


def forget_info() -> None:
    info_path().unlink(missing_ok=True)
