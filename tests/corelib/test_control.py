"""Pause, play, kill and force kill: the decision table acted out in every situation, and a
regression test for each plumpy control defect (plumpy-semantics.md §1.6, §3.4, §5.2, §5.8)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from corelib import (
    Continue,
    ControlHandle,
    ControlOutcome,
    Killed,
    Process,
    ProcessListener,
    ProcessSpec,
    ProcessState,
    Runner,
    Wait,
)
from corelib.process._states import Request

from ._procs import (
    BOUND,
    Fails,
    Gate,
    GatedAsync,
    GatedFinal,
    Trivial,
    Waiter,
    settle,
)

S = ProcessState

SITUATIONS = [
    "created",
    "created paused",
    "running step",
    "running paused",
    "waiting",
    "waiting paused",
    "finished",
    "excepted",
    "killed",
]


async def build(situation: str, runner: Runner) -> tuple[Process, Gate]:
    """Put a process into ``situation``; its driver (if launched) is settled."""
    gate = Gate()
    proc: Process
    match situation:
        case "created":
            proc = GatedAsync({"gate": gate})
        case "created paused":
            proc = GatedAsync({"gate": gate})
            assert (await proc.pause()) == ControlOutcome(True, "paused")
            runner.launch(proc)
            await settle(proc)
        case "running step":
            proc = runner.submit(GatedAsync, {"gate": gate})
            await gate.wait_arrived()
        case "running paused":
            proc = runner.submit(GatedAsync, {"gate": gate})
            await gate.wait_arrived()
            handle = proc.pause()
            gate.release()
            assert (await handle) == ControlOutcome(True, "paused")
            await settle(proc)
        case "waiting" | "waiting paused":
            proc = runner.submit(Waiter)
            await settle(proc)
            if situation == "waiting paused":
                assert (await proc.pause()) == ControlOutcome(True, "paused")
        case "finished":
            proc = runner.submit(Trivial)
            await proc.wait()
        case "excepted":
            proc = runner.submit(Fails)
            await proc.wait()
        case "killed":
            proc = runner.submit(Waiter)
            await settle(proc)
            proc.kill("before")
        case _:  # pragma: no cover
            raise AssertionError(situation)
    return proc, gate


def situation_state(situation: str) -> ProcessState:
    return {
        "created": S.CREATED,
        "running": S.RUNNING,
        "waiting": S.WAITING,
        "finished": S.FINISHED,
        "excepted": S.EXCEPTED,
        "killed": S.KILLED,
    }[situation.split()[0]]


def expected_now(situation: str, request: Request) -> tuple[ControlOutcome | None, S, bool]:
    """(outcome at once or None if deferred, state at once, paused at once)."""
    state = situation_state(situation)
    paused = situation.endswith("paused")
    if state.terminal:
        return ControlOutcome(False, f"process already {state.value}"), state, False
    stepping = situation == "running step"
    match request:
        case Request.PAUSE:
            if stepping:
                return None, state, False
            return ControlOutcome(True, "already paused" if paused else "paused"), state, True
        case Request.PLAY:
            return ControlOutcome(True, "played" if paused else "not paused"), state, False
        case Request.KILL if stepping:
            return None, state, False
        case _:
            return ControlOutcome(True, "killed"), S.KILLED, False


def send(proc: Process, request: Request) -> ControlHandle:
    match request:
        case Request.PAUSE:
            return proc.pause("hold on")
        case Request.PLAY:
            return proc.play()
        case Request.KILL:
            return proc.kill("stop")
        case Request.FORCE_KILL:
            return proc.kill("stop now", force=True)


async def finish_off(proc: Process, gate: Gate, runner: Runner) -> None:
    """Drive the process to a terminal state by releasing everything it may wait for."""
    if proc.statistics().launched is False and not proc.has_terminated():
        runner.launch(proc)
    with anyio.fail_after(BOUND):
        while not proc.has_terminated():
            gate.release()
            if proc.paused:
                proc.play()
            if proc.state is S.WAITING:
                proc.resume("late")
            await settle(proc)


@pytest.mark.parametrize("request_", list(Request), ids=lambda r: r.value.replace(" ", "_"))
@pytest.mark.parametrize("situation", SITUATIONS, ids=lambda s: s.replace(" ", "_"))
async def test_control_in_every_situation(situation: str, request_: Request) -> None:
    outcome, state, paused = expected_now(situation, request_)
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            proc, gate = await build(situation, runner)
            before = proc.history
            handle = send(proc, request_)
            assert handle.request is request_
            assert handle.outcome == outcome
            assert handle.done() is (outcome is not None)
            assert proc.state is state
            assert proc.paused is paused
            if state.terminal:
                # A terminal process never changes again.
                assert proc.history[: len(before)] == before
            if outcome is None:
                # Deferred: a pause waits for the step to end; a graceful kill cancels the
                # async step at its await and kills when it returns.
                assert proc.statistics().stepping
                if request_ is Request.PAUSE:
                    assert proc.statistics().pause_pending
                    gate.release()
                    assert (await handle) == ControlOutcome(True, "paused")
                    assert proc.state is S.RUNNING
                    assert proc.paused
                else:
                    assert proc.statistics().kill_pending
                    assert (await handle) == ControlOutcome(True, "killed")
                    assert proc.state is S.KILLED
                    assert gate.cancelled
            else:
                assert (await handle) == outcome
            if (
                request_ in (Request.KILL, Request.FORCE_KILL)
                and not situation_state(situation).terminal
            ):
                assert proc.state is S.KILLED
                assert not proc.paused
                assert proc.state_data == Killed(
                    "stop now" if request_ is Request.FORCE_KILL else "stop"
                )
            await finish_off(proc, gate, runner)
        # Leaving the runner proves the driver left nothing behind.
    assert proc.has_terminated()
    assert not proc.paused
    assert proc.statistics().driving is False
    if request_ is Request.FORCE_KILL and situation == "running step":
        assert gate.cancelled
        assert not gate.passed


# --------------------------------------------------------------------------------------------
# plumpy defects, one regression test each


async def test_kill_while_paused_leaves_no_task_and_clears_paused() -> None:
    # plumpy: KILLED, but the step task stays pending forever and paused stays True.
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            proc = runner.submit(Waiter)
            await settle(proc)
            await proc.pause()
            assert (await proc.kill("bye")) == ControlOutcome(True, "killed")
            assert proc.state is S.KILLED
            assert not proc.paused
    assert not proc.statistics().driving


class WaitsOnTask(Process):
    """Waits on an async callable and records whether that wait got cancelled."""

    cancelled = False

    def run(self) -> Any:
        return Wait(self.forever, self.after)

    async def forever(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self.cancelled = True

    def after(self, value: Any) -> Any:  # pragma: no cover - never resumed
        return value


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "force"])
async def test_kill_while_waiting_cancels_the_wait(force: bool) -> None:
    # plumpy: after a force kill while WAITING the step task never completes.
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            proc = runner.submit(WaitsOnTask)
            await settle(proc)
            outcome = await proc.kill("cut", force=force)
            assert proc.state is S.KILLED
    assert outcome == ControlOutcome(True, "killed")
    assert proc.cancelled
    assert not proc.statistics().driving


class ForceKillsItself(Process):
    """Force-kills itself in a sync step and then returns (or raises)."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("raise_after", valid_type=bool, default=False)

    def run(self) -> Any:
        handle = self.kill("from inside", force=True)
        self.state_in_step = self.state
        self.outcome_in_step = handle.outcome
        if self.inputs.raise_after:
            raise RuntimeError("after the kill")
        return Continue(self.never)

    def never(self) -> None:  # pragma: no cover - must never run
        raise AssertionError


