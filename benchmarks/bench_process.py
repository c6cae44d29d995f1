"""Process benchmarks: ``python -m benchmarks.bench_process``.

Cases, on asyncio and trio:

* sequential: a trivial process, created to finished, one after another (processes/s);
* concurrent: 10,000 trivial processes submitted at once to one runner (processes/s);
* waiting: bytes of memory per process parked in WAITING, at N=10,000 (tracemalloc).

If ``plumpy`` is importable, the same cases run for plumpy (asyncio only) and ratios are
printed; otherwise that is said once.
"""

from __future__ import annotations

import gc
import importlib
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
    async with Runner() as runner:
        start = time.perf_counter()
        for _ in range(SEQUENTIAL):
            await runner.submit(Trivial).wait()
        elapsed = time.perf_counter() - start
    return SEQUENTIAL / elapsed


async def concurrent() -> float:
    start = time.perf_counter()
    async with Runner() as runner:
        for _ in range(CONCURRENT):
            runner.submit(Trivial)
    return CONCURRENT / (time.perf_counter() - start)


async def waiting_bytes() -> float:
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
        start = time.perf_counter()
        for _ in range(SEQUENTIAL):
            await PTrivial().step_until_terminated()
        return SEQUENTIAL / (time.perf_counter() - start)

    async def p_concurrent() -> float:
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


def main() -> None:
    results: dict[str, dict[str, float]] = {}
    for backend in ("asyncio", "trio"):
        results[backend] = {name: anyio.run(fn, backend=backend) for name, (fn, _) in CASES.items()}
    reference = plumpy_cases()
    print(
        f"{'case':<12} {'unit':<14} {'asyncio':>12} {'trio':>12} {'plumpy':>12} {'asyncio/plumpy':>15}"
    )
    for name, (_, unit) in CASES.items():
        a, t = results["asyncio"][name], results["trio"][name]
        if reference is None:
            print(f"{name:<12} {unit:<14} {a:>12,.0f} {t:>12,.0f} {'-':>12} {'-':>15}")
        else:
            p = reference[name]
            print(f"{name:<12} {unit:<14} {a:>12,.0f} {t:>12,.0f} {p:>12,.0f} {a / p:>15.2f}")
    if reference is None:
        print("plumpy is not importable: plumpy columns skipped")


if __name__ == "__main__":
    main()
