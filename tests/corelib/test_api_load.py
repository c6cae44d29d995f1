"""A WorkChain rebuilt by ``load_process`` while it waited on children, then launched with
``runner.launch``: it re-attaches to children running in that runner, continues the others
from the runner's persister, and otherwise raises at once, naming them (never waits forever).
"""

from __future__ import annotations

import anyio
import pytest

from corelib import (
    Checkpoint,
    ChildrenNotFoundError,
    ClassLoader,
    InMemoryPersister,
    NotCheckpointableError,
    Process,
    ProcessState,
    Runner,
    checkpoint_of,
    continue_process,
    load_process,
)

from ._chains import Gate, Pipeline, WaitsOnGate, expected_outputs
from ._procs import BOUND, reach
from .test_persistence import PARENT_POSITIONS, TIMELINE

S = ProcessState
LOADER = ClassLoader(allowed_prefixes=("corelib", "tests.corelib"))


async def _checkpoints_of_a_waiting_chain() -> tuple[Checkpoint, Checkpoint]:
    """A WaitsOnGate chain waiting on its Gate child, checkpointed by hand (no persister),
    then gone (as after a crash): the chain's checkpoint and the child's."""
    async with Runner() as runner:
        chain = runner.submit(WaitsOnGate, pid="chain")
        await reach(chain, S.WAITING)
        ((key, gate, _append),) = chain.awaiting
        assert key == "gate"
        await reach(gate, S.WAITING)
        saved = checkpoint_of(chain), checkpoint_of(gate)
        runner.kill_all("crash")
    return saved


def _launched_when(runner: Runner, pid: str) -> anyio.Event:
    """An event set when ``runner`` launches the process ``pid`` (a launch hook)."""
    launched = anyio.Event()

    def hook(process: Process) -> None:
        if process.pid == pid:
            launched.set()

    runner.add_launch_hook(hook)
    return launched


async def test_without_its_children_or_a_persister_launch_raises_at_once() -> None:
    chain_checkpoint, gate_checkpoint = await _checkpoints_of_a_waiting_chain()
    gate_pid = gate_checkpoint.pid
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            chain = load_process(chain_checkpoint, loader=LOADER)
            with pytest.raises(ChildrenNotFoundError) as caught:
                runner.launch(chain)
            assert not chain.statistics().launched  # nothing was launched
            assert runner.processes == {}
    assert str(caught.value) == (
        f"workchain chain waits for children {gate_pid} (ctx key 'gate'), which don't run in "
        "this runner, and the runner has no persister to continue them from: launch them in "
        "this runner first, or launch it in a runner with a persister that holds their "
        "checkpoints (or use continue_process(runner, persister, pid))"
    )
    assert (caught.value.pid, caught.value.children) == ("chain", (("gate", gate_pid),))
    assert isinstance(caught.value, NotCheckpointableError)


async def test_children_launched_first_in_the_same_runner_are_reattached() -> None:
    chain_checkpoint, gate_checkpoint = await _checkpoints_of_a_waiting_chain()
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            gate = runner.launch(load_process(gate_checkpoint, loader=LOADER))
            chain = runner.launch(load_process(chain_checkpoint, loader=LOADER))
            assert isinstance(chain, WaitsOnGate)
            assert chain.awaiting == (("gate", gate, False),)  # the child itself, not a pid
            gate.resume(41)  # the gate waited for resume(), and still does
            await chain.wait()
    assert chain.state is S.FINISHED
    assert chain.outputs == {"value": 41}


async def test_a_failed_launch_can_be_retried_once_the_children_run() -> None:
    chain_checkpoint, gate_checkpoint = await _checkpoints_of_a_waiting_chain()
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            chain = load_process(chain_checkpoint, loader=LOADER)
            with pytest.raises(ChildrenNotFoundError):
                runner.launch(chain)
            gate = runner.launch(load_process(gate_checkpoint, loader=LOADER))
            runner.launch(chain)
            gate.resume(7)
            await chain.wait()
    assert chain.outputs == {"value": 7}


