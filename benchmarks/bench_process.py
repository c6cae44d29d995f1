"""Process benchmarks: ``python -m benchmarks.bench_process``.

Cases, on asyncio and trio:

* sequential: a trivial process, created to finished, one after another, each awaited with
  ``await runner.run(Trivial)``, which drives it inline in the awaiting task (plumpy's
  sequential case awaits ``step_until_terminated()`` inline too, so this is the fair
  comparison) (processes/s);
* concurrent: 10,000 trivial processes submitted at once to one runner (processes/s);
* waiting: bytes of memory per process parked in WAITING on ``Wait(None, ...)``, at
  N=10,000 (tracemalloc; everything the processes and the runner allocate, including the
  listener list each process is given).

If ``plumpy`` is importable, the same cases run for plumpy (asyncio only) and ratios are
printed; otherwise that is said once.

Every case runs ``--repeat`` times (default 5), repetitions interleaved (asyncio, trio, plumpy,
then again), so that all columns share the machine's noise. Each timed case starts with
``gc.collect()`` (untimed; the collector stays enabled while timing), so that no case pays
for the cyclic garbage an earlier one left (plumpy's cases leave a lot). The table shows medians; the
ratios to plumpy are taken within each repetition and their median (and range) is shown,
followed by PASS/FAIL for the goals (asyncio): at least 5x plumpy's rate for the sequential
and concurrent cases, at most 40% of plumpy's bytes per waiting process.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import anyio

from corelib import Process, ProcessListener, Runner, Wait

SEQUENTIAL = 5_000
CONCURRENT = 10_000
WAITING = 10_000


class Trivial(Process):
    def run(self) -> None:
        return None


class Parked(Process):
    def run(self) -> Any:
        return Wait(None, self.after)

    def after(self) -> None:
        return None


class _CountWaiting(ProcessListener):
    def __init__(self, target: int, done: anyio.Event) -> None:
        self.count = 0
        self.target = target
        self.done = done

    def on_process_waiting(self, process: Process) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


async def sequential() -> float:
    gc.collect()
    async with Runner() as runner:
        start = time.perf_counter()
        for _ in range(SEQUENTIAL):
            await runner.run(Trivial)
        elapsed = time.perf_counter() - start
    return SEQUENTIAL / elapsed


async def concurrent() -> float:
    gc.collect()
    start = time.perf_counter()
    async with Runner() as runner:
        for _ in range(CONCURRENT):
            runner.submit(Trivial)
    return CONCURRENT / (time.perf_counter() - start)


async def waiting_bytes() -> float:
    # Warm up: the first wait_all_tasks_blocked() imports modules (trio.testing on trio); that
    # one-time cost is not per process.
    await anyio.wait_all_tasks_blocked()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        all_waiting = anyio.Event()
        counter = _CountWaiting(WAITING, all_waiting)
        async with Runner() as runner:
            procs = [runner.submit(Parked, listeners=[counter]) for _ in range(WAITING)]
            await all_waiting.wait()
            await anyio.wait_all_tasks_blocked()
            assert all(p.statistics().blocked for p in procs)
            gc.collect()
            after = tracemalloc.take_snapshot()
            for proc in procs:
                proc.kill()
        diff = sum(s.size_diff for s in after.compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    return diff / WAITING


def plumpy_cases() -> dict[str, float] | None:
    try:
        import asyncio

        plumpy: Any = importlib.import_module("plumpy")
    except ImportError:
        return None

    class PTrivial(plumpy.Process):  # type: ignore[misc]
        async def run(self) -> None:
            return None

    class PParked(plumpy.Process):  # type: ignore[misc]
        async def run(self) -> Any:
            return plumpy.Wait(self.after)

        def after(self) -> None:
            return None

    async def p_sequential() -> float:
        gc.collect()
        start = time.perf_counter()
        for _ in range(SEQUENTIAL):
            await PTrivial().step_until_terminated()
        return SEQUENTIAL / (time.perf_counter() - start)

    async def p_concurrent() -> float:
        gc.collect()
        start = time.perf_counter()
        procs = [PTrivial() for _ in range(CONCURRENT)]
        await asyncio.gather(*(p.step_until_terminated() for p in procs))
        return CONCURRENT / (time.perf_counter() - start)

    async def p_waiting() -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        procs = [PParked() for _ in range(WAITING)]
        tasks = [asyncio.ensure_future(p.step_until_terminated()) for p in procs]
        for _ in range(10):
            await asyncio.sleep(0)  # benchmark only: let every task reach WAITING
        assert all(p.state is plumpy.ProcessState.WAITING for p in procs)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        for p in procs:
            p.kill()
        for t in tasks:
            t.cancel()
        return sum(s.size_diff for s in after.compare_to(before, "filename")) / WAITING

    loop = asyncio.new_event_loop()
    try:
        return {
            "sequential": loop.run_until_complete(p_sequential()),
            "concurrent": loop.run_until_complete(p_concurrent()),
            "waiting": loop.run_until_complete(p_waiting()),
        }
    finally:
        loop.close()


CASES: dict[str, tuple[Callable[[], Any], str]] = {
    "sequential": (sequential, "processes/s"),
    "concurrent": (concurrent, "processes/s"),
    "waiting": (waiting_bytes, "bytes/process"),
}


GOALS: dict[str, tuple[str, float]] = {
    "sequential": (">=", 5.0),
    "concurrent": (">=", 5.0),
    "waiting": ("<=", 0.40),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (default 5)")
    args = parser.parse_args()
    runs: list[dict[str, dict[str, float] | None]] = []
    for _ in range(args.repeat):
        run: dict[str, dict[str, float] | None] = {}
        for backend in ("asyncio", "trio"):
            run[backend] = {name: anyio.run(fn, backend=backend) for name, (fn, _) in CASES.items()}
        run["plumpy"] = plumpy_cases()
        runs.append(run)

    def median(column: str, name: str) -> float:
        return statistics.median(r[column][name] for r in runs)  # type: ignore[index]

    have_plumpy = runs[0]["plumpy"] is not None
    print(f"median of {args.repeat} interleaved repetitions")
    print(
        f"{'case':<12} {'unit':<14} {'asyncio':>12} {'trio':>12} {'plumpy':>12}"
        f" {'asyncio/plumpy':>15} {'(range)':>15} {'trio/plumpy':>12}"
    )
    ratios: dict[str, list[float]] = {}
    for name, (_, unit) in CASES.items():
        a, t = median("asyncio", name), median("trio", name)
        if not have_plumpy:
            print(f"{name:<12} {unit:<14} {a:>12,.0f} {t:>12,.0f} {'-':>12} {'-':>15}")
            continue
        p = median("plumpy", name)
        ratios[name] = sorted(r["asyncio"][name] / r["plumpy"][name] for r in runs)  # type: ignore[index]
        trio_ratio = statistics.median(r["trio"][name] / r["plumpy"][name] for r in runs)  # type: ignore[index]
        spread = f"{ratios[name][0]:.2f}-{ratios[name][-1]:.2f}"
        print(
            f"{name:<12} {unit:<14} {a:>12,.0f} {t:>12,.0f} {p:>12,.0f}"
            f" {statistics.median(ratios[name]):>15.2f} {spread:>15} {trio_ratio:>12.2f}"
        )
    if not have_plumpy:
        print("plumpy is not importable: plumpy columns skipped")
        return
    print("goals (asyncio, median ratio to plumpy in the same repetition)")
    for name, (op, bound) in GOALS.items():
        value = statistics.median(ratios[name])
        ok = value >= bound if op == ">=" else value <= bound
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {value:.2f} {op} {bound:.2f}")


if __name__ == "__main__":
    main()
