"""Runner launch hooks, and the control binding attaching every process before its first step."""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest

from broker import LoopCommunicator, MemoryBroker
from corelib import Process, ProcessControl, ProcessController, ProcessState, Runner


class Records(Process):
    seen_by_hook: ClassVar[list[str]] = []

    def run(self) -> None:
        # the hook ran before this first step
        assert self.pid in Records.seen_by_hook


async def test_launch_hooks_run_before_the_first_step(caplog: pytest.LogCaptureFixture) -> None:
    Records.seen_by_hook = []

    def record(process: Process) -> None:
        Records.seen_by_hook.append(process.pid)
        assert process.state is ProcessState.CREATED

    def broken(process: Process) -> None:
        raise RuntimeError("hook bug")

    async with Runner() as runner:
        runner.add_launch_hook(record)
        runner.add_launch_hook(broken)
        first = runner.submit(Records)
        await first.wait()
        runner.remove_launch_hook(record)
        runner.remove_launch_hook(record)  # no error the second time
        second = runner.submit(Process)
        await second.wait()
    assert first.successful()  # the broken hook was logged, not raised
    assert Records.seen_by_hook == [first.pid]
    assert "launch hook" in caplog.text
    assert "hook bug" in caplog.text


async def test_processes_submitted_to_the_runner_are_attached_at_once() -> None:
    class Parked(Process):
        def run(self) -> Any:
            from corelib import Wait

            return Wait(None, self.done)

        def done(self, *_: Any) -> None:
            return None

    broker = MemoryBroker(strict=True)
    async with (
        LoopCommunicator(broker) as comm,
        LoopCommunicator(broker) as client,
        Runner() as runner,
        ProcessControl(runner, comm) as control,
    ):
        proc = runner.submit(Parked)  # not through the binding
        assert control.is_attached(proc)  # attached by the launch hook, before any step
        with anyio.fail_after(5):
            await control.subscribed(proc)
            status = await ProcessController(client).status(proc.pid)
            assert status["state"] in ("created", "running", "waiting")
            proc.kill()
            await proc.wait()
