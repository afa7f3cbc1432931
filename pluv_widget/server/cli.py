"""``pluv-widget`` (also ``python -m pluv_widget``): serve rooms, and manage the local server.

    pluv-widget serve [--app module:io] [--host HOST] [--port PORT] [--secret S]
                      [--join-code C[@prefix] ...] [--teacher-code C[@prefix] ...]
                      [--observer-code C[@prefix] ...] [--data-dir DIR | --memory] [--redis URL]
                      [--certfile CERT --keyfile KEY] [--trusted-proxy ADDR ...]
    pluv-widget status      # the local server RoomWidget starts when nothing is configured
    pluv-widget stop
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from ..errors import ServerConfigError
from ..protocol import DEFAULT_HOST, DEFAULT_PORT
from .access import build_codes
from .guard import parse_proxies
from .hub import add_hub_arguments, configure_hub
from .io import PluvIO, create_io
from .tokens import SECRET_FILE, check_secret, stored_secret


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
        io.join_codes = list(args.join_code)
    if args.teacher_code:
        io.teacher_codes = list(args.teacher_code)
    if args.observer_code:
        io.observer_codes = list(args.observer_code)
    if args.certfile or args.keyfile:
        io.certfile, io.keyfile = args.certfile, args.keyfile
    if args.trusted_proxy:
        io.trusted_proxies = [*io.trusted_proxies, *args.trusted_proxy]
    io.protected_roots = [*io.protected_roots, *args.protected_root]
    io.teacher_only_roots = [*io.teacher_only_roots, *args.teacher_only_root]
    if args.storage_ttl is not None:
        io.storage_ttl_s = args.storage_ttl
    webhook_secret = args.webhook_secret or os.environ.get("PLUV_WIDGET_WEBHOOK_SECRET")
    if args.webhook_url or webhook_secret:
        io.webhook_url, io.webhook_secret = args.webhook_url, webhook_secret
    if args.redis:
        io.use_redis(args.redis)
    elif io.persistence is None:
        if args.memory:
            from .storage.memory import MemoryPersistence

            io.persistence = MemoryPersistence()
        else:
            io.data_dir = Path(args.data_dir) if args.data_dir else io.data_dir or home_dir() / "data"
    configure_hub(io, args, Path(args.data_dir) if args.data_dir else io.data_dir or home_dir() / "data")
    if io.has_codes and io.secret is None:
        if args.redis:
            raise SystemExit("--join-code with --redis needs --secret (or PLUV_WIDGET_SECRET; so do --teacher-code "
                             "and --observer-code): every server process must sign tokens with the same secret, "
                             "so none can be generated")
        # Generated once and kept beside the rooms (mode 0600): restarts keep tokens valid.
        folder = Path(args.data_dir) if args.data_dir else io.data_dir or home_dir() / "data"
        try:
            io.secret = stored_secret(folder)
        except (OSError, ServerConfigError) as error:
            raise SystemExit(f"cannot keep a generated secret in {folder / SECRET_FILE}: {error}") from None
        logging.getLogger("pluv_widget.server").info("tokens signed with the secret kept in %s", folder / SECRET_FILE)
    try:  # refuse a short secret, a bad proxy address or certificate now, with a clear error
        if io.secret is not None:
            check_secret(io.secret)
        build_codes(join_codes=io.join_codes, teacher_codes=io.teacher_codes, observer_codes=io.observer_codes)
        parse_proxies(io.trusted_proxies)
        io.ssl_context()
    except ValueError as error:  # ServerConfigError is one
        raise SystemExit(f"pluv-widget serve: {error}") from None
    return io


def serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":  # websockets logs every HTTP request and connection at INFO
        logging.getLogger("websockets").setLevel(logging.WARNING)
    io = build_io(args)
    if io.data_dir is not None and io.persistence is None:
        logging.getLogger("pluv_widget.server").info("storage: SQLite in %s", io.data_dir)
    tune_gc()
    try:
        asyncio.run(io.serve(args.host, args.port, ssl=io.ssl_context()))
    except OSError as error:
        raise SystemExit(f"cannot serve on {args.host}:{args.port}: {error}") from None


#: Allocations between two collections of the youngest generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 100_000


def tune_gc() -> None:
    """A server process's collector: what was imported and built before serving lives as long
    as the process, so it is kept out of the collector's passes (which otherwise walk it again
    and again under load), and the young generation is collected every 100,000 allocations
    instead of 700 (a storage frame allocates dozens; cycles are rare, everything else is freed by
    reference counting). Storage fan-out, 1 writer x 50 readers: ~1.0M edits delivered/s
    without, ~1.9M with (``python -m bench.run --variants fanout-50``; bench/baseline/fanout/)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def status(_: argparse.Namespace) -> None:
    from ..local import local_status

    info = local_status()
    if info is None:
        print(f"no local pluv-widget server is running (home: {home_dir()})")
        raise SystemExit(1)
    print(json.dumps(info, indent=2))


