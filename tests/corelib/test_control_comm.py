"""Processes on a communicator, on one loop: RPC intents, control broadcasts, state broadcasts,
children attached, the launcher's task handling. Every test runs on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from broker import (
    BroadcastFilter,
    DuplicateSubscriberError,
    LoopCommunicator,
    MemoryBroker,
    RemoteError,
    TaskRejected,
    UnroutableError,
)
from corelib import ControlOutcome, InMemoryPersister, Process, ProcessState, Runner
from corelib.control._binding import ProcessControl, control_of
from corelib.control._controller import ProcessController
from corelib.control._launcher import InvalidTaskError, ProcessLauncher
from corelib.control._messages import continue_body, launch_body, status_of, to_plain
from corelib.control._remote import RemoteProcess

from ._remote_procs import BOUND, Double, Fails, ParentOfWaiters, Waiter


class Env:
    def __init__(
        self, broker: MemoryBroker, runner: Runner, control: ProcessControl, client: Any
    ) -> None:
        self.broker = broker
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
        yield Env(broker, runner, control, client)
        runner.kill_all("test over")


class Recorder:
    """Records the broadcasts of one sender."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.bodies: list[Any] = []
        self.ended = anyio.Event()

    def __call__(self, _comm: Any, body: Any, _sender: Any, subject: Any, _cid: Any) -> None:
        self.subjects.append(subject)
        self.bodies.append(body)
        if subject.rsplit(".", 1)[-1] in {"finished", "excepted", "killed"}:
            self.ended.set()


async def record(env: Env, pid: str) -> Recorder:
    recorder = Recorder()
    await env.client.add_broadcast_subscriber(BroadcastFilter(recorder, sender=pid))
    return recorder


async def test_state_changes_are_broadcast_with_the_outcome_last(env: Env) -> None:
    recorder = await record(env, "p1")
    process = env.control.submit(Double, {"x": 4}, pid="p1")
    with anyio.fail_after(BOUND):
        await process.wait()
        await recorder.ended.wait()
    assert recorder.subjects == [
        "state_changed.None.created",
        "state_changed.created.running",
        "state_changed.running.finished",
    ]
    assert recorder.bodies[:2] == [None, None]
    assert recorder.bodies[-1] == {
        "pid": "p1",
        "state": "finished",
        "successful": True,
        "exit_status": 0,
        "exit_message": None,
        "outputs": {"y": 8},
    }


async def test_rpc_intents_and_unsubscribe_at_the_end(env: Env) -> None:
    process = env.control.submit(Waiter, pid="w1")
    with anyio.fail_after(BOUND):
        await env.control.subscribed(process)
        status = await env.controller.status("w1")
        assert status["state"] == "waiting"
        assert status["paused"] is False
        assert status["process_class"] == "tests.corelib._remote_procs:Waiter"
        assert status["process_string"] == "<Waiter> (ProcessState.WAITING)"
        assert await env.controller.pause("w1", "hold") == ControlOutcome(True, "paused")
        assert (await env.controller.status("w1"))["paused"] is True
        assert await env.controller.play("w1") == ControlOutcome(True, "played")
        assert await env.controller.kill("w1", "bye") == ControlOutcome(True, "killed")
        assert process.state is ProcessState.KILLED
        # the RPC subscription goes once the process is terminal
        while env.control.statistics().attached or env.control.statistics().pending_operations:
            await anyio.lowlevel.checkpoint()  # let the serve task unsubscribe
        with pytest.raises(UnroutableError):
            await env.controller.status("w1")


async def test_unknown_intent_and_unknown_pid(env: Env) -> None:
    process = env.control.submit(Waiter, pid="w2")
    with anyio.fail_after(BOUND):
        await env.control.subscribed(process)
        with pytest.raises(RemoteError) as info:
            await env.client.rpc_send("w2", {"intent": "explode"})
        assert info.value.type_name == "ValueError"
        assert "unknown intent 'explode'" in info.value.message
        with pytest.raises(UnroutableError):
            await env.controller.pause("no-such-pid")


async def test_a_kill_during_an_async_step_replies_when_the_step_ends(env: Env) -> None:
    gate = anyio.Event()

    class Stuck(Waiter):
        async def run(self) -> Any:
            await gate.wait()
            return None

    process = Stuck(pid="s1")
    with anyio.fail_after(BOUND):
        await env.control.start(process)
        outcome = await env.controller.kill("s1", "stop", force=False)
    assert outcome == ControlOutcome(True, "killed")
    assert process.state is ProcessState.KILLED


