"""The process API as a plumpy/aiida user expects it: a control outcome is true only when the
request is done, ``kill`` takes plumpy's ``force_kill=``, and ``Wait`` rejects mixed-up
arguments when it is built."""

from __future__ import annotations

import pytest

from corelib import ControlOutcome, ProcessState, Runner

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
