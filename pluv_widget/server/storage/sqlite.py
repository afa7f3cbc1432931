"""The embedded default store: one SQLite file, written by one thread with group commits.

Appends from every room queue up while the previous transaction commits and then go to disk
together in one transaction, so a busy server makes few fsyncs without reordering anything
(one writer thread executes jobs in arrival order). WAL mode with ``synchronous=NORMAL``
survives a killed process (kill -9) with every acknowledged commit; only a power loss of the
whole machine can lose the last moments. Compaction replaces a room's history by a snapshot,
and incremental vacuum hands the freed pages back, so a busy room's file stays near the size
of its document instead of growing with its history.

Every statement a job runs is consumed to its end (``fetchall``) and no job returns a cursor: a
statement left open on the writer's connection (a ``PRAGMA`` whose rows nobody read) made the
next group commit's ``SAVEPOINT`` fail with "SQL statements in progress", refusing the appends
of every room in that group. ``PRAGMA incremental_vacuum`` also frees only one page per step, so
reading it to the end is what actually hands the pages back.

Updates a room can no longer apply are moved to the ``quarantine`` table (room, time, reason,
bytes) by :meth:`SqlitePersistence.quarantine` when the room is loaded.

Server-held state (``Persistence.get_value`` and the rest) lives in the ``state`` table (scope,
key, JSON value) and the ``log`` table (scope, JSON entry), written by the same thread, so
``put_value(..., if_absent=True)`` is atomic without any further lock.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import Quarantined

SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_room ON updates (room, seq);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_scope ON log (scope, seq);
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
        _run_to_end(connection, "PRAGMA auto_vacuum = INCREMENTAL")
        _run_to_end(connection, "PRAGMA journal_mode = WAL")
        _run_to_end(connection, "PRAGMA synchronous = NORMAL")
        # The write-ahead log is folded back into the file every 256 pages and trimmed to 1 MiB.
        _run_to_end(connection, "PRAGMA wal_autocheckpoint = 256")
        _run_to_end(connection, "PRAGMA journal_size_limit = 1048576")
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
            rows = _run_to_end(db, "SELECT data FROM updates WHERE room = ? ORDER BY seq", (room,))
            return [bytes(data) for (data,) in rows]

        result: list[bytes] = await self._submit(work)
        return result

    async def append(self, room: str, update: bytes) -> None:
        def work(db: sqlite3.Connection) -> None:
            _run_to_end(db, "INSERT INTO updates (room, data) VALUES (?, ?)", (room, update))

        await self._submit(work)

    async def claim_initial(self, room: str, update: bytes) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            if _run_to_end(db, "SELECT 1 FROM updates WHERE room = ? LIMIT 1", (room,)):
                return False
            _run_to_end(db, "INSERT INTO updates (room, data) VALUES (?, ?)", (room, update))
            return True

        claimed: bool = await self._submit(work)
        return claimed

    async def compact(self, room: str, snapshot: bytes, replaces: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            seqs = [seq for (seq,) in _run_to_end(
                db, "SELECT seq FROM updates WHERE room = ? ORDER BY seq LIMIT ?", (room, replaces)
            )]
            if not seqs:
                return
            _run_to_end(db, f"DELETE FROM updates WHERE seq IN ({','.join('?' * len(seqs))})", seqs)
            # The snapshot takes the newest replaced position: it stays ahead of any later tail.
            _run_to_end(db, "INSERT INTO updates (seq, room, data) VALUES (?, ?, ?)", (seqs[-1], room, snapshot))
            _run_to_end(db, "PRAGMA incremental_vacuum")  # one page per step: run it to the end

        def checkpoint(db: sqlite3.Connection) -> None:
            _run_to_end(db, "PRAGMA wal_checkpoint(TRUNCATE)")

        await self._submit(work)
        # Outside the transaction: fold the WAL back into the file and truncate it, so the room's
        # disk use really shrinks to the snapshot.
        await self._submit(checkpoint, in_transaction=False)

    async def quarantine(self, room: str, update: bytes, reason: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            _run_to_end(db, "INSERT INTO quarantine (room, at, reason, data) VALUES (?, ?, ?, ?)",
                        (room, time.time(), reason, update))

        await self._submit(work)

    async def quarantined(self, room: str) -> list[Quarantined]:
        def work(db: sqlite3.Connection) -> list[Quarantined]:
            rows = _run_to_end(db, "SELECT at, reason, data FROM quarantine WHERE room = ? ORDER BY id", (room,))
            return [Quarantined(room, at, reason, bytes(data)) for at, reason, data in rows]

        result: list[Quarantined] = await self._submit(work)
        return result

    async def get_value(self, scope: str, key: str) -> Any | None:
        def work(db: sqlite3.Connection) -> Any | None:
            rows = _run_to_end(db, "SELECT value FROM state WHERE scope = ? AND key = ?", (scope, key))
            return json.loads(rows[0][0]) if rows else None

        return await self._submit(work)

    async def put_value(self, scope: str, key: str, value: Any, *, if_absent: bool = False) -> bool:
        raw = json.dumps(value)
        verb = "INSERT OR IGNORE" if if_absent else "INSERT OR REPLACE"

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(f"{verb} INTO state (scope, key, value) VALUES (?, ?, ?)", (scope, key, raw))
            try:
                cursor.fetchall()
                return cursor.rowcount > 0
            finally:
                cursor.close()

        stored: bool = await self._submit(work)
        return stored

    async def delete_value(self, scope: str, key: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM state WHERE scope = ? AND key = ?", (scope, key))
            try:
                cursor.fetchall()
                return cursor.rowcount > 0
            finally:
                cursor.close()

        deleted: bool = await self._submit(work)
        return deleted

    async def list_values(self, scope: str) -> dict[str, Any]:
        def work(db: sqlite3.Connection) -> dict[str, Any]:
            rows = _run_to_end(db, "SELECT key, value FROM state WHERE scope = ? ORDER BY key", (scope,))
            return {key: json.loads(value) for key, value in rows}

        values: dict[str, Any] = await self._submit(work)
        return values

    async def append_log(self, scope: str, entry: dict[str, Any]) -> None:
        raw = json.dumps(entry)

        def work(db: sqlite3.Connection) -> None:
            _run_to_end(db, "INSERT INTO log (scope, entry) VALUES (?, ?)", (scope, raw))

        await self._submit(work)

    async def read_log(self, scope: str, limit: int | None = None) -> list[dict[str, Any]]:
        def work(db: sqlite3.Connection) -> list[dict[str, Any]]:
            if limit is None:
                rows = _run_to_end(db, "SELECT entry FROM log WHERE scope = ? ORDER BY seq", (scope,))
            else:
                rows = _run_to_end(db, "SELECT entry FROM log WHERE scope = ? ORDER BY seq DESC LIMIT ?",
                                   (scope, max(0, limit)))
                rows.reverse()
            return [json.loads(entry) for (entry,) in rows]

        entries: list[dict[str, Any]] = await self._submit(work)
        return entries

    def status(self) -> str | None:
        return None  # a file of this process: nothing shared to report

    async def close(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)


def _run_to_end(db: sqlite3.Connection, sql: str, parameters: Any = ()) -> list[Any]:
    """Execute ``sql`` and read every row, so the statement is finished (never left in progress)."""
    cursor = db.execute(sql, parameters)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
