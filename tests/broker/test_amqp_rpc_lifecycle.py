"""Adding and removing RPC subscribers on RabbitMQ: duplicates, failures, and removal under load.

The add is a declare of the exclusive queue (the duplicate check) followed by the bind and the
consumer together; the remove an unbind followed by an ``if_empty`` delete, which cancels the
consumer on the server's side. These tests hold that against the real server.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from broker import (
    Communicator,
    DuplicateSubscriberError,
    UnroutableError,
    wait_future,
)
from broker.amqp import AmqpCommunicator, _connection, _consuming
from broker.amqp._io import IoSide

from .conftest import make_amqp

TIMEOUT = 10
amqp = pytest.mark.amqp


make = make_amqp


def io_of(comm: AmqpCommunicator) -> IoSide:
    io = comm._io
    assert io is not None
    return io


async def on_io(comm: AmqpCommunicator, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` (a coroutine function) on the communicator's I/O loop."""
    io = io_of(comm)
    return await wait_future(io.submit(fn, *args))


async def until_io_says(comm: AmqpCommunicator, fn: Any, done: Any) -> None:
    """Poll ``fn`` on the I/O loop until ``done(its result)``."""
    with anyio.fail_after(TIMEOUT):
        while True:
            if done(await on_io(comm, fn)):
                return
            await anyio.sleep(0.01)


async def flood(
    client: AmqpCommunicator,
    key: str,
    stop: anyio.Event,
    futures: list[concurrent.futures.Future[Any]],
) -> None:
    """Call ``key`` with 0, 1, 2, ... until ``stop``, at most ~400 calls in flight (so the test
    measures the removal, not a backlog in the sender)."""
    settled: list[None] = []  # list.append is atomic: the futures settle on I/O threads
    i = 0
    while not stop.is_set():
        if len(futures) - len(settled) < 400:
            for _ in range(20):
                future = client.rpc_send_future(key, i)
                future.add_done_callback(lambda _: settled.append(None))
                futures.append(future)
                i += 1
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.sleep(0.001)


async def settle(
    futures: list[concurrent.futures.Future[Any]],
) -> tuple[list[Any], int]:
    """Every future's result, or the number that raised UnroutableError (anything else fails)."""
    values, unroutable = [], 0
    with anyio.fail_after(TIMEOUT):
        for future in futures:
            try:
                values.append(await wait_future(future))
            except UnroutableError:
                unroutable += 1
    return values, unroutable


@amqp
async def test_a_duplicate_fails_only_its_own_add_among_concurrent_ones(namespace: str) -> None:
    """The declare that hits RESOURCE_LOCKED closes its channel: adds of other identifiers
    that were waiting on that channel still succeed, and the failed add leaves nothing."""
    async with make(namespace) as a, make(namespace) as b:
        await a.add_rpc_subscriber(lambda _c, m: "a", "taken")
        results: dict[str, Any] = {}

        async def add(key: str) -> None:
            try:
                results[key] = await b.add_rpc_subscriber(lambda _c, m: f"b {m}", key)
            except DuplicateSubscriberError as exc:
                results[key] = exc

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(add, "taken")
                for i in range(6):
                    tg.start_soon(add, f"free-{i}")
        assert isinstance(results.pop("taken"), DuplicateSubscriberError)
        assert results == {f"free-{i}": f"free-{i}" for i in range(6)}
        with anyio.fail_after(TIMEOUT):
            for i in range(6):
                assert await a.rpc_send(f"free-{i}", i) == f"b {i}"
            # the failed add left no binding or consumer behind: a still gets every call
            for _ in range(5):
                assert await b.rpc_send("taken", None) == "a"
            await a.remove_rpc_subscriber("taken")
            with pytest.raises(UnroutableError):
                await b.rpc_send("taken", None)
            # and the identifier is free for b now, on its reopened channel
            await b.add_rpc_subscriber(lambda _c, m: "b", "taken")
            assert await a.rpc_send("taken", None) == "b"
            with pytest.raises(DuplicateSubscriberError):
                await a.add_rpc_subscriber(lambda _c, m: "a", "taken")
            with pytest.raises(DuplicateSubscriberError):
                await b.add_rpc_subscriber(lambda _c, m: "b", "taken")  # same communicator
            assert await a.rpc_send("taken", None) == "b"


