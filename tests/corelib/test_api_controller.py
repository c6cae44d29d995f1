"""The controllers' plumpy-shaped API: failures raised on request (and by ``execute`` by
default), the ``*_future`` twins, and per-call timeouts of the blocking controller.

Async tests run on asyncio and trio against a worker on the test's loop; blocking tests use real
worker threads of both backends. No sleeps: a timeout is provoked by a reply that can't come (a
process that never ends, or a worker whose loop is stuck in a step until released)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from broker import BlockingCommunicator, LoopCommunicator, MemoryBroker
from corelib import (
    ControlOutcome,
    ExitCode,
    InMemoryPersister,
    Process,
    ProcessExceptedError,
    ProcessKilledError,
    Runner,
)
from corelib.cluster._worker import Worker
from corelib.control._binding import ProcessControl
from corelib.control._controller import BlockingProcessController, ProcessController
from corelib.control._launcher import ProcessLauncher
from corelib.control._messages import outcome_error

from ._remote_procs import BOUND, Double, Fails, Waiter


class KillsItself(Process):
    """Asks for its own kill in its step: killed (with ``"enough"``) when the step ends."""

    def run(self) -> None:
        self.kill("enough")


class ExitsBadly(Process):
    """Finishes with a non-zero exit status: an unsuccessful result, not a failure."""

    def run(self) -> ExitCode:
        return ExitCode(3, "bad luck")


class Stall(Process):
    """Its step blocks the worker's thread until :data:`RELEASE` is set, then it finishes."""

    ENTERED = threading.Event()
    RELEASE = threading.Event()

    def run(self) -> None:
        Stall.ENTERED.set()
        if not Stall.RELEASE.wait(BOUND):
            raise TimeoutError("never released")

    @classmethod
    def reset(cls) -> None:
        cls.ENTERED.clear()
        cls.RELEASE.clear()


# -- outcome_error: the conversion itself (sync) -------------------------------------------------


def test_a_finished_outcome_is_no_error_whatever_its_exit_status() -> None:
    ok = {"pid": "p", "state": "finished", "successful": True, "exit_status": 0}
    bad = {"pid": "p", "state": "finished", "successful": False, "exit_status": 3}
    assert outcome_error(ok) is None
    assert outcome_error(bad) is None


def test_excepted_and_killed_outcomes_become_plumpy_errors_carrying_the_outcome() -> None:
    excepted = {"pid": "p", "state": "excepted", "exception": "KeyError: 'a: b'"}
    error = outcome_error(excepted)
    assert isinstance(error, ProcessExceptedError)
    assert (error.pid, error.type_name, error.message, error.traceback) == (
        "p",
        "KeyError",
        "'a: b'",
        "",
    )
    assert str(error) == "process p excepted: KeyError: 'a: b'"
    assert error.outcome == excepted

    killed = outcome_error({"pid": "q", "state": "killed", "message": None})
    assert isinstance(killed, ProcessKilledError)
    assert (killed.pid, killed.message, str(killed)) == ("q", None, "process q was killed")
    assert killed.outcome == {"pid": "q", "state": "killed", "message": None}


