"""``run_sync`` called where an event loop already runs says what to do instead (asyncio and
trio); from a thread without a loop it still works."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
import pytest

from corelib import ProcessError, run, run_get_process_sync, run_sync
from corelib.process._errors import LoopRunningError

from ._procs import ReturnsValue


class Counted(ReturnsValue):
    created = 0

    def on_create(self) -> None:
        super().on_create()
        type(self).created += 1


async def test_run_sync_in_a_running_loop_raises_a_specific_error(anyio_backend_name: str) -> None:
    before = Counted.created
    with pytest.raises(LoopRunningError) as info:
        run_sync(Counted, {"value": 1})
    assert str(info.value) == (
        f"run_sync can't be called from a thread that runs an event loop ({anyio_backend_name});"
        " in async code, use 'await corelib.run(...)' instead"
    )
    assert info.value.library == anyio_backend_name
    assert isinstance(info.value, RuntimeError)  # what anyio raised, so old handlers still work
    assert isinstance(info.value, ProcessError)
    assert Counted.created == before  # nothing was created, let alone run
    assert await run(Counted, {"value": 1}) == {}  # what the message advises: the outputs


async def test_run_sync_from_a_worker_thread_of_a_running_loop(anyio_backend_name: str) -> None:
    def in_thread() -> Any:
        return run_get_process_sync(ReturnsValue, {"value": 7}, backend=anyio_backend_name)

    assert (await anyio.to_thread.run_sync(in_thread)).result() == 7
