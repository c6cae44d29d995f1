"""The journal persister: every save appended to one checkpoint journal file.

See :mod:`corelib.persistence._persisters` for the contract every persister keeps.

Theory of operation
-------------------
**On disk.** The journal starts with the 16-byte file header :data:`_FILE_HEADER` and then
holds records, back to back. A record is framed so that a torn or damaged one is recognised::

    magic  b"PJR1"        4 bytes
    length u32, big-end.  4 bytes   length of the body
    crc    u32, big-end.  4 bytes   zlib.crc32 of the body
    body                  length bytes: one or more entries

and an entry (a body holds one for a save or a delete, several for a :meth:`save_many`) is::

    kind     u8   PUT (1), DELETE (2: a tombstone for one key), DELETE_PID (3: for every key
                  of a pid)
    pid_len  u32  UTF-8 bytes of the pid
    tag_len  u32  UTF-8 bytes of the tag; 0 means no tag (the empty tag is refused by the API)
    data_len u32  bytes of the codec's data (0 for a tombstone)
    pid, tag, data

A record is the unit of atomicity: its entries all apply or none do.

**In memory.** An index maps each live ``(pid, tag)`` to where its data sits in the file
(offset and length); a load reads those bytes back with one ``pread``. Opening the persister
(lazily, on first use, in a worker thread) replays the journal into the index.

**Replay stops at the first bad record** (incomplete header, wrong magic, a length running
past the end of the file, a checksum mismatch) and truncates the file there, so that new
records follow the last good one. Appends are sequential, so a crash (SIGKILL at any byte)
can only leave a *torn tail*: a bad record with no good record after it. It is dropped
quietly: the save it held never returned. A bad record *followed by a good one* (found by
scanning the rest of the file for the record magic) is damage: a disk error, someone
editing the file, or a power loss without ``durable`` that reached the disk out of order.
Replay still stops there (what follows was written after what is lost, so it can't be
applied on its own), but first the whole file is copied aside to
``<path>.corrupt-<unix time>`` and a warning is logged. Either way, :attr:`recovered`
describes what replay found.

**Group commit.** Saves and deletes queue their record and the thread that takes the write
lock writes every queued record with one ``write`` (and one ``fdatasync`` when durable) and
publishes them in the index in queue order, which is the file order; the others find their
record written when they get the lock. So a lone save is not delayed, and concurrent ones
(from worker threads, other event loops and threads) share writes and syncs. Only
complete writes are published: a failed write truncates the file back.

**Compaction.** When the journal is larger than ``compact_at`` bytes and more than
``compact_ratio`` times its live data, the next write is followed by a compaction: live
checkpoints are written to ``<path>.compact``, which is ``fsync``'ed and renamed over the
journal (then the folder is ``fsync``'ed). A crash before the rename leaves the old journal
whole (the stale ``.compact`` file is deleted on the next open); after it, the new one.
Loads go on during a compaction (from the old file); writes wait for it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Final, final

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from ._checkpoint import Checkpoint, CheckpointNotFoundError, CorruptCheckpointError
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

__all__ = ["JournalPersister", "JournalRecovery"]

logger = logging.getLogger("corelib.persistence")

_FILE_HEADER: Final = b"plumio-journal\x00\x01"  # 14 bytes of name, format version 1
_RECORD: Final = struct.Struct(">4sII")  # magic, body length, crc32 of the body
_RECORD_MAGIC: Final = b"PJR1"
_ENTRY: Final = struct.Struct(">BIII")  # kind, pid_len, tag_len, data_len
_PUT: Final = 1
_DELETE: Final = 2
_DELETE_PID: Final = 3
_MAX_BODY: Final = 2**32 - 1
_COMPACT_SUFFIX: Final = ".compact"
_LOCK_SUFFIX: Final = ".lock"

# An index entry: (offset of the data in the file, its length, the entry's whole size).
_Location = tuple[int, int, int]
# An entry: (kind, pid, tag, offset of its data (in the file, or in its record for a
# queued one), data length, entry size).
_Entry = tuple[int, str, str | None, int, int, int]


@final
@attrs.frozen
class JournalRecovery:
    """What replaying a journal found when it was opened.

    Args:
        records: the good records replayed.
        discarded_bytes: bytes dropped from the end of the file (0 for a clean journal).
        corrupt: the dropped bytes began with a damaged record followed by more data, not
            just a torn tail (see the module docstring).
        preserved_as: where the file was copied before it was truncated (``corrupt`` only).
    """

    records: int
    discarded_bytes: int = 0
    corrupt: bool = False
    preserved_as: str | None = None


def _encode_entry(kind: int, pid: str, tag: str | None, data: bytes) -> bytes:
    pid_bytes = pid.encode()
    tag_bytes = b"" if tag is None else tag.encode()
    return (
        _ENTRY.pack(kind, len(pid_bytes), len(tag_bytes), len(data)) + pid_bytes + tag_bytes + data
    )


def _frame(body: bytes) -> bytes:
    if len(body) > _MAX_BODY:
        raise ValueError(f"a journal record holds at most {_MAX_BODY} bytes, not {len(body)}")
    return _RECORD.pack(_RECORD_MAGIC, len(body), zlib.crc32(body)) + body


@attrs.define(eq=False)
class _Ticket:
    """Records queued by one call, and what became of them."""

    record: bytes
    entries: list[_Entry]
    done: bool = False
    error: BaseException | None = None


def _ticket(items: Sequence[tuple[int, str, str | None, bytes]]) -> _Ticket:
    parts = []
    entries = []
    offset = _RECORD.size
    for kind, pid, tag, data in items:
        entry = _encode_entry(kind, pid, tag, data)
        size = len(entry)
        entries.append((kind, pid, tag, offset + size - len(data), len(data), size))
        parts.append(entry)
        offset += size
    return _Ticket(_frame(b"".join(parts)), entries)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems can't sync a directory
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        offset += (written := os.pwrite(fd, view, offset))
        view = view[written:]


_sync: Final = getattr(os, "fdatasync", os.fsync)


def _read_record(data: mmap.mmap, offset: int, size: int) -> list[tuple[int, _Entry]] | None:
    """The entries of the record at ``offset``, each with the offset where the record ends;
    ``None`` if it is torn or damaged."""
    if offset + _RECORD.size > size:
        return None
    magic, length, crc = _RECORD.unpack_from(data, offset)
    body_start = offset + _RECORD.size
    end = body_start + length
    if magic != _RECORD_MAGIC or end > size:
        return None
    body = data[body_start:end]
    if zlib.crc32(body) != crc:
        return None
    try:
        entries = _parse_body(body, body_start)
    except (struct.error, UnicodeDecodeError, ValueError):
        return None  # a good checksum over a bad body: not written by this code
    return [(end, entry) for entry in entries] or None


def _parse_body(body: bytes, base: int) -> list[_Entry]:
    entries = []
    position = 0
    while position < len(body):
        kind, pid_len, tag_len, data_len = _ENTRY.unpack_from(body, position)
        start = position + _ENTRY.size
        size = _ENTRY.size + pid_len + tag_len + data_len
        if kind not in (_PUT, _DELETE, _DELETE_PID) or position + size > len(body):
            raise ValueError("bad entry")
        pid = body[start : start + pid_len].decode()
        tag = body[start + pid_len : start + pid_len + tag_len].decode() if tag_len else None
        entries.append((kind, pid, tag, base + start + pid_len + tag_len, data_len, size))
        position += size
    return entries


def _good_record_after(data: mmap.mmap, start: int, size: int) -> bool:
    """Whether a whole, good record starts anywhere from ``start`` on. A crash only tears
    the tail of the journal, so after a torn record there is none; after a damaged one
    (a disk error, an edit) there usually is."""
    while (found := data.find(_RECORD_MAGIC, start, size)) >= 0:
        if _read_record(data, found, size) is not None:
            return True
        start = found + 1
    return False


@final
class JournalPersister(Persister):
    """Checkpoints appended to one journal file, with an in-memory index (see the module
    docstring for the format, the recovery and the compaction).

    A save costs one ``pwrite`` of the record (and one ``fdatasync`` when durable, shared with
    the saves that run concurrently with it), instead of the create, write and rename of a
    file per save of :class:`~corelib.FilePersister`.

    **Durability.** With ``durable=False`` (the default) a completed save or delete is in the
    operating system's cache: it survives the process crashing or being killed at any point.
    After a power loss or kernel crash the last saves before it may be lost (replay drops
    a damaged tail, so what loads is whole). ``durable=True`` ``fdatasync``s each batch of
    records before any of its saves returns (and the folder when the journal is created or
    compacted), so a completed save also survives a power loss.

    **Threads.** With ``durable=False`` a save of at most :data:`INLINE_IO_BYTES` bytes is
    written in the calling thread when no other write is in progress (one ``pwrite`` to the
    page cache), and loads of that size read there; otherwise the call runs in a worker
    thread. With ``durable=True`` every write and read runs in a worker thread. The
    persister is thread-safe: one instance may be shared by processes on several threads and
    event loops.

    **One owner.** The journal belongs to one persister at a time: the index lives in its
    memory. An exclusive ``flock`` on ``<path>.lock`` refuses a second persister (in this
    or another OS process) with :class:`BlockingIOError` on its first use. Use
    :class:`~corelib.SqlitePersister` to share checkpoints between OS processes.

    Args:
        path: the journal file; created if missing (its folder must exist).
        codec: the codec; a default :class:`~corelib.CheckpointCodec` if omitted.
        durable: see above.
        compact_at: don't compact a journal smaller than this many bytes.
        compact_ratio: compact when the journal is more than this many times its live data.
    """

    __slots__ = (
        "_closed",
        "_codec",
        "_compact_at",
        "_compact_ratio",
        "_durable",
        "_end",
        "_fd",
        "_index",
        "_live",
        "_lock",
        "_lock_fd",
        "_path",
        "_queue",
        "_recovered",
        "_write_lock",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: CheckpointCodec | None = None,
        durable: bool = False,
        compact_at: int = 1024 * 1024,
        compact_ratio: float = 4.0,
    ) -> None:
        if compact_ratio <= 1:
            raise ValueError(f"compact_ratio must be > 1, got {compact_ratio!r}")
        self._path = os.fspath(path)
        self._codec = CheckpointCodec() if codec is None else codec
        self._durable = durable
        self._compact_at = compact_at
        self._compact_ratio = compact_ratio
        # Lock order: _write_lock, then _lock. _write_lock serialises writing the file (and
        # compacting, opening, closing); _lock guards everything below, for short moments.
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._fd = -1  # -1 until opened
        self._lock_fd = -1
        self._closed = False
        self._index: dict[str, dict[str | None, _Location]] = {}
        self._end = 0  # the file's length: where the next record goes
        self._live = 0  # bytes of live entries (what a compaction would keep)
        self._queue: list[_Ticket] = []
        self._recovered: JournalRecovery | None = None

    @property
    def path(self) -> str:
        """The journal file."""
        return self._path

    @property
    def codec(self) -> CheckpointCodec:
        return self._codec

    @property
    def recovered(self) -> JournalRecovery | None:
        """What replay found when the journal was opened; ``None`` until the first call."""
        return self._recovered

    # --- opening and replay ---------------------------------------------------------------------

    async def _open(self) -> None:
        if self._closed:
            raise _closed_error(self)
        if self._fd < 0:
            await anyio.to_thread.run_sync(self._open_sync)

    def _open_sync(self) -> None:
        with self._write_lock:
            if self._closed:
                raise _closed_error(self)
            if self._fd >= 0:
                return
            lock_fd = os.open(
                self._path + _LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666
            )
            try:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise BlockingIOError(
                        errno.EWOULDBLOCK, "journal is in use by another persister", self._path
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path + _COMPACT_SUFFIX)  # a compaction that didn't finish
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                try:
                    self._replay(fd)
                except BaseException:
                    os.close(fd)
                    raise
            except BaseException:
                os.close(lock_fd)
                raise
            with self._lock:
                self._fd = fd
                self._lock_fd = lock_fd

    def _replay(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size < len(_FILE_HEADER):
            if os.pread(fd, size, 0) != _FILE_HEADER[:size]:
                raise CorruptCheckpointError(f"{self._path!r} is not a checkpoint journal")
            # New, or its creation was torn: (re)write the header.
            os.ftruncate(fd, 0)
            _write_all(fd, _FILE_HEADER, 0)
            if self._durable:
                _sync(fd)
                _fsync_dir(os.path.dirname(os.path.abspath(self._path)))
            self._end = len(_FILE_HEADER)
            self._recovered = JournalRecovery(0)
            return
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
            if data[: len(_FILE_HEADER)] != _FILE_HEADER:
                raise CorruptCheckpointError(f"{self._path!r} is not a checkpoint journal")
            offset, records, corrupt = self._replay_records(data, size)
        recovery = JournalRecovery(records)
        if offset < size:
            preserved = None
            if corrupt:
                preserved = f"{self._path}.corrupt-{int(time.time())}"
                shutil.copyfile(self._path, preserved)
                logger.warning(
                    "checkpoint journal %r: damaged record at byte %d, followed by more data;"
                    " dropped %d bytes from there (the file was copied to %r first)",
                    self._path,
                    offset,
                    size - offset,
                    preserved,
                )
            os.ftruncate(fd, offset)
            if self._durable:
                _sync(fd)
            recovery = JournalRecovery(records, size - offset, corrupt, preserved)
        self._end = offset
        self._recovered = recovery

    def _replay_records(self, data: mmap.mmap, size: int) -> tuple[int, int, bool]:
        """Apply good records to the index; return where they end, how many there were and
        whether a good record follows the first bad one (damage, not a torn tail)."""
        offset = len(_FILE_HEADER)
        records = 0
        while offset < size:
            entries = _read_record(data, offset, size)
            if entries is None:
                return offset, records, _good_record_after(data, offset + 1, size)
            for _, entry in entries:
                self._apply(*entry)
            records += 1
            offset = entries[-1][0]
        return offset, records, False

    def _apply(
        self, kind: int, pid: str, tag: str | None, offset: int, length: int, size: int
    ) -> None:
        """Apply one entry to the index (``_lock`` held, or not yet shared)."""
        index = self._index
        if kind == _PUT:
            tags = index.setdefault(pid, {})
            old = tags.get(tag)
            if old is not None:
                self._live -= old[2]
            tags[tag] = (offset, length, size + _RECORD.size)
            self._live += size + _RECORD.size
        elif kind == _DELETE:
            found = index.get(pid)
            if found is not None and (old := found.pop(tag, None)) is not None:
                self._live -= old[2]
                if not found:
                    del index[pid]
        else:
            for old in index.pop(pid, {}).values():
                self._live -= old[2]

    # --- writing ----------------------------------------------------------------------------------

    def _commit(self, ticket: _Ticket, *, queued: bool) -> None:
        """Write ``ticket`` (and whatever else is queued), ``_write_lock`` held; or find it
        written by another thread. ``queued``: the ticket was queued before the lock was
        taken."""
        if ticket.done:
            if ticket.error is not None:
                raise ticket.error
            return
        with self._lock:
            if self._closed:
                raise _closed_error(self)
            batch = self._queue.copy()
            self._queue.clear()
        if not queued:
            batch.append(ticket)
        start = self._end
        data = batch[0].record if len(batch) == 1 else b"".join(t.record for t in batch)
        try:
            _write_all(self._fd, data, start)
            if self._durable:
                _sync(self._fd)
        except BaseException as exc:
            # Don't leave a partial record for later ones to follow (replay would stop there).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            for other in batch:
                other.error = exc
                other.done = True
            raise
        with self._lock:
            offset = start
            for other in batch:
                for kind, pid, tag, data_offset, length, size in other.entries:
                    self._apply(kind, pid, tag, offset + data_offset, length, size)
                offset += len(other.record)
                other.done = True
            self._end = offset

    def _commit_blocking(self, ticket: _Ticket) -> None:
        """In a worker thread: queue ``ticket``, write it (or wait for it to be written),
        then compact if due."""
        with self._lock:
            if self._closed:
                raise _closed_error(self)
            self._queue.append(ticket)
        with self._write_lock:
            self._commit(ticket, queued=True)
            if self._compaction_due():
                try:
                    self._compact_locked()
                except OSError:  # the save is done; the next write tries again
                    logger.warning("compacting %r failed", self._path, exc_info=True)

    def _compaction_due(self) -> bool:
        return self._end > self._compact_at and self._end > self._compact_ratio * (
            self._live + len(_FILE_HEADER)
        )

    async def _write(self, ticket: _Ticket) -> None:
        await self._open()
        if not self._durable and len(ticket.record) <= INLINE_IO_BYTES:
            # A small write without fsync is one pwrite to the page cache: cheaper than a
            # worker-thread round trip. Still a checkpoint (cancellation is checked before the
            # write starts, never during it).
            await anyio.lowlevel.checkpoint()
            if self._write_lock.acquire(blocking=False):
                try:
                    if not self._compaction_due():
                        self._commit(ticket, queued=False)
                        return
                finally:
                    self._write_lock.release()
        await anyio.to_thread.run_sync(self._commit_blocking, ticket)

    async def save_checkpoint(self, checkpoint: Checkpoint, tag: str | None = None) -> None:
        pid = checkpoint.pid
        _check_key(pid, tag)
        if self._closed:
            raise _closed_error(self)
        await self._write(_ticket([(_PUT, pid, tag, self._codec.encode(checkpoint))]))

    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        _check_key(pid, tag)
        await self._write(_ticket([(_PUT, pid, tag, data)]))

    async def save_many(self, items: Sequence[tuple[str, str | None, bytes]]) -> None:
        """Save ``(pid, tag, data)`` items as one journal record: all or nothing, even if
        the process is killed while writing it."""
        for pid, tag, _ in items:
            _check_key(pid, tag)
        if not items:
            await self._open()
            await anyio.lowlevel.checkpoint()
            return
        await self._write(_ticket([(_PUT, pid, tag, data) for pid, tag, data in items]))

    async def delete_checkpoint(self, pid: str, tag: str | None = None) -> None:
        _check_key(pid, tag)
        await self._open()
        if tag not in self._index.get(pid, {}):
            await anyio.lowlevel.checkpoint()
            return
        await self._write(_ticket([(_DELETE, pid, tag, b"")]))

    async def delete_process_checkpoints(self, pid: str) -> None:
        _check_pid(pid)
        await self._open()
        if pid not in self._index:
            await anyio.lowlevel.checkpoint()
            return
        await self._write(_ticket([(_DELETE_PID, pid, None, b"")]))

    # --- compaction -------------------------------------------------------------------------------

    async def compact(self) -> None:
        """Rewrite the journal now with only its live checkpoints (see the module docstring)."""
        await self._open()

        def compact() -> None:
            with self._write_lock:
                if self._closed:
                    raise _closed_error(self)
                self._compact_locked()

        await anyio.to_thread.run_sync(compact)

    def _compact_locked(self) -> None:
        """Compact, ``_write_lock`` held (so the file and the index change only here)."""
        with self._lock:
            live = [
                (pid, tag, location)
                for pid, tags in self._index.items()
                for tag, location in tags.items()
            ]
        temp = self._path + _COMPACT_SUFFIX
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            index: dict[str, dict[str | None, _Location]] = {}
            chunks = [_FILE_HEADER]
            offset = len(_FILE_HEADER)
            written = 0
            for pid, tag, (data_offset, length, _) in live:
                data = os.pread(self._fd, length, data_offset)
                ticket = _ticket([(_PUT, pid, tag, data)])
                _, _, _, in_record, _, _ = ticket.entries[0]
                index.setdefault(pid, {})[tag] = (offset + in_record, length, len(ticket.record))
                chunks.append(ticket.record)
                offset += len(ticket.record)
                if offset - written > 1024 * 1024:
                    _write_all(fd, b"".join(chunks), written)
                    written = offset
                    chunks = []
            _write_all(fd, b"".join(chunks), written)
            os.fsync(fd)  # always: the rename must never publish a file still being written
            os.replace(temp, self._path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        with self._lock:
            old, self._fd = self._fd, fd
            self._index = index
            self._end = offset
            self._live = offset - len(_FILE_HEADER)
        os.close(old)
        _fsync_dir(os.path.dirname(os.path.abspath(self._path)))

    # --- reading ----------------------------------------------------------------------------------

    def _read(self, pid: str, tag: str | None) -> bytes | None:
        with self._lock:
            if self._closed:
                raise _closed_error(self)
            location = self._index.get(pid, {}).get(tag)
            if location is None:
                return None
            offset, length, _ = location
            return os.pread(self._fd, length, offset)

    async def load_checkpoint(self, pid: str, tag: str | None = None) -> Checkpoint:
        _check_key(pid, tag)
        await self._open()
        location = self._index.get(pid, {}).get(tag)
        if not self._durable and (location is None or location[1] <= INLINE_IO_BYTES):
            await anyio.lowlevel.checkpoint()
            data = self._read(pid, tag)
        else:
            data = await anyio.to_thread.run_sync(self._read, pid, tag)
        if data is None:
            raise CheckpointNotFoundError(pid, tag)
        return _decode(self._codec, data, pid, tag)

    async def get_checkpoints(self) -> list[PersistedCheckpoint]:
        await self._open()
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise _closed_error(self)
        with self._lock:
            keys = [
                PersistedCheckpoint(pid, tag) for pid, tags in self._index.items() for tag in tags
            ]
        return _sorted(keys)

    async def get_process_checkpoints(self, pid: str) -> list[PersistedCheckpoint]:
        _check_pid(pid)
        await self._open()
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise _closed_error(self)
        with self._lock:
            keys = [PersistedCheckpoint(pid, tag) for tag in self._index.get(pid, {})]
        return _sorted(keys)

    # --- closing ----------------------------------------------------------------------------------

    def _close(self) -> None:
        with self._write_lock, self._lock:
            self._closed = True
            for ticket in self._queue:  # their threads wait for _write_lock: they will see it
                ticket.error = _closed_error(self)
                ticket.done = True
            self._queue.clear()
            if self._fd >= 0:
                os.close(self._fd)
                os.close(self._lock_fd)  # releases the flock
                self._fd = self._lock_fd = -1

    async def aclose(self) -> None:
        # Shielded: closing must happen even when the caller is being cancelled (e.g. in
        # ``__aexit__``); it only waits for the write in progress, if any.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close)

    def __repr__(self) -> str:
        return f"JournalPersister({self._path!r}, durable={self._durable})"
