"""The processes chaos trials run (:mod:`corelib.testing._chaos`), and what watches them.

They live in the product, under ``corelib``, so that any worker's default
:class:`~corelib.ClassLoader` loads them by name and the soak benchmark can run them too.

- :class:`ChaosChain`: a WorkChain of ``n`` async steps; each run of a step is reported to
  the installed :class:`StepLedger`, which calls it a *violation* when the persister already
  held a checkpoint showing that step done;
- :class:`ChaosParent`: launches ``n`` :class:`ChaosLeaf` children through the task queue
  (:func:`~corelib.control._remote.submit_remote`) and waits for them;
- :class:`ChaosLeaf`: a plain process, ``y = 2 * x``;
- :class:`PoisonStep`: its step (sync or async) raises ``ValueError``, ``SystemExit``,
  ``KeyboardInterrupt``, ``GeneratorExit`` or :class:`ChaosDoom` (a ``BaseException`` of its
  own): the process must end EXCEPTED, its worker must live on;
- :class:`WatchingPersister`: wraps any persister and tells the ledger the highest ``ctx.i``
  saved for each pid.

A ledger is installed for one trial at a time (:func:`installed_ledger`); without one the
processes run the same and record nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Final, final

import anyio
import anyio.lowlevel

from ..control import submit_remote
from ..persistence import Checkpoint, CheckpointCodec, PersistedCheckpoint, Persister
from ..process import Continue, Process, ProcessSpec
from ..workchain import ToContext, WorkChain, WorkChainSpec, while_

__all__ = [
    "ChaosChain",
    "ChaosDoom",
    "ChaosLeaf",
    "ChaosParent",
    "POISONS",
    "PoisonStep",
    "StepLedger",
    "WatchingPersister",
    "installed_ledger",
]


class ChaosDoom(BaseException):
    """A ``BaseException`` of a step's own, in none of the standard families."""


#: What a :class:`PoisonStep` raises, by the name its ``kind`` input gives.
POISONS: Final[dict[str, Callable[[], BaseException]]] = {
    "ValueError": lambda: ValueError("a poison step"),
    "SystemExit": lambda: SystemExit(3),
    "KeyboardInterrupt": lambda: KeyboardInterrupt("a poison step"),
    "GeneratorExit": lambda: GeneratorExit("a poison step"),
    "ChaosDoom": lambda: ChaosDoom("a poison step"),
}


@final
class StepLedger:
    """What the steps of :class:`ChaosChain` did in one trial; thread-safe.

    ``saved`` holds, per pid, the highest ``ctx.i`` a saved checkpoint showed (fed by a
    :class:`WatchingPersister`); ``runs`` counts the completed runs of each step ``(pid, i)``.
    A step ``i`` that starts or completes while ``saved[pid] > i`` ran although its
    checkpoint was written: a *violation* (the worker that continued the process should have
    resumed after it). A step that ran twice *without* a checkpoint in between is allowed
    (at-least-once): it is counted in :attr:`reruns`, not as a violation.
    """

    __slots__ = ("_lock", "runs", "saved", "violations")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.saved: dict[str, int] = {}
        self.runs: Counter[tuple[str, int]] = Counter()
        self.violations: list[tuple[str, int, int]] = []  # (pid, step, saved i then)

    def saw(self, pid: str, i: int) -> None:
        """A checkpoint of ``pid`` showing ``ctx.i == i`` was saved."""
        with self._lock:
            if i > self.saved.get(pid, -1):
                self.saved[pid] = i

    def starting(self, pid: str, i: int) -> None:
        """Step ``i`` of ``pid`` begins."""
        with self._lock:
            self._check(pid, i)

    def completed(self, pid: str, i: int) -> None:
        """Step ``i`` of ``pid`` did its work (it has not been checkpointed yet)."""
        with self._lock:
            self.runs[(pid, i)] += 1
            self._check(pid, i)

    def _check(self, pid: str, i: int) -> None:
        saved = self.saved.get(pid, -1)
        if saved > i and (pid, i, saved) not in self.violations:
            self.violations.append((pid, i, saved))

    @property
    def reruns(self) -> int:
        """Completed runs of a step beyond its first (allowed when not checkpointed)."""
        with self._lock:
            return sum(n - 1 for n in self.runs.values() if n > 1)


_ledger_lock = threading.Lock()
_ledger: StepLedger | None = None


