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
:class:`~corelib.FilePersister` or :class:`~corelib.SqlitePersister`, which are cheaper done
inline: see their docstrings).

All methods are async. A cancelled call whose I/O has started lets that I/O finish in its
worker thread (a save is never half-done), then raises the cancellation.

Three implementations share one contract, pinned down by ``tests/corelib/test_persisters.py``:

- :class:`InMemoryPersister` (here): a dict of snapshots or encoded bytes; for tests and
  single-run use.
- :class:`~corelib.FilePersister` (:mod:`corelib.persistence._file`): one JSON file per
  checkpoint, replaced atomically.
- :class:`~corelib.SqlitePersister` (:mod:`corelib.persistence._sqlite`): one SQLite table in
  WAL mode, shareable by several OS processes.

This module holds what they share: the :class:`Persister` interface, the key checks and the
decoding of stored bytes.

Keys: a pid is a non-empty string; a tag is ``None`` or a non-empty string (the empty string is
refused so that it can't be confused with "no tag"). Both must be valid Unicode (no lone
surrogates), since they end up in file names and SQL text. Anything else raises ``ValueError``.

Deleting a checkpoint that doesn't exist is not an error (as in plumpy): deletion is
idempotent, so clean-up code need not check first.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Final, Self, final

import anyio
import anyio.lowlevel
import attrs

from ._checkpoint import (
    Checkpoint,
    CheckpointNotFoundError,
    CheckpointVersionError,
    CorruptCheckpointError,
    PersisterClosedError,
)
from ._codec import CheckpointCodec
from ._snapshot import _restore, _Snapshot, _take_snapshot

__all__ = [
    "PersistedCheckpoint",
    "Persister",
    "InMemoryPersister",
    "INLINE_IO_BYTES",
]

#: With ``durable=False``, a :class:`~corelib.FilePersister` saves and loads checkpoints up to
#: this many bytes in the calling thread (a few page-cache syscalls, no ``fsync``:
#: microseconds) instead of a worker thread, and a :class:`~corelib.SqlitePersister` saves them
#: there; bigger ones, and every durable save, go to a worker thread.
INLINE_IO_BYTES: Final = 64 * 1024


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

    async def save_many(self, items: Sequence[tuple[str, str | None, bytes]]) -> None:
        """Store several encoded checkpoints, ``(pid, tag, data)`` each, as a group commit:
        persisters that can write them in one transaction or one append do (all or
        nothing); this default saves them one by one, in order.

        A runner's checkpointer writes everything queued since its last write this way, so
        a thousand processes checkpointing at once cost a few commits, not a thousand.
        """
        for pid, tag, data in items:
            await self.save_encoded(pid, tag, data)

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
