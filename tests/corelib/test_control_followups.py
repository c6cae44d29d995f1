"""Follow-ups of the control layer's split: one outcome-to-error conversion (``RemoteProcess``
raises what ``outcome_error`` returns), plumpy's ``force_kill=`` on the controllers,
``ProcessControl.start`` detaching a process it could not launch, and the launcher continuing
a WorkChain together with the children it waited on.

Async tests run on asyncio and trio; the blocking controller is tested with real worker threads
of both backends. No sleeps: steps wait on events, and a forced kill is told apart from a
graceful one by a step that shields itself from cancellation.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from broker import (
    BlockingCommunicator,
    BroadcastFilter,
    DuplicateSubscriberError,
    LoopCommunicator,
    MemoryBroker,
    RemoteError,
    UnroutableError,
)
from corelib import (
    Checkpoint,
    ChildrenNotFoundError,
    ClassLoader,
    ControlOutcome,
    InMemoryPersister,
    Killed,
    Process,
    ProcessExceptedError,
    ProcessKilledError,
    ProcessState,
    ProcessStateError,
    Runner,
    checkpoint_of,
)
from corelib.cluster._worker import Worker
from corelib.control._binding import ProcessControl
from corelib.control._controller import BlockingProcessController, ProcessController
from corelib.control._launcher import ProcessLauncher
from corelib.control._messages import outcome_error

from ._chains import Gate, WaitsOnGate
from ._procs import reach
from ._remote_procs import BOUND, Double, Fails, Waiter

MISMATCH = (
    r"^kill got force=True and force_kill=False; pass one of them "
    r"\(force_kill is plumpy's name for force\)$"
)


class Env:
    def __init__(self, runner: Runner, control: ProcessControl, client: LoopCommunicator) -> None:
        self.runner = runner
        self.control = control
        self.client = client
        self.controller = ProcessController(client)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    broker = MemoryBroker(strict=True)
    async with (
        LoopCommunicator(broker, name="worker") as comm,
        LoopCommunicator(broker, name="client") as client,
        Runner() as runner,
        ProcessControl(runner, comm) as control,
    ):
        await comm.add_task_subscriber(ProcessLauncher(control), "launcher")
        yield Env(runner, control, client)
        runner.kill_all("test over")


class Shielded(Process):
    """Its step waits for :attr:`release` in a shielded scope: a graceful kill waits for it, a
    forced one doesn't."""

    started: anyio.Event
    release: anyio.Event

    async def run(self) -> None:
        with anyio.CancelScope(shield=True):
            type(self).started.set()
            await type(self).release.wait()


class KilledInStep(Process):
    def run(self) -> None:
        self.kill("enough")


# -- one conversion: RemoteProcess raises what outcome_error returns -----------------------------


async def test_a_remote_process_raises_what_outcome_error_makes_of_its_outcome(env: Env) -> None:
    with anyio.fail_after(BOUND):
        for process_class, error_type in (
            (Fails, ProcessExceptedError),
            (KilledInStep, ProcessKilledError),
        ):
            remote = env.controller.launch_remote(process_class)
            with pytest.raises(error_type) as info:
                await remote
            outcome = await remote.outcome()
            expected = outcome_error(outcome)
            assert type(info.value) is type(expected)
            assert str(info.value) == str(expected)
            assert info.value.pid == remote.pid
            assert info.value.outcome == outcome
        assert await env.controller.launch_remote(Double, {"x": 2}) == {"y": 4}


# -- force_kill= on the async controller ---------------------------------------------------------


@pytest.fixture
def shielded() -> Iterator[type[Shielded]]:
    Shielded.started, Shielded.release = anyio.Event(), anyio.Event()
    yield Shielded
    Shielded.release.set()  # an abandoned step may end now


async def test_force_kill_ends_a_step_at_once(env: Env, shielded: type[Shielded]) -> None:
    process = shielded(pid="s1")
    with anyio.fail_after(BOUND):
        await env.control.start(process)
        await shielded.started.wait()
        outcome = await env.controller.kill("s1", "now", force_kill=True)
    assert outcome == ControlOutcome(True, "killed")
    assert process.state_data == Killed("now")


async def test_force_kill_on_kill_all(env: Env, shielded: type[Shielded]) -> None:
    process = shielded(pid="s2")
    with anyio.fail_after(BOUND):
        await env.control.start(process)
        await shielded.started.wait()
        await env.controller.kill_all("stop", force_kill=False)  # graceful: the step goes on
        assert (await env.controller.status("s2"))["state"] == "running"
        await env.controller.kill_all("now", force=True, force_kill=True)  # they agree
        await process.wait()
    assert process.state is ProcessState.KILLED


