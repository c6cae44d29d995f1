"""Side-by-side benchmarks of the in-process broker against its raw floors (and plumpy/kiwipy).

Run ``python -m benchmarks.bench_broker`` (``--quick`` for a smoke run, ``--json PATH`` to keep
every sample, ``--profile`` to cProfile the 1000-in-flight asyncio RPC case instead).

Every case runs ``reps`` times and the cases are interleaved rep by rep, so a burst of noise
from the (shared, 2-core) machine hits the baselines and the broker alike. Ratios are taken
per repetition against the baseline measured in the same repetition, then the median is
reported. Figures are medians over repetitions.

Notation: ``a->t`` means the client (sender) runs on asyncio and the server (subscriber) on
trio, each on its own thread. "raw" is the floor with no broker at all: one native call-soon
into the server loop (``loop.call_soon_threadsafe`` / ``TrioToken.run_sync_soon``), one back
into the client loop, and a native future/event to await.

Every wait is bounded (``anyio.fail_after``/``asyncio.timeout``/``trio.fail_after`` around the
client, ``move_on_after`` around each server thread's lifetime, joins with timeouts), so a
broker bug makes a case fail with an error line instead of hanging the run. Synchronisation
never sleeps: broadcast cases end with an RPC that reports the delivery count, which arrives
after every broadcast from the same sender (per-sender FIFO).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import anyio.lowlevel

from broker import BroadcastFilter, LoopCommunicator, MemoryBroker, wait_future

try:
    import trio
    import trio.lowlevel
except ImportError:  # pragma: no cover - trio is in the "bench" and "test" extras
    trio = None  # type: ignore[assignment]

try:
    import kiwipy
    from plumpy.communications import LoopCommunicator as PlumpyLoopCommunicator
    from plumpy.futures import unwrap_kiwi_future
except ImportError:
    kiwipy = None  # type: ignore[assignment]

perf_counter_ns = time.perf_counter_ns
perf_counter = time.perf_counter

#: bound on one case's client side (seconds)
CASE_TIMEOUT = 60.0
#: bound on a server thread's lifetime (seconds)
THREAD_LIFETIME = 120.0
#: bound on starting / joining a thread (seconds)
JOIN_TIMEOUT = 10.0


@dataclass(frozen=True)
class Config:
    reps: int
    seq_calls: int  # sequential round trips per rep
    flight_msgs: int  # messages per rep in the 1000-in-flight runs
    task_msgs: int
    bcast_sends_1: int  # broadcasts sent to 1 subscriber
    bcast_sends_100: int  # broadcasts sent to 100 subscribers
    plumpy_seq: int
    plumpy_flight: int
    window: int = 1000


FULL = Config(
    reps=5,
    seq_calls=2000,
    flight_msgs=20_000,
    task_msgs=20_000,
    bcast_sends_1=20_000,
    bcast_sends_100=1_000,
    plumpy_seq=1000,
    plumpy_flight=5000,
)
QUICK = Config(
    reps=2,
    seq_calls=300,
    flight_msgs=4000,
    task_msgs=4000,
    bcast_sends_1=4000,
    bcast_sends_100=200,
    plumpy_seq=200,
    plumpy_flight=2000,
)


class CaseError(Exception):
    """A case produced a wrong answer (not just a slow one)."""


# -- small helpers ------------------------------------------------------------------------------


def _inc(_comm: Any, msg: int) -> int:
    """The RPC/task subscriber of every case: a plain function, so it runs inline."""
    return msg + 1


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[k])


def _latency_metrics(timings_ns: list[int], elapsed_s: float) -> dict[str, float]:
    timings_ns.sort()
    return {
        "p50_us": statistics.median(timings_ns) / 1000,
        "p99_us": _percentile(timings_ns, 0.99) / 1000,
        "seq_per_s": len(timings_ns) / elapsed_s,
    }


def _warmup_count(n: int) -> int:
    return max(20, min(200, n // 10))


# -- threads running a loop ---------------------------------------------------------------------


class _LoopThread:
    """A daemon thread running one event loop until :meth:`stop`; use as a context manager."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop_soon: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._thread_main, name=name, daemon=True)

    def _thread_main(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(JOIN_TIMEOUT):
            raise TimeoutError(f"thread {self.name!r} did not start")
        if self.error is not None:
            raise RuntimeError(f"thread {self.name!r} failed to start") from self.error

    def stop(self) -> None:
        if self._stop_soon is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already finished
                self._stop_soon()
        self._thread.join(JOIN_TIMEOUT)
        if self._thread.is_alive():
            raise TimeoutError(f"thread {self.name!r} did not stop")
        if self.error is not None:
            raise RuntimeError(f"thread {self.name!r} failed") from self.error

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.stop()
        else:  # don't mask the original error
            with contextlib.suppress(Exception):
                self.stop()


class RawLoopThread(_LoopThread):
    """A bare asyncio or trio loop (no anyio, no broker); ``post(fn, *args)`` runs fn in it."""

    def __init__(self, backend: str) -> None:
        super().__init__(f"raw-{backend}")
        self.backend = backend
        self.post: Callable[..., Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        if self.backend == "asyncio":
            asyncio.run(self._asyncio_main())
        else:
            trio.run(self._trio_main)

    async def _asyncio_main(self) -> None:
        self.loop = loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        self.post = loop.call_soon_threadsafe
        self._stop_soon = lambda: loop.call_soon_threadsafe(stop.set)
        self._ready.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), THREAD_LIFETIME)

    async def _trio_main(self) -> None:
        token = trio.lowlevel.current_trio_token()
        stop = trio.Event()
        self.post = token.run_sync_soon
        self._stop_soon = lambda: token.run_sync_soon(stop.set)
        self._ready.set()
        with trio.move_on_after(THREAD_LIFETIME):
            await stop.wait()


