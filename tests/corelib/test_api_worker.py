"""``Worker.submit`` / ``Worker.get_process`` / ``LocalCluster.get_process`` from plain threads,
on workers of both backends. Real threads; no sleeps: threading.Event handshakes, the FIFO order
of a loop's call-soon queue, and bounded waits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import anyio
import pytest

from broker import (
    BlockingCommunicator,
    DuplicateSubscriberError,
    LoopThreadError,
    MemoryBroker,
    UnroutableError,
)
from corelib import (
    ControlOutcome,
    LocalCluster,
    PortValidationError,
    Process,
    ProcessNotFoundError,
    ProcessState,
    Worker,
)
from corelib.control._controller import BlockingProcessController
from corelib.process._errors import ProcessError, RunnerNotRunningError

from ._remote_procs import BOUND, Double, Waiter


class Gate(Process):
    """Its first step blocks the worker's thread until :data:`RELEASE` is set, then ends."""

    ENTERED = threading.Event()
    RELEASE = threading.Event()

    def run(self) -> None:
        Gate.ENTERED.set()
        if not Gate.RELEASE.wait(BOUND):
            raise TimeoutError("never released")

    @classmethod
    def reset(cls) -> None:
        cls.ENTERED.clear()
        cls.RELEASE.clear()


class SubmitsFromItsStep(Process):
    """Calls ``Worker.submit`` from its own step (on the worker's thread) and records why not."""

    WORKER: ClassVar[Worker | None] = None
    ERRORS: ClassVar[list[BaseException]] = []
    DONE = threading.Event()

    def run(self) -> None:
        assert SubmitsFromItsStep.WORKER is not None
        try:
            SubmitsFromItsStep.WORKER.submit(Double)
        except LoopThreadError as exc:
            SubmitsFromItsStep.ERRORS.append(exc)
        SubmitsFromItsStep.DONE.set()


@pytest.fixture(params=["asyncio", "trio"])
def worker_backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker(strict=True)


@pytest.fixture
def worker(broker: MemoryBroker, worker_backend: Any) -> Iterator[Worker]:
    Gate.reset()
    worker = Worker(broker, backend=worker_backend, name="w")
    worker.start()
    try:
        yield worker
    finally:
        Gate.RELEASE.set()  # never leave the worker's thread blocked
        worker.stop()


@pytest.fixture
def ctl(broker: MemoryBroker) -> Iterator[BlockingProcessController]:
    comm = BlockingCommunicator(broker, timeout=BOUND)
    try:
        yield BlockingProcessController(comm, timeout=BOUND)
    finally:
        comm.close()


def test_a_submitted_process_answers_rpcs_and_is_found_by_pid(
    worker: Worker, ctl: BlockingProcessController
) -> None:
    process = worker.submit(Waiter, pid="p1")
    assert isinstance(process, Waiter)
    assert process.pid == "p1"
    assert worker.get_process("p1") is process
    assert worker.processes() == (process,)
    assert ctl.status("p1")["pid"] == "p1"  # subscribed before submit returned
    assert ctl.pause("p1") == ControlOutcome(True, "paused")
    assert ctl.kill("p1", "bye") == ControlOutcome(True, "killed")
    # read from this thread once the worker has replied
    assert process.state is ProcessState.KILLED
    with pytest.raises(ProcessNotFoundError, match=r"^no process 'p1' runs on worker 'w'$") as info:
        worker.get_process("p1")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ProcessError)
    assert info.value.pid == "p1"


def test_submit_chooses_a_fresh_pid_and_passes_inputs(
    worker: Worker, ctl: BlockingProcessController
) -> None:
    first, second = worker.submit(Waiter), worker.submit(Double, {"x": 4})
    assert len(first.pid) == 32
    assert first.pid != second.pid
    assert second.inputs.x == 4
    assert ctl.kill(first.pid).done


def test_what_the_process_raises_when_created_reaches_the_caller(
    worker: Worker, ctl: BlockingProcessController
) -> None:
    with pytest.raises(PortValidationError):
        worker.submit(Double, {"x": "not an int"})
    live = worker.submit(Waiter, pid="taken")
    with pytest.raises(DuplicateSubscriberError):
        worker.submit(Waiter, pid="taken")
    assert worker.get_process("taken") is live  # the first one is untouched
    assert ctl.kill("taken").done


