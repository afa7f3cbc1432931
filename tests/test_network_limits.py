"""Network and access hardening, against real servers over real sockets (issue 11): bounded
memory per connection, socket limits per address and in total, the token route under guessing,
secrets, and TLS. Distinct 127.0.0.x source addresses stand for distinct machines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pycrdt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from pluv_widget import CloseCode, Limits, create_io
from pluv_widget.errors import ServerConfigError
from pluv_widget.protocol import sync
from pluv_widget.server.logfilter import RepeatFilter
from pluv_widget.server.room_server import RoomServer

SECRET = "a-network-test-secret-of-more-than-32-bytes"
JOIN = json.dumps({"type": "join", "protocol": 2, "presence": {}})


def ws_url(server: RoomServer, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{server.port}"


async def joined(url: str, room: str, source: str = "127.0.0.1", **options: Any) -> ClientConnection:
    """A raw client from ``source`` that joined ``room`` (its welcome read)."""
    ws = await connect(f"{url}/{room}", local_addr=(source, 0), compression=None, max_size=None, **options)
    await ws.send(JOIN)
    async with asyncio.timeout(10):
        while '"welcome"' not in str(await ws.recv()):
            pass
    return ws


def deaf_socket(port: int, source: str) -> socket.socket:
    """A TCP socket with a tiny receive buffer: a client that reads (almost) nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def deaf_member(server: RoomServer, room: str, source: str) -> ClientConnection:
    ws = await connect(f"{ws_url(server)}/{room}", sock=deaf_socket(server.port, source), max_queue=1,
                       compression=None, max_size=None)
    await ws.send(JOIN)
    return ws


async def until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def fill(megabytes: float) -> Any:
    def edit(doc: pycrdt.Doc[Any]) -> None:
        items = doc.get("items", type=pycrdt.Array)
        for _ in range(int(megabytes * 500)):
            items.append("x" * 2000)

    return edit


TIGHT = Limits(send_buffer_pause_bytes=256 * 1024, max_send_buffer_bytes=2 * 1024 * 1024,
               send_stall_timeout_s=1.0, close_grace_s=0.5)


# -- outbound: a client that does not read is cut with 4007, and costs a bounded buffer ----------


async def _peak_unsent(server: RoomServer, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        sizes = [c.transport.get_write_buffer_size() for c in server.gate.open if not c.transport.is_closing()]
        peak.append(max(sizes, default=0))
        await asyncio.sleep(0.01)


async def test_sync_step1_flood_from_a_non_reader_is_bounded_and_cut(start_server: Any) -> None:
    server = await start_server(limits=TIGHT)
    await server.update_storage("big", fill(1.0))  # each step 1 asks for this whole megabyte
    honest = await joined(ws_url(server), "big")
    attacker = await deaf_member(server, "big", "127.0.0.2")
    stop, peak = asyncio.Event(), [0]
    watcher = asyncio.create_task(_peak_unsent(server, stop, peak))
    started = time.monotonic()
    for _ in range(200):
        try:
            await asyncio.wait_for(attacker.send(sync.step1(b"\x00")), 0.05)
        except (TimeoutError, ConnectionClosed):
            break
    await until(lambda: server.gate.cut >= 1 and server.connections == 1)
    cut_after = time.monotonic() - started
    stop.set()
    await watcher
    assert max(peak) <= TIGHT.max_send_buffer_bytes  # never more than the cap queued for it
    assert cut_after < 15
    await honest.send(json.dumps({"type": "presence", "patch": {"still": "here"}}))  # the room still serves
    assert honest.close_code is None
    attacker.transport.abort()
    await honest.close()


async def test_a_slow_consumer_in_a_busy_room_is_cut_and_the_writer_goes_on(start_server: Any) -> None:
    server = await start_server(limits=TIGHT)
    writer = await joined(ws_url(server), "busy")
    slow = await deaf_member(server, "busy", "127.0.0.2")
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    items = doc.get("items", type=pycrdt.Array)

    async def drain() -> None:
        async for _ in writer:
            pass

    draining = asyncio.create_task(drain())
    deadline = time.monotonic() + 30
    while server.gate.cut == 0 and time.monotonic() < deadline:
        before = doc.get_state()
        items.append("y" * 20_000)
        await writer.send(sync.update(doc.get_update(before)))
        await asyncio.sleep(0.01)
    assert server.gate.cut == 1
    await until(lambda: server.connections == 1)
    assert writer.close_code is None
    draining.cancel()
    slow.transport.abort()
    await writer.close()


# -- inbound: bytes are paced like messages --------------------------------------------------


async def test_bytes_per_second_pace_a_sender_and_say_so(start_server: Any) -> None:
    server = await start_server(limits=Limits(max_bytes_per_s=200_000, byte_burst=100_000))
    sender = await joined(ws_url(server), "room")
    listener = await joined(ws_url(server), "room")
    started = time.monotonic()
    for index in range(10):  # 10 × 40 kB = 400 kB: about 1.5 s at 200 kB/s after the burst
        await sender.send(json.dumps({"type": "event", "event": "blob", "data": f"{index}" + "e" * 40_000}))
    heard = 0
    async with asyncio.timeout(20):
        while heard < 10:
            if '"blob"' in str(await listener.recv()):
                heard += 1
    assert time.monotonic() - started > 1.2
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await sender.recv())
            if message.get("type") == "error":
                assert message["code"] == "rate_limited" and "bytes/s" in message["message"]
                break
    await sender.close()
    await listener.close()


