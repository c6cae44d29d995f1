"""Real threads: communicators on different loops and backends, and plain-thread senders."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from broker import (
    BlockingCommunicator,
    BroadcastFilter,
    Communicator,
    LoopCommunicator,
    LoopThreadError,
    MemoryBroker,
    RemoteError,
    UnroutableError,
    wait_future,
)

from ._remote import RemoteLoop

TIMEOUT = 5


@pytest.fixture(params=["asyncio", "trio"])
def remote_backend(request: pytest.FixtureRequest) -> str:
    """The backend of the other thread's loop; with anyio_backend this covers all 4 pairs."""
    return request.param  # type: ignore[no-any-return]


async def test_rpc_runs_on_the_subscribers_own_thread(remote_backend: str) -> None:
    broker = MemoryBroker()
    seen_threads: list[int] = []

    async def setup(comm: LoopCommunicator) -> None:
        def handler(_c: Communicator, msg: Any) -> Any:
            seen_threads.append(threading.get_ident())
            return msg + 1

        await comm.add_rpc_subscriber(handler, "remote")

    async with (
        RemoteLoop(broker, remote_backend, setup) as remote,
        LoopCommunicator(broker) as local,
    ):
        await local.add_rpc_subscriber(lambda _c, m: (threading.get_ident(), m * 2), "local")
        with anyio.fail_after(TIMEOUT):
            assert await local.rpc_send("remote", 1) == 2
            assert await local.rpc_send("remote", 41) == 42
        assert seen_threads == [remote.thread_id, remote.thread_id]
        assert remote.thread_id != threading.get_ident()
        # and the other way: the remote loop calls a subscriber that runs on our loop
        assert remote.comm is not None
        future = remote.comm.rpc_send_future("local", 5)
        with anyio.fail_after(TIMEOUT):
            thread_id, value = await wait_future(future)
        assert (thread_id, value) == (threading.get_ident(), 10)


