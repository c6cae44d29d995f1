"""How a new user learns that a process failed: ``wait()`` returns however it ended,
``result()`` raises, and an excepted process is logged once with its traceback (on asyncio and
trio)."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from corelib import (
    Process,
    ProcessExceptedError,
    ProcessKilledError,
    ProcessState,
    Runner,
    Wait,
    run,
)

from ._procs import BOUND, Fails, Gate, GatedFinal, ReturnsValue, Waiter, reach


class FailsAsync(Process):
    async def run(self) -> Any:
        await anyio.lowlevel.checkpoint()
        raise ValueError("async boom")


async def _raises() -> None:
    await anyio.lowlevel.checkpoint()
    raise ValueError("awaited boom")


class AwaitsAFailure(Process):
    def run(self) -> Any:
        return Wait(_raises(), self.after)

    def after(self, value: Any) -> Any:  # pragma: no cover - never resumed with a value
        return value


class FinishHookFails(Process):
    def on_finish(self, result: Any, successful: bool) -> None:
        super().on_finish(result, successful)
        raise ValueError("hook boom")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "corelib.process" and r.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize(
    ("process_class", "message"),
    [
        (Fails, "boom"),
        (FailsAsync, "async boom"),
        (AwaitsAFailure, "awaited boom"),
        (FinishHookFails, "hook boom"),
    ],
)
async def test_an_excepted_process_is_logged_once_with_its_traceback(
    process_class: type[Process], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="corelib.process")
    async with Runner() as runner:
        proc = runner.submit(process_class)
        with anyio.fail_after(BOUND):
            await proc.wait()  # does not raise
    assert proc.state is ProcessState.EXCEPTED
    [record] = _warnings(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"process {proc.pid} ({process_class.__qualname__}) excepted: ValueError: {message}"
    )
    assert record.exc_info is not None
    assert record.exc_info[1] is proc.exception
    text = "".join(traceback.format_exception(*record.exc_info))
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith(f"ValueError: {message}")
    assert "Traceback" in caplog.text


async def test_result_raises_what_wait_does_not(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="corelib.process")
    async with Runner() as runner:
        failed = runner.submit(Fails)
        killed = runner.submit(Waiter)
        await reach(killed, ProcessState.WAITING)
        killed.kill("rolled back")
        with anyio.fail_after(BOUND):
            assert await failed.wait() is None
            assert await killed.wait() is None
    with pytest.raises(ProcessExceptedError, match=r"excepted: ValueError: boom$") as info:
        failed.result()
    assert info.value.__cause__ is failed.exception
    with pytest.raises(ProcessKilledError, match=r"was killed: rolled back$"):
        killed.result()
    assert len(_warnings(caplog)) == 1  # the excepted one; a kill is not a failure


async def test_run_raises_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="corelib.process")
    with pytest.raises(ProcessExceptedError) as info:
        await run(FailsAsync)
    assert isinstance(info.value.__cause__, ValueError)
    [record] = _warnings(caplog)
    assert record.exc_info is not None
    assert record.exc_info[1] is info.value.__cause__


async def test_finished_and_killed_processes_log_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="corelib.process")
    gate = Gate()
    async with Runner() as runner:
        finished = runner.submit(ReturnsValue, {"value": 1})
        waiting = runner.submit(Waiter)
        stepping = runner.submit(GatedFinal, {"gate": gate})
        await gate.wait_arrived()
        await reach(waiting, ProcessState.WAITING)
        waiting.kill()
        await stepping.kill("stop the step")  # cancels the async step at its await
        with anyio.fail_after(BOUND):
            await finished.wait()
    assert finished.result() == 1
    assert waiting.state is stepping.state is ProcessState.KILLED
    assert gate.cancelled
    assert _warnings(caplog) == []
