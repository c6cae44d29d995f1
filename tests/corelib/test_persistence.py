"""Checkpoint live processes and continue them: identical results from every position."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from corelib import (
    Checkpoint,
    CheckpointCodec,
    ClassLoader,
    CorruptCheckpointError,
    ForbiddenClassError,
    InMemoryPersister,
    ProcessState,
    Runner,
)
from corelib.persistence._save_load import (
    CheckpointPolicy,
    NotCheckpointableError,
    checkpoint_of,
    load_process,
)

from ._chains import Gate, Pipeline, WaitsOnGate, expected_outputs
from ._procs import reach

TIMEOUT = 10
LOADER = ClassLoader(allowed_prefixes=("corelib", "tests.corelib"))
N = 3


async def _reference_timeline() -> list[Checkpoint]:
    """Run a Pipeline once; record a checkpoint of every process at every checkpoint event."""
    timeline: list[Checkpoint] = []
    async with Runner(persister=InMemoryPersister()) as runner:
        checkpointer = runner.checkpointer
        assert checkpointer is not None
        take = checkpointer.take

        codec = CheckpointCodec()

        def record(process: Any) -> None:
            # through the codec: a snapshot, as the checkpointer itself takes
            timeline.append(codec.decode(codec.encode(checkpoint_of(process))))
            take(process)

        checkpointer.take = record  # type: ignore[method-assign]
        parent = runner.submit(Pipeline, {"n": N}, pid="parent")
        await parent.wait()
    assert parent.outputs.to_dict() == expected_outputs(N)
    return timeline


def _timeline() -> list[Checkpoint]:
    return anyio.run(_reference_timeline)


TIMELINE = _timeline()
PARENT_POSITIONS = [i for i, c in enumerate(TIMELINE) if c.pid == "parent"]


def test_the_timeline_covers_every_outline_position_and_waits_on_children() -> None:
    parent = [TIMELINE[i] for i in PARENT_POSITIONS]
    # a checkpoint after every outline step: its cursor is the next instruction to carry out
    boundaries = {
        (c.state, c.cursor, (c.ctx or {}).get("i"), len((c.ctx or {}).get("trace", [])))
        for c in parent
    }
    assert {b[1] for b in boundaries} == {(), (1,), (1, 1, 0), (3,), (4,)}
    # setup, N x (launch, wait, add), both, wait, finish: each a distinct position
    assert len([b for b in boundaries if b[0] in ("running", "waiting")]) >= 3 * N + 4
    assert any(c.state == "waiting" and c.awaiting for c in parent)
    assert any(len(c.awaiting) == 2 for c in parent)  # waiting on two children at once
    assert {c.state for c in parent} >= {"created", "running", "waiting", "finished"}


@pytest.mark.parametrize("position", PARENT_POSITIONS)
async def test_continue_from_every_checkpoint_gives_identical_outputs(position: int) -> None:
    """As if the machine crashed right after checkpoint ``position`` was written."""
    persister = InMemoryPersister()
    latest: dict[str, Checkpoint] = {}
    for checkpoint in TIMELINE[: position + 1]:
        latest[checkpoint.pid] = checkpoint
    for checkpoint in latest.values():
        await persister.save_checkpoint(checkpoint)
    with anyio.fail_after(TIMEOUT):
        async with Runner(persister=persister, loader=LOADER) as runner:
            parent = await runner.continue_process("parent")
            await parent.wait()
    assert parent.state is ProcessState.FINISHED
    assert parent.outputs.to_dict() == expected_outputs(N)
    final = await persister.load_checkpoint("parent")
    assert final.state == "finished"


async def test_runner_with_a_persister_checkpoints_and_continues_terminal_processes() -> None:
    persister = InMemoryPersister()
    async with Runner(persister=persister) as runner:
        parent = runner.submit(Pipeline, {"n": 2})
        await parent.wait()
        await runner.flush_checkpoints()
    saved = await persister.get_checkpoints()
    pids = {c.pid for c in saved}
    assert parent.pid in pids
    assert len(pids) == 1 + 2 + 2  # the parent and its four children
    final = await persister.load_checkpoint(parent.pid)
    assert final.state == "finished"
    assert final.outputs == expected_outputs(2)
    async with Runner(persister=persister) as runner:
        again = await runner.continue_process(parent.pid)
        assert again.state is ProcessState.FINISHED  # loaded, not run again
        assert again.outputs.to_dict() == expected_outputs(2)
        assert runner.processes == {}


async def test_a_paused_process_reloads_paused() -> None:
    persister = InMemoryPersister()
    async with Runner(persister=persister) as runner:
        chain = runner.submit(WaitsOnGate, pid="paused-parent")
        await reach(chain, ProcessState.WAITING)
        assert (await chain.pause("for the night")).done
        await runner.flush_checkpoints()
        saved = await persister.load_checkpoint("paused-parent")
        gate_pid = saved.awaiting[0]["pid"]
        runner.kill_all("crash")  # pretend the machine went down
    assert saved.paused
    assert saved.state == "waiting"
    # kill_all stood for the crash; the state to continue from is what was saved before it:
    # the paused parent, and its gate child waiting for resume()
    assert (await persister.load_checkpoint(gate_pid)).state == "killed"
    fresh = InMemoryPersister()
    await fresh.save_checkpoint(saved)
    await fresh.save_checkpoint(
        Checkpoint(
            pid=gate_pid,
            process_class="tests.corelib._chains:Gate",
            state="waiting",
            state_data={"next_step": "opened", "message": None},
        )
    )
    with anyio.fail_after(TIMEOUT):
        async with Runner(persister=fresh, loader=LOADER) as runner:
            chain = await runner.continue_process("paused-parent")
            assert chain.paused
            assert chain.state is ProcessState.WAITING
            gate = runner.get_process(gate_pid)
            assert isinstance(gate, Gate)
            await reach(gate, ProcessState.WAITING)
            gate.resume(41)
            await gate.wait()
            assert chain.state is ProcessState.WAITING  # still paused
            assert (await chain.play()).done
            await chain.wait()
    assert chain.outputs["value"] == 41


async def test_checkpoint_errors_are_specific() -> None:
    class Local(Pipeline):
        pass

    async with Runner() as runner:
        chain = runner.submit(Pipeline, {"n": 1}, pid="p")
        await chain.wait()
    good = checkpoint_of(chain)
    with pytest.raises(ForbiddenClassError, match=r"^class 'evil.module:Thing' of pid 'p' is not"):
        load_process(Checkpoint(pid="p", process_class="evil.module:Thing", state="created"))
    bad_step = Checkpoint(
        pid="p",
        process_class=good.process_class,
        state="running",
        state_data={"step": "__class__", "args": [], "kwargs": {}},
        inputs={"n": 1},
    )
    with pytest.raises(CorruptCheckpointError, match=r"names '__class__', which is not a method"):
        load_process(bad_step, loader=LOADER)
    wrong_inputs = Checkpoint(
        pid="p", process_class=good.process_class, state="created", inputs={"n": "x"}
    )
    with pytest.raises(CorruptCheckpointError, match=r"inputs don't fit Pipeline: inputs.n"):
        load_process(wrong_inputs, loader=LOADER)


async def test_no_checkpoint_mid_step() -> None:
    seen: list[str] = []

    class Peek(Pipeline):
        def setup(self) -> None:
            with pytest.raises(NotCheckpointableError) as info:
                checkpoint_of(self)
            seen.append(str(info.value))
            super().setup()

    async with Runner() as runner:
        chain = runner.submit(Peek, {"n": 1})
        await chain.wait()
    assert seen == [f"process {chain.pid} is in the middle of a step"]
    assert chain.successful()


async def test_checkpoint_policy_terminal_only() -> None:
    persister = InMemoryPersister()
    async with Runner(persister=persister, checkpoint_policy=CheckpointPolicy.TERMINAL) as runner:
        chain = runner.submit(Pipeline, {"n": 1})
        await chain.wait()
    assert runner.checkpointer is not None
    assert runner.checkpointer.saved == 4  # one terminal checkpoint per process
    assert (await persister.load_checkpoint(chain.pid)).state == "finished"
