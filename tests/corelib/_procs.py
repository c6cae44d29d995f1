"""Processes and helpers shared by the process tests. No sleeps: handshakes only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from corelib import (
    Continue,
    ExitCode,
    Process,
    ProcessListener,
    ProcessSpec,
    ProcessState,
    Wait,
)

BOUND = 5  # seconds; a generous bound for things that must happen "at once"


class Gate:
    """A handshake with an async step: the step ``await gate.pass_()``; the test waits for
    ``gate.arrived`` and later calls ``gate.release()``."""

    def __init__(self) -> None:
        self.arrived = anyio.Event()
        self._released = anyio.Event()
        self.cancelled = False
        self.passed = False

    async def pass_(self) -> None:
        self.arrived.set()
        try:
            await self._released.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.passed = True

    def release(self) -> None:
        self._released.set()

    async def wait_arrived(self) -> None:
        with anyio.fail_after(BOUND):
            await self.arrived.wait()


class StateReached(ProcessListener):
    """Sets an event when the process enters ``state`` (or is found in it)."""

    def __init__(self, state: ProcessState) -> None:
        self.state = state
        self.event = anyio.Event()

    def _check(self, process: Process) -> None:
        if process.state is self.state:
            self.event.set()

    on_process_running = _check
    on_process_waiting = _check

    def on_process_finished(self, process: Process, outputs: Mapping[str, Any]) -> None:
        self._check(process)

    def on_process_excepted(self, process: Process, reason: str) -> None:
        self._check(process)

    def on_process_killed(self, process: Process, message: str | None) -> None:
        self._check(process)


async def reach(process: Process, state: ProcessState) -> None:
    """Wait (bounded) until ``process`` is in ``state``."""
    if process.state is state:
        return
    watcher = StateReached(state)
    process.add_process_listener(watcher)
    try:
        with anyio.fail_after(BOUND):
            await watcher.event.wait()
    finally:
        process.remove_process_listener(watcher)


async def settle(process: Process) -> None:
    """Wait (bounded) until the process's driver is blocked on play/resume, or it is terminal."""
    with anyio.fail_after(BOUND):
        while True:
            stats = process.statistics()
            if stats.blocked or stats.state.terminal:
                return
            # Handshake by polling the driver's own statistics once per scheduling round;
            # there is no sleep, only a yield.
            await anyio.lowlevel.checkpoint()


class Trivial(Process):
    """Finishes at once with ``None``."""


class ReturnsValue(Process):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("value", required=False)

    def run(self) -> Any:
        return self.inputs.get("value")


class GatedAsync(Process):
    """``run`` awaits its gate, then continues to ``second``, which returns ``"second"``."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("gate", valid_type=Gate)

    async def run(self) -> Any:
        await self.inputs.gate.pass_()
        self.after_gate = True
        return Continue(self.second)

    def second(self) -> str:
        return "second"


class GatedFinal(Process):
    """A one-step process whose only step awaits its gate, then returns ``"done"``."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("gate", valid_type=Gate)

    async def run(self) -> Any:
        await self.inputs.gate.pass_()
        return "done"


class Waiter(Process):
    """Waits for ``resume(value)`` (or its ``awaitable`` input) and returns the value."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("awaitable", required=False)

    def run(self) -> Any:
        return Wait(self.inputs.get("awaitable"), self.after, "for a value")

    def after(self, value: Any = "no value") -> Any:
        return value


class Fails(Process):
    def run(self) -> Any:
        raise ValueError("boom")


class WithExitCodes(Process):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.exit_code(400, "ERROR_BAD", "something bad")

    def run(self) -> ExitCode:
        code: ExitCode = self.exit_codes.ERROR_BAD
        return code
