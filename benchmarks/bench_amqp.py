"""plumio's ``AmqpCommunicator`` against kiwipy's ``RmqThreadCommunicator`` on one RabbitMQ.

Run ``python -m benchmarks.bench_amqp`` (``--quick`` for a smoke run under 20 s, ``--url`` for
another broker; ``$PLUMIO_AMQP_URL`` is honoured too). Needs a RabbitMQ server
(``bash .ci/rabbitmq.sh`` starts one on 127.0.0.1) and kiwipy (``pip install -e ".[bench]"``).

Cases, each measured for every client below, in the same run and on the same broker:

- **sequential RPC**: one call in flight; p50 and p99 of the round trip;
- **RPC throughput**: calls/s with 500 outstanding (a sliding window), and the p50/p99 of
  each call's round trip (send to reply) under that load;
- **task throughput**: tasks/s with 500 outstanding, each acknowledged and replied to (send,
  consume, ack, reply, all of it inside the timed window).

Clients:

- ``kiwipy RmqThreadCommunicator``: kiwipy 0.9's blocking API from the main thread (futures
  with ``result(timeout)``), JSON encoder/decoder, fresh exchange and queue names per run,
  ``testing_mode=True`` (so they vanish afterwards); its subscribers on a second
  ``RmqThreadCommunicator`` (they run on that communicator's own thread);
- ``ours, asyncio client``: an ``AmqpCommunicator`` opened on the main thread's asyncio loop,
  awaiting ``rpc_send``/``task_send`` (500 tasks of the loop keep 500 calls outstanding);
- ``ours, plain thread (futures)``: the like-for-like comparison with kiwipy's blocking API:
  the ``AmqpCommunicator`` is opened on a helper thread's loop, and the main (plain) thread
  calls ``rpc_send_future``/``task_send_future`` and blocks on ``result(timeout)``.

Our subscribers (plain functions ``x + 1``) run on an ``AmqpCommunicator`` opened by another
thread's asyncio loop, in a fresh namespace per run (``queue_expires`` cleans up after it).

The cases are interleaved repetition by repetition (kiwipy, then ours), so a burst of noise
from the shared machine hits both; ratios are taken within a repetition and the medians
reported. The goal printed at the end is "at least 3x kiwipy on both RPC and tasks": RPC
passes when the sequential p50 *and* the 500-outstanding throughput are both at least 3x
better, tasks when the task throughput is. Every wait is bounded (``fail_after``,
``Future.result(timeout)``, thread joins with timeouts), so a stuck broker makes the run fail
with an error instead of hanging.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import statistics
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import anyio

from broker import AmqpCommunicator

DEFAULT_URL = os.environ.get("PLUMIO_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
WINDOW = 500
TIMEOUT = 30.0  # bound of any single wait, seconds
GOAL = 3.0

KIWIPY = "kiwipy RmqThreadCommunicator"
OURS_ASYNC = "ours, asyncio client"
OURS_THREAD = "ours, plain thread (futures)"
RAW = "raw aio-pika floor"
CLIENTS = (KIWIPY, OURS_ASYNC, OURS_THREAD, RAW)


@dataclass(frozen=True)
class Sizes:
    reps: int
    sequential: int
    rpcs: int
    tasks: int
    budget: float  # seconds; no repetition is started that would end past it


FULL = Sizes(reps=3, sequential=300, rpcs=2000, tasks=1500, budget=110.0)
QUICK = Sizes(reps=1, sequential=60, rpcs=600, tasks=600, budget=18.0)


@dataclass
class Sample:
    """One repetition of one client."""

    seq_us: list[float] = field(default_factory=list)
    load_us: list[float] = field(default_factory=list)  # RPC round trips, 500 outstanding
    rpc_rate: float = 0.0
    task_rate: float = 0.0

    @property
    def p50(self) -> float:
        return percentile(self.seq_us, 50)

    @property
    def p99(self) -> float:
        return percentile(self.seq_us, 99)

    @property
    def load_p50(self) -> float:
        return percentile(self.load_us, 50)

    @property
    def load_p99(self) -> float:
        return percentile(self.load_us, 99)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def windowed(
    send: Callable[[int], Future[Any]],
    total: int,
    check: Callable[[int, Any], None],
    latencies: list[float] | None = None,
) -> float:
    """Keep ``WINDOW`` futures outstanding until ``total`` resolved; return per second.

    With ``latencies``, each call's round trip (send to its future's completion, stamped by
    a done callback in the resolving thread) is appended to it, in microseconds.
    """
    window: collections.deque[tuple[int, Future[Any]]] = collections.deque()
    clock = time.perf_counter
    start = clock()
    for i in range(total):
        if len(window) >= WINDOW:
            j, future = window.popleft()
            check(j, future.result(TIMEOUT))
        sent = clock()
        future = send(i)
        if latencies is not None:
            future.add_done_callback(
                lambda _f, sent=sent: latencies.append((clock() - sent) * 1e6)
            )
        window.append((i, future))
    while window:
        j, future = window.popleft()
        check(j, future.result(TIMEOUT))
    return total / (time.perf_counter() - start)


def expect_plus_one(i: int, value: Any) -> None:
    if value != i + 1:
        raise AssertionError(f"call {i} returned {value!r}, expected {i + 1}")


# -- ours ------------------------------------------------------------------------------------


def ours(url: str, namespace: str, name: str) -> AmqpCommunicator:
    return AmqpCommunicator(url, namespace=namespace, name=name, queue_expires=60)


class LoopThread:
    """A thread running an asyncio loop that opens an ``AmqpCommunicator`` and keeps it open
    until :meth:`stop`; ``setup(comm)`` runs on that loop first (e.g. to add subscribers)."""

    def __init__(self, url: str, namespace: str, name: str, setup: Callable[[Any], Any]) -> None:
        self._url, self._namespace, self._name, self._setup = url, namespace, name, setup
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.comm: AmqpCommunicator | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> AmqpCommunicator:
        self._thread.start()
        if not self._ready.wait(TIMEOUT):
            raise TimeoutError(f"{self._name} did not open within {TIMEOUT} s")
        if self._error is not None:
            raise self._error
        assert self.comm is not None
        return self.comm

    def _main(self) -> None:
        async def main() -> None:
            async with ours(self._url, self._namespace, self._name) as comm:
                await self._setup(comm)
                self.comm = comm
                self._ready.set()
                await anyio.to_thread.run_sync(self._stop.wait)

        try:
            anyio.run(main, backend="asyncio")
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)


async def serve(comm: AmqpCommunicator) -> None:
    await comm.add_rpc_subscriber(lambda _comm, msg: msg + 1, "bench-server")
    await comm.add_task_subscriber(lambda _comm, task: task + 1)


async def no_setup(_comm: AmqpCommunicator) -> None:
    pass


def run_ours_async(url: str, namespace: str, sizes: Sizes) -> Sample:
    sample = Sample()

    async def main() -> None:
        with anyio.fail_after(3 * TIMEOUT):
            async with ours(url, namespace, "bench-client-async") as comm:
                for i in range(10):  # warm up: connection, queues, first publish
                    await comm.rpc_send("bench-server", i)
                    await comm.task_send(i)
                clock = time.perf_counter
                for i in range(sizes.sequential):
                    start = clock()
                    value = await comm.rpc_send("bench-server", i)
                    sample.seq_us.append((clock() - start) * 1e6)
                    expect_plus_one(i, value)

                async def rpc_worker(k: int) -> None:
                    for i in range(k, sizes.rpcs, WINDOW):
                        sent = clock()
                        value = await comm.rpc_send("bench-server", i)
                        sample.load_us.append((clock() - sent) * 1e6)
                        expect_plus_one(i, value)

                async def task_worker(k: int) -> None:
                    for i in range(k, sizes.tasks, WINDOW):
                        expect_plus_one(i, await comm.task_send(i))

                for worker, total, attr in (
                    (rpc_worker, sizes.rpcs, "rpc_rate"),
                    (task_worker, sizes.tasks, "task_rate"),
                ):
                    start = clock()
                    async with anyio.create_task_group() as tg:
                        for k in range(min(WINDOW, total)):
                            tg.start_soon(worker, k)
                    setattr(sample, attr, total / (clock() - start))

    anyio.run(main, backend="asyncio")
    return sample


def run_ours_thread(url: str, namespace: str, sizes: Sizes) -> Sample:
    sample = Sample()
    loop_thread = LoopThread(url, namespace, "bench-client-thread", no_setup)
    comm = loop_thread.start()
    try:
        for i in range(10):
            comm.rpc_send_future("bench-server", i).result(TIMEOUT)
            comm.task_send_future(i).result(TIMEOUT)
        clock = time.perf_counter
        for i in range(sizes.sequential):
            start = clock()
            value = comm.rpc_send_future("bench-server", i).result(TIMEOUT)
            sample.seq_us.append((clock() - start) * 1e6)
            expect_plus_one(i, value)
        sample.rpc_rate = windowed(
            lambda i: comm.rpc_send_future("bench-server", i),
            sizes.rpcs,
            expect_plus_one,
            sample.load_us,
        )
        sample.task_rate = windowed(comm.task_send_future, sizes.tasks, expect_plus_one)
    finally:
        loop_thread.stop()
    return sample


# -- the floor: raw aio-pika, no plumio --------------------------------------------------------


def run_raw_floor(url: str, tag: str, sizes: Sizes) -> Sample:
    """RPC over bare aio-pika on one asyncio loop: two connections (client, server), requests
    to a server queue and replies to an exclusive reply queue, both published with publisher
    confirms awaited (as kiwipy publishes; plumio confirms tasks only, its RPC requests and
    replies go unconfirmed since the reply proves delivery). No envelope, no thread hop: what
    RabbitMQ and aio-pika cost here. Tasks are not measured (no ack-on-completion logic to
    compare)."""
    import aio_pika

    sample = Sample()

    async def main() -> None:
        async with (
            await aio_pika.connect(url) as server_conn,
            await aio_pika.connect(url) as client_conn,
        ):
            s_pub = await server_conn.channel(publisher_confirms=True)
            s_sub = await server_conn.channel()
            c_pub = await client_conn.channel(publisher_confirms=True)
            c_sub = await client_conn.channel()
            requests = await s_sub.declare_queue(f"plumio-bench-{tag}.raw", exclusive=True)
            replies = await c_sub.declare_queue(exclusive=True)
            pending: dict[str, asyncio.Future[Any]] = {}

            async def on_request(message: Any) -> None:
                await message.ack()
                reply = aio_pika.Message(
                    str(int(message.body) + 1).encode(), correlation_id=message.correlation_id
                )
                await s_pub.default_exchange.publish(reply, message.reply_to)

            async def on_reply(message: Any) -> None:
                await message.ack()
                future = pending.pop(message.correlation_id, None)
                if future is not None and not future.done():
                    future.set_result(int(message.body))

            await requests.consume(on_request)
            await replies.consume(on_reply)
            loop = asyncio.get_running_loop()

            async def call(i: int) -> Any:
                correlation_id = uuid.uuid4().hex
                future = pending[correlation_id] = loop.create_future()
                request = aio_pika.Message(
                    str(i).encode(), correlation_id=correlation_id, reply_to=replies.name
                )
                await c_pub.default_exchange.publish(request, requests.name, mandatory=True)
                return await future

            async with asyncio.timeout(3 * TIMEOUT):
                for i in range(10):
                    await call(i)
                clock = time.perf_counter
                for i in range(sizes.sequential):
                    start = clock()
                    value = await call(i)
                    sample.seq_us.append((clock() - start) * 1e6)
                    expect_plus_one(i, value)

                async def worker(k: int) -> None:
                    for i in range(k, sizes.rpcs, WINDOW):
                        sent = clock()
                        value = await call(i)
                        sample.load_us.append((clock() - sent) * 1e6)
                        expect_plus_one(i, value)

                start = clock()
                await asyncio.gather(*(worker(k) for k in range(min(WINDOW, sizes.rpcs))))
                sample.rpc_rate = sizes.rpcs / (clock() - start)
                sample.task_rate = float("nan")

    asyncio.run(main())
    return sample


# -- kiwipy ----------------------------------------------------------------------------------


def json_encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def json_decode(data: bytes) -> Any:
    return json.loads(data)


def kiwipy_connect(url: str, tag: str) -> Any:
    from kiwipy.rmq import RmqThreadCommunicator

    return RmqThreadCommunicator.connect(
        connection_params={"url": url},
        message_exchange=f"plumio-bench-{tag}.messages",
        task_exchange=f"plumio-bench-{tag}.tasks",
        task_queue=f"plumio-bench-{tag}.queue",
        testing_mode=True,
        encoder=json_encode,
        decoder=json_decode,
    )


def unwrap(value: Any) -> Any:
    """kiwipy may hand back nested futures (one level per ``pending`` reply)."""
    while isinstance(value, Future):
        value = value.result(TIMEOUT)
    return value


def run_kiwipy(client: Any, sizes: Sizes) -> Sample:
    sample = Sample()
    for i in range(10):
        unwrap(client.rpc_send("bench-server", i).result(TIMEOUT))
        unwrap(client.task_send(i).result(TIMEOUT))
    clock = time.perf_counter
    for i in range(sizes.sequential):
        start = clock()
        value = unwrap(client.rpc_send("bench-server", i).result(TIMEOUT))
        sample.seq_us.append((clock() - start) * 1e6)
        expect_plus_one(i, value)

    def check(i: int, value: Any) -> None:
        expect_plus_one(i, unwrap(value))

    sample.rpc_rate = windowed(
        lambda i: client.rpc_send("bench-server", i), sizes.rpcs, check, sample.load_us
    )
    sample.task_rate = windowed(client.task_send, sizes.tasks, check)
    return sample


# -- report ----------------------------------------------------------------------------------


def fmt_rate(rate: float) -> str:
    return f"{rate / 1000:.2f}k" if rate >= 1000 else f"{rate:.0f}"


def report(samples: dict[str, list[Sample]], sizes: Sizes, elapsed: float) -> bool:
    print()
    print(
        f"RabbitMQ round trips, median of {len(samples[KIWIPY])} reps: sequential RPC "
        f"({sizes.sequential} calls), RPC and task throughput with {WINDOW} outstanding "
        f"({sizes.rpcs} calls, {sizes.tasks} tasks, each acked and replied)"
    )
    print(
        f"{'client':<30} {'seq p50 ms':>10} {'seq p99 ms':>10} {'rpc/s':>8} {'tasks/s':>8}"
        f" {'x seq p50':>9} {'x rpc/s':>8} {'x tasks/s':>9}"
    )
    load_lines = []
    ok = True
    verdicts = []
    medians: dict[str, float] = {}
    for name in CLIENTS:
        reps = samples[name]
        p50 = statistics.median(s.p50 for s in reps) / 1000
        medians[name] = p50
        p99 = statistics.median(s.p99 for s in reps) / 1000
        rpc = statistics.median(s.rpc_rate for s in reps)
        tasks = statistics.median(s.task_rate for s in reps)
        if name == KIWIPY:
            ratios = f" {'1.00x':>10} {'1.00x':>8} {'1.00x':>9}"
        else:
            pairs = list(zip(samples[KIWIPY], reps, strict=True))
            seq_x = statistics.median(k.p50 / o.p50 for k, o in pairs)
            rpc_x = statistics.median(o.rpc_rate / k.rpc_rate for k, o in pairs)
            if name == RAW:
                task_x = float("nan")
                ratios = f" {seq_x:>9.2f}x {rpc_x:>7.2f}x {'n/a':>9}"
            else:
                task_x = statistics.median(o.task_rate / k.task_rate for k, o in pairs)
                ratios = f" {seq_x:>9.2f}x {rpc_x:>7.2f}x {task_x:>8.2f}x"
                verdicts.append((name, seq_x, rpc_x, task_x))
                ok = ok and seq_x >= GOAL and rpc_x >= GOAL and task_x >= GOAL
        tasks_text = "n/a" if name == RAW else fmt_rate(tasks)
        print(f"{name:<30} {p50:>10.2f} {p99:>10.2f} {fmt_rate(rpc):>8} {tasks_text:>8}{ratios}")
        load_p50 = statistics.median(s.load_p50 for s in reps) / 1000
        load_p99 = statistics.median(s.load_p99 for s in reps) / 1000
        # Little's law: calls actually in flight = rate x mean round trip
        in_flight = statistics.median(
            s.rpc_rate * statistics.fmean(s.load_us) / 1e6 for s in reps if s.load_us
        )
        load_lines.append(f"{name:<30} {load_p50:>10.2f} {load_p99:>10.2f} {in_flight:>10.0f}")
    print()
    print(f"RPC round trip of each call with {WINDOW} outstanding (send to reply)")
    print(f"{'client':<30} {'p50 ms':>10} {'p99 ms':>10} {'in flight':>10}")
    for line in load_lines:
        print(line)
    print(
        "  in flight = rate x mean round trip (Little's law): how many calls really were\n"
        "  outstanding. A client whose send call itself blocks (kiwipy's rpc_send waits on its\n"
        "  communication thread) keeps fewer calls in flight than the window; its round trips\n"
        "  are then those of a lighter load, and the rates are what compare like for like."
    )
    print("  x = vs kiwipy in the same repetition (higher is better): kiwipy p50 / p50,")
    print("  rate / kiwipy rate; medians over repetitions. The raw aio-pika floor is RabbitMQ")
    print("  alone (one loop, no envelope, no thread hop), for scale only.")
    print(
        f"  3x kiwipy's sequential p50 means <= {medians[KIWIPY] / GOAL:.2f} ms; the raw floor "
        f"is {medians[RAW]:.2f} ms, ours (asyncio client) {medians[OURS_ASYNC]:.2f} ms "
        f"({medians[OURS_ASYNC] / medians[RAW]:.2f}x the floor)."
    )
    print()

    def mark(ratio: float) -> str:
        return f"{ratio:.2f}x {'PASS' if ratio >= GOAL else 'FAIL'}"

    for name, seq_x, rpc_x, task_x in verdicts:
        rpc_ok = seq_x >= GOAL and rpc_x >= GOAL
        print(
            f"goal >= {GOAL:g}x kiwipy, {name}: RPC {'PASS' if rpc_ok else 'FAIL'} "
            f"(seq p50 {mark(seq_x)}, rpc/s {mark(rpc_x)}), tasks {mark(task_x)}"
        )
    print(f"overall: {'PASS' if ok else 'FAIL'} ({elapsed:.1f} s)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 rep (< 20 s)")
    parser.add_argument("--url", default=DEFAULT_URL, help="the broker (default %(default)s)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    try:
        import kiwipy  # noqa: F401
    except ImportError:
        print("kiwipy is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2

    tag = uuid.uuid4().hex[:10]
    namespace = f"plumio-bench-{tag}"
    print(
        f"bench_amqp: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, broker {args.url.split('@')[-1]}, namespace {namespace}, "
        f"{'quick' if args.quick else 'full'} sizes {sizes}"
    )
    started = time.perf_counter()
    samples: dict[str, list[Sample]] = {name: [] for name in CLIENTS}
    server = LoopThread(args.url, namespace, "bench-server", serve)
    kiwi_server = kiwi_client = None
    try:
        server.start()
        kiwi_server = kiwipy_connect(args.url, tag)
        kiwi_server.add_rpc_subscriber(lambda _comm, msg: msg + 1, "bench-server")
        kiwi_server.add_task_subscriber(lambda _comm, task: task + 1)
        kiwi_client = kiwipy_connect(args.url, tag)
        for rep in range(sizes.reps):
            for name in CLIENTS:
                begin = time.perf_counter()
                if name == KIWIPY:
                    sample = run_kiwipy(kiwi_client, sizes)
                elif name == OURS_ASYNC:
                    sample = run_ours_async(args.url, namespace, sizes)
                elif name == OURS_THREAD:
                    sample = run_ours_thread(args.url, namespace, sizes)
                else:
                    sample = run_raw_floor(args.url, tag, sizes)
                samples[name].append(sample)
                print(
                    f"  rep {rep + 1}/{sizes.reps} {name:<30} seq p50 {sample.p50 / 1000:7.2f} ms"
                    f"  rpc {fmt_rate(sample.rpc_rate):>7}/s  tasks {fmt_rate(sample.task_rate):>7}/s"
                    f"  ({time.perf_counter() - begin:.1f} s)",
                    flush=True,
                )
            spent = time.perf_counter() - started
            if rep + 1 < sizes.reps and spent * (rep + 2) / (rep + 1) > sizes.budget:
                print(
                    f"  (stopping after {rep + 1} reps: another would end past the "
                    f"{sizes.budget:.0f} s budget; the machine is slow or loaded)"
                )
                break
    except Exception:
        traceback.print_exc()
        print("FAIL: a case errored (see above)")
        return 1
    finally:
        for comm in (kiwi_client, kiwi_server):
            if comm is not None:
                try:
                    comm.close()
                except Exception as exc:  # pragma: no cover - best effort cleanup
                    print(f"(closing a kiwipy communicator failed: {exc!r})", file=sys.stderr)
        server.stop()
    ok = report(samples, sizes, time.perf_counter() - started)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