def doctor(args: argparse.Namespace) -> None:
    from ..local.doctor import report, run

    findings = run(args.url)
    print(report(findings))
    if not all(finding.ok for finding in findings):
        sys.exit(1)


def stop(_: argparse.Namespace) -> None:
    from ..local import stop_local_server

    if stop_local_server():
        print("stopped the local pluv-widget server")
    else:
        print("no local pluv-widget server was running")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pluv-widget", description="Real-time rooms for notebooks.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run a room server")
    run.add_argument("--app", help="module:attribute of your create_io(...) object (procedures, hooks)")
    run.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    run.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    run.add_argument("--secret", help="sign and require tokens, at least 32 bytes (or PLUV_WIDGET_SECRET)")
    run.add_argument("--join-code", action="append", default=[], metavar="CODE[@PREFIX]",
                     help="hand student tokens to notebooks that present this code at /token, for rooms starting "
                          "with PREFIX if given (repeatable; without --secret, one is generated and kept in the "
                          "data directory)")
    run.add_argument("--teacher-code", action="append", default=[], metavar="CODE[@PREFIX]",
                     help="the same, for teacher tokens (repeatable)")
    run.add_argument("--observer-code", action="append", default=[], metavar="CODE[@PREFIX]",
                     help="the same, for observer (read-only) tokens (repeatable)")
    place = run.add_mutually_exclusive_group()
    place.add_argument("--data-dir", help="SQLite store folder (default $PLUV_WIDGET_HOME/data)")
    place.add_argument("--memory", action="store_true", help="keep storage in memory only")
    place.add_argument("--redis", help="redis://host:port/db: share rooms with other processes")
    run.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss:// and https://")
    run.add_argument("--keyfile", help="the certificate's private key (PEM), unless it is in --certfile")
    run.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                     help="believe X-Forwarded-For from this proxy address (repeatable)")
    add_hub_arguments(run)
    run.add_argument("--protected-root", action="append", default=[], metavar="ROOT",
                     help="a storage root clients only read (written by the server), repeatable")
    run.add_argument("--teacher-only-root", action="append", default=[], metavar="ROOT",
                     help="a protected root teachers may also write directly, repeatable")
    run.add_argument("--storage-ttl", type=float, metavar="SECONDS",
                     help="drop a room's storage this long after its generation began")
    run.add_argument("--webhook-url", metavar="URL", help="POST signed webhooks of room events here")
    run.add_argument("--webhook-secret", metavar="whsec_...",
                     help="the webhooks' Standard Webhooks secret (or $PLUV_WIDGET_WEBHOOK_SECRET)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=serve)
    commands.add_parser("status", help="show the local server").set_defaults(func=status)
    commands.add_parser("stop", help="stop the local server").set_defaults(func=stop)
    checkup = commands.add_parser("doctor", help="check what breaks rooms on this machine, and say how to fix it")
    checkup.add_argument("--url", help="the server to check (default: $PLUV_WIDGET_URL, else the local server)")
    checkup.set_defaults(func=doctor)
    args = parser.parse_args(argv)
    args.func(args)
