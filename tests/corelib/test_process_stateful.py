"""Hypothesis stateful test: random control requests to many concurrent processes.

Each example runs one event loop in a blocking portal (a thread), on asyncio or trio. Rules
call into that loop; after every rule the loop is *settled*: every process is either terminal
with its driver gone, blocked on an external request (play/resume), or blocked in a step at
its test-controlled gate. Processes make progress only when a rule lets them, so examples are
deterministic and hypothesis can shrink them.

Checked throughout: each request's immediate outcome agrees with the pure decision table;
terminal states stay terminal; histories only contain moves from ``TRANSITIONS`` and chain up
to the current state; a terminal process is never paused; a pending request only exists while
its process is inside a step; resolved outcomes never change. At the end every process is
driven to a terminal state, every outcome must resolve within a bound, and the runner must
exit with no driver task left.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from corelib import (
    NO_VALUE,
    Continue,
    ControlHandle,
    ControlOutcome,
    InvalidTransitionError,
    Process,
    ProcessSpec,
    ProcessState,
    Runner,
    Transition,
    Wait,
)
from corelib.process._states import EVENT_TYPES, TRANSITIONS, Action, Request, decide

BOUND = 5
MAX_PROCESSES = 4


class Gates:
    """Per-process gates that async steps block on until a rule opens them."""

    def __init__(self) -> None:
        self._events: dict[str, anyio.Event] = {}

    async def pass_(self, pid: str) -> None:
        event = self._events[pid] = anyio.Event()
        try:
            await event.wait()
        finally:
            if self._events.get(pid) is event:
                del self._events[pid]

    def blocked(self, pid: str) -> bool:
        event = self._events.get(pid)
        return event is not None and not event.is_set()

    def open(self, pid: str) -> None:
        event = self._events.get(pid)
        if event is not None:
            event.set()


class Stepper(Process):
    """gate -> Continue (kwargs) -> Wait for resume -> gate -> finish with the value."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("gates", valid_type=Gates)

    async def run(self) -> Any:
        await self.inputs.gates.pass_(self.pid)
        return Continue(self.middle, 1, k=2)

    def middle(self, a: int, *, k: int) -> Any:
        assert (a, k) == (1, 2)
        return Wait(None, self.after, "for a rule")

    async def after(self, value: Any = NO_VALUE) -> Any:
        await self.inputs.gates.pass_(self.pid)
        return value


def send(proc: Process, request: Request) -> ControlHandle:
    match request:
        case Request.PAUSE:
            return proc.pause("p")
        case Request.PLAY:
            return proc.play()
        case Request.KILL:
            return proc.kill("k")
        case Request.FORCE_KILL:
            return proc.kill("f", force=True)


