"""The runner: owns the task group in which processes run, plus ``run``/``run_sync``.

Every process runs as one task of a runner's task group; nothing is fire-and-forget. Leaving
the runner's ``async with`` block waits until every process it runs has terminated (kill them,
e.g. with :meth:`Runner.kill_all`, to leave early). If the block is cancelled or raises, the
task group cancels the processes: each one is then KILLED with the message
``"killed by cancellation"`` so that nobody awaiting it hangs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar, final

import anyio
from anyio.abc import TaskGroup

from ._errors import ProcessStateError, RunnerNotRunningError
from ._listener import ProcessListener
from ._process import ControlHandle, Process

__all__ = ["Runner", "run", "run_sync"]

_P = TypeVar("_P", bound=Process)


@final
class Runner:
    """Runs processes as tasks of one task group, on the current event loop.

    Use it as ``async with Runner() as runner:``; inside the block submit processes with
    :meth:`submit` (sync, returns at once) or :meth:`start` (async, returns once the process's
    driver task is running). Processes can submit children into the same runner with
    ``self.submit(...)``.

    The runner keeps the processes whose driver is still running, by pid, for lookup by
    :meth:`get_process` (and later by a communicator).
    """

    __slots__ = ("_processes", "_tg")

    def __init__(self) -> None:
        self._tg: TaskGroup | None = None
        self._processes: dict[str, Process] = {}

    def __repr__(self) -> str:
        status = "running" if self._tg is not None else "not running"
        return f"<Runner {status}, {len(self._processes)} processes>"

    async def __aenter__(self) -> Runner:
        if self._tg is not None:
            raise RuntimeError("runner is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None
        try:
            return await tg.__aexit__(exc_type, exc_val, exc_tb)
        except BaseExceptionGroup as group:
            # Process drivers never raise, so a group holding only the block's own exception
            # is unwrapped: callers see what their code raised.
            if exc_val is not None and list(group.exceptions) == [exc_val]:
                raise exc_val from None
            raise
        finally:
            self._tg = None

    @property
    def running(self) -> bool:
        """Whether the runner is inside its ``async with`` block."""
        return self._tg is not None

    @property
    def processes(self) -> Mapping[str, Process]:
        """The processes whose driver is still running, by pid (a read-only live view)."""
        return MappingProxyType(self._processes)

    def get_process(self, pid: str) -> Process:
        """Return the running process with ``pid``.

        Raises:
            KeyError: no process with that pid runs here.
        """
        try:
            return self._processes[pid]
        except KeyError:
            raise KeyError(f"no process {pid!r} in this runner") from None

    def _require_tg(self) -> TaskGroup:
        if self._tg is None:
            raise RunnerNotRunningError("runner is not running; use 'async with Runner()'")
        return self._tg

    def _register(self, process: Process) -> TaskGroup:
        tg = self._require_tg()
        process._check_not_launched()
        if process.pid in self._processes:
            raise ProcessStateError(f"a process with pid {process.pid!r} already runs here")
        process._bind(self)
        self._processes[process.pid] = process
        return tg

    def _forget(self, process: Process) -> None:
        if self._processes.get(process.pid) is process:
            del self._processes[process.pid]

    def submit(
        self,
        process_class: type[_P],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> _P:
        """Create a process and start running it; returns at once.

        Raises:
            RunnerNotRunningError: called outside the runner's ``async with`` block.
            PortValidationError: the inputs do not match the spec.
        """
        self._require_tg()
        return self.launch(process_class(inputs, pid=pid, listeners=listeners))

    def launch(self, process: _P) -> _P:
        """Start running an already created process; returns at once.

        Raises:
            RunnerNotRunningError: called outside the runner's ``async with`` block.
            ProcessStateError: the process was launched before, or its pid is taken.
        """
        tg = self._register(process)
        tg.start_soon(process._drive, name=f"process {process.pid}")
        return process

    async def start(
        self,
        process_class: type[_P],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> _P:
        """Like :meth:`submit`, but returns only once the process's driver task is running."""
        process = process_class(inputs, pid=pid, listeners=listeners)
        tg = self._register(process)
        await tg.start(process._drive, name=f"process {process.pid}")
        return process

    async def run(
        self,
        process_class: type[Process],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> Any:
        """Submit a process, wait for it to terminate and return ``process.result()``.

        Raises:
            ProcessExceptedError: the process excepted.
            ProcessKilledError: the process was killed.
        """
        process = self.submit(process_class, inputs, pid=pid, listeners=listeners)
        await process.wait()
        return process.result()

    def kill_all(self, msg: str | None = None, *, force: bool = False) -> list[ControlHandle]:
        """Request a kill of every running process; returns the handles."""
        return [p.kill(msg, force=force) for p in tuple(self._processes.values())]


async def run(
    process_class: type[Process],
    inputs: Mapping[str, Any] | None = None,
    *,
    pid: str | None = None,
    listeners: Iterable[ProcessListener] = (),
) -> Any:
    """Run one process in a fresh :class:`Runner` and return its result.

    The result is what its last step returned (an unsuccessful ``ExitCode`` is returned, not
    raised).

    Raises:
        PortValidationError: the inputs do not match the spec.
        ProcessExceptedError: the process excepted (the original exception is chained).
        ProcessKilledError: the process was killed.
    """
    async with Runner() as runner:
        process = runner.submit(process_class, inputs, pid=pid, listeners=listeners)
        await process.wait()
    return process.result()


def run_sync(
    process_class: type[Process],
    inputs: Mapping[str, Any] | None = None,
    *,
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
) -> Any:
    """Run one process to the end from synchronous code (a script), on a new event loop.

    Same result and errors as :func:`run`. Must not be called from inside a running loop.

    Args:
        process_class: the process to run.
        inputs: its raw inputs.
        backend: ``"asyncio"`` or ``"trio"``.
        backend_options: passed to :func:`anyio.run`.
    """
    return anyio.run(
        functools.partial(run, process_class, inputs),
        backend=backend,
        backend_options=backend_options,
    )
