"""Child process for ``test_workchain_crash.py``: runs a Pipeline with a persister until killed.

``python -m tests.corelib._workchain_crash_child KIND PATH N`` runs ``Pipeline(n=N)`` with pid
``crash-parent`` on a runner checkpointing into a durable file or SQLite persister, and prints
one line per checkpoint written (``saved <k>``), then ``done`` at the end.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import anyio

from corelib import FilePersister, Runner, SqlitePersister
from tests.corelib._chains import Pipeline

PID = "crash-parent"


def announcing(base: type[Any]) -> type[Any]:
    """``base`` printing a line after every checkpoint written, so the parent can kill
    mid-run."""

    class Announcing(base):  # type: ignore[misc, valid-type]
        __slots__ = ()
        count: ClassVar[list[int]] = [0]

        async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
            await super().save_encoded(pid, tag, data)
            self.count[0] += 1
            print(f"saved {self.count[0]}", flush=True)

        async def save_many(self, items: Any) -> None:
            # a group commit (the runner's checkpointer writes this way): one line per
            # checkpoint in it, once it is written
            await super().save_many(items)
            if not isinstance(self, SqlitePersister):
                return  # the default save_many: one save_encoded each, announced there
            for _ in items:
                self.count[0] += 1
                print(f"saved {self.count[0]}", flush=True)

    return Announcing


async def main(kind: str, path: str, n: int) -> None:
    persister: Any = announcing(FilePersister if kind == "file" else SqlitePersister)(path)
    async with persister, Runner(persister=persister) as runner:
        chain = runner.submit(Pipeline, {"n": n}, pid=PID)
        await chain.wait()
        await runner.flush_checkpoints()
    print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
