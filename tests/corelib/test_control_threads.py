"""Process control across real threads: workers on asyncio and trio threads, controllers on
plain threads and on the test's loop. No sleeps: threading.Event handshakes, bounded joins and
``anyio.fail_after``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from broker import BlockingCommunicator, LoopCommunicator, MemoryBroker, UnroutableError
from corelib import ControlOutcome, InMemoryPersister
from corelib.cluster._worker import LocalCluster, Worker
from corelib.control._controller import BlockingProcessController, ProcessController

from ._remote_procs import BOUND, Blocker, Double, Parent, Sleeper, ThreadProbe, Waiter


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker(strict=True)


@pytest.fixture
def two_workers(broker: MemoryBroker) -> Iterator[tuple[Worker, Worker]]:
    """Worker "a" (asyncio) consumes queue "a", worker "b" (trio) queue "b"."""
    a = Worker(broker, backend="asyncio", queue="a", name="wa")
    b = Worker(broker, backend="trio", queue="b", name="wb")
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        Blocker.RELEASE.set()  # never leave a worker thread blocked
        a.stop()
        b.stop()


def controller(broker: MemoryBroker, queue: str | None = None) -> BlockingProcessController:
    comm = BlockingCommunicator(broker, timeout=BOUND)
    return BlockingProcessController(comm, queue=queue, timeout=BOUND)


def test_a_blocked_process_is_controlled_once_its_step_ends(
    broker: MemoryBroker, two_workers: tuple[Worker, Worker]
) -> None:
    Blocker.reset()
    to_a, to_b = controller(broker, "a"), controller(broker, "b")
    try:
        # a process on worker b, which must stay responsive throughout
        waiter = to_b.launch(Waiter, nowait=True)
        blocked = to_a.launch_future(Blocker, pid="blocked")  # replies when it ends
        assert Blocker.ENTERED.wait(BOUND)  # worker a's thread is now stuck in the step

        # controllers on two other threads ask the blocked process
        sent: dict[str, Any] = {}

        def send(name: str, fn: Any) -> None:
            sent[name] = fn()

        threads = [
            threading.Thread(target=send, args=("status", lambda: to_a.status_future("blocked"))),
            threading.Thread(
                target=send,
                args=("pause", lambda: to_a.rpc_future("blocked", {"intent": "pause"})),
            ),
        ]
        for thread in threads:
            thread.start()
            thread.join(BOUND)  # in order: the status is sent before the pause

        # meanwhile worker b and the broker carry on: status RPCs and launches from a thread
        answered: list[str] = []

        def keep_sending() -> None:
            for i in range(20):
                answered.append(to_b.status(waiter)["state"])
                assert to_b.launch(Double, {"x": i})["outputs"] == {"y": 2 * i}

        busy = threading.Thread(target=keep_sending)
        busy.start()
        busy.join(BOUND)
        assert answered == ["waiting"] * 20
        # nothing could answer for the blocked process yet: its loop is stuck in the step
        assert not sent["status"].done()
        assert not sent["pause"].done()

        Blocker.RELEASE.set()
        assert sent["status"].result(BOUND)["state"] == "waiting"
        assert sent["pause"].result(BOUND) == {"done": True, "reason": "paused"}
        status = to_a.status("blocked")
        assert (status["state"], status["paused"]) == ("waiting", True)
        assert to_a.play("blocked") == ControlOutcome(True, "played")
        assert to_a.kill("blocked", "enough") == ControlOutcome(True, "killed")
        assert blocked.result(BOUND) == {"pid": "blocked", "state": "killed", "message": "enough"}
        assert to_b.kill(waiter) == ControlOutcome(True, "killed")
    finally:
        to_a.communicator.close()
        to_b.communicator.close()


def test_rpc_broadcast_and_task_control_across_threads() -> None:
    with LocalCluster(3, backends=("asyncio", "trio")) as cluster:
        ctl = cluster.controller()
        pids = [ctl.launch(Waiter, nowait=True) for _ in range(6)]
        assert {ctl.status(pid)["state"] for pid in pids} == {"waiting"}
        # broadcast: every process on every worker pauses
        ctl.pause_all("maintenance")
        # each worker handles this thread's messages in order: the broadcast first
        assert all(ctl.status(pid)["paused"] for pid in pids)
        ctl.play_all()
        assert not any(ctl.status(pid)["paused"] for pid in pids)
        # RPC: one by one
        assert ctl.pause(pids[0]) == ControlOutcome(True, "paused")
        assert ctl.pause(pids[0]) == ControlOutcome(True, "already paused")
        # tasks: launches spread over the workers
        outcomes = [ctl.launch_future(Double, {"x": i}) for i in range(30)]
        assert [f.result(BOUND)["outputs"]["y"] for f in outcomes] == [2 * i for i in range(30)]
        ctl.kill_all("done")
        for pid in pids:
            while True:  # until the kill is through and its subscription removed
                try:
                    result = ctl.rpc_future(pid, {"intent": "status"})
                except UnroutableError:
                    break
                assert result.result(BOUND)["pid"] == pid
        stats = cluster.statistics()
        assert sum(w.launched for w in stats.workers) == 36
        assert len({w.backend for w in stats.workers}) == 2
        assert stats.broker.dead_letters == 0
        assert stats.broker.in_flight == 0


def test_a_dying_worker_hands_its_launch_to_another_from_the_checkpoint(
    broker: MemoryBroker,
) -> None:
    Sleeper.reset()
    persister = InMemoryPersister()
    first = Worker(broker, backend="asyncio", persister=persister, name="first")
    first.start()
    ctl = controller(broker)
    second = Worker(broker, backend="trio", persister=persister, name="second")
    try:
        result = ctl.launch_future(Sleeper, persist=True, pid="durable")
        assert Sleeper.STARTED.wait(BOUND)
        first.crash()  # its loop stops: the broker requeues the launch
        assert first.join(BOUND)
        assert broker.statistics().queues["tasks"].redeliveries == 1
        Sleeper.RELEASE.set()
        second.start()  # continues it from the checkpoint saved before it ran
        outcome = result.result(BOUND)
        assert outcome["pid"] == "durable"
        assert outcome["state"] == "finished"
        assert Sleeper.runs == 2
        assert second.statistics().launched == 1
        assert broker.statistics().dead_letters == 0
        # the terminal checkpoint answers a later continue without running anything
        assert ctl.continue_("durable") == outcome
        assert Sleeper.runs == 2
    finally:
        Sleeper.RELEASE.set()
        first.stop()
        second.stop()
        ctl.communicator.close()


def test_a_workchain_awaits_a_child_on_another_worker() -> None:
    with LocalCluster(2, backends=("trio", "asyncio")) as cluster:
        ctl = cluster.controller()
        outcomes = [ctl.launch_future(Parent, {"x": x}) for x in range(4)]
        totals = [f.result(BOUND)["outputs"]["total"] for f in outcomes]
        assert totals == [2 * x + 2 * (x + 1) for x in range(4)]
        assert sum(w.launched for w in cluster.statistics().workers) == 8


def test_draining_stop_finishes_what_it_holds(broker: MemoryBroker) -> None:
    worker = Worker(broker, name="drainer")
    worker.start()
    ctl = controller(broker)
    try:
        pid = ctl.launch(Waiter, nowait=True)
        done = threading.Event()

        def stop() -> None:
            worker.stop(drain=True, timeout=BOUND)
            done.set()

        stopper = threading.Thread(target=stop)
        stopper.start()
        assert not done.is_set()
        ctl.kill(pid)  # the last process ends: the drain is over
        stopper.join(BOUND)
        assert done.is_set()
        assert not worker.alive
    finally:
        worker.stop()
        ctl.communicator.close()


async def test_async_controller_on_the_test_loop_drives_worker_threads() -> None:
    # the test's loop (asyncio or trio) controls workers on an asyncio and a trio thread
    broker = MemoryBroker(strict=True)
    workers = [Worker(broker, backend=b) for b in ("asyncio", "trio")]
    for worker in workers:
        worker.start()
    try:
        async with LoopCommunicator(broker) as comm:
            ctl = ProcessController(comm)
            with anyio.fail_after(BOUND):
                pids = [await ctl.launch(Waiter, nowait=True) for _ in range(4)]
                assert [(await ctl.status(p))["state"] for p in pids] == ["waiting"] * 4
                for pid in pids:
                    assert await ctl.pause(pid) == ControlOutcome(True, "paused")
                    assert await ctl.kill(pid, "bye") == ControlOutcome(True, "killed")
                results = [await ctl.launch(Double, {"x": i}) for i in range(4)]
                assert [r["outputs"]["y"] for r in results] == [0, 2, 4, 6]
                with pytest.raises(UnroutableError):
                    await ctl.status("nobody")
    finally:
        for worker in workers:
            await anyio.to_thread.run_sync(worker.stop)


def test_a_kill_sent_during_a_blocked_step_ends_the_process_at_the_step_end(
    broker: MemoryBroker, two_workers: tuple[Worker, Worker]
) -> None:
    Blocker.reset()
    to_a = controller(broker, "a")
    try:
        result = to_a.launch_future(Blocker, pid="doomed")
        assert Blocker.ENTERED.wait(BOUND)
        kill = to_a.rpc_future("doomed", {"intent": "kill", "message": "stop"})
        force = to_a.rpc_future("doomed", {"intent": "kill", "message": "now", "force_kill": True})
        assert not kill.done()
        Blocker.RELEASE.set()
        # the loop was stuck in the step, so both arrive after it: the first one kills
        assert kill.result(BOUND) == {"done": True, "reason": "killed"}
        assert force.result(BOUND) == {"done": False, "reason": "process already killed"}
        assert result.result(BOUND) == {"pid": "doomed", "state": "killed", "message": "stop"}
    finally:
        to_a.communicator.close()


def test_handlers_run_on_the_workers_own_thread(
    broker: MemoryBroker, two_workers: tuple[Worker, Worker]
) -> None:
    _, b = two_workers
    to_b = controller(broker, "b")
    try:
        pid = to_b.launch(ThreadProbe, nowait=True)
        assert to_b.pause(pid).done  # an RPC from this thread
        to_b.kill_all()  # a broadcast from this thread
        assert b.thread is not None
        # b handles what this thread sent in order: the broadcast before this launch
        assert to_b.launch_future(Double).result(BOUND)["state"] == "finished"
        assert ThreadProbe.threads == {"paused": b.thread.ident, "killed": b.thread.ident}
    finally:
        to_b.communicator.close()
