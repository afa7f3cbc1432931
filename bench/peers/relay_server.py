"""The raw relay: a ``websockets`` server that re-broadcasts each frame to the rest of its room.

The floor any room server is measured against: no parsing, no state, no storage. A room is
the request path; each frame received is pushed once with :func:`websockets.broadcast` to
every other connection on the same path. Compression is off.

    python -m bench.peers.relay_server --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: dict[str, set[ServerConnection]] = {}


async def relay(connection: ServerConnection) -> None:
    path = connection.request.path if connection.request else "/"
    room = rooms.setdefault(path, set())
    room.add(connection)
    try:
        async for frame in connection:
            broadcast([peer for peer in room if peer is not connection], frame)
    finally:
        room.discard(connection)
        if not room:
            del rooms[path]


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(relay, host, port, compression=None, max_size=64 * 1024 * 1024):
        print(f"raw relay on ws://{host}:{port}", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
