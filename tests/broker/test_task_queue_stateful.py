"""A Hypothesis state machine over the task queue: sends, consumers, rejections and crashes.

Design
------
Each example runs one event loop in a blocking portal thread (asyncio in debug mode, or trio);
every rule hands its work to that loop with ``portal.call`` (the Hypothesis thread runs no loop,
so blocking on the portal is allowed). Every communicator lives on that one loop, so the broker
delivers by appending to the consumer's local queue, and runs are deterministic.

A consumer is one :class:`LoopCommunicator` with one task subscriber. The subscriber is a plain
function, so it runs inline in the communicator's dispatcher, in delivery order: it checks the
delivery against the model, rejects it if told to, or records a *holding* and returns a
coroutine that waits on the holding's event. The ``complete`` rule sets that event, in any order.

The model *predicts* what completing, unsubscribing and crashing do (replies, requeues, dead
letters, cancelled handlers) and *observes* deliveries (which consumer the broker picks is the
broker's business). After each rule the loop settles: it yields until every attempt the broker
counts in flight has reached its subscriber's handler, every released handler has returned and
every unsubscribed consumer's handlers are cancelled. Then the invariants compare the model with
``broker.statistics()``, the dead letters and every sender's reply sink:

- no task lost: each is queued (pending or parked), held by exactly one live consumer, done or
  dead, and the broker's counts agree;
- none acked twice: each reply sink is resolved at most once, exactly once when the task is
  done or dead, with the reply (or error) of the completion that acked it;
- prefetch is never exceeded, per consumer, in the model and in the broker's statistics;
- a task is never delivered to a consumer that rejected it, nor to one that unsubscribed.

At the end of each example every open task must complete once a fresh consumer joins and
every held task is released.
"""

from __future__ import annotations

import concurrent.futures
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs
from hypothesis import event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from broker import (
    DEFAULT_QUEUE,
    Communicator,
    DeadLetteredError,
    LoopCommunicator,
    MemoryBroker,
    RemoteError,
    TaskRejected,
    wait_future,
)

MAX_REDELIVERIES = 2
MAX_CONSUMERS = 4
#: scheduling rounds allowed for the loop to settle after a rule; a handful are ever needed
SETTLE_ROUNDS = 200


def reply_for(n: int) -> dict[str, int]:
    return {"n": n, "double": 2 * n}


class RecordingSink:
    """A reply sink that records every resolution; a second one would be a double ack."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[bool, Any]] = []

    def set_result(self, value: Any, /) -> None:
        self.outcomes.append((True, value))

    def set_exception(self, exc: BaseException, /) -> None:
        self.outcomes.append((False, exc))


@attrs.define(eq=False)
class Holding:
    """One delivery a subscriber is working on, until ``release`` is set."""

    consumer: Consumer
    n: int
    delivery: int  # the task's delivery number when it arrived (1 = first)
    release: anyio.Event
    live: bool = True  # the broker counts it against the consumer's prefetch
    fail: bool = False  # when released, raise instead of replying
    released: bool = False
    started: bool = False  # its handler task is running (waiting for ``release``)
    coro: Coroutine[Any, Any, Any] | None = None  # what the subscriber returned

    def dropped(self) -> bool:
        """The communicator closed the handler's coroutine without ever running it."""
        return not self.started and self.coro is not None and self.coro.cr_frame is None

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.n, self.delivery, self.consumer.cid)


@attrs.define(eq=False)
class Consumer:
    cid: int
    prefetch: int
    cm: AbstractContextManager[LoopCommunicator]
    comm: LoopCommunicator
    subscribed: bool = False
    reject_next: bool = False
    holdings: list[Holding] = attrs.field(factory=list)  # handlers running now

    @property
    def identifier(self) -> str:
        return f"consumer-{self.cid}"

    def live(self) -> list[Holding]:
        return [h for h in self.holdings if h.live]


@attrs.define(eq=False)
class TaskModel:
    n: int
    sink: RecordingSink | concurrent.futures.Future[Any]
    state: str = "open"  # open (queued or in flight), done, dead
    outcome: tuple[str, Any] | None = None  # ("ok", reply) / ("error", message) / ("dead", None)
    deliveries: int = 0  # as the broker counts them: rejections don't count
    holder: Holding | None = None  # the live attempt, if in flight
    rejected_by: set[int] = attrs.field(factory=set)
    rejections: int = 0


