"""The process-control benchmark on RabbitMQ: plumio against plumpy on kiwipy's
``RmqThreadCommunicator``, side by side on one broker (run by ``bench_control`` when RabbitMQ
answers, or alone: ``python -m benchmarks._control_amqp``).

Both sides run the same cases as the in-memory benchmark, with smaller sizes (a RabbitMQ
round trip costs hundreds of microseconds to milliseconds):

- **status RPC**: sequential ``status`` RPCs to one waiting process (p50/p99, calls/s);
- **pause+play**: sequential pause then play RPCs to one waiting process (pairs/s);
- **pause_all**: one ``pause_all`` broadcast to N waiting processes, timed until every one of
  them is paused (both sides: polling the processes' own ``paused`` flags every 0.2 ms from
  the client thread, since over RabbitMQ a broadcast and a later RPC take different queues);
- **launch 1-by-1 / launch x outstanding**: launch tasks of a trivial process (``y = 2x``),
  each reply being the process's outcome.

Set-up, ours: a worker thread runs an asyncio loop with an ``AmqpCommunicator`` (its network
I/O on its own thread), a ``Runner``, a ``ProcessControl`` and a ``ProcessLauncher``; the client
is the main thread's asyncio loop with its own ``AmqpCommunicator`` and a ``ProcessController``.
plumpy: a process loop on its own thread with processes and ``ProcessLauncher`` on
``plumpy.wrap_communicator(RmqThreadCommunicator, loop)`` (its production set-up, as in
aiida-core), the client a ``RemoteProcessThreadController`` on a second
``RmqThreadCommunicator`` (kiwipy's default YAML encoding, as plumpy uses it). Fresh exchange,
queue and namespace names per run; kiwipy's ``testing_mode`` and our ``queue_expires`` remove
them afterwards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from broker import AmqpCommunicator, amqp_problem
from corelib import Runner
from corelib.control._binding import ProcessControl
from corelib.control._controller import ProcessController
from corelib.control._launcher import ProcessLauncher

from ._control_models import Double, Waiter

DEFAULT_URL = os.environ.get("PLUMIO_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TIMEOUT = 60.0
SIZES = {"status": 300, "pairs": 100, "pause_all": 200, "launch_seq": 100, "launch_flight": 200}
QUICK_SIZES = {"status": 60, "pairs": 20, "pause_all": 50, "launch_seq": 20, "launch_flight": 50}


def rabbitmq_problem(url: str = DEFAULT_URL) -> str:
    """Why no RabbitMQ can be used at ``url`` ("" when one answers)."""
    return amqp_problem(url)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[98]


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.perf_counter() + TIMEOUT
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.0002)


class _LoopThread:
    """An asyncio loop on its own thread, running coroutines submitted from other threads."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


# -- ours ---------------------------------------------------------------------------------------


def _communicator(url: str, namespace: str, name: str) -> AmqpCommunicator:
    return AmqpCommunicator(url, namespace=namespace, name=name, queue_expires=60.0)


