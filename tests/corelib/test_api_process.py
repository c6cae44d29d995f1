"""The process API as a plumpy/aiida user expects it: a control outcome is true only when the
request is done, ``kill`` takes plumpy's ``force_kill=``, and ``Wait`` rejects mixed-up
arguments when it is built."""

from __future__ import annotations

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
