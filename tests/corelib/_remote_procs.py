"""Process classes for the control tests; importable by name so workers can load them."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import anyio

from corelib import Process, ProcessSpec, ToContext, Wait, WorkChain, WorkChainSpec
from corelib.control._remote import submit_remote

BOUND = 10.0  # seconds; a generous bound for what must happen "at once"


class Double(Process):
    """Finishes at once with ``y = 2 * x``."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=1)
        spec.output("y", valid_type=int)

    def run(self) -> None:
        self.out("y", self.inputs.x * 2)


class Fails(Process):
    def run(self) -> None:
        raise ValueError("boom")


class Waiter(Process):
    """Waits until resumed or killed."""

    def run(self) -> Any:
        return Wait(None, self.done)

    def done(self, value: Any = None) -> Any:
        return value


class Blocker(Process):
    """Its first step blocks the worker's thread until :data:`RELEASE` is set, then it waits."""

    ENTERED = threading.Event()
    RELEASE = threading.Event()

    def run(self) -> Any:
        Blocker.ENTERED.set()
        if not Blocker.RELEASE.wait(BOUND):
            raise TimeoutError("never released")
        return Wait(None, self.done)

    def done(self, value: Any = None) -> Any:
        return value

    @classmethod
    def reset(cls) -> None:
        cls.ENTERED.clear()
        cls.RELEASE.clear()


class Sleeper(Process):
    """Sleeps (cancellably) until :data:`RELEASE` is set; for the dying-worker test."""

    STARTED = threading.Event()
    RELEASE = threading.Event()
    runs = 0

    async def run(self) -> Any:
        type(self).runs += 1
        Sleeper.STARTED.set()
        if not Sleeper.RELEASE.is_set():
            await anyio.sleep_forever()
        return {"ran": True}

    @classmethod
    def reset(cls) -> None:
        cls.STARTED.clear()
        cls.RELEASE.clear()
        cls.runs = 0


class Parent(WorkChain):
    """Submits one local and one remote child and sums their outputs."""

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.input("x", valid_type=int)
        spec.output("total", valid_type=int)
        spec.outline(cls.launch, cls.finish)

    def launch(self) -> ToContext:
        local = self.submit(Double, {"x": self.inputs.x})
        remote = submit_remote(Double, {"x": self.inputs.x + 1})
        return ToContext(local=local, remote=remote)

    def finish(self) -> None:
        self.out("total", self.ctx.local["y"] + self.ctx.remote["y"])


class ParentOfWaiters(WorkChain):
    """Launches ``n`` local Waiter children and waits for them."""

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.input("n", valid_type=int, default=2)
        spec.outline(cls.launch, cls.finish)

    def launch(self) -> ToContext:
        return ToContext(**{f"c{i}": self.submit(Waiter) for i in range(self.inputs.n)})

    def finish(self) -> None:
        pass


class ThreadProbe(Waiter):
    """Records the thread its pause and kill hooks run on."""

    threads: ClassVar[dict[str, int]] = {}

    def on_paused(self, msg: str | None) -> None:
        ThreadProbe.threads["paused"] = threading.get_ident()

    def on_kill(self, msg: str | None) -> None:
        ThreadProbe.threads["killed"] = threading.get_ident()
