"""The Communicator conformance suite: every backend must pass all of it, on asyncio and trio.

Tests use only the :class:`broker.Communicator` interface and JSON-safe payloads, so the same
file runs against the in-memory broker (plain and strict) and, when it exists, RabbitMQ.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest

from broker import (
    BroadcastFilter,
    Communicator,
    CommunicatorClosedError,
    DuplicateSubscriberError,
    RemoteError,
    TaskRejected,
    UnknownSubscriberError,
    UnroutableError,
    wait_future,
)

from .conftest import CommFactory

TIMEOUT = 5


class Recorder:
    """Collects broadcast calls; ``wait_for(n)`` returns once ``n`` calls have arrived."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._waiters: list[tuple[int, anyio.Event]] = []

    def __call__(self, comm: Communicator, *args: Any) -> None:
        self.calls.append(args)
        for n, event in self._waiters:
            if len(self.calls) >= n:
                event.set()

    async def wait_for(self, n: int) -> list[tuple[Any, ...]]:
        if len(self.calls) < n:
            event = anyio.Event()
            self._waiters.append((n, event))
            await event.wait()
        return self.calls


# -- lifecycle -------------------------------------------------------------------------------


async def test_async_with_opens_and_closes(open_comm: CommFactory) -> None:
    comm = open_comm()
    async with comm as entered:
        assert entered is comm
        assert not comm.is_closed
    assert comm.is_closed


