"""Crash safety: a process saving checkpoints is SIGKILLed at random points, and a fresh
persister must find every checkpoint either at its previous or at its new version, never torn.

Each trial starts ``tests/corelib/_crash_child.py`` in a real OS subprocess, waits (through the
child's stdout, where it prints the number of every completed save) until a random number of
saves has completed, waits a random fraction of a few milliseconds more so that the kill lands
anywhere inside a save, and kills the child with SIGKILL. Whatever the child printed before it
died is a save that completed; the one after the last printed is the save that may or may not
have landed. The seed is printed (and shown by pytest on failure); set ``PLUMIO_CRASH_SEED`` to
replay a run's choices (the kill timing itself stays up to the OS).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from corelib.persistence._checkpoint import CheckpointNotFoundError
from corelib.persistence._file import FilePersister
from corelib.persistence._persisters import PersistedCheckpoint

from ._checkpoint_helpers import assert_same_checkpoint
from ._crash_child import KEYS, key_of, make_checkpoint, open_persister

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
]

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("PLUMIO_CRASH_SEED") or random.SystemRandom().randrange(2**32))
TRIALS = 12
MAX_SAVES = 80


def run_and_kill(kind: str, path: Path, durable: bool, rng: random.Random) -> list[int]:
    """Run the child until ``n`` saves completed, kill it, return the numbers it printed."""
    wanted = rng.randrange(1, MAX_SAVES)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.corelib._crash_child",
            kind,
            str(path),
            "durable" if durable else "fast",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    try:
        printed: list[int] = []
        while len(printed) < wanted:
            line = child.stdout.readline()
            if not line:
                child.wait(timeout=10)
                pytest.fail(f"child exited early ({child.returncode}):\n{child.stderr.read()}")
            printed.append(int(line))
        time.sleep(rng.uniform(0, 0.004))  # not synchronisation: where the kill lands
        child.send_signal(signal.SIGKILL)
        # Read through the same buffered file as readline() (communicate() would skip what
        # it has buffered already); EOF comes when the child is dead.
        rest = child.stdout.read()
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    # Pipe writes of a short line are atomic, so the rest holds only whole numbers.
    printed += [int(word) for word in rest.split()]
    assert printed == list(range(len(printed)))
    return printed


async def check_storage(kind: str, path: Path, durable: bool, printed: list[int]) -> None:
    in_flight = len(printed)  # the save that may or may not have landed
    async with open_persister(kind, str(path), durable) as persister:
        listed = set(await persister.get_checkpoints())
        assert listed <= {PersistedCheckpoint(pid, tag) for pid, tag in KEYS}
        for pid, tag in KEYS:
            done = [i for i in printed if key_of(i) == (pid, tag)]
            candidates = set(done[-1:])
            if key_of(in_flight) == (pid, tag):
                candidates.add(in_flight)
            try:
                loaded = await persister.load_checkpoint(pid, tag)
            except CheckpointNotFoundError:
                assert not done, f"completed save {done[-1]} of {(pid, tag)} is missing"
                assert PersistedCheckpoint(pid, tag) not in listed
                continue
            assert PersistedCheckpoint(pid, tag) in listed
            i = loaded.state_data["i"]
            assert i in candidates, f"{(pid, tag)} holds save {i}, expected one of {candidates}"
            assert_same_checkpoint(loaded, make_checkpoint(i))
        if isinstance(persister, FilePersister):
            # A temporary file may be left behind; it is never listed, and clean-up removes it.
            names = os.listdir(path)
            temps = [name for name in names if name.startswith(".") and name.endswith(".tmp")]
            assert len(temps) <= 1
            assert len(names) == len(listed) + len(temps)
            assert await persister.remove_stale_temp_files(min_age=0) == len(temps)
            assert sorted(os.listdir(path)) == sorted(
                persister.path_for(key.pid, key.tag).name for key in listed
            )


@pytest.mark.parametrize("trial", range(TRIALS))
@pytest.mark.parametrize("kind", ["file", "sqlite", "journal"])
def test_killed_saver_leaves_every_checkpoint_loadable(
    kind: str, trial: int, tmp_path: Path
) -> None:
    seed = SEED + trial + TRIALS * ["file", "sqlite", "journal"].index(kind)
    print(f"PLUMIO_CRASH_SEED={SEED} (trial seed {seed})")
    rng = random.Random(seed)
    durable = trial % 2 == 0
    path = tmp_path / {"file": "checkpoints", "sqlite": "checkpoints.sqlite"}.get(kind, "journal")
    printed = run_and_kill(kind, path, durable, rng)
    anyio.run(check_storage, kind, path, durable, printed)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_several_processes_share_one_storage(kind: str, tmp_path: Path) -> None:
    path = tmp_path / ("checkpoints" if kind == "file" else "checkpoints.sqlite")
    writers = ["w0", "w1", "w2"]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.corelib._crash_child",
                "share",
                kind,
                str(path),
                name,
                "40",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in writers
    ]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err

    async def check() -> None:
        async with open_persister(kind, str(path), durable=False) as persister:
            keys = await persister.get_checkpoints()
            assert keys == [PersistedCheckpoint("shared", "t")] + [
                PersistedCheckpoint(name, "t") for name in writers
            ]
            for name in writers:
                loaded = await persister.load_checkpoint(name, "t")
                assert loaded.state_data == {"writer": name, "i": 39}
            shared = await persister.load_checkpoint("shared", "t")
            assert shared.state_data["writer"] in writers
            assert shared.state_data["i"] == 39

    anyio.run(check)
