"""In-memory snapshots and the SQLite persister's inline path and modes.

The :class:`~corelib.InMemoryPersister` stores a private deep copy instead of JSON bytes when
it can: it must give exactly what the JSON round trip gives, share nothing mutable with the
saved or the loaded checkpoint, and refuse at save time what the codec can't write, with the
codec's own error. The :class:`~corelib.SqlitePersister` runs small non-durable calls in the
caller's thread, never waiting there.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio.lowlevel import checkpoint as yield_once
from hypothesis import given, settings

from corelib import AttributesFrozenDict, ExitCode, InMemoryPersister, SqlitePersister
from corelib.persistence import _sqlite as _persisters  # INLINE_IO_BYTES, WAL_CHECKPOINT_WRITES
from corelib.persistence._checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointEncodeError,
    CheckpointVersionError,
)
from corelib.persistence._codec import CheckpointCodec
from corelib.persistence._snapshot import _Snapshot, _take_snapshot

from ._checkpoint_helpers import (
    Point,
    assert_same_checkpoint,
    checkpoints,
    rich_checkpoint,
    user_codec,
)


def checkpoint(**fields: Any) -> Checkpoint:
    return Checkpoint(**{"pid": "p", "process_class": "m:C", "state": "running", **fields})


class _StrSubclass(str):
    __slots__ = ()


def round_trip(codec: CheckpointCodec, cp: Checkpoint) -> Checkpoint:
    return codec.decode(codec.encode(cp))


def stored(persister: InMemoryPersister, pid: str = "p", tag: str | None = None) -> object:
    return persister._checkpoints[pid][tag]


# --- the copy is the JSON round trip ------------------------------------------------------------


def assert_copy_is_round_trip(codec: CheckpointCodec, cp: Checkpoint) -> None:
    try:
        expected = round_trip(codec, cp)
    except Exception as exc:  # the same error, raised by the copy too
        error = exc
    else:
        assert_same_checkpoint(codec.copy(cp), expected)
        return
    with pytest.raises(type(error), match=f"^{re.escape(str(error))}$"):
        codec.copy(cp)


@settings(max_examples=300, deadline=None)
@given(cp=checkpoints)
def test_copy_is_the_json_round_trip(cp: Checkpoint) -> None:
    codec = CheckpointCodec()
    assert_copy_is_round_trip(codec, cp)
    try:
        expected = round_trip(codec, cp)
    except Exception:
        return
    snapshot = _take_snapshot(cp)
    if snapshot is not None:
        assert_same_checkpoint(snapshot.checkpoint, expected)


def test_the_rich_checkpoint_copies_as_its_round_trip() -> None:
    codec = user_codec()
    cp = rich_checkpoint()
    assert _take_snapshot(cp) is None  # it holds registered types: the JSON path
    assert_same_checkpoint(codec.copy(cp), round_trip(codec, cp))


def test_plain_checkpoints_are_snapshots_and_copy_exactly() -> None:
    cp = checkpoint(
        state_data={"step": "s", "args": [1, (2, [3])], "kwargs": {}},
        inputs=AttributesFrozenDict({"a": 1, "nested": {"b": [1.5, None, True]}}),
        outputs={"o": [{"x": float("nan")}, (), ("t", 2)]},
        ctx={"i": 0, "values": {"v": 1.5}, "log": ["a"], "f": AttributesFrozenDict({"l": [1]})},
        cursor=[1, 2],
        awaiting=[{"kind": "process", "pid": "c", "key": "k", "append": False}],
        exit_code=ExitCode(1, "m", "L"),
        created_at=1,
        saved_at=2.5,
        meta={"m": [[]]},
    )
    snapshot = _take_snapshot(cp)
    assert snapshot is not None
    assert_same_checkpoint(snapshot.checkpoint, round_trip(CheckpointCodec(), cp))


@pytest.mark.parametrize(
    "ctx",
    [
        {"k": {1, 2}},  # sets, bytes, user types: tagged by the codec
        {"k": b"x"},
        {"k": Point(1, 2)},
        {1: "non-string key"},
        {"!type": "reserved key"},
        {"k": [_StrSubclass("subclass of str")]},
        {"k": (1, {2: 3})},
    ],
    ids=["set", "bytes", "user type", "int key", "reserved key", "str subclass", "tuple"],
)
def test_values_json_would_change_take_the_json_path(ctx: dict[Any, Any]) -> None:
    codec = user_codec()
    cp = checkpoint(ctx=ctx)
    assert _take_snapshot(cp) is None
    assert_copy_is_round_trip(codec, cp)


def test_huge_ints_take_the_json_path() -> None:
    huge = 10 ** sys.get_int_max_str_digits()
    for cp in (
        checkpoint(ctx={"x": huge}),
        checkpoint(ctx={"x": [1, -huge]}),
        checkpoint(ctx={"x": {"a": "b", "c": huge}}),
        checkpoint(exit_code=ExitCode(huge)),
        checkpoint(saved_at=huge),
    ):
        assert _take_snapshot(cp) is None
    ok = checkpoint(ctx={"x": huge - 1, "y": [-(huge - 1)]})
    assert _take_snapshot(ok) is not None


def test_cycles_and_deep_nesting_take_the_json_path() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert _take_snapshot(checkpoint(ctx={"c": cyclic})) is None
    deep: Any = []
    for _ in range(sys.getrecursionlimit() + 10):
        deep = [deep]
    assert _take_snapshot(checkpoint(ctx={"d": deep})) is None


def test_a_checkpoint_from_the_future_is_not_snapshotted() -> None:
    assert _take_snapshot(checkpoint(version=CHECKPOINT_VERSION + 1)) is None


# --- the in-memory persister --------------------------------------------------------------------


async def test_the_snapshot_is_independent_of_the_saved_checkpoint() -> None:
    log: list[Any] = ["a"]
    values = {"v": [1]}
    frozen_list: list[int] = [1]
    cp = checkpoint(
        ctx={"log": log, "values": values, "t": (frozen_list,)},
        outputs={"o": AttributesFrozenDict({"l": frozen_list})},
    )
    async with InMemoryPersister() as persister:
        await persister.save_checkpoint(cp)
        assert type(stored(persister)) is _Snapshot
        log.append("b")
        values["v"].append(2)
        values["w"] = []
        frozen_list.append(2)
        loaded = await persister.load_checkpoint("p")
        assert loaded.ctx == {"log": ["a"], "values": {"v": [1]}, "t": ([1],)}
        assert loaded.outputs["o"]["l"] == [1]
        # and the loaded copy is independent of the store
        loaded.ctx["log"].append("c")
        loaded.ctx["values"]["v"].append(3)
        loaded.ctx["t"][0].append(3)
        loaded.outputs["o"]["l"].append(3)
        again = await persister.load_checkpoint("p")
        assert again.ctx == {"log": ["a"], "values": {"v": [1]}, "t": ([1],)}
        assert again.outputs["o"]["l"] == [1]
        assert type(again.outputs["o"]) is AttributesFrozenDict


async def test_unencodable_checkpoints_fail_at_save_time_with_the_codec_error() -> None:
    codec = CheckpointCodec()
    async with InMemoryPersister(codec=codec) as persister:
        bad = checkpoint(ctx={"x": [1, Point(1, 2)]})
        with pytest.raises(CheckpointEncodeError) as expected:
            codec.encode(bad)
        with pytest.raises(CheckpointEncodeError) as raised:
            await persister.save_checkpoint(bad)
        assert str(raised.value) == str(expected.value)
        assert "ctx['x'][1]" in str(raised.value)

        wrong_state = checkpoint(state="sleeping")
        with pytest.raises(CheckpointEncodeError, match=r"is not a process state$"):
            await persister.save_checkpoint(wrong_state)

        huge = checkpoint(ctx={"x": 10 ** sys.get_int_max_str_digits()})
        with pytest.raises(CheckpointEncodeError, match=r"ctx\['x'\]: .*digits") as too_big:
            codec.encode(huge)
        with pytest.raises(CheckpointEncodeError) as raised:
            await persister.save_checkpoint(huge)
        assert str(raised.value) == str(too_big.value)
        assert await persister.get_checkpoints() == []


async def test_non_native_checkpoints_are_stored_as_json() -> None:
    codec = user_codec()
    async with InMemoryPersister(codec=codec) as persister:
        cp = rich_checkpoint("p")
        await persister.save_checkpoint(cp)
        assert type(stored(persister)) is bytes
        assert_same_checkpoint(await persister.load_checkpoint("p"), round_trip(codec, cp))


async def test_a_snapshot_from_the_future_still_fails_to_load() -> None:
    async with InMemoryPersister() as persister:
        await persister.save_checkpoint(checkpoint(version=CHECKPOINT_VERSION + 1))
        with pytest.raises(CheckpointVersionError):
            await persister.load_checkpoint("p")


# --- SQLite -------------------------------------------------------------------------------------


def pragma(path: Path, persister: SqlitePersister, name: str) -> Any:
    assert persister._connection is not None
    return persister._connection.execute(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.parametrize(("durable", "synchronous"), [(False, 1), (True, 2)])
async def test_sqlite_modes(tmp_path: Path, durable: bool, synchronous: int) -> None:
    path = tmp_path / "db.sqlite"
    async with SqlitePersister(path, durable=durable) as persister:
        await persister.save_checkpoint(checkpoint())
        assert pragma(path, persister, "journal_mode") == "wal"
        assert pragma(path, persister, "synchronous") == synchronous  # NORMAL, FULL
        assert pragma(path, persister, "wal_autocheckpoint") == (1000 if durable else 0)
        assert repr(persister) == f"SqlitePersister({str(path)!r}, durable={durable})"


async def test_sqlite_is_not_durable_by_default(tmp_path: Path) -> None:
    async with SqlitePersister(tmp_path / "db.sqlite") as persister:
        assert "durable=False" in repr(persister)


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    real = anyio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return calls


async def test_sqlite_small_non_durable_calls_skip_the_worker_thread(
    tmp_path: Path, threads: list[object]
) -> None:
    async with SqlitePersister(tmp_path / "db.sqlite") as persister:
        small = checkpoint(ctx={"x": "y"})
        await persister.save_checkpoint(small)
        assert len(threads) == 1  # opening the connection
        for _ in range(3):
            await persister.save_checkpoint(small)
            assert_same_checkpoint(await persister.load_checkpoint("p"), small)
        assert len(threads) == 1

        big = checkpoint(ctx={"x": "y" * _persisters.INLINE_IO_BYTES})
        await persister.save_checkpoint(big, "big")
        assert len(threads) == 2
        assert_same_checkpoint(await persister.load_checkpoint("p", "big"), big)
        assert len(threads) == 2  # loads are inline whatever their size

    async with SqlitePersister(tmp_path / "db.sqlite", durable=True) as persister:
        await persister.save_checkpoint(small)
        assert_same_checkpoint(await persister.load_checkpoint("p"), small)
        assert len(threads) == 5  # durable calls always go to a worker thread (+ close)


async def test_sqlite_inline_save_is_a_checkpoint(tmp_path: Path) -> None:
    async with SqlitePersister(tmp_path / "db.sqlite") as persister:
        await persister.save_checkpoint(checkpoint(ctx={"n": 1}))
        with anyio.CancelScope() as scope:
            scope.cancel()
            await persister.save_checkpoint(checkpoint(ctx={"n": 2}))
        assert scope.cancelled_caught
        assert (await persister.load_checkpoint("p")).ctx == {"n": 1}  # nothing written


async def test_sqlite_log_checkpoints_run_in_a_worker_thread(
    tmp_path: Path, threads: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_persisters, "WAL_CHECKPOINT_WRITES", 5)
    async with SqlitePersister(tmp_path / "db.sqlite") as persister:
        for n in range(12):
            await persister.save_checkpoint(checkpoint(ctx={"n": n}))
            assert persister._writes < 5
        # the first (connecting), the 5th and the 10th write
        assert len(threads) == 3
        assert (await persister.load_checkpoint("p")).ctx == {"n": 11}


async def test_sqlite_waits_for_another_connection_in_a_worker_thread(
    tmp_path: Path, threads: list[object]
) -> None:
    path = tmp_path / "db.sqlite"
    async with SqlitePersister(path) as persister:
        await persister.save_checkpoint(checkpoint(ctx={"n": 1}))
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            other.execute("BEGIN IMMEDIATE")  # holds the write lock
            saved = anyio.Event()

            async def save() -> None:
                await persister.save_checkpoint(checkpoint(ctx={"n": 2}))
                saved.set()

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(save)
                    while len(threads) < 2:  # the save moved to a worker thread...
                        await yield_once()
                    # ...the loop is free, and so is the connection between tries: a load
                    # (WAL readers don't wait for the writer) goes on meanwhile
                    assert (await persister.load_checkpoint("p")).ctx == {"n": 1}
                    assert not saved.is_set()
                    other.execute("COMMIT")
            assert (await persister.load_checkpoint("p")).ctx == {"n": 2}
        finally:
            other.close()


async def test_sqlite_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with SqlitePersister(path, busy_timeout=0.02) as persister:
        await persister.save_checkpoint(checkpoint())
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await persister.save_checkpoint(checkpoint(ctx={"n": 2}))
            other.execute("ROLLBACK")
        finally:
            other.close()
        await persister.save_checkpoint(checkpoint(ctx={"n": 3}))
        assert (await persister.load_checkpoint("p")).ctx == {"n": 3}
