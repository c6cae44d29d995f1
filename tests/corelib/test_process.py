"""Defining and running processes: spec, inputs, results, outputs, waiting, hooks, listeners,
the runner and ``run``/``run_sync``."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from corelib import (
    MISSING_OUTPUTS_STATUS,
    NO_VALUE,
    Continue,
    ExitCode,
    Finished,
    InvalidTransitionError,
    Kill,
    PortValidationError,
    Process,
    ProcessExceptedError,
    ProcessKilledError,
    ProcessListener,
    ProcessNotFinishedError,
    ProcessSpec,
    ProcessState,
    ProcessStateError,
    Runner,
    RunnerNotRunningError,
    Wait,
    Waiting,
    run,
    run_get_process,
    run_get_process_sync,
    run_sync,
)
from corelib.process._states import EVENT_TYPES, TRANSITIONS, Start

from ._procs import (
    BOUND,
    Fails,
    Gate,
    GatedFinal,
    ReturnsValue,
    Trivial,
    Waiter,
    WithExitCodes,
    reach,
    settle,
)

S = ProcessState


# --------------------------------------------------------------------------------------------
# spec and inputs


def test_spec_built_once_per_class_not_inherited() -> None:
    calls: list[str] = []

    class Base(Process):
        @classmethod
        def define(cls, spec: ProcessSpec) -> None:
            super().define(spec)
            calls.append(cls.__name__)
            spec.input("a")

    class Child(Base):
        @classmethod
        def define(cls, spec: ProcessSpec) -> None:
            super().define(spec)
            spec.input("b")

    assert Base.spec() is Base.spec()
    assert Child.spec() is not Base.spec()
    assert set(Child.spec().inputs) == {"a", "b"}
    assert set(Base.spec().inputs) == {"a"}
    assert calls == ["Base", "Child"]
    assert Base.spec().sealed


def test_define_raising_is_not_cached() -> None:
    attempts: list[int] = []

    class Broken(Process):
        @classmethod
        def define(cls, spec: ProcessSpec) -> None:
            super().define(spec)
            attempts.append(1)
            raise RuntimeError("bad define")

    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"^bad define$"):
            Broken.spec()
    assert len(attempts) == 2


class Nested(Process):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("sub.x", valid_type=int)
        spec.input("y", valid_type=int, default=5)


def test_inputs_validated_at_creation_with_full_path() -> None:
    with pytest.raises(PortValidationError) as info:
        Nested({"sub": {"x": "a"}})
    assert str(info.value).startswith("inputs.sub.x: ")
    assert "'a'" in str(info.value)


def test_parsed_inputs_immutable_and_raw_untouched() -> None:
    raw: dict[str, Any] = {"sub": {"x": 1}}
    proc = Nested(raw)
    assert raw == {"sub": {"x": 1}}
    assert proc.inputs.sub.x == 1
    assert proc.inputs["y"] == 5
    with pytest.raises(TypeError):
        proc.inputs["y"] = 6
    with pytest.raises(TypeError):
        proc.inputs.sub["x"] = 2
    raw["sub"]["x"] = 99
    assert proc.inputs.sub.x == 1


def test_pid_is_a_fresh_string_or_given() -> None:
    a, b = Trivial(), Trivial()
    assert isinstance(a.pid, str)
    assert a.pid != b.pid
    assert len(a.pid) == 32
    assert Trivial(pid="p-1").pid == "p-1"


def test_new_process_state() -> None:
    proc = Trivial()
    assert proc.state is S.CREATED
    assert not proc.paused
    assert proc.history == ()
    assert proc.exit_code is None
    assert repr(proc).startswith("<Trivial ")
    assert repr(proc).endswith(" created>")
    message = rf"^process {proc.pid} is created, not finished$"
    with pytest.raises(ProcessNotFinishedError, match=message):
        proc.result()
    with pytest.raises(ProcessNotFinishedError):
        proc.successful()
    with pytest.raises(ProcessStateError, match=rf"^process {proc.pid} was not launched$"):
        _ = proc.runner


# --------------------------------------------------------------------------------------------
# results


async def test_none_finishes_successfully() -> None:
    async with Runner() as runner:
        proc = runner.submit(Trivial)
        await proc.wait()
    assert proc.state is S.FINISHED
    assert proc.result() is None
    assert proc.successful()
    assert proc.exit_code == ExitCode(0)
    assert proc.state_data == Finished(None, True)
    assert [(m.from_state, m.to_state, m.event) for m in proc.history] == [
        (S.CREATED, S.RUNNING, "Start"),
        (S.RUNNING, S.FINISHED, "Finish"),
    ]


async def test_plain_value_is_result() -> None:
    assert (await run_get_process(ReturnsValue, {"value": {"a": 1}})).result() == {"a": 1}


async def test_exit_code_finishes_with_status() -> None:
    async with Runner() as runner:
        proc = runner.submit(WithExitCodes)
        await proc.wait()
    assert proc.state is S.FINISHED
    assert not proc.successful()
    assert proc.exit_code == ExitCode(400, "something bad", "ERROR_BAD")
    assert proc.result() == proc.exit_code


class ContinueChain(Process):
    def run(self) -> Any:
        return Continue(self.second, 1, 2, flag="kw")

    async def second(self, a: int, b: int, *, flag: str) -> Any:
        return Continue(self.third, (a, b, flag), extra=True)

    def third(self, got: tuple[int, int, str], *, extra: bool) -> Any:
        return (*got, extra)


async def test_continue_keeps_args_and_kwargs_sync_and_async() -> None:
    # plumpy drops Continue's kwargs.
    async with Runner() as runner:
        proc = runner.submit(ContinueChain)
        await proc.wait()
    assert proc.result() == (1, 2, "kw", True)
    assert [m.event for m in proc.history] == ["Start", "Continue", "Continue", "Finish"]


async def test_exception_moves_to_excepted() -> None:
    async with Runner() as runner:
        proc = runner.submit(Fails)
        await proc.wait()
    assert proc.state is S.EXCEPTED
    data = proc.state_data
    assert data.type_name == "ValueError"  # type: ignore[union-attr]
    assert data.message == "boom"  # type: ignore[union-attr]
    assert 'raise ValueError("boom")' in data.traceback  # type: ignore[union-attr]
    assert proc.exit_code is None
    assert isinstance(proc.exception, ValueError)
    with pytest.raises(ProcessExceptedError) as info:
        proc.result()
    assert str(info.value) == f"process {proc.pid} excepted: ValueError: boom"
    assert info.value.type_name == "ValueError"
    assert info.value.traceback == data.traceback  # type: ignore[union-attr]
    assert info.value.__cause__ is proc.exception


class ReturnsEvent(Process):
    def run(self) -> Any:
        return Start()


async def test_step_returning_internal_event_excepts() -> None:
    async with Runner() as runner:
        proc = runner.submit(ReturnsEvent)
        await proc.wait()
    assert proc.state is S.EXCEPTED
    assert proc.state_data.message == "a step can't return Start"  # type: ignore[union-attr]


class KillsItself(Process):
    def run(self) -> Any:
        return Kill("enough")


async def test_step_returning_kill() -> None:
    async with Runner() as runner:
        proc = runner.submit(KillsItself)
        await proc.wait()
    assert proc.state is S.KILLED
    with pytest.raises(ProcessKilledError, match=rf"^process {proc.pid} was killed: enough$"):
        proc.result()


# --------------------------------------------------------------------------------------------
# outputs


class Outputs(Process):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("emit", required=False)
        spec.output("x", valid_type=int)
        spec.output("sub.y", valid_type=str, required=False)

    def run(self) -> Any:
        for name, value in self.inputs.get("emit", {}).items():
            self.out(name.replace("/", "."), value)


class Recorder(ProcessListener):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_process_created(self, process: Process) -> None:
        self.calls.append(("created",))

    def on_process_running(self, process: Process) -> None:
        self.calls.append(("running",))

    def on_process_waiting(self, process: Process) -> None:
        self.calls.append(("waiting",))

    def on_process_paused(self, process: Process) -> None:
        self.calls.append(("paused",))

    def on_process_played(self, process: Process) -> None:
        self.calls.append(("played",))

    def on_output_emitted(self, process: Process, output_port: str, value: Any) -> None:
        self.calls.append(("output", output_port, value))

    def on_process_finished(self, process: Process, outputs: Mapping[str, Any]) -> None:
        self.calls.append(("finished", dict(outputs)))

    def on_process_excepted(self, process: Process, reason: str) -> None:
        self.calls.append(("excepted", reason))

    def on_process_killed(self, process: Process, message: str | None) -> None:
        self.calls.append(("killed", message))


async def test_outputs_validated_nested_and_reported_once() -> None:
    rec = Recorder()
    async with Runner() as runner:
        proc = runner.submit(Outputs, {"emit": {"x": 1, "sub/y": "s"}}, listeners=[rec])
        await proc.wait()
    assert proc.successful()
    assert proc.outputs == {"x": 1, "sub": {"y": "s"}}
    with pytest.raises(TypeError):
        proc.outputs["x"] = 2
    emitted = [c for c in rec.calls if c[0] == "output"]
    assert emitted == [("output", "x", 1), ("output", "sub.y", "s")]
    assert rec.calls[-1] == ("finished", {"x": 1, "sub": {"y": "s"}})


async def test_invalid_output_excepts_with_clear_message() -> None:
    rec = Recorder()
    async with Runner() as runner:
        proc = runner.submit(Outputs, {"emit": {"x": "nope"}}, listeners=[rec])
        await proc.wait()
    assert proc.state is S.EXCEPTED
    assert proc.state_data.type_name == "PortValidationError"  # type: ignore[union-attr]
    assert proc.state_data.message.startswith("outputs.x: ")  # type: ignore[union-attr]
    assert not [c for c in rec.calls if c[0] == "output"]
    assert proc.outputs == {}


class HookLog(Outputs):
    """Records every hook, to check order and that each fires exactly once."""

    log: list[str]

    def on_create(self) -> None:
        self.log = ["on_create"]

    def on_run(self) -> None:
        self.log.append("on_run")

    def on_running(self) -> None:
        self.log.append("on_running")

    def on_exit_running(self) -> None:
        self.log.append("on_exit_running")

    def on_wait(self) -> None:
        self.log.append("on_wait")

    def on_waiting(self) -> None:
        self.log.append("on_waiting")

    def on_exit_waiting(self) -> None:
        self.log.append("on_exit_waiting")

    def on_output_emitted(self, output_port: str, value: Any) -> None:
        self.log.append(f"on_output_emitted({output_port})")

    def on_finish(self, result: Any, successful: bool) -> None:
        self.log.append(f"on_finish({result!r}, {successful})")

    def on_finished(self) -> None:
        self.log.append("on_finished")

    def on_terminated(self) -> None:
        self.log.append("on_terminated")


async def test_missing_required_output_is_unsuccessful_and_hooks_fire_once() -> None:
    # plumpy fires on_exit_running and on_finish twice here (StateEntryFailed re-entry).
    async with Runner() as runner:
        proc = runner.submit(HookLog, {"emit": {"sub/y": "only"}})
        await proc.wait()
    assert proc.state is S.FINISHED
    assert not proc.successful()
    code = ExitCode(MISSING_OUTPUTS_STATUS, "required outputs missing: x", "ERROR_MISSING_OUTPUT")
    assert proc.exit_code == code
    assert proc.log == [
        "on_create",
        "on_run",
        "on_running",
        "on_output_emitted(sub.y)",
        "on_exit_running",
        f"on_finish({code!r}, False)",
        "on_finished",
        "on_terminated",
    ]


class WaitingHookLog(HookLog):
    def run(self) -> Any:
        self.out("x", 1)
        return Wait(None, self.after)

    def after(self, value: Any) -> Any:
        self.log.append(f"after({value})")
        return value


class ListenerLog(Recorder):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def on_process_running(self, process: Process) -> None:
        self.log.append("L.running")

    def on_process_waiting(self, process: Process) -> None:
        self.log.append("L.waiting")

    def on_output_emitted(self, process: Process, output_port: str, value: Any) -> None:
        self.log.append(f"L.output({output_port})")

    def on_process_finished(self, process: Process, outputs: Mapping[str, Any]) -> None:
        self.log.append(f"L.finished({dict(outputs)})")


async def test_hook_and_listener_order_follows_plumpy() -> None:
    async with Runner() as runner:
        proc = runner.submit(WaitingHookLog)
        proc.add_process_listener(ListenerLog(proc.log))
        await reach(proc, S.WAITING)
        assert proc.resume(7)
        await proc.wait()
    assert proc.result() == 7
    assert proc.log == [
        "on_create",
        "on_run",
        "L.running",
        "on_running",
        "on_output_emitted(x)",
        "L.output(x)",
        "on_exit_running",
        "on_wait",
        "L.waiting",
        "on_waiting",
        "on_exit_waiting",
        "on_run",
        "L.running",
        "on_running",
        "after(7)",
        "on_exit_running",
        "on_finish(7, True)",
        "L.finished({'x': 1})",
        "on_finished",
        "on_terminated",
    ]


async def test_output_after_termination_is_refused() -> None:
    proc = Outputs()
    proc.kill()
    with pytest.raises(ProcessStateError, match=r"^can't emit output 'x' in state KILLED$"):
        proc.out("x", 1)


# --------------------------------------------------------------------------------------------
# listeners


def test_on_process_created_fires_for_constructor_listeners() -> None:
    # plumpy never fires on_process_created.
    rec = Recorder()
    Trivial(listeners=[rec])
    assert rec.calls == [("created",)]


class Raising(ProcessListener):
    def on_process_running(self, process: Process) -> None:
        raise RuntimeError("listener bug")

    def on_process_finished(self, process: Process, outputs: Mapping[str, Any]) -> None:
        raise RuntimeError("listener bug")


async def test_listener_exceptions_logged_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    with caplog.at_level(logging.ERROR, logger="corelib.process"):
        async with Runner() as runner:
            proc = runner.submit(Trivial, listeners=[Raising(), rec])
            await proc.wait()
    assert proc.successful()
    assert rec.calls == [("created",), ("running",), ("finished", {})]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert all(m.startswith("listener <") and m.endswith("raised; ignored") for m in messages)


async def test_remove_listener() -> None:
    rec = Recorder()
    proc = Trivial()
    proc.add_process_listener(rec)
    proc.remove_process_listener(rec)
    proc.remove_process_listener(rec)  # not attached: no error
    async with Runner() as runner:
        runner.launch(proc)
        await proc.wait()
    assert rec.calls == []


class FailingRunningHook(Process):
    def on_running(self) -> None:
        raise RuntimeError("hook bug")


class FailingFinishedHook(Process):
    def on_finished(self) -> None:
        raise RuntimeError("hook bug")


class FailingFinishHook(Process):
    def on_finish(self, result: Any, successful: bool) -> None:
        raise RuntimeError("finish refused")


async def test_hook_failures(caplog: pytest.LogCaptureFixture) -> None:
    async with Runner() as runner:
        running = runner.submit(FailingRunningHook)
        finished = runner.submit(FailingFinishedHook)
        finish = runner.submit(FailingFinishHook)
    # A non-terminal hook failing excepts the process (plumpy once left it stuck in RUNNING).
    assert running.state is S.EXCEPTED
    assert running.state_data.message == "hook bug"  # type: ignore[union-attr]
    # An entered hook of a terminal state can't undo it (plumpy flips FINISHED to EXCEPTED).
    assert finished.state is S.FINISHED
    assert any("raised in finished" in r.getMessage() for r in caplog.records)
    # on_finish runs before FINISHED is installed: as in plumpy, the process excepts.
    assert finish.state is S.EXCEPTED
    assert [m.event for m in finish.history] == ["Start", "Fail"]


# --------------------------------------------------------------------------------------------
# waiting


async def test_wait_and_resume_passes_value_and_is_idempotent() -> None:
    async with Runner() as runner:
        proc = runner.submit(Waiter)
        await reach(proc, S.WAITING)
        assert proc.state_data == Waiting("after", "for a value")
        assert proc.resume("v1") is True
        assert proc.resume("v2") is False
        await proc.wait()
    assert proc.result() == "v1"
    with pytest.raises(InvalidTransitionError, match=r"^can't handle Resume in state FINISHED$"):
        proc.resume()


async def test_resume_without_value_calls_step_without_argument() -> None:
    async with Runner() as runner:
        proc = runner.submit(Waiter)
        await reach(proc, S.WAITING)
        proc.resume()
        await proc.wait()
    assert proc.result() == "no value"
    assert proc.history[-2].event == "Resume"


async def test_a_waiting_process_holds_no_reference_cycle_to_itself() -> None:
    """Waiting on one of its own methods keeps the plain function (bound again on resume),
    so a waiting process is not kept alive by a cycle nor costs the collector an object;
    a next step that is not its method (another object's, a plain function) is kept as is."""
    import gc

    async with Runner() as runner:
        proc = runner.submit(Waiter)
        await reach(proc, S.WAITING)
        gc.collect()
        assert not any(getattr(ref, "__self__", None) is proc for ref in gc.get_referrers(proc))
        proc.resume("v")
        await proc.wait()
    assert proc.result() == "v"

    seen: list[Any] = []

    class WaitsOnAFunction(Process):
        def run(self) -> Any:
            return Wait(None, seen.append)

    async with Runner() as runner:
        other = runner.submit(WaitsOnAFunction)
        await reach(other, S.WAITING)
        other.resume("w")
        await other.wait()
    assert seen == ["w"]


def test_resume_refused_unless_waiting() -> None:
    proc = Waiter()
    with pytest.raises(InvalidTransitionError, match=r"^can't handle Resume in state CREATED$"):
        proc.resume(1)
    assert proc.state is S.CREATED


async def test_wait_on_anyio_event() -> None:
    event = anyio.Event()
    async with Runner() as runner:
        proc = runner.submit(Waiter, {"awaitable": event})
        await reach(proc, S.WAITING)
        event.set()
        await proc.wait()
    assert proc.result() == "no value"


async def test_wait_on_other_process_resumes_with_it() -> None:
    gate = Gate()
    async with Runner() as runner:
        child = runner.submit(GatedFinal, {"gate": gate})
        parent = runner.submit(Waiter, {"awaitable": child})
        await reach(parent, S.WAITING)
        gate.release()
        await parent.wait()
    assert parent.result() is child
    assert child.result() == "done"


async def test_wait_on_future_coroutine_and_async_callable() -> None:
    future: anyio.Future[int] = anyio.Future()

    async def produce() -> str:
        return "made"

    async with Runner() as runner:
        on_future = runner.submit(Waiter, {"awaitable": future})
        on_coro = runner.submit(Waiter, {"awaitable": produce()})
        on_callable = runner.submit(Waiter, {"awaitable": produce})
        await reach(on_future, S.WAITING)
        future.return_value = 3
    assert on_future.result() == 3
    assert on_coro.result() == "made"
    assert on_callable.result() == "made"


async def test_failing_awaitable_excepts_the_waiter() -> None:
    future: anyio.Future[int] = anyio.Future()

    async def broken() -> None:
        raise KeyError("gone")

    async with Runner() as runner:
        on_future = runner.submit(Waiter, {"awaitable": future})
        on_callable = runner.submit(Waiter, {"awaitable": broken})
        await reach(on_future, S.WAITING)
        future.exception = OSError("io")
    assert on_future.state_data.type_name == "OSError"  # type: ignore[union-attr]
    assert on_callable.state_data.type_name == "KeyError"  # type: ignore[union-attr]
    assert [m.event for m in on_callable.history] == ["Start", "Wait", "Fail"]


async def test_wait_on_non_awaitable_excepts() -> None:
    async with Runner() as runner:
        proc = runner.submit(Waiter, {"awaitable": 42})
    assert proc.state is S.EXCEPTED
    assert proc.state_data.message == "can't wait on 42: not awaitable"  # type: ignore[union-attr]


async def test_unstarted_coroutine_is_closed_when_killed() -> None:
    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError

    coro = never()
    proc = Waiter({"awaitable": coro})
    async with Runner() as runner:
        runner.launch(proc)
        await reach(proc, S.WAITING)
        proc.kill()
    # Closed, so no "coroutine was never awaited" warning (warnings are errors here).
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


# --------------------------------------------------------------------------------------------
# runner


async def test_runner_requires_async_with() -> None:
    runner = Runner()
    assert not runner.running
    message = r"^runner is not running; use 'async with Runner\(\)'$"
    with pytest.raises(RunnerNotRunningError, match=message):
        runner.submit(Trivial)
    async with runner:
        assert runner.running
        assert repr(runner) == "<Runner running, 0 processes>"
    assert repr(runner) == "<Runner not running, 0 processes>"


async def test_launch_twice_and_duplicate_pid_refused() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = runner.submit(GatedFinal, {"gate": gate}, pid="one")
        with pytest.raises(ProcessStateError, match=r"^process one was already launched$"):
            runner.launch(proc)
        message = r"^a process with pid 'one' already runs here$"
        with pytest.raises(ProcessStateError, match=message):
            runner.submit(Trivial, pid="one")
        assert runner.get_process("one") is proc
        assert dict(runner.processes) == {"one": proc}
        gate.release()
    assert dict(runner.processes) == {}
    with pytest.raises(KeyError):
        runner.get_process("one")


async def test_start_returns_once_driving() -> None:
    gate = Gate()
    async with Runner() as runner:
        proc = await runner.start(GatedFinal, {"gate": gate})
        assert proc.statistics().driving
        gate.release()
        assert (await runner.run_get_process(ReturnsValue, {"value": 2})).result() == 2


async def test_runner_body_exception_is_unwrapped() -> None:
    async def body() -> None:
        async with Runner() as runner:
            runner.submit(Trivial)
            raise LookupError("mine")

    with pytest.raises(LookupError, match=r"^mine$"):
        await body()


async def test_runner_cancellation_kills_processes() -> None:
    gate = Gate()
    with anyio.CancelScope() as scope:
        async with Runner() as runner:
            proc = runner.submit(GatedFinal, {"gate": gate})
            waiter = runner.submit(Waiter)
            await gate.wait_arrived()
            await reach(waiter, S.WAITING)
            scope.cancel()
    assert proc.state is S.KILLED
    assert proc.state_data.message == "killed by cancellation"  # type: ignore[union-attr]
    assert waiter.state is S.KILLED
    assert gate.cancelled


class Parent(Process):
    def run(self) -> Any:
        child = self.submit(ReturnsValue, {"value": "from child"})
        return Wait(child, self.collect)

    def collect(self, child: Process) -> Any:
        return ("parent got", child.result())


async def test_child_submitted_from_step_in_same_runner() -> None:
    assert (await run_get_process(Parent)).result() == ("parent got", "from child")


class Current(Process):
    async def run(self) -> Any:
        return Process.current() is self


async def test_current_process() -> None:
    assert Process.current() is None
    assert (await run_get_process(Current)).result() is True


async def test_run_raises_specific_errors() -> None:
    with pytest.raises(ProcessExceptedError, match=r"excepted: ValueError: boom$"):
        await run(Fails)
    with pytest.raises(ProcessKilledError, match=r"was killed: enough$"):
        await run(KillsItself)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_sync(backend: str) -> None:
    assert run_get_process_sync(ReturnsValue, {"value": 5}, backend=backend).result() == 5
    assert run_sync(ReturnsValue, {"value": 5}, backend=backend) == {}  # the outputs: none
    with pytest.raises(ProcessExceptedError):
        run_sync(Fails, backend=backend)


# --------------------------------------------------------------------------------------------
# sharing the loop


class Chain(Process):
    """Runs sync steps until ``stop()`` says so, or a step limit is hit."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("stop")
        spec.input("mark")

    def run(self) -> Any:
        return Continue(self.step, 0)

    def step(self, n: int) -> Any:
        self.inputs.mark()
        if self.inputs.stop():
            return n
        if n >= 10_000:
            raise RuntimeError("starved")
        return Continue(self.step, n + 1)


async def test_sync_step_chains_share_the_loop() -> None:
    # plumpy runs such chains back to back (AAAAABBBBB); here each step boundary yields.
    seen = {"a": 0, "b": 0}

    def mark(name: str) -> Any:
        return lambda: seen.__setitem__(name, seen[name] + 1)

    async with Runner() as runner:
        a = runner.submit(Chain, {"stop": lambda: seen["b"] >= 3, "mark": mark("a")})
        b = runner.submit(Chain, {"stop": lambda: seen["a"] >= 3, "mark": mark("b")})
    assert a.successful()
    assert b.successful()
    assert a.result() < 100
    assert b.result() < 100


async def test_many_concurrent_processes() -> None:
    with anyio.fail_after(BOUND):
        async with Runner() as runner:
            waiters = [runner.submit(Waiter) for _ in range(200)]
            for proc in waiters:
                await reach(proc, S.WAITING)
            for index, proc in enumerate(waiters):
                proc.resume(index)
    assert [p.result() for p in waiters] == list(range(200))


async def test_history_moves_are_in_table() -> None:
    async with Runner() as runner:
        procs = [runner.submit(cls) for cls in (Trivial, Fails, KillsItself, ContinueChain)]
        waiter = runner.submit(Waiter)
        await settle(waiter)
        waiter.resume(None)
    for proc in [*procs, waiter]:
        previous = S.CREATED
        for move in proc.history:
            assert move.from_state is previous
            assert TRANSITIONS[move.from_state][EVENT_TYPES[move.event]] is move.to_state
            previous = move.to_state
        assert previous is proc.state
        times = [m.time for m in proc.history]
        assert times == sorted(times)


def test_no_value_sentinel_exported() -> None:
    assert repr(NO_VALUE) == "NO_VALUE"


class KillsThenRaisesInHook(Process):
    def on_running(self) -> None:
        self.kill("from hook")
        raise RuntimeError("and then a bug")


async def test_hook_that_kills_then_raises_stays_killed(caplog: pytest.LogCaptureFixture) -> None:
    async with Runner() as runner:
        proc = runner.submit(KillsThenRaisesInHook)
    assert proc.state is S.KILLED
    assert [m.event for m in proc.history] == ["Start", "Kill"]
    assert any("error after termination ignored" in r.getMessage() for r in caplog.records)


def test_public_surface() -> None:
    import corelib

    for name in (
        "Process", "ProcessListener", "Runner", "run", "run_sync", "run_get_process",
        "run_get_process_sync", "InvalidWaitError", "ProcessState", "Continue",
        "Wait", "Kill", "ControlOutcome", "ControlHandle", "ProcessStatistics", "Transition",
        "Created", "Running", "Waiting", "Finished", "Excepted", "Killed", "ProcessError",
        "InvalidTransitionError", "ProcessStateError", "ProcessNotFinishedError",
        "ProcessExceptedError", "ProcessKilledError", "RunnerNotRunningError",
    ):  # fmt: skip
        assert getattr(corelib, name).__module__.startswith("corelib.")
