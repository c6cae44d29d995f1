"""The PostgreSQL persister: checkpoints in one table of a PostgreSQL database, through
psycopg 3 (the ``postgres`` extra), shareable by every machine that reaches the server.

See :mod:`corelib.persistence._persisters` for the contract every persister keeps.

Theory of operation
-------------------
**I/O in worker threads, on sync connections.** psycopg's async connection runs on asyncio
only, and plumio runs on trio too; so every call runs psycopg's sync API in a worker thread
(``anyio.to_thread.run_sync``), on a connection taken from a small pool of this persister's
own. One code path serves both backends and any number of event loops on any number of
threads: the pool is guarded by a :class:`threading.Condition`, and a connection is used by
one thread at a time.

**Group commit.** A save doesn't wait for a connection of its own. Saves from one event loop
(one thread) queue in that loop's ``_Batch``; the first finds no writer and becomes it: it
takes everything queued and writes it in one transaction (one round trip, in pipeline mode,
one commit), in a worker thread. Saves that arrive meanwhile queue for the next batch; when
the writer's batch is committed it wakes them, and hands the writer's role to the first of
the queue, which writes the next batch. So a lone save is never delayed, and a thousand
concurrent ones cost a few commits, not a thousand. Each save's call returns once its batch
is committed (or raises that batch's error). Saves to the same key within one batch apply in
the order they were called.

Invariant: a loop's ``_Batch`` has a writer (``writing``) whenever its queue is not empty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from ._checkpoint import Checkpoint, CheckpointNotFoundError
from ._codec import CheckpointCodec
from ._persisters import (
    PersistedCheckpoint,
    Persister,
    _check_key,
    _check_pid,
    _closed_error,
    _decode,
    _sorted,
)

if TYPE_CHECKING:
    import psycopg
    import psycopg.sql

__all__ = ["PostgresPersister", "postgres_problem"]

T = TypeVar("T")

# Keys are stored as BYTEA of their UTF-8, not TEXT: PostgreSQL's text can't hold NUL, which
# a pid may. The untagged checkpoint has tag b'' (the empty tag is refused by the API).
_NO_TAG: Final = b""

_MISSING_PSYCOPG: Final = "psycopg 3 is not installed: pip install 'plumio[postgres]'"

_Row = tuple[bytes, bytes, bytes]


def _import_psycopg() -> ModuleType:
    """psycopg, imported on first use, so that plumio needs it only with this persister."""
    try:
        import psycopg
        import psycopg.sql
    except ImportError as exc:
        raise ImportError(
            "PostgresPersister needs psycopg 3 (the postgres extra): pip install 'plumio[postgres]'"
        ) from exc
    return psycopg


def postgres_problem(dsn: str, *, timeout: float = 2.0) -> str | None:
    """Why a :class:`PostgresPersister` can't be used with ``dsn`` here, or ``None``.

    Names what is missing: psycopg (the ``postgres`` extra) or a server answering at ``dsn``
    (tried with one login, for up to ``timeout`` seconds). For tests that skip, saying why.
    """
    try:
        psycopg = _import_psycopg()
    except ImportError:
        return _MISSING_PSYCOPG
    try:
        connection = psycopg.connect(dsn, connect_timeout=max(1, round(timeout)))
    except psycopg.Error as exc:
        shown = psycopg.conninfo.make_conninfo(dsn, password="***") if "@" in dsn else dsn
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL server answers at {shown}: {first_line}"
    connection.close()
    return None


def _tag_from_row(tag: bytes) -> str | None:
    return None if tag == _NO_TAG else bytes(tag).decode("utf-8")


def _row_key(pid: str, tag: str | None) -> tuple[bytes, bytes]:
    return pid.encode("utf-8"), _NO_TAG if tag is None else tag.encode("utf-8")


@attrs.define(eq=False)
class _Pending:
    """One queued save. ``wake`` is set when its batch is committed (``taken`` and done, with
    ``error`` if it failed) or when it becomes its loop's writer (``lead``)."""

    row: _Row
    wake: anyio.Event = attrs.field(factory=anyio.Event)
    taken: bool = False
    lead: bool = False
    error: Exception | None = None


@attrs.define(eq=False)
class _Batch:
    """The saves queued in one event loop, and whether one of them is writing."""

    pending: list[_Pending] = attrs.field(factory=list)
    writing: bool = False