async def test_removed_subscriber_does_not_start_a_delivery_it_had_not_run() -> None:
    """The smallest case the machine's ``send_and_unsubscribe_receiver`` rule found.

    A task is handed to consumer A's communicator; A unsubscribes before its dispatcher ran
    it. The broker requeues the task to B, but A's dispatcher still calls A's subscriber for
    the stale delivery: the task is worked on twice, and A's (stale) result acks it.
    """
    broker = MemoryBroker()
    calls: list[tuple[str, int]] = []

    def subscriber(name: str) -> Callable[[Communicator, int], int]:
        def subscriber(comm: Communicator, n: int) -> int:
            calls.append((name, n))
            return n

        return subscriber

    with anyio.fail_after(5):
        async with (
            LoopCommunicator(broker) as sender,
            LoopCommunicator(broker, name="a") as a,
            LoopCommunicator(broker, name="b") as b,
        ):
            a_id = await a.add_task_subscriber(subscriber("a"))
            await b.add_task_subscriber(subscriber("b"))
            future = sender.task_send_future(7)  # A's turn: queued in A's communicator
            # No checkpoint in between: A's dispatcher has not run yet. The removal itself
            # happens before remove_task_subscriber's first checkpoint.
            await a.remove_task_subscriber(a_id)
            assert await wait_future(future) == 7
            # let A's dispatcher drain what it was handed before the removal
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
    assert calls == [("b", 7)]


async def test_removed_subscriber_does_not_run_a_handler_it_had_spawned() -> None:
    """The machine's ``unsubscribe_receiver_while_its_handler_starts`` rule, in small.

    A's dispatcher has called A's async subscriber (the coroutine exists) and spawned the
    handler task that will await it; A unsubscribes before that task first runs. The handler
    is not cancelled (it registers its cancel scope only when it starts), so the removed
    subscriber works on the task, and its result acks it although nobody consumes the queue.

    On asyncio the order is FIFO, so every round hits the window; trio reverses a batch half
    the time, so about half the rounds do.
    """
    broker = MemoryBroker()
    started: list[int] = []

    async def work(comm: Communicator, n: int) -> int:
        started.append(n)
        return n

    with anyio.fail_after(5):
        async with (
            LoopCommunicator(broker) as sender,
            LoopCommunicator(broker) as a,
            anyio.create_task_group() as tg,
        ):
            for n in range(20):
                queue = f"q{n}"  # a fresh queue per round: nothing carries over
                identifier = await a.add_task_subscriber(work, queue=queue)
                go, removed = anyio.Event(), anyio.Event()

                async def remove(identifier: str, go: anyio.Event, removed: anyio.Event) -> None:
                    await go.wait()
                    await a.remove_task_subscriber(identifier)
                    removed.set()

                tg.start_soon(remove, identifier, go, removed)
                await wait_all_started()
                sender.task_send_future(n, queue=queue)  # wakes A's dispatcher...
                go.set()  # ... and the remover right behind it
                await removed.wait()
            # let any handler that escaped cancellation run
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
    assert started == []
    stats = broker.statistics()
    assert [stats.queues[f"q{n}"].pending for n in range(20)] == [1] * 20


async def wait_all_started() -> None:
    # one scheduling round, so a task just started with start_soon reaches its first await
    await anyio.lowlevel.checkpoint()