# -- sockets: per address, in total, handshake timeout, file descriptors -------------------------


def _refused(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(64).startswith(b"HTTP/1.1 503")
    except OSError:
        return False


async def test_idle_sockets_from_one_address_do_not_lock_others_out(start_server: Any) -> None:
    server = await start_server(limits=Limits(max_pending_per_address=5))
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(12)]
    await asyncio.sleep(0.3)
    refused = await asyncio.to_thread(lambda: sum(_refused(sock) for sock in idle[5:]))
    assert refused == 7 and server.gate.refused == 7
    for source in ("127.0.0.2", "127.0.0.3"):  # students on other machines still get in
        ws = await joined(ws_url(server), "class", source=source)
        await ws.close()
    for sock in idle:
        sock.close()


async def test_the_total_of_pending_sockets_is_capped(start_server: Any) -> None:
    server = await start_server(limits=Limits(max_pending_connections=6, max_pending_per_address=100))
    idle = [socket.create_connection(("127.0.0.1", server.port), source_address=(f"127.0.0.{1 + i % 3}", 0))
            for i in range(6)]
    await asyncio.sleep(0.3)
    late = socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.9", 0))
    assert await asyncio.to_thread(_refused, late)
    for sock in idle:
        sock.close()
    late.close()
    await until(lambda: server.gate.pending == 0)
    ws = await joined(ws_url(server), "class", source="127.0.0.9")  # room again once they are gone
    await ws.close()


async def test_a_silent_socket_is_dropped_after_the_handshake_timeout(start_server: Any) -> None:
    server = await start_server(limits=Limits(handshake_timeout_s=0.5))
    sock = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    sock.settimeout(5)
    assert await asyncio.to_thread(sock.recv, 64) == b""
    assert time.monotonic() - started < 3
    sock.close()
    await until(lambda: server.gate.pending == 0)


async def test_the_open_file_limit_is_raised_with_headroom(start_server: Any) -> None:
    server = await start_server()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY
    assert server.gate.max_total <= soft - Limits().fd_headroom
    assert server.gate.max_pending <= server.gate.max_total // 2