async def test_tasks_and_broadcasts_across_threads(remote_backend: str) -> None:
    broker = MemoryBroker(strict=True)
    remote_broadcasts: list[Any] = []
    got_broadcast = threading.Event()

    async def setup(comm: LoopCommunicator) -> None:
        async def work(_c: Communicator, task: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            if task == "fail":
                raise ValueError("remote failure")
            return [task, threading.get_ident()]

        def on_broadcast(_c: Communicator, body: Any, sender: Any, subject: Any, cid: Any) -> None:
            remote_broadcasts.append((body, sender, subject))
            got_broadcast.set()

        await comm.add_task_subscriber(work)
        await comm.add_broadcast_subscriber(BroadcastFilter(on_broadcast, subject="state.*"))

    async with (
        RemoteLoop(broker, remote_backend, setup) as remote,
        LoopCommunicator(broker) as local,
    ):
        with anyio.fail_after(TIMEOUT):
            assert await local.task_send("job") == ["job", remote.thread_id]
            with pytest.raises(RemoteError, match=r"^ValueError: remote failure$"):
                await local.task_send("fail")
        await local.broadcast_send({"n": 1}, sender=7, subject="other")
        await local.broadcast_send({"n": 2}, sender=7, subject="state.done")
        assert await anyio.to_thread.run_sync(got_broadcast.wait, TIMEOUT)
    assert remote_broadcasts == [({"n": 2}, 7, "state.done")]


async def test_three_loops_on_one_broker() -> None:
    broker = MemoryBroker()
    hits: dict[str, set[int]] = {}
    lock = threading.Lock()
    broadcasts = threading.Semaphore(0)

    def setup_for(name: str) -> Any:
        async def setup(comm: LoopCommunicator) -> None:
            def work(_c: Communicator, task: Any) -> Any:
                with lock:
                    hits.setdefault(name, set()).add(threading.get_ident())
                return name

            def on_broadcast(*_args: Any) -> None:
                broadcasts.release()

            await comm.add_rpc_subscriber(lambda _c, m: f"{name}:{m}", name)
            await comm.add_task_subscriber(work, prefetch=1)
            await comm.add_broadcast_subscriber(on_broadcast)

        return setup

    async with (
        RemoteLoop(broker, "asyncio", setup_for("a1")) as a1,
        RemoteLoop(broker, "trio", setup_for("t1")) as t1,
        RemoteLoop(broker, "asyncio", setup_for("a2")) as a2,
        LoopCommunicator(broker) as local,
    ):
        with anyio.fail_after(TIMEOUT):
            for name in ("a1", "t1", "a2"):
                assert await local.rpc_send(name, "ping") == f"{name}:ping"
            futures = [local.task_send_future(i) for i in range(60)]
            replies = [await wait_future(f) for f in futures]
        assert set(replies) <= {"a1", "t1", "a2"}
        assert len(replies) == 60
        # each consumer ran only on its own thread
        assert hits.get("a1", {a1.thread_id}) == {a1.thread_id}
        assert hits.get("t1", {t1.thread_id}) == {t1.thread_id}
        assert hits.get("a2", {a2.thread_id}) == {a2.thread_id}
        await local.broadcast_send("to all")
        for _ in range(3):
            assert await anyio.to_thread.run_sync(broadcasts.acquire, True, TIMEOUT)
    stats = broker.statistics()
    assert stats.communicators == 0
    assert stats.pending == 0
    assert stats.in_flight == 0


async def test_handlers_calling_each_other_across_loops_do_not_deadlock(
    remote_backend: str,
) -> None:
    broker = MemoryBroker()

    async def setup(comm: LoopCommunicator) -> None:
        async def pong(c: Communicator, n: int) -> Any:
            # called from the local loop's handler; calls back into the local loop
            return await c.rpc_send("ping", n - 1) if n > 0 else "bottom"

        await comm.add_rpc_subscriber(pong, "pong")

    async with RemoteLoop(broker, remote_backend, setup), LoopCommunicator(broker) as local:

        async def ping(c: Communicator, n: int) -> Any:
            return await c.rpc_send("pong", n - 1) if n > 0 else "bottom"

        await local.add_rpc_subscriber(ping, "ping")
        with anyio.fail_after(TIMEOUT):
            assert await local.rpc_send("ping", 20) == "bottom"


async def test_a_burst_into_a_busy_loop_costs_one_wakeup(remote_backend: str) -> None:
    broker = MemoryBroker()
    entered = threading.Event()
    release = threading.Event()
    posts: list[int] = []

    async def setup(comm: LoopCommunicator) -> None:
        handle = comm._handle
        assert handle is not None
        original = handle._post_native

        def counting_post(fn: Any, args: Any) -> None:
            posts.append(1)
            original(fn, args)

        handle._post_native = counting_post

        def handler(_c: Communicator, msg: Any) -> Any:
            if msg == "block":
                entered.set()
                release.wait(TIMEOUT)  # holds the remote loop's thread: a busy step
            return msg

        await comm.add_rpc_subscriber(handler, "busy")

    async with RemoteLoop(broker, remote_backend, setup), LoopCommunicator(broker) as local:
        blocker = local.rpc_send_future("busy", "block")
        assert await anyio.to_thread.run_sync(entered.wait, TIMEOUT)
        posts.clear()
        # the remote thread is blocked; none of these sends may block our loop
        futures = [local.rpc_send_future("busy", i) for i in range(500)]
        assert len(posts) == 1  # one call-soon for the whole burst
        assert not any(f.done() for f in futures)
        release.set()
        with anyio.fail_after(TIMEOUT):
            assert await wait_future(blocker) == "block"
            assert [await wait_future(f) for f in futures] == list(range(500))


async def test_reply_to_a_sender_whose_loop_has_finished_is_dropped() -> None:
    broker = MemoryBroker()
    sent = threading.Event()

    def short_lived_sender() -> None:
        async def main() -> None:
            async with LoopCommunicator(broker) as comm:
                comm.task_send_future("orphan")  # nobody waits for this reply
                await comm.task_send("x", no_reply=True)
            sent.set()

        anyio.run(main, backend="trio")

    thread = threading.Thread(target=short_lived_sender)
    thread.start()
    await anyio.to_thread.run_sync(thread.join, TIMEOUT)
    assert sent.is_set()
    async with LoopCommunicator(broker) as worker:
        done = anyio.Event()
        handled: list[Any] = []

        def work(_c: Communicator, task: Any) -> Any:
            handled.append(task)
            if len(handled) == 2:
                done.set()
            return task

        await worker.add_task_subscriber(work)
        with anyio.fail_after(TIMEOUT):
            await done.wait()
    assert sorted(handled) == ["orphan", "x"]
    assert broker.statistics().in_flight == 0


# -- plain threads -----------------------------------------------------------------------------


async def test_plain_thread_uses_the_blocking_facade(remote_backend: str) -> None:
    broker = MemoryBroker(strict=True)
    results: dict[str, Any] = {}

    async with LoopCommunicator(broker) as local:
        loop_thread = threading.get_ident()
        await local.add_rpc_subscriber(lambda _c, m: [m, threading.get_ident()], "local")
        await local.add_task_subscriber(lambda _c, t: t.upper())
        heard = anyio.Event()
        heard_body: list[Any] = []

        def on_broadcast(_c: Communicator, body: Any, *_rest: Any) -> None:
            heard_body.append(body)
            heard.set()

        await local.add_broadcast_subscriber(on_broadcast)

        def script() -> None:
            with BlockingCommunicator(broker, backend=remote_backend, timeout=TIMEOUT) as comm:
                results["rpc"] = comm.rpc_send("local", 1)
                results["task"] = comm.task_send("shout")
                results["future"] = comm.rpc_send_future("local", 2).result(TIMEOUT)
                try:
                    comm.rpc_send("missing", 0)
                except UnroutableError as exc:
                    results["unroutable"] = str(exc)
                comm.add_rpc_subscriber(lambda _c, m: [m, threading.get_ident()], "script")
                results["self"] = comm.rpc_send("script", 3)
                results["facade_thread"] = comm._thread.ident
                comm.broadcast_send("hello from a script", sender="script")

        await anyio.to_thread.run_sync(script)
        with anyio.fail_after(TIMEOUT):
            await heard.wait()
    assert results["rpc"] == [1, loop_thread]
    assert results["task"] == "SHOUT"
    assert results["future"] == [2, loop_thread]
    assert results["unroutable"] == "unknown rpc recipient 'missing'"
    # the facade's own subscriber ran on the facade's loop thread
    assert results["self"] == [3, results["facade_thread"]]
    assert heard_body == ["hello from a script"]
    assert broker.statistics().communicators == 0


async def test_blocking_facade_refuses_to_block_a_loop() -> None:
    broker = MemoryBroker()
    with pytest.raises(LoopThreadError, match=r"would block this thread's event loop"):
        BlockingCommunicator(broker)

    comm = await anyio.to_thread.run_sync(lambda: BlockingCommunicator(broker))
    try:
        with pytest.raises(LoopThreadError, match=r"^BlockingCommunicator.add_rpc_subscriber "):
            comm.add_rpc_subscriber(lambda _c, m: m, "x")
        with pytest.raises(LoopThreadError, match=r"^waiting for a reply would block"):
            comm.rpc_send("x", 1)
    finally:
        await anyio.to_thread.run_sync(comm.close)
    assert comm.is_closed
    assert repr(comm).endswith("closed>")
