"""The runner's pump: one task that advances every queued process, round-robin.

Theory of operation
-------------------
A process made of sync steps never needs a task of its own: the pump drives it. Each *round*
gives every process queued at its start one turn (one step boundary, ``Process._advance``);
those that can go on are queued again for the next round, and the pump yields to the loop
after each round of at most :data:`_TURNS_PER_ROUND` turns, so every process yields between
two of its steps and other tasks wait for at most that many steps (see the theory of
operation in ``corelib/process/_driver.py``). A turn that reaches an ``async`` step hands the
process to a new task of the runner, which drives it from then on (``Process._drive``).

The pump also stays alive, idle, while processes are *parked* (blocked on ``play`` or
``resume``, holding no task) or driven *inline* by ``Runner.run`` in a task outside the
runner, so that the runner's task group cannot close under them. Cancelled, it kills every
process that no task drives (queued or parked) with :data:`_CANCELLED`, so that nobody
awaiting them hangs.

Whatever a process raises ends that process (EXCEPTED), never the pump: the other processes
it drives go on (see the failures in ``corelib/process/_driver.py``).

Invariants: at most one pump task runs per runner (``running``); ``parked`` counts the
processes let go of while blocked and not terminated; ``inline`` counts the processes driven
by ``Runner.run`` callers right now.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Final, final

import anyio
import anyio.lowlevel

from broker._spawn import Spawner

from ..process._process import Process

__all__: list[str] = []  # internal to the runner

_CANCELLED: Final = "killed by cancellation"

_TURNS_PER_ROUND: Final = 64
"""The most process turns (step boundaries) the pump runs between two yields to the loop."""


@final
class Pump:
    """The queue of processes a runner drives, and the one task that drives them.

    Args:
        processes: the runner's processes by pid (a live view: the parked ones are those no
            task drives).
        spawner: returns the runner's spawner (raises when the runner is not running).
        owner: the runner, named in the pump task's name.
    """

    __slots__ = (
        "_inline",
        "_owner",
        "_parked",
        "_processes",
        "_ready",
        "_running",
        "_spawner",
        "_wake",
    )

    def __init__(
        self, processes: Mapping[str, Process], spawner: Callable[[], Spawner], owner: object
    ) -> None:
        self._processes = processes
        self._spawner = spawner
        self._owner = owner
        self._ready: deque[Process] = deque()
        self._running = False
        self._wake: anyio.Event | None = None  # set to wake the idle pump
        # processes no task holds (blocked), and those driven inline by ``Runner.run``
        self._parked = 0
        self._inline = 0

    @property
    def running(self) -> bool:
        """Whether the pump task runs (busy or idle)."""
        return self._running

    def enqueue(self, process: Process) -> None:
        """Queue a process (whose driver the pump now is)."""
        self._ready.append(process)
        if self._running:
            self.poke()
        else:
            self.start()

    def park(self) -> None:
        """A process was let go of while blocked; keep the runner open for it."""
        self._parked += 1
        if not self._running:
            self.start()

    def unpark(self, process: Process) -> None:
        """A parked process can go on: drive it again."""
        self._parked -= 1
        self.enqueue(process)

    def release(self) -> None:
        """A parked process terminated (killed while parked)."""
        self._parked -= 1
        if not self._parked:
            self.poke()

    def enter_inline(self) -> None:
        """A caller of ``Runner.run`` starts driving a process in its own task."""
        self._inline += 1

    def exit_inline(self) -> None:
        """That caller is done driving it."""
        self._inline -= 1
        if not self._inline:
            self.poke()

    def hold_for_inline(self) -> None:
        """The runner's block ends while a task outside it still drives a process inline:
        keep the task group open (the pump idles) until it is done with it."""
        if self._inline and not self._running:
            self.start()

    def poke(self) -> None:
        """Wake the pump if it idles."""
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Start the pump task."""
        spawner = self._spawner()
        self._running = True
        spawner.start_soon(self._run, name=f"pump of {self._owner!r}")

    async def _run(self) -> None:
        """Advance the queued processes round-robin; idle while any process is parked."""
        ready = self._ready
        spawner = self._spawner()
        try:
            while True:
                while ready:
                    # A round: each process queued now gets one turn (those that go on are
                    # queued again, for the next round), then the rest of the loop runs. So
                    # every process yields between two of its steps, and other tasks wait
                    # for at most _TURNS_PER_ROUND steps.
                    for _ in range(min(len(ready), _TURNS_PER_ROUND)):
                        process = ready.popleft()
                        try:
                            advanced = process._advance()
                        except BaseException as exc:
                            # ``_advance`` never awaits, so this is not the loop's
                            # cancellation: user code outside a step (a listener of a pause)
                            # or a driver bug. It ends the process, never the pump.
                            process._driver_failed(exc)
                            advanced = False
                        if advanced is True:
                            ready.append(process)
                        elif advanced is False:
                            process._let_go()
                        else:
                            # An async step: a task drives the process from now on.
                            name = f"process {process.pid}"
                            spawner.start_soon(process._drive, advanced, name=name)
                    await anyio.lowlevel.checkpoint()
                if not (self._parked or self._inline):
                    return
                self._wake = anyio.Event()
                await self._wake.wait()
                self._wake = None
        except anyio.get_cancelled_exc_class():
            self._kill_held()
            raise
        finally:
            self._running = False
            self._wake = None

    def _kill_held(self) -> None:
        """Kill the processes that no task drives (queued or parked): the runner is cancelled.

        Killing runs hooks, which may launch or unblock processes: repeat until none is left.
        """
        while True:
            while self._ready:
                process = self._ready.popleft()
                if not process.has_terminated():
                    process.kill(_CANCELLED, force=True)
                process._let_go()
            parked = [p for p in self._processes.values() if not p._driving]
            if not parked:
                return
            for process in parked:
                process.kill(_CANCELLED, force=True)
