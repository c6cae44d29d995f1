"""A memory task subscriber's prefetch changes while it consumes (``set_task_prefetch``): what
a worker uses so that tasks whose processes wait hold no slot."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from broker import Communicator, LoopCommunicator, MemoryBroker
from broker._errors import UnknownSubscriberError

pytestmark = pytest.mark.anyio


async def test_raising_prefetch_delivers_at_once_and_lowering_keeps_what_is_held() -> None:
    broker = MemoryBroker(strict=True)
    started: list[int] = []
    release = anyio.Event()
    more = anyio.Event()

    async def hold(_comm: Communicator, n: int) -> int:
        started.append(n)
        if len(started) == 2:
            more.set()
        await release.wait()
        return n

    with anyio.fail_after(5):
        async with LoopCommunicator(broker) as sender, LoopCommunicator(broker) as worker:
            key = await worker.add_task_subscriber(hold, prefetch=1)
            futures = [sender.task_send_future(n) for n in range(3)]
            while not started:
                await anyio.lowlevel.checkpoint()
            assert started == [0]
            assert broker.statistics().pending == 2
            worker.set_task_prefetch(key, 2)  # one more slot: the next task comes at once
            await more.wait()
            assert started == [0, 1]
            worker.set_task_prefetch(key, 1)  # keeps both; the third waits for two acks
            release.set()
            results = [await _result(f) for f in futures]
            assert results == [0, 1, 2]
            assert broker.statistics().in_flight == 0


async def _result(future: Any) -> Any:
    from broker import wait_future

    return await wait_future(future)


async def test_set_task_prefetch_names_a_bad_value_or_subscriber() -> None:
    broker = MemoryBroker()
    async with LoopCommunicator(broker) as comm:
        key = await comm.add_task_subscriber(lambda _c, n: n)
        with pytest.raises(ValueError, match="prefetch must be an int >= 0, got -1"):
            comm.set_task_prefetch(key, -1)
        with pytest.raises(ValueError, match="got True"):
            comm.set_task_prefetch(key, True)
        with pytest.raises(UnknownSubscriberError, match="no task subscriber 'nope'"):
            comm.set_task_prefetch("nope", 1)
        comm.set_task_prefetch(key, 0)  # no limit
