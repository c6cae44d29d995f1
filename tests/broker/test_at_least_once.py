"""At-least-once delivery under consumer crashes, with real threads on asyncio and trio.

Several consumer threads each run their own event loop (``anyio.run``, asyncio or trio, mixed)
with one :class:`LoopCommunicator` and an async task subscriber. Each worker "dies mid-task":
after a random number of deliveries, one handler asks the worker's main task to kill the loop
(cancel its scope, or raise out of the ``async with comm`` body) while it and its siblings are
still working, and a replacement worker thread takes its place. The test's own loop sends every
task and checks that each one completes with exactly one, correct, reply; that tasks really were
redelivered; and that the broker ends empty.

All random decisions come from a seeded :class:`random.Random`; the seed is in every assertion
message. Thread scheduling still varies between runs, so a seed pins the decisions, not the
interleaving.
"""

from __future__ import annotations

import collections
import concurrent.futures
import random
import threading
from collections.abc import Awaitable
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from broker import (
    DEFAULT_QUEUE,
    Communicator,
    DeadLetter,
    DeadLetteredError,
    LoopCommunicator,
    MemoryBroker,
    wait_future,
)

BACKENDS = ("asyncio", "trio")
#: every wait on another thread is bounded by this, so a deadlock fails instead of hanging
TIMEOUT = 30


def reply_for(task: dict[str, int]) -> dict[str, int]:
    """The reply a correct consumer sends for ``task`` (JSON-safe for strict mode)."""
    n = task["n"]
    return {"n": n, "square": n * n}


class WorkerDied(Exception):
    """Raised out of a worker's ``async with comm`` body to kill its loop."""


class CountingFuture(concurrent.futures.Future[Any]):
    """A reply future that counts how often the broker tries to resolve it.

    It is what ``task_send_future`` hands the broker, plus a count: a second resolution
    would be swallowed by the broker's ``resolve()`` and go unnoticed otherwise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resolutions = 0
        self._count_lock = threading.Lock()

    def _count(self) -> None:
        with self._count_lock:
            self.resolutions += 1

    def set_result(self, result: Any) -> None:
        self._count()
        super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        self._count()
        super().set_exception(exception)


@attrs.define
class Ledger:
    """What the consumer threads observed, shared between them under a lock."""

    lock: threading.Lock = attrs.field(factory=threading.Lock)
    seen: collections.Counter[int] = attrs.field(factory=collections.Counter)
    completed: collections.Counter[int] = attrs.field(factory=collections.Counter)
    deaths: int = 0
    workers: list[WorkerSpec] = attrs.field(factory=list)  # the workers that ran
    errors: list[BaseException] = attrs.field(factory=list)

    def saw(self, n: int) -> None:
        with self.lock:
            self.seen[n] += 1

    def finished(self, n: int) -> None:
        with self.lock:
            self.completed[n] += 1


@attrs.frozen
class WorkerSpec:
    """One worker's life, decided up front by the test's seeded generator."""

    name: str
    backend: str
    prefetch: int
    die_after: int  # the delivery (1-based) whose handler kills the loop
    die_by_raising: bool  # raise out of ``async with comm`` rather than cancel a scope
    seed: int


async def consumer_worker(
    spec: WorkerSpec, broker: MemoryBroker, ledger: Ledger, finished: threading.Event
) -> None:
    rng = random.Random(spec.seed)
    dying = anyio.Event()  # a handler decided the loop dies now
    wake = anyio.Event()  # dying, or the test said stop
    deliveries = 0

    async def work(steps: int) -> None:
        for _ in range(steps):
            # "work" that yields to the loop, so sibling handlers and the dispatcher interleave
            await anyio.lowlevel.checkpoint()

    async def handle(comm: Communicator, task: dict[str, int]) -> dict[str, int]:
        nonlocal deliveries
        n = task["n"]
        ledger.saw(n)
        deliveries += 1
        if deliveries == spec.die_after:
            await work(rng.randrange(4))
            dying.set()
            wake.set()
            # Die holding this task: the loop is torn down around us, we never reply.
            await anyio.sleep_forever()
        await work(rng.randrange(6))
        ledger.finished(n)
        return reply_for(task)

    def on_broadcast(comm: Communicator, body: Any, *_: Any) -> None:
        if body == "stop":
            wake.set()

    with anyio.fail_after(TIMEOUT), anyio.CancelScope() as scope:
        async with LoopCommunicator(broker, name=spec.name) as comm:
            # Subscribe to "stop" before looking at the flag: either we see the flag set, or
            # the test's broadcast (sent after setting it) reaches us.
            await comm.add_broadcast_subscriber(on_broadcast)
            if finished.is_set():
                return
            await comm.add_task_subscriber(handle, prefetch=spec.prefetch)
            await wake.wait()
            if not dying.is_set():
                return  # stopped: every task is done
            with ledger.lock:
                ledger.deaths += 1
            if spec.die_by_raising:
                raise WorkerDied(spec.name)
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # the cancellation lands here
            raise AssertionError("unreachable: the scope was cancelled")


def run_worker(
    spec: WorkerSpec, broker: MemoryBroker, ledger: Ledger, finished: threading.Event
) -> None:
    """Thread target: one worker's event loop, from start to death (or the final stop)."""
    with ledger.lock:
        ledger.workers.append(spec)
    try:
        anyio.run(consumer_worker, spec, broker, ledger, finished, backend=spec.backend)
    except* WorkerDied:
        pass
    except* BaseException as group:
        with ledger.lock:
            ledger.errors.append(group)


