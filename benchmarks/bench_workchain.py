"""WorkChain and checkpoint benchmarks: ``python -m benchmarks.bench_workchain``.

Side by side in one run (the machine is shared and noisy, so read the ratios):

* steps: a WorkChain of 10 sync steps, run one after another and 300 at once (steps/s);
* children: a WorkChain launching children through ``ToContext`` (children/s);
* checkpoints: save + load of a mid-size WorkChain (inputs, outputs, a context of ~50 values,
  a cursor inside a ``while_``: its setup step pauses it there) with each persister, and bytes
  per checkpoint. The ``@start`` rows take the same WorkChain paused before its first step
  (empty context; what these rows measured before the set-up was fixed to match this text).
  The same checkpoint is saved again and again: each save replaces the previous one.

After the table, the floors under the checkpoint goal (:mod:`benchmarks._checkpoint_floors`):
the work one save + load cannot avoid, timed alone, summed per persister against the budget
that 10x plumpy's rate in the same run leaves.

plumpy runs the same cases when it is importable (asyncio only; its checkpoints are a
``Bundle`` kept in memory, or pickled to a folder by its ``PicklePersister``).

What the checkpoint rows compare, per iteration (both sides start from the live WorkChain,
paused, as plumpy's persisters do):

* ``checkpoint memory``: save + load of the record. Ours takes the
  :class:`~corelib.Checkpoint` (:func:`~corelib.checkpoint_of`), saves it (the
  :class:`~corelib.InMemoryPersister` stores a private deep copy, checked to be what the JSON
  codec would give back) and loads a fresh copy; every call is an anyio checkpoint (one yield
  to the loop). plumpy's ``InMemoryPersister`` builds a ``Bundle`` (its save of the process,
  deep-copied), keeps it and returns that same object.
* ``checkpoint memory +rebuild``: the same, then the process is rebuilt from what was loaded:
  :func:`~corelib.load_process` for ours (not launched), ``bundle.unbundle()`` for plumpy.
* ``checkpoint file`` (and ``+rebuild``): ours is ``FilePersister(durable=False)``: an atomic
  save (write a new temporary file, ``os.replace`` it over the checkpoint; no ``fsync``), done
  inline in the event loop's thread for checkpoints up to 64 KiB, and an inline read. plumpy's
  ``PicklePersister`` pickles the bundle straight into the checkpoint file (opened with
  truncation, not atomic: a crash mid-write leaves a torn file) and unpickles it. Both pay the
  file system's metadata costs (creating an inode and renaming for us, truncating for plumpy),
  which on some machines dominate.
* ``checkpoint sqlite`` (and ``+rebuild``): ``SqlitePersister()`` (WAL, ``synchronous=NORMAL``,
  small saves and loads inline), against plumpy's ``PicklePersister`` (it has no database).
* ``checkpoint file-durable`` adds both ``fsync`` calls (file and folder) and runs in a worker
  thread; plumpy has no counterpart.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from corelib import (
    FilePersister,
    InMemoryPersister,
    Process,
    Runner,
    SqlitePersister,
    ToContext,
    WorkChain,
    append_,
    checkpoint_of,
    load_process,
    while_,
)

from . import _checkpoint_floors

STEPS = 10


def _named_step(i: int) -> Callable[[Any], None]:
    def step(self: Any) -> None:
        self.ctx.n = self.ctx.get("n", 0) + 1

    step.__name__ = f"s{i}"
    return step


def _ten_steps(base: type, name: str) -> type:
    """A WorkChain class with STEPS distinct step methods s0..s9, in that order."""

    def define(cls: Any, spec: Any) -> None:
        super(chain, cls).define(spec)
        spec.outline(*[getattr(cls, f"s{i}") for i in range(STEPS)])

    namespace: dict[str, Any] = {f"s{i}": _named_step(i) for i in range(STEPS)}
    namespace["define"] = classmethod(define)
    chain: type = type(name, (base,), namespace)
    return chain


TenSteps = _ten_steps(WorkChain, "TenSteps")


class Child(Process):
    def run(self) -> None:
        return None


class Parent(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("children", valid_type=int)
        spec.outline(cls.spawn, cls.done)

    def spawn(self) -> ToContext:
        return ToContext(
            kids=[append_(self.submit(Child)) for _ in range(self.inputs.children)][-1]
        )

    def done(self) -> None:
        return None


class Fanout(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("children", valid_type=int)
        spec.outline(cls.spawn, cls.done)

    def spawn(self) -> None:
        for _ in range(self.inputs.children):
            self.to_context(kids=append_(self.submit(Child)))

    def done(self) -> None:
        assert len(self.ctx.kids) == self.inputs.children


class MidSize(WorkChain):
    """What a checkpoint of a typical mid-size WorkChain holds."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("label", valid_type=str)
        spec.input("params", valid_type=dict)
        spec.output("result", valid_type=dict)
        spec.outline(cls.setup, while_(cls.more)(cls.work), cls.finish)

    def setup(self) -> None:
        self.ctx.i = 0
        # "values" by key: ctx is a mapping, so ``ctx.values`` is its method, not this entry
        self.ctx["values"] = {f"v{i}": i * 1.5 for i in range(40)}
        self.ctx.log = [f"entry {i}" for i in range(10)]
        self.pause()  # takes effect at the end of this step: the cursor is then at the while_

    def more(self) -> bool:
        return self.ctx.i < 3

    def work(self) -> None:
        self.ctx.i += 1

    def finish(self) -> None:
        self.out("result", {"sum": sum(self.ctx["values"].values())})


