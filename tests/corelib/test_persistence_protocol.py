"""The checkpoint protocol: a process class saves and restores its own state.

``checkpoint_of`` asks the process (``save_instance_state``) and ``load_process`` hands the
state back (``load_instance_state``); persistence knows no subclass's internals. A custom
Process subclass's state goes to the record's ``instance_state``; a WorkChain's context,
cursor and awaited children go to the ``ctx``, ``cursor`` and ``awaiting`` fields, as they
always did, so older checkpoints load as before.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from corelib import (
    Checkpoint,
    CheckpointCodec,
    ClassLoader,
    CorruptCheckpointError,
    FilePersister,
    InMemoryPersister,
    NotCheckpointableError,
    Persister,
    Process,
    ProcessListener,
    ProcessState,
    Runner,
    SqlitePersister,
    ToContext,
    Wait,
    WorkChain,
    checkpoint_of,
    load_process,
    while_,
)

from ._chains import Gate, WaitsOnGate
from ._procs import BOUND, reach

S = ProcessState
LOADER = ClassLoader(allowed_prefixes=("corelib", "tests.corelib"))
CODEC = CheckpointCodec()


# -- processes (module level, so that they can be reloaded) -------------------------------------


class Tally(Process):
    """Adds up the values it is resumed with; its total and the values are its own state."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("rounds", valid_type=int)
        spec.output("total", valid_type=int)
        spec.output("added", valid_type=list)

    def on_create(self) -> None:
        super().on_create()
        self.total = 0
        self.added: list[int] = []

    def run(self) -> Any:
        return Wait(None, self.add)

    def add(self, value: int) -> Any:
        self.total += value
        self.added.append(value)
        if len(self.added) < self.inputs.rounds:
            return Wait(None, self.add)
        self.out("total", self.total)
        self.out("added", list(self.added))
        return None

    def save_instance_state(self) -> dict[str, Any]:
        state = super().save_instance_state()
        state["total"] = self.total
        state["added"] = list(self.added)
        return state

    def load_instance_state(self, state: Mapping[str, Any]) -> None:
        super().load_instance_state(state)
        self.total = state["total"]
        self.added = state["added"]


class LooksLikeAWorkChain(Process):
    """Has attributes named as a WorkChain's, but saves nothing: persistence must not peek."""

    def on_create(self) -> None:
        super().on_create()
        self.ctx = {"secret": 1}
        self._cursor = (1, 2)
        self._awaiting = ["not", "saved"]

    def run(self) -> None:
        return None


