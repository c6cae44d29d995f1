"""Process control across threads, side by side with plumpy (``python -m benchmarks.bench_control``).

Cases (ours: one :class:`~corelib.Worker` thread per backend, the client a plain thread with a
:class:`~corelib.BlockingProcessController`; plumpy: a process loop on its own thread with
``plumpy.RemoteProcessThreadController`` and ``plumpy.ProcessLauncher`` on a kiwipy
``LocalCommunicator``, the task subscriber wrapped in plumpy's ``LoopCommunicator``):

- **status RPC**: sequential ``status`` RPCs to one waiting process: p50/p99 latency, calls/s;
- **pause+play**: sequential pause then play RPCs of one waiting process: pairs/s;
- **pause_all x1000**: one ``pause_all`` broadcast to 1,000 waiting processes, timed until all
  are paused (ours: until the reply to a status RPC sent right after the broadcast, which the
  worker handles after it, per-sender FIFO; plumpy: polled every 0.2 ms);
- **launch 1-by-1 / launch x1000**: launch tasks of a trivial process through the task queue,
  one at a time and 1,000 outstanding, each reply being the process's outcome. plumpy's
  processes get the communicator too, so both sides' processes are controllable;
- **scaling**: the 1,000-outstanding launch rate with 250 and with 10,000 waiting processes on
  the same worker and broker, with the garbage collector as is and after ``gc.freeze()`` of the
  waiting processes (the collector's full passes cost in proportion to the live heap; see the
  printed notes).

Our broker runs unencoded (like kiwipy's LocalCommunicator) unless ``--strict``; the ratios use
the same mode. ``--quick`` makes a smoke run; ``--json PATH`` keeps the figures.

After the cases it measures floors (:mod:`benchmarks._floors`): work a launch or a status
RPC cannot avoid, each timed alone, and prints each local goal's per-call budget (from
plumpy's rate in the same run) against the sum of the floors it needs.

When RabbitMQ answers (``$PLUMIO_AMQP_URL``, default 127.0.0.1), the same cases then run on it,
ours against plumpy on kiwipy's ``RmqThreadCommunicator`` (see :mod:`benchmarks._control_amqp`);
``--no-amqp`` skips them.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import gc
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio

from broker import BlockingCommunicator, LoopCommunicator, MemoryBroker
from corelib.cluster._worker import Worker
from corelib.control._controller import BlockingProcessController, ProcessController

from . import _control_amqp, _floors
from ._control_models import Double, Waiter

try:
    import kiwipy
    import plumpy
    from plumpy.communications import LoopCommunicator as PlumpyLoopCommunicator
    from plumpy.futures import unwrap_kiwi_future

    from ._plumpy_control_models import PDouble, PWaiter
except ImportError:  # pragma: no cover - plumpy is in the "bench" extra
    plumpy = None

TIMEOUT = 120.0


def _percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[98]


# -- ours ---------------------------------------------------------------------------------------


class Ours:
    def __init__(self, backend: str, strict: bool) -> None:
        self.broker = MemoryBroker(strict=strict)
        self.worker = Worker(self.broker, backend=backend)  # type: ignore[arg-type]
        self.worker.start()
        self.comm = BlockingCommunicator(self.broker, timeout=TIMEOUT)
        self.ctl = BlockingProcessController(self.comm, timeout=TIMEOUT)

    def close(self) -> None:
        self.worker.stop()
        self.comm.close()

    def waiters(self, n: int) -> list[str]:
        futures = [self.ctl.launch_future(Waiter, nowait=True) for _ in range(n)]
        return [f.result(TIMEOUT) for f in futures]

    def status(self, n: int) -> dict[str, float]:
        (pid,) = self.waiters(1)
        for _ in range(200):
            self.ctl.status(pid)
        samples = []
        t0 = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            self.ctl.status(pid)
            samples.append(time.perf_counter() - s)
        elapsed = time.perf_counter() - t0
        p50, p99 = _percentiles(samples)
        t0 = time.perf_counter()
        futures = [self.ctl.status_future(pid) for _ in range(n)]
        done, _ = cf.wait(futures, TIMEOUT)
        flight = n / (time.perf_counter() - t0)
        assert len(done) == n
        assert all(f.result()["pid"] == pid for f in futures)
        self.ctl.kill(pid)
        return {"p50_us": p50 * 1e6, "p99_us": p99 * 1e6, "per_s": n / elapsed, "flight": flight}

    def status_async(self, n: int) -> dict[str, float]:
        """Status RPCs from an asyncio loop on this thread (the worker's is another thread)."""
        (pid,) = self.waiters(1)

        async def client() -> dict[str, float]:
            async with LoopCommunicator(self.broker) as comm:
                ctl = ProcessController(comm)
                for _ in range(200):
                    await ctl.status(pid)
                samples = []
                t0 = time.perf_counter()
                for _ in range(n):
                    s = time.perf_counter()
                    await ctl.status(pid)
                    samples.append(time.perf_counter() - s)
                elapsed = time.perf_counter() - t0
            p50, p99 = _percentiles(samples)
            return {"p50_us": p50 * 1e6, "p99_us": p99 * 1e6, "per_s": n / elapsed}

        result = anyio.run(client)
        self.ctl.kill(pid)
        return result

    def pause_play(self, n: int) -> dict[str, float]:
        (pid,) = self.waiters(1)
        t0 = time.perf_counter()
        for _ in range(n):
            assert self.ctl.pause(pid).done
            assert self.ctl.play(pid).done
        elapsed = time.perf_counter() - t0
        self.ctl.kill(pid)
        return {"per_s": n / elapsed}

    def pause_all(self, n: int) -> dict[str, float]:
        pids = self.waiters(n)
        gc.collect()
        t0 = time.perf_counter()
        self.ctl.pause_all()
        self.ctl.status(pids[-1])  # handled after the broadcast (per-sender FIFO)
        elapsed = time.perf_counter() - t0
        assert all(self.ctl.status(pid)["paused"] for pid in pids[:: max(1, n // 50)])
        self.ctl.kill_all()
        self.ctl.status_future(pids[-1])  # let the kills through before the next case
        return {"ms": elapsed * 1e3}

    def launch(self, n_seq: int, n_flight: int) -> dict[str, float]:
        for i in range(100):
            self.ctl.launch(Double, {"x": i})
        gc.collect()
        t0 = time.perf_counter()
        for i in range(n_seq):
            self.ctl.launch(Double, {"x": i})
        seq = n_seq / (time.perf_counter() - t0)
        return {"seq_per_s": seq, "flight_per_s": self.flight(n_flight)}

    def flight(self, n: int) -> float:
        gc.collect()
        t0 = time.perf_counter()
        futures = [self.ctl.launch_future(Double, {"x": i}) for i in range(n)]
        done, _ = cf.wait(futures, TIMEOUT)
        assert len(done) == n
        assert all(f.result()["state"] == "finished" for f in futures)
        return n / (time.perf_counter() - t0)


def ours_scaling(backend: str, strict: bool, waiting: int, n: int, freeze: bool) -> float:
    ours = Ours(backend, strict)
    try:
        ours.waiters(waiting)
        ours.flight(min(n, 500))  # warm-up
        if freeze:
            gc.collect()
            gc.freeze()
        return ours.flight(n)
    finally:
        if freeze:
            gc.unfreeze()
        ours.close()


def _noop() -> None:
    pass


# -- plumpy -------------------------------------------------------------------------------------


class Plumpy:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.comm = kiwipy.LocalCommunicator()
        self.loop_comm = PlumpyLoopCommunicator(self.comm, self.loop)
        self.loop_comm.add_task_subscriber(plumpy.ProcessLauncher(self.loop))
        self.ctl = plumpy.RemoteProcessThreadController(self.comm)
        self._tasks: list[Any] = []

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _wait(self, future: Any) -> Any:
        return self._settle(unwrap_kiwi_future(future))

    def _settle(self, future: Any) -> Any:
        """Wait for a plumpy future, kicking its loop while it is pending.

        plumpy resolves some futures with a non-thread-safe ``call_soon`` from the sending
        thread, which doesn't wake the process loop (see ``bench_broker.plumpy_stall_probe``);
        a no-op posted with ``call_soon_threadsafe`` wakes it.
        """
        deadline = time.perf_counter() + TIMEOUT
        while True:
            try:
                return future.result(0.001)
            except cf.TimeoutError:
                if time.perf_counter() > deadline:
                    raise
                self.loop.call_soon_threadsafe(_noop)

    def waiters(self, n: int) -> list[Any]:
        async def make() -> list[Any]:
            procs = [PWaiter(communicator=self.comm, loop=self.loop) for _ in range(n)]
            for proc in procs:
                # keep the tasks: asyncio holds pending tasks only weakly
                self._tasks.append(self.loop.create_task(proc.step_until_terminated()))
            while not all(p.state == plumpy.ProcessState.WAITING for p in procs):  # noqa: ASYNC110
                await asyncio.sleep(0.001)  # plumpy has no readiness signal to wait on
            return procs

        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(TIMEOUT)

    def status(self, n: int) -> dict[str, float]:
        (proc,) = self.waiters(1)
        for _ in range(200):
            self._wait(self.ctl.get_status(str(proc.pid)))
        samples = []
        t0 = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            self._wait(self.ctl.get_status(str(proc.pid)))
            samples.append(time.perf_counter() - s)
        elapsed = time.perf_counter() - t0
        p50, p99 = _percentiles(samples)
        t0 = time.perf_counter()
        futures = [self.ctl.get_status(str(proc.pid)) for _ in range(n)]
        for future in futures:
            self._wait(future)
        flight = n / (time.perf_counter() - t0)
        self._wait(self.ctl.kill_process(str(proc.pid)))
        return {"p50_us": p50 * 1e6, "p99_us": p99 * 1e6, "per_s": n / elapsed, "flight": flight}

    def pause_play(self, n: int) -> dict[str, float]:
        (proc,) = self.waiters(1)
        t0 = time.perf_counter()
        for _ in range(n):
            self._wait(self.ctl.pause_process(str(proc.pid)))
            self._wait(self.ctl.play_process(str(proc.pid)))
        elapsed = time.perf_counter() - t0
        self._wait(self.ctl.kill_process(str(proc.pid)))
        return {"per_s": n / elapsed}

    def pause_all(self, n: int) -> dict[str, float]:
        procs = self.waiters(n)
        gc.collect()
        t0 = time.perf_counter()
        self.ctl.pause_all(None)
        while not all(p.paused for p in procs):
            time.sleep(0.0002)
        elapsed = time.perf_counter() - t0
        # not kill_all: kiwipy's LocalCommunicator fails with "dictionary changed size during
        # iteration" as the killed processes unsubscribe
        for future in [self.ctl.kill_process(str(p.pid)) for p in procs]:
            self._wait(future)
        return {"ms": elapsed * 1e3}

    def _launch(self, i: int) -> Any:
        kwargs = {"inputs": {"x": i}, "communicator": self.comm}
        return unwrap_kiwi_future(self.ctl.launch_process(PDouble, init_kwargs=kwargs))

    def launch(self, n_seq: int, n_flight: int) -> dict[str, float]:
        for i in range(100):
            self._settle(self._launch(i))
        gc.collect()
        t0 = time.perf_counter()
        for i in range(n_seq):
            self._settle(self._launch(i))
        seq = n_seq / (time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        futures = [self._launch(i) for i in range(n_flight)]
        for f in futures:
            self._settle(f)
        flight = n_flight / (time.perf_counter() - t0)
        return {"seq_per_s": seq, "flight_per_s": flight}


# -- running ------------------------------------------------------------------------------------


def _run_side(make: Callable[[], Any], sizes: dict[str, int]) -> dict[str, dict[str, float]]:
    side = make()
    try:
        return {
            "status": side.status(sizes["status"]),
            "pause_play": side.pause_play(sizes["pairs"]),
            "pause_all": side.pause_all(sizes["pause_all"]),
            "launch": side.launch(sizes["launch_seq"], sizes["launch_flight"]),
        }
    finally:
        side.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--strict", action="store_true", help="our broker encodes as JSON")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--no-amqp", action="store_true", help="skip the RabbitMQ cases")
    args = parser.parse_args(argv)
    sizes = {
        "status": 2000,
        "pairs": 1000,
        "pause_all": 1000,
        "launch_seq": 2000,
        "launch_flight": 1000,
    }
    waiting_big, flight_scaling = 10_000, 2000
    if args.quick:
        sizes = {k: max(100, v // 10) for k, v in sizes.items()}
        sizes["pause_all"] = 1000
        waiting_big, flight_scaling = 2000, 500
    results: dict[str, Any] = {"sizes": sizes, "strict": args.strict}
    for backend in ("asyncio", "trio"):
        results[backend] = _run_side(lambda b=backend: Ours(b, args.strict), sizes)
        ours = Ours(backend, args.strict)
        try:
            results[backend]["status_async"] = ours.status_async(sizes["status"])
        finally:
            ours.close()
    if plumpy is not None:
        results["plumpy"] = _run_side(Plumpy, sizes)
    scaling: dict[str, float] = {}
    for freeze in (False, True):
        for waiting in (250, waiting_big):
            key = f"{waiting} waiting{' (gc frozen)' if freeze else ''}"
            scaling[key] = ours_scaling("asyncio", args.strict, waiting, flight_scaling, freeze)
    results["scaling"] = scaling
    results["floors"] = _floors.measure(quick=args.quick)
    _report(results, waiting_big)
    if not args.no_amqp:
        problem = _control_amqp.rabbitmq_problem()
        if problem:
            print(f"\nRabbitMQ cases skipped: {problem}")
        else:
            results["amqp"] = _control_amqp.run(quick=args.quick)
            print()
            print(_control_amqp.report(results["amqp"]), end="")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)


def _report(results: dict[str, Any], waiting_big: int) -> None:
    out = sys.stdout
    mode = "strict JSON" if results["strict"] else "unencoded"
    out.write(f"process control across threads (our broker {mode}; sizes {results['sizes']})\n\n")
    rows = [
        ("status RPC p50 (us)", "status", "p50_us", False),
        ("status RPC p99 (us)", "status", "p99_us", False),
        ("status RPCs/s", "status", "per_s", True),
        ("status x all in flight /s", "status", "flight", True),
        ("pause+play pairs/s", "pause_play", "per_s", True),
        ("pause_all x1000 (ms)", "pause_all", "ms", False),
        ("launch 1-by-1 /s", "launch", "seq_per_s", True),
        ("launch x1000 outstanding /s", "launch", "flight_per_s", True),
    ]
    have_plumpy = "plumpy" in results
    header = f"{'case':<30}{'asyncio':>12}{'trio':>12}"
    if have_plumpy:
        header += f"{'plumpy':>12}{'a/plumpy':>10}{'t/plumpy':>10}"
    out.write(header + "\n")
    for key in ("p50_us", "p99_us", "per_s"):
        a, t = (results[b]["status_async"][key] for b in ("asyncio", "trio"))
        out.write(f"{'status, asyncio client ' + key:<30}{a:>12,.1f}{t:>12,.1f}\n")
    for label, case, key, higher in rows:
        a, t = results["asyncio"][case][key], results["trio"][case][key]
        line = f"{label:<30}{a:>12,.1f}{t:>12,.1f}"
        if have_plumpy:
            p = results["plumpy"][case][key]
            ra, rt = (a / p, t / p) if higher else (p / a, p / t)
            line += f"{p:>12,.1f}{ra:>9.2f}x{rt:>9.2f}x"
        out.write(line + "\n")
    out.write("(ratios: how many times better than plumpy; >1 is better)\n\n")
    out.write("launch x outstanding on one asyncio worker, by waiting processes on it:\n")
    scaling = results["scaling"]
    for key, rate in scaling.items():
        out.write(f"  {key:<28}{rate:>10,.0f} /s\n")
    for suffix in ("", " (gc frozen)"):
        small, big = scaling[f"250 waiting{suffix}"], scaling[f"{waiting_big} waiting{suffix}"]
        out.write(
            f"  {waiting_big} vs 250 waiting{suffix}: {big / small:.2f}x the rate "
            f"(goal: >= 0.70x)\n"
        )
    _report_floors(results, out)


def _report_floors(results: dict[str, Any], out: Any) -> None:
    """The local goals' per-call budgets against floors measured in this run."""
    floors = results["floors"]
    out.write("\nfloors measured in this run (us per call; see benchmarks/_floors.py):\n")
    for key, value in floors.items():
        out.write(f"  {key:<28}{value:>8.1f}\n")
    if "plumpy" not in results:
        return
    plumpy_side = results["plumpy"]
    launch_flight = floors["process_us"] + floors["binding_us"] + floors["task_rtt_us"]
    launch_seq = launch_flight + floors["thread_rtt_p50_us"]
    status_floor = floors["status_of_us"] + floors["future_us"]
    budgets = [
        (
            "launch x1000, 10x plumpy",
            1e6 / (10 * plumpy_side["launch"]["flight_per_s"]),
            launch_flight,
            "process + binding + task round trip",
        ),
        (
            "launch 1-by-1, 10x plumpy",
            1e6 / (10 * plumpy_side["launch"]["seq_per_s"]),
            launch_seq,
            "the same + thread round trip",
        ),
        (
            "status, 5x plumpy's rate",
            1e6 / (5 * max(plumpy_side["status"]["per_s"], plumpy_side["status"]["flight"])),
            status_floor,
            "status_of + thread-safe future",
        ),
    ]
    out.write(f"\n{'goal':<28}{'budget us':>10}{'floor us':>10}  floor = ...\n")
    for label, budget, floor, what in budgets:
        verdict = "within reach" if floor < budget else "out of reach (budget < floor)"
        out.write(f"{label:<28}{budget:>10.1f}{floor:>10.1f}  {what}: {verdict}\n")


if __name__ == "__main__":
    main()
