"""The process API as a plumpy/aiida user expects it: a control outcome is true only when the
request is done, ``kill`` takes plumpy's ``force_kill=``, and ``Wait`` rejects mixed-up
arguments when it is built."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import anyio
import pytest

from corelib import (
    ControlOutcome,
    InvalidWaitError,
    Process,
    ProcessExceptedError,
    ProcessState,
    Runner,
    Wait,
)

from ._procs import Gate, GatedAsync, Trivial, Waiter, settle

S = ProcessState


# -- ControlOutcome is falsy unless the request is done ----------------------------------------


def test_an_outcome_is_true_exactly_when_done() -> None:
    assert ControlOutcome(True, "paused")
    assert ControlOutcome(True, "already paused")
    assert not ControlOutcome(False, "process already finished")
    assert not ControlOutcome(False, "superseded by kill")


async def test_if_await_pause_is_true_when_the_process_is_paused() -> None:
    async with Runner() as runner:
        proc = runner.submit(Waiter)
        await settle(proc)
        paused = bool(await proc.pause())
        again = bool(await proc.pause())  # "already paused": still as requested
        played = bool(await proc.play())
        proc.resume(1)
    assert (paused, again, played) == (True, True, True)
    assert proc.result() == 1


async def test_if_await_pause_is_false_for_a_finished_process() -> None:
    async with Runner() as runner:
        proc = runner.submit(Trivial)
        await proc.wait()
        outcome = await proc.pause()
    assert outcome == ControlOutcome(False, "process already finished")
    assert not outcome
    if await proc.play():  # not paused, and terminal: refused as well
        raise AssertionError("a play of a finished process must be falsy")


async def test_a_pause_superseded_by_a_kill_is_false() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedAsync, {"gate": gate})
        await gate.wait_arrived()
        pause = proc.pause()  # deferred: a step is running
        kill = proc.kill("stop")
        gate.release()
        paused = await pause
        killed = await kill
    assert paused == ControlOutcome(False, "superseded by kill")
    assert not paused
    assert killed
    assert proc.state is S.KILLED


async def test_a_pause_cancelled_by_play_is_false() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedAsync, {"gate": gate})
        await gate.wait_arrived()
        pause = proc.pause()
        played = await proc.play()
        gate.release()
        paused = await pause
    assert paused == ControlOutcome(False, "pause cancelled by play")
    assert not paused
    assert played  # the play did what it was asked: the process is not paused
    assert proc.state is S.FINISHED


# -- kill(force_kill=...) as plumpy spells it --------------------------------------------------


async def test_kill_accepts_plumpys_force_kill() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedAsync, {"gate": gate})
        await gate.wait_arrived()
        handle = proc.kill("now", force_kill=True)
        assert proc.state is S.KILLED  # at once, mid-step, as force=True does
        assert await handle == ControlOutcome(True, "killed")
    assert gate.cancelled


async def test_force_kill_false_is_a_graceful_kill() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedAsync, {"gate": gate})
        await gate.wait_arrived()
        handle = proc.kill("at the next await", force_kill=False)
        assert proc.statistics().kill_pending  # deferred to the step's end
        assert await handle == ControlOutcome(True, "killed")
    assert proc.state is S.KILLED


async def test_force_and_force_kill_may_agree() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedAsync, {"gate": gate})
        await gate.wait_arrived()
        proc.kill(force=True, force_kill=True)
        assert proc.state is S.KILLED


async def test_force_and_force_kill_that_disagree_are_an_error_naming_both() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedAsync, {"gate": gate})
        await gate.wait_arrived()
        with pytest.raises(
            ValueError,
            match=r"^kill got force=True and force_kill=False; pass one of them "
            r"\(force_kill is plumpy's name for force\)$",
        ):
            proc.kill("x", force=True, force_kill=False)
        with pytest.raises(ValueError, match=r"^kill got force=False and force_kill=True;"):
            runner.kill_all(force=False, force_kill=True)
        stats = proc.statistics()
        assert (stats.state, stats.kill_pending) == (S.RUNNING, False)  # nothing happened
        gate.release()
    assert proc.result() == "second"


async def test_runner_kill_all_accepts_force_kill() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedAsync, {"gate": gate})
        await gate.wait_arrived()
        (handle,) = runner.kill_all("everyone", force_kill=True)
        assert proc.state is S.KILLED
        assert await handle


# -- Wait(...) checks its arguments when it is built --------------------------------------------


class Steps(Process):
    """Bound methods to build waits with (never launched)."""

    def after(self, value: Any = None) -> Any:
        return value

    async def fetch(self, url: str, *, retries: int) -> str:  # pragma: no cover - not run
        return url

    async def ready(self) -> str:  # pragma: no cover - not run
        return "ready"


async def _produce() -> str:  # pragma: no cover - closed, never run
    return "made"


class _AsyncCallable:
    async def __call__(self) -> str:  # pragma: no cover - not run
        return "called"


def _steps() -> Steps:
    return Steps()


def test_a_wait_with_the_arguments_swapped_names_both() -> None:
    steps = _steps()
    coro = _produce()
    with pytest.raises(InvalidWaitError) as caught:
        Wait(steps.after, coro)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("Wait got awaitable=Steps.after and next_step=<coroutine object")
    assert message.endswith("they are swapped: the awaitable comes first, then the step")
    assert caught.value.awaitable == steps.after
    assert caught.value.next_step is coro
    # closed, so it is not reported as never awaited (warnings are errors here)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    event = anyio.Event()
    with pytest.raises(InvalidWaitError, match=r"^Wait got awaitable=Steps.after and next_step=<"):
        Wait(steps.after, event)  # type: ignore[arg-type]


PLUMPY = (
    "the order is Wait(awaitable_or_None, next_step, message); plumpy's "
    "Wait(continue_fn, msg, data) is Wait(None, continue_fn, msg) here"
)


def test_plumpys_order_is_an_error_that_says_how_to_write_it_here() -> None:
    steps = _steps()
    with pytest.raises(InvalidWaitError) as caught:
        Wait(steps.after, "waiting for the data")  # type: ignore[arg-type]
    assert str(caught.value) == (
        "Wait got awaitable=Steps.after and next_step='waiting for the data': "
        f"next_step is not callable; {PLUMPY}"
    )
    with pytest.raises(InvalidWaitError) as caught:
        Wait(steps.after)  # plumpy's Wait(continue_fn)
    assert str(caught.value) == (
        "Wait got awaitable=Steps.after and next_step=None: "
        f"the step to go on with is missing; {PLUMPY}"
    )
    with pytest.raises(InvalidWaitError, match=r"^Wait got awaitable=None and next_step=42: "):
        Wait(None, 42)  # type: ignore[arg-type]


def test_a_plain_function_is_not_something_to_wait_for() -> None:
    steps = _steps()
    with pytest.raises(InvalidWaitError) as caught:
        Wait(steps.after, steps.after)
    assert str(caught.value) == (
        "Wait got awaitable=Steps.after and next_step=Steps.after: awaitable is a plain "
        "(not async) callable; pass an awaitable, an async function that takes no arguments, "
        f"or None to wait for resume(); {PLUMPY}"
    )
    assert isinstance(caught.value, TypeError)  # as Python's own complaints about arguments


def test_an_async_function_that_needs_arguments_asks_did_you_mean_to_call_it() -> None:
    steps = _steps()
    with pytest.raises(InvalidWaitError) as caught:
        Wait(steps.fetch, steps.after)
    assert str(caught.value) == (
        "Wait got awaitable=Steps.fetch and next_step=Steps.after: awaitable is an async "
        "function that needs arguments (url, retries), not an awaitable: did you mean to call "
        "it, Wait(fetch(...), next_step)?"
    )
    with pytest.raises(InvalidWaitError, match=r"needs arguments \(retries\)"):
        Wait(functools.partial(steps.fetch, "https://example.org"), steps.after)


def test_what_a_wait_accepts() -> None:
    steps = _steps()
    coro = _produce()
    accepted = [
        Wait(None, steps.after),
        Wait(anyio.Event(), steps.after, "for the event"),
        Wait(coro, steps.after),
        Wait(steps.ready, steps.after),  # an async method taking only self: called, awaited
        Wait(_produce, steps.after),
        Wait(_AsyncCallable(), steps.after),
        Wait(functools.partial(steps.fetch, "u", retries=1), steps.after),
    ]
    assert [w.next_step for w in accepted] == [steps.after] * len(accepted)
    assert accepted[1].message == "for the event"
    coro.close()


class WaitsSwapped(Process):
    def run(self) -> Any:
        return Wait(self.after, self.produce())  # type: ignore[arg-type]

    async def produce(self) -> int:  # pragma: no cover - closed, never run
        return 1

    def after(self, value: int) -> int:  # pragma: no cover - never resumed
        return value


class WaitsOnAStep(Process):
    def run(self) -> Any:
        return Wait(self.fetch, self.after)

    async def fetch(self, url: str) -> str:  # pragma: no cover - never called
        return url

    def after(self, value: str) -> str:  # pragma: no cover - never resumed
        return value


@pytest.mark.parametrize("process_class", [WaitsSwapped, WaitsOnAStep])
async def test_a_step_that_builds_a_bad_wait_excepts_at_once(
    process_class: type[Process],
) -> None:
    async with Runner() as runner:
        proc = runner.submit(process_class)
        await proc.wait()
    assert proc.state is S.EXCEPTED  # never WAITING: no watcher ever ran
    assert [m.event for m in proc.history] == ["Start", "Fail"]
    assert proc.state_data.type_name == "InvalidWaitError"  # type: ignore[union-attr]
    assert proc.state_data.message.startswith(  # type: ignore[union-attr]
        f"Wait got awaitable={process_class.__name__}."
    )
    with pytest.raises(ProcessExceptedError) as caught:
        proc.result()
    assert isinstance(caught.value.__cause__, InvalidWaitError)
