"""Persisters: where checkpoints are kept, keyed by ``(pid, tag)``.

Theory of operation
-------------------
A :class:`Persister` stores encoded :class:`~corelib.Checkpoint` records. Each process may have
one untagged checkpoint (``tag=None``) and any number of tagged ones; saving to an existing
``(pid, tag)`` replaces it. Every implementation encodes with a
:class:`~corelib.CheckpointCodec` when saving and decodes when loading, so a load always returns
a fresh copy and a value that can't be stored fails at save time, not on a restart days later.
Encoding and decoding run in the caller's thread (the snapshot is taken when
``save_checkpoint`` is called, and user decoders run where the caller is); only the blocking
I/O moves to a worker thread (except the small page-cache reads and writes of a non-durable
:class:`FilePersister`, which are cheaper done inline: see its docstring).

All methods are async. A cancelled call whose I/O has started lets that I/O finish in its
worker thread (a save is never half-done), then raises the cancellation.

Three implementations share one contract, pinned down by ``tests/corelib/test_persisters.py``:

- :class:`InMemoryPersister`: a dict of encoded bytes; for tests and single-run use.
- :class:`FilePersister`: one JSON file per checkpoint, replaced atomically.
- :class:`SqlitePersister`: one SQLite table in WAL mode, shareable by several OS processes.

Keys: a pid is a non-empty string; a tag is ``None`` or a non-empty string (the empty string is
refused so that it can't be confused with "no tag"). Both must be valid Unicode (no lone
surrogates), since they end up in file names and SQL text. Anything else raises ``ValueError``.

Deleting a checkpoint that doesn't exist is not an error (as in plumpy): deletion is
idempotent, so clean-up code need not check first.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar, final

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from ._checkpoint import (
    Checkpoint,
    CheckpointCodec,
    CheckpointNotFoundError,
    CheckpointVersionError,
    CorruptCheckpointError,
    PersisterClosedError,
    _restore,
    _Snapshot,
    _take_snapshot,
)

__all__ = [
    "PersistedCheckpoint",
    "Persister",
    "InMemoryPersister",
    "FilePersister",
    "SqlitePersister",
]

T = TypeVar("T")


@final
@attrs.frozen
class PersistedCheckpoint:
    """The key of one stored checkpoint.

    Args:
        pid: the process id.
        tag: the checkpoint's tag, ``None`` for the untagged one.
    """

    pid: str
    tag: str | None = None


def _sorted(keys: Iterable[PersistedCheckpoint]) -> list[PersistedCheckpoint]:
    """Sort keys by pid, the untagged checkpoint first, then by tag."""
    return sorted(keys, key=lambda key: (key.pid, key.tag is not None, key.tag or ""))


def _check_text(what: str, value: str) -> None:
    """``value`` (already a non-empty ``str``) must be encodable: no lone surrogates."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid unicode") from None


def _check_pid(pid: str) -> None:
    if not isinstance(pid, str) or not pid:
        raise ValueError(f"pid must be a non-empty string, got {pid!r}")
    _check_text("pid", pid)


def _check_key(pid: str, tag: str | None) -> None:
    _check_pid(pid)
    if tag is None:
        return
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag must be a non-empty string or None, got {tag!r}")
    _check_text("tag", tag)