async def test_children_are_continued_from_the_runners_persister() -> None:
    chain_checkpoint, gate_checkpoint = await _checkpoints_of_a_waiting_chain()
    persister = InMemoryPersister()
    await persister.save_checkpoint(gate_checkpoint)
    with anyio.fail_after(BOUND):
        async with Runner(persister=persister, loader=LOADER) as runner:
            gate_launched = _launched_when(runner, gate_checkpoint.pid)
            chain = runner.launch(load_process(chain_checkpoint, loader=LOADER))
            await gate_launched.wait()
            gate = runner.get_process(gate_checkpoint.pid)
            assert isinstance(gate, Gate)
            await reach(gate, S.WAITING)
            gate.resume(5)
            await chain.wait()
    assert chain.outputs == {"value": 5}


async def test_a_child_the_persister_lacks_makes_the_workchain_except() -> None:
    chain_checkpoint, gate_checkpoint = await _checkpoints_of_a_waiting_chain()
    with anyio.fail_after(BOUND):
        async with Runner(persister=InMemoryPersister(), loader=LOADER) as runner:
            chain = runner.launch(load_process(chain_checkpoint, loader=LOADER))
            await chain.wait()
    assert chain.state is S.EXCEPTED
    assert chain.state_data.type_name == "ChildrenNotFoundError"  # type: ignore[union-attr]
    assert chain.state_data.message == (  # type: ignore[union-attr]
        f"workchain chain waits for children {gate_checkpoint.pid} (ctx key 'gate'), which "
        "don't run in this runner, and its persister holds no checkpoint of them"
    )


async def test_continue_process_raises_before_launching_anything() -> None:
    chain_checkpoint, _gate_checkpoint = await _checkpoints_of_a_waiting_chain()
    persister = InMemoryPersister()
    await persister.save_checkpoint(chain_checkpoint)
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            with pytest.raises(ChildrenNotFoundError, match=r"holds no checkpoint of them$"):
                await continue_process(runner, persister, "chain", loader=LOADER)
            assert runner.processes == {}


@pytest.mark.parametrize(
    "position", [i for i in PARENT_POSITIONS if TIMELINE[i].state in ("running", "waiting")]
)
async def test_launching_a_reloaded_pipeline_from_every_checkpoint_finishes_it(
    position: int,
) -> None:
    """As ``continue_process`` does, but with ``load_process`` and ``runner.launch``: children
    known by pid are continued from the runner's persister, whether the WorkChain was waiting
    for them or had just been resumed (before their outputs were in its context)."""
    persister = InMemoryPersister()
    latest: dict[str, Checkpoint] = {}
    for checkpoint in TIMELINE[: position + 1]:
        latest[checkpoint.pid] = checkpoint
    for checkpoint in latest.values():
        await persister.save_checkpoint(checkpoint)
    with anyio.fail_after(BOUND):
        async with Runner(persister=persister, loader=LOADER) as runner:
            parent = runner.launch(load_process(latest["parent"], loader=LOADER))
            assert isinstance(parent, Pipeline)
            await parent.wait()
    assert parent.state is S.FINISHED, parent.state_data
    assert parent.outputs.to_dict() == expected_outputs(3)


def test_processes_loaded_from_one_checkpoint_share_no_context() -> None:
    checkpoint = next(c for c in TIMELINE if c.pid == "parent" and (c.ctx or {}).get("trace"))
    first = load_process(checkpoint, loader=LOADER)
    second = load_process(checkpoint, loader=LOADER)
    assert isinstance(first, Pipeline)
    assert isinstance(second, Pipeline)
    first.ctx.trace.append("only in the first")
    assert "only in the first" not in second.ctx.trace
    assert checkpoint.ctx is not None
    assert "only in the first" not in checkpoint.ctx["trace"]  # a checkpoint is a value
