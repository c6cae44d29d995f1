"""The journal persister's own behaviour: torn and corrupt records, tombstones, compaction,
group commit, and sharing between threads and event loops. (The persister contract is
checked by the conformance suite in ``test_persisters.py``; crashes by SIGKILL in
``test_persister_crash.py``.)
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from corelib.persistence import _journal
from corelib.persistence._checkpoint import (
    Checkpoint,
    CheckpointNotFoundError,
    CorruptCheckpointError,
)
from corelib.persistence._journal import _FILE_HEADER, JournalPersister, JournalRecovery
from corelib.persistence._persisters import PersistedCheckpoint


def checkpoint(pid: str = "p1", **state_data: Any) -> Checkpoint:
    return Checkpoint(pid=pid, process_class="m:C", state="running", state_data=state_data)


async def contents(persister: JournalPersister) -> dict[tuple[str, str | None], Any]:
    """Every stored checkpoint's state data, by key."""
    return {
        (key.pid, key.tag): (await persister.load_checkpoint(key.pid, key.tag)).state_data
        for key in await persister.get_checkpoints()
    }


async def fill(persister: JournalPersister) -> None:
    """Saves, overwrites and deletes, so the journal holds dead records and tombstones."""
    for i in range(10):
        await persister.save_checkpoint(checkpoint(f"p{i % 4}", i=i), None if i % 3 else "t")
    await persister.delete_checkpoint("p1")
    await persister.delete_process_checkpoints("p2")


def test_repr_and_recovered_before_use(tmp_path: Path) -> None:
    persister = JournalPersister(tmp_path / "journal")
    assert repr(persister) == f"JournalPersister({str(tmp_path / 'journal')!r}, durable=False)"
    assert persister.recovered is None  # opened lazily, on first use
    assert not (tmp_path / "journal").exists()
    with pytest.raises(ValueError, match=r"^compact_ratio must be > 1, got 1$"):
        JournalPersister(tmp_path / "journal", compact_ratio=1)


async def test_reopening_replays_the_journal(tmp_path: Path) -> None:
    async with JournalPersister(tmp_path / "journal") as first:
        await fill(first)
        expected = await contents(first)
        assert first.recovered == JournalRecovery(0)
    async with JournalPersister(tmp_path / "journal") as second:
        assert await contents(second) == expected
        assert second.recovered == JournalRecovery(12)  # 10 saves, 2 tombstones


async def test_tombstones(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with JournalPersister(path) as persister:
        for tag in [None, "a", "b"]:
            await persister.save_checkpoint(checkpoint("p1"), tag)
            await persister.save_checkpoint(checkpoint("p2"), tag)
        await persister.delete_checkpoint("p1", "a")
        await persister.delete_process_checkpoints("p2")
        size = path.stat().st_size
        # Deleting what isn't there writes nothing.
        await persister.delete_checkpoint("p1", "a")
        await persister.delete_process_checkpoints("p2")
        await persister.delete_checkpoint("nobody")
        assert path.stat().st_size == size
    async with JournalPersister(path) as persister:
        assert await persister.get_checkpoints() == [
            PersistedCheckpoint("p1"),
            PersistedCheckpoint("p1", "b"),
        ]
        # A checkpoint saved after its tombstone is back.
        await persister.save_checkpoint(checkpoint("p2", back=True), "a")
    async with JournalPersister(path) as persister:
        assert (await persister.load_checkpoint("p2", "a")).state_data == {"back": True}
        with pytest.raises(CheckpointNotFoundError):
            await persister.load_checkpoint("p2")


async def test_torn_tail_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with JournalPersister(path) as persister:
        await fill(persister)
        before = await contents(persister)
        good = path.stat().st_size
        await persister.save_checkpoint(checkpoint("p0", last=True), "t")
    whole = path.read_bytes()
    assert len(whole) - good > 50
    torn = tmp_path / "torn"
    for cut in range(good, len(whole)):
        torn.write_bytes(whole[:cut])
        async with JournalPersister(torn) as persister:
            assert await contents(persister) == before, cut
            assert persister.recovered == JournalRecovery(12, discarded_bytes=cut - good)
        assert torn.stat().st_size == good  # truncated to the last good record
    # After a recovery the journal takes new records where the good ones end.
    async with JournalPersister(torn) as persister:
        assert persister.recovered is None
        await persister.save_checkpoint(checkpoint("p9"))
    async with JournalPersister(torn) as persister:
        assert await contents(persister) == {**before, ("p9", None): {}}
        assert persister.recovered == JournalRecovery(13)


async def test_a_torn_save_many_stores_none_of_its_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with JournalPersister(path) as persister:
        await persister.save_checkpoint(checkpoint("p0"))
        good = path.stat().st_size
        codec = persister.codec
        items = [(f"p{i}", "t", codec.encode(checkpoint(f"p{i}", i=i))) for i in range(5)]
        await persister.save_many(items)
        assert len(await persister.get_checkpoints()) == 6
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 1])
    async with JournalPersister(path) as persister:
        assert await persister.get_checkpoints() == [PersistedCheckpoint("p0")]
        assert persister.recovered == JournalRecovery(1, discarded_bytes=len(whole) - good - 1)


