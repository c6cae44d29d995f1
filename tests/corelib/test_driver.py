"""The driver: what drives a process when, and what a blocked process holds (nothing).

See the theory of operation in ``corelib/process/_driver.py``: the runner's pump advances queued
processes round-robin, an async step gets a task, ``Runner.run`` drives inline in the calling
task, and a process blocked on ``play``/``resume`` is parked without any task.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from corelib import (
    Continue,
    Process,
    ProcessKilledError,
    ProcessSpec,
    ProcessState,
    Runner,
    Wait,
)
from corelib.runner._pump import _TURNS_PER_ROUND

from ._procs import (
    BOUND,
    Gate,
    GatedFinal,
    StateReached,
    Trivial,
    Waiter,
    reach,
    settle,
)

S = ProcessState


def task_count() -> int:
    return len(anyio.get_running_tasks())


# --------------------------------------------------------------------------------------------
# parked processes


async def test_blocked_processes_hold_no_task() -> None:
    async with Runner() as runner:
        baseline = task_count()
        waiters = [runner.submit(Waiter) for _ in range(50)]
        paused: list[Process] = []
        for _ in range(10):
            created = Trivial()
            await created.pause()
            paused.append(runner.launch(created))
        for proc in [*waiters, *paused]:
            await settle(proc)
            stats = proc.statistics()
            assert stats.blocked
            assert not stats.driving
            assert not proc.has_terminated()
        # Only the runner's pump, idling so that the runner can't be left under them.
        assert task_count() <= baseline + 1
        for index, proc in enumerate(waiters):
            proc.resume(index)
        for paused_proc in paused:
            paused_proc.play()
    assert [p.result() for p in waiters] == list(range(50))
    assert all(p.successful() for p in paused)


async def test_driving_and_blocked_statistics() -> None:
    async with Runner() as runner:
        proc = runner.submit(Waiter)
        queued = proc.statistics()
        assert queued.driving
        assert not queued.blocked
        await settle(proc)
        assert proc.statistics().blocked
        proc.resume("v")
        resumed = proc.statistics()
        assert resumed.driving  # handed back to the pump at once
        assert not resumed.blocked
        await proc.wait()
    assert not proc.statistics().driving
    assert not proc.statistics().blocked


async def test_runner_exit_waits_for_parked_processes() -> None:
    async with anyio.create_task_group() as tg:

        async def resume_when_all_blocked(proc: Process) -> None:
            # The runner's body has ended and its exit waits: nothing else can run.
            await anyio.wait_all_tasks_blocked()
            proc.resume("late")

        async with Runner() as runner:
            proc = runner.submit(Waiter)
            await settle(proc)
            tg.start_soon(resume_when_all_blocked, proc)
        assert proc.result() == "late"


class WaitsOnEvent(Process):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("event", valid_type=anyio.Event)

    def run(self) -> Any:
        return Wait(self.inputs.event, self.after)

    def after(self) -> str:
        return "set"


async def test_waiting_on_an_awaitable_uses_one_watcher_task() -> None:
    event = anyio.Event()
    async with Runner() as runner:
        baseline = task_count()
        procs = [runner.submit(WaitsOnEvent, {"event": event}) for _ in range(10)]
        for proc in procs:
            await settle(proc)
            assert proc.statistics().blocked
        assert task_count() <= baseline + 1 + len(procs)
        event.set()
    assert all(p.result() == "set" for p in procs)


class WaitsOnSleeper(Process):
    """Waits on an async callable that sleeps forever, recording its cancellation."""

    cancelled = False

    def run(self) -> Any:
        return Wait(self.sleeper, self.after)

    async def sleeper(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self.cancelled = True

    def after(self, value: Any) -> Any:
        return value


async def test_resume_by_hand_stops_awaiting_the_awaitable() -> None:
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            proc = runner.submit(WaitsOnSleeper)
            await settle(proc)
            assert proc.resume("by hand")
    assert proc.result() == "by hand"
    assert proc.cancelled


async def test_pause_does_not_stop_a_wait_on_an_awaitable() -> None:
    event = anyio.Event()
    async with Runner() as runner:
        proc = runner.submit(WaitsOnEvent, {"event": event})
        await settle(proc)
        await proc.pause()
        event.set()
        with anyio.fail_after(BOUND):
            await anyio.wait_all_tasks_blocked()  # the watcher has seen the event
        assert proc.state is S.WAITING
        assert proc.statistics().blocked  # on play now
        assert not proc.resume("ignored")  # the event already resumed it
        await proc.play()
    assert proc.result() == "set"


# --------------------------------------------------------------------------------------------
# Runner.run: inline in the calling task


class SyncWhere(Process):
    def run(self) -> int:
        return anyio.get_current_task().id


class AsyncWhere(Process):
    async def run(self) -> Any:
        await anyio.lowlevel.checkpoint()
        return Continue(self.then)

    async def then(self) -> int:
        return anyio.get_current_task().id


async def test_run_drives_the_process_in_the_calling_task() -> None:
    me = anyio.get_current_task().id
    async with Runner() as runner:
        assert (await runner.run_get_process(SyncWhere)).result() == me
        assert (await runner.run_get_process(AsyncWhere)).result() == me
        assert not runner.processes


async def test_run_of_a_process_that_waits_returns_once_resumed() -> None:
    results: list[Any] = []
    async with Runner() as runner:
        watcher = StateReached(S.WAITING)

        async def call() -> None:
            done = await runner.run_get_process(Waiter, pid="w", listeners=[watcher])
            results.append(done.result())

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(BOUND):
                await watcher.event.wait()
            proc = runner.get_process("w")
            await settle(proc)
            assert proc.statistics().blocked
            proc.resume(3)
    assert results == [3]


@pytest.mark.parametrize("blocked", [False, True], ids=["stepping", "parked"])
async def test_cancelling_run_kills_the_process(blocked: bool) -> None:
    gate = Gate()
    async with Runner() as runner, anyio.create_task_group() as tg:
        if blocked:
            watcher = StateReached(S.WAITING)
            tg.start_soon(lambda: runner.run(Waiter, pid="p", listeners=[watcher]))
            with anyio.fail_after(BOUND):
                await watcher.event.wait()
        else:
            tg.start_soon(lambda: runner.run(GatedFinal, {"gate": gate}, pid="p"))
            await gate.wait_arrived()
        proc = runner.get_process("p")
        tg.cancel_scope.cancel()
    assert proc.state is S.KILLED
    assert proc.state_data.message == "killed by cancellation"  # type: ignore[union-attr]
    assert gate.cancelled is not blocked


async def test_runner_exit_waits_for_a_process_run_inline_from_outside() -> None:
    gate = Gate()
    async with anyio.create_task_group() as tg:
        async with Runner() as runner:
            tg.start_soon(lambda: runner.run(GatedFinal, {"gate": gate}, pid="outside"))
            await gate.wait_arrived()
            proc = runner.get_process("outside")

            async def release_when_all_blocked() -> None:
                await anyio.wait_all_tasks_blocked()
                gate.release()

            tg.start_soon(release_when_all_blocked)
        # Leaving the runner waited for the process driven by a task outside its block.
        assert proc.result() == "done"


class KillsThenReturnsCoroutine(Process):
    """A sync step that force-kills its process, then returns a coroutine to await."""

    started = False

    def run(self) -> Any:
        self.kill("now", force=True)
        return self.body()

    async def body(self) -> None:  # pragma: no cover - must never start
        self.started = True


async def test_force_kill_before_an_async_step_starts_never_starts_it() -> None:
    async with Runner() as runner:
        submitted = runner.submit(KillsThenReturnsCoroutine)
        with pytest.raises(ProcessKilledError, match=r"was killed: now$"):
            await runner.run(KillsThenReturnsCoroutine)
    assert submitted.state is S.KILLED
    assert not submitted.started
    assert [m.event for m in submitted.history] == ["Start", "Kill"]


# --------------------------------------------------------------------------------------------
# the pump


class Ticks(Process):
    """Runs ``steps`` sync steps, recording ``clock()`` at each."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("clock")
        spec.input("steps", valid_type=int, default=1)

    def run(self) -> Any:
        self.seen = [self.inputs.clock()]
        return self.step() if self.inputs.steps > 1 else None

    def step(self) -> Any:
        return Continue(self.next_step)

    def next_step(self) -> Any:
        self.seen.append(self.inputs.clock())
        return Continue(self.next_step) if len(self.seen) < self.inputs.steps else None