def _decode(codec: CheckpointCodec, data: object, pid: str, tag: str | None) -> Checkpoint:
    """Decode stored bytes, naming ``pid`` and ``tag`` in any error."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, bytes):
        raise CorruptCheckpointError(
            f"stored data is {type(data).__name__}, not bytes", pid=pid, tag=tag
        )
    try:
        checkpoint = codec.decode(data)
    except CorruptCheckpointError as exc:
        raise CorruptCheckpointError(exc.problem, pid=pid, tag=tag) from None
    except CheckpointVersionError as exc:
        raise CheckpointVersionError(exc.version, pid=pid, tag=tag) from None
    if checkpoint.pid != pid:
        raise CorruptCheckpointError(
            f"it holds the checkpoint of pid {checkpoint.pid!r}", pid=pid, tag=tag
        )
    return checkpoint


class Persister(abc.ABC):
    """Stores checkpoints keyed by ``(pid, tag)``. See the module docstring for the contract.

    Use it as an async context manager, or call :meth:`aclose` when done; any use after
    closing raises :class:`~corelib.PersisterClosedError`.
    """

    __slots__ = ()

    @abc.abstractmethod
    async def save_checkpoint(self, checkpoint: Checkpoint, tag: str | None = None) -> None:
        """Store ``checkpoint`` under ``(checkpoint.pid, tag)``, replacing any previous one.

        Raises:
            CheckpointEncodeError: the checkpoint holds a value the codec can't encode;
                nothing was stored.
            ValueError: the pid or tag is not a valid key.
        """

    @property
    @abc.abstractmethod
    def codec(self) -> CheckpointCodec:
        """The codec this persister stores checkpoints with."""

    @abc.abstractmethod
    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        """Store bytes made by ``self.codec.encode(checkpoint)`` under ``(pid, tag)``.

        For callers that must snapshot a checkpoint at one moment and write it later (the
        checkpointer of a runner): encoding is the snapshot.
        """

    @abc.abstractmethod
    async def load_checkpoint(self, pid: str, tag: str | None = None) -> Checkpoint:
        """Return the checkpoint stored under ``(pid, tag)``.

        Raises:
            CheckpointNotFoundError: there is none.
            CorruptCheckpointError: the stored data is damaged (other checkpoints are
                unaffected).
            CheckpointVersionError: it was written by a newer plumio.
        """

    @abc.abstractmethod
    async def get_checkpoints(self) -> list[PersistedCheckpoint]:
        """Return the keys of all stored checkpoints, sorted by pid then tag (untagged first).

        Only keys are read: a corrupt checkpoint is listed, and fails when loaded.
        """

    @abc.abstractmethod
    async def get_process_checkpoints(self, pid: str) -> list[PersistedCheckpoint]:
        """Return the keys of the checkpoints of ``pid``, untagged first, then by tag."""

    @abc.abstractmethod
    async def delete_checkpoint(self, pid: str, tag: str | None = None) -> None:
        """Delete the checkpoint under ``(pid, tag)``; does nothing if there is none."""

    @abc.abstractmethod
    async def delete_process_checkpoints(self, pid: str) -> None:
        """Delete every checkpoint of ``pid``, tagged or not."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the persister's resources. Idempotent; stored checkpoints are kept."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _closed_error(persister: Persister) -> PersisterClosedError:
    return PersisterClosedError(f"{type(persister).__name__} is closed")


# --- in memory ----------------------------------------------------------------------------------