class TaskQueueMachine(RuleBasedStateMachine):
    backend: ClassVar[str]
    backend_options: ClassVar[dict[str, Any]]

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = anyio.from_thread.start_blocking_portal(
            self.backend, self.backend_options
        )
        self.portal = self._portal_cm.__enter__()
        self.broker = MemoryBroker(max_redeliveries=MAX_REDELIVERIES)
        self._sender_cm = self.portal.wrap_async_context_manager(
            LoopCommunicator(self.broker, name="sender")
        )
        self.sender = self._sender_cm.__enter__()
        self.consumers: dict[int, Consumer] = {}
        self.tasks: list[TaskModel] = []
        self.violations: list[str] = []
        self.events: list[str] = []
        self.healthy = True
        self.requeues = 0  # tasks put back because their consumer went away
        self._cids = itertools.count()

    # -- running things on the loop ------------------------------------------------------

    def on_loop(self, fn: Callable[[], Awaitable[None] | None]) -> None:
        """Run ``fn`` on the loop, then let the loop settle."""

        async def run() -> None:
            result = fn()
            if result is not None:
                await result
            await self.settle()

        self.call(run)

    def call(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.healthy = False  # until the invariants pass again
        self.portal.call(fn)
        while self.events:  # hypothesis.event() only works on this thread, not the loop's
            event(self.events.pop())

    async def settle(self) -> None:
        # Deliveries reach a subscriber through its communicator's dispatcher task, and a
        # released holding returns through its handler task: a few scheduling rounds each.
        # Yield until both are done; the invariants then say what went wrong if they never are.
        for _ in range(SETTLE_ROUNDS):
            if self.quiescent():
                return
            await anyio.lowlevel.checkpoint()

    def quiescent(self) -> bool:
        for c in self.consumers.values():
            if not c.subscribed:  # a removed consumer's handler may be dropped before it ran
                c.holdings = [h for h in c.holdings if not h.dropped()]
        holdings = [h for c in self.consumers.values() for h in c.holdings]
        if not all(h.started and not h.released for h in holdings):
            return False  # a handler task has yet to start, or to return once released
        if any(c.holdings for c in self.consumers.values() if not c.subscribed):
            return False  # an unsubscribed consumer's handlers have yet to be cancelled
        in_flight = {c.identifier: c.in_flight for c in self.broker.statistics().consumers}
        return all(
            in_flight.get(c.identifier) == len(c.live())
            for c in self.consumers.values()
            if c.subscribed
        )

    # -- the subscriber ------------------------------------------------------------------

    def subscriber_for(self, consumer: Consumer) -> Callable[[Communicator, Any], Any]:
        def subscriber(comm: Communicator, body: Any) -> Awaitable[Any]:
            # Runs inline in the dispatcher, in delivery order.
            task = self.tasks[body["n"]]
            where = f"task {task.n} delivered to consumer {consumer.cid}"
            if not consumer.subscribed:
                self.violations.append(f"{where} after it unsubscribed")
            if consumer.cid in task.rejected_by:
                self.violations.append(f"{where}, which rejected it")
            if task.state != "open":
                self.violations.append(f"{where} after it was {task.state}")
            if task.holder is not None:
                other = task.holder.consumer.cid
                self.violations.append(f"{where} while consumer {other} holds it")
            if consumer.reject_next:
                consumer.reject_next = False
                task.rejected_by.add(consumer.cid)
                task.rejections += 1
                self.events.append("task rejected")
                raise TaskRejected
            task.deliveries += 1
            holding = Holding(consumer, task.n, task.deliveries, anyio.Event())
            task.holder = holding
            consumer.holdings.append(holding)
            if consumer.prefetch and len(consumer.live()) > consumer.prefetch:
                self.violations.append(f"{where} beyond its prefetch {consumer.prefetch}")
            holding.coro = self.hold(holding)
            return holding.coro

        return subscriber

    async def hold(self, holding: Holding) -> dict[str, int]:
        holding.started = True
        try:
            await holding.release.wait()
        finally:  # released, or cancelled because the communicator closed
            holding.consumer.holdings.remove(holding)
        if holding.fail:
            raise ValueError(f"task {holding.n} failed")
        return reply_for(holding.n)

    # -- model transitions ---------------------------------------------------------------

    def give_up_live_holdings(self, consumer: Consumer) -> None:
        """The consumer goes away: its live attempts are requeued or dead-lettered."""
        for holding in consumer.live():
            holding.live = False
            task = self.tasks[holding.n]
            if task.holder is not holding:
                continue  # already done
            task.holder = None
            self.requeue_or_dead_letter(task)
        consumer.subscribed = False

    def requeue_or_dead_letter(self, task: TaskModel) -> None:
        """Its consumer went away while the task was in flight."""
        if task.deliveries > MAX_REDELIVERIES:
            self.events.append("task dead-lettered")
            task.state = "dead"
            task.outcome = ("dead", None)
        else:
            self.events.append("task requeued")
            self.requeues += 1

    # -- rules -----------------------------------------------------------------------------

    # Every rule is always enabled and draws a fixed shape (an index, taken modulo the
    # choices): rules that find nothing to act on do nothing. Preconditions and draws that
    # depend on which consumer holds what would make Hypothesis's replays inconsistent,
    # because that depends on the broker's requeue order, which varies between runs.

    @initialize(prefetch=st.integers(0, 3))
    def first_consumer(self, prefetch: int) -> None:
        self.subscribe_new_consumer(prefetch)

    @rule(via_future=st.booleans())
    def send(self, via_future: bool) -> None:
        def send() -> None:
            self.send_now(via_future)

        self.on_loop(send)

    def send_now(self, via_future: bool) -> TaskModel:
        n = len(self.tasks)
        sink: RecordingSink | concurrent.futures.Future[Any]
        if via_future:
            sink = self.sender.task_send_future({"n": n})
        else:
            # What task_send_future does, with a sink that records double resolutions.
            sink = RecordingSink()
            self.broker.send_task(self.broker.encode({"n": n}, "task"), sink, None)
        task = TaskModel(n, sink)
        self.tasks.append(task)
        return task

    @rule(via_future=st.booleans())
    def send_and_unsubscribe_receiver(self, via_future: bool) -> None:
        """Send a task and, before the consumer it went to has run it, unsubscribe that one.

        The delivery waits in the consumer's communicator when the consumer goes away: the
        broker requeues the task, and the consumer must not start working on it.
        """

        async def send_and_unsubscribe() -> None:
            before = self.in_flight()
            task = self.send_now(via_future)
            after = self.in_flight()
            receivers = [
                c
                for c in self.consumers.values()
                if c.subscribed and (after[c.identifier] > before[c.identifier])
            ]
            if not receivers:
                return  # queued: nobody had room
            (consumer,) = receivers
            self.events.append("consumer unsubscribed with a delivery on its way")
            self.give_up_live_holdings(consumer)
            task.deliveries += 1  # delivered as far as the broker is concerned, never run
            self.requeue_or_dead_letter(task)
            await consumer.comm.remove_task_subscriber(consumer.identifier)

        self.on_loop(send_and_unsubscribe)

    @rule(via_future=st.booleans())
    def unsubscribe_receiver_while_its_handler_starts(self, via_future: bool) -> None:
        """Send a task and unsubscribe its consumer as soon as the dispatcher has handed it to
        the subscriber, before (on trio: maybe before) the handler task first runs.

        Whether or not the handler had started, it must not work on the task.
        """

        async def send_and_unsubscribe() -> None:
            before = self.in_flight()
            task = self.send_now(via_future)
            after = self.in_flight()
            receivers = [
                c
                for c in self.consumers.values()
                if c.subscribed and (after[c.identifier] > before[c.identifier])
            ]
            if not receivers:
                return
            (consumer,) = receivers
            # Yield until the consumer's dispatcher has run the subscriber (which registers
            # the holding, or rejects): the handler task it spawns has not run yet on asyncio.
            for _ in range(SETTLE_ROUNDS):
                if task.holder is not None or consumer.cid in task.rejected_by:
                    break
                await anyio.lowlevel.checkpoint()
            if task.holder is not None and not task.holder.started:
                self.events.append("consumer unsubscribed while its handler starts")
            self.give_up_live_holdings(consumer)
            await consumer.comm.remove_task_subscriber(consumer.identifier)

        self.on_loop(send_and_unsubscribe)

    def in_flight(self) -> dict[str, int]:
        return {c.identifier: c.in_flight for c in self.broker.statistics().consumers}

    @rule(prefetch=st.integers(0, 3))
    def add_consumer(self, prefetch: int) -> None:
        if len(self.subscribed()) < MAX_CONSUMERS:
            self.subscribe_new_consumer(prefetch)

    def subscribe_new_consumer(self, prefetch: int) -> None:
        cid = next(self._cids)
        note(f"consumer {cid} subscribes with prefetch {prefetch}")
        cm = self.portal.wrap_async_context_manager(
            LoopCommunicator(self.broker, name=f"comm-{cid}")
        )
        consumer = Consumer(cid, prefetch, cm, cm.__enter__())
        self.consumers[cid] = consumer

        async def subscribe() -> None:
            consumer.subscribed = True
            await consumer.comm.add_task_subscriber(
                self.subscriber_for(consumer), consumer.identifier, prefetch=prefetch
            )

        self.on_loop(subscribe)

    def subscribed(self) -> list[int]:
        return sorted(cid for cid, c in self.consumers.items() if c.subscribed)

    @rule(index=st.integers(0, 15))
    def remove_consumer(self, index: int) -> None:
        """Unsubscribe, keeping the communicator open: the consumer's handlers are cancelled
        and its live tasks requeued (or dead-lettered)."""
        if cids := self.subscribed():
            consumer = self.consumers[cids[index % len(cids)]]
            note(f"consumer {consumer.cid} unsubscribes")
            self.give_up_live_holdings(consumer)
            self.on_loop(lambda: consumer.comm.remove_task_subscriber(consumer.identifier))
            if consumer.holdings:
                tasks = sorted(h.n for h in consumer.holdings)
                self.violations.append(
                    f"consumer {consumer.cid} still works on tasks {tasks} after unsubscribing"
                )

    @rule(index=st.integers(0, 15))
    def crash_consumer(self, index: int) -> None:
        """Close the communicator: its handlers are cancelled, its live tasks requeued."""
        if cids := sorted(self.consumers):
            consumer = self.consumers.pop(cids[index % len(cids)])
            note(f"consumer {consumer.cid} crashes")
            if consumer.subscribed:
                self.give_up_live_holdings(consumer)
            consumer.cm.__exit__(None, None, None)
            self.on_loop(lambda: None)
            if consumer.holdings:
                self.violations.append(f"consumer {consumer.cid} closed with running handlers")

    @rule(index=st.integers(0, 15))
    def reject_next(self, index: int) -> None:
        if cids := self.subscribed():
            consumer = self.consumers[cids[index % len(cids)]]
            note(f"consumer {consumer.cid} will reject its next task")

            def arm() -> None:
                consumer.reject_next = True

            self.on_loop(arm)

    def holdings(self) -> list[Holding]:
        # sorted, so a drawn index means the same holding on every replay
        return sorted((h for c in self.consumers.values() for h in c.holdings), key=lambda h: h.key)

    @rule(index=st.integers(0, 255), fail=st.booleans())
    def complete(self, index: int, fail: bool) -> None:
        holdings = self.holdings()
        if holdings:
            holding = holdings[index % len(holdings)]
            note(f"complete task {holding.n} held by consumer {holding.consumer.cid}")
            self.release(holding, fail)
            self.on_loop(lambda: None)

    def release(self, holding: Holding, fail: bool) -> None:
        """Predict what completing ``holding`` does, then let its handler return."""
        task = self.tasks[holding.n]
        holding.live = False
        if task.state == "open":  # the first completion acks the task and replies
            task.state = "done"
            if fail:
                task.outcome = ("error", f"ValueError: task {task.n} failed")
            else:
                task.outcome = ("ok", reply_for(task.n))
            task.holder = None
        holding.fail = fail
        holding.released = True
        self.portal.call(_set_event, holding.release)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def model_matches_broker(self) -> None:
        self.call(self._check)
        self.healthy = True

    async def _check(self) -> None:
        assert not self.violations, self.violations
        for c in self.consumers.values():
            if not c.subscribed:
                working = sorted(h.n for h in c.holdings)
                assert not working, f"consumer {c.cid} works on {working} after unsubscribing"
        stats = self.broker.statistics()
        live = {c.identifier: c for c in self.consumers.values() if c.subscribed}

        # prefetch never exceeded, and the broker agrees on who holds how many
        held = {c.identifier: c.in_flight for c in stats.consumers}
        assert held == {ident: len(c.live()) for ident, c in live.items()}, stats
        for c in stats.consumers:
            assert c.prefetch == live[c.identifier].prefetch
            assert c.prefetch == 0 or c.in_flight <= c.prefetch, c

        # no task lost: every open task is queued (pending or parked) or held by exactly one
        # live consumer; done and dead ones are neither
        live_holdings = [h for c in live.values() for h in c.live()]
        queued = 0
        for task in self.tasks:
            mine = [h for h in live_holdings if h.n == task.n]
            assert len(mine) <= 1, f"task {task.n} is held by {len(mine)} live consumers"
            if task.state == "open":
                assert (mine[0] if mine else None) is task.holder, task
                queued += task.holder is None
            else:
                assert task.holder is None, task
        queue = stats.queues.get(DEFAULT_QUEUE)
        pending = (queue.pending + queue.parked) if queue else 0
        assert pending == queued, (stats, queued)
        assert (queue.redeliveries if queue else 0) == self.requeues, (stats, self.requeues)
        assert stats.in_flight == sum(len(c.live()) for c in live.values()), stats

        # every reply arrives exactly once, when (and as) the model predicts
        for task in self.tasks:
            check_sink(task)

        if queue and queue.parked:
            self.events.append("task parked")
        # (the order of tasks dead-lettered together is the broker's requeue order)
        dead = [t.n for t in self.tasks if t.state == "dead"]
        assert sorted(d.body["n"] for d in self.broker.dead_letters()) == dead
        assert all(d.deliveries == MAX_REDELIVERIES + 1 for d in self.broker.dead_letters())
        assert stats.dead_letters == len(dead)

    # -- teardown --------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.healthy:  # else the example already failed: don't pile on
                self.drain()
        finally:
            for consumer in self.consumers.values():
                consumer.cm.__exit__(None, None, None)
            self._sender_cm.__exit__(None, None, None)
            self._portal_cm.__exit__(None, None, None)

    def drain(self) -> None:
        """With a fresh consumer and everyone working, every open task completes."""
        for consumer in self.consumers.values():
            consumer.reject_next = False
        self.subscribe_new_consumer(0)
        for _ in range(len(self.tasks) + 1):
            if all(t.state != "open" for t in self.tasks):
                break
            for holding in self.holdings():
                self.release(holding, fail=False)
            self.on_loop(lambda: None)
        assert all(t.state != "open" for t in self.tasks), self.tasks
        self.call(self._check)
        for cid in sorted(self.consumers):
            consumer = self.consumers.pop(cid)
            for holding in list(consumer.holdings):
                self.release(holding, fail=False)
            self.on_loop(lambda: None)
            consumer.cm.__exit__(None, None, None)
        stats = self.broker.statistics()
        assert (stats.pending, stats.in_flight, stats.task_subscribers) == (0, 0, 0), stats


async def _set_event(event: anyio.Event) -> None:
    event.set()


def check_sink(task: TaskModel) -> None:
    sink = task.sink
    if isinstance(sink, RecordingSink):
        outcomes = sink.outcomes
    elif sink.done():
        exc = sink.exception()
        outcomes = [(True, sink.result())] if exc is None else [(False, exc)]
    else:
        outcomes = []
    if task.outcome is None:
        assert outcomes == [], f"task {task.n} is {task.state} but got a reply: {outcomes}"
        return
    assert len(outcomes) == 1, f"task {task.n} got {len(outcomes)} replies: {outcomes}"
    (ok, value), (kind, expected) = outcomes[0], task.outcome
    if kind == "ok":
        assert ok, (task, outcomes)
        assert value == expected, (task, outcomes)
    elif kind == "error":
        assert not ok, (task, outcomes)
        assert isinstance(value, RemoteError), (task, outcomes)
        assert str(value) == expected
    else:
        assert not ok, (task, outcomes)
        assert isinstance(value, DeadLetteredError), (task, outcomes)


_settings = settings(max_examples=60, deadline=None, stateful_step_count=50)


class AsyncioTaskQueueMachine(TaskQueueMachine):
    backend = "asyncio"
    backend_options: ClassVar[dict[str, Any]] = {"debug": True}


class TrioTaskQueueMachine(TaskQueueMachine):
    backend = "trio"
    backend_options: ClassVar[dict[str, Any]] = {}


TestTaskQueueAsyncio = AsyncioTaskQueueMachine.TestCase
TestTaskQueueAsyncio.settings = _settings
TestTaskQueueTrio = TrioTaskQueueMachine.TestCase
TestTaskQueueTrio.settings = _settings
