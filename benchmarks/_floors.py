"""Floors under the control goals, measured in the same run as the control benchmark.

Each floor is work a launch or a status RPC cannot avoid, timed on its own with nothing else
around it. A goal whose per-call budget is below the sum of the floors it needs cannot be
met by any broker or control layer built on them; ``bench_control`` prints the budgets next
to these figures.

- ``thread_rtt_p50_us``: a plain thread posts a no-op into an asyncio loop on another thread
  (``call_soon_threadsafe``) and waits on a ``concurrent.futures.Future`` the loop resolves:
  the bare cross-thread round trip of a blocking client, median of sequential calls.
- ``process_us``: a trivial process (``Double``) created, validated and run to FINISHED by a
  :class:`~corelib.Runner`, 1,000 at a time, no communicator.
- ``binding_us``: the bare communicator calls the issue requires for every launched process,
  with no process at all: an RPC subscription under its pid, three ``state_changed``
  broadcasts (created, running, finished; nobody listens), the unsubscription.
- ``attached_process_us`` (for scale, not summed): a trivial process through
  :meth:`~corelib.ProcessControl.submit` on a communicator of the same loop, binding included,
  still without a task queue or another thread.
- ``task_rtt_us``: a task with an empty body sent from a plain thread to a synchronous task
  subscriber on a worker loop thread and acknowledged back, 1,000 outstanding: the task-queue
  transport alone, per task.
- ``status_of_us``: building one status reply (:func:`~corelib.status_of`, the fields
  plumpy's status returns);
- ``future_us``: creating, resolving and reading the thread-safe future a blocking caller
  waits on (one per call), with no transport at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import statistics
import threading
import time
from typing import Any

import anyio
import anyio.from_thread

from broker import BlockingCommunicator, LoopCommunicator, MemoryBroker
from corelib import ProcessControl, Runner
from corelib.control._messages import status_of

from ._control_models import Double, Waiter

TIMEOUT = 60.0


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


class _LoopThread:
    """An asyncio loop on its own thread, for the round-trip floor."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


def thread_rtt_p50_us(n: int) -> float:
    """Median µs of a bare plain-thread -> loop-thread -> plain-thread round trip."""
    server = _LoopThread()
    try:
        post = server.loop.call_soon_threadsafe
        samples = []
        for i in range(n + 200):
            future: cf.Future[int] = cf.Future()
            t0 = time.perf_counter()
            post(future.set_result, i)
            future.result(TIMEOUT)
            if i >= 200:  # warm-up
                samples.append(time.perf_counter() - t0)
        return _median(samples) * 1e6
    finally:
        server.close()


async def _processes(n: int, attached: bool) -> float:
    if not attached:
        start = time.perf_counter()
        async with Runner() as runner:  # the block ends once every process has
            for i in range(n):
                runner.submit(Double, {"x": i})
        return (time.perf_counter() - start) / n * 1e6
    async with Runner() as runner:
        broker = MemoryBroker()
        async with LoopCommunicator(broker) as comm, ProcessControl(runner, comm) as control:
            start = time.perf_counter()
            processes = [control.submit(Double, {"x": i}) for i in range(n)]
            for process in processes:
                await process.wait()
            while control.statistics().pending_operations:  # the last unsubscriptions
                await anyio.lowlevel.checkpoint()
            return (time.perf_counter() - start) / n * 1e6


def process_us(n: int, *, attached: bool) -> float:
    """µs per trivial process run to the end, ``n`` at a time (best of three)."""
    return min(anyio.run(_processes, n, attached) for _ in range(3))


def task_rtt_us(n: int) -> float:
    """µs per empty task through the memory broker, plain thread to a worker loop thread,
    ``n`` outstanding (best of three)."""
    broker = MemoryBroker()
    ready = threading.Event()
    stop: list[Any] = []

    async def worker() -> None:
        async with LoopCommunicator(broker) as comm:
            await comm.add_task_subscriber(lambda _comm, body: body)
            stopped = anyio.Event()
            token = anyio.lowlevel.current_token()
            stop.append(lambda: anyio.from_thread.run_sync(stopped.set, token=token))
            ready.set()
            await stopped.wait()

    thread = threading.Thread(target=anyio.run, args=(worker,), daemon=True)
    thread.start()
    if not ready.wait(TIMEOUT):  # pragma: no cover - the worker failed to start
        raise RuntimeError("task floor: the worker loop did not start")
    client = BlockingCommunicator(broker, timeout=TIMEOUT)
    try:
        best = float("inf")
        for _ in range(4):
            start = time.perf_counter()
            futures = [client.task_send_future(i) for i in range(n)]
            done, _ = cf.wait(futures, TIMEOUT)
            elapsed = time.perf_counter() - start
            if len(done) != n or any(f.result() != i for i, f in enumerate(futures)):
                raise RuntimeError("task floor: replies don't match")
            best = min(best, elapsed / n * 1e6)
        return best
    finally:
        client.close()
        stop[0]()
        thread.join(TIMEOUT)


async def _status_of(n: int) -> float:
    async with Runner() as runner:
        process = runner.submit(Waiter)
        while process.state.value != "waiting":
            await anyio.lowlevel.checkpoint()  # set-up only: until it waits
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(n):
                status_of(process)
            best = min(best, (time.perf_counter() - start) / n * 1e6)
        process.kill()
        return best


def status_of_us(n: int) -> float:
    """µs to build a status reply (best of three)."""
    return anyio.run(_status_of, n)


def future_us(n: int) -> float:
    """µs to create, resolve and read a ``concurrent.futures.Future`` (best of three)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            future: cf.Future[int] = cf.Future()
            future.set_result(i)
            future.result()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


async def _binding(n: int) -> float:
    def subscriber(_comm: Any, _msg: Any) -> None:
        return None

    broker = MemoryBroker()
    async with LoopCommunicator(broker) as comm:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for i in range(n):
                pid = f"p{i}"
                await comm.add_rpc_subscriber(subscriber, pid)
                for subject in _MOVES:
                    comm.broadcast_send_nowait(None, sender=pid, subject=subject)
                await comm.remove_rpc_subscriber(pid)
            best = min(best, (time.perf_counter() - start) / n * 1e6)
        return best


_MOVES = (
    "state_changed.None.created",
    "state_changed.created.running",
    "state_changed.running.finished",
)


def binding_us(n: int) -> float:
    """µs of the bare communicator calls a launched process needs (best of three)."""
    return anyio.run(_binding, n)


def measure(quick: bool = False) -> dict[str, float]:
    n = 200 if quick else 1000
    return {
        "thread_rtt_p50_us": thread_rtt_p50_us(n * 2),
        "process_us": process_us(n, attached=False),
        "attached_process_us": process_us(n, attached=True),
        "binding_us": binding_us(n),
        "task_rtt_us": task_rtt_us(n),
        "status_of_us": status_of_us(n * 10),
        "future_us": future_us(n * 10),
    }
