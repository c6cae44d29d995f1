"""A WorkChain killed with SIGKILL at random points continues from its last checkpoint.

A real OS process runs ``Pipeline`` with a durable file or SQLite persister and is killed
after a random number of checkpoints were written. This process then loads the last checkpoint and
finishes the WorkChain: the outputs must be those of an uninterrupted run, and every stored
checkpoint must load (none torn). ``PLUMIO_CRASH_SEED`` replays a run's choices.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from corelib import (
    CheckpointNotFoundError,
    ClassLoader,
    FilePersister,
    Persister,
    ProcessState,
    Runner,
    SqlitePersister,
)

from ._chains import Pipeline, expected_outputs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LOADER = ClassLoader(allowed_prefixes=("corelib", "tests.corelib"))
N = 4
TRIALS = 12  # per persister kind: 24 kills in all
SEED = int(os.environ.get("PLUMIO_CRASH_SEED", random.randrange(1 << 30)))


def _run_child_and_kill(kind: str, path: Path, kill_after: int) -> bool:
    """Start the child, SIGKILL it after ``kill_after`` checkpoints were written; True if it
    finished first."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.corelib._workchain_crash_child", kind, str(path), str(N)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    finished = False
    try:
        for seen, line in enumerate(child.stdout, start=1):
            if line.startswith("done"):
                finished = True
                break
            if seen >= kill_after:
                break
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    return finished


def _persister(kind: str, path: Path) -> Persister:
    return FilePersister(path) if kind == "file" else SqlitePersister(path)


async def _continue(kind: str, path: Path) -> tuple[dict[str, object], int]:
    async with _persister(kind, path) as persister:
        # no checkpoint is torn: every stored one loads
        stored = await persister.get_checkpoints()
        for key in stored:
            await persister.load_checkpoint(key.pid, key.tag)
        with anyio.fail_after(30):
            async with Runner(persister=persister, loader=LOADER) as runner:
                try:
                    chain = await runner.continue_process("crash-parent")
                except CheckpointNotFoundError:
                    # killed before the first checkpoint was written: start it again
                    chain = runner.submit(Pipeline, {"n": N}, pid="crash-parent")
                await chain.wait()
        assert chain.state is ProcessState.FINISHED, chain.state_data
        return chain.outputs.to_dict(), len(stored)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_sigkill_at_random_points_then_continue(kind: str, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{kind}")
    total_saves = 9  # about what a run writes; a kill after the end finds it finished
    outcomes = []
    for trial in range(TRIALS):
        path = tmp_path / f"{kind}-{trial}" if kind == "file" else tmp_path / f"{trial}.sqlite"
        kill_after = rng.randint(1, total_saves)
        finished = _run_child_and_kill(kind, path, kill_after)
        outputs, stored = anyio.run(_continue, kind, path)
        assert outputs == expected_outputs(N), (
            f"seed {SEED}, {kind} trial {trial}: killed after {kill_after} checkpoints"
        )
        outcomes.append((kill_after, finished, stored))
    # the kills really landed mid-run for most trials, with checkpoints already written
    assert sum(1 for _, finished, stored in outcomes if not finished and stored) >= TRIALS // 3, (
        f"seed {SEED}: {outcomes}"
    )
