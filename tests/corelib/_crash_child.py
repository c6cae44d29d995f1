"""Child process for ``test_persister_crash.py``: saves checkpoints in a tight loop until killed.

Run as ``python -m tests.corelib._crash_child KIND PATH DURABLE`` (or with ``share``, see
:func:`share`). Save number ``i`` writes
``make_checkpoint(i)`` under ``key_of(i)`` and then prints ``i`` on its own line, so every
printed number is a save that completed. Payloads grow with ``i`` and the keys rotate, so a kill
lands on creations and on overwrites of files/rows of many sizes.
"""

from __future__ import annotations

import sys

import anyio

from corelib.persistence._checkpoint import Checkpoint
from corelib.persistence._file import FilePersister
from corelib.persistence._journal import JournalPersister
from corelib.persistence._persisters import Persister
from corelib.persistence._sqlite import SqlitePersister

KEYS: list[tuple[str, str | None]] = [
    ("p0", None),
    ("p0", "a"),
    ("p1", None),
    ("p/1", "b"),
    ("p2", "c"),
]


def key_of(i: int) -> tuple[str, str | None]:
    return KEYS[i % len(KEYS)]


def make_checkpoint(i: int) -> Checkpoint:
    """Save number ``i``: deterministic, so the parent can check every byte came back."""
    pid, tag = key_of(i)
    return Checkpoint(
        pid=pid,
        process_class="tests.corelib._crash_child:Nothing",
        state="running",
        state_data={"i": i, "tag": tag},
        inputs={"blob": f"{i}," * (150 * i), "seq": (i, [i] * (i % 7))},
        outputs={"n": i},
        cursor=[i % 3, i % 5],
    )


def open_persister(kind: str, path: str, durable: bool) -> Persister:
    if kind == "file":
        return FilePersister(path, durable=durable)
    if kind == "journal":
        return JournalPersister(path, durable=durable)
    return SqlitePersister(path, durable=durable)


async def main(kind: str, path: str, durable: bool) -> None:
    async with open_persister(kind, path, durable) as persister:
        for i in range(1_000_000):
            await persister.save_checkpoint(make_checkpoint(i), key_of(i)[1])
            print(i, flush=True)


async def share(kind: str, path: str, name: str, count: int) -> None:
    """Save ``count`` checkpoints of pid ``name`` and of the pid ``"shared"`` (used by every
    child), then exit: for running several children on one storage at once."""
    async with open_persister(kind, path, durable=False) as persister:
        for i in range(count):
            for pid in (name, "shared"):
                checkpoint = Checkpoint(
                    pid=pid,
                    process_class="m:C",
                    state="running",
                    state_data={"writer": name, "i": i},
                )
                await persister.save_checkpoint(checkpoint, "t")


if __name__ == "__main__":
    if sys.argv[1] == "share":
        anyio.run(share, sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3] == "durable")