@amqp
async def test_an_add_that_fails_after_the_declare_leaves_nothing_behind(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make(namespace) as a, make(namespace) as b:
        original = _connection.consume
        failures = [RuntimeError("consume refused")]

        async def consume(*args: Any, **kwargs: Any) -> str:
            if failures:
                raise failures.pop()
            return await original(*args, **kwargs)

        monkeypatch.setattr(_consuming, "consume", consume)  # what the RPC consumers call
        with anyio.fail_after(TIMEOUT):
            with pytest.raises(RuntimeError, match=r"^consume refused$"):
                await a.add_rpc_subscriber(lambda _c, m: "a", "pid-1")
            # no binding (unroutable at once), no queue (another connection may take it)
            with pytest.raises(UnroutableError):
                await b.rpc_send("pid-1", None)
            await b.add_rpc_subscriber(lambda _c, m: "b", "pid-1")
            assert await a.rpc_send("pid-1", None) == "b"
            await b.remove_rpc_subscriber("pid-1")
            # and a's channels still work
            await a.add_rpc_subscriber(lambda _c, m: "a", "pid-1")
            assert await b.rpc_send("pid-1", None) == "a"


@amqp
@pytest.mark.slow
async def test_no_rpc_is_lost_when_its_subscriber_is_removed_under_a_flood(
    namespace: str,
) -> None:
    """A sender keeps calling while the subscriber is removed: every call is answered by the
    subscriber or fails with UnroutableError, none hangs; after the removal, calls are
    unroutable at once."""
    async with make(namespace) as server, make(namespace) as client:
        for round_ in range(6):
            key = f"flood-{round_}"
            await server.add_rpc_subscriber(lambda _c, m: m, key)
            futures: list[concurrent.futures.Future[Any]] = []
            removed = anyio.Event()
            with anyio.fail_after(TIMEOUT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(flood, client, key, removed, futures)
                    await anyio.sleep(0.02 * (round_ + 1))  # in full flow
                    await server.remove_rpc_subscriber(key)
                    removed.set()
                with pytest.raises(UnroutableError):
                    await client.rpc_send(key, -1)
            values, unroutable = await settle(futures)
            # requests are routed in the order they were published: the answered ones first,
            # every one of them, then only unroutable ones
            assert values == list(range(len(values)))
            assert len(values) + unroutable == len(futures)
            assert values, "the flood started too late to test anything"


@amqp
async def test_remove_drains_a_queue_that_still_holds_requests(namespace: str) -> None:
    """When the queue holds messages at removal (RabbitMQ stopped pushing to a busy channel),
    the ``if_empty`` delete is refused; the remaining requests still reach the subscriber,
    and the communicator keeps working."""
    async with make(namespace) as server, make(namespace) as client:
        heard: list[int] = []

        def subscriber(_c: Communicator, m: int) -> int:
            heard.append(m)
            return m * 10

        await server.add_rpc_subscriber(subscriber, "busy")
        io = io_of(server)
        sub = io.rpc_consumers.subs["busy"]

        async def pause() -> None:
            # stand-in for a consumer RabbitMQ no longer pushes to: no consumer at all
            assert sub.channel is not None
            assert sub.tag is not None
            await sub.channel.basic_cancel(sub.tag)

        async def queued() -> int:
            assert io.session is not None
            control = await io.connection.control(io.session)
            ok = await (await control.get_underlay_channel()).queue_declare(
                sub.queue_name, passive=True
            )
            return int(ok.message_count or 0)

        await on_io(server, pause)
        futures = [client.rpc_send_future("busy", i) for i in range(30)]
        with anyio.fail_after(TIMEOUT):
            await until_io_says(server, queued, lambda n: n == 30)
            await server.remove_rpc_subscriber("busy")
            values, unroutable = await settle(futures)
            assert (values, unroutable) == ([i * 10 for i in range(30)], 0)
            assert heard == list(range(30))
            with pytest.raises(UnroutableError):
                await client.rpc_send("busy", 0)
            await server.add_rpc_subscriber(lambda _c, m: m + 1, "busy")
            assert await client.rpc_send("busy", 1) == 2
            await server.remove_rpc_subscriber("busy")
            await client.add_rpc_subscriber(lambda _c, m: m + 2, "busy")
            assert await server.rpc_send("busy", 1) == 3


@amqp
async def test_removed_consumers_leave_no_bookkeeping_in_aiormq(namespace: str) -> None:
    """The remove does not cancel the consumer itself: deleting the queue makes RabbitMQ send
    ``basic.cancel``, on which aiormq drops the consumer."""
    async with make(namespace) as comm:
        io = io_of(comm)

        async def consumers() -> int:
            assert io.session is not None
            return len(io.session.consume.consumers)

        before = await on_io(comm, consumers)
        for i in range(20):
            await comm.add_rpc_subscriber(lambda _c, m: m, f"p{i}")
        assert await on_io(comm, consumers) == before + 20
        for i in range(20):
            await comm.remove_rpc_subscriber(f"p{i}")
        await until_io_says(comm, consumers, lambda n: n == before)


@amqp
async def test_add_and_remove_wait_for_two_broker_replies_each(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guard against the round trips creeping back: the add waits for the declare, then for
    the bind and the consumer together; the remove for the unbind, then the delete."""
    import aiormq.channel

    calls: list[str] = []
    original = aiormq.channel.Channel.rpc

    def rpc(self: Any, frame: Any, timeout: Any = None) -> Any:
        calls.append(type(frame).__qualname__)
        return original(self, frame, timeout=timeout)

    async with make(namespace) as comm:
        await comm.add_rpc_subscriber(lambda _c, m: m, "warm")  # opens the claim channel
        monkeypatch.setattr(aiormq.channel.Channel, "rpc", rpc)
        await comm.add_rpc_subscriber(lambda _c, m: m, "k")
        added, calls[:] = list(calls), []
        await comm.remove_rpc_subscriber("k")
        removed = list(calls)
    assert added[0] == "Queue.Declare"
    assert sorted(added[1:]) == ["Basic.Consume", "Queue.Bind"]
    assert removed == ["Queue.Unbind", "Queue.Delete"]