@final
class InMemoryPersister(Persister):
    """Keeps checkpoints in a dict; nothing survives the interpreter.

    A save stores a *snapshot*: a private deep copy equal, value for value and type for type,
    to what the JSON codec would give back after writing and reading the checkpoint, taken at
    the call (so later changes to the live process's context or outputs can't reach it). A
    checkpoint the codec could not write is refused at save time with the codec's own error.
    Every load returns a fresh copy that shares nothing mutable with the store. For plain data
    (JSON values, tuples, :class:`~corelib.AttributesFrozenDict`) the snapshot is made without
    JSON, several times faster; a checkpoint holding anything else (registered types, sets,
    bytes...) is stored as the codec's JSON bytes, exactly as the other persisters do. Thread-safe:
    it may be shared by processes running on several threads and event loops.

    Args:
        codec: the codec; a default :class:`~corelib.CheckpointCodec` if omitted.
    """

    __slots__ = ("_checkpoints", "_closed", "_codec", "_lock")

    def __init__(self, *, codec: CheckpointCodec | None = None) -> None:
        self._codec = CheckpointCodec() if codec is None else codec
        self._lock = threading.Lock()
        # pid -> tag -> snapshot, or encoded checkpoint
        self._checkpoints: dict[str, dict[str | None, _Snapshot | bytes]] = {}
        self._closed = False

    async def _enter(self) -> None:
        # Every method is a checkpoint (in the anyio sense), like any other async I/O.
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise _closed_error(self)

    @property
    def codec(self) -> CheckpointCodec:
        return self._codec

    async def save_checkpoint(self, checkpoint: Checkpoint, tag: str | None = None) -> None:
        pid = checkpoint.pid
        _check_key(pid, tag)
        # the snapshot is taken at the call; the codec's error if it couldn't write it
        data: _Snapshot | bytes | None = _take_snapshot(checkpoint)
        if data is None:
            data = self._codec.encode(checkpoint)
        await anyio.lowlevel.checkpoint()  # (_enter, inlined: this is the hot path)
        if self._closed:
            raise _closed_error(self)
        with self._lock:
            self._checkpoints.setdefault(pid, {})[tag] = data

    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        _check_key(pid, tag)
        await self._store(pid, tag, data)

    async def _store(self, pid: str, tag: str | None, data: _Snapshot | bytes) -> None:
        await self._enter()
        with self._lock:
            self._checkpoints.setdefault(pid, {})[tag] = data

    async def load_checkpoint(self, pid: str, tag: str | None = None) -> Checkpoint:
        _check_key(pid, tag)
        await anyio.lowlevel.checkpoint()  # (_enter, inlined: this is the hot path)
        if self._closed:
            raise _closed_error(self)
        with self._lock:
            data = self._checkpoints.get(pid, {}).get(tag)
        if data is None:
            raise CheckpointNotFoundError(pid, tag)
        if type(data) is _Snapshot:
            return _restore(data)
        return _decode(self._codec, data, pid, tag)

    async def get_checkpoints(self) -> list[PersistedCheckpoint]:
        await self._enter()
        with self._lock:
            keys = [
                PersistedCheckpoint(pid, tag)
                for pid, tags in self._checkpoints.items()
                for tag in tags
            ]
        return _sorted(keys)

    async def get_process_checkpoints(self, pid: str) -> list[PersistedCheckpoint]:
        _check_pid(pid)
        await self._enter()
        with self._lock:
            keys = [PersistedCheckpoint(pid, tag) for tag in self._checkpoints.get(pid, {})]
        return _sorted(keys)

    async def delete_checkpoint(self, pid: str, tag: str | None = None) -> None:
        _check_key(pid, tag)
        await self._enter()
        with self._lock:
            tags = self._checkpoints.get(pid)
            if tags is not None:
                tags.pop(tag, None)
                if not tags:
                    del self._checkpoints[pid]

    async def delete_process_checkpoints(self, pid: str) -> None:
        _check_pid(pid)
        await self._enter()
        with self._lock:
            self._checkpoints.pop(pid, None)

    async def aclose(self) -> None:
        self._closed = True
        await anyio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"InMemoryPersister(checkpoints={sum(map(len, self._checkpoints.values()))})"


# --- files --------------------------------------------------------------------------------------

# Characters kept as they are in file names. Everything else (upper case included, so that
# names stay distinct on case-insensitive file systems; "." included, so that it can separate
# pid from tag) is percent-encoded as UTF-8 with upper-case hex.
_SAFE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_SUFFIX: Final = ".json"
_TEMP_SUFFIX: Final = ".tmp"
_MAX_NAME_BYTES: Final = 255

#: With ``durable=False``, a :class:`FilePersister` saves and loads checkpoints up to this many
#: bytes in the calling thread (a few page-cache syscalls, no ``fsync``: microseconds) instead
#: of a worker thread; bigger ones, and every durable save, go to a worker thread.
INLINE_IO_BYTES: Final = 64 * 1024


def _escape(text: str) -> str:
    if all(char in _SAFE_CHARS for char in text):
        return text
    return "".join(
        char if char in _SAFE_CHARS else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in text
    )


def _unescape(name: str) -> str | None:
    """Inverse of :func:`_escape`; ``None`` unless ``name`` is exactly what it would produce."""
    try:
        text = urllib.parse.unquote(name, errors="strict")
    except UnicodeDecodeError:
        return None
    return text if text and _escape(text) == name else None


def _file_name(pid: str, tag: str | None) -> str:
    stem = _escape(pid) if tag is None else f"{_escape(pid)}.{_escape(tag)}"
    name = stem + _SUFFIX
    if len(name) > _MAX_NAME_BYTES:
        raise ValueError(
            f"pid {pid!r} and tag {tag!r} make a file name longer than {_MAX_NAME_BYTES} bytes"
        )
    return name


