"""The file persister: one JSON file per checkpoint, replaced atomically.

See :mod:`corelib.persistence._persisters` for the contract every persister keeps.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Final, final

import anyio
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

__all__ = ["FilePersister"]

# Characters kept as they are in file names. Everything else (upper case included, so that
# names stay distinct on case-insensitive file systems; "." included, so that it can separate
# pid from tag) is percent-encoded as UTF-8 with upper-case hex.
_SAFE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_SUFFIX: Final = ".json"
_TEMP_SUFFIX: Final = ".tmp"
_MAX_NAME_BYTES: Final = 255


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
