"""Crash soak: ``python -m benchmarks.soak_crash [--trials N] [--seed S]``.

The same scenario as ``tests/corelib/test_workchain_crash.py``, with many more trials: a real
OS process runs a WorkChain with a durable file or SQLite persister and is killed with SIGKILL
after a random number of checkpoints; this process continues the WorkChain from the last
checkpoint and checks that the outputs are those of an uninterrupted run and that no stored
checkpoint is torn. Prints a line per persister with trials, kills mid-run and failures.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import anyio

from tests.corelib._chains import expected_outputs
from tests.corelib.test_workchain_crash import N, _continue, _run_child_and_kill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="trials per persister kind")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = random.randrange(1 << 30) if args.seed is None else args.seed
    print(f"crash soak: {args.trials} trials per persister, seed {seed}")
    failures = 0
    for kind in ("file", "sqlite"):
        rng = random.Random(f"{seed}-{kind}")
        mid_run = 0
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            for trial in range(args.trials):
                path = Path(folder) / (f"{trial}.sqlite" if kind == "sqlite" else f"{trial}")
                finished = _run_child_and_kill(kind, path, rng.randint(1, 9))
                outputs, stored = anyio.run(_continue, kind, path)
                if outputs != expected_outputs(N):
                    failures += 1
                    print(f"  FAIL {kind} trial {trial}: {outputs}")
                mid_run += not finished and stored > 0
        elapsed = time.perf_counter() - start
        print(
            f"  {kind:<7} {args.trials} trials, {mid_run} killed mid-run with checkpoints "
            f"written, {failures} failures, {elapsed:.1f} s"
        )
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
