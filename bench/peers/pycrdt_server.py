"""pycrdt-websocket's server as its documentation shows it: a ``WebsocketServer`` behind ``websockets``.

pycrdt-websocket expects the legacy ``websockets`` connection (``.path``, ``send``, ``recv``,
async iteration); :class:`Channel` gives the current asyncio connection that shape, and rooms
are opened one at a time (see ``handler``). Everything else is stock: rooms cleaned when empty,
no store, ``websockets``' defaults (compression negotiated when the client offers it) except
``max_size``, raised so that a 5 MB document fits in one frame.

    python -m bench.peers.pycrdt_server --port 8766
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from pycrdt.websocket import WebsocketServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class Channel:
    """The ``pycrdt.Channel`` shape over a ``websockets`` asyncio server connection."""

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection
        self._path = connection.request.path if connection.request else "/"

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        try:
            await self._connection.send(message)
        except ConnectionClosed:
            pass  # the room notices when this client's own receive loop ends

    async def recv(self) -> bytes:
        message = await self._connection.recv()
        return message if isinstance(message, bytes) else message.encode()


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)

    def log_exception(exception: Exception, log: logging.Logger) -> bool:
        log.warning("room error: %r", exception)
        return True

    async with WebsocketServer(exception_handler=log_exception) as websocket_server:
        opening = asyncio.Lock()

        async def handler(connection: ServerConnection) -> None:
            channel = Channel(connection)
            # WebsocketServer.get_room() hangs the second of two connections that open the
            # same new room at once (both try to start it): open rooms one at a time.
            async with opening:
                await websocket_server.get_room(channel.path)
            await websocket_server.serve(channel)

        async with serve(handler, host, port, max_size=64 * 1024 * 1024):
            print(f"pycrdt-websocket on ws://{host}:{port}", flush=True)
            await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