async def test_refusals_are_logged_a_bounded_number_of_times(start_server: Any, caplog: Any) -> None:
    server = await start_server(limits=Limits(max_pending_per_address=1, log_lines_per_min=5))
    first = socket.create_connection(("127.0.0.1", server.port))
    await asyncio.sleep(0.2)
    with caplog.at_level(logging.WARNING, logger="pluv_widget.server"):
        for _ in range(40):
            socket.create_connection(("127.0.0.1", server.port)).close()
        await until(lambda: server.gate.refused >= 40)
    lines = [r for r in caplog.records if r.getMessage().startswith("refused a socket")]
    assert len(lines) <= 5  # 40 refusals (the filter is per process: earlier tests may have used some)
    first.close()


def test_the_repeat_filter_says_how_many_it_suppressed() -> None:
    records = [logging.LogRecord("x", logging.WARNING, __file__, 1, "refused %s", ("a",), None) for _ in range(10)]
    repeat = RepeatFilter(per_minute=3, window_s=0.2)
    assert [repeat.filter(record) for record in records[:5]] == [True, True, True, False, False]
    time.sleep(0.25)
    assert repeat.filter(records[5]) and "suppressed 2 similar lines" in records[5].getMessage()


# -- behind a proxy: X-Forwarded-For only from a trusted one; identities ----------------------------


async def test_forwarded_clients_are_counted_apart_only_behind_a_trusted_proxy(start_server: Any) -> None:
    limits = Limits(max_pending_per_address=2)
    server = await start_server(limits=limits, trusted_proxies=["127.0.0.1"])

    async def via_proxy(client: str) -> ClientConnection:  # handshake done, no join yet: pending
        return await connect(f"{ws_url(server)}/class", additional_headers={"X-Forwarded-For": client})

    a = [await via_proxy("10.0.0.1"), await via_proxy("10.0.0.1")]
    with pytest.raises(InvalidStatus) as refused:
        await via_proxy("10.0.0.1")
    assert refused.value.response.status_code == 503 and refused.value.response.headers["Retry-After"]
    b = await via_proxy("10.0.0.2")  # another user behind the same proxy is not refused
    untrusted = await start_server(limits=limits)  # XFF from an untrusted peer is ignored
    c = [await connect(f"{ws_url(untrusted)}/class", local_addr=("127.0.0.5", 0),
                       additional_headers={"X-Forwarded-For": f"10.0.0.{i}"}) for i in range(2)]
    with pytest.raises((InvalidStatus, ConnectionClosed, OSError)):
        await connect(f"{ws_url(untrusted)}/class", local_addr=("127.0.0.5", 0),
                      additional_headers={"X-Forwarded-For": "10.0.0.9"}, open_timeout=3)
    for ws in [*a, b, *c]:
        await ws.close()


async def test_one_user_has_at_most_max_connections_per_user_in_a_room(start_server: Any) -> None:
    server = await start_server(secret=SECRET, limits=Limits(max_connections_per_user=2))
    token = server.io.create_token(room="class", user={"id": "ada"})
    tabs = [await joined(ws_url(server), f"class?token={token}") for _ in range(2)]
    third = await connect(f"{ws_url(server)}/class?token={token}")
    await third.send(JOIN)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(third.recv(), 10)
    assert third.close_code == CloseCode.TOO_MANY_CONNECTIONS == 4008
    other = await joined(ws_url(server), f"class?token={server.io.create_token(room='class', user={'id': 'bo'})}")
    for ws in [*tabs, other]:
        await ws.close()


# -- the token route and secrets ----------------------------------------------------------------


