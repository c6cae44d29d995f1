"""The SQLite persister: checkpoints in one table in WAL mode, shareable by several OS
processes on one machine.

See :mod:`corelib.persistence._persisters` for the contract every persister keeps.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar, final

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._checkpoint import Checkpoint, CheckpointNotFoundError
from ._codec import CheckpointCodec
from ._persisters import (
    INLINE_IO_BYTES,
    PersistedCheckpoint,
    Persister,
    _check_key,
    _check_pid,
    _closed_error,
    _decode,
    _sorted,
)

__all__ = ["SqlitePersister", "WAL_CHECKPOINT_WRITES"]

T = TypeVar("T")

# The untagged checkpoint is stored with tag '' (a primary key column can't usefully be NULL in
# SQLite: NULLs are all distinct). The empty tag is refused by the API, so this is unambiguous.
_NO_TAG: Final = ""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS checkpoints (
    pid TEXT NOT NULL,
    tag TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (pid, tag)
) WITHOUT ROWID
"""

_UPSERT: Final = (
    "INSERT INTO checkpoints (pid, tag, data) VALUES (?, ?, ?)"
    " ON CONFLICT (pid, tag) DO UPDATE SET data = excluded.data"
)


_SELECT: Final = "SELECT data FROM checkpoints WHERE pid = ? AND tag = ?"


def _tag_from_row(tag: str) -> str | None:
    return None if tag == _NO_TAG else tag


#: A non-durable :class:`SqlitePersister` copies its write-ahead log back into the database
#: (``PRAGMA wal_checkpoint(PASSIVE)``, which ``fsync``s) in a worker thread after this many
#: writes, instead of SQLite doing it inside whichever write crosses its threshold.
WAL_CHECKPOINT_WRITES: Final = 1000

