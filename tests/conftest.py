"""Shared fixtures: real servers on 127.0.0.1 (in-process or as subprocesses) and clients that
are closed after each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import ServerProcess, url_of
from redis_helpers import REDIS_SERVER, RedisServer
from redis_helpers import ServerProcess as RedisServerProcess

from pluv_widget import PluvClient, create_client, create_io
from pluv_widget.server.room_server import RoomServer

if TYPE_CHECKING:
    from pluv_widget import RoomWidget

ServerFactory = Callable[..., Awaitable[RoomServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[ServerFactory]:
    """``await start_server(**create_io_options)``: a real server on a free 127.0.0.1 port."""
    servers: list[RoomServer] = []

    async def start(port: int = 0, **options: Any) -> RoomServer:
        server = await create_io(**options).start("127.0.0.1", port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def server(start_server: ServerFactory) -> RoomServer:
    return await start_server()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., PluvClient]]:
    """``make_client(server_or_url, **create_client_options)``, left at the end of the test."""
    clients: list[PluvClient] = []

    def make(target: RoomServer | str | list[str], **options: Any) -> PluvClient:
        endpoint = url_of(target) if isinstance(target, RoomServer) else target
        client = create_client(ws_endpoint=endpoint, **options)
        clients.append(client)
        return client

    yield make
    await asyncio.gather(*(client.aclose() for client in clients))


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    processes: list[ServerProcess] = []

    def make(*args: str, port: int | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        process = ServerProcess(*args, port=port, env={"PLUV_WIDGET_HOME": str(tmp_path / "home"), **(env or {})})
        processes.append(process)
        return process.start()

    yield make
    for process in processes:
        process.stop()


# -- Redis: a real redis-server (never a mock); a missing binary fails the tests ---------------


def _redis(directory: Path) -> RedisServer:
    if not Path(REDIS_SERVER).exists():
        pytest.fail(f"{REDIS_SERVER} is missing: the Redis tests need Debian's redis-server "
                    "(apt-get install redis-server)")
    return RedisServer(directory).start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (``--save '' --appendonly no``, 127.0.0.1, a free port).
    Tests share it: each uses its own room names."""
    server = _redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, for tests that stop or empty it."""
    server = _redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def redis_processes(tmp_path: Path) -> Iterator[Callable[..., RedisServerProcess]]:
    """``spawn(redis_url, *serve_args, name=...)``: a ``pluv-widget serve --redis`` subprocess
    on a free port, stopped at the end of the test (its log is in tmp_path)."""
    processes: list[RedisServerProcess] = []

    def spawn(redis_url: str, *args: str, name: str = "server") -> RedisServerProcess:
        process = RedisServerProcess(redis_url, tmp_path, *args, name=name)
        processes.append(process)
        return process.start()

    yield spawn
    for process in processes:
        process.stop()


@pytest.fixture
def widgets() -> Iterator[list[RoomWidget]]:
    """The widgets a test made (append them): each leaves its room at the end."""
    made: list[RoomWidget] = []
    yield made
    for widget in made:
        widget.leave()
