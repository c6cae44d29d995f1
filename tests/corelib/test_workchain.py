"""WorkChains: outlines, context, children through ToContext, exit codes, control."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from corelib import ExitCode, Process, ProcessState, Runner
from corelib.workchain._outline import OutlineError
from corelib.workchain._workchain import (
    ChildProcessFailedError,
    ToContext,
    WorkChain,
    append_,
    if_,
    return_,
    while_,
)

from ._procs import reach, settle

TIMEOUT = 5


class Double(Process):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=int)
        spec.output("y", valid_type=int)

    async def run(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.out("y", self.inputs.x * 2)


class Broken(Process):
    def run(self) -> None:
        raise ValueError("child broke")


class Loop(WorkChain):
    """Sums 2*i for i < n through children, with sync and async steps and conditions."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("n", valid_type=int)
        spec.input("mode", valid_type=str, default="plain")
        spec.output("total", valid_type=int)
        spec.output("trace", valid_type=list)
        spec.exit_code(400, "ERROR_NEGATIVE", "n must not be negative")
        spec.outline(
            cls.setup,
            if_(cls.negative)(return_(ExitCode(400, "n must not be negative")))
            .elif_(cls.is_zero)(cls.zero)
            .else_(while_(cls.more)(cls.launch, cls.collect)),
            cls.finalize,
        )

    def setup(self) -> None:
        self.ctx.i = 0
        self.ctx.total = 0
        self.ctx.trace = ["setup"]

    def negative(self) -> bool:
        return self.inputs.n < 0

    async def is_zero(self) -> bool:
        await anyio.lowlevel.checkpoint()
        return self.inputs.n == 0

    def zero(self) -> None:
        self.ctx.trace.append("zero")

    async def more(self) -> bool:
        return self.ctx.i < self.inputs.n

    def launch(self) -> ToContext:
        child = self.submit(Double, {"x": self.ctx.i})
        self.ctx.trace.append(f"launch {self.ctx.i}")
        return ToContext(last=child, all=append_(child))

    async def collect(self) -> None:
        self.ctx.total += self.ctx.last["y"]
        self.ctx.i += 1

    def finalize(self) -> None:
        self.ctx.trace.append("finalize")
        self.out("total", self.ctx.total)
        self.out("trace", self.ctx.trace)


async def test_outline_with_children_and_context() -> None:
    async with Runner() as runner:
        chain = runner.submit(Loop, {"n": 3})
        with anyio.fail_after(TIMEOUT):
            await chain.wait()
    assert chain.state is ProcessState.FINISHED
    assert chain.successful()
    assert chain.outputs["total"] == 0 + 2 + 4
    assert chain.outputs["trace"] == ["setup", "launch 0", "launch 1", "launch 2", "finalize"]
    assert [o["y"] for o in chain.ctx.all] == [0, 2, 4]


async def test_if_branches_and_return_with_exit_code() -> None:
    async with Runner() as runner:
        zero = runner.submit(Loop, {"n": 0})
        negative = runner.submit(Loop, {"n": -1})
        with anyio.fail_after(TIMEOUT):
            await zero.wait()
            await negative.wait()
    assert zero.outputs["trace"] == ["setup", "zero", "finalize"]
    assert negative.state is ProcessState.FINISHED
    assert not negative.successful()
    assert negative.exit_code == ExitCode(400, "n must not be negative")
    assert "finalize" not in negative.ctx.trace