_BUSY_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_NOT_DONE: Final[Any] = object()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` means another connection holds a lock (worth retrying)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES


@final
class SqlitePersister(Persister):
    """Checkpoints in one SQLite table, safe to share between OS processes on one machine.

    The database runs in WAL mode, so readers don't block the writer, and each save is one
    ``INSERT ... ON CONFLICT DO UPDATE`` in its own transaction: a crash leaves the previous
    or the new checkpoint, never a mix. Each persister has one connection (opened lazily, on
    first use, in a worker thread; its statements are prepared once and cached by
    :mod:`sqlite3`), never used by two threads at once (a per-persister lock). Several OS
    processes may open the same file; a call that finds the database locked by another
    connection retries, sleeping in a worker thread, for up to ``busy_timeout`` seconds before
    ``sqlite3.OperationalError`` is raised.

    **Durability.** ``durable=False`` (the default) uses ``PRAGMA synchronous=NORMAL``: a
    commit appends to the write-ahead log without ``fsync``. A completed save survives the
    process crashing or being killed (the log is in the operating system's cache, and SQLite
    recovers from it), and the database is never corrupted; but after a power loss or kernel
    crash the last saves before it may be lost (the checkpoints then read as they were
    before those saves, whole). ``durable=True`` uses ``synchronous=FULL``: every commit
    ``fsync``s the log, so a completed save also survives a power loss; each save then costs
    an ``fsync`` (hundreds of microseconds on an SSD, more on a disk).

    **Threads.** With ``durable=False``, saves of checkpoints up to :data:`INLINE_IO_BYTES`
    and all loads run in the calling thread: a commit that doesn't ``fsync`` is a few page-cache
    writes, tens of microseconds, far cheaper than a worker-thread round trip. They never wait
    there: if another thread is using the connection, or another connection holds the lock,
    the call moves to a worker thread (and waits there). SQLite's automatic log checkpoint
    (which ``fsync``s) is turned off for this connection and run in a worker thread every
    :data:`WAL_CHECKPOINT_WRITES` writes instead. With ``durable=True`` every call runs in a
    worker thread. (Keep ``durable=True`` on a slow or network file system.)

    Close it with :meth:`aclose` (or ``async with``) to close the connection.

    Args:
        path: the database file; created if missing (its folder must exist).
        codec: the codec; a default :class:`~corelib.CheckpointCodec` if omitted.
        durable: see above.
        busy_timeout: seconds to wait for another connection's lock.
    """

    __slots__ = (
        "_busy_timeout",
        "_closed",
        "_codec",
        "_connection",
        "_durable",
        "_lock",
        "_path",
        "_writes",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: CheckpointCodec | None = None,
        durable: bool = False,
        busy_timeout: float = 30.0,
    ) -> None:
        self._path = os.fspath(path)
        self._codec = CheckpointCodec() if codec is None else codec
        self._durable = durable
        self._busy_timeout = busy_timeout
        # Guards _connection, _closed and _writes; held for the whole of each call.
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        self._writes = 0  # since the last log checkpoint (durable=False only)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path,
            timeout=0,  # never wait inside SQLite: _call retries in a worker thread instead
            isolation_level=None,  # autocommit: each statement is its own transaction
            check_same_thread=False,  # used from several threads, one at a time (self._lock)
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            if self._durable:
                connection.execute("PRAGMA synchronous=FULL")
            else:
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute("PRAGMA wal_autocheckpoint=0")  # see _call
            connection.execute(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        return connection

    def _call(self, operation: Callable[[sqlite3.Connection], T], write: bool = False) -> T:
        """Run ``operation`` on the connection (in a worker thread), retrying while another
        connection holds the lock, for up to ``busy_timeout`` seconds.

        The persister's lock is not held while sleeping between tries, so that its other
        calls (loads, from other tasks or threads) go on meanwhile.
        """
        deadline: float | None = None
        delay = 0.001
        while True:
            with self._lock:
                if self._closed:
                    raise _closed_error(self)
                try:
                    if self._connection is None:
                        self._connection = self._connect()
                    result = operation(self._connection)
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):
                        raise
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self._busy_timeout
                    if now >= deadline:
                        raise
                else:
                    if write and not self._durable:
                        self._writes += 1
                        if self._writes >= WAL_CHECKPOINT_WRITES:
                            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                            self._writes = 0
                    return result
            time.sleep(min(delay, deadline - now))  # as SQLite's own busy handler does
            delay = min(2 * delay, 0.1)

    def _call_inline(self, sql: str, parameters: tuple[Any, ...], write: bool) -> Any:
        """Run one statement here if that can't wait or ``fsync``; else ``_NOT_DONE``.

        Returns ``None`` for a write, the first row (or ``None``) for a read.
        """
        if not self._lock.acquire(blocking=False):
            return _NOT_DONE  # another thread is using the connection
        try:
            if self._closed:
                raise _closed_error(self)
            connection = self._connection
            if connection is None or (write and self._writes + 1 >= WAL_CHECKPOINT_WRITES):
                return _NOT_DONE  # connecting, or a log checkpoint due: in a worker thread
            try:
                cursor = connection.execute(sql, parameters)
                if not write:
                    return cursor.fetchone()
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return _NOT_DONE  # another connection's lock: wait in a worker thread
                raise
            self._writes += 1
            return None
        finally:
            self._lock.release()

    async def _run(self, operation: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        if self._closed:
            raise _closed_error(self)
        return await anyio.to_thread.run_sync(self._call, operation, write)

    async def _run_small(self, sql: str, parameters: tuple[Any, ...], *, write: bool) -> Any:
        """One statement (a save's upsert, a load's select) as :meth:`_run` would run it,
        inline when not durable (see the class docstring)."""
        if not self._durable:
            # Still a checkpoint: cancellation is checked before the call, never during it.
            await anyio.lowlevel.checkpoint()
            result = self._call_inline(sql, parameters, write)
            if result is not _NOT_DONE:
                return result

        def operation(connection: sqlite3.Connection) -> Any:
            cursor = connection.execute(sql, parameters)
            return None if write else cursor.fetchone()

        return await self._run(operation, write=write)

    @property
    def codec(self) -> CheckpointCodec:
        return self._codec

    async def save_checkpoint(self, checkpoint: Checkpoint, tag: str | None = None) -> None:
        pid = checkpoint.pid
        _check_key(pid, tag)
        await self._save(pid, tag, self._codec.encode(checkpoint))

    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        _check_key(pid, tag)
        await self._save(pid, tag, data)

    async def _save(self, pid: str, tag: str | None, data: bytes) -> None:
        row = (pid, _NO_TAG if tag is None else tag, data)
        if len(data) <= INLINE_IO_BYTES:
            await self._run_small(_UPSERT, row, write=True)
        else:
            await self._run(lambda connection: connection.execute(_UPSERT, row), write=True)

    async def save_many(self, items: Sequence[tuple[str, str | None, bytes]]) -> None:
        """Save ``(pid, tag, data)`` items in one transaction (a group commit: one commit,
        one ``fsync`` when durable, for the lot); all or nothing."""
        rows = []
        for pid, tag, data in items:
            _check_key(pid, tag)
            rows.append((pid, _NO_TAG if tag is None else tag, data))
        if not rows:
            await anyio.lowlevel.checkpoint()
            return
        if len(rows) == 1:
            await self._save(*items[0])
            return

        def operation(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_UPSERT, rows)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

        await self._run(operation, write=True)

    async def load_checkpoint(self, pid: str, tag: str | None = None) -> Checkpoint:
        _check_key(pid, tag)
        row = await self._run_small(_SELECT, (pid, _NO_TAG if tag is None else tag), write=False)
        if row is None:
            raise CheckpointNotFoundError(pid, tag)
        return _decode(self._codec, row[0], pid, tag)

    async def get_checkpoints(self) -> list[PersistedCheckpoint]:
        rows: list[tuple[str, str]] = await self._run(
            lambda connection: connection.execute("SELECT pid, tag FROM checkpoints").fetchall()
        )
        return _sorted(PersistedCheckpoint(pid, _tag_from_row(tag)) for pid, tag in rows)

    async def get_process_checkpoints(self, pid: str) -> list[PersistedCheckpoint]:
        _check_pid(pid)
        rows: list[tuple[str]] = await self._run(
            lambda connection: connection.execute(
                "SELECT tag FROM checkpoints WHERE pid = ?", (pid,)
            ).fetchall()
        )
        return _sorted(PersistedCheckpoint(pid, _tag_from_row(tag)) for (tag,) in rows)

    async def delete_checkpoint(self, pid: str, tag: str | None = None) -> None:
        _check_key(pid, tag)
        key = (pid, _NO_TAG if tag is None else tag)
        await self._run(
            lambda connection: connection.execute(
                "DELETE FROM checkpoints WHERE pid = ? AND tag = ?", key
            ),
            write=True,
        )

    async def delete_process_checkpoints(self, pid: str) -> None:
        _check_pid(pid)
        await self._run(
            lambda connection: connection.execute("DELETE FROM checkpoints WHERE pid = ?", (pid,)),
            write=True,
        )

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def aclose(self) -> None:
        # Shielded: closing must happen even when the caller is being cancelled (e.g. in
        # ``__aexit__``); it only waits for the call in progress, if any.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close)

    def __repr__(self) -> str:
        return f"SqlitePersister({self._path!r}, durable={self._durable})"