def test_only_a_terminal_outcome_converts() -> None:
    with pytest.raises(ValueError, match=r"^'p1' is not the outcome of a terminal process$"):
        outcome_error("p1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"is not the outcome of a terminal process$"):
        outcome_error({"pid": "p", "state": "waiting"})


# -- the async controller, a worker on the test's loop -------------------------------------------


@pytest.fixture
async def ctl() -> AsyncIterator[ProcessController]:
    broker = MemoryBroker(strict=True)
    async with (
        LoopCommunicator(broker, name="worker") as comm,
        LoopCommunicator(broker, name="client") as client,
        Runner() as runner,
        ProcessControl(runner, comm) as control,
    ):
        launcher = ProcessLauncher(control, persister=InMemoryPersister())
        await comm.add_task_subscriber(launcher, "launcher")
        yield ProcessController(client)
        runner.kill_all("test over")


async def test_launch_returns_the_outcome_unless_asked_to_raise(ctl: ProcessController) -> None:
    with anyio.fail_after(BOUND):
        failed = await ctl.launch(Fails, pid="f1")
        assert failed == {"pid": "f1", "state": "excepted", "exception": "ValueError: boom"}
        with pytest.raises(
            ProcessExceptedError, match=r"^process f2 excepted: ValueError: boom$"
        ) as info:
            await ctl.launch(Fails, pid="f2", raise_on_failure=True)
        assert (info.value.type_name, info.value.message) == ("ValueError", "boom")
        assert info.value.outcome == dict(failed, pid="f2")

        assert (await ctl.launch(KillsItself))["state"] == "killed"
        with pytest.raises(ProcessKilledError, match=r"^process k was killed: enough$") as killed:
            await ctl.launch(KillsItself, pid="k", raise_on_failure=True)
        assert killed.value.outcome == {"pid": "k", "state": "killed", "message": "enough"}

        # exit codes are results: an unsuccessful finish returns its outcome
        for raise_on_failure in (False, True):
            bad = await ctl.launch(ExitsBadly, raise_on_failure=raise_on_failure)
            assert (bad["state"], bad["successful"], bad["exit_status"]) == ("finished", False, 3)
            assert bad["exit_message"] == "bad luck"
        done = await ctl.launch(Double, {"x": 4}, raise_on_failure=True)
        assert done["outputs"] == {"y": 8}


async def test_execute_raises_by_default_and_continue_on_request(ctl: ProcessController) -> None:
    with anyio.fail_after(BOUND):
        with pytest.raises(ProcessExceptedError, match=r"excepted: ValueError: boom$") as info:
            await ctl.execute(Fails)
        pid = info.value.pid
        with pytest.raises(ProcessKilledError, match=r"was killed: enough$"):
            await ctl.execute(KillsItself)
        assert (await ctl.execute(ExitsBadly))["exit_status"] == 3
        assert (await ctl.execute(Double, {"x": 2}))["outputs"] == {"y": 4}

        outcome = await ctl.execute(Fails, raise_on_failure=False)
        assert outcome["state"] == "excepted"
        # the terminal checkpoint answers a continue: its stored outcome, raised on request
        assert (await ctl.continue_(pid))["exception"] == "ValueError: boom"
        with pytest.raises(ProcessExceptedError) as again:
            await ctl.continue_(pid, raise_on_failure=True)
        assert again.value.outcome["pid"] == pid


async def test_nowait_replies_with_a_pid_and_so_cannot_raise(ctl: ProcessController) -> None:
    message = r"^raise_on_failure=True needs the outcome; nowait=True replies with the pid$"
    with pytest.raises(ValueError, match=message):
        await ctl.launch(Waiter, nowait=True, raise_on_failure=True)
    with pytest.raises(ValueError, match=message):
        await ctl.continue_("p", nowait=True, raise_on_failure=True)


# -- the blocking controller, worker threads of both backends ------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def broker(request: pytest.FixtureRequest) -> Iterator[MemoryBroker]:
    """A broker with one worker thread (of the param's backend) consuming from it."""
    Stall.reset()
    broker = MemoryBroker(strict=True)
    worker = Worker(broker, backend=request.param, persister=InMemoryPersister(), name="w")
    worker.start()
    try:
        yield broker
    finally:
        Stall.RELEASE.set()  # never leave the worker's thread blocked
        worker.stop()


@pytest.fixture
def comm(broker: MemoryBroker) -> Iterator[BlockingCommunicator]:
    comm = BlockingCommunicator(broker, timeout=BOUND)
    try:
        yield comm
    finally:
        comm.close()


def test_blocking_calls_raise_on_failure_as_the_async_ones(comm: BlockingCommunicator) -> None:
    ctl = BlockingProcessController(comm, timeout=BOUND)
    assert ctl.launch(Fails)["state"] == "excepted"
    with pytest.raises(ProcessExceptedError, match=r"^process f excepted: ValueError: boom$"):
        ctl.launch(Fails, pid="f", raise_on_failure=True)
    with pytest.raises(ProcessKilledError, match=r"^process k was killed: enough$"):
        ctl.launch(KillsItself, pid="k", raise_on_failure=True)
    with pytest.raises(ProcessKilledError, match=r"was killed: enough$"):
        ctl.execute(KillsItself)
    assert ctl.execute(ExitsBadly)["successful"] is False
    executed = ctl.execute(Fails, raise_on_failure=False)
    with pytest.raises(ProcessExceptedError):
        ctl.continue_(executed["pid"], raise_on_failure=True)
    assert ctl.continue_(executed["pid"]) == executed
    with pytest.raises(ValueError, match=r"^raise_on_failure=True needs the outcome"):
        ctl.launch(Waiter, nowait=True, raise_on_failure=True)


def test_the_future_twins(comm: BlockingCommunicator) -> None:
    ctl = BlockingProcessController(comm, timeout=BOUND)
    executed = ctl.execute_future(Double, {"x": 3}).result(BOUND)
    assert executed["outputs"] == {"y": 6}
    # continuing a terminal process answers with its stored outcome
    assert ctl.continue_future(executed["pid"]).result(BOUND) == executed

    with pytest.raises(ProcessExceptedError, match=r"excepted: ValueError: boom$"):
        ctl.execute_future(Fails).result(BOUND)
    failed = ctl.execute_future(Fails, raise_on_failure=False).result(BOUND)
    assert failed["state"] == "excepted"
    with pytest.raises(ProcessExceptedError) as info:
        ctl.continue_future(failed["pid"], raise_on_failure=True).result(BOUND)
    assert info.value.outcome == failed
    with pytest.raises(ProcessKilledError, match=r"^process k was killed: enough$"):
        ctl.launch_future(KillsItself, pid="k", raise_on_failure=True).result(BOUND)
    assert ctl.launch_future(KillsItself).result(BOUND)["state"] == "killed"

    pid = ctl.launch(Waiter, nowait=True)
    assert ctl.pause_future(pid, "hold").result(BOUND) == ControlOutcome(True, "paused")
    assert ctl.play_future(pid).result(BOUND) == ControlOutcome(True, "played")
    assert ctl.kill_future(pid, "bye").result(BOUND) == ControlOutcome(True, "killed")

    # cancelling a future stops the wait (the process runs on, to be stopped with the worker)
    pending = ctl.execute_future(Waiter)
    assert pending.cancel()
    assert pending.cancelled()


def test_a_per_call_timeout_overrides_the_default(comm: BlockingCommunicator) -> None:
    ctl = BlockingProcessController(comm, timeout=BOUND)
    # a launch that replies when its process ends, and a Waiter never does
    with pytest.raises(TimeoutError, match=r"^no reply to launch of process 'w' within 0.05 s$"):
        ctl.launch(Waiter, pid="w", timeout=0.05)
    short = BlockingProcessController(comm, timeout=0.05)
    assert short.timeout == 0.05
    with pytest.raises(TimeoutError, match=r"^no reply to launch of process 'w2' within 0.05 s$"):
        short.launch(Waiter, pid="w2")  # the controller's default
    # a reply that comes is waited for, with either bound
    assert ctl.launch(Double, {"x": 1}, timeout=BOUND)["outputs"] == {"y": 2}
    short.kill_all("test over")  # the two Waiters


def test_every_blocking_call_is_bounded_by_its_timeout(comm: BlockingCommunicator) -> None:
    ctl = BlockingProcessController(comm, timeout=BOUND)
    short = BlockingProcessController(comm, timeout=0.05)
    launched = ctl.launch_future(Stall, pid="s")
    assert Stall.ENTERED.wait(BOUND)  # the worker's loop is stuck: nothing it gets replies

    calls: dict[str, Any] = {
        "status": lambda c, **kw: c.status("s", **kw),
        "pause": lambda c, **kw: c.pause("s", **kw),
        "play": lambda c, **kw: c.play("s", **kw),
        "kill": lambda c, **kw: c.kill("s", "stop", **kw),
        "continue": lambda c, **kw: c.continue_("s", **kw),
        "launch": lambda c, **kw: c.launch(Double, pid="d", **kw),
        "execute": lambda c, **kw: c.execute(Double, **kw),
    }
    for intent, call in calls.items():
        pid = "d" if intent == "launch" else "[0-9a-f]{32}" if intent == "execute" else "s"
        expected = rf"^no reply to {intent} of process '{pid}' within 0.05 s$"
        with pytest.raises(TimeoutError, match=expected):
            call(ctl, timeout=0.05)
        with pytest.raises(TimeoutError, match=expected):
            call(short)
    # the broadcasts never wait
    short.pause_all()
    short.play_all()
    Stall.RELEASE.set()
    assert launched.result(BOUND)["pid"] == "s"


def test_timeouts_are_checked(comm: BlockingCommunicator) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be None or seconds >= 0, got -1$"):
        BlockingProcessController(comm, timeout=-1)
    ctl = BlockingProcessController(comm)
    assert ctl.timeout is None
    with pytest.raises(ValueError, match=r"^timeout must be None or seconds >= 0, got nan$"):
        ctl.status("p", timeout=float("nan"))
    with pytest.raises(ValueError, match=r"got -0.5$"):
        ctl.launch(Double, timeout=-0.5)
