"""The JupyterHub service's pure parts, without a hub (tests/test_jupyterhub.py runs a real one)."""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import free_port, url_of

from pluv_widget.server.cli import main
from pluv_widget.server.hub import HubIdentity, HubUnavailableError, hub_token_of, unprefixed
from pluv_widget.server.tokens import TokenRequest
from pluv_widget.widget.settings import WidgetSettings

PREFIX = "/services/pluv/"


@pytest.mark.parametrize(("path", "expected"), [
    ("/services/pluv/health", "/health"),
    ("/services/pluv/token?room=a&hub_token=t", "/token?room=a&hub_token=t"),
    ("/services/pluv/my-room?token=x", "/my-room?token=x"),
    ("/services/pluv/", "/"),
    ("/services/pluv", "/"),
    ("/services/pluv?x=1", "/?x=1"),
    ("/health", "/health"),  # direct requests are untouched
    ("/my-room?token=x", "/my-room?token=x"),
    ("/services/pluvious/health", "/services/pluvious/health"),
    ("/services/other/health", "/services/other/health"),
])
def test_every_route_answers_under_the_prefix_and_directly(path: str, expected: str) -> None:
    assert unprefixed(path, PREFIX) == expected
    assert unprefixed(path, "") == path


def test_the_hub_token_comes_from_the_query_or_the_authorization_header() -> None:
    def request(params: dict[str, str], headers: dict[str, str]) -> TokenRequest:
        return TokenRequest("r", "n", None, params, headers)

    assert hub_token_of(request({"hub_token": "abc"}, {})) == "abc"
    assert hub_token_of(request({}, {"authorization": "token abc"})) == "abc"
    assert hub_token_of(request({}, {"Authorization": "Bearer abc"})) == "abc"
    assert hub_token_of(request({"hub_token": " "}, {"Authorization": "Basic abc"})) is None
    assert hub_token_of(request({}, {})) is None


def test_a_hub_user_becomes_a_pluv_user_with_a_role() -> None:
    identity = HubIdentity(auth=None)
    assert identity.user_for({"kind": "user", "name": "ada", "groups": ["teachers"], "admin": False}) == {
        "id": "ada", "name": "ada", "role": "teacher"}
    assert identity.user_for({"kind": "user", "name": "bo", "groups": [], "admin": True})["role"] == "student"
    assert HubIdentity(auth=None, admins_are_teachers=True).user_for(
        {"kind": "user", "name": "bo", "groups": [], "admin": True})["role"] == "teacher"
    assert HubIdentity(auth=None, teacher_group="staff").user_for(
        {"kind": "user", "name": "ada", "groups": ["teachers"]})["role"] == "student"
    for model in (None, {"kind": "service", "name": "pluv"}, {"kind": "user", "name": ""}, {"kind": "user"}, []):
        assert identity.user_for(model) is None


def test_jupyterhub_mode_needs_the_hub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    with pytest.raises(SystemExit, match="JUPYTERHUB_API_TOKEN and JUPYTERHUB_API_URL not set"):
        main(["serve", "--jupyterhub", "--memory"])


def test_a_hub_kernel_needs_nothing_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "the-servers-own-token")
    monkeypatch.setenv("PLUV_WIDGET_URL", "ws://hub.example:8000/services/pluv/")
    monkeypatch.setenv("PLUV_WIDGET_HUB_TOKEN", "identify-only")
    monkeypatch.delenv("PLUV_WIDGET_JOIN_CODE", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings = WidgetSettings.resolve(user=None, url=None, join_code=None)
    assert settings.name == "ada" and settings.url == "ws://hub.example:8000/services/pluv/"
    assert settings.auth_endpoint is not None
    url = urlsplit(settings.auth_endpoint)
    assert (url.scheme, url.netloc, url.path) == ("http", "hub.example:8000", "/services/pluv/token")
    assert parse_qs(url.query) == {"name": ["ada"], "hub_token": ["identify-only"]}
    assert "the-servers-own-token" not in settings.auth_endpoint
    # A URL typed in a cell never gets the hub token.
    elsewhere = WidgetSettings.resolve(user=None, url="ws://elsewhere:1999", join_code=None)
    assert elsewhere.auth_endpoint is None


async def test_a_hub_that_does_not_answer_is_a_server_error_not_a_refusal(start_server: Any) -> None:
    """A real HubAuth pointed at a closed port: the /token request fails with a 5xx (the widget
    retries), never a 403 (which would stop it for good)."""
    import asyncio
    import urllib.error
    import urllib.request

    closed = free_port()
    identity = HubIdentity.from_environment(environ={
        "JUPYTERHUB_API_TOKEN": "x", "JUPYTERHUB_API_URL": f"http://127.0.0.1:{closed}/hub/api"})
    with pytest.raises(HubUnavailableError):
        await identity(TokenRequest("r", "n", None, {"hub_token": "t"}, {}))
    server = await start_server(secret="s" * 32, mint_user=identity, path_prefix=PREFIX)
    url = f"{url_of(server).replace('ws://', 'http://')}/services/pluv/token?room=r&name=n&hub_token=t"
    with pytest.raises(urllib.error.HTTPError) as failed:
        await asyncio.to_thread(urllib.request.urlopen, url, timeout=30)
    assert failed.value.code >= 500