def _get(url: str, context: ssl.SSLContext | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, json.loads(answer.read()), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


async def test_wrong_codes_are_rate_limited_with_429_and_retry_after(start_server: Any) -> None:
    server = await start_server(secret=SECRET, join_code="blue-fox", trusted_proxies=["127.0.0.1"],
                                limits=Limits(wrong_code_burst=3, max_wrong_codes_per_min=6))
    base = f"http://127.0.0.1:{server.port}/token?room=class&name=Ada&join_code="
    guesser = {"X-Forwarded-For": "10.1.1.1"}
    statuses = [(await asyncio.to_thread(_get, base + f"guess{i}", None, guesser))[0] for i in range(3)]
    assert statuses == [403, 403, 403]
    status, body, headers = await asyncio.to_thread(_get, base + "blue-fox", None, guesser)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 10 and "retry" in body["error"]
    status, body, _ = await asyncio.to_thread(_get, base + "blue-fox", None, {"X-Forwarded-For": "10.1.1.2"})
    assert status == 200 and body["token"]  # another student behind the same proxy is not punished


async def test_any_unicode_join_code_works(start_server: Any) -> None:
    code = "érable-🍁-клён"
    server = await start_server(secret=SECRET, join_code=code)
    base = f"http://127.0.0.1:{server.port}/token?room=class&name=Ada&join_code="
    quoted = urllib.request.quote(code)
    assert (await asyncio.to_thread(_get, base + quoted))[0] == 200
    assert (await asyncio.to_thread(_get, base + urllib.request.quote("érable-🍂")))[0] == 403


async def test_a_secret_shorter_than_32_bytes_is_refused_at_start() -> None:
    with pytest.raises(ServerConfigError, match="at least 32"):
        await create_io(secret="s3cret").start("127.0.0.1", 0)


@pytest.mark.parametrize("claims", [{"exp": "99999999999"}, {"exp": True}, {"iat": "now"}, {"nbf": [1]}])
async def test_time_claims_must_be_numbers(start_server: Any, claims: dict[str, Any]) -> None:
    server = await start_server(secret=SECRET)
    token = jwt.encode({"room": "r", "user": {"id": "u"}, "exp": time.time() + 60, **claims}, SECRET)
    ws = await connect(f"{ws_url(server)}/r?token={token}")
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == CloseCode.TOKEN_INVALID


def test_a_join_code_without_a_secret_generates_one_that_survives_restarts(server_process: Any,
                                                                            tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = server_process("--data-dir", str(data), "--join-code", "maple")
    status, body, _ = _get(first.url.replace("ws://", "http://") + "/token?room=class&name=Ada&join_code=maple")
    assert status == 200
    secret_file = data / "secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600 and len(secret_file.read_text().strip()) >= 32
    first.stop()
    second = server_process("--data-dir", str(data), "--join-code", "maple", port=first.port)

    async def enter() -> None:
        ws = await joined(second.url, f"class?token={body['token']}")
        await ws.close()

    asyncio.run(enter())  # the token handed out before the restart is still valid


# -- TLS: wss:// and https:// on one port ---------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: Any) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def test_tls_serves_wss_https_health_and_tokens(start_server: Any, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = await start_server(secret=SECRET, join_code="oak", certfile=cert, keyfile=key)
    trusting = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{server.port}"
    status, health, _ = await asyncio.to_thread(_get, base + "/health", trusting)
    assert status == 200 and health["server"] == "pluv-widget"
    status, body, _ = await asyncio.to_thread(_get, base + "/token?room=class&name=Ada&join_code=oak", trusting)
    assert status == 200
    ws = await joined(ws_url(server, "wss"), f"class?token={body['token']}", ssl=trusting)
    await ws.close()
    with pytest.raises(ssl.SSLError):  # a client that does not trust the certificate is refused
        await connect(f"{ws_url(server, 'wss')}/class", ssl=ssl.create_default_context())
    with pytest.raises((InvalidHandshake, ConnectionClosed, OSError)):  # no clear text on a TLS port
        await connect(f"{ws_url(server)}/class", open_timeout=3)


def test_the_cli_serves_tls(server_process: Any, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    process = server_process("--memory", "--certfile", str(cert), "--keyfile", str(key))
    status, health, _ = _get(f"https://127.0.0.1:{process.port}/health", ssl.create_default_context(cafile=str(cert)))
    assert status == 200 and health["server"] == "pluv-widget"
