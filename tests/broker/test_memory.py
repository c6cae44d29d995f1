"""Behaviour specific to the in-memory broker: dispatch order, statistics, strict mode."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from broker import (
    CodecError,
    Communicator,
    DeadLetteredError,
    LoopCommunicator,
    MemoryBroker,
    RemoteError,
    TaskRejected,
    UnroutableError,
    wait_future,
)

TIMEOUT = 5


async def test_round_robin_between_consumers() -> None:
    broker = MemoryBroker()
    order: list[str] = []
    async with LoopCommunicator(broker) as comm:
        for name in ("a", "b", "c"):
            await comm.add_task_subscriber(
                lambda _c, t, name=name: order.append(name), identifier=name
            )
        with anyio.fail_after(TIMEOUT):
            for i in range(6):
                await comm.task_send(i)
    assert order == ["a", "b", "c", "a", "b", "c"]


async def test_statistics_show_queues_consumers_and_prefetch() -> None:
    broker = MemoryBroker()
    release = anyio.Event()
    started: list[Any] = []
    two_started = anyio.Event()

    async def hold(_c: Communicator, task: Any) -> Any:
        started.append(task)
        if len(started) == 2:
            two_started.set()
        await release.wait()
        return task

    async with LoopCommunicator(broker) as comm:
        await comm.add_task_subscriber(hold, "holder", queue="jobs", prefetch=2)
        await comm.add_rpc_subscriber(lambda _c, m: m, "rpc")
        await comm.add_broadcast_subscriber(lambda *a: None, "b")
        futures = [comm.task_send_future(i, queue="jobs") for i in range(5)]
        with anyio.fail_after(TIMEOUT):
            await two_started.wait()
        stats = broker.statistics()
        assert stats.communicators == 1
        assert (stats.rpc_subscribers, stats.broadcast_subscribers) == (1, 1)
        assert stats.task_subscribers == 1
        jobs = stats.queues["jobs"]
        assert (jobs.pending, jobs.in_flight, jobs.consumers) == (3, 2, 1)
        assert (jobs.parked, jobs.dead_letters, jobs.redeliveries) == (0, 0, 0)
        (consumer,) = stats.consumers
        assert (consumer.identifier, consumer.queue, consumer.prefetch, consumer.in_flight) == (
            "holder",
            "jobs",
            2,
            2,
        )
        assert stats.pending == 3
        assert stats.in_flight == 2
        release.set()
        with anyio.fail_after(TIMEOUT):
            assert [await wait_future(f) for f in futures] == [0, 1, 2, 3, 4]
        stats = broker.statistics()
        assert stats.queues["jobs"].in_flight == 0
        assert stats.queues["jobs"].pending == 0
    assert broker.statistics().communicators == 0


async def test_parked_task_waits_for_a_new_consumer_without_spinning() -> None:
    broker = MemoryBroker()
    refusals: list[Any] = []
    both_refused = anyio.Event()

    def refuse(_c: Communicator, task: Any) -> Any:
        refusals.append(task)
        if len(refusals) == 2:
            both_refused.set()
        raise TaskRejected

    async with LoopCommunicator(broker) as comm:
        await comm.add_task_subscriber(refuse, "r1")
        await comm.add_task_subscriber(refuse, "r2")
        future = comm.task_send_future("hot potato")
        # both consumers refuse once; then the task is parked, not redelivered in a loop
        with anyio.fail_after(TIMEOUT):
            await both_refused.wait()
        # the dispatcher handled the second refusal before this task could resume
        assert broker.statistics().queues["tasks"].parked == 1
        assert refusals == ["hot potato", "hot potato"]
        for _ in range(20):
            # a redelivery loop would show here: each pass lets the dispatcher run again
            await anyio.lowlevel.checkpoint()
        assert refusals == ["hot potato", "hot potato"]
        await comm.add_task_subscriber(lambda _c, t: "finally", "r3")
        with anyio.fail_after(TIMEOUT):
            assert await wait_future(future) == "finally"
        assert broker.statistics().queues["tasks"].parked == 0


async def test_dead_letter_after_max_redeliveries() -> None:
    broker = MemoryBroker(max_redeliveries=1)
    async with LoopCommunicator(broker) as sender:
        future = sender.task_send_future({"job": 1})
        for attempt in range(2):
            started = anyio.Event()

            async def stuck(_c: Communicator, _task: Any, started: anyio.Event = started) -> Any:
                started.set()
                await anyio.sleep_forever()

            async with LoopCommunicator(broker) as doomed:
                await doomed.add_task_subscriber(stuck)
                with anyio.fail_after(TIMEOUT):
                    await started.wait()
            if attempt == 0:
                assert not future.done()
        with (
            anyio.fail_after(TIMEOUT),
            pytest.raises(DeadLetteredError, match=r"^task in queue 'tasks' delivered 2 times"),
        ):
            await wait_future(future)
    (dead,) = broker.dead_letters()
    assert (dead.queue, dead.body, dead.deliveries) == ("tasks", {"job": 1}, 2)
    assert broker.dead_letters("tasks") == (dead,)
    assert broker.dead_letters("other") == ()
    stats = broker.statistics().queues["tasks"]
    assert (stats.dead_letters, stats.redeliveries, stats.pending) == (1, 1, 0)


async def test_strict_mode_checks_sends_and_replies() -> None:
    broker = MemoryBroker(strict=True)
    async with LoopCommunicator(broker) as comm:
        received: list[Any] = []

        def keep(_c: Communicator, msg: Any) -> Any:
            received.append(msg)
            return {"tuple": (1, 2)}

        await comm.add_rpc_subscriber(keep, "keep")
        await comm.add_rpc_subscriber(lambda _c, m: object(), "bad-reply")
        with pytest.raises(CodecError, match=r"^can't encode msg\['when'\]: object of type"):
            await comm.rpc_send("keep", {"when": object()})
        with pytest.raises(CodecError, match=r"^can't encode task: object of type set"):
            await comm.task_send({1, 2})
        with pytest.raises(CodecError, match=r"^can't encode broadcast\[0\]: object of type"):
            await comm.broadcast_send(object())
        with anyio.fail_after(TIMEOUT):
            sent = {"items": (1, 2)}
            reply = await comm.rpc_send("keep", sent)
            # receivers get what the wire gives them: a copy, tuples as lists
            assert reply == {"tuple": [1, 2]}
            assert received == [{"items": [1, 2]}]
            assert received[0] is not sent
            with pytest.raises(RemoteError) as info:
                await comm.rpc_send("bad-reply", None)
        assert info.value.type_name == "broker._errors.CodecError"
        assert info.value.message.startswith("can't encode reply: object of type object")


async def test_plain_mode_passes_objects_by_reference() -> None:
    broker = MemoryBroker()
    async with LoopCommunicator(broker) as comm:
        marker = object()
        await comm.add_rpc_subscriber(lambda _c, m: m, "echo")
        with anyio.fail_after(TIMEOUT):
            assert await comm.rpc_send("echo", marker) is marker


async def test_prefetch_must_be_a_non_negative_int() -> None:
    async with LoopCommunicator(MemoryBroker()) as comm:
        with pytest.raises(ValueError, match=r"^prefetch must be an int >= 0, got -1$"):
            await comm.add_task_subscriber(lambda _c, t: t, prefetch=-1)


async def test_communicator_cannot_be_reopened() -> None:
    comm = LoopCommunicator(MemoryBroker(), name="once")
    async with comm:
        assert repr(comm) == "<LoopCommunicator 'once' open>"
    assert repr(comm) == "<LoopCommunicator 'once' closed>"
    with pytest.raises(Exception, match=r"^communicator 'once' can't be reopened$"):
        async with comm:
            pass
    with pytest.raises(Exception, match=r"^communicator 'x' is not open; use 'async with'$"):
        await LoopCommunicator(MemoryBroker(), name="x").rpc_send("a", 1)


async def test_rpc_future_to_unknown_recipient_raises_at_the_call() -> None:
    async with LoopCommunicator(MemoryBroker()) as comm:
        with pytest.raises(UnroutableError, match=r"^unknown rpc recipient '42'$"):
            comm.rpc_send_future(42, 1)
