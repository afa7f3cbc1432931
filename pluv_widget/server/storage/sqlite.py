"""The embedded default store: one SQLite file, written by one thread with group commits.

Appends from every room queue up while the previous transaction commits and then go to disk
together in one transaction, so a busy server makes few fsyncs without reordering anything
(one writer thread executes jobs in arrival order). WAL mode with ``synchronous=NORMAL``
survives a killed process (kill -9) with every acknowledged commit; only a power loss of the
whole machine can lose the last moments. Compaction replaces a room's history by a snapshot,
and incremental vacuum hands the freed pages back, so a busy room's file stays near the size
of its document instead of growing with its history.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_room ON updates (room, seq);
"""

#: (work, loop, future, whether the work runs inside the group's transaction)
Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]", bool]


class SqlitePersistence:
    """Room storage in the SQLite file at ``path`` (created with its folder if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pluv-sqlite", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    # -- the writer thread ------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        # auto_vacuum only takes effect on a new file, before the first table exists.
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        # The write-ahead log is folded back into the file every 256 pages and trimmed to 1 MiB.
        connection.execute("PRAGMA wal_autocheckpoint = 256")
        connection.execute("PRAGMA journal_size_limit = 1048576")
        connection.executescript(SCHEMA)
        return connection

    def _run(self) -> None:
        try:
            connection = self._open()
        except BaseException as error:  # reported to the constructor's caller
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            while True:  # group commit: take everything queued meanwhile
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            group: list[Job] = []
            for job in batch:
                if job[3]:
                    group.append(job)
                    continue
                if group:
                    self._execute(connection, group)
                    group = []
                self._execute_alone(connection, job)
            if group:
                self._execute(connection, group)
        connection.close()

    @staticmethod
    def _execute(connection: sqlite3.Connection, batch: list[Job]) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for work, _, _, _ in batch:
                connection.execute("SAVEPOINT job")
                try:
                    results.append((work(connection), None))
                    connection.execute("RELEASE job")
                except Exception as failure:
                    connection.execute("ROLLBACK TO job")
                    connection.execute("RELEASE job")
                    results.append((None, failure))
            connection.execute("COMMIT")
        except Exception as failure:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            results = [(None, failure)] * len(batch)
        for (_, loop, future, _), (result, error) in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_settle, future, result, error)

    @staticmethod
    def _execute_alone(connection: sqlite3.Connection, job: Job) -> None:
        work, loop, future, _ = job
        outcome: tuple[Any, BaseException | None]
        try:
            outcome = (work(connection), None)
        except Exception as failure:
            outcome = (None, failure)
        loop.call_soon_threadsafe(_settle, future, *outcome)

    async def _submit(self, work: Callable[[sqlite3.Connection], Any], *, in_transaction: bool = True) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((work, loop, future, in_transaction))
        return await future

    # -- the interface ----------------------------------------------------------------------

    async def load(self, room: str) -> list[bytes]:
        def work(db: sqlite3.Connection) -> list[bytes]:
            rows = db.execute("SELECT data FROM updates WHERE room = ? ORDER BY seq", (room,))
            return [bytes(data) for (data,) in rows]

        result: list[bytes] = await self._submit(work)
        return result

    async def append(self, room: str, update: bytes) -> None:
        await self._submit(lambda db: db.execute("INSERT INTO updates (room, data) VALUES (?, ?)", (room, update)))

    async def claim_initial(self, room: str, update: bytes) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM updates WHERE room = ? LIMIT 1", (room,)).fetchone():
                return False
            db.execute("INSERT INTO updates (room, data) VALUES (?, ?)", (room, update))
            return True

        claimed: bool = await self._submit(work)
        return claimed

    async def compact(self, room: str, snapshot: bytes, replaces: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            seqs = [seq for (seq,) in db.execute(
                "SELECT seq FROM updates WHERE room = ? ORDER BY seq LIMIT ?", (room, replaces)
            )]
            if not seqs:
                return
            db.execute(f"DELETE FROM updates WHERE seq IN ({','.join('?' * len(seqs))})", seqs)
            # The snapshot takes the newest replaced position: it stays ahead of any later tail.
            db.execute("INSERT INTO updates (seq, room, data) VALUES (?, ?, ?)", (seqs[-1], room, snapshot))
            db.execute("PRAGMA incremental_vacuum")

        await self._submit(work)
        # Outside the transaction: fold the WAL back into the file and truncate it, so the room's
        # disk use really shrinks to the snapshot.
        await self._submit(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"), in_transaction=False)

    def status(self) -> str | None:
        return None  # a file of this process: nothing shared to report

    async def close(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
