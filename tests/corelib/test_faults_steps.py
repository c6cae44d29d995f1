"""A step (or what a step waits on, or a hook) that raises a ``BaseException`` ends its own
process, never its runner, its siblings or its worker (issue #12, point 3).

The rule under test: whatever user code raises (``SystemExit``, ``KeyboardInterrupt``,
``GeneratorExit``, a ``BaseException`` of its own, a ``BaseExceptionGroup``, even asyncio's
``CancelledError`` raised by the code itself) makes that process EXCEPTED, with the exception
recorded, unless it is the loop's cancellation delivered because an enclosing scope was
cancelled (a kill, or the runner's block cancelled): that one still kills the process.

On asyncio and trio; then on real worker threads: a worker runs such a process and answers
its launch task (the process excepted) instead of dying, and a task that does kill every
consumer it reaches is dead-lettered after ``1 + max_redeliveries`` deliveries while the
other workers go on (the broker side of that is
``tests/broker/test_at_least_once.py::test_task_whose_consumers_always_die_is_dead_lettered``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from broker import DeadLetteredError, MemoryBroker
from corelib import (
    Continue,
    Excepted,
    Killed,
    Process,
    ProcessExceptedError,
    ProcessListener,
    ProcessSpec,
    ProcessState,
    Runner,
    Wait,
)
from corelib.cluster._worker import LocalCluster, Worker

from ._procs import BOUND, Gate, GatedFinal, ReturnsValue, Waiter, reach


class Doom(BaseException):
    """A ``BaseException`` of the user's own, in none of the standard families."""


#: what a step may raise, by name; each call makes a fresh exception
KINDS: dict[str, Callable[[], BaseException]] = {
    "SystemExit": lambda: SystemExit(3),
    "KeyboardInterrupt": lambda: KeyboardInterrupt("interrupted by a step"),
    "GeneratorExit": lambda: GeneratorExit("closed by a step"),
    "Doom": lambda: Doom("the end"),
    "BaseExceptionGroup": lambda: BaseExceptionGroup(
        "several", [KeyboardInterrupt("one"), ValueError("two")]
    ),
    # asyncio's cancellation class raised by the code itself, no scope cancelled: on asyncio
    # it is the loop's cancellation class, and still the step's own failure
    "stray-cancel": lambda: asyncio.CancelledError("mine"),
    "stray-cancel-group": lambda: BaseExceptionGroup("cancels", [asyncio.CancelledError("mine")]),
}

#: where the exception is raised: a sync step, an async step after an await, or the
#: awaitable a ``Wait`` names (after an await)
WHERE = ["sync-step", "async-step", "wait-awaitable"]


class Raises(Process):
    """Raises ``KINDS[kind]()`` where ``where`` says; keeps it in ``self.raised``."""

    raised: BaseException | None = None

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("kind", valid_type=str)
        spec.input("where", valid_type=str, default="sync-step")

    def _raise(self) -> None:
        self.raised = KINDS[self.inputs.kind]()
        raise self.raised

    def run(self) -> Any:
        where = self.inputs.where
        if where == "sync-step":
            self._raise()
        if where == "async-step":
            return Continue(self.async_step)
        assert where == "wait-awaitable"
        return Wait(self.awaited(), self.after)

    async def async_step(self) -> None:
        await anyio.lowlevel.checkpoint()
        self._raise()

    async def awaited(self) -> None:
        await anyio.lowlevel.checkpoint()
        self._raise()

    def after(self, value: Any = None) -> Any:  # pragma: no cover - never resumed
        return value


def _check_excepted(process: Raises) -> None:
    """The process excepted with what it raised, recorded as such."""
    exc = process.raised
    assert exc is not None
    assert process.state is ProcessState.EXCEPTED
    assert process.exception is exc
    data = process.state_data
    assert isinstance(data, Excepted)
    assert (data.type_name, data.message) == (type(exc).__name__, str(exc))
    with pytest.raises(ProcessExceptedError) as info:
        process.result()
    assert info.value.__cause__ is exc
    assert str(info.value) == f"process {process.pid} excepted: {type(exc).__name__}: {exc}"


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_a_base_exception_excepts_its_process_and_the_runner_goes_on(
    kind: str, where: str
) -> None:
    gate = Gate()
    release = anyio.Event()
    ran_to_the_end = False
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            # siblings caught mid-way: one waits on an event, one is inside an async step
            waiting = runner.submit(Waiter, {"awaitable": release})
            stepping = runner.submit(GatedFinal, {"gate": gate})
            await gate.wait_arrived()
            await reach(waiting, ProcessState.WAITING)

            bad = runner.submit(Raises, {"kind": kind, "where": where})
            await bad.wait()
            _check_excepted(bad)

            release.set()
            gate.release()
            await waiting.wait()
            await stepping.wait()
            assert waiting.result() == "no value"
            assert stepping.result() == "done"
            # the runner is still usable, and runs the same failure again the same way
            again = await runner.run_get_process(Raises, {"kind": kind, "where": where})
            _check_excepted(again)
            assert (await runner.run_get_process(ReturnsValue, {"value": 7})).result() == 7
            ran_to_the_end = True
    assert ran_to_the_end
    assert not runner.processes


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "Doom"])
async def test_runner_run_of_a_step_raising_a_base_exception_raises_process_excepted(
    kind: str,
) -> None:
    # Runner.run drives the process in the calling task: the caller gets the typed error,
    # with the original chained, not the BaseException itself
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            for where in WHERE:
                with pytest.raises(ProcessExceptedError, match=rf"excepted: {kind}: ") as info:
                    await runner.run(Raises, {"kind": kind, "where": where})
                assert type(info.value.__cause__) is type(KINDS[kind]())