class SwallowsCancel(Process):
    """An async step that swallows its cancellation and returns normally."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("gate", valid_type=Gate)
        spec.input("raise_after", valid_type=bool, default=False)

    async def run(self) -> Any:
        try:
            await self.inputs.gate.pass_()
        except anyio.get_cancelled_exc_class():
            if self.inputs.raise_after:
                raise RuntimeError("cleanup failed") from None
            return "swallowed"
        return "not cancelled"  # pragma: no cover


class Events(ProcessListener):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_process_killed(self, process: Process, message: str | None) -> None:
        self.calls.append(f"killed({message})")

    def on_process_excepted(self, process: Process, reason: str) -> None:
        self.calls.append(f"excepted({reason})")

    def on_process_finished(self, process: Process, outputs: Any) -> None:
        self.calls.append("finished")


@pytest.mark.parametrize("raise_after", [False, True], ids=["returns", "raises"])
async def test_force_kill_in_sync_step_never_flips_to_excepted(raise_after: bool) -> None:
    # plumpy: KILLED at once, then EXCEPTED ("Cannot transition from KILLED to RUNNING").
    events = Events()
    async with Runner() as runner:
        proc = runner.submit(ForceKillsItself, {"raise_after": raise_after}, listeners=[events])
    assert proc.state_in_step is S.KILLED
    assert proc.outcome_in_step == ControlOutcome(True, "killed")
    assert proc.state is S.KILLED
    assert events.calls == ["killed(from inside)"]
    assert [m.event for m in proc.history] == ["Start", "Kill"]


@pytest.mark.parametrize("raise_after", [False, True], ids=["swallows", "raises"])
@pytest.mark.parametrize("force", [False, True], ids=["graceful", "force"])
async def test_kill_of_async_step_that_misbehaves(force: bool, raise_after: bool) -> None:
    events = Events()
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(
            SwallowsCancel, {"gate": gate, "raise_after": raise_after}, listeners=[events]
        )
        await gate.wait_arrived()
        handle = proc.kill("k", force=force)
        assert (await handle) == ControlOutcome(True, "killed")
    assert gate.cancelled
    assert proc.state is S.KILLED
    assert events.calls == ["killed(k)"]


class KillsGracefullyInSyncStep(Process):
    def run(self) -> Any:
        self.handle = self.kill("graceful")
        self.after_kill = True  # plumpy's test_kill_in_run: code after kill() still runs
        self.state_in_step = self.state
        return Continue(self.never)

    def never(self) -> None:  # pragma: no cover - must never run
        raise AssertionError


async def test_graceful_kill_in_sync_step_takes_effect_at_its_end() -> None:
    async with Runner() as runner:
        proc = runner.submit(KillsGracefullyInSyncStep)
    assert proc.after_kill
    assert proc.state_in_step is S.RUNNING
    assert proc.state is S.KILLED
    assert proc.handle.outcome == ControlOutcome(True, "killed")
    assert [m.event for m in proc.history] == ["Start", "Kill"]


class PausesInFinalStep(Process):
    def run(self) -> Any:
        self.handle = self.pause("in run")
        return "result"


async def test_pause_in_final_step_does_not_leave_finished_paused() -> None:
    # plumpy: FINISHED and paused=True.
    async with Runner() as runner:
        proc = runner.submit(PausesInFinalStep)
    assert proc.state is S.FINISHED
    assert not proc.paused
    assert proc.handle.outcome == ControlOutcome(False, "process already finished")


class PausesThenContinues(Process):
    def run(self) -> Any:
        self.handle = self.pause()
        self.again = self.pause()
        return Continue(self.second)

    def second(self) -> str:
        return "second"


async def test_pause_in_step_applies_after_the_next_state_is_entered() -> None:
    async with Runner() as runner:
        proc = runner.submit(PausesThenContinues)
        await settle(proc)
        assert (await proc.handle) == ControlOutcome(True, "paused")
        assert proc.again is proc.handle  # a pending pause is shared, not duplicated
        assert proc.state is S.RUNNING
        assert proc.paused
        assert [m.event for m in proc.history] == ["Start", "Continue"]
        await proc.play()
    assert proc.result() == "second"


async def test_play_cancels_a_pending_pause() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedAsync, {"gate": gate})
        await gate.wait_arrived()
        pause = proc.pause()
        play = proc.play()
        assert play.outcome == ControlOutcome(True, "pause cancelled")
        assert pause.outcome == ControlOutcome(False, "pause cancelled by play")
        gate.release()
    assert proc.result() == "second"


async def test_pending_pause_superseded_by_kill() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedFinal, {"gate": gate})
        await gate.wait_arrived()
        pause = proc.pause()
        kill = proc.kill("k")
        assert pause.outcome == ControlOutcome(False, "superseded by kill")
        refused = proc.pause()
        assert refused.outcome == ControlOutcome(False, "kill pending")
        assert (await kill) == ControlOutcome(True, "killed")


async def test_a_later_kill_supersedes_a_pending_one() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(SwallowsCancel, {"gate": gate})
        await gate.wait_arrived()
        first = proc.kill("first")
        second = proc.kill("second")
        assert first.outcome == ControlOutcome(False, "superseded by a later kill")
        assert (await second) == ControlOutcome(True, "killed")
    assert proc.state_data.message == "second"  # type: ignore[union-attr]


async def test_two_kills_in_a_row_while_waiting() -> None:
    # aiida-core #6868: two kills in a row broke plumpy's Waiting state.
    async with Runner() as runner:
        proc = runner.submit(Waiter)
        await settle(proc)
        first, second = proc.kill("one"), proc.kill("two")
    assert first.outcome == ControlOutcome(True, "killed")
    assert second.outcome == ControlOutcome(False, "process already killed")
    assert proc.state_data.message == "one"  # type: ignore[union-attr]


async def test_resume_while_paused_keeps_value_until_play() -> None:
    async with Runner() as runner:
        proc = runner.submit(Waiter)
        await settle(proc)
        await proc.pause()
        assert proc.resume("kept")
        await settle(proc)
        assert proc.state is S.WAITING
        assert proc.paused
        assert (await proc.play()) == ControlOutcome(True, "played")
    assert proc.result() == "kept"


async def test_kill_after_resume_before_driver_continues() -> None:
    # plumpy's Waiting.interrupt raised InvalidStateError if the wait was already resolved.
    async with Runner() as runner:
        proc = runner.submit(Waiter)
        await settle(proc)
        proc.resume("value")
        assert (await proc.kill("late")) == ControlOutcome(True, "killed")
    assert proc.state is S.KILLED


class KillOnWaiting(ProcessListener):
    def on_process_waiting(self, process: Process) -> None:
        process.kill("listener")


class KillOnRunning(ProcessListener):
    def on_process_running(self, process: Process) -> None:
        process.kill("listener", force=True)


class RecordsRun(Process):
    ran = False

    def run(self) -> None:
        self.ran = True


async def test_kill_from_listeners() -> None:
    async with Runner() as runner:
        waiting = runner.submit(Waiter, listeners=[KillOnWaiting()])
        running = runner.submit(RecordsRun, listeners=[KillOnRunning()])
    assert waiting.state is S.KILLED
    assert [m.event for m in waiting.history] == ["Start", "Wait", "Kill"]
    assert running.state is S.KILLED
    assert not running.ran
    assert [m.event for m in running.history] == ["Start", "Kill"]


async def test_control_handle_api() -> None:
    proc = Trivial()
    handle = proc.pause()
    assert repr(handle) == "<ControlHandle pause: ControlOutcome(done=True, reason='paused')>"
    assert (await handle.wait()) == ControlOutcome(True, "paused")
    stats = proc.statistics()
    assert stats.paused
    assert not stats.launched
    assert not stats.blocked
    assert proc.kill().outcome == ControlOutcome(True, "killed")
    assert proc.play().outcome == ControlOutcome(False, "process already killed")
    assert not proc.paused


async def test_pause_and_play_listeners() -> None:
    calls: list[str] = []

    class PausePlay(ProcessListener):
        def on_process_paused(self, process: Process) -> None:
            calls.append("paused")

        def on_process_played(self, process: Process) -> None:
            calls.append("played")

    class Hooked(Waiter):
        def on_paused(self, msg: str | None) -> None:
            calls.append(f"on_paused({msg})")

        def on_played(self) -> None:
            calls.append("on_played")

    proc = Hooked(listeners=[PausePlay()])
    proc.pause("why")
    proc.pause("again")
    proc.play()
    proc.play()
    assert calls == ["on_paused(why)", "paused", "on_played", "played"]
