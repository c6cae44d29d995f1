"""plumpy counterparts of the control benchmark's processes (module level: plumpy's loader
needs importable classes). Importing this module needs plumpy."""

from __future__ import annotations

from typing import Any

import plumpy


class PDouble(plumpy.Process):  # type: ignore[misc]
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=1)
        spec.output("y", valid_type=int)

    def run(self) -> None:
        self.out("y", self.inputs["x"] * 2)


class PWaiter(plumpy.Process):  # type: ignore[misc]
    def run(self) -> Any:
        return plumpy.Wait(self.done)

    def done(self) -> None:
        return None


#: Set by the RabbitMQ control benchmark: the communicator launched processes get (a task
#: body crossing RabbitMQ can't carry a communicator object).
AMQP_COMMUNICATOR: Any = None


class PDoubleAmqp(PDouble):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("communicator", AMQP_COMMUNICATOR)
        super().__init__(*args, **kwargs)
