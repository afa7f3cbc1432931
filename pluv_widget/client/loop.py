"""Every hand-off between threads and the client's event loop, and the thread contract.

The client binds to the asyncio loop running where it is created (a notebook's kernel loop, or a
script's ``asyncio.run``); created where no loop runs, it starts a private loop in a daemon
thread. A room's state — its :class:`~pluv_widget.core.client_room.ClientRoom` and the pycrdt
document — is only ever touched on that loop's thread: pycrdt documents are not thread-safe (two
threads in one document raise "Already in a transaction", or worse, share a transaction).

The thread contract (every public call, from any thread):

* ``room.state``, ``connection_id``, ``storage_state``, ``name``: plain reads, no wait.
* ``my_presence``, ``myself``, ``others``, ``other()``, ``storage_json()``, ``can_undo``,
  ``can_redo``: run on the loop; a caller on another thread waits for the answer.
* ``update_my_presence(patch)``: validated in the caller's thread (a ``ValidationError`` raises
  there and nothing is sent), then applied on the loop while the caller waits — so a following
  ``my_presence`` sees it. ``broadcast`` is validated in the caller, then sent from the loop.
* ``transact(fn)``, ``undo()``, ``redo()``: run on the loop while the caller waits; ``fn``'s
  result or exception comes back to the caller.
* ``storage(key)``: on the loop's thread, the live pycrdt type. On another thread, a
  :class:`LoopBound` proxy of it: every method call and item access runs on the loop.
* ``subscribe.*`` and unsubscribing: any thread. Callbacks run on the loop's thread (storage
  callbacks too: every edit is made there).
* ``client.enter`` may be awaited on any loop; ``enter_soon``, ``leave``, ``close``: any thread
  (``aclose`` on any loop).

Calls made on the loop's thread (in a notebook cell, or in a callback) run at once. The one
thing to avoid: blocking the loop's thread while waiting for another thread that is calling
into a room (it waits for the loop: a deadlock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pycrdt

T = TypeVar("T")

_POLL_S = 0.5  # how often a waiting caller checks that the loop still runs


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Call:
    """A call handed to the loop, run once: by the loop, or by the caller if the loop stopped."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._claimed = False

    def claim(self) -> bool:
        with self._lock:
            claimed, self._claimed = self._claimed, True
            return not claimed

    def run(self) -> None:
        if not self.claim():
            return
        try:
            self.future.set_result(self.function())
        except BaseException as error:  # handed to the waiting caller
            self.future.set_exception(error)


class ClientLoop:
    """The loop a client runs on, and the only way other threads reach it."""

    def __init__(self) -> None:
        loop = running_loop()
        self.thread: threading.Thread | None = None
        if loop is not None:
            self.loop = loop
            return
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.loop.call_soon(ready.set)
        self.thread = threading.Thread(target=self.loop.run_forever, name="pluv-client", daemon=True)
        self.thread.start()
        ready.wait()

    def on_loop(self) -> bool:
        """True on the loop's thread while it runs (a subshell thread's own loop is not it)."""
        return running_loop() is self.loop

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop without waiting: now if we are on it."""
        if self.on_loop() or self.loop.is_closed():
            callback(*args)
        else:
            self.loop.call_soon_threadsafe(callback, *args)

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` run on the loop, its result (or exception) returned to the caller.

        On the loop's thread, or when the loop is not running, it runs at once in the caller.
        """
        if self.on_loop() or not self.loop.is_running():
            return function(*args)
        call = _Call(lambda: function(*args))
        try:
            self.loop.call_soon_threadsafe(call.run)
        except RuntimeError:  # closed meanwhile
            if call.claim():
                return function(*args)
        while True:
            try:
                result: T = call.future.result(timeout=_POLL_S)
                return result
            except concurrent.futures.TimeoutError:
                if not self.loop.is_running() and call.claim():
                    return function(*args)

    def schedule(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``function`` on the loop; its result as a thread-safe future, set once it ran."""
        call = _Call(function)
        self.call_soon(call.run)
        return call.future

    async def wait(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Await ``make()`` — which must run on the client's loop — from whichever loop we are on."""
        if self.on_loop():
            return await asyncio.wait_for(make(), timeout)

        async def on_loop() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(on_loop(), self.loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()
            raise

    def run_coroutine(self, make: Callable[[], Awaitable[T]], timeout: float) -> T | None:
        """From a thread that is not the loop's: run ``make()`` on the loop and wait for it."""
        async def on_loop() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(on_loop(), self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            return None

    def stop(self) -> None:
        """Stop a private loop's thread (a borrowed loop is not ours to stop)."""
        if self.thread is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)


_SHARED = (pycrdt.Array, pycrdt.Map, pycrdt.Text)


class LoopBound:
    """A pycrdt shared type seen from a thread that is not the client's loop: every method call,
    item access and conversion runs on the loop (the caller waits). Shared types it returns are
    wrapped the same way; ``unwrap()`` on the loop gives the live type back."""

    __slots__ = ("_loop", "_target")

    def __init__(self, target: Any, loop: ClientLoop) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_loop", loop)

    def unwrap(self) -> Any:
        return self._target

    def _wrap(self, value: Any) -> Any:
        return LoopBound(value, self._loop) if isinstance(value, _SHARED) else value

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_unwrap(arg) for arg in args)
        kwargs = {key: _unwrap(value) for key, value in kwargs.items()}
        return self._wrap(self._loop.run(lambda: getattr(self._target, name)(*args, **kwargs)))

    def __getattr__(self, name: str) -> Any:
        value = self._loop.run(getattr, self._target, name)
        if callable(value) and not isinstance(value, _SHARED):
            return lambda *args, **kwargs: self._call(name, *args, **kwargs)
        return self._wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        self._loop.run(setattr, self._target, name, _unwrap(value))

    def __len__(self) -> int:
        length: int = self._call("__len__")
        return length

    def __getitem__(self, key: Any) -> Any:
        return self._call("__getitem__", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._call("__setitem__", key, value)

    def __delitem__(self, key: Any) -> None:
        self._call("__delitem__", key)

    def __contains__(self, item: Any) -> bool:
        return bool(self._call("__contains__", item))

    def __iter__(self) -> Iterator[Any]:
        return iter([self._wrap(item) for item in self._loop.run(lambda: list(self._target))])

    def __iadd__(self, value: Any) -> LoopBound:
        self._loop.run(lambda: self._target.__iadd__(_unwrap(value)))
        return self

    def __eq__(self, other: object) -> bool:
        return bool(self._loop.run(lambda: self._target == _unwrap(other)))

    def __hash__(self) -> int:
        return hash(self._target)

    def __str__(self) -> str:
        return str(self._loop.run(str, self._target))

    def __repr__(self) -> str:
        return f"<LoopBound {self._loop.run(repr, self._target)}>"


def _unwrap(value: Any) -> Any:
    return value.unwrap() if isinstance(value, LoopBound) else value