class OursAmqp:
    """A plumio worker thread on RabbitMQ; the cases run from the main thread's loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.namespace = f"plumio-bench-control-{uuid.uuid4().hex[:10]}"
        self.worker = _LoopThread("bench-amqp-worker")
        self.runner: Runner | None = None
        self._stop = asyncio.Event()
        self._started: cf.Future[None] = cf.Future()
        self._done = asyncio.run_coroutine_threadsafe(self._serve(), self.worker.loop)
        self._started.result(TIMEOUT)

    async def _serve(self) -> None:
        try:
            async with (
                _communicator(self.url, self.namespace, "bench-worker") as comm,
                Runner() as runner,
                ProcessControl(runner, comm) as control,
            ):
                await comm.add_task_subscriber(ProcessLauncher(control))
                self.runner = runner
                self._started.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            raise

    def close(self) -> None:
        self.worker.loop.call_soon_threadsafe(self._stop.set)
        self._done.result(TIMEOUT)
        self.worker.close()

    def _process(self, pid: str) -> Any:
        assert self.runner is not None
        return self.runner.processes[pid]  # read from another thread, as plumpy's side does

    def run(self, sizes: dict[str, int]) -> dict[str, dict[str, float]]:
        return anyio.run(self._cases, sizes, backend="asyncio")

    async def _cases(self, sizes: dict[str, int]) -> dict[str, dict[str, float]]:
        with anyio.fail_after(10 * TIMEOUT):
            async with _communicator(self.url, self.namespace, "bench-client") as comm:
                ctl = ProcessController(comm)
                return {
                    "status": await self._status(ctl, sizes["status"]),
                    "pause_play": await self._pause_play(ctl, sizes["pairs"]),
                    "pause_all": await self._pause_all(ctl, sizes["pause_all"]),
                    "launch": await self._launch(ctl, sizes["launch_seq"], sizes["launch_flight"]),
                }

    async def _waiters(self, ctl: ProcessController, n: int) -> list[str]:
        pids: list[str] = []

        async def one() -> None:
            pids.append(await ctl.launch(Waiter, nowait=True))

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        return pids

    async def _status(self, ctl: ProcessController, n: int) -> dict[str, float]:
        (pid,) = await self._waiters(ctl, 1)
        for _ in range(20):
            await ctl.status(pid)
        samples = []
        t0 = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            await ctl.status(pid)
            samples.append(time.perf_counter() - s)
        elapsed = time.perf_counter() - t0
        await ctl.kill(pid)
        p50, p99 = _percentiles(samples)
        return {"p50_us": p50 * 1e6, "p99_us": p99 * 1e6, "per_s": n / elapsed}

    async def _pause_play(self, ctl: ProcessController, n: int) -> dict[str, float]:
        (pid,) = await self._waiters(ctl, 1)
        t0 = time.perf_counter()
        for _ in range(n):
            assert (await ctl.pause(pid)).done
            assert (await ctl.play(pid)).done
        elapsed = time.perf_counter() - t0
        await ctl.kill(pid)
        return {"per_s": n / elapsed}

    async def _pause_all(self, ctl: ProcessController, n: int) -> dict[str, float]:
        pids = await self._waiters(ctl, n)
        procs = [self._process(pid) for pid in pids]
        for proc in procs:
            await anyio.to_thread.run_sync(
                _wait_until, lambda p=proc: p.state.value == "waiting", "waiting"
            )
        t0 = time.perf_counter()
        await ctl.pause_all()
        await anyio.to_thread.run_sync(
            _wait_until, lambda: all(p.paused for p in procs), "all paused"
        )
        elapsed = time.perf_counter() - t0
        await ctl.kill_all()
        await anyio.to_thread.run_sync(
            _wait_until, lambda: all(p.has_terminated() for p in procs), "all killed"
        )
        return {"ms": elapsed * 1e3}

    async def _launch(self, ctl: ProcessController, n_seq: int, n_flight: int) -> dict[str, float]:
        for i in range(10):
            await ctl.launch(Double, {"x": i})
        t0 = time.perf_counter()
        for i in range(n_seq):
            assert (await ctl.launch(Double, {"x": i}))["outputs"] == {"y": 2 * i}
        seq = n_seq / (time.perf_counter() - t0)

        async def one(i: int) -> None:
            assert (await ctl.launch(Double, {"x": i}))["outputs"] == {"y": 2 * i}

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n_flight):
                tg.start_soon(one, i)
        flight = n_flight / (time.perf_counter() - t0)
        return {"seq_per_s": seq, "flight_per_s": flight}


# -- plumpy -------------------------------------------------------------------------------------


def _noop() -> None:
    pass


class PlumpyAmqp:
    """plumpy's production set-up on RabbitMQ: processes on a loop thread with the
    ``RmqThreadCommunicator`` wrapped for that loop; the client a thread controller."""

    def __init__(self, url: str) -> None:
        import plumpy
        from kiwipy.rmq import RmqThreadCommunicator

        from . import _plumpy_control_models as models

        self.plumpy = plumpy
        self.models = models
        tag = uuid.uuid4().hex[:10]
        names = {
            "message_exchange": f"plumio-bench-control-{tag}.messages",
            "task_exchange": f"plumio-bench-control-{tag}.tasks",
            "task_queue": f"plumio-bench-control-{tag}.queue",
        }
        self.worker = _LoopThread("bench-plumpy-worker")
        self.comm = RmqThreadCommunicator.connect(
            connection_params={"url": url}, testing_mode=True, **names
        )
        self.loop_comm = plumpy.wrap_communicator(self.comm, self.worker.loop)
        models.AMQP_COMMUNICATOR = self.loop_comm  # launched PDoubleAmqp processes use it
        self.loop_comm.add_task_subscriber(plumpy.ProcessLauncher(self.worker.loop))
        self.client = RmqThreadCommunicator.connect(
            connection_params={"url": url}, testing_mode=True, **names
        )
        self.ctl = plumpy.RemoteProcessThreadController(self.client)
        self._tasks: list[Any] = []

    def close(self) -> None:
        self.models.AMQP_COMMUNICATOR = None
        self.client.close()
        self.comm.close()
        self.worker.close()

    def run(self, sizes: dict[str, int]) -> dict[str, dict[str, float]]:
        return {
            "status": self._status(sizes["status"]),
            "pause_play": self._pause_play(sizes["pairs"]),
            "pause_all": self._pause_all(sizes["pause_all"]),
            "launch": self._launch(sizes["launch_seq"], sizes["launch_flight"]),
        }

    def _settle(self, future: Any) -> Any:
        """The final result of a plumpy/kiwipy future (replies may nest futures).

        plumpy resolves some futures with a non-thread-safe ``call_soon`` from another
        thread, which doesn't wake the process loop (``bench_broker.plumpy_stall_probe``);
        as in the in-memory benchmark, a no-op posted with ``call_soon_threadsafe`` every
        millisecond while waiting wakes it.
        """
        value = future
        while isinstance(value, cf.Future):
            value = self._result(value)
        return value

    def _result(self, future: cf.Future[Any]) -> Any:
        deadline = time.perf_counter() + TIMEOUT
        while True:
            try:
                return future.result(0.001)
            except cf.TimeoutError:
                if time.perf_counter() > deadline:
                    raise
                self.worker.loop.call_soon_threadsafe(_noop)

    def _waiters(self, n: int) -> list[Any]:
        plumpy = self.plumpy

        async def make() -> list[Any]:
            procs = [
                self.models.PWaiter(communicator=self.loop_comm, loop=self.worker.loop)
                for _ in range(n)
            ]
            for proc in procs:
                self._tasks.append(self.worker.loop.create_task(proc.step_until_terminated()))
            while not all(p.state == plumpy.ProcessState.WAITING for p in procs):  # noqa: ASYNC110
                await asyncio.sleep(0.001)  # plumpy has no readiness signal to wait on
            return procs

        return self.worker.run(make())  # type: ignore[no-any-return]

    def _kill(self, procs: list[Any]) -> None:
        for future in [self.ctl.kill_process(str(p.pid)) for p in procs]:
            self._settle(future)
        _wait_until(lambda: all(p.has_terminated() for p in procs), "all killed")

    def _status(self, n: int) -> dict[str, float]:
        (proc,) = self._waiters(1)
        pid = str(proc.pid)
        for _ in range(20):
            self._settle(self.ctl.get_status(pid))
        samples = []
        t0 = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            self._settle(self.ctl.get_status(pid))
            samples.append(time.perf_counter() - s)
        elapsed = time.perf_counter() - t0
        self._kill([proc])
        p50, p99 = _percentiles(samples)
        return {"p50_us": p50 * 1e6, "p99_us": p99 * 1e6, "per_s": n / elapsed}

    def _pause_play(self, n: int) -> dict[str, float]:
        (proc,) = self._waiters(1)
        pid = str(proc.pid)
        t0 = time.perf_counter()
        for _ in range(n):
            assert self._settle(self.ctl.pause_process(pid))
            assert self._settle(self.ctl.play_process(pid))
        elapsed = time.perf_counter() - t0
        self._kill([proc])
        return {"per_s": n / elapsed}

    def _pause_all(self, n: int) -> dict[str, float]:
        procs = self._waiters(n)
        t0 = time.perf_counter()
        self.ctl.pause_all(None)
        _wait_until(lambda: all(p.paused for p in procs), "all paused")
        elapsed = time.perf_counter() - t0
        self._kill(procs)
        return {"ms": elapsed * 1e3}

    def _launch(self, n_seq: int, n_flight: int) -> dict[str, float]:
        cls = self.models.PDoubleAmqp

        def launch(i: int) -> Any:
            return self.ctl.launch_process(cls, init_kwargs={"inputs": {"x": i}})

        for i in range(10):
            self._settle(launch(i))
        t0 = time.perf_counter()
        for i in range(n_seq):
            self._settle(launch(i))
        seq = n_seq / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        futures = [launch(i) for i in range(n_flight)]
        for future in futures:
            self._settle(future)
        flight = n_flight / (time.perf_counter() - t0)
        return {"seq_per_s": seq, "flight_per_s": flight}


# -- running ------------------------------------------------------------------------------------


ROWS = (
    ("status RPC p50 (us)", "status", "p50_us", False),
    ("status RPC p99 (us)", "status", "p99_us", False),
    ("status RPCs/s", "status", "per_s", True),
    ("pause+play pairs/s", "pause_play", "per_s", True),
    ("pause_all x{n} (ms)", "pause_all", "ms", False),
    ("launch 1-by-1 /s", "launch", "seq_per_s", True),
    ("launch x{m} outstanding /s", "launch", "flight_per_s", True),
)


def run(url: str = DEFAULT_URL, *, quick: bool = False) -> dict[str, Any]:
    """Both sides, ours first; returns ``{"sizes", "ours", "plumpy"?}`` (plumpy only when
    plumpy and kiwipy are importable)."""
    sizes = QUICK_SIZES if quick else SIZES
    results: dict[str, Any] = {"sizes": sizes}
    side: Any = OursAmqp(url)
    try:
        results["ours"] = side.run(sizes)
    finally:
        side.close()
    try:
        import kiwipy.rmq  # noqa: F401
        import plumpy  # noqa: F401
    except ImportError:  # pragma: no cover - plumpy is in the "bench" extra
        return results
    side = PlumpyAmqp(url)
    try:
        results["plumpy"] = side.run(sizes)
    finally:
        side.close()
    return results


def report(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    have_plumpy = "plumpy" in results
    lines = [f"process control on RabbitMQ (sizes {sizes})"]
    header = f"{'case':<30}{'ours':>12}"
    if have_plumpy:
        header += f"{'plumpy':>12}{'ours/plumpy':>13}"
    lines.append(header)
    for label, case, key, higher in ROWS:
        label = label.format(n=sizes["pause_all"], m=sizes["launch_flight"])
        ours = results["ours"][case][key]
        line = f"{label:<30}{ours:>12,.1f}"
        if have_plumpy:
            theirs = results["plumpy"][case][key]
            ratio = ours / theirs if higher else theirs / ours
            line += f"{theirs:>12,.1f}{ratio:>12.2f}x"
        lines.append(line)
    lines.append("(ratios: how many times better than plumpy; >1 is better)")
    return "\n".join(lines) + "\n"


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    problem = rabbitmq_problem(args.url)
    if problem:
        raise SystemExit(problem)
    print(report(run(args.url, quick=args.quick)), end="")


if __name__ == "__main__":
    main()