class CommThread(_LoopThread):
    """A :class:`LoopCommunicator` on its own thread and loop; ``setup(comm)`` subscribes."""

    def __init__(
        self,
        broker: MemoryBroker,
        backend: str,
        setup: Callable[[LoopCommunicator], Awaitable[Any]],
        name: str,
        profile: cProfile.Profile | None = None,
    ) -> None:
        super().__init__(name)
        self.backend = backend
        self.info: Any = None
        self._broker = broker
        self._setup = setup
        self._profile = profile

    def _run(self) -> None:
        if self._profile is not None:
            self._profile.enable()
        try:
            anyio.run(self._main, backend=self.backend)
        finally:
            if self._profile is not None:
                self._profile.disable()

    async def _main(self) -> None:
        stop = anyio.Event()
        native = anyio.lowlevel.current_token().native_token
        if isinstance(native, asyncio.AbstractEventLoop):
            self._stop_soon = lambda: native.call_soon_threadsafe(stop.set)
        else:
            self._stop_soon = lambda: native.run_sync_soon(stop.set)
        with anyio.move_on_after(THREAD_LIFETIME):
            async with LoopCommunicator(self._broker, name=self.name) as comm:
                self.info = await self._setup(comm)
                self._ready.set()
                await stop.wait()


# -- case 1: the raw floor ----------------------------------------------------------------------


def _set_future(fut: asyncio.Future[int], value: int) -> None:
    if not fut.done():
        fut.set_result(value)


async def _raw_asyncio_client(post: Callable[..., Any], cfg: Config) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    reply = loop.call_soon_threadsafe

    def handler(x: int, fut: asyncio.Future[int]) -> None:  # runs in the server loop
        reply(_set_future, fut, x + 1)

    async def call(i: int) -> int:
        fut = loop.create_future()
        post(handler, i, fut)
        return await fut

    async with asyncio.timeout(CASE_TIMEOUT):
        for i in range(_warmup_count(cfg.seq_calls)):
            await call(i)
        timings: list[int] = []
        t_start = perf_counter()
        for i in range(cfg.seq_calls):
            t0 = perf_counter_ns()
            value = await call(i)
            timings.append(perf_counter_ns() - t0)
            if value != i + 1:
                raise CaseError(f"raw reply {value!r} != {i + 1}")
        result = _latency_metrics(timings, perf_counter() - t_start)

        pending: deque[asyncio.Future[int]] = deque()
        total = 0
        t_start = perf_counter()
        for i in range(cfg.flight_msgs):
            if len(pending) >= cfg.window:
                total += await pending.popleft()
            fut = loop.create_future()
            post(handler, i, fut)
            pending.append(fut)
        while pending:
            total += await pending.popleft()
        result["flight_per_s"] = cfg.flight_msgs / (perf_counter() - t_start)
    if total != cfg.flight_msgs * (cfg.flight_msgs + 1) // 2:
        raise CaseError("raw in-flight replies don't add up")
    return result


class _TrioCall:
    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value = 0


async def _raw_trio_client(post: Callable[..., Any], cfg: Config) -> dict[str, float]:
    reply = trio.lowlevel.current_trio_token().run_sync_soon

    def handler(x: int, call: _TrioCall) -> None:  # runs in the server loop
        call.value = x + 1
        reply(call.event.set)

    async def seq_call(i: int) -> int:
        c = _TrioCall()
        post(handler, i, c)
        await c.event.wait()
        return c.value

    with trio.fail_after(CASE_TIMEOUT):
        for i in range(_warmup_count(cfg.seq_calls)):
            await seq_call(i)
        timings: list[int] = []
        t_start = perf_counter()
        for i in range(cfg.seq_calls):
            t0 = perf_counter_ns()
            value = await seq_call(i)
            timings.append(perf_counter_ns() - t0)
            if value != i + 1:
                raise CaseError(f"raw reply {value!r} != {i + 1}")
        result = _latency_metrics(timings, perf_counter() - t_start)

        pending: deque[_TrioCall] = deque()
        total = 0
        t_start = perf_counter()
        for i in range(cfg.flight_msgs):
            if len(pending) >= cfg.window:
                c = pending.popleft()
                if not c.event.is_set():
                    await c.event.wait()
                total += c.value
            c = _TrioCall()
            post(handler, i, c)
            pending.append(c)
        while pending:
            c = pending.popleft()
            if not c.event.is_set():
                await c.event.wait()
            total += c.value
        result["flight_per_s"] = cfg.flight_msgs / (perf_counter() - t_start)
    if total != cfg.flight_msgs * (cfg.flight_msgs + 1) // 2:
        raise CaseError("raw in-flight replies don't add up")
    return result


