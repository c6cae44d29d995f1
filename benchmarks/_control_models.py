"""plumio processes of the control benchmark (module level, so workers can load them by name)."""

from __future__ import annotations

from typing import Any

from corelib import Process, ProcessSpec, Wait


class Double(Process):
    """Finishes at once with ``y = 2 * x``."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=1)
        spec.output("y", valid_type=int)

    def run(self) -> None:
        self.out("y", self.inputs.x * 2)


class Waiter(Process):
    """Waits until resumed or killed."""

    def run(self) -> Any:
        return Wait(None, self.done)

    def done(self, value: Any = None) -> Any:
        return value