class ControlMachine(RuleBasedStateMachine):
    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.ExitStack()
        self.portal = self.stack.enter_context(
            anyio.from_thread.start_blocking_portal(self.backend)
        )
        self.runner = self.stack.enter_context(self.portal.wrap_async_context_manager(Runner()))
        self.gates = Gates()
        self.procs: list[Process] = []
        self.handles: list[tuple[Process, ControlHandle]] = []
        self.seen_outcomes: dict[int, ControlOutcome] = {}
        self.resumed: set[str] = set()
        self.terminal: dict[str, tuple[ProcessState, tuple[Transition, ...]]] = {}

    # -- helpers (run in the loop) ----------------------------------------------------------

    def _quiet(self, proc: Process) -> bool:
        stats = proc.statistics()
        if stats.state.terminal:
            return not stats.driving
        return stats.blocked or (stats.stepping and self.gates.blocked(proc.pid))

    async def _settle(self) -> None:
        with anyio.fail_after(BOUND):
            while not all(self._quiet(p) for p in self.procs):
                # Let the drivers run one scheduling round; settling is a fixed point of
                # process progress (no timing involved: nothing here waits on a clock).
                await anyio.lowlevel.checkpoint()

    def _pick(self, index: int) -> Process:
        return self.procs[index % len(self.procs)]

    # -- rules ------------------------------------------------------------------------------

    @precondition(lambda self: len(self.procs) < MAX_PROCESSES)
    @rule()
    def create(self) -> None:
        async def create() -> None:
            self.procs.append(self.runner.submit(Stepper, {"gates": self.gates}))
            await self._settle()

        self.portal.call(create)

    @precondition(lambda self: bool(self.procs))
    @rule(index=st.integers(0, MAX_PROCESSES - 1), request=st.sampled_from(list(Request)))
    def control(self, index: int, request: Request) -> None:
        async def control() -> None:
            proc = self._pick(index)
            stats = proc.statistics()
            expected = decide(
                request,
                stats.state,
                paused=stats.paused,
                stepping=stats.stepping,
                pause_pending=stats.pause_pending,
                kill_pending=stats.kill_pending,
            )
            handle = send(proc, request)
            if expected.action is Action.DEFER:
                assert not handle.done()
            else:
                done = expected.action is not Action.REFUSE
                assert handle.outcome == ControlOutcome(done, expected.reason)
            if expected.action is Action.NOW and request in (Request.KILL, Request.FORCE_KILL):
                assert proc.state is ProcessState.KILLED
            self.handles.append((proc, handle))
            await self._settle()

        self.portal.call(control)

    @precondition(lambda self: bool(self.procs))
    @rule(index=st.integers(0, MAX_PROCESSES - 1), value=st.integers())
    def resume(self, index: int, value: int) -> None:
        async def resume() -> None:
            proc = self._pick(index)
            state = proc.state
            if state is ProcessState.WAITING:
                # Stepper waits once, and only this rule resumes it.
                assert proc.resume(value) is (proc.pid not in self.resumed)
                self.resumed.add(proc.pid)
            else:
                message = f"^can't handle Resume in state {state.name}$"
                with pytest.raises(InvalidTransitionError, match=message):
                    proc.resume(value)
            await self._settle()

        self.portal.call(resume)

    @precondition(lambda self: bool(self.procs))
    @rule(index=st.integers(0, MAX_PROCESSES - 1))
    def advance(self, index: int) -> None:
        async def advance() -> None:
            self.gates.open(self._pick(index).pid)
            await self._settle()

        self.portal.call(advance)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        self.portal.call(self._check)

    def _check(self) -> None:
        for proc in self.procs:
            state = proc.state
            previous = ProcessState.CREATED
            for move in proc.history:
                assert move.from_state is previous
                assert TRANSITIONS[move.from_state][EVENT_TYPES[move.event]] is move.to_state
                previous = move.to_state
            assert previous is state
            if proc.pid in self.terminal:
                assert (state, proc.history) == self.terminal[proc.pid]
            elif state.terminal:
                self.terminal[proc.pid] = (state, proc.history)
            if state.terminal:
                assert not proc.paused
                assert not proc.statistics().pause_pending
                assert not proc.statistics().kill_pending
        for proc, handle in self.handles:
            key = id(handle)
            if handle.outcome is None:
                stats = proc.statistics()
                assert stats.stepping
                assert stats.pause_pending or stats.kill_pending
            elif key in self.seen_outcomes:
                assert self.seen_outcomes[key] == handle.outcome
            else:
                self.seen_outcomes[key] = handle.outcome

    # -- the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.portal.call(self._finish_all)
        finally:
            self.stack.close()

    async def _finish_all(self) -> None:
        with anyio.fail_after(BOUND):
            while not all(p.has_terminated() for p in self.procs):
                for proc in self.procs:
                    if proc.paused:
                        proc.play()
                    if proc.state is ProcessState.WAITING:
                        proc.resume("end")
                    self.gates.open(proc.pid)
                await self._settle()
            for _proc, handle in self.handles:
                outcome = await handle
                assert isinstance(outcome, ControlOutcome)
            self._check()
        for proc in self.procs:
            assert not proc.statistics().driving
            assert not proc.paused
        assert not self.runner.processes


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_random_control_requests(backend: str) -> None:
    machine = type(f"ControlMachine_{backend}", (ControlMachine,), {"backend": backend})
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=50,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