# -- hooks and listeners ---------------------------------------------------------------------


class HookRaises(Process):
    """Its ``hook`` input names the hook that raises ``SystemExit(4)``."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("hook", valid_type=str)

    def _maybe(self, hook: str) -> None:
        if self.inputs.hook == hook:
            raise SystemExit(4)

    def on_running(self) -> None:
        super().on_running()
        self._maybe("on_running")

    def on_finish(self, result: Any, successful: bool) -> None:
        super().on_finish(result, successful)
        self._maybe("on_finish")

    def on_terminated(self) -> None:
        super().on_terminated()
        self._maybe("on_terminated")


class InterruptingListener(ProcessListener):
    def on_process_running(self, process: Any) -> None:
        raise KeyboardInterrupt("from a listener")


@pytest.mark.parametrize("hook", ["on_running", "on_finish"])
async def test_a_hook_raising_a_base_exception_excepts_the_process(hook: str) -> None:
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            process = runner.submit(HookRaises, {"hook": hook})
            await process.wait()
            assert process.state is ProcessState.EXCEPTED
            assert type(process.exception) is SystemExit
            assert (await runner.run_get_process(ReturnsValue, {"value": 1})).result() == 1


async def test_a_base_exception_after_the_end_is_logged_and_the_end_stands() -> None:
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            process = runner.submit(HookRaises, {"hook": "on_terminated"})
            await process.wait()
            assert process.state is ProcessState.FINISHED
            assert (await runner.run_get_process(ReturnsValue, {"value": 1})).result() == 1


async def test_a_listener_raising_a_base_exception_ends_its_process_not_the_runner() -> None:
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            process = runner.submit(ReturnsValue, {"value": 1}, listeners=[InterruptingListener()])
            await process.wait()
            assert process.state is ProcessState.EXCEPTED
            assert type(process.exception) is KeyboardInterrupt
            assert (await runner.run_get_process(ReturnsValue, {"value": 2})).result() == 2


class InterruptedByPause(ProcessListener):
    def on_process_paused(self, process: Any) -> None:
        raise SystemExit(5)


class PausesItself(Process):
    """Asks for its own pause in its step (sync or async), so the pause is applied, and the
    listeners told, by whatever drives it (the pump, or a task) when the step ends."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("where", valid_type=str)

    def run(self) -> Any:
        if self.inputs.where == "async-step":
            return Continue(self.async_step)
        self.pause()
        return Continue(self.next_step)

    async def async_step(self) -> Any:
        await anyio.lowlevel.checkpoint()
        self.pause()
        return Continue(self.next_step)

    def next_step(self) -> None:  # pragma: no cover - excepted before it runs
        return None


@pytest.mark.parametrize("where", ["sync-step", "async-step"])
async def test_a_listener_raising_at_a_pause_the_driver_applies_excepts_the_process(
    where: str,
) -> None:
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            process = runner.submit(
                PausesItself, {"where": where}, listeners=[InterruptedByPause()]
            )
            await process.wait()
            assert process.state is ProcessState.EXCEPTED
            assert type(process.exception) is SystemExit
            assert (await runner.run_get_process(ReturnsValue, {"value": 3})).result() == 3


# -- the loop's own cancellation is still a cancellation -------------------------------------