def test_submit_from_the_workers_own_thread_is_refused(worker: Worker) -> None:
    SubmitsFromItsStep.WORKER = worker
    SubmitsFromItsStep.ERRORS.clear()
    SubmitsFromItsStep.DONE.clear()
    worker.submit(SubmitsFromItsStep)
    assert SubmitsFromItsStep.DONE.wait(BOUND)
    [error] = SubmitsFromItsStep.ERRORS
    assert str(error) == (
        "Worker.submit can't be called on the thread of worker 'w'; in a step there,"
        " use self.submit(...) instead"
    )


def test_a_submit_that_times_out_before_the_loop_took_it_never_starts(
    worker: Worker, ctl: BlockingProcessController
) -> None:
    worker.submit(Gate)
    assert Gate.ENTERED.wait(BOUND)  # the worker's loop is stuck in the step
    with pytest.raises(
        TimeoutError, match=r"^worker 'w' did not start process 'late' within 0.05 s$"
    ):
        worker.submit(Waiter, pid="late", timeout=0.05)
    Gate.RELEASE.set()
    # the loop runs what was posted in order: the abandoned submission came first
    after = worker.submit(Waiter, pid="after")
    with pytest.raises(ProcessNotFoundError):
        worker.get_process("late")
    with pytest.raises(UnroutableError):
        ctl.status("late")
    assert ctl.kill(after.pid).done


def test_submit_and_get_process_need_a_running_worker(
    broker: MemoryBroker, worker_backend: Any
) -> None:
    worker = Worker(broker, backend=worker_backend, name="idle")
    message = r"^worker 'idle' is not running$"
    with pytest.raises(RunnerNotRunningError, match=message):
        worker.submit(Double)
    with pytest.raises(RunnerNotRunningError, match=message):
        worker.get_process("x")
    worker.start()
    worker.stop()
    with pytest.raises(RunnerNotRunningError, match=message):
        worker.submit(Double)
    with pytest.raises(RunnerNotRunningError, match=message):
        worker.get_process("x")


def test_a_submit_racing_with_a_stop_fails_instead_of_hanging(worker: Worker) -> None:
    worker.submit(Gate)
    assert Gate.ENTERED.wait(BOUND)
    worker.crash()  # posted first: the loop will see the stop before the submission
    outcome: list[BaseException] = []

    def submit() -> None:
        try:
            worker.submit(Waiter, timeout=None)  # no bound: it must not hang
        except BaseException as exc:
            outcome.append(exc)

    submitter = threading.Thread(target=submit)
    submitter.start()
    Gate.RELEASE.set()  # whenever the submit got in, it ends with the same error
    submitter.join(BOUND)
    assert not submitter.is_alive()
    assert [type(e) for e in outcome] == [RunnerNotRunningError]
    assert str(outcome[0]) == "worker 'w' is not running"
    assert worker.join(BOUND)


async def test_submit_from_a_thread_that_runs_an_event_loop_is_refused(
    broker: MemoryBroker,
) -> None:
    worker = Worker(broker, backend="trio", name="w")
    await anyio.to_thread.run_sync(worker.start)
    try:
        with pytest.raises(LoopThreadError, match=r"^Worker.submit would block this thread's"):
            worker.submit(Double)
        with anyio.fail_after(BOUND):
            # the way in from async code: a worker thread of anyio's pool
            process = await anyio.to_thread.run_sync(worker.submit, Double)
        assert isinstance(process, Double)
    finally:
        await anyio.to_thread.run_sync(worker.stop)


def test_the_cluster_finds_a_process_on_any_worker() -> None:
    with LocalCluster(2, backends=("asyncio", "trio")) as cluster:
        ctl = cluster.controller()
        on_trio = cluster.workers[1].submit(Waiter, pid="there")
        assert cluster.get_process("there") is on_trio
        with pytest.raises(ProcessNotFoundError) as info:
            cluster.get_process("nowhere")
        assert (
            str(info.value) == "no process 'nowhere' runs on any worker of <LocalCluster 2 workers>"
        )
        assert ctl.kill("there").done
        cluster.workers[0].stop()  # a stopped worker is skipped, not an error
        with pytest.raises(ProcessNotFoundError):
            cluster.get_process("there")