@contextlib.contextmanager
def installed_ledger(ledger: StepLedger) -> Iterator[StepLedger]:
    """Make ``ledger`` the one :class:`ChaosChain` steps report to, for the block.

    Raises:
        RuntimeError: another ledger is installed (trials run one at a time).
    """
    global _ledger
    with _ledger_lock:
        if _ledger is not None:
            raise RuntimeError("a chaos ledger is installed already: run one trial at a time")
        _ledger = ledger
    try:
        yield ledger
    finally:
        with _ledger_lock:
            _ledger = None


class WatchingPersister(Persister):
    """Stores through ``inner`` and tells ``ledger`` each ``ctx.i`` saved (see
    :class:`StepLedger`). Thread-safe when ``inner`` is."""

    __slots__ = ("_inner", "_ledger")

    def __init__(self, inner: Persister, ledger: StepLedger) -> None:
        self._inner = inner
        self._ledger = ledger

    def _saw(self, checkpoint: Checkpoint) -> None:
        ctx = checkpoint.ctx
        i = ctx.get("i") if isinstance(ctx, dict) else None
        if isinstance(i, int):
            self._ledger.saw(checkpoint.pid, i)

    @property
    def codec(self) -> CheckpointCodec:
        return self._inner.codec

    async def save_checkpoint(self, checkpoint: Checkpoint, tag: str | None = None) -> None:
        await self._inner.save_checkpoint(checkpoint, tag)
        self._saw(checkpoint)

    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        await self._inner.save_encoded(pid, tag, data)
        self._saw(self.codec.decode(data))

    async def load_checkpoint(self, pid: str, tag: str | None = None) -> Checkpoint:
        return await self._inner.load_checkpoint(pid, tag)

    async def get_checkpoints(self) -> list[PersistedCheckpoint]:
        return await self._inner.get_checkpoints()

    async def get_process_checkpoints(self, pid: str) -> list[PersistedCheckpoint]:
        return await self._inner.get_process_checkpoints(pid)

    async def delete_checkpoint(self, pid: str, tag: str | None = None) -> None:
        await self._inner.delete_checkpoint(pid, tag)

    async def delete_process_checkpoints(self, pid: str) -> None:
        await self._inner.delete_process_checkpoints(pid)

    async def aclose(self) -> None:
        await self._inner.aclose()


@final
class ChaosChain(WorkChain):
    """``n`` async steps, each sleeping ``delay`` seconds (the work a worker may die in);
    outputs ``i == n``. Each step reports to the installed :class:`StepLedger`."""

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.input("n", valid_type=int, default=3)
        spec.input("delay", valid_type=(int, float), default=0.0)
        spec.output("i", valid_type=int)
        spec.outline(cls.setup, while_(cls.more)(cls.step), cls.done)

    def setup(self) -> None:
        self.ctx.i = 0

    def more(self) -> bool:
        return bool(self.ctx.i < self.inputs.n)

    async def step(self) -> None:
        i: int = self.ctx.i
        ledger = _ledger
        if ledger is not None:
            ledger.starting(self.pid, i)
        await anyio.sleep(self.inputs.delay)
        if ledger is not None:
            ledger.completed(self.pid, i)
        self.ctx.i = i + 1

    def done(self) -> None:
        self.out("i", self.ctx.i)


@final
class ChaosLeaf(Process):
    """Finishes at once with ``y = 2 * x``."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=1)
        spec.output("y", valid_type=int)

    def run(self) -> None:
        self.out("y", self.inputs.x * 2)


@final
class ChaosParent(WorkChain):
    """Launches ``n`` :class:`ChaosLeaf` children (``x = 0 .. n-1``) through the task queue,
    waits for them, and outputs ``total``, the sum of their ``y``."""

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.input("n", valid_type=int, default=2)
        spec.output("total", valid_type=int)
        spec.outline(cls.launch, cls.finish)

    def launch(self) -> ToContext:
        return ToContext(
            **{f"c{k}": submit_remote(ChaosLeaf, {"x": k}) for k in range(self.inputs.n)}
        )

    def finish(self) -> None:
        self.out("total", sum(self.ctx[f"c{k}"]["y"] for k in range(self.inputs.n)))


@final
class PoisonStep(Process):
    """Its step raises ``POISONS[kind]()``: in ``run`` itself, or (``asynchronous``) in an
    async step after an await."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("kind", valid_type=str)
        spec.input("asynchronous", valid_type=bool, default=False)

    def run(self) -> Any:
        if self.inputs.asynchronous:
            return Continue(self.async_step)
        raise POISONS[self.inputs.kind]()

    async def async_step(self) -> None:
        await anyio.lowlevel.checkpoint()
        raise POISONS[self.inputs.kind]()