MID_INPUTS = {"label": "benchmark", "params": {f"p{i}": i for i in range(10)}}


# -- plumio cases ------------------------------------------------------------------------------


async def steps_sequential(n: int) -> float:
    async with Runner() as runner:
        start = time.perf_counter()
        for _ in range(n):
            await runner.run(TenSteps)
        return n * STEPS / (time.perf_counter() - start)


async def steps_concurrent(n: int) -> float:
    start = time.perf_counter()
    async with Runner() as runner:
        for _ in range(n):
            runner.submit(TenSteps)
    return n * STEPS / (time.perf_counter() - start)


async def children_rate(parents: int, children: int) -> float:
    start = time.perf_counter()
    async with Runner() as runner:
        for _ in range(parents):
            runner.submit(Fanout, {"children": children})
    return parents * children / (time.perf_counter() - start)


async def checkpoint_rate(
    kind: str, n: int, folder: str, where: str = "mid", rebuild: bool = False
) -> tuple[float, float]:
    """Save + load per second, and bytes per checkpoint, for one persister kind.

    A MidSize WorkChain is paused after its setup, at its ``while_`` loop (``mid``), or before
    its first step, with an empty context (``start``); each iteration takes its checkpoint from
    the live process (:func:`~corelib.checkpoint_of`), saves it, loads it and, with
    ``rebuild``, rebuilds the process from it (:func:`~corelib.load_process`), as plumpy's
    ``save_checkpoint(process)``, ``load_checkpoint(pid)`` and ``bundle.unbundle()`` do.
    """
    if kind == "memory":
        persister: Any = InMemoryPersister()
    elif kind == "file":
        persister = FilePersister(os.path.join(folder, "files"), durable=False)
    elif kind == "file-durable":
        persister = FilePersister(os.path.join(folder, "durable"), durable=True)
    else:
        persister = SqlitePersister(os.path.join(folder, "db.sqlite"), durable=False)
    async with Runner() as runner, persister:
        chain = runner.submit(MidSize, MID_INPUTS)
        if where == "start":
            chain.pause()  # takes effect before the first step
        while not chain.paused:  # otherwise its setup step pauses it
            await anyio.lowlevel.checkpoint()  # benchmark set-up only
        checkpoint = checkpoint_of(chain)
        if where == "mid":
            assert checkpoint.ctx, "not inside the while_"
            assert checkpoint.cursor, "not inside the while_"
        else:
            assert checkpoint.state == "created"
        await persister.save_checkpoint(checkpoint)  # opens the database, creates the folder
        pid = chain.pid
        start = time.perf_counter()
        for _ in range(n):
            await persister.save_checkpoint(checkpoint_of(chain))
            loaded = await persister.load_checkpoint(pid)
            if rebuild:
                load_process(loaded)
        rate = n / (time.perf_counter() - start)
        while not chain.has_terminated():
            if chain.paused:
                chain.play()
            await anyio.lowlevel.checkpoint()
    return rate, float(len(persister.codec.encode(checkpoint)))