@final
class PostgresPersister(Persister):
    """Checkpoints in one PostgreSQL table, shared by every process that reaches the server.

    The table (created if missing) has one row per ``(pid, tag)``; a save is an
    ``INSERT ... ON CONFLICT DO UPDATE`` (an upsert), the checkpoint stored as ``BYTEA`` of the
    codec's bytes. Concurrent saves from one event loop are group-committed: written in one
    transaction by one of them (see the module docstring); a lone save is written at once.
    Calls run in worker threads on a pool of up to ``connections`` sync psycopg connections,
    opened on demand; the persister may be shared by tasks on several threads and event loops,
    asyncio or trio.

    **Durability.** ``durable=True`` (the default) keeps PostgreSQL's ``synchronous_commit``:
    a completed save has been flushed to the server's write-ahead log. ``durable=False`` sets
    ``synchronous_commit = off`` on its connections: a commit returns before the flush, so a
    server crash may lose the last saves (up to about three times ``wal_writer_delay``), never
    corrupting the table or tearing a checkpoint.

    Close it with :meth:`aclose` (or ``async with``) to close the connections. A connection
    found broken is dropped and the call's error (a ``psycopg.Error``) raised; the next call
    opens a new one.

    Args:
        dsn: a libpq connection string or URI, e.g. ``postgresql://user:pw@host/db``.
        table: the table's name (any name: it is quoted).
        codec: the codec; a default :class:`~corelib.CheckpointCodec` if omitted.
        durable: see above.
        connections: the most connections open at once (>= 1).
        connect_timeout: seconds to wait for a new connection.

    Raises:
        ImportError: psycopg 3 is not installed (the ``postgres`` extra).
        ValueError: ``connections`` < 1.
    """

    __slots__ = (
        "_batches",
        "_closed",
        "_codec",
        "_condition",
        "_connect_timeout",
        "_dsn",
        "_durable",
        "_idle",
        "_max_connections",
        "_open",
        "_psycopg",
        "_schema_ready",
        "_sql",
        "_table",
    )

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "plumio_checkpoints",
        codec: CheckpointCodec | None = None,
        durable: bool = True,
        connections: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be >= 1, got {connections}")
        self._psycopg = _import_psycopg()
        self._dsn = dsn
        self._table = table
        self._codec = CheckpointCodec() if codec is None else codec
        self._durable = durable
        self._max_connections = connections
        self._connect_timeout = connect_timeout
        # Guards _idle, _open, _closed, _schema_ready and _batches.
        self._condition = threading.Condition()
        self._idle: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._open = 0  # connections open or being opened, idle or in use
        self._closed = False
        self._schema_ready = False
        self._batches: dict[int, _Batch] = {}  # thread id -> that thread's loop's queue
        self._sql = _Statements(self._psycopg, table)

    @property
    def dsn(self) -> str:
        """The connection string."""
        return self._dsn

    @property
    def table(self) -> str:
        """The table's name."""
        return self._table

    @property
    def codec(self) -> CheckpointCodec:
        return self._codec

    # --- the connection pool (worker threads only) ------------------------------------------

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        connection: psycopg.Connection[tuple[Any, ...]] = self._psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
        )
        try:
            if not self._durable:
                connection.execute("SET synchronous_commit = off")
            with self._condition:
                ready = self._schema_ready
            if not ready:
                self._create_table(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _create_table(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        # Serialized by an advisory lock: two sessions racing on CREATE TABLE IF NOT EXISTS
        # may both try to create it, and one fails.
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._table,))
            connection.execute(self._sql.create)
        with self._condition:
            self._schema_ready = True

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection of the pool, for the calling (worker) thread alone."""
        connection: psycopg.Connection[tuple[Any, ...]] | None
        with self._condition:
            while True:
                if self._closed:
                    raise _closed_error(self)
                if self._idle:
                    connection = self._idle.pop()
                    break
                if self._open < self._max_connections:
                    self._open += 1
                    connection = None
                    break
                self._condition.wait()
        if connection is None:
            try:
                connection = self._connect()
            except BaseException:
                with self._condition:
                    self._open -= 1
                    self._condition.notify()
                raise
        try:
            yield connection
        finally:
            with self._condition:
                if self._closed or connection.closed or connection.broken:
                    self._open -= 1
                    keep = False
                else:
                    self._idle.append(connection)
                    keep = True
                self._condition.notify()
            if not keep:
                connection.close()

    def _call(self, operation: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        with self._connection() as connection:
            return operation(connection)

    def _write(self, rows: list[_Row]) -> None:
        upsert = self._sql.upsert
        with self._connection() as connection:
            if len(rows) == 1:
                connection.execute(upsert, rows[0])
                return
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(upsert, rows)  # pipelined: one round trip

    async def _run(self, operation: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        if self._closed:
            raise _closed_error(self)
        return await anyio.to_thread.run_sync(self._call, operation)

    # --- group commit ---------------------------------------------------------------------

    def _batch_here(self) -> _Batch:
        ident = threading.get_ident()
        with self._condition:
            batch = self._batches.get(ident)
            if batch is None:
                batch = self._batches[ident] = _Batch()
            return batch

    def _hand_off(self, batch: _Batch) -> None:
        """The writer is done: make the first queued save the writer, or note there is none."""
        if batch.pending:
            successor = batch.pending[0]
            successor.lead = True
            successor.wake.set()
            return
        batch.writing = False
        with self._condition:
            if self._batches.get(threading.get_ident()) is batch:
                del self._batches[threading.get_ident()]

    async def _save_row(self, row: _Row) -> None:
        # Still a checkpoint: cancellation is checked before the save is queued.
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise _closed_error(self)
        batch = self._batch_here()
        item = _Pending(row)
        batch.pending.append(item)
        if batch.writing:
            try:
                await item.wake.wait()
            except BaseException:
                if not item.taken:  # never written: out of the queue
                    batch.pending.remove(item)
                    if item.lead:
                        self._hand_off(batch)
                raise
            if not item.lead:
                if item.error is not None:
                    raise item.error
                return
        else:
            batch.writing = True
        # This save is its loop's writer: it writes the whole queue, itself first.
        items, batch.pending = batch.pending, []
        rows = []
        for queued in items:
            queued.taken = True
            rows.append(queued.row)
        try:
            # Shielded: a batch, once taken, is written and its savers woken.
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self._write, rows)
                except Exception as exc:
                    for queued in items:
                        queued.error = exc
        finally:
            for queued in items:
                if queued is not item:
                    queued.wake.set()
            self._hand_off(batch)
        if item.error is not None:
            raise item.error

    # --- the Persister interface ----------------------------------------------------------

    async def save_checkpoint(self, checkpoint: Checkpoint, tag: str | None = None) -> None:
        pid = checkpoint.pid
        _check_key(pid, tag)
        await self._save_row((*_row_key(pid, tag), self._codec.encode(checkpoint)))

    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        _check_key(pid, tag)
        await self._save_row((*_row_key(pid, tag), data))

    async def save_many(self, items: Sequence[tuple[str, str | None, bytes]]) -> None:
        """Save ``(pid, tag, data)`` items in one transaction; all or nothing."""
        rows: list[_Row] = []
        for pid, tag, data in items:
            _check_key(pid, tag)
            rows.append((*_row_key(pid, tag), data))
        if not rows:
            await anyio.lowlevel.checkpoint()
            return
        if self._closed:
            raise _closed_error(self)
        await anyio.to_thread.run_sync(self._write, rows)

    async def load_checkpoint(self, pid: str, tag: str | None = None) -> Checkpoint:
        _check_key(pid, tag)
        select = self._sql.select
        key = _row_key(pid, tag)
        row = await self._run(lambda connection: connection.execute(select, key).fetchone())
        if row is None:
            raise CheckpointNotFoundError(pid, tag)
        return _decode(self._codec, bytes(row[0]), pid, tag)

    async def get_checkpoints(self) -> list[PersistedCheckpoint]:
        select = self._sql.keys
        rows = await self._run(lambda connection: connection.execute(select).fetchall())
        return _sorted(
            PersistedCheckpoint(bytes(pid).decode("utf-8"), _tag_from_row(tag)) for pid, tag in rows
        )

    async def get_process_checkpoints(self, pid: str) -> list[PersistedCheckpoint]:
        _check_pid(pid)
        select = self._sql.tags
        key = (pid.encode("utf-8"),)
        rows = await self._run(lambda connection: connection.execute(select, key).fetchall())
        return _sorted(PersistedCheckpoint(pid, _tag_from_row(tag)) for (tag,) in rows)

    async def delete_checkpoint(self, pid: str, tag: str | None = None) -> None:
        _check_key(pid, tag)
        delete = self._sql.delete
        key = _row_key(pid, tag)
        await self._run(lambda connection: connection.execute(delete, key))

    async def delete_process_checkpoints(self, pid: str) -> None:
        _check_pid(pid)
        delete = self._sql.delete_pid
        key = (pid.encode("utf-8"),)
        await self._run(lambda connection: connection.execute(delete, key))

    def _close(self) -> None:
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._condition.notify_all()
        for connection in idle:  # those in use are closed when their call returns them
            connection.close()

    async def aclose(self) -> None:
        # Shielded: closing must happen even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close)

    def __repr__(self) -> str:
        return (
            f"PostgresPersister(table={self._table!r}, durable={self._durable},"
            f" connections={self._max_connections})"
        )


@final
class _Statements:
    """The SQL of one table, composed once (the table name quoted as an identifier)."""

    __slots__ = ("create", "delete", "delete_pid", "keys", "select", "tags", "upsert")

    def __init__(self, module: ModuleType, table: str) -> None:
        sql = module.sql
        name = sql.Identifier(table)

        def compose(text: str) -> psycopg.sql.Composed:
            composed: psycopg.sql.Composed = sql.SQL(text).format(table=name)
            return composed

        self.create = compose(
            "CREATE TABLE IF NOT EXISTS {table} ("
            " pid BYTEA NOT NULL, tag BYTEA NOT NULL, data BYTEA NOT NULL,"
            " PRIMARY KEY (pid, tag))"
        )
        self.upsert = compose(
            "INSERT INTO {table} (pid, tag, data) VALUES (%s, %s, %s)"
            " ON CONFLICT (pid, tag) DO UPDATE SET data = EXCLUDED.data"
        )
        self.select = compose("SELECT data FROM {table} WHERE pid = %s AND tag = %s")
        self.keys = compose("SELECT pid, tag FROM {table}")
        self.tags = compose("SELECT tag FROM {table} WHERE pid = %s")
        self.delete = compose("DELETE FROM {table} WHERE pid = %s AND tag = %s")
        self.delete_pid = compose("DELETE FROM {table} WHERE pid = %s")
