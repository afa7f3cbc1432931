"""``pluv-widget`` (also ``python -m pluv_widget``): serve rooms, and manage the local server.

    pluv-widget serve [--app module:io] [--host 127.0.0.1] [--port 1999] [--secret S]
                      [--join-code C] [--data-dir DIR | --memory] [--redis URL]
    pluv-widget status      # the local server RoomWidget starts when nothing is configured
    pluv-widget stop
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from ..protocol import DEFAULT_PORT
from .io import PluvIO, create_io


def home_dir() -> Path:
    """Where the local server keeps its data, log and pid file: ``$PLUV_WIDGET_HOME`` or ~/.pluv-widget."""
    return Path(os.environ.get("PLUV_WIDGET_HOME") or Path.home() / ".pluv-widget")


def load_app(spec: str) -> PluvIO:
    """Load ``module:attribute`` (or ``path/to/file.py:attribute``) as uvicorn loads ``module:app``."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "io"
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name).resolve()
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise SystemExit(f"cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    io = getattr(module, attribute, None)
    if not isinstance(io, PluvIO):
        raise SystemExit(f"{spec}: expected a create_io(...) object, found {type(io).__name__}")
    return io


def build_io(args: argparse.Namespace) -> PluvIO:
    io = load_app(args.app) if args.app else create_io()
    secret = args.secret or os.environ.get("PLUV_WIDGET_SECRET")
    if secret:
        io.secret = secret
    if args.join_code:
        io.join_code = args.join_code
    if io.join_code is not None and io.secret is None:
        raise SystemExit("--join-code needs --secret (or PLUV_WIDGET_SECRET) to sign tokens")
    if args.redis:
        io.use_redis(args.redis)
    elif io.persistence is None:
        if args.memory:
            from .persistence import MemoryPersistence

            io.persistence = MemoryPersistence()
        else:
            io.data_dir = Path(args.data_dir) if args.data_dir else io.data_dir or home_dir() / "data"
    return io


def serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":  # websockets logs every HTTP request and connection at INFO
        logging.getLogger("websockets").setLevel(logging.WARNING)
    io = build_io(args)
    if io.data_dir is not None and io.persistence is None:
        logging.getLogger("pluv_widget.server").info("storage: SQLite in %s", io.data_dir)
    try:
        asyncio.run(io.serve(args.host, args.port))
    except OSError as error:
        raise SystemExit(f"cannot serve on {args.host}:{args.port}: {error}") from None


def status(_: argparse.Namespace) -> None:
    from .local import local_status

    info = local_status()
    if info is None:
        print(f"no local pluv-widget server is running (home: {home_dir()})")
        raise SystemExit(1)
    print(json.dumps(info, indent=2))


def stop(_: argparse.Namespace) -> None:
    from .local import stop_local_server

    if stop_local_server():
        print("stopped the local pluv-widget server")
    else:
        print("no local pluv-widget server was running")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pluv-widget", description="Real-time rooms for notebooks.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run a room server")
    run.add_argument("--app", help="module:attribute of your create_io(...) object (procedures, hooks)")
    run.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    run.add_argument("--secret", help="sign and require tokens (or PLUV_WIDGET_SECRET)")
    run.add_argument("--join-code", help="hand tokens to notebooks that present this code at /token")
    place = run.add_mutually_exclusive_group()
    place.add_argument("--data-dir", help="SQLite store folder (default $PLUV_WIDGET_HOME/data)")
    place.add_argument("--memory", action="store_true", help="keep storage in memory only")
    place.add_argument("--redis", help="redis://host:port/db: share rooms with other processes")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=serve)
    commands.add_parser("status", help="show the local server").set_defaults(func=status)
    commands.add_parser("stop", help="stop the local server").set_defaults(func=stop)
    args = parser.parse_args(argv)
    args.func(args)