# -- plumpy cases ------------------------------------------------------------------------------


def plumpy_cases(args: argparse.Namespace, folder: str) -> dict[str, float] | None:
    try:
        plumpy: Any = importlib.import_module("plumpy")
    except ImportError:
        return None

    try:
        models: Any = importlib.import_module("benchmarks._plumpy_models")
    except ImportError:
        return None
    PTen, PFanout, PMid = models.PTen, models.PFanout, models.PMid

    async def p_seq(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await PTen().step_until_terminated()
        return n * STEPS / (time.perf_counter() - start)

    async def p_conc(n: int) -> float:
        start = time.perf_counter()
        chains = [PTen() for _ in range(n)]
        await asyncio.gather(*(c.step_until_terminated() for c in chains))
        return n * STEPS / (time.perf_counter() - start)

    async def p_children(parents: int, children: int) -> float:
        start = time.perf_counter()
        chains = [PFanout(inputs={"children": children}) for _ in range(parents)]
        await asyncio.gather(*(c.step_until_terminated() for c in chains))
        return parents * children / (time.perf_counter() - start)

    async def p_paused_mid() -> tuple[Any, Any]:
        chain = PMid(inputs=MID_INPUTS)
        # its setup step pauses it inside the while_ loop, as for plumio
        running = asyncio.ensure_future(chain.step_until_terminated())
        while not chain.paused:  # noqa: ASYNC110 - benchmark set-up: plumpy has no event
            await asyncio.sleep(0)
        assert chain.ctx.values
        return chain, running

    async def p_finish(chain: Any, running: Any) -> None:
        chain.play()
        await running

    def p_checkpoint(
        kind: str, n: int, where: str = "mid", rebuild: bool = False
    ) -> tuple[float, float]:
        if where == "mid":
            chain, running = loop.run_until_complete(p_paused_mid())
        else:  # paused before its first step (never started)
            chain, running = PMid(inputs=MID_INPUTS), None
            chain.pause()
            loop.run_until_complete(asyncio.sleep(0))
        if kind == "memory":
            persister = plumpy.InMemoryPersister()
        else:
            persister = plumpy.PicklePersister(os.path.join(folder, "plumpy"))
        start = time.perf_counter()
        for _ in range(n):
            persister.save_checkpoint(chain)
            bundle = persister.load_checkpoint(chain.pid)
            if rebuild:
                bundle.unbundle()
        rate = n / (time.perf_counter() - start)
        import pickle

        size = len(pickle.dumps(plumpy.Bundle(chain)))
        if running is not None:
            loop.run_until_complete(p_finish(chain, running))
        return rate, float(size)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        out = {
            "steps sequential": loop.run_until_complete(p_seq(args.sequential)),
            "steps concurrent": loop.run_until_complete(p_conc(args.concurrent)),
            "children": loop.run_until_complete(p_children(args.parents, args.children)),
        }
        for kind in ("memory", "pickle"):
            rate, size = p_checkpoint(kind, args.checkpoints)
            out[f"checkpoint {kind}"] = rate
            out[f"bytes {kind}"] = size
            rate, _ = p_checkpoint(kind, args.checkpoints, rebuild=True)
            out[f"checkpoint {kind} +rebuild"] = rate
        rate, size = p_checkpoint("memory", args.checkpoints, "start")
        out["checkpoint memory @start"] = rate
        out["bytes memory @start"] = size
        return out
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def plumio_cases(backend: str, args: argparse.Namespace, folder: str) -> dict[str, float]:
    def run(fn: Callable[..., Awaitable[Any]], *a: Any) -> Any:
        return anyio.run(fn, *a, backend=backend)

    out = {
        "steps sequential": run(steps_sequential, args.sequential),
        "steps concurrent": run(steps_concurrent, args.concurrent),
        "children": run(children_rate, args.parents, args.children),
    }
    for kind in ("memory", "file", "sqlite", "file-durable"):
        n = args.checkpoints if kind != "file-durable" else max(20, args.checkpoints // 20)
        rate, size = run(checkpoint_rate, kind, n, folder)
        out[f"checkpoint {kind}"] = rate
        out[f"bytes {kind}"] = size
        if kind != "file-durable":
            rate, _ = run(checkpoint_rate, kind, n, folder, "mid", True)
            out[f"checkpoint {kind} +rebuild"] = rate
    rate, size = run(checkpoint_rate, "memory", args.checkpoints, folder, "start")
    out["checkpoint memory @start"] = rate
    out["bytes memory @start"] = size
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    args.sequential = int(1000 * scale)
    args.concurrent = 300
    args.parents = int(100 * scale) or 5
    args.children = 20
    args.checkpoints = int(2000 * scale)
    reps = 1 if args.quick else args.reps

    with tempfile.TemporaryDirectory() as folder:
        ours: dict[str, list[dict[str, float]]] = {"asyncio": [], "trio": []}
        theirs: list[dict[str, float]] = []
        for _ in range(reps):  # interleaved, so load changes hit every column alike
            for backend in ours:
                ours[backend].append(plumio_cases(backend, args, folder))
            p = plumpy_cases(args, folder)
            if p is not None:
                theirs.append(p)
        a, t = _median(ours["asyncio"]), _median(ours["trio"])
        p = _median(theirs) if theirs else None

    print(f"{'case':<34} {'asyncio':>12} {'trio':>12} {'plumpy':>12} {'asyncio/plumpy':>15}")
    for key in a:
        if key.startswith("bytes"):
            continue
        pkey = key.replace(" file", " pickle").replace(" sqlite", " pickle")
        pv = p.get(pkey) if p else None
        ratio = f"{a[key] / pv:>14.1f}x" if pv else f"{'-':>15}"
        pcol = f"{pv:>12,.0f}" if pv else f"{'-':>12}"
        unit = "/s"
        print(f"{key + ' ' + unit:<34} {a[key]:>12,.0f} {t[key]:>12,.0f} {pcol} {ratio}")
    for key in a:
        if not key.startswith("bytes"):
            continue
        pkey = {"bytes file": "bytes pickle", "bytes sqlite": "bytes pickle"}.get(key, key)
        pv = p.get(pkey) if p else None
        ratio = f"{a[key] / pv:>14.2f}x" if pv else f"{'-':>15}"
        pcol = f"{pv:>12,.0f}" if pv else f"{'-':>12}"
        print(f"{key + ' per checkpoint':<34} {a[key]:>12,.0f} {t[key]:>12,.0f} {pcol} {ratio}")
    if p is None:
        print("plumpy is not importable: plumpy columns skipped")
        return
    floors = _checkpoint_floors.measure(args.checkpoints, MidSize, MID_INPUTS)
    print("\nfloors measured in this run (us per save + load; see benchmarks/_checkpoint_floors.py)")
    for key, value in floors.items():
        print(f"  {key:<26}{value:>8.1f}")
    print(f"\n{'10x plumpy, per pair':<22}{'budget us':>10}{'floor us':>10}  floor = ...")
    for kind, budget, floor, what in _checkpoint_floors.budgets(floors, p):
        print(f"{kind:<22}{budget:>10}{floor:>10}  {what}")


if __name__ == "__main__":
    main()
