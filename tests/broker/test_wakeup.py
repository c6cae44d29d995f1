"""The cross-thread hand-off layer, and what happens when a loop is gone."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import anyio
import pytest

from broker import Communicator, LoopCommunicator, MemoryBroker, UnroutableError, wait_future
from broker._wakeup import Inbox, LoopGone, LoopHandle, ReplySlot, current_handle

TIMEOUT = 5


def _handle_of_finished_loop(backend: str) -> LoopHandle:
    holder: list[LoopHandle] = []

    async def main() -> None:
        holder.append(current_handle())

    thread = threading.Thread(target=anyio.run, args=(main,), kwargs={"backend": backend})
    thread.start()
    thread.join(TIMEOUT)
    return holder[0]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_posting_into_a_finished_loop_raises_loop_gone(backend: str) -> None:
    handle = _handle_of_finished_loop(backend)
    with pytest.raises(LoopGone):
        handle.post(print, "never")
    inbox: Inbox[int] = Inbox(handle, lambda batch: None)
    with pytest.raises(LoopGone):
        inbox.post(1)
    assert inbox.closed
    with pytest.raises(LoopGone):
        inbox.post(2)  # stays closed, and nothing is left behind
    assert inbox.close() == []


async def test_current_handle_is_cached_per_loop() -> None:
    assert current_handle() is current_handle()
    assert current_handle().is_current()


async def test_inbox_coalesces_a_burst_from_another_thread() -> None:
    batches: list[list[int]] = []
    done = anyio.Event()

    def on_batch(batch: Any) -> None:
        batches.append(list(batch))
        if sum(len(b) for b in batches) == 1000:
            done.set()

    inbox: Inbox[int] = Inbox(current_handle(), on_batch)

    def burst() -> None:
        for i in range(1000):
            inbox.post(i)

    # Block this loop's thread (deliberately, it's the point) while another thread posts the
    # burst: a busy loop must then receive it as a single batch through a single wake-up.
    thread = threading.Thread(target=burst)
    thread.start()
    thread.join(TIMEOUT)
    with anyio.fail_after(TIMEOUT):
        await done.wait()
    assert [i for b in batches for i in b] == list(range(1000))
    assert len(batches) == 1
    leftover = inbox.close()
    assert leftover == []
    with pytest.raises(LoopGone):
        inbox.post(1)


async def test_reply_slot_filled_from_another_thread_first_wins() -> None:
    slot: ReplySlot[str] = ReplySlot()

    def fill() -> None:
        slot.set_result("first")
        slot.set_result("second")
        slot.set_exception(RuntimeError("late"))

    await anyio.to_thread.run_sync(fill)
    with anyio.fail_after(TIMEOUT):
        assert await slot.wait() == "first"
    assert slot.done()


async def test_wait_future_from_any_loop() -> None:
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    threading.Timer(0, future.set_result, args=(7,)).start()
    with anyio.fail_after(TIMEOUT):
        assert await wait_future(future) == 7
        assert await wait_future(future) == 7  # already done
    failed: concurrent.futures.Future[int] = concurrent.futures.Future()
    failed.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        await wait_future(failed)


async def test_cancelling_wait_future_cancels_the_future() -> None:
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    with anyio.move_on_after(0):
        await wait_future(future)
    assert future.cancelled()


async def test_consumer_whose_loop_is_gone_has_its_tasks_requeued() -> None:
    broker = MemoryBroker()
    async with LoopCommunicator(broker) as sender, LoopCommunicator(broker) as survivor:
        dead = LoopCommunicator(broker, name="dead")
        async with dead:
            await dead.add_task_subscriber(lambda _c, t: "from the dead")
            await dead.add_rpc_subscriber(lambda _c, m: m, "dead-rpc")

            # From now on every hand-off into this communicator's loop fails, exactly as it
            # does when the loop has finished without closing the communicator.
            def gone(*_args: Any) -> None:
                raise LoopGone

            assert dead._handle is not None
            dead._handle._post_native = gone
            dead._thread_id = -1  # pretend senders are on other threads

            await survivor.add_task_subscriber(lambda _c, t: f"survivor took {t}", prefetch=1)
            # Round-robin offers a task to the dead consumer first or second; either way
            # every task ends up with the survivor.
            futures = [sender.task_send_future(i) for i in range(4)]
            with anyio.fail_after(TIMEOUT):
                replies = [await wait_future(f) for f in futures]
            assert replies == [f"survivor took {i}" for i in range(4)]
            # the failed task hand-off detached the endpoint, its rpc subscriber included
            with pytest.raises(UnroutableError, match=r"^unknown rpc recipient 'dead-rpc'$"):
                await sender.rpc_send("dead-rpc", 1)
            stats = broker.statistics()
            assert stats.communicators == 2  # the dead endpoint was detached
            assert stats.task_subscribers == 1


async def test_rpc_to_a_recipient_whose_loop_is_gone() -> None:
    broker = MemoryBroker()
    async with LoopCommunicator(broker) as sender, LoopCommunicator(broker) as dead:
        await dead.add_rpc_subscriber(lambda _c, m: m, "dead-rpc")

        def gone(*_args: Any) -> None:
            raise LoopGone

        assert dead._handle is not None
        dead._handle._post_native = gone
        dead._thread_id = -1
        with pytest.raises(UnroutableError, match=r"^rpc recipient 'dead-rpc' has closed$"):
            await sender.rpc_send("dead-rpc", 1)
        with pytest.raises(UnroutableError, match=r"^unknown rpc recipient 'dead-rpc'$"):
            await sender.rpc_send("dead-rpc", 1)


async def test_body_exception_propagates_unwrapped() -> None:
    with pytest.raises(KeyError, match=r"^'boom'$"):
        async with LoopCommunicator(MemoryBroker()):
            raise KeyError("boom")


async def test_rpc_in_flight_when_recipient_closes_fails_instead_of_hanging() -> None:
    broker = MemoryBroker()
    started = anyio.Event()

    async def slow(_c: Communicator, _msg: Any) -> Any:
        started.set()
        await anyio.sleep_forever()

    async with LoopCommunicator(broker) as client:
        async with LoopCommunicator(broker) as server:
            await server.add_rpc_subscriber(slow, "slow")
            future = client.rpc_send_future("slow", 1)
            with anyio.fail_after(TIMEOUT):
                await started.wait()
        with (
            anyio.fail_after(TIMEOUT),
            pytest.raises(UnroutableError, match=r"closed before replying$"),
        ):
            await wait_future(future)