class Ticker:
    """A task that counts the scheduling rounds it gets."""

    def __init__(self) -> None:
        self.ticks = 0

    def clock(self) -> int:
        return self.ticks

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await anyio.lowlevel.checkpoint()


async def test_other_tasks_run_between_two_steps_of_a_process() -> None:
    ticker = Ticker()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        async with Runner() as runner:
            proc = runner.submit(Ticks, {"clock": ticker.clock, "steps": 20})
        tg.cancel_scope.cancel()
    # The ticker runs once per scheduling round (in any order relative to the pump on trio).
    assert proc.seen[-1] - proc.seen[0] >= len(proc.seen) - 2


async def test_other_tasks_run_between_rounds_of_many_processes() -> None:
    ticker = Ticker()
    count = 4 * _TURNS_PER_ROUND
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        async with Runner() as runner:
            procs = [runner.submit(Ticks, {"clock": ticker.clock}) for _ in range(count)]
        tg.cancel_scope.cancel()
    seen = [p.seen[0] for p in procs]
    assert seen == sorted(seen)  # queued order
    assert seen[-1] - seen[0] >= 2  # the pump yielded at least every _TURNS_PER_ROUND turns


async def test_terminal_process_is_not_yielded_after() -> None:
    # A trivial process run inline never yields: it has no step boundary to share.
    ticker = Ticker()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        await anyio.lowlevel.checkpoint()  # let the ticker start
        async with Runner() as runner:
            before = ticker.ticks
            for _ in range(10):
                await runner.run(Trivial)
            assert ticker.ticks == before
        tg.cancel_scope.cancel()


async def test_process_waiting_on_killed_parked_process() -> None:
    async with Runner() as runner:
        child = runner.submit(Waiter)
        parent = runner.submit(Waiter, {"awaitable": child})
        await reach(parent, S.WAITING)
        await settle(child)
        await settle(parent)
        child.kill("gone")
    assert child.state is S.KILLED
    assert parent.result() is child