class Accumulate(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("n", valid_type=int)
        spec.output("total", valid_type=int)
        spec.outline(cls.setup, while_(cls.more)(cls.add), cls.finish)

    def setup(self) -> None:
        self.ctx.i = 0
        self.ctx.seen = []

    def more(self) -> bool:
        return bool(self.ctx.i < self.inputs.n)

    def add(self) -> None:
        self.ctx.i += 1
        self.ctx.seen.append(self.ctx.i)

    def finish(self) -> None:
        self.out("total", sum(self.ctx.seen))


class LabelledAccumulate(Accumulate):
    """A WorkChain subclass with state of its own, beside the context."""

    label = "unset"

    def setup(self) -> None:
        super().setup()
        self.label = f"n={self.inputs.n}"

    def finish(self) -> None:
        assert self.label == f"n={self.inputs.n}"
        super().finish()

    def save_instance_state(self) -> dict[str, Any]:
        return {**super().save_instance_state(), "label": self.label}

    def load_instance_state(self, state: Mapping[str, Any]) -> None:
        super().load_instance_state(state)
        self.label = state["label"]


class WaitsOnEvent(WorkChain):
    """Awaits an event (not a process): it can't be checkpointed while it does."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.outline(cls.wait_for_signal, cls.done)

    def wait_for_signal(self) -> ToContext:
        self.signal = anyio.Event()
        return ToContext(signal=self.signal)

    def done(self) -> None:
        pass


class Snapshots(ProcessListener):
    """Takes a checkpoint (through the codec, so a snapshot) at every transition to RUNNING."""

    def __init__(self) -> None:
        self.checkpoints: list[Checkpoint] = []

    def on_process_running(self, process: Process) -> None:
        self.checkpoints.append(CODEC.copy(checkpoint_of(process)))


class Waits(ProcessListener):
    """Sets ``event`` when the process starts waiting for the ``count``-th time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.event = anyio.Event()

    def on_process_waiting(self, process: Process) -> None:
        self.count -= 1
        if self.count == 0:
            self.event.set()

    async def wait(self) -> None:
        with anyio.fail_after(BOUND):
            await self.event.wait()


async def _tally_after_one_value() -> Checkpoint:
    """A Tally (two rounds) resumed once, checkpointed while it waits again, then gone."""
    async with Runner() as runner:
        waits = Waits(2)
        tally = runner.submit(Tally, {"rounds": 2}, pid="tally", listeners=[waits])
        await reach(tally, S.WAITING)
        tally.resume(2)
        await waits.wait()
        checkpoint = checkpoint_of(tally)
        runner.kill_all("crash")
    return checkpoint


@pytest.fixture(params=["memory", "file", "sqlite"])
async def persister(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Persister]:
    kind = request.param
    store: Persister
    if kind == "memory":
        store = InMemoryPersister()
    elif kind == "file":
        store = FilePersister(tmp_path / "checkpoints")
    else:
        store = SqlitePersister(tmp_path / "checkpoints.sqlite")
    async with store:
        yield store


# -- a custom Process subclass ------------------------------------------------------------------


async def test_a_process_saves_its_own_state_in_instance_state() -> None:
    checkpoint = await _tally_after_one_value()
    assert checkpoint.state == "waiting"
    assert checkpoint.instance_state == {"total": 2, "added": [2]}
    assert (checkpoint.ctx, checkpoint.cursor, checkpoint.awaiting) == (None, None, ())
    data = CODEC.encode(checkpoint)
    assert b'"instance_state":{"total":2,"added":[2]}' in data
    assert CODEC.decode(data) == checkpoint


async def test_a_process_restores_its_own_state_and_goes_on(persister: Persister) -> None:
    await persister.save_checkpoint(await _tally_after_one_value())
    async with Runner(persister=persister, loader=LOADER) as runner:
        tally = await runner.continue_process("tally")
        assert isinstance(tally, Tally)
        assert (tally.state, tally.total, tally.added) == (S.WAITING, 2, [2])
        tally.resume(5)
        with anyio.fail_after(BOUND):
            await tally.wait()
    assert tally.outputs.to_dict() == {"total": 7, "added": [2, 5]}


async def test_processes_loaded_from_one_checkpoint_share_no_list() -> None:
    checkpoint = await _tally_after_one_value()
    first = load_process(checkpoint, loader=LOADER)
    second = load_process(checkpoint, loader=LOADER)
    assert isinstance(first, Tally)
    assert isinstance(second, Tally)
    first.added.append(9)
    assert second.added == [2]
    assert checkpoint.instance_state == {"total": 2, "added": [2]}


async def test_persistence_does_not_peek_at_attributes() -> None:
    process = LooksLikeAWorkChain()
    checkpoint = checkpoint_of(process)
    assert (checkpoint.ctx, checkpoint.cursor, checkpoint.awaiting) == (None, None, ())
    assert checkpoint.instance_state == {}
    assert "instance_state" not in checkpoint.to_dict()  # laid out as before the field existed


async def test_saved_state_the_class_refuses_is_a_corrupt_checkpoint() -> None:
    checkpoint = await _tally_after_one_value()
    damaged = Checkpoint.from_dict({**checkpoint.to_dict(), "instance_state": {"total": 2}})
    with pytest.raises(
        CorruptCheckpointError,
        match=r"^checkpoint is corrupt: checkpoint of pid 'tally': its saved state doesn't fit "
        r"Tally: KeyError\('added'\)$",
    ):
        load_process(damaged, loader=LOADER)


# -- WorkChains ---------------------------------------------------------------------------------


async def _timeline(cls: type[Accumulate], n: int) -> tuple[list[Checkpoint], dict[str, Any]]:
    snapshots = Snapshots()
    async with Runner() as runner:
        chain = runner.submit(cls, {"n": n}, pid="chain", listeners=[snapshots])
        with anyio.fail_after(BOUND):
            await chain.wait()
    return snapshots.checkpoints, chain.outputs.to_dict()


async def test_a_workchain_saves_ctx_cursor_and_awaiting_as_plain_data() -> None:
    async with Runner() as runner:
        chain = runner.submit(Accumulate, {"n": 2}, pid="chain")
        with anyio.fail_after(BOUND):
            await chain.wait()
        state = chain.save_instance_state()
    assert state == {"ctx": {"i": 2, "seen": [1, 2]}, "cursor": (3,), "awaiting": []}
    assert type(state["ctx"]) is dict
    checkpoint = checkpoint_of(chain)
    assert (checkpoint.ctx, checkpoint.cursor, checkpoint.awaiting) == (state["ctx"], (3,), ())
    assert checkpoint.instance_state == {}


@pytest.mark.parametrize("cls", [Accumulate, LabelledAccumulate])
async def test_a_workchain_round_trips_from_every_position(cls: type[Accumulate]) -> None:
    checkpoints, expected = await _timeline(cls, 3)
    assert expected == {"total": 6}
    assert {c.cursor for c in checkpoints} >= {(), (1,), (3,)}
    for checkpoint in checkpoints:
        if cls is LabelledAccumulate and checkpoint.cursor:
            assert checkpoint.instance_state == {"label": "n=3"}
        loaded = load_process(CODEC.decode(CODEC.encode(checkpoint)), loader=LOADER)
        assert isinstance(loaded, cls)
        assert loaded.cursor == checkpoint.cursor
        assert dict(loaded.ctx) == dict(checkpoint.ctx or {})
        async with Runner() as runner:
            runner.launch(loaded)
            with anyio.fail_after(BOUND):
                await loaded.wait()
        assert loaded.outputs.to_dict() == expected


async def test_a_checkpoint_written_before_the_protocol_still_loads() -> None:
    # bytes as plumio wrote them before the protocol: no instance_state key
    old = (
        b'{"version":1,"pid":"old","process_class":"tests.corelib.test_persistence_protocol:'
        b'Accumulate","state":"running","state_data":{"step":"_step","args":[],"kwargs":{}},'
        b'"inputs":{"n":3},"ctx":{"i":1,"seen":[1]},"cursor":[1],"saved_at":1796681646.2}'
    )
    checkpoint = CODEC.decode(old)
    assert CODEC.encode(checkpoint) == old  # and written back the same
    chain = load_process(checkpoint, loader=LOADER)
    assert isinstance(chain, Accumulate)
    assert (chain.cursor, dict(chain.ctx)) == ((1,), {"i": 1, "seen": [1]})
    async with Runner() as runner:
        runner.launch(chain)
        with anyio.fail_after(BOUND):
            await chain.wait()
    assert chain.outputs.to_dict() == {"total": 6}


async def test_a_reloaded_workchain_knows_its_children_by_pid_until_attached() -> None:
    async with Runner() as runner:
        chain = runner.submit(WaitsOnGate, pid="chain")
        await reach(chain, S.WAITING)
        ((_key, gate, _append),) = chain.awaiting
        checkpoint = checkpoint_of(chain)
        assert checkpoint.awaiting == (
            {"kind": "process", "pid": gate.pid, "key": "gate", "append": False},
        )
        loaded = load_process(checkpoint, loader=LOADER)
        assert isinstance(loaded, WaitsOnGate)
        assert loaded.pending_children == (("gate", gate.pid),)
        # re-saving a reloaded chain keeps its children's pids
        assert loaded.save_instance_state()["awaiting"] == list(checkpoint.awaiting)
        loaded.attach_children({"someone else": gate})
        assert loaded.pending_children == (("gate", gate.pid),)
        loaded.attach_children({gate.pid: gate})
        assert not loaded.pending_children
        assert loaded.awaiting == (("gate", gate, False),)
        assert isinstance(gate, Gate)
        runner.kill_all("done")


async def test_a_workchain_awaiting_something_else_than_a_process_refuses() -> None:
    async with Runner() as runner:
        chain = runner.submit(WaitsOnEvent, pid="events")
        await reach(chain, S.WAITING)
        message = (
            "process events waits for {} in ctx key 'signal', which is not a process: "
            "only children can be re-attached after a reload"
        )
        pattern = "^" + re.escape(message).replace(r"\{\}", ".*") + "$"
        with pytest.raises(NotCheckpointableError, match=pattern):
            chain.save_instance_state()
        with pytest.raises(NotCheckpointableError, match=pattern):
            checkpoint_of(chain)
        chain.signal.set()
        with anyio.fail_after(BOUND):
            await chain.wait()
    assert chain.state is S.FINISHED