async def test_force_and_force_kill_that_disagree_send_nothing(env: Env) -> None:
    process = env.control.submit(Waiter, pid="w1")
    with anyio.fail_after(BOUND):
        await env.control.subscribed(process)
        with pytest.raises(ValueError, match=MISMATCH):
            await env.controller.kill("w1", force=True, force_kill=False)
        with pytest.raises(ValueError, match=MISMATCH):
            await env.controller.kill_all(force=True, force_kill=False)
        assert (await env.controller.status("w1"))["state"] == "waiting"
    assert env.control.statistics().broadcast_requests == 0


# -- force_kill= on the blocking controller, worker threads of both backends ---------------------


class Held(Process):
    """Its step waits, shielded, until :data:`RELEASE` is set (in a thread of the worker)."""

    ENTERED = threading.Event()
    RELEASE = threading.Event()

    async def run(self) -> None:
        with anyio.CancelScope(shield=True):
            Held.ENTERED.set()
            await anyio.to_thread.run_sync(Held.RELEASE.wait, BOUND)


@pytest.fixture(params=["asyncio", "trio"])
def comm(request: pytest.FixtureRequest) -> Iterator[BlockingCommunicator]:
    """A client of a broker that one worker thread (of the param's backend) consumes from."""
    Held.ENTERED.clear()
    Held.RELEASE.clear()
    broker = MemoryBroker(strict=True)
    worker = Worker(broker, backend=request.param, persister=InMemoryPersister(), name="w")
    worker.start()
    comm = BlockingCommunicator(broker, timeout=BOUND)
    try:
        yield comm
    finally:
        Held.RELEASE.set()  # never leave a step waiting
        comm.close()
        worker.stop()


def test_blocking_force_kill_ends_a_step_at_once(comm: BlockingCommunicator) -> None:
    ctl = BlockingProcessController(comm, timeout=BOUND)
    pid = ctl.launch(Held, nowait=True)
    assert Held.ENTERED.wait(BOUND)
    assert ctl.kill(pid, "now", force_kill=True) == ControlOutcome(True, "killed")
    assert not Held.RELEASE.is_set()  # the step was not waited for

    pid = ctl.launch(Held, nowait=True)
    assert ctl.kill_future(pid, "now", force_kill=True).result(BOUND) == ControlOutcome(
        True, "killed"
    )


def test_blocking_kill_all_carries_force_kill(comm: BlockingCommunicator) -> None:
    received: list[Any] = []
    got = threading.Event()

    def on_kill(_comm: Any, body: Any, _sender: Any, _subject: Any, _cid: Any) -> None:
        received.append(body)
        got.set()

    comm.add_broadcast_subscriber(BroadcastFilter(on_kill, subject="kill"))
    ctl = BlockingProcessController(comm, timeout=BOUND)
    ctl.kill_all("all", force_kill=True)
    assert got.wait(BOUND)
    assert received == [{"intent": "kill", "message": "all", "force_kill": True}]


def test_blocking_force_and_force_kill_that_disagree_raise_at_once(
    comm: BlockingCommunicator,
) -> None:
    ctl = BlockingProcessController(comm, timeout=BOUND)
    # nothing is sent: an unknown pid would raise UnroutableError otherwise
    with pytest.raises(ValueError, match=MISMATCH):
        ctl.kill("no-such-pid", force=True, force_kill=False)
    with pytest.raises(ValueError, match=MISMATCH):
        ctl.kill_future("no-such-pid", force=True, force_kill=False)
    with pytest.raises(ValueError, match=MISMATCH):
        ctl.kill_all(force=True, force_kill=False)
    with pytest.raises(UnroutableError):
        ctl.kill("no-such-pid", force=True, force_kill=True)  # agreeing values are sent


# -- ProcessControl.start: a process it can't launch is detached again ---------------------------


async def test_a_process_the_runner_refuses_is_detached_and_unsubscribed(env: Env) -> None:
    async with Runner() as elsewhere:
        process = elsewhere.submit(Waiter, pid="x1")  # launched in another runner
        with anyio.fail_after(BOUND):
            with pytest.raises(ProcessStateError, match=r"^process x1 was already launched$"):
                await env.control.start(process)
            assert not env.control.is_attached(process)
            stats = env.control.statistics()
            assert (stats.attached, stats.subscribed) == (0, 0)
            await env.control.subscribed(process)  # returns at once
            with pytest.raises(UnroutableError):  # its RPC subscription is gone
                await env.controller.status("x1")
            # and the binding no longer follows it
            sent = env.control.statistics().broadcasts_sent
            process.kill("bye")
            await process.wait()
            assert env.control.statistics().broadcasts_sent == sent