async def supervise_slot(
    slot: int,
    rng: random.Random,
    broker: MemoryBroker,
    ledger: Ledger,
    finished: threading.Event,
) -> None:
    """Keep one consumer thread alive: whenever it dies, start a replacement thread."""
    generation = 0
    while not finished.is_set():
        spec = WorkerSpec(
            name=f"slot{slot}-gen{generation}",
            backend=BACKENDS[(slot + generation) % 2],  # mixed, and alternating per slot
            prefetch=5,
            die_after=rng.randint(1, 40),
            die_by_raising=rng.random() < 0.5,
            seed=rng.randrange(2**32),
        )
        generation += 1
        thread = threading.Thread(
            target=run_worker, args=(spec, broker, ledger, finished), name=spec.name
        )
        thread.start()
        await anyio.to_thread.run_sync(thread.join, abandon_on_cancel=True)


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
@pytest.mark.parametrize("seed", [20240611, 7])
async def test_every_task_gets_one_correct_reply_while_consumers_keep_dying(
    strict: bool, seed: int
) -> None:
    n_tasks, n_slots = 1000, 4
    rng = random.Random(seed)
    why = f"(seed={seed}, strict={strict})"
    broker = MemoryBroker(strict=strict, max_redeliveries=10_000)
    ledger = Ledger()
    finished = threading.Event()
    tasks = [{"n": n} for n in range(n_tasks)]

    with anyio.fail_after(TIMEOUT):
        async with LoopCommunicator(broker, name="sender") as comm, anyio.create_task_group() as tg:
            for slot in range(n_slots):
                tg.start_soon(
                    supervise_slot,
                    slot,
                    random.Random(rng.randrange(2**32)),
                    broker,
                    ledger,
                    finished,
                )
            # Half through the public future API, half with a counting reply sink.
            futures: list[concurrent.futures.Future[Any]] = []
            for task in tasks:
                if task["n"] % 2:
                    counting = CountingFuture()
                    broker.send_task(broker.encode(task, "task"), counting, None)
                    futures.append(counting)
                else:
                    futures.append(comm.task_send_future(task))
                if rng.random() < 0.05:
                    # let consumers start on the first tasks while we still send
                    await anyio.lowlevel.checkpoint()
            replies = [await wait_future(f) for f in futures]
            finished.set()
            await comm.broadcast_send("stop")
        # every supervisor has joined its last thread

    assert not ledger.errors, f"worker threads failed {why}: {ledger.errors!r}"
    assert replies == [reply_for(t) for t in tasks], f"wrong replies {why}"
    resolutions = [f.resolutions for f in futures if isinstance(f, CountingFuture)]
    assert resolutions == [1] * (n_tasks // 2), f"a reply was resolved twice {why}"
    assert set(ledger.completed) == set(range(n_tasks)), f"a task never completed {why}"
    # The crash path really ran: workers died holding tasks, which others then redelivered.
    redelivered = {n for n, count in ledger.seen.items() if count > 1}
    assert ledger.deaths > 0, f"no worker died {why}"
    assert redelivered, f"no task was redelivered {why}"
    # each extra delivery a subscriber saw was a requeue (some requeued deliveries were still
    # on their way to a dying loop and never seen)
    extra = sum(count - 1 for count in ledger.seen.values())
    assert stats_redeliveries(broker) >= extra, f"{broker.statistics()} {extra} {why}"
    assert len(ledger.workers) > n_slots, f"no replacement thread started {why}"
    assert {w.backend for w in ledger.workers} == set(BACKENDS), why
    stats = broker.statistics()
    assert (stats.pending, stats.in_flight, stats.dead_letters) == (0, 0, 0), (stats, why)
    assert stats.queues[DEFAULT_QUEUE].parked == 0, (stats, why)
    assert (stats.communicators, stats.task_subscribers) == (0, 0), (stats, why)
    assert broker.dead_letters() == (), why


def stats_redeliveries(broker: MemoryBroker) -> int:
    return broker.statistics().queues[DEFAULT_QUEUE].redeliveries


async def dying_consumer(broker: MemoryBroker, received: list[Any], die_by_raising: bool) -> None:
    """Take one task and die holding it."""
    got = anyio.Event()

    async def handle(comm: Communicator, task: Any) -> Any:
        received.append(task)
        got.set()
        await anyio.sleep_forever()

    with anyio.fail_after(TIMEOUT), anyio.CancelScope() as scope:
        async with LoopCommunicator(broker) as comm:
            await comm.add_task_subscriber(handle, prefetch=1)
            await got.wait()
            if die_by_raising:
                raise WorkerDied
            scope.cancel()
            await anyio.lowlevel.checkpoint()


def run_dying_consumer(
    backend: str, broker: MemoryBroker, received: list[Any], errors: list[BaseException]
) -> None:
    try:
        anyio.run(dying_consumer, broker, received, backend == "trio", backend=backend)
    except* WorkerDied:
        pass
    except* BaseException as group:
        errors.append(group)


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
async def test_task_whose_consumers_always_die_is_dead_lettered(strict: bool) -> None:
    max_redeliveries = 2
    broker = MemoryBroker(strict=strict, max_redeliveries=max_redeliveries)
    task = {"job": "poison", "args": [1, 2]}
    errors: list[BaseException] = []
    with anyio.fail_after(TIMEOUT):
        async with LoopCommunicator(broker) as comm:
            future = comm.task_send_future(task)
            for attempt in range(max_redeliveries + 1):
                assert not future.done(), f"resolved before delivery #{attempt + 1}"
                received: list[Any] = []
                thread = threading.Thread(
                    target=run_dying_consumer,
                    args=(BACKENDS[attempt % 2], broker, received, errors),
                )
                thread.start()
                await anyio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
                assert not errors
                assert received == [task], f"delivery #{attempt + 1} did not happen"
            with pytest.raises(
                DeadLetteredError,
                match=(
                    r"^task in queue 'tasks' delivered 3 times; its consumers went away each "
                    r"time \(max_redeliveries=2\)$"
                ),
            ):
                await wait_future(future)

    assert broker.dead_letters() == (
        DeadLetter(
            queue=DEFAULT_QUEUE,
            body=task,
            deliveries=3,
            reason="delivered 3 times; its consumers went away each time (max_redeliveries=2)",
        ),
    )
    stats = broker.statistics()
    assert (stats.pending, stats.in_flight, stats.dead_letters) == (0, 0, 1)
    assert stats_redeliveries(broker) == max_redeliveries  # requeued twice, then given up
    assert broker.dead_letters(DEFAULT_QUEUE) == broker.dead_letters()
    assert broker.dead_letters("elsewhere") == ()


async def test_tasks_requeued_together_keep_their_order() -> None:
    """A dead consumer's tasks go back to the queue in the order they were delivered.

    AMQP puts requeued messages back at their original position. (Iterating a ``set`` of
    attempts instead made the order depend on memory addresses, so runs were not
    reproducible.)
    """
    broker = MemoryBroker()
    first: list[int] = []
    second: list[int] = []
    all_held = anyio.Event()

    def hold(comm: Communicator, n: int) -> Awaitable[None]:
        # plain function: runs in the dispatcher, in delivery order; the task is then held
        # by a handler that never finishes
        first.append(n)
        if len(first) == 20:
            all_held.set()
        return anyio.sleep_forever()

    with anyio.fail_after(TIMEOUT):
        async with LoopCommunicator(broker) as sender:
            async with LoopCommunicator(broker) as doomed:
                await doomed.add_task_subscriber(hold)
                futures = [sender.task_send_future(n) for n in range(20)]
                await all_held.wait()
            # closed while holding all 20: they are back in the queue
            async with LoopCommunicator(broker) as heir:
                await heir.add_task_subscriber(lambda comm, n: second.append(n))
                for future in futures:
                    await wait_future(future)
    assert first == list(range(20))
    assert second == first
