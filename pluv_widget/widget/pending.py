"""An action the widget started at once and that finishes later: await it, or ask ``result()``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    """Runs ``work`` on a thread now (it does blocking I/O); ``await`` it from any loop for its
    result or its exception, or call :meth:`result` from a script."""

    def __init__(self, work: Callable[[], T], on_error: Callable[[BaseException], None] | None = None) -> None:
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                self.future.set_result(work())
            except BaseException as error:
                if on_error is not None:
                    on_error(error)
                self.future.set_exception(error)

        threading.Thread(target=run, name="pluv-widget-action", daemon=True).start()

    @classmethod
    def failed(cls, error: BaseException) -> Pending[Any]:
        def work() -> Any:
            raise error

        return cls(work)

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self.future).__await__()

    def result(self, timeout: float | None = None) -> T:
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()