class StepExit(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.outline(cls.first, cls.stop, cls.never)

    def first(self) -> None:
        self.ctx.ran = ["first"]

    def stop(self) -> ExitCode:
        self.ctx.ran.append("stop")
        return ExitCode(3, "stopped early")

    def never(self) -> None:  # pragma: no cover - must not run
        self.ctx.ran.append("never")


async def test_step_returning_exit_code_ends_the_chain() -> None:
    async with Runner() as runner:
        chain = runner.submit(StepExit)
        with anyio.fail_after(TIMEOUT):
            await chain.wait()
    assert chain.exit_code == ExitCode(3, "stopped early")
    assert chain.ctx.ran == ["first", "stop"]


class Parent(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.outline(cls.spawn, cls.after)

    def spawn(self) -> None:
        self.to_context(ok=self.submit(Double, {"x": 1}), bad=self.submit(Broken))

    def after(self) -> None:  # pragma: no cover - the broken child stops the chain
        self.ctx.after = True


async def test_failed_child_excepts_the_parent() -> None:
    async with Runner() as runner:
        parent = runner.submit(Parent)
        with anyio.fail_after(TIMEOUT):
            await parent.wait()
    assert parent.state is ProcessState.EXCEPTED
    data = parent.state_data
    assert data.type_name == "ChildProcessFailedError"  # type: ignore[union-attr]
    assert "excepted: ValueError: child broke" in data.message  # type: ignore[union-attr]
    assert isinstance(parent.exception, ChildProcessFailedError)
    assert parent.exception.key == "bad"


class Slow(Process):
    def run(self) -> Any:
        from corelib import Wait

        return Wait(None, self.done)

    def done(self, value: Any = None) -> None:
        self.out_value = value


class Waits(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.outline(cls.spawn, cls.after)

    def spawn(self) -> ToContext:
        self.ctx.child_pid = (child := self.submit(Slow)).pid
        return ToContext(child=child)

    def after(self) -> None:
        self.ctx.after = True


async def test_pause_and_kill_while_waiting_on_a_child() -> None:
    async with Runner() as runner:
        chain = runner.submit(Waits)
        with anyio.fail_after(TIMEOUT):
            await reach(chain, ProcessState.WAITING)
            assert chain.awaiting[0][0] == "child"
            outcome = await chain.pause("hold on")
            assert outcome.done
            assert chain.paused
            child = runner.get_process(chain.ctx.child_pid)
            await reach(child, ProcessState.WAITING)
            child.resume()
            await child.wait()
            # the child finished while the parent is paused: it keeps waiting until played
            await settle(chain)
            assert chain.state is ProcessState.WAITING
            assert (await chain.play()).done
            await chain.wait()
        assert chain.ctx.after is True
        assert chain.successful()

        killed = runner.submit(Waits)
        with anyio.fail_after(TIMEOUT):
            await reach(killed, ProcessState.WAITING)
            assert (await killed.kill("stop")).done
        assert killed.state is ProcessState.KILLED
        runner.get_process(killed.ctx.child_pid).kill()


def test_malformed_workchains() -> None:
    class NoOutline(WorkChain):
        pass

    with pytest.raises(OutlineError, match=r"NoOutline declares no outline$"):
        NoOutline.spec()

    class Missing(WorkChain):
        @classmethod
        def define(cls, spec: Any) -> None:
            super().define(spec)
            spec.outline("nope")

    with pytest.raises(OutlineError, match=r"Missing has no method 'nope' named in its outline$"):
        Missing.spec()

    class Reserved(WorkChain):
        @classmethod
        def define(cls, spec: Any) -> None:
            super().define(spec)
            spec.outline("run")

    with pytest.raises(OutlineError, match=r"can't use 'run' in its outline: the name is taken"):
        Reserved.spec()


class Exposing(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.expose_inputs(Double, namespace="double")
        spec.output("y", valid_type=int)
        spec.outline(cls.go, cls.done)

    def go(self) -> ToContext:
        return ToContext(d=self.submit(Double, self.exposed_inputs(Double, namespace="double")))

    def done(self) -> None:
        self.out("y", self.ctx.d["y"])


async def test_exposed_inputs_feed_a_child() -> None:
    async with Runner() as runner:
        with anyio.fail_after(TIMEOUT):
            chain = runner.submit(Exposing, {"double": {"x": 21}})
            await chain.wait()
    assert chain.outputs["y"] == 42


async def test_condition_without_truth_value_excepts() -> None:
    class Bad:
        def __bool__(self) -> bool:
            raise RuntimeError("no truth")

    class Chain(WorkChain):
        @classmethod
        def define(cls, spec: Any) -> None:
            super().define(spec)
            spec.outline(if_(cls.cond)(cls.step))

        def cond(self) -> Any:
            return Bad()

        def step(self) -> None:  # pragma: no cover
            pass

    async with Runner() as runner:
        chain = runner.submit(Chain)
        with anyio.fail_after(TIMEOUT):
            await chain.wait()
    assert chain.state is ProcessState.EXCEPTED
    assert "condition 'cond' returned" in chain.state_data.message  # type: ignore[union-attr]
