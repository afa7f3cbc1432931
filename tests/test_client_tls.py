"""The client over TLS: ``wss://`` rooms and an ``https://`` token route served by the real server
(``certfile``/``keyfile``) with a self-signed certificate made here, trusted through
``ssl_ca_file`` or ``$PLUV_WIDGET_CA_FILE``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import until_storage

from pluv_widget import crdt, create_client
from pluv_widget.client.auth import fetch_token
from pluv_widget.errors import UsageError

SECRET = "a-test-secret-of-at-least-32-bytes-long"
MESSAGES = crdt.doc(lambda: {"messages": crdt.array([])})


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


async def test_wss_rooms_and_an_https_token_route_with_a_private_ca(
    certificate: tuple[Path, Path], start_server: Any, make_client: Any
) -> None:
    cert, key = certificate
    server = await start_server(secret=SECRET, join_code="maple", certfile=cert, keyfile=key)
    base = f"wss://127.0.0.1:{server.port}"
    token_url = f"https://127.0.0.1:{server.port}/token?join_code=maple&name="
    ada = await make_client(base, ssl_ca_file=cert, auth_endpoint=token_url + "ada",
                            initial_storage=MESSAGES).enter("class")
    bob = await make_client(base, ssl_ca_file=str(cert), auth_endpoint=token_url + "bob",
                            initial_storage=MESSAGES).enter("class")
    ada.storage("messages").append("over TLS")
    await until_storage(bob, "messages", lambda items: items == ["over TLS"])
    assert [user.id for user in bob.others] == [ada.myself.id]  # type: ignore[union-attr]


async def test_the_ca_file_can_come_from_the_environment(
    certificate: tuple[Path, Path], start_server: Any, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server = await start_server(certfile=cert, keyfile=key)
    monkeypatch.setenv("PLUV_WIDGET_CA_FILE", str(cert))
    room = await make_client(f"wss://127.0.0.1:{server.port}").enter("r", timeout=10)
    assert room.state == "open"


async def test_without_the_ca_the_certificate_is_refused_and_retried(
    certificate: tuple[Path, Path], start_server: Any, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server = await start_server(secret=SECRET, join_code="maple", certfile=cert, keyfile=key)
    monkeypatch.delenv("PLUV_WIDGET_CA_FILE", raising=False)
    with pytest.raises(OSError):  # an untrusted certificate is a network error (retried), not a refusal
        await fetch_token(f"https://127.0.0.1:{server.port}/token?join_code=maple&name=ada", "r")
    client = make_client(f"wss://127.0.0.1:{server.port}")
    room = client.create_room("r", reconnect_timeout_ms=100)
    with pytest.raises(TimeoutError):
        await client.enter(room, timeout=1.5)
    assert room.state == "unavailable"


def test_a_ca_file_that_cannot_be_read_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="CA file"):
        create_client(ssl_ca_file=tmp_path / "missing.pem")


async def test_a_widget_joins_a_class_server_behind_tls_with_its_ca_file(
    certificate: tuple[Path, Path], start_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RoomWidget(url="wss://...", join_code=..., ca_file=...)``: the socket and the token route
    (which also hands back the name's claim) both trust the private CA."""
    from pluv_widget.widget import RoomWidget

    monkeypatch.setenv("PLUV_WIDGET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PLUV_WIDGET_CA_FILE", raising=False)
    cert, key = certificate
    server = await start_server(secret=SECRET, join_code="maple", certfile=cert, keyfile=key)
    widget = RoomWidget("tls-class", url=f"wss://127.0.0.1:{server.port}", join_code="maple", user="Ada",
                        ca_file=str(cert))
    try:
        await widget.wait_until(lambda: widget.me.get("role") == "student", timeout=20)
        assert widget.connection_state == "open" and widget.me["name"] == "Ada"
    finally:
        widget.leave()