async def test_zero_filled_tail_is_a_torn_tail(tmp_path: Path) -> None:
    # What a power loss can leave: the file grew, its last blocks never reached the disk.
    path = tmp_path / "journal"
    async with JournalPersister(path) as persister:
        await fill(persister)
        before = await contents(persister)
    with path.open("ab") as file:
        file.write(bytes(5000))
    async with JournalPersister(path) as persister:
        assert await contents(persister) == before
        assert persister.recovered == JournalRecovery(12, discarded_bytes=5000)


async def test_corrupt_record_in_the_middle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal"
    async with JournalPersister(path) as persister:
        await persister.save_checkpoint(checkpoint("p1"))
        first = path.stat().st_size
        await persister.save_checkpoint(checkpoint("p2"))
        second = path.stat().st_size
        await persister.save_checkpoint(checkpoint("p3"))
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[(first + second) // 2] ^= 0xFF  # a byte inside the second record's body
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="corelib.persistence"):
        async with JournalPersister(path) as persister:
            # Replay stops at the damaged record: the records after it are dropped too.
            assert await persister.get_checkpoints() == [PersistedCheckpoint("p1")]
            recovered = persister.recovered
    assert recovered is not None
    assert recovered.records == 1
    assert recovered.corrupt
    assert recovered.discarded_bytes == len(original) - first
    # Nothing is lost for good: the damaged file was copied aside before the truncation.
    assert recovered.preserved_as is not None
    assert tmp_path.joinpath(recovered.preserved_as).read_bytes() == damaged
    assert path.stat().st_size == first
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert f"damaged record at byte {first}, followed by more data" in record.getMessage()


