"""plumpy counterparts of the benchmark WorkChains (module level: plumpy's loader needs that).

Importing this module needs plumpy; the benchmarks import it only when plumpy is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plumpy

STEPS = 10
MID_INPUTS = {"label": "benchmark", "params": {f"p{i}": i for i in range(10)}}


def _named_step(i: int) -> Callable[[Any], None]:
    def step(self: Any) -> None:
        self.ctx.n = getattr(self.ctx, "n", 0) + 1

    step.__name__ = f"s{i}"
    return step


class PTen(plumpy.WorkChain):  # type: ignore[misc]
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.outline(*[getattr(cls, f"s{i}") for i in range(STEPS)])


for _i in range(STEPS):
    setattr(PTen, f"s{_i}", _named_step(_i))


class PChild(plumpy.Process):  # type: ignore[misc]
    async def run(self) -> None:
        return None


class PFanout(plumpy.WorkChain):  # type: ignore[misc]
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("children", valid_type=int)
        spec.outline(cls.spawn, cls.done)

    def spawn(self) -> Any:
        return plumpy.ToContext(
            **{f"k{i}": self.launch(PChild) for i in range(self.inputs.children)}
        )

    def done(self) -> None:
        return None


class PMid(plumpy.WorkChain):  # type: ignore[misc]
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("label", valid_type=str)
        spec.input("params", valid_type=dict)
        spec.output("result", valid_type=dict)
        spec.outline(cls.setup, plumpy.while_(cls.more)(cls.work), cls.finish)

    def setup(self) -> None:
        self.ctx.i = 0
        self.ctx.values = {f"v{i}": i * 1.5 for i in range(40)}
        self.ctx.log = [f"entry {i}" for i in range(10)]
        self.pause()  # at the end of this step: the benchmark checkpoints it in the while_

    def more(self) -> bool:
        return bool(self.ctx.i < 3)

    def work(self) -> None:
        self.ctx.i += 1

    def finish(self) -> None:
        self.out("result", {"sum": sum(self.ctx.values.values())})
