"""Processes and a watching persister for the fault tests; importable by name so workers can
load them (``ClassLoader(["tests.corelib"])``)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import ClassVar

import anyio

from corelib import (
    Checkpoint,
    InMemoryPersister,
    PersistedCheckpoint,
    Persister,
    WorkChain,
    WorkChainSpec,
    while_,
)
from corelib.persistence._codec import CheckpointCodec


class WatchedPersister(Persister):
    """An in-memory persister that records, per pid, the highest ``ctx.i`` any saved
    checkpoint showed, and lets a thread wait until one reaches a value."""

    def __init__(self) -> None:
        self.inner = InMemoryPersister()
        self._cond = threading.Condition()
        self.saved_i: dict[str, int] = {}
        # (time, thread, pid, state, ctx.i) of every save, for failure reports
        self.trace: list[tuple[float, str, str, str, object]] = []

    def _saw(self, checkpoint: Checkpoint) -> None:
        i = checkpoint.ctx.get("i") if isinstance(checkpoint.ctx, dict) else None
        self.trace.append(
            (time.monotonic(), threading.current_thread().name, checkpoint.pid, checkpoint.state, i)
        )
        if isinstance(i, int):
            with self._cond:
                if i > self.saved_i.get(checkpoint.pid, -1):
                    self.saved_i[checkpoint.pid] = i
                self._cond.notify_all()

    def wait_saved(self, pid: str, i: int, timeout: float) -> bool:
        """Block until a checkpoint of ``pid`` with ``ctx.i >= i`` was saved."""
        with self._cond:
            return self._cond.wait_for(lambda: self.saved_i.get(pid, -1) >= i, timeout)

    @property
    def codec(self) -> CheckpointCodec:
        return self.inner.codec

    async def save_checkpoint(self, checkpoint: Checkpoint, tag: str | None = None) -> None:
        await self.inner.save_checkpoint(checkpoint, tag)
        self._saw(checkpoint)

    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        await self.inner.save_encoded(pid, tag, data)
        self._saw(self.codec.decode(data))

    async def load_checkpoint(self, pid: str, tag: str | None = None) -> Checkpoint:
        return await self.inner.load_checkpoint(pid, tag)

    async def get_checkpoints(self) -> list[PersistedCheckpoint]:
        return await self.inner.get_checkpoints()

    async def get_process_checkpoints(self, pid: str) -> list[PersistedCheckpoint]:
        return await self.inner.get_process_checkpoints(pid)

    async def delete_checkpoint(self, pid: str, tag: str | None = None) -> None:
        await self.inner.delete_checkpoint(pid, tag)

    async def delete_process_checkpoints(self, pid: str) -> None:
        await self.inner.delete_process_checkpoints(pid)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Counted(WorkChain):
    """Runs ``n`` async steps, counting each run of each step by (pid, i).

    A run of step ``i`` when the persister already holds a checkpoint showing it done
    (``saved_i > i``) is a *violation*: a completed, checkpointed step ran again. Step
    ``hold_at`` (if >= 0) blocks until the worker is stopped (it sleeps forever), unless
    :data:`RELEASE` is set.
    """

    PERSISTER: ClassVar[WatchedPersister | None] = None
    RELEASE = threading.Event()
    lock = threading.Lock()
    runs: ClassVar[Counter[tuple[str, int]]] = Counter()
    violations: ClassVar[list[tuple[str, int, int]]] = []

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.input("n", valid_type=int, default=3)
        spec.input("hold_at", valid_type=int, default=-1)
        spec.output("i", valid_type=int)
        spec.outline(cls.setup, while_(cls.more)(cls.step), cls.done)

    def setup(self) -> None:
        self.ctx.i = 0

    def more(self) -> bool:
        return bool(self.ctx.i < self.inputs.n)

    async def step(self) -> None:
        i = self.ctx.i
        await anyio.lowlevel.checkpoint()
        if i == self.inputs.hold_at and not Counted.RELEASE.is_set():
            await anyio.sleep_forever()
        persister = Counted.PERSISTER
        with Counted.lock:
            Counted.runs[(self.pid, i)] += 1
            if persister is not None:
                persister.trace.append(
                    (time.monotonic(), threading.current_thread().name, self.pid, "step", i)
                )
            if persister is not None and persister.saved_i.get(self.pid, -1) > i:
                Counted.violations.append((self.pid, i, persister.saved_i[self.pid]))
        self.ctx.i = i + 1

    def done(self) -> None:
        self.out("i", self.ctx.i)

    @classmethod
    def reset(cls, persister: WatchedPersister | None) -> None:
        cls.PERSISTER = persister
        cls.RELEASE.clear()
        cls.runs = Counter()
        cls.violations = []


__all__ = ["Counted", "WatchedPersister"]