async def test_damage_is_told_from_a_torn_tail_by_what_follows(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with JournalPersister(path) as persister:
        await persister.save_checkpoint(checkpoint("p1"))
        first = path.stat().st_size
        await persister.save_checkpoint(checkpoint("p2"))
        second = path.stat().st_size
        await persister.save_checkpoint(checkpoint("p3"))
    original = path.read_bytes()
    # A wrong length in the second record's header reads as running past the end of the
    # file, like a torn record; the good third record after it shows it is damage.
    for position in [first, first + 5, second + 1]:
        damaged = bytearray(original)
        damaged[position] ^= 0x10
        path.write_bytes(damaged)
        async with JournalPersister(path) as persister:
            await persister.get_checkpoints()
            recovered = persister.recovered
        assert recovered is not None
        # Damage to the last record can't be told from a torn write.
        assert recovered.corrupt == (position < second), position
        assert recovered.discarded_bytes == len(original) - (first if position < second else second)


async def test_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(b"SQLite format 3\x00 and more")
    persister = JournalPersister(path)
    with pytest.raises(
        CorruptCheckpointError, match=r"^checkpoint is corrupt: .* is not a checkpoint journal$"
    ):
        await persister.get_checkpoints()
    await persister.aclose()
    assert path.read_bytes() == b"SQLite format 3\x00 and more"  # left as it was


@pytest.mark.parametrize("size", [0, 1, len(_FILE_HEADER) - 1])
async def test_torn_creation(tmp_path: Path, size: int) -> None:
    path = tmp_path / "journal"
    path.write_bytes(_FILE_HEADER[:size])
    async with JournalPersister(path) as persister:
        assert await persister.get_checkpoints() == []
        await persister.save_checkpoint(checkpoint())
    async with JournalPersister(path) as persister:
        assert await persister.get_checkpoints() == [PersistedCheckpoint("p1")]


async def test_compaction_keeps_exactly_the_live_records(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with JournalPersister(path) as persister:
        await fill(persister)
        expected = await contents(persister)
        await persister.compact()
        assert await contents(persister) == expected
        # The compacted file is the header and one record per live checkpoint.
        assert path.stat().st_size == persister._end == len(_FILE_HEADER) + persister._live
        await persister.save_checkpoint(checkpoint("p7"))
        expected[("p7", None)] = {}
    async with JournalPersister(path) as persister:
        assert await contents(persister) == expected
        assert persister.recovered == JournalRecovery(len(expected))
    assert sorted(os.listdir(tmp_path)) == ["journal", "journal.lock"]


async def test_compaction_runs_when_the_journal_outgrows_its_live_data(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    blob = "x" * 1000
    async with JournalPersister(path, compact_at=20_000, compact_ratio=4) as persister:
        for i in range(200):  # ~200 kB written, ~5 kB live
            await persister.save_checkpoint(checkpoint(f"p{i % 5}", i=i, blob=blob))
            assert path.stat().st_size <= max(20_000, 4 * (persister._live + 16)) + 1200
        expected = await contents(persister)
    async with JournalPersister(path) as persister:
        assert await contents(persister) == expected
        assert persister.recovered is not None
        assert persister.recovered.records < 40


async def test_compaction_survives_a_crash_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal"
    persister = JournalPersister(path)
    await fill(persister)
    expected = await contents(persister)
    journal = path.read_bytes()
    real_replace = os.replace

    def crash(source: str, target: str) -> None:
        # The new file is complete (and fsync'ed); keep a copy as a crash would leave it.
        real_replace(source, str(tmp_path / "kept"))
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match=r"^simulated crash before the rename$"):
        await persister.compact()
    monkeypatch.undo()
    assert path.read_bytes() == journal  # untouched
    assert await contents(persister) == expected  # and the persister goes on with it
    await persister.aclose()
    os.rename(tmp_path / "kept", tmp_path / "journal.compact")  # the crash's leftover
    async with JournalPersister(path) as reopened:
        assert await contents(reopened) == expected
        assert reopened.recovered == JournalRecovery(12)
    assert not (tmp_path / "journal.compact").exists()


async def test_one_owner_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with JournalPersister(path) as first:
        await first.save_checkpoint(checkpoint())
        second = JournalPersister(path)
        with pytest.raises(BlockingIOError, match=r"journal is in use by another persister"):
            await second.get_checkpoints()
        await second.aclose()
    async with JournalPersister(path) as third:
        assert await third.get_checkpoints() == [PersistedCheckpoint("p1")]


async def test_big_checkpoints_go_through_a_worker_thread(tmp_path: Path) -> None:
    big = "y" * 200_000
    async with JournalPersister(tmp_path / "journal") as persister:
        await persister.save_checkpoint(checkpoint(big=big))
        assert (await persister.load_checkpoint("p1")).state_data == {"big": big}
    async with JournalPersister(tmp_path / "journal") as persister:
        assert (await persister.load_checkpoint("p1")).state_data == {"big": big}


class _WatchedQueue(list[Any]):
    """The persister's write queue, telling waiters when a record is queued."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def append(self, item: Any) -> None:
        with self.changed:
            super().append(item)
            self.changed.notify_all()


async def test_group_commit_shares_one_write_and_one_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    persister = JournalPersister(tmp_path / "journal", durable=True)
    await persister.get_checkpoints()  # open it
    queue = _WatchedQueue()
    persister._queue = queue
    syncing = threading.Event()
    release = threading.Event()
    syncs: list[int] = []
    writes: list[int] = []
    real_sync, real_pwrite = _journal._sync, os.pwrite

    def sync(fd: int) -> None:
        syncs.append(fd)
        syncing.set()
        assert release.wait(5)
        real_sync(fd)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        writes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(_journal, "_sync", sync)
    monkeypatch.setattr(os, "pwrite", pwrite)
    others = 20

    def all_queued() -> None:
        with queue.changed:
            assert queue.changed.wait_for(lambda: len(queue) == others, timeout=5)
        release.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(persister.save_checkpoint, checkpoint("first"))
            # The lone first save is written at once (not delayed to gather a batch)...
            await anyio.to_thread.run_sync(syncing.wait)
            # ...and the saves arriving while it syncs are written together after it.
            for i in range(others):
                tg.start_soon(persister.save_checkpoint, checkpoint(f"p{i}"))
            await anyio.to_thread.run_sync(all_queued)
    monkeypatch.undo()
    assert len(syncs) == 2
    assert len(writes) == 2
    assert len(await persister.get_checkpoints()) == others + 1
    await persister.aclose()


@pytest.mark.parametrize("durable", [False, True], ids=["fast", "durable"])
async def test_threads_and_event_loops_share_one_persister(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "journal"
    persister = JournalPersister(path, durable=durable, compact_at=50_000)
    rounds = 30
    errors: list[BaseException] = []

    async def worker(name: str) -> None:
        with anyio.fail_after(20):

            async def one(i: int) -> None:
                for r in range(rounds):
                    await persister.save_checkpoint(checkpoint(f"{name}-{i}", r=r, pad="z" * 300))
                    await persister.save_checkpoint(checkpoint("shared", by=name), "t")
                    loaded = await persister.load_checkpoint(f"{name}-{i}")
                    assert loaded.state_data["r"] == r

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(one, i)
            await persister.delete_checkpoint(f"{name}-0")

    def run(backend: str) -> None:
        try:
            anyio.run(worker, backend, backend=backend)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in ("asyncio", "trio")]
    with anyio.fail_after(30):
        for thread in threads:
            thread.start()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
    assert errors == []
    expected = {
        (f"{name}-{i}", None): {"r": rounds - 1, "pad": "z" * 300}
        for name in ("asyncio", "trio")
        for i in range(1, 10)
    }
    assert (await persister.load_checkpoint("shared", "t")).state_data["by"] in {"asyncio", "trio"}
    got = await contents(persister)
    del got[("shared", "t")]
    assert got == expected
    await persister.aclose()
    async with JournalPersister(path) as reopened:
        got = await contents(reopened)
        del got[("shared", "t")]
        assert got == expected