async def test_control_broadcasts_reach_every_process(env: Env) -> None:
    processes = [env.control.submit(Waiter) for _ in range(5)]
    with anyio.fail_after(BOUND):
        for process in processes:
            await env.control.subscribed(process)
        await env.controller.pause_all("all stop")
        while not all(p.paused for p in processes):
            await anyio.lowlevel.checkpoint()  # the broadcast is handled on this loop
        await env.controller.play_all()
        while any(p.paused for p in processes):
            await anyio.lowlevel.checkpoint()
        await env.controller.kill_all("all die")
        for process in processes:
            await process.wait()
    assert {p.state for p in processes} == {ProcessState.KILLED}
    assert env.control.statistics().broadcast_requests == 3


class Shielded(Process):
    """Its step waits for :attr:`release` in a shielded scope: a graceful kill waits for it."""

    started: anyio.Event
    release: anyio.Event

    async def run(self) -> None:
        with anyio.CancelScope(shield=True):
            type(self).started.set()
            await type(self).release.wait()


async def test_a_forced_kill_broadcast_ends_a_step_at_once(env: Env) -> None:
    """plumpy ignores ``force_kill`` in a kill broadcast; we honour it, as in the RPC."""
    Shielded.started, Shielded.release = anyio.Event(), anyio.Event()
    process = env.control.submit(Shielded)
    with anyio.fail_after(BOUND):
        await env.control.subscribed(process)
        await Shielded.started.wait()
        await env.controller.kill_all("stop")  # graceful: the step goes on
        assert (await env.controller.status(process.pid))["state"] == "running"
        await env.controller.kill_all("now", force=True)
        await process.wait()
    assert process.state is ProcessState.KILLED
    Shielded.release.set()  # the abandoned step may end now


async def test_children_submitted_by_a_step_are_attached(env: Env) -> None:
    parent = env.control.submit(ParentOfWaiters, {"n": 3})
    with anyio.fail_after(BOUND):
        while parent.state is not ProcessState.WAITING:
            await anyio.lowlevel.checkpoint()
        children = [p for p in env.runner.processes.values() if p is not parent]
        assert len(children) == 3
        assert all(env.control.is_attached(c) for c in children)
        for child in children:
            await env.control.subscribed(child)
            assert (await env.controller.status(child.pid))["state"] == "waiting"
        for child in children:
            await env.controller.kill(child.pid)
        await parent.wait()
    assert parent.state is ProcessState.EXCEPTED  # a killed child fails its parent


async def test_processes_launched_before_binding_are_attached(env: Env) -> None:
    assert control_of(env.runner) is env.control
    async with Runner() as runner:
        early = runner.submit(Waiter, pid="early")
        async with ProcessControl(runner, env.client) as control:
            with anyio.fail_after(BOUND):
                await control.subscribed(early)
                assert (await env.controller.status("early"))["state"] == "waiting"
            early.kill()


async def test_remote_process_of_a_live_process_and_of_an_unknown_one(env: Env) -> None:
    process = env.control.submit(Waiter, pid="r1")
    remote = RemoteProcess(env.client, "r1")
    results: list[Any] = []

    async def wait_remote() -> None:
        results.append(await remote.outcome())

    with anyio.fail_after(BOUND):
        await env.control.subscribed(process)
        handled = env.control.statistics().rpc_handled
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_remote)
            # its status RPC tells that it subscribed to the broadcasts first
            while env.control.statistics().rpc_handled == handled:
                await anyio.lowlevel.checkpoint()
            process.resume(21)
        with pytest.raises(UnroutableError):
            await RemoteProcess(env.client, "never-launched").outcome()
    assert results[0]["state"] == "finished"
    assert results[0]["result"] == 21
    assert remote.done()
    assert await remote.outcome() is results[0]


async def test_status_of_plain_values() -> None:
    assert to_plain({"a": (1, 2.5, None), "b": {"c": True}}) == {
        "a": [1, 2.5, None],
        "b": {"c": True},
    }
    with pytest.raises(TypeError, match=r"value\['x'\] is a set"):
        to_plain({"x": {1}})
    with pytest.raises(TypeError, match="non-string key"):
        to_plain({1: 2})
    process = Double({"x": 1}, pid="d")
    assert status_of(process)["state"] == "created"
    assert "outcome" not in status_of(process)
    await anyio.lowlevel.checkpoint()