async def test_a_real_cancellation_still_kills_rather_than_excepts() -> None:
    gate, killed_gate = Gate(), Gate()
    with anyio.fail_after(BOUND):
        with anyio.CancelScope() as block:
            async with Runner() as runner:
                # killed while its async step awaits: its step's scope is cancelled
                killed = runner.submit(GatedFinal, {"gate": killed_gate})
                await killed_gate.wait_arrived()
                killed.kill("enough")
                await killed.wait()
                assert killed.state is ProcessState.KILLED
                assert killed.exception is None
                # Runner.run (driven in this task) past a deadline: an async step, and a wait
                launched: list[Process] = []
                runner.add_launch_hook(launched.append)
                cases: list[tuple[type[Process], dict[str, Any]]] = [
                    (GatedFinal, {"gate": Gate()}),
                    (Waiter, {"awaitable": anyio.Event()}),
                ]
                for process_class, inputs in cases:
                    with anyio.CancelScope(deadline=anyio.current_time()) as expired:
                        await runner.run(process_class, inputs)
                    assert expired.cancelled_caught
                runner.remove_launch_hook(launched.append)
                # the runner's block cancelled while one steps and one waits
                stepping = runner.submit(GatedFinal, {"gate": gate})
                waiting = runner.submit(Waiter, {"awaitable": anyio.Event()})
                await gate.wait_arrived()
                await reach(waiting, ProcessState.WAITING)
                block.cancel()
        assert block.cancelled_caught
    assert len(launched) == 2
    for process in (*launched, stepping, waiting):
        assert process.state is ProcessState.KILLED
        data = process.state_data
        assert isinstance(data, Killed)
        assert data.message == "killed by cancellation"
        assert process.exception is None
    assert gate.cancelled


# -- workers on real threads -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["sync-step", "async-step", "wait-awaitable"])
@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt"])
def test_a_worker_answers_a_launch_whose_step_raises_and_stays_alive(kind: str, where: str) -> None:
    with LocalCluster(3, backends=("asyncio", "trio")) as cluster:
        ctl = cluster.controller(timeout=BOUND)
        # the broker deals tasks round-robin: every worker (both backends) gets two
        outcomes = [
            ctl.launch_future(Raises, {"kind": kind, "where": where}, pid=f"bad-{i}")
            for i in range(6)
        ]
        message = str(KINDS[kind]())
        assert [f.result(BOUND) for f in outcomes] == [
            {"pid": f"bad-{i}", "state": "excepted", "exception": f"{kind}: {message}"}
            for i in range(6)
        ]
        with pytest.raises(ProcessExceptedError, match=rf"^process bad excepted: {kind}: "):
            ctl.launch(Raises, {"kind": kind, "where": where}, pid="bad", raise_on_failure=True)
        assert all(w.alive for w in cluster.workers)
        # later tasks complete, on every worker
        later = [ctl.launch_future(ReturnsValue, {"value": i}) for i in range(6)]
        assert [f.result(BOUND)["result"] for f in later] == list(range(6))
        stats = cluster.statistics()
        assert sum(w.launched for w in stats.workers) == 13
        assert min(w.launched for w in stats.workers) >= 4  # dealt round-robin
        assert (stats.broker.dead_letters, stats.broker.in_flight) == (0, 0)
        assert stats.broker.queues["tasks"].redeliveries == 0
        assert all(w.alive for w in cluster.workers)


#: the workers of the running test, by thread name, for :class:`CrashesItsWorker`
_WORKERS: dict[str, Worker] = {}
#: the names of the workers it crashed, in order
_CRASHED: list[str] = []


class CrashesItsWorker(Process):
    """Its step makes the worker running it die (as an OOM kill or a segfault would), then
    waits: the broker sees the consumer go away and requeues the task."""

    def run(self) -> Any:
        name = threading.current_thread().name
        _CRASHED.append(name)
        _WORKERS[name].crash()
        return Wait(None, self.never)

    def never(self, value: Any = None) -> Any:  # pragma: no cover - its worker is gone
        return value


def test_a_task_that_kills_every_worker_it_reaches_is_dead_lettered_and_the_rest_go_on() -> None:
    max_redeliveries = 1
    broker = MemoryBroker(strict=True, max_redeliveries=max_redeliveries)
    with LocalCluster(3, backends=("asyncio", "trio"), broker=broker) as cluster:
        _WORKERS.update((w.name, w) for w in cluster.workers)
        try:
            ctl = cluster.controller(timeout=BOUND)
            poison = ctl.launch_future(CrashesItsWorker)
            with pytest.raises(
                DeadLetteredError,
                match=(
                    r"^task in queue 'tasks' delivered 2 times; its consumers went away each "
                    r"time \(max_redeliveries=1\)$"
                ),
            ):
                poison.result(BOUND)
            # it cost 1 + max_redeliveries workers, and no more
            assert len(set(_CRASHED)) == len(_CRASHED) == 1 + max_redeliveries
            crashed = [w for w in cluster.workers if w.name in _CRASHED]
            assert all(w.join(BOUND) for w in crashed)
            [survivor] = [w for w in cluster.workers if w.name not in _CRASHED]
            assert survivor.alive
            stats = broker.statistics()
            assert (stats.dead_letters, stats.in_flight, stats.pending) == (1, 0, 0)
            # the survivor serves what comes next
            later = [ctl.launch_future(ReturnsValue, {"value": i}) for i in range(3)]
            assert [f.result(BOUND)["result"] for f in later] == [0, 1, 2]
            assert survivor.statistics().launched == 3
            assert survivor.alive
        finally:
            _WORKERS.clear()
            _CRASHED.clear()
