"""Checkpoint throughput at scale: ``python -m benchmarks.bench_checkpoints``.

1,000 WorkChains of 10 sync steps run at once in one runner that checkpoints every
transition (``CheckpointPolicy.EVERY_TRANSITION``), with each persister; plumpy runs the same
WorkChains, saving a checkpoint with its persister on every transition (its ``on_entered``
hook, as AiiDA's runner does). Side by side in one run (the machine is shared and noisy: read
the ratios). The figure is transitions checkpointed per second of wall time, the whole
workload included.

What "checkpointed" means on each side (the durability of each figure):

* plumio: every transition's checkpoint is *taken* (encoded, so later changes can't leak
  into it) at the transition; the runner's checkpointer writes the newest one of each process
  in a group commit (:meth:`~corelib.Persister.save_many`), so a burst of a thousand is a few
  transactions, and one superseded before it was written is not written at all. A process
  killed then resumes from the last one written (at-least-once steps), and its end is
  announced only once written. ``memory``: a private deep copy; ``sqlite``: WAL,
  ``synchronous=NORMAL`` (survives a crash of the process, not a power loss); ``journal``:
  appended, no fsync; ``postgres`` (when ``PLUMIO_POSTGRES_DSN`` answers): committed
  (``durable=True``: survives a power loss of the server).
* plumpy: every checkpoint is saved synchronously, in the step: ``InMemoryPersister`` keeps a
  deep-copied ``Bundle``; ``PicklePersister`` pickles it to a file (truncate and write, not
  atomic, no fsync).

Ends with one line per goal: ``goal <name>: PASS|FAIL <measured> (<target>)``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import tempfile
import time
from typing import Any

import anyio

from corelib import CheckpointPolicy, InMemoryPersister, Persister, Runner, SqlitePersister

from .bench_workchain import STEPS, TenSteps

GOAL = 10.0  # x plumpy
POSTGRES_GOAL = 5000  # transitions checkpointed per second (PLUMIO_POSTGRES_DSN; skipped without)


def _persister(kind: str, folder: str) -> Persister | None:
    if kind == "memory":
        return InMemoryPersister()
    if kind == "sqlite":
        return SqlitePersister(os.path.join(folder, f"bench-{time.monotonic_ns()}.sqlite"))
    if kind == "postgres":
        from corelib.persistence._postgres import PostgresPersister, postgres_problem

        dsn = os.environ.get("PLUMIO_POSTGRES_DSN", "")
        if not dsn or postgres_problem(dsn) is not None:
            return None
        return PostgresPersister(dsn, table=f"bench_{time.monotonic_ns()}")
    if kind == "journal":
        try:
            journal: Any = importlib.import_module("corelib").JournalPersister
        except AttributeError:
            return None
        return journal(os.path.join(folder, f"bench-{time.monotonic_ns()}.journal"))  # type: ignore[no-any-return]
    raise ValueError(kind)


async def ours(kind: str, n: int, folder: str) -> tuple[float, int, int] | None:
    """Transitions checkpointed per second; transitions; checkpoints written."""
    persister = _persister(kind, folder)
    if persister is None:
        return None
    async with persister:
        start = time.perf_counter()
        async with Runner(
            persister=persister, checkpoint_policy=CheckpointPolicy.EVERY_TRANSITION
        ) as runner:
            chains = [runner.submit(TenSteps) for _ in range(n)]
            for chain in chains:
                await chain.wait()
            await runner.flush_checkpoints()
            checkpointer = runner.checkpointer
            assert checkpointer is not None
            assert not checkpointer.errors
            written = checkpointer.saved
        elapsed = time.perf_counter() - start
    transitions = sum(len(c.history) for c in chains)
    return transitions / elapsed, transitions, written


def _saving_class(base: type) -> Any:
    """plumpy's 10-step WorkChain saving a checkpoint on every transition; a module global,
    so that plumpy's loader can name its class in the checkpoints."""
    cls = globals().get("PSaving")
    if cls is None:

        def on_entered(self: Any, from_state: Any) -> None:
            base.on_entered(self, from_state)  # type: ignore[attr-defined]
            type(self).persister.save_checkpoint(self)
            type(self).count += 1

        namespace = {
            "on_entered": on_entered,
            "persister": None,
            "count": 0,
            "__module__": __name__,
        }
        cls = type("PSaving", (base,), namespace)
        globals()["PSaving"] = cls
    return cls


def theirs(kind: str, n: int, folder: str) -> float | None:
    try:
        plumpy: Any = importlib.import_module("plumpy")
        models: Any = importlib.import_module("benchmarks._plumpy_models")
    except ImportError:
        return None
    if kind == "memory":
        persister = plumpy.InMemoryPersister()
    else:
        persister = plumpy.PicklePersister(os.path.join(folder, f"plumpy-{time.monotonic_ns()}"))
    saving = _saving_class(models.PTen)
    saving.persister = persister
    saving.count = 0

    async def run() -> float:
        start = time.perf_counter()
        chains = [saving() for _ in range(n)]
        await asyncio.gather(*(c.step_until_terminated() for c in chains))
        return float(saving.count) / (time.perf_counter() - start)

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workchains", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    kinds = {"memory": "memory", "sqlite": "pickle", "journal": "pickle", "postgres": "pickle"}
    rows: dict[str, dict[str, list[float]]] = {
        k: {"asyncio": [], "trio": [], "plumpy": []} for k in kinds
    }
    info: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.reps):  # interleaved, so load changes hit every column alike
            for kind, their_kind in kinds.items():
                for backend in ("asyncio", "trio"):
                    got = anyio.run(ours, kind, args.workchains, folder, backend=backend)
                    if got is not None:
                        rows[kind][backend].append(got[0])
                        info[kind] = (got[1], got[2])
                p = theirs(their_kind, args.workchains, folder)
                if p is not None:
                    rows[kind]["plumpy"].append(p)
    print(
        f"{args.workchains} WorkChains x {STEPS} steps at once, a checkpoint every transition"
        " (transitions checkpointed / s)"
    )
    print(f"{'persister':<10} {'asyncio':>10} {'trio':>10} {'plumpy':>10} {'ratio':>8}  written")
    goals = []
    for kind, cols in rows.items():
        if not cols["asyncio"]:
            print(f"{kind:<10} not available")
            continue
        a, t = statistics.median(cols["asyncio"]), statistics.median(cols["trio"])
        p = statistics.median(cols["plumpy"]) if cols["plumpy"] else None
        ratio = min(a, t) / p if p else None
        transitions, written = info[kind]
        pcol = f"{p:>10,.0f}" if p else f"{'-':>10}"
        rcol = f"{ratio:>7.1f}x" if ratio else f"{'-':>8}"
        print(f"{kind:<10} {a:>10,.0f} {t:>10,.0f} {pcol} {rcol}  {written} of {transitions}")
        if ratio is not None:
            goals.append((kind, ratio))
    for kind, ratio in goals:
        if kind == "postgres":
            rate = min(
                statistics.median(rows[kind]["asyncio"]), statistics.median(rows[kind]["trio"])
            )
            verdict = "PASS" if rate >= POSTGRES_GOAL else "FAIL"
            print(
                f"goal checkpoint-throughput-postgres: {verdict} {rate:,.0f}/s ({POSTGRES_GOAL:,}/s)"
            )
            continue
        verdict = "PASS" if ratio >= GOAL else "FAIL"
        print(f"goal checkpoint-throughput-{kind}: {verdict} {ratio:.1f}x ({GOAL:.0f}x plumpy)")


if __name__ == "__main__":
    main()