async def test_a_failed_subscription_leaves_the_other_process_reachable(env: Env) -> None:
    first = env.control.submit(Waiter, pid="d1")
    with anyio.fail_after(BOUND):
        await env.control.subscribed(first)
        second = Waiter(pid="d1")
        with pytest.raises(DuplicateSubscriberError):
            await env.control.start(second)
        assert not env.control.is_attached(second)
        assert second.state is ProcessState.CREATED  # never launched
        assert env.control.is_attached(first)
        assert (await env.controller.status("d1"))["state"] == "waiting"


# -- the launcher continues a WorkChain's children -----------------------------------------------

LOADER = ClassLoader(allowed_prefixes=("corelib", "tests.corelib"))


async def _checkpoints_of_a_waiting_chain() -> tuple[Checkpoint, Checkpoint]:
    """A WaitsOnGate chain waiting on its Gate child, checkpointed by hand, then gone (as after
    a crash): the chain's checkpoint and the child's."""
    async with Runner() as runner:
        chain = runner.submit(WaitsOnGate, pid="chain")
        await reach(chain, ProcessState.WAITING)
        ((_key, gate, _append),) = chain.awaiting
        await reach(gate, ProcessState.WAITING)
        saved = checkpoint_of(chain), checkpoint_of(gate)
        runner.kill_all("crash")
    return saved


@pytest.fixture
async def worker_env() -> AsyncIterator[tuple[Env, InMemoryPersister]]:
    """A worker as :class:`~corelib.cluster._worker.Worker` makes it (its runner has no
    persister; its launcher has one), with a client on the same broker."""
    broker = MemoryBroker(strict=True)
    persister = InMemoryPersister()
    async with (
        LoopCommunicator(broker, name="worker") as comm,
        LoopCommunicator(broker, name="client") as client,
        Runner() as runner,
        ProcessControl(runner, comm) as control,
    ):
        launcher = ProcessLauncher(control, persister=persister, loader=LOADER)
        await comm.add_task_subscriber(launcher, "launcher")
        yield Env(runner, control, client), persister
        runner.kill_all("test over")


async def test_a_worker_continues_a_workchain_and_the_child_it_waited_on(
    worker_env: tuple[Env, InMemoryPersister],
) -> None:
    env, persister = worker_env
    chain_checkpoint, gate_checkpoint = await _checkpoints_of_a_waiting_chain()
    await persister.save_checkpoint(chain_checkpoint)
    await persister.save_checkpoint(gate_checkpoint)
    with anyio.fail_after(BOUND):
        assert await env.controller.continue_("chain", nowait=True) == "chain"
        # the child was continued in the worker's runner first, and answers RPCs there
        gate = env.runner.processes[gate_checkpoint.pid]
        assert isinstance(gate, Gate)
        await env.control.subscribed(gate)
        assert (await env.controller.status(gate.pid))["state"] == "waiting"
        chain = env.runner.processes["chain"]
        assert isinstance(chain, WaitsOnGate)
        assert chain.awaiting == (("gate", gate, False),)  # the child itself, not its pid
        gate.resume(41)  # the gate waited for resume(), and still does
        await chain.wait()
    assert chain.state is ProcessState.FINISHED
    assert chain.outputs == {"value": 41}


async def test_a_continue_whose_children_the_persister_lacks_fails_at_once(
    worker_env: tuple[Env, InMemoryPersister],
) -> None:
    env, persister = worker_env
    chain_checkpoint, gate_checkpoint = await _checkpoints_of_a_waiting_chain()
    await persister.save_checkpoint(chain_checkpoint)  # not the gate's
    with anyio.fail_after(BOUND):
        with pytest.raises(RemoteError) as info:
            await env.controller.continue_("chain")
    error_type = ChildrenNotFoundError
    assert info.value.type_name == f"{error_type.__module__}.{error_type.__qualname__}"
    assert info.value.message == (
        f"workchain chain waits for children {gate_checkpoint.pid} (ctx key 'gate'), which "
        "don't run in this runner, and its persister holds no checkpoint of them"
    )
    assert env.runner.processes == {}  # nothing was launched
    assert env.control.statistics().attached == 0