def _parse_file_name(name: str) -> PersistedCheckpoint | None:
    """The key a file name stands for, or ``None`` for any other file (temp files included)."""
    if not name.endswith(_SUFFIX):
        return None
    parts = [_unescape(part) for part in name[: -len(_SUFFIX)].split(".")]
    if len(parts) == 1 and parts[0] is not None:
        return PersistedCheckpoint(parts[0])
    if len(parts) == 2 and parts[0] is not None and parts[1] is not None:
        return PersistedCheckpoint(parts[0], parts[1])
    return None


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems can't sync a directory
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


@final
class FilePersister(Persister):
    """One JSON file per checkpoint in ``folder``, written atomically.

    **File names.** ``<pid>.json`` for the untagged checkpoint and ``<pid>.<tag>.json`` for a
    tagged one, where pid and tag are escaped: lower-case letters, digits, ``_`` and ``-`` are
    kept, every other character is percent-encoded (UTF-8, upper-case hex). So ``"a/b"`` becomes
    ``a%2Fb`` and ``".."`` becomes ``%2E%2E``: no name can leave the folder, start with a dot
    or collide with another, even on a case-insensitive file system. A name may not exceed 255
    bytes, which limits pids and tags to roughly 250 safe or 80 other ASCII characters.
    Listing reads only the names; files that aren't checkpoint names are ignored.

    **Atomic writes.** A save writes a temporary file ``.<random>.tmp`` in the same folder,
    flushes it, ``fsync``s it, renames it over the checkpoint with ``os.replace`` and then
    ``fsync``s the folder. A reader (or a process restarted after a crash) sees the old
    checkpoint or the new one, never a mix. A crash can leave a temporary file behind; it is
    never taken for a checkpoint, and :meth:`remove_stale_temp_files` deletes old ones.

    **Durability.** With ``durable=True`` (the default) a completed save survives a power
    loss or kernel crash. With ``durable=False`` both ``fsync`` calls are skipped: saves are
    several times faster and still atomic with respect to the *process* crashing (the rename is
    atomic in the kernel), but after a power loss a recent save may be lost or, on some file
    systems, the file may be empty. Deletions also ``fsync`` the folder when durable.

    **Threads.** Blocking file I/O runs in a worker thread, except that with
    ``durable=False`` saves and loads of checkpoints up to :data:`INLINE_IO_BYTES` run in the
    calling thread: without ``fsync`` they are a handful of page-cache syscalls, much cheaper
    than the thread round trip. (Keep ``durable=True``, or the default, on a slow or network
    file system, where even those may block.)

    Several persisters (in one or more OS processes) may share a folder: concurrent saves of
    the same key each write their own temporary file, and the last rename wins.

    Args:
        folder: the folder to keep checkpoints in; created (with parents) if missing.
        codec: the codec; a default :class:`~corelib.CheckpointCodec` if omitted.
        durable: ``fsync`` file and folder on every save (see above).
    """

    __slots__ = ("_closed", "_codec", "_durable", "_folder", "_folder_name")

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        codec: CheckpointCodec | None = None,
        durable: bool = True,
    ) -> None:
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._folder_name = os.fspath(self._folder)
        self._codec = CheckpointCodec() if codec is None else codec
        self._durable = durable
        self._closed = False

    @property
    def folder(self) -> Path:
        """The folder holding the checkpoint files."""
        return self._folder

    def path_for(self, pid: str, tag: str | None = None) -> Path:
        """Return the path of the file that holds (or would hold) the checkpoint ``(pid, tag)``.

        Raises:
            ValueError: the pid or tag is not a valid key, or the name would be too long.
        """
        return Path(self._path(pid, tag))

    def _path(self, pid: str, tag: str | None) -> str:
        """:meth:`path_for` as a string (cheaper than a ``Path`` on every save and load)."""
        _check_key(pid, tag)
        return os.path.join(self._folder_name, _file_name(pid, tag))

    def _check_open(self) -> None:
        if self._closed:
            raise _closed_error(self)

    @property
    def codec(self) -> CheckpointCodec:
        return self._codec

    async def save_checkpoint(self, checkpoint: Checkpoint, tag: str | None = None) -> None:
        path = self._path(checkpoint.pid, tag)
        self._check_open()
        data = self._codec.encode(checkpoint)
        await self._save(path, data)

    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        path = self._path(pid, tag)
        self._check_open()
        await self._save(path, data)

    async def _save(self, path: str, data: bytes) -> None:
        if not self._durable and len(data) <= INLINE_IO_BYTES:
            # A small write without fsync is a few syscalls on the page cache: cheaper than a
            # worker-thread round trip. It is still a checkpoint (cancellation is checked
            # before the write starts, never during it) and still atomic.
            await anyio.lowlevel.checkpoint()
            self._check_open()
            self._write(path, data)
        else:
            await anyio.to_thread.run_sync(self._write, path, data)

    def _write(self, path: str, data: bytes) -> None:
        temp = os.path.join(self._folder, f".{secrets.token_hex(8)}{_TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        if self._durable:
            _fsync_dir(self._folder)

    async def load_checkpoint(self, pid: str, tag: str | None = None) -> Checkpoint:
        path = self._path(pid, tag)
        self._check_open()
        try:
            data: bytes | None = None
            if not self._durable:
                await anyio.lowlevel.checkpoint()
                self._check_open()
                data = self._read_small(path)  # None for a big file
            if data is None:
                data = await anyio.to_thread.run_sync(_read_bytes, path)
        except FileNotFoundError:
            raise CheckpointNotFoundError(pid, tag) from None
        return _decode(self._codec, data, pid, tag)

    @staticmethod
    def _read_small(path: str) -> bytes | None:
        """The file's bytes if it holds at most :data:`INLINE_IO_BYTES`, else ``None``."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size > INLINE_IO_BYTES:
                return None
            chunks = []
            while True:
                # One read normally; more if the file grew (a replace makes a new file, so
                # this one can only be appended to by someone writing it by hand).
                chunk = os.read(fd, INLINE_IO_BYTES + 1)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _list(self) -> list[PersistedCheckpoint]:
        with os.scandir(self._folder) as entries:
            keys = [_parse_file_name(entry.name) for entry in entries if entry.is_file()]
        return [key for key in keys if key is not None]

    async def get_checkpoints(self) -> list[PersistedCheckpoint]:
        self._check_open()
        return _sorted(await anyio.to_thread.run_sync(self._list))

    async def get_process_checkpoints(self, pid: str) -> list[PersistedCheckpoint]:
        _check_pid(pid)
        self._check_open()
        keys = await anyio.to_thread.run_sync(self._list)
        return _sorted(key for key in keys if key.pid == pid)

    def _delete(self, paths: Iterable[Path]) -> None:
        deleted = False
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            deleted = True
        if deleted and self._durable:
            _fsync_dir(self._folder)

    async def delete_checkpoint(self, pid: str, tag: str | None = None) -> None:
        path = self.path_for(pid, tag)
        self._check_open()
        await anyio.to_thread.run_sync(self._delete, [path])

    async def delete_process_checkpoints(self, pid: str) -> None:
        _check_pid(pid)
        self._check_open()

        def delete() -> None:
            keys = [key for key in self._list() if key.pid == pid]
            self._delete(self._folder / _file_name(key.pid, key.tag) for key in keys)

        await anyio.to_thread.run_sync(delete)

    async def remove_stale_temp_files(self, min_age: float = 3600.0) -> int:
        """Delete temporary files left by crashed saves; return how many were removed.

        Only files older than ``min_age`` seconds are touched, so that saves still in
        progress in other processes sharing the folder are not disturbed.
        """
        self._check_open()

        def remove() -> int:
            cutoff = time.time() - min_age
            removed = 0
            for entry in os.scandir(self._folder):
                if not (entry.name.startswith(".") and entry.name.endswith(_TEMP_SUFFIX)):
                    continue
                try:
                    if entry.stat().st_mtime <= cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    pass  # its save just finished (renamed) or another cleaner got it
            return removed

        return await anyio.to_thread.run_sync(remove)

    async def aclose(self) -> None:
        self._closed = True
        await anyio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"FilePersister({str(self._folder)!r}, durable={self._durable})"


# --- sqlite -------------------------------------------------------------------------------------

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
