"""Floors under the checkpoint goal, measured in the same run as ``bench_workchain``.

Each floor is work one save + load of the mid-size checkpoint cannot avoid, timed alone (µs
per save + load pair, best of several runs):

- ``anyio_checkpoints_us``: the two ``anyio.lowlevel.checkpoint()`` calls, one per persister
  call (every async call of a persister, like every call of the memory communicator, is a
  checkpoint: house style, after trio);
- ``checkpoint_of_us``: taking the record from the live process (it must be read somehow);
- ``c_copy_us``: the cheapest deep copy of the record's plain data in C, the faster of an
  orjson and a ``marshal`` round trip, with no type checks at all (a saved checkpoint must not
  share mutable objects with the live process, nor a loaded one with the store);
- ``sqlite_us``: raw ``sqlite3`` in WAL mode with ``synchronous=NORMAL`` (what
  ``SqlitePersister()`` uses): an upsert of the encoded bytes (changed each time, as a new
  checkpoint is) and the select that reads them back;
- ``atomic_file_us``: the bare ``os`` calls of an atomic save without ``fsync`` (create a
  temporary file, write, close, ``os.replace`` it over the checkpoint) and of the read.

``bench_workchain`` prints, for each persister, the per-pair budget that 10x plumpy's rate
leaves against the sum of the floors that persister needs.
"""

from __future__ import annotations

import json
import marshal
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

from corelib import Runner, checkpoint_of
from corelib.persistence._codec import CheckpointCodec

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency of plumio
    orjson = None  # type: ignore[assignment]


def _best(fn: Callable[[], object], n: int, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


async def _async_floors(n: int, mid_size: Any, mid_inputs: Any) -> dict[str, Any]:
    async with Runner() as runner:
        chain = runner.submit(mid_size, mid_inputs)
        while not chain.paused:  # its setup step pauses it
            await anyio.lowlevel.checkpoint()  # benchmark set-up only
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                await anyio.lowlevel.checkpoint()
                await anyio.lowlevel.checkpoint()
            best = min(best, (time.perf_counter() - start) / n * 1e6)
        out: dict[str, Any] = {
            "anyio_checkpoints_us": best,
            "checkpoint_of_us": _best(lambda: checkpoint_of(chain), n),
            "encoded": CheckpointCodec().encode(checkpoint_of(chain)),
        }
        chain.play()
        return out


def _c_copy_us(plain: Any, n: int) -> float:
    candidates = [_best(lambda: marshal.loads(marshal.dumps(plain)), n)]
    if orjson is not None:
        candidates.append(_best(lambda: orjson.loads(orjson.dumps(plain)), n))
    return min(candidates)


def _sqlite_us(encoded: bytes, folder: str, n: int) -> float:
    connection = sqlite3.connect(os.path.join(folder, "floor.sqlite"), isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS c (pid TEXT, tag TEXT, data BLOB, PRIMARY KEY (pid, tag))"
        )
        upsert = "INSERT OR REPLACE INTO c (pid, tag, data) VALUES (?, ?, ?)"
        select = "SELECT data FROM c WHERE pid = ? AND tag = ?"
        # a new checkpoint differs from the last one: alternate two versions of the bytes
        versions = [encoded, encoded.replace(b"benchmark", b"benchmarK")]
        counter = [0]

        def pair() -> None:
            counter[0] += 1
            connection.execute(upsert, ("pid", "", versions[counter[0] & 1]))
            connection.execute(select, ("pid", "")).fetchone()

        return _best(pair, n)
    finally:
        connection.close()


def _atomic_file_us(encoded: bytes, folder: str, n: int) -> float:
    target = os.path.join(folder, "floor.json")
    temporary = os.path.join(folder, "floor.json.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL

    def pair() -> None:
        fd = os.open(temporary, flags, 0o644)
        try:
            os.write(fd, encoded)
        finally:
            os.close(fd)
        os.replace(temporary, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.read(fd, len(encoded) + 1)
        finally:
            os.close(fd)

    return _best(pair, n)


def measure(n: int, mid_size: Any, mid_inputs: Any) -> dict[str, float]:
    """The floors (µs per save + load pair) for the mid-size WorkChain ``mid_size``."""
    found = anyio.run(_async_floors, n, mid_size, mid_inputs)
    encoded: bytes = found.pop("encoded")
    with tempfile.TemporaryDirectory() as folder:
        found["c_copy_us"] = _c_copy_us(json.loads(encoded), n)
        found["sqlite_us"] = _sqlite_us(encoded, folder, n)
        found["atomic_file_us"] = _atomic_file_us(encoded, folder, max(50, n // 5))
    return found


def budgets(floors: dict[str, float], plumpy_rates: dict[str, float]) -> list[tuple[str, ...]]:
    """Rows (persister, budget µs, floor µs, what the floor sums) for 10x plumpy."""
    common = floors["anyio_checkpoints_us"] + floors["checkpoint_of_us"] + floors["c_copy_us"]
    rows = []
    for kind, plumpy_key, extra, what in (
        ("memory", "checkpoint memory", 0.0, "checkpoints + checkpoint_of + C copy"),
        ("sqlite", "checkpoint pickle", floors["sqlite_us"], "the same + raw SQLite"),
        ("file", "checkpoint pickle", floors["atomic_file_us"], "the same + bare atomic file"),
    ):
        rate = plumpy_rates.get(plumpy_key)
        if not rate:
            continue
        budget = 1e6 / (10 * rate)
        floor = common + extra
        verdict = "within reach" if floor < budget else "out of reach (budget < floor)"
        rows.append((kind, f"{budget:.1f}", f"{floor:.1f}", f"{what}: {verdict}"))
    return rows
