"""Deterministic WorkChains for the checkpoint tests (module level, so they can be reloaded)."""

from __future__ import annotations

from typing import Any

import anyio

from corelib import Process, ToContext, Wait, WorkChain, append_, if_, while_


class Square(Process):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=int)
        spec.output("y", valid_type=int)

    async def run(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.out("y", self.inputs.x * self.inputs.x)


class Gate(Process):
    """Waits for ``resume(value)`` and outputs the value."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.output("value", valid_type=int)

    def run(self) -> Any:
        return Wait(None, self.opened)

    def opened(self, value: int) -> None:
        self.out("value", value)


class Pipeline(WorkChain):
    """Covers every outline construct, children through ToContext and append_, and ctx."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("n", valid_type=int)
        spec.output("total", valid_type=int)
        spec.output("trace", valid_type=list)
        spec.outline(
            cls.setup,
            while_(cls.more)(
                cls.launch,
                if_(cls.is_even)(cls.add_even).else_(cls.add_odd),
            ),
            cls.both,
            cls.finish,
        )

    def setup(self) -> None:
        self.ctx.i = 0
        self.ctx.total = 0
        self.ctx.trace = ["setup"]

    def more(self) -> bool:
        return bool(self.ctx.i < self.inputs.n)

    def launch(self) -> ToContext:
        self.ctx.trace.append(f"launch {self.ctx.i}")
        child = self.submit(Square, {"x": self.ctx.i})
        return ToContext(last=child, squares=append_(child))

    def is_even(self) -> bool:
        return bool(self.ctx.i % 2 == 0)

    async def add_even(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.ctx.total += self.ctx.last["y"]
        self.ctx.i += 1

    def add_odd(self) -> None:
        self.ctx.total += 10 * self.ctx.last["y"]
        self.ctx.i += 1

    def both(self) -> ToContext:
        return ToContext(a=self.submit(Square, {"x": 7}), b=self.submit(Square, {"x": 8}))

    def finish(self) -> None:
        self.ctx.trace.append("finish")
        self.out("total", self.ctx.total + self.ctx.a["y"] + self.ctx.b["y"])
        self.out("trace", [*self.ctx.trace, len(self.ctx.squares)])


def expected_outputs(n: int) -> dict[str, Any]:
    total = sum(i * i if i % 2 == 0 else 10 * i * i for i in range(n)) + 49 + 64
    trace = ["setup", *[f"launch {i}" for i in range(n)], "finish", n]
    return {"total": total, "trace": trace}


class WaitsOnGate(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.output("value", valid_type=int)
        spec.outline(cls.open_gate, cls.done)

    def open_gate(self) -> ToContext:
        return ToContext(gate=self.submit(Gate))

    def done(self) -> None:
        self.out("value", self.ctx.gate["value"])