def case_raw(client: str, server: str, cfg: Config) -> dict[str, float]:
    with RawLoopThread(server) as srv:
        assert srv.post is not None
        if client == "asyncio":
            return asyncio.run(_raw_asyncio_client(srv.post, cfg))
        return trio.run(_raw_trio_client, srv.post, cfg)  # type: ignore[no-any-return]


# -- case 2: our RPC ----------------------------------------------------------------------------


async def _settle(fut: Any) -> Any:
    if not fut.done():
        await wait_future(fut)
    return fut.result()


async def _rpc_client(
    broker: MemoryBroker, rid: str, cfg: Config, seq: bool = True
) -> dict[str, float]:
    result: dict[str, float] = {}
    async with LoopCommunicator(broker, name="client") as comm:
        with anyio.fail_after(CASE_TIMEOUT):
            if seq:
                for i in range(_warmup_count(cfg.seq_calls)):
                    await comm.rpc_send(rid, i)
                timings: list[int] = []
                t_start = perf_counter()
                for i in range(cfg.seq_calls):
                    t0 = perf_counter_ns()
                    value = await comm.rpc_send(rid, i)
                    timings.append(perf_counter_ns() - t0)
                    if value != i + 1:
                        raise CaseError(f"rpc reply {value!r} != {i + 1}")
                result.update(_latency_metrics(timings, perf_counter() - t_start))

            send = comm.rpc_send_future
            pending: deque[Any] = deque()
            total = 0
            t_start = perf_counter()
            for i in range(cfg.flight_msgs):
                if len(pending) >= cfg.window:
                    total += await _settle(pending.popleft())
                pending.append(send(rid, i))
            while pending:
                total += await _settle(pending.popleft())
            result["flight_per_s"] = cfg.flight_msgs / (perf_counter() - t_start)

            # the async API with as many requests in flight: one task per outstanding call
            per_task = max(1, cfg.flight_msgs // cfg.window)
            task_total = 0

            async def caller(base: int) -> None:
                nonlocal task_total
                for i in range(base, base + per_task):
                    value = await comm.rpc_send(rid, i)  # read the total after the await
                    task_total += value

            t_start = perf_counter()
            async with anyio.create_task_group() as tg:
                for w in range(cfg.window):
                    tg.start_soon(caller, w * per_task)
            result["flight_tasks_per_s"] = per_task * cfg.window / (perf_counter() - t_start)
            n = per_task * cfg.window
            if task_total != n * (n + 1) // 2:
                raise CaseError("rpc replies through 1000 awaiting tasks don't add up")
    if total != cfg.flight_msgs * (cfg.flight_msgs + 1) // 2:
        raise CaseError("rpc in-flight replies don't add up")
    return result


async def _same_loop_rpc(cfg: Config) -> dict[str, float]:
    broker = MemoryBroker()
    async with LoopCommunicator(broker, name="server") as server:
        await server.add_rpc_subscriber(_inc, "bench-rpc")
        return await _rpc_client(broker, "bench-rpc", cfg)


def case_rpc_same_loop(backend: str, cfg: Config) -> dict[str, float]:
    return anyio.run(_same_loop_rpc, cfg, backend=backend)


def case_rpc_cross(
    client: str,
    server: str,
    cfg: Config,
    seq: bool = True,
    server_profile: cProfile.Profile | None = None,
) -> dict[str, float]:
    broker = MemoryBroker()

    async def setup(comm: LoopCommunicator) -> None:
        await comm.add_rpc_subscriber(_inc, "bench-rpc")

    with CommThread(broker, server, setup, "rpc-server", profile=server_profile):
        return anyio.run(_rpc_client, broker, "bench-rpc", cfg, seq, backend=client)


# -- case 3: task throughput --------------------------------------------------------------------


async def _task_client(broker: MemoryBroker, cfg: Config) -> dict[str, float]:
    async with LoopCommunicator(broker, name="task-sender") as comm:
        send = comm.task_send_future
        pending: deque[Any] = deque()
        total = 0
        with anyio.fail_after(CASE_TIMEOUT):
            t_start = perf_counter()
            for i in range(cfg.task_msgs):
                if len(pending) >= cfg.window:
                    total += await _settle(pending.popleft())
                pending.append(send(i))
            while pending:
                total += await _settle(pending.popleft())
            elapsed = perf_counter() - t_start
    if total != cfg.task_msgs * (cfg.task_msgs + 1) // 2:
        raise CaseError("task replies don't add up")
    return {"flight_per_s": cfg.task_msgs / elapsed}


def case_tasks(consumers: int, cfg: Config, backend: str = "asyncio") -> dict[str, Any]:
    broker = MemoryBroker()

    def make_setup(counts: list[int], k: int) -> Callable[[LoopCommunicator], Awaitable[None]]:
        def consume(_comm: Any, task: int) -> int:
            counts[k] += 1
            return task + 1

        async def setup(comm: LoopCommunicator) -> None:
            await comm.add_task_subscriber(consume)

        return setup

    counts = [0] * consumers
    with contextlib.ExitStack() as stack:
        for k in range(consumers):
            stack.enter_context(CommThread(broker, backend, make_setup(counts, k), f"consumer-{k}"))
        result: dict[str, Any] = anyio.run(_task_client, broker, cfg, backend=backend)
    if sum(counts) != cfg.task_msgs:
        raise CaseError(f"consumers saw {sum(counts)} tasks, expected {cfg.task_msgs}")
    result["per_consumer"] = counts
    return result


# -- case 4: broadcast fan-out ------------------------------------------------------------------

_SUBJECTS = {"unfiltered": ("x.a", "x.a"), "all": ("x.a", "x.a"), "half": ("x.a", "y.a")}


async def _broadcast_client(
    broker: MemoryBroker, sends: int, mode: str, count_rid: str, nowait: bool
) -> tuple[float, int]:
    subjects = _SUBJECTS[mode]
    async with LoopCommunicator(broker, name="broadcaster") as comm:
        with anyio.fail_after(CASE_TIMEOUT):
            t_start = perf_counter()
            if nowait:
                send_nowait = comm.broadcast_send_nowait
                for i in range(sends):
                    send_nowait(i, sender="bench", subject=subjects[i & 1])
            else:
                for i in range(sends):
                    await comm.broadcast_send(i, sender="bench", subject=subjects[i & 1])
            # queued behind every broadcast above (same sender, same endpoint: FIFO)
            delivered: int = await comm.rpc_send(count_rid, None)
            elapsed = perf_counter() - t_start
    return (delivered / elapsed if delivered else 0.0), delivered


def case_broadcast(
    subscribers: int, mode: str, sends: int, nowait: bool = False
) -> dict[str, float]:
    broker = MemoryBroker()
    counter = [0]

    def on_broadcast(_comm: Any, _body: Any, _sender: Any, _subject: Any, _cid: Any) -> None:
        counter[0] += 1

    async def setup(comm: LoopCommunicator) -> None:
        for _ in range(subscribers):
            sub: Any = on_broadcast
            if mode != "unfiltered":
                sub = BroadcastFilter(on_broadcast, subject="x.*")
            await comm.add_broadcast_subscriber(sub)
        await comm.add_rpc_subscriber(lambda _c, _m: counter[0], "bench-count")

    with CommThread(broker, "asyncio", setup, "broadcast-subscribers"):
        rate, delivered = anyio.run(
            _broadcast_client, broker, sends, mode, "bench-count", nowait, backend="asyncio"
        )
    matching = sends if mode != "half" else (sends + 1) // 2
    expected = matching * subscribers
    if delivered != expected:
        raise CaseError(f"{delivered} deliveries, expected {expected}")
    return {"flight_per_s": rate, "sends": sends, "deliveries": delivered}


# -- case 5: plumpy LoopCommunicator over kiwipy LocalCommunicator -------------------------------


def _noop() -> None:
    pass


async def _plumpy_client(
    comm: Any, rid: str, server_loop: asyncio.AbstractEventLoop, cfg: Config
) -> dict[str, float]:
    """Sequential and windowed RPCs through plumpy, awaited on an asyncio loop.

    plumpy's ``plum_to_kiwi_future`` calls ``add_done_callback`` on the server loop's asyncio
    future from the *sending* thread; when that future is already done, asyncio queues the
    callback with the non-thread-safe ``call_soon`` and the server loop is not woken. Before
    each wait on an unresolved future we therefore post one no-op with
    ``call_soon_threadsafe`` (the "kick"); without it a sequential client hangs until some
    unrelated event wakes the server loop (see :func:`plumpy_stall_probe`).
    """
    kick = server_loop.call_soon_threadsafe

    async def settle(fut: Any) -> Any:
        if not fut.done():
            kick(_noop)
            await asyncio.wrap_future(fut)
        return fut.result()

    def send(i: int) -> Any:
        return unwrap_kiwi_future(comm.rpc_send(rid, i))

    async with asyncio.timeout(CASE_TIMEOUT):
        for i in range(_warmup_count(cfg.plumpy_seq)):
            await settle(send(i))
        timings: list[int] = []
        t_start = perf_counter()
        for i in range(cfg.plumpy_seq):
            t0 = perf_counter_ns()
            value = await settle(send(i))
            timings.append(perf_counter_ns() - t0)
            if value != i + 1:
                raise CaseError(f"plumpy reply {value!r} != {i + 1}")
        result = _latency_metrics(timings, perf_counter() - t_start)

        pending: deque[Any] = deque()
        total = 0
        t_start = perf_counter()
        for i in range(cfg.plumpy_flight):
            if len(pending) >= cfg.window:
                total += await settle(pending.popleft())
            pending.append(send(i))
        while pending:
            total += await settle(pending.popleft())
        result["flight_per_s"] = cfg.plumpy_flight / (perf_counter() - t_start)
    if total != cfg.plumpy_flight * (cfg.plumpy_flight + 1) // 2:
        raise CaseError("plumpy in-flight replies don't add up")
    return result


async def _plumpy_async_inc(_comm: Any, msg: int) -> int:
    return msg + 1


def case_plumpy(subscriber: str, cfg: Config) -> dict[str, float]:
    with RawLoopThread("asyncio") as srv:
        assert srv.loop is not None
        comm = PlumpyLoopCommunicator(kiwipy.LocalCommunicator(), srv.loop)
        sub = _plumpy_async_inc if subscriber == "async" else _inc
        comm.add_rpc_subscriber(sub, "bench-rpc")
        try:
            return asyncio.run(_plumpy_client(comm, "bench-rpc", srv.loop, cfg))
        finally:
            comm.close()


def plumpy_stall_probe(calls: int = 100, patience: float = 0.01) -> dict[str, float]:
    """How many sequential plumpy RPCs stall without the kick (each wait bounded by patience)."""
    with RawLoopThread("asyncio") as srv:
        assert srv.loop is not None
        loop = srv.loop
        comm = PlumpyLoopCommunicator(kiwipy.LocalCommunicator(), loop)
        comm.add_rpc_subscriber(_plumpy_async_inc, "bench-rpc")

        async def probe() -> int:
            stalls = 0
            async with asyncio.timeout(CASE_TIMEOUT):
                for i in range(calls):
                    fut = asyncio.wrap_future(unwrap_kiwi_future(comm.rpc_send("bench-rpc", i)))
                    try:
                        await asyncio.wait_for(asyncio.shield(fut), patience)
                    except TimeoutError:
                        stalls += 1
                        loop.call_soon_threadsafe(_noop)
                        await fut
            return stalls

        try:
            stalls = asyncio.run(probe())
        finally:
            comm.close()
    return {"calls": calls, "stalled": stalls, "patience_ms": patience * 1000}


# -- running and reporting ----------------------------------------------------------------------


@dataclass
class Case:
    key: str
    label: str
    run: Callable[[], dict[str, Any]]
    group: str  # "rpc" (latency + throughput), "task", "bcast", "plumpy"
    floor: str | None = None  # the raw case this one is compared with


def build_cases(cfg: Config) -> list[Case]:
    have_trio = trio is not None
    backends = ["asyncio", "trio"] if have_trio else ["asyncio"]
    short = {"asyncio": "a", "trio": "t"}
    cases: list[Case] = []
    for c in backends:
        for s in backends:
            pair = f"{short[c]}->{short[s]}"
            cases.append(
                Case(
                    f"raw {pair}", f"raw floor {pair}", lambda c=c, s=s: case_raw(c, s, cfg), "rpc"
                )
            )
    for b in backends:
        cases.append(
            Case(
                f"rpc same-loop {short[b]}",
                f"ours, same loop ({b})",
                lambda b=b: case_rpc_same_loop(b, cfg),
                "rpc",
                floor=f"raw {short[b]}->{short[b]}",
            )
        )
    for c in backends:
        for s in backends:
            pair = f"{short[c]}->{short[s]}"
            cases.append(
                Case(
                    f"rpc {pair}",
                    f"ours, threads {pair}",
                    lambda c=c, s=s: case_rpc_cross(c, s, cfg),
                    "rpc",
                    floor=f"raw {pair}",
                )
            )
    for n in (1, 4):
        cases.append(
            Case(
                f"task x{n}",
                f"tasks, {n} consumer{'s' if n > 1 else ''} (a->a)",
                lambda n=n: case_tasks(n, cfg),
                "task",
                floor="raw a->a",
            )
        )
    for n, sends in ((1, cfg.bcast_sends_1), (100, cfg.bcast_sends_100)):
        for mode, what in (
            ("unfiltered", "unfiltered"),
            ("all", "filter x.*, all match"),
            ("half", "filter x.*, half match"),
        ):
            cases.append(
                Case(
                    f"bcast {n} {mode}",
                    f"broadcast -> {n} sub{'s' if n > 1 else ''}, {what}",
                    lambda n=n, mode=mode, sends=sends: case_broadcast(n, mode, sends),
                    "bcast",
                    floor="raw a->a",
                )
            )
        if n == 1:
            cases.append(
                Case(
                    "bcast 1 unfiltered nowait",
                    "broadcast -> 1 sub, unfiltered, _nowait",
                    lambda sends=sends: case_broadcast(1, "unfiltered", sends, nowait=True),
                    "bcast",
                    floor="raw a->a",
                )
            )
    if kiwipy is not None:
        for sub in ("async", "sync"):
            cases.append(
                Case(
                    f"plumpy {sub}",
                    f"plumpy LoopCommunicator, {sub} subscriber",
                    lambda sub=sub: case_plumpy(sub, cfg),
                    "plumpy",
                )
            )
    return cases


def run_all(cfg: Config, only: str | None = None) -> dict[str, list[dict[str, Any] | None]]:
    cases = build_cases(cfg)
    if only:
        cases = [c for c in cases if only in c.key]
    results: dict[str, list[dict[str, Any] | None]] = {c.key: [] for c in cases}
    for rep in range(cfg.reps):
        t_rep = perf_counter()
        for case in cases:
            gc.collect()
            try:
                results[case.key].append(case.run())
            except Exception as exc:
                results[case.key].append(None)
                print(f"  ERROR in {case.key!r} (rep {rep + 1}): {exc!r}", file=sys.stderr)
                traceback.print_exc(limit=4, file=sys.stderr)
        print(
            f"  rep {rep + 1}/{cfg.reps} done in {perf_counter() - t_rep:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return results


def _median(samples: list[dict[str, Any] | None], metric: str) -> float | None:
    values = [s[metric] for s in samples if s is not None and metric in s]
    return statistics.median(values) if values else None


def _ratio(
    results: dict[str, list[dict[str, Any] | None]],
    num: str,
    den: str | list[str],
    metric: str,
    den_metric: str | None = None,
) -> float | None:
    """Median over repetitions of num[metric] / den[metric] taken in the same repetition.

    With a list of denominators, each repetition uses the best (largest) of them.
    """
    dens = [den] if isinstance(den, str) else den
    den_metric = den_metric or metric
    ratios = []
    for i, n in enumerate(results.get(num, [])):
        d_values = [
            results[d][i][den_metric]  # type: ignore[index]
            for d in dens
            if d in results and i < len(results[d]) and results[d][i] is not None
        ]
        if n is None or metric not in n or not d_values:
            continue
        d = max(d_values)
        if d:
            ratios.append(n[metric] / d)
    return statistics.median(ratios) if ratios else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _fmt_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def report(
    cfg: Config,
    results: dict[str, list[dict[str, Any] | None]],
    probe: dict[str, float] | None,
) -> tuple[str, dict[str, Any]]:
    cases = {c.key: c for c in build_cases(cfg)}
    lines: list[str] = []
    summary: dict[str, Any] = {"cases": {}, "goals": []}
    out = lines.append

    def row_failed(key: str) -> str:
        n_fail = sum(1 for s in results[key] if s is None)
        return f"  ({n_fail}/{len(results[key])} reps failed)" if n_fail else ""

    out(
        f"Sequential RPC round trip (1 in flight; {cfg.seq_calls} calls per rep) "
        f"and throughput ({cfg.window} in flight; {cfg.flight_msgs} msgs per rep), "
        f"median of {cfg.reps} reps"
    )
    out(
        f"{'case':34} {'p50 us':>8} {'p99 us':>8} {'calls/s':>8} {'p50/floor':>9}"
        f" {'msgs/s':>8} {'/floor':>7} {'/raw a->a':>9}"
    )
    for key, case in cases.items():
        if case.group != "rpc" or key not in results:
            continue
        floor = case.floor or key
        p50 = _median(results[key], "p50_us")
        p99 = _median(results[key], "p99_us")
        seq = _median(results[key], "seq_per_s")
        flight = _median(results[key], "flight_per_s")
        r_lat = _ratio(results, key, floor, "p50_us") if floor in results else None
        r_flight = _ratio(results, key, floor, "flight_per_s") if floor in results else None
        r_aa = _ratio(results, key, "raw a->a", "flight_per_s") if "raw a->a" in results else None
        out(
            f"{case.label:34} {_fmt(p50):>8} {_fmt(p99):>8} {_fmt_rate(seq):>8}"
            f" {_fmt_x(r_lat):>9} {_fmt_rate(flight):>8} {_fmt_x(r_flight):>7}"
            f" {_fmt_x(r_aa):>9}{row_failed(key)}"
        )
        summary["cases"][key] = {
            "label": case.label,
            "p50_us": p50,
            "p99_us": p99,
            "seq_per_s": seq,
            "flight_per_s": flight,
            "p50_over_floor": r_lat,
            "flight_over_floor": r_flight,
            "floor": floor,
        }
    out("  floor = raw floor of the same client->server pairing (same-loop rows: the")
    out("  cross-thread raw floor of that backend). p50/floor: lower is better;")
    out("  msgs/s ratios: higher is better.")
    out("")

    out(f"Task and broadcast throughput ({cfg.window} tasks in flight), median of {cfg.reps} reps")
    out(f"{'case':44} {'msgs/s':>9} {'/raw a->a':>10}  notes")
    for key, case in cases.items():
        if case.group not in ("task", "bcast") or key not in results:
            continue
        rate = _median(results[key], "flight_per_s")
        r = _ratio(results, key, "raw a->a", "flight_per_s") if "raw a->a" in results else None
        note = ""
        samples = [s for s in results[key] if s is not None]
        if case.group == "task" and samples:
            note = "per consumer " + "/".join(str(c) for c in samples[-1]["per_consumer"])
        elif samples:
            note = f"deliveries/s; {samples[-1]['sends']} sends, {samples[-1]['deliveries']} deliveries"
        out(f"{case.label:44} {_fmt_rate(rate):>9} {_fmt_x(r):>10}  {note}{row_failed(key)}")
        summary["cases"][key] = {"label": case.label, "flight_per_s": rate, "over_raw_aa": r}
    out("  tasks: task_send_future, window of 1000, consumers on their own threads.")
    out("  broadcasts: await broadcast_send() (broadcast_send_nowait() where marked _nowait) from")
    out("  the client loop; all subscribers on one other thread's communicator; timed until an RPC")
    out("  queued behind them returns the delivery count. Filtered: BroadcastFilter(sub,")
    out("  subject='x.*'); 'all match' sends subject 'x.a', 'half match' alternates 'x.a'/'y.a'.")
    out("")

    plumpy_keys = [k for k, c in cases.items() if c.group == "plumpy" and k in results]
    if not plumpy_keys:
        out("plumpy/kiwipy not installed: skipped")
    else:
        out(
            f"plumpy {_version('plumpy')} LoopCommunicator over kiwipy {_version('kiwipy')}"
            f" LocalCommunicator (a->a), median of {cfg.reps} reps"
        )
        out(
            f"{'case':44} {'p50 us':>8} {'p99 us':>8} {'calls/s':>8} {'msgs/s':>8}"
            f" {'ours/theirs seq':>15} {'ours/theirs flight':>18}"
        )
        for key in plumpy_keys:
            p50 = _median(results[key], "p50_us")
            p99 = _median(results[key], "p99_us")
            seq = _median(results[key], "seq_per_s")
            flight = _median(results[key], "flight_per_s")
            r_seq = _ratio(results, "rpc a->a", key, "seq_per_s")
            r_flight = _ratio(results, "rpc a->a", key, "flight_per_s")
            out(
                f"{cases[key].label:44} {_fmt(p50):>8} {_fmt(p99):>8} {_fmt_rate(seq):>8}"
                f" {_fmt_rate(flight):>8} {_fmt_x(r_seq):>15} {_fmt_x(r_flight):>18}"
                f"{row_failed(key)}"
            )
            summary["cases"][key] = {
                "label": cases[key].label,
                "p50_us": p50,
                "p99_us": p99,
                "seq_per_s": seq,
                "flight_per_s": flight,
                "ours_over_theirs_seq": r_seq,
                "ours_over_theirs_flight": r_flight,
            }
        out(
            f"  (plumpy client: asyncio loop awaiting asyncio.wrap_future(unwrap_kiwi_future(f));"
            f" {cfg.plumpy_seq} sequential + {cfg.plumpy_flight} windowed calls per rep)"
        )
        if probe is not None:
            out(
                f"  plumpy without the kick: {probe['stalled']}/{probe['calls']} sequential calls"
                f" stalled > {probe['patience_ms']:.0f} ms (callback queued with a non-thread-safe"
                f" call_soon; a real client would hang until some unrelated wakeup)"
            )
            summary["plumpy_stall_probe"] = probe
    out("")

    # -- goals
    out("Goals")
    goals: list[tuple[str, float | None, str, bool | None]] = []
    r = _ratio(results, "rpc a->a", "raw a->a", "p50_us") if "raw a->a" in results else None
    goals.append(
        (
            "cross-thread RPC a->a p50 <= 2x raw floor p50",
            r,
            _fmt_x(r),
            None if r is None else r <= 2,
        )
    )
    for metric, how in (
        ("flight_per_s", "rpc_send_future window"),
        ("flight_tasks_per_s", "1000 tasks awaiting rpc_send"),
    ):
        rate = _median(results.get("rpc a->a", []), metric)
        goals.append(
            (
                f">= 150,000 msgs/s across threads, 1000 in flight (a->a), {how}",
                rate,
                f"{_fmt_rate(rate)} msgs/s",
                None if rate is None else rate >= 150_000,
            )
        )
    if plumpy_keys:
        for metric, what in (("seq_per_s", "sequential"), ("flight_per_s", "1000 in flight")):
            r = _ratio(results, "rpc a->a", plumpy_keys, metric)
            goals.append(
                (
                    f">= 5x plumpy LoopCommunicator RPC rate, {what}",
                    r,
                    _fmt_x(r),
                    None if r is None else r >= 5,
                )
            )
    else:
        goals.append((">= 5x plumpy LoopCommunicator RPC rate", None, "skipped", None))
    for name, value, shown, ok in goals:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        out(f"  [{verdict}] {name}: {shown}")
        summary["goals"].append({"goal": name, "value": value, "verdict": verdict})
    if plumpy_keys:
        out("  (plumpy ratios use, per rep, the faster of its sync/async subscriber runs)")
    return "\n".join(lines), summary


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def environment() -> dict[str, Any]:
    cpu = "-"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "anyio": _version("anyio"),
        "trio": _version("trio"),
        "plumpy": _version("plumpy"),
        "kiwipy": _version("kiwipy"),
    }


async def _same_loop_flight(kind: str, cfg: Config, prof: cProfile.Profile) -> float:
    broker = MemoryBroker()
    async with (
        LoopCommunicator(broker, name="server") as server,
        LoopCommunicator(broker, name="client") as client,
    ):
        if kind == "rpc":
            await server.add_rpc_subscriber(_inc, "bench-rpc")

            def send(i: int) -> Any:
                return client.rpc_send_future("bench-rpc", i)
        else:
            await server.add_task_subscriber(_inc)
            send = client.task_send_future
        pending: deque[Any] = deque()
        with anyio.fail_after(CASE_TIMEOUT):
            prof.enable()
            t_start = perf_counter()
            for i in range(cfg.flight_msgs):
                if len(pending) >= cfg.window:
                    await _settle(pending.popleft())
                pending.append(send(i))
            while pending:
                await _settle(pending.popleft())
            elapsed = perf_counter() - t_start
            prof.disable()
    return cfg.flight_msgs / elapsed


def profile_flight(cfg: Config, top: int = 20) -> str:
    """cProfile the 1000-in-flight RPC and task paths.

    First on one loop (one thread: the per-call costs are undistorted), then the a->a RPC
    across threads with a profiler in each thread. cProfile charges the time a thread waits
    for the GIL to whatever function it was in, so the cross-thread tottimes are inflated;
    read them for call counts and relative shares.
    """
    buf = io.StringIO()

    def dump(title: str, prof: cProfile.Profile) -> None:
        buf.write(f"\n==== {title}, by tottime ====\n")
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)

    for kind in ("rpc", "task"):
        prof = cProfile.Profile()
        rate = anyio.run(_same_loop_flight, kind, cfg, prof, backend="asyncio")
        buf.write(
            f"\n{kind}, both ends on one asyncio loop, {cfg.window} in flight, "
            f"{cfg.flight_msgs} msgs: {_fmt_rate(rate)} msgs/s under cProfile\n"
        )
        dump(f"same-loop {kind}", prof)

    client_prof = cProfile.Profile()
    server_prof = cProfile.Profile()
    client_prof.enable()
    try:
        result = case_rpc_cross("asyncio", "asyncio", cfg, seq=False, server_profile=server_prof)
    finally:
        client_prof.disable()
    buf.write(
        f"\nrpc a->a across threads, {cfg.flight_msgs} msgs: "
        f"{_fmt_rate(result['flight_per_s'])} msgs/s under cProfile (GIL waits inflate tottime)\n"
    )
    dump("cross-thread rpc, client thread", client_prof)
    dump("cross-thread rpc, server thread", server_prof)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_broker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 reps (< 20 s)")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    parser.add_argument("--reps", type=int, help="override the number of repetitions")
    parser.add_argument("--only", metavar="SUBSTR", help="run only cases whose key contains this")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the table, cProfile the 1000-in-flight RPC and task paths",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.reps:
        cfg = Config(**{**asdict(cfg), "reps": args.reps})

    if args.profile:
        print(profile_flight(cfg))
        return 0

    env = environment()
    print(
        f"plumio broker benchmark: {env['date']}; Python {env['python']}; {env['cpus']} CPUs"
        f" ({env['cpu_model']}); anyio {env['anyio']}; trio {env['trio']}",
        flush=True,
    )
    t0 = perf_counter()
    results = run_all(cfg, args.only)
    probe = None
    if kiwipy is not None and (not args.only or "plumpy" in args.only):
        try:
            probe = plumpy_stall_probe(calls=200 if not args.quick else 50)
        except Exception as exc:
            print(f"  ERROR in plumpy stall probe: {exc!r}", file=sys.stderr)
    table, summary = report(cfg, results, probe)
    total = perf_counter() - t0
    print(f"\n{table}\n\ntotal {total:.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "environment": env,
                    "config": asdict(cfg),
                    "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
                    "seconds": total,
                    "summary": summary,
                    "samples": results,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