# -- the launcher, called through the task queue ------------------------------------------------


@pytest.fixture
async def launcher_env(env: Env) -> tuple[Env, InMemoryPersister]:
    persister = InMemoryPersister()
    launcher = ProcessLauncher(env.control, persister=persister)
    await env.control.communicator.add_task_subscriber(launcher, "launcher")
    return env, persister


async def test_launch_continue_and_execute_through_tasks(
    launcher_env: tuple[Env, InMemoryPersister],
) -> None:
    env, persister = launcher_env
    with anyio.fail_after(BOUND):
        outcome = await env.controller.launch(Double, {"x": 5})
        assert outcome["state"] == "finished"
        assert outcome["outputs"] == {"y": 10}
        pid = await env.controller.launch(Waiter, nowait=True)
        assert (await env.controller.status(pid))["state"] == "waiting"
        await env.controller.kill(pid)

        executed = await env.controller.execute(Double, {"x": 7})
        assert executed["outputs"] == {"y": 14}
        stored = await persister.load_checkpoint(executed["pid"])
        assert stored.state == "finished"
        # continuing a terminal process returns its stored outcome
        assert await env.controller.continue_(executed["pid"]) == executed

        failed = await env.controller.launch(Fails)
        assert failed["state"] == "excepted"
        assert failed["exception"] == "ValueError: boom"


async def test_continue_from_a_created_checkpoint(
    launcher_env: tuple[Env, InMemoryPersister],
) -> None:
    env, persister = launcher_env
    from corelib.persistence._save_load import checkpoint_of

    await persister.save_checkpoint(checkpoint_of(Double({"x": 2}, pid="saved")))
    with anyio.fail_after(BOUND):
        outcome = await env.controller.continue_("saved")
    assert outcome["outputs"] == {"y": 4}
    assert outcome["pid"] == "saved"


async def test_launcher_refuses_what_no_launcher_could_run(env: Env) -> None:
    """Tasks no worker could run are answered with InvalidTaskError, not rejected: a
    rejected task would be requeued and wait forever (#12 point 7)."""
    launcher = ProcessLauncher(env.control)  # no persister
    with pytest.raises(InvalidTaskError, match="unknown task type 'dance'"):
        await launcher(env.client, {"task": "dance"})
    with pytest.raises(InvalidTaskError, match="must be a dict, got str"):
        await launcher(env.client, "launch")
    with pytest.raises(InvalidTaskError, match="needs a persister"):
        await launcher(env.client, continue_body("x"))
    with pytest.raises(InvalidTaskError, match="needs a persister"):
        await launcher(env.client, launch_body(Double, persist=True))
    with pytest.raises(InvalidTaskError, match="task 'continue' has no 'pid'"):
        await launcher(env.client, {"task": "continue"})
    with pytest.raises(InvalidTaskError, match="'process_class' must be a string"):
        await launcher(env.client, {"task": "launch", "process_class": ["x"]})
    with pytest.raises(InvalidTaskError, match="'inputs' must be a dict, got list"):
        await launcher(env.client, dict(launch_body(Double), inputs=[1]))
    forbidden = dict(launch_body(Double), process_class="os:system")
    with pytest.raises(Exception, match="outside the allowed prefixes"):
        await launcher(env.client, forbidden)
    launcher.stop_accepting()
    with pytest.raises(TaskRejected, match="stopping"):
        await launcher(env.client, launch_body(Double))


async def test_launch_body_needs_json_inputs() -> None:
    with pytest.raises(TypeError, match="is a set"):
        launch_body(Double, {"x": {1}})
    body = launch_body("tests.corelib._remote_procs:Double", {"x": 1}, pid="p")
    assert body == {
        "task": "launch",
        "process_class": "tests.corelib._remote_procs:Double",
        "inputs": {"x": 1},
        "pid": "p",
        "persist": False,
        "nowait": False,
    }
    await anyio.lowlevel.checkpoint()


async def test_a_pid_that_answers_elsewhere_is_not_started_twice(env: Env) -> None:
    first = Waiter(pid="dup")
    with anyio.fail_after(BOUND):
        await env.control.start(first)
        async with Runner() as runner, ProcessControl(runner, env.client) as other:
            second = Waiter(pid="dup")
            with pytest.raises(DuplicateSubscriberError):
                await other.start(second)
            assert not other.is_attached(second)
            assert "dup" not in runner.processes
        assert (await env.controller.status("dup"))["state"] == "waiting"
    first.kill()
