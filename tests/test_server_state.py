"""Server-held state (``Persistence.get_value`` … ``read_log``) on every backend: memory, SQLite
(and across a reopen of its file) and a real redis-server (two adapters = two processes)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis_helpers import RedisServer

from pluv_widget.server.storage import MemoryPersistence, Persistence, SqlitePersistence
from pluv_widget.server.storage.redis import RedisPersistence

_prefixes = itertools.count()

Factory = Callable[[], Persistence]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """``make()`` returns another handle on one store: the same object in memory, a second
    connection to the same file or the same Redis prefix otherwise."""
    made: list[Persistence] = []
    memory = MemoryPersistence()
    prefix = f"state-test-{time.monotonic_ns()}-{next(_prefixes)}"

    def make() -> Persistence:
        store: Persistence
        if request.param == "memory":
            return memory
        if request.param == "sqlite":
            store = SqlitePersistence(tmp_path / "state.sqlite3")
        else:
            redis_server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisPersistence(redis_server.url, prefix=prefix)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def test_values_round_trip(stores: Factory) -> None:
    store = stores()
    assert await store.get_value("claims:a-", "ada") is None
    assert await store.put_value("claims:a-", "ada", {"id": "u-1", "hash": "x", "n": 1.5, "l": [1, None]})
    assert await store.get_value("claims:a-", "ada") == {"id": "u-1", "hash": "x", "n": 1.5, "l": [1, None]}
    assert await store.get_value("claims:b-", "ada") is None  # scopes are separate
    assert await store.put_value("claims:a-", "ada", "replaced")
    assert await store.get_value("claims:a-", "ada") == "replaced"
    assert await store.put_value("claims:a-", "bob", 3)
    assert await store.list_values("claims:a-") == {"ada": "replaced", "bob": 3}
    assert await store.list_values("nothing") == {}
    assert await store.delete_value("claims:a-", "ada") is True
    assert await store.delete_value("claims:a-", "ada") is False
    assert await store.list_values("claims:a-") == {"bob": 3}


async def test_put_if_absent_has_one_winner(stores: Factory) -> None:
    first, second = stores(), stores()
    assert await first.put_value("locks", "room", {"by": "a"}, if_absent=True) is True
    assert await second.put_value("locks", "room", {"by": "b"}, if_absent=True) is False
    assert await second.get_value("locks", "room") == {"by": "a"}
    # Racing writers on separate handles: exactly one wins.
    results = await asyncio.gather(*(
        (first if i % 2 else second).put_value("race", "key", i, if_absent=True) for i in range(20)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert await first.get_value("race", "key") == winner


async def test_log_appends_in_order(stores: Factory) -> None:
    store = stores()
    assert await store.read_log("moderation:r") == []
    for i in range(5):
        await store.append_log("moderation:r", {"i": i, "by": "teacher", "what": "mute"})
    await store.append_log("moderation:other", {"i": 99})
    entries = await store.read_log("moderation:r")
    assert [entry["i"] for entry in entries] == [0, 1, 2, 3, 4]
    assert [entry["i"] for entry in await store.read_log("moderation:r", limit=2)] == [3, 4]
    assert await store.read_log("moderation:r", limit=0) == []
    assert len(await store.read_log("moderation:r", limit=50)) == 5
    assert await stores().read_log("moderation:other") == [{"i": 99}]


async def test_state_outlives_the_handle(stores: Factory) -> None:
    """What one handle wrote, a new one (a restarted server, another process) reads."""
    store = stores()
    await store.put_value("generations", "room", 3)
    await store.append_log("log", {"a": 1})
    await store.close()
    again = stores()
    assert await again.get_value("generations", "room") == 3
    assert await again.read_log("log") == [{"a": 1}]


async def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqlitePersistence(path)
    await store.put_value("claims:", "ada", {"id": "u-1"})
    await store.append_log("log", {"x": [1, 2]})
    await store.close()
    reopened = SqlitePersistence(path)
    try:
        assert await reopened.list_values("claims:") == {"ada": {"id": "u-1"}}
        assert await reopened.read_log("log") == [{"x": [1, 2]}]
        assert await reopened.put_value("claims:", "ada", {"id": "u-2"}, if_absent=True) is False
    finally:
        await reopened.close()


async def test_values_are_copies(stores: Factory) -> None:
    store = stores()
    value: dict[str, Any] = {"list": [1]}
    await store.put_value("s", "k", value)
    value["list"].append(2)
    read = await store.get_value("s", "k")
    assert read == {"list": [1]}
    read["list"].append(3)
    assert await store.get_value("s", "k") == {"list": [1]}