async def test_every_operation_after_close_raises(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        pass
    await comm.aclose()  # idempotent
    closed = pytest.raises(CommunicatorClosedError)
    # closed is checked before the arguments are looked at (kiwipy's rule)
    with closed:
        await comm.add_rpc_subscriber(None, "rpc")  # type: ignore[arg-type]
    with pytest.raises(CommunicatorClosedError):
        await comm.add_task_subscriber(None)  # type: ignore[arg-type]
    with pytest.raises(CommunicatorClosedError):
        await comm.add_broadcast_subscriber(None)  # type: ignore[arg-type]
    with pytest.raises(CommunicatorClosedError):
        await comm.remove_rpc_subscriber("rpc")
    with pytest.raises(CommunicatorClosedError):
        await comm.remove_task_subscriber("x")
    with pytest.raises(CommunicatorClosedError):
        await comm.remove_broadcast_subscriber("x")
    with pytest.raises(CommunicatorClosedError):
        await comm.rpc_send("rpc", 1)
    with pytest.raises(CommunicatorClosedError):
        comm.rpc_send_future("rpc", 1)
    with pytest.raises(CommunicatorClosedError):
        await comm.task_send(1)
    with pytest.raises(CommunicatorClosedError):
        comm.task_send_future(1)
    with pytest.raises(CommunicatorClosedError):
        await comm.broadcast_send(1)


async def test_non_callable_subscriber_is_refused(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        with pytest.raises(TypeError, match=r"^subscriber must be callable, got 5$"):
            await comm.add_rpc_subscriber(5, "x")  # type: ignore[arg-type]


# -- RPC ---------------------------------------------------------------------------------------


async def test_rpc_round_trip_between_communicators(open_comm: CommFactory) -> None:
    async with open_comm() as server, open_comm() as client:
        seen: list[tuple[Communicator, Any]] = []

        def subscriber(comm: Communicator, msg: Any) -> Any:
            seen.append((comm, msg))
            return {"echo": msg}

        assert await server.add_rpc_subscriber(subscriber, "echo") == "echo"
        with anyio.fail_after(TIMEOUT):
            assert await client.rpc_send("echo", [1, "a"]) == {"echo": [1, "a"]}
        assert seen == [(server, [1, "a"])]


async def test_rpc_identifiers_compare_as_strings(open_comm: CommFactory) -> None:
    async with open_comm() as server, open_comm() as client:
        assert await server.add_rpc_subscriber(lambda _c, m: m * 2, 5) == "5"
        with anyio.fail_after(TIMEOUT):
            assert await client.rpc_send(5, 21) == 42
            assert await client.rpc_send("5", 1) == 2


async def test_rpc_generated_identifier(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        identifier = await comm.add_rpc_subscriber(lambda _c, m: m)
        assert isinstance(identifier, str)
        assert identifier
        with anyio.fail_after(TIMEOUT):
            assert await comm.rpc_send(identifier, "hi") == "hi"


async def test_rpc_async_subscriber_and_awaitable_result(open_comm: CommFactory) -> None:
    async with open_comm() as server, open_comm() as client:

        async def async_sub(_comm: Communicator, msg: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            return msg + 1

        async def later(value: int) -> int:
            await anyio.lowlevel.checkpoint()
            return value * 10

        def returns_awaitable(_comm: Communicator, msg: Any) -> Any:
            return later(msg)

        await server.add_rpc_subscriber(async_sub, "async")
        await server.add_rpc_subscriber(returns_awaitable, "awaitable")
        with anyio.fail_after(TIMEOUT):
            assert await client.rpc_send("async", 1) == 2
            assert await client.rpc_send("awaitable", 4) == 40


async def test_rpc_subscriber_exception_becomes_remote_error(open_comm: CommFactory) -> None:
    async with open_comm() as server, open_comm() as client:

        def failing(_comm: Communicator, msg: Any) -> Any:
            raise ValueError(f"bad value {msg}")

        async def failing_async(_comm: Communicator, msg: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            raise KeyError(msg)

        await server.add_rpc_subscriber(failing, "sync")
        await server.add_rpc_subscriber(failing_async, "async")
        with anyio.fail_after(TIMEOUT):
            with pytest.raises(RemoteError, match=r"^ValueError: bad value 3$") as info:
                await client.rpc_send("sync", 3)
            assert info.value.type_name == "ValueError"
            assert info.value.message == "bad value 3"
            assert 'raise ValueError(f"bad value {msg}")' in info.value.remote_traceback
            with pytest.raises(RemoteError) as info:
                await client.rpc_send("async", "k")
            assert info.value.type_name == "KeyError"
            assert info.value.message == "'k'"


async def test_rpc_to_unknown_recipient_raises_at_once(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        with pytest.raises(UnroutableError, match=r"^unknown rpc recipient 'nobody'$"):
            await comm.rpc_send("nobody", 1)
        # the future variant never blocks: a backend that must ask a remote broker reports
        # the unknown recipient through the future instead of at the call
        with (
            anyio.fail_after(TIMEOUT),
            pytest.raises(UnroutableError, match=r"^unknown rpc recipient '42'$"),
        ):
            await wait_future(comm.rpc_send_future(42, 1))


async def test_rpc_add_remove_readd(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        await comm.add_rpc_subscriber(lambda _c, m: "first", "x")
        with anyio.fail_after(TIMEOUT):
            assert await comm.rpc_send("x", None) == "first"
        await comm.remove_rpc_subscriber("x")
        with pytest.raises(UnroutableError):
            await comm.rpc_send("x", None)
        await comm.add_rpc_subscriber(lambda _c, m: "second", "x")
        with anyio.fail_after(TIMEOUT):
            assert await comm.rpc_send("x", None) == "second"


async def test_rpc_duplicate_identifier_is_refused_across_communicators(
    open_comm: CommFactory,
) -> None:
    async with open_comm() as a, open_comm() as b:
        await a.add_rpc_subscriber(lambda _c, m: m, "pid-1")
        with pytest.raises(
            DuplicateSubscriberError, match=r"^rpc subscriber 'pid-1' already exists$"
        ):
            await a.add_rpc_subscriber(lambda _c, m: m, "pid-1")
        with pytest.raises(DuplicateSubscriberError):
            await b.add_rpc_subscriber(lambda _c, m: m, "pid-1")


async def test_remove_unknown_subscriber(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        with pytest.raises(UnknownSubscriberError, match=r"^no rpc subscriber 'x' on this"):
            await comm.remove_rpc_subscriber("x")
        with pytest.raises(KeyError):
            await comm.remove_task_subscriber("x")
        with pytest.raises(ValueError, match=r"^no broadcast subscriber 'x' on this"):
            await comm.remove_broadcast_subscriber("x")


async def test_rpc_future_variant(open_comm: CommFactory) -> None:
    async with open_comm() as server, open_comm() as client:
        await server.add_rpc_subscriber(lambda _c, m: m + 1, "inc")
        futures = [client.rpc_send_future("inc", i) for i in range(50)]
        with anyio.fail_after(TIMEOUT):
            results = [await wait_future(f) for f in futures]
        assert results == list(range(1, 51))


async def test_subscriber_that_sends_from_its_handler_does_not_deadlock(
    open_comm: CommFactory,
) -> None:
    async with open_comm() as comm:
        await comm.add_rpc_subscriber(lambda _c, m: m * 2, "double")

        async def relay(c: Communicator, msg: Any) -> Any:
            # calls a subscriber on its own communicator and awaits the reply
            return await c.rpc_send("double", msg) + 1

        async def task_relay(c: Communicator, task: Any) -> Any:
            return await c.rpc_send("relay", task)

        await comm.add_rpc_subscriber(relay, "relay")
        await comm.add_task_subscriber(task_relay)
        with anyio.fail_after(TIMEOUT):
            assert await comm.rpc_send("relay", 5) == 11
            assert await comm.task_send(10) == 21


# -- tasks -------------------------------------------------------------------------------------


async def test_task_round_trip(open_comm: CommFactory) -> None:
    async with open_comm() as worker, open_comm() as sender:
        await worker.add_task_subscriber(lambda _c, t: {"done": t})
        with anyio.fail_after(TIMEOUT):
            assert await sender.task_send("job") == {"done": "job"}
            assert await wait_future(sender.task_send_future("job2")) == {"done": "job2"}


async def test_task_exception_becomes_remote_error(open_comm: CommFactory) -> None:
    async with open_comm() as worker, open_comm() as sender:

        async def failing(_c: Communicator, task: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            raise RuntimeError(f"can't do {task}")

        await worker.add_task_subscriber(failing)
        with (
            anyio.fail_after(TIMEOUT),
            pytest.raises(RemoteError, match=r"^RuntimeError: can't do x$"),
        ):
            await sender.task_send("x")


async def test_task_no_reply_still_runs(open_comm: CommFactory) -> None:
    async with open_comm() as worker, open_comm() as sender:
        ran = anyio.Event()
        got: list[Any] = []

        def subscriber(_c: Communicator, task: Any) -> str:
            got.append(task)
            ran.set()
            return "ignored"

        await worker.add_task_subscriber(subscriber)
        assert await sender.task_send("fire", no_reply=True) is None
        with anyio.fail_after(TIMEOUT):
            await ran.wait()
        assert got == ["fire"]


async def test_task_waits_in_queue_until_a_consumer_subscribes(open_comm: CommFactory) -> None:
    async with open_comm() as sender, open_comm() as worker:
        futures = [sender.task_send_future(i) for i in range(5)]
        assert not any(f.done() for f in futures)
        await worker.add_task_subscriber(lambda _c, t: t * t)
        with anyio.fail_after(TIMEOUT):
            assert [await wait_future(f) for f in futures] == [0, 1, 4, 9, 16]


async def test_each_task_goes_to_exactly_one_competing_consumer(open_comm: CommFactory) -> None:
    async with open_comm() as a, open_comm() as b, open_comm() as sender:
        handled: dict[str, list[int]] = {"a": [], "b": []}

        def make(name: str) -> Any:
            def subscriber(_c: Communicator, task: int) -> str:
                handled[name].append(task)
                return name

            return subscriber

        await a.add_task_subscriber(make("a"))
        await b.add_task_subscriber(make("b"))
        futures = [sender.task_send_future(i) for i in range(40)]
        with anyio.fail_after(TIMEOUT):
            replies = [await wait_future(f) for f in futures]
        assert sorted(handled["a"] + handled["b"]) == list(range(40))
        assert replies == ["a" if i in handled["a"] else "b" for i in range(40)]
        assert handled["a"]
        assert handled["b"]


async def test_task_is_acked_only_when_async_result_completes(open_comm: CommFactory) -> None:
    async with open_comm() as worker, open_comm() as sender:
        release = anyio.Event()
        started = anyio.Event()

        async def slow(_c: Communicator, task: Any) -> Any:
            started.set()
            await release.wait()
            return task

        await worker.add_task_subscriber(slow, prefetch=1)
        first = sender.task_send_future("first")
        second = sender.task_send_future("second")
        with anyio.fail_after(TIMEOUT):
            await started.wait()
            # prefetch=1 and the first is not acked: the second must wait
            assert not first.done()
            assert not second.done()
            release.set()
            assert await wait_future(first) == "first"
            assert await wait_future(second) == "second"


async def test_rejected_task_goes_to_another_consumer(open_comm: CommFactory) -> None:
    async with open_comm() as picky, open_comm() as sender:
        rejected: list[Any] = []
        refused = anyio.Event()

        def reject_all(_c: Communicator, task: Any) -> Any:
            rejected.append(task)
            refused.set()
            raise TaskRejected("not mine")

        await picky.add_task_subscriber(reject_all)
        future = sender.task_send_future("t")
        with anyio.fail_after(TIMEOUT):
            await refused.wait()
        assert not future.done()
        async with open_comm() as willing:
            await willing.add_task_subscriber(lambda _c, t: f"took {t}")
            with anyio.fail_after(TIMEOUT):
                assert await wait_future(future) == "took t"
        assert rejected == ["t"]  # never offered to the rejecting consumer again


async def test_named_queues_are_separate(open_comm: CommFactory) -> None:
    async with open_comm() as worker, open_comm() as sender:
        await worker.add_task_subscriber(lambda _c, t: f"a:{t}", queue="queue-a")
        await worker.add_task_subscriber(lambda _c, t: f"b:{t}", queue="queue-b")
        with anyio.fail_after(TIMEOUT):
            assert await sender.task_send(1, queue="queue-a") == "a:1"
            assert await sender.task_send(2, queue="queue-b") == "b:2"


async def test_remove_task_subscriber_stops_delivery(open_comm: CommFactory) -> None:
    async with open_comm() as worker, open_comm() as sender:
        await worker.add_task_subscriber(lambda _c, t: "old", "consumer")
        with anyio.fail_after(TIMEOUT):
            assert await sender.task_send(0) == "old"
        await worker.remove_task_subscriber("consumer")
        future = sender.task_send_future(1)
        await worker.add_task_subscriber(lambda _c, t: "new", "consumer")
        with anyio.fail_after(TIMEOUT):
            assert await wait_future(future) == "new"


async def test_closing_a_consumer_requeues_its_unacked_tasks(open_comm: CommFactory) -> None:
    async with open_comm() as sender:
        started = anyio.Event()

        async def never_finishes(_c: Communicator, task: Any) -> Any:
            started.set()
            await anyio.sleep_forever()

        async with open_comm() as doomed:
            await doomed.add_task_subscriber(never_finishes)
            future = sender.task_send_future("survivor")
            with anyio.fail_after(TIMEOUT):
                await started.wait()
        assert not future.done()
        async with open_comm() as rescuer:
            await rescuer.add_task_subscriber(lambda _c, t: f"rescued {t}")
            with anyio.fail_after(TIMEOUT):
                assert await wait_future(future) == "rescued survivor"


async def test_task_duplicate_identifier(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        await comm.add_task_subscriber(lambda _c, t: t, "w")
        with pytest.raises(DuplicateSubscriberError, match=r"^task subscriber 'w' already"):
            await comm.add_task_subscriber(lambda _c, t: t, "w")
        # task and rpc identifiers live in separate namespaces (kiwipy mixed them up)
        assert await comm.add_rpc_subscriber(lambda _c, m: m, "w") == "w"


# -- broadcast ---------------------------------------------------------------------------------


async def test_broadcast_reaches_every_subscriber_including_senders_own(
    open_comm: CommFactory,
) -> None:
    async with open_comm() as a, open_comm() as b:
        on_a, on_b, also_b = Recorder(), Recorder(), Recorder()
        await a.add_broadcast_subscriber(on_a)
        await b.add_broadcast_subscriber(on_b)
        await b.add_broadcast_subscriber(also_b)
        await a.broadcast_send({"x": 1}, sender="alice", subject="news", correlation_id="c1")
        expected = [({"x": 1}, "alice", "news", "c1")]
        with anyio.fail_after(TIMEOUT):
            assert await on_a.wait_for(1) == expected
            assert await on_b.wait_for(1) == expected
            assert await also_b.wait_for(1) == expected


async def test_broadcast_defaults_and_non_string_sender(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        rec = Recorder()
        await comm.add_broadcast_subscriber(rec)
        await comm.broadcast_send("plain")
        await comm.broadcast_send(None, sender=1234)
        with anyio.fail_after(TIMEOUT):
            calls = await rec.wait_for(2)
        assert sorted(calls, key=repr) == sorted(
            [("plain", None, None, None), (None, 1234, None, None)], key=repr
        )
        assert any(type(c[1]) is int for c in calls)


async def test_broadcast_subject_and_sender_filters(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        subject_rec, sender_rec, both_rec, regex_rec, everything = (
            Recorder(),
            Recorder(),
            Recorder(),
            Recorder(),
            Recorder(),
        )
        await comm.add_broadcast_subscriber(BroadcastFilter(subject_rec, subject="purchase.*"))
        await comm.add_broadcast_subscriber(BroadcastFilter(sender_rec, sender="*.jones"))
        await comm.add_broadcast_subscriber(
            BroadcastFilter(both_rec, subject="purchase.*", sender="*.jones")
        )
        await comm.add_broadcast_subscriber(
            BroadcastFilter(regex_rec, subject=re.compile(r"sale\.\d+"))
        )
        await comm.add_broadcast_subscriber(everything)
        sends = [
            ("purchase.car", "alice.jones"),
            ("purchase.bike", "bob.smith"),
            ("sale.42", "carol.jones"),
            ("sale.x", "dave.brown"),
            ("purchasex", "alice.jonesy"),
        ]
        for subject, sender in sends:
            await comm.broadcast_send(subject, subject=subject, sender=sender)
        with anyio.fail_after(TIMEOUT):
            await everything.wait_for(len(sends))
        # every endpoint receives broadcasts in send order, so by now all are delivered
        assert {c[0] for c in subject_rec.calls} == {"purchase.car", "purchase.bike"}
        assert {c[0] for c in sender_rec.calls} == {"purchase.car", "sale.42"}
        assert {c[0] for c in both_rec.calls} == {"purchase.car"}
        assert {c[0] for c in regex_rec.calls} == {"sale.42"}


async def test_raising_broadcast_subscriber_is_isolated(
    open_comm: CommFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_comm() as comm:

        def explode(*_args: Any) -> None:
            raise RuntimeError("subscriber bug")

        async def explode_async(*_args: Any) -> None:
            raise RuntimeError("async subscriber bug")

        rec = Recorder()
        await comm.add_broadcast_subscriber(explode)
        await comm.add_broadcast_subscriber(explode_async)
        await comm.add_broadcast_subscriber(rec)
        await comm.broadcast_send("one")
        await comm.broadcast_send("two")
        with anyio.fail_after(TIMEOUT):
            calls = await rec.wait_for(2)
        assert [c[0] for c in calls] == ["one", "two"]
        # the communicator still works
        await comm.add_rpc_subscriber(lambda _c, m: m, "alive")
        with anyio.fail_after(TIMEOUT):
            assert await comm.rpc_send("alive", "yes") == "yes"


async def test_removed_broadcast_subscriber_gets_nothing(open_comm: CommFactory) -> None:
    async with open_comm() as comm, open_comm() as other:
        removed, kept = Recorder(), Recorder()
        identifier = await comm.add_broadcast_subscriber(removed)
        await comm.add_broadcast_subscriber(kept)
        await comm.remove_broadcast_subscriber(identifier)
        await other.broadcast_send("after removal")
        with anyio.fail_after(TIMEOUT):
            await kept.wait_for(1)
        # both subscribers sit on one endpoint and get one delivery: if the removed one were
        # still there, it would have been called in the same delivery
        assert removed.calls == []


async def test_broadcast_duplicate_identifier(open_comm: CommFactory) -> None:
    async with open_comm() as comm:
        await comm.add_broadcast_subscriber(Recorder(), "b")
        with pytest.raises(DuplicateSubscriberError, match=r"^broadcast subscriber 'b' already"):
            await comm.add_broadcast_subscriber(Recorder(), "b")


async def test_removing_a_consumer_cancels_its_handlers_and_requeues(
    open_comm: CommFactory,
) -> None:
    async with open_comm() as worker, open_comm() as sender:
        started = anyio.Event()
        cancelled = anyio.Event()

        async def stuck(_c: Communicator, task: Any) -> Any:
            started.set()
            try:
                await anyio.sleep_forever()
            finally:
                cancelled.set()

        await worker.add_task_subscriber(stuck, "stuck")
        future = sender.task_send_future("again")
        with anyio.fail_after(TIMEOUT):
            await started.wait()
            await worker.remove_task_subscriber("stuck")
            await cancelled.wait()
        assert not future.done()
        await worker.add_task_subscriber(lambda _c, t: f"done {t}")
        with anyio.fail_after(TIMEOUT):
            assert await wait_future(future) == "done again"
