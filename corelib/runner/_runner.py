"""The runner: owns the tasks in which processes run, plus ``run``/``run_sync`` and their
``run_get_process`` twins.

Every process runs inside a task the runner owns (or, for :meth:`Runner.run`, in the task that
awaits it); nothing is fire-and-forget. The runner's tasks are children of a spawner
(``broker._spawn``: native tasks, owned and cancelled as a task group's are, much cheaper to
start). They are:

* the **pump** (:mod:`corelib.runner._pump`), a single task that advances every queued
  process round-robin, one step boundary per turn, and yields to the loop after each round of
  turns. Processes made of sync steps never need a task of their own. The pump also stays
  alive, idle, while processes are *parked* (blocked on ``play`` or ``resume``, holding no
  task), so that the runner cannot exit under them;
* one task per process while it runs an ``async`` step (and the steps after it, until it
  parks or terminates), and for :meth:`Runner.start`;
* one watcher task per process waiting on an awaitable.

Leaving the runner's ``async with`` block waits until every process it runs has terminated
(kill them, e.g. with :meth:`Runner.kill_all`, to leave early). If the block is cancelled or
raises, its tasks are cancelled: each process is then KILLED with the message
``"killed by cancellation"`` (by the pump for queued and parked processes, by its own task
otherwise) so that nobody awaiting it hangs.

A process's failure is never the runner's: whatever its steps, the awaitables it waits on or
its hooks raise, ``SystemExit`` and ``KeyboardInterrupt`` included, makes that process
EXCEPTED (``result()`` and :meth:`Runner.run` raise :class:`~corelib.ProcessExceptedError`
with the original chained), and the other processes and the runner go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar, final

import anyio
import anyio.lowlevel

from broker._spawn import Spawner, open_spawner

from ..persistence._loader import ClassLoader
from ..persistence._persisters import Persister
from ..persistence._save_load import Checkpointer, CheckpointPolicy
from ..process._errors import LoopRunningError, ProcessStateError, RunnerNotRunningError
from ..process._frozen import AttributesFrozenDict
from ..process._listener import ProcessListener
from ..process._process import ControlHandle, Process, force_of
from ..process._states import ProcessState
from ._continue import continue_process, reattach_children
from ._pump import _CANCELLED, Pump

__all__ = ["Runner", "run", "run_get_process", "run_sync", "run_get_process_sync"]

_P = TypeVar("_P", bound=Process)

logger = logging.getLogger("corelib.runner")


@final
class Runner:
    """Runs processes in tasks it owns, on the current event loop.

    Use it as ``async with Runner() as runner:``; inside the block submit processes with
    :meth:`submit` (sync, returns at once), :meth:`start` (async, returns once the process's
    driver task is running) or run one to its end with :meth:`run`. Processes can submit
    children into the same runner with ``self.submit(...)``.

    The runner keeps the processes it runs that have not terminated, by pid, for lookup by
    :meth:`get_process` (and later by a communicator).
    """

    __slots__ = (
        "_checkpointer",
        "_launch_hooks",
        "_loader",
        "_persister",
        "_processes",
        "_pump",
        "_spawner",
        "_spawner_cm",
    )

    def __init__(
        self,
        *,
        persister: Persister | None = None,
        checkpoint_policy: CheckpointPolicy = CheckpointPolicy.EVERY_TRANSITION,
        loader: ClassLoader | None = None,
    ) -> None:
        self._persister = persister
        self._loader = loader
        self._launch_hooks: list[Callable[[Process], object]] = []
        self._checkpointer = (
            None
            if persister is None or checkpoint_policy is CheckpointPolicy.NEVER
            else Checkpointer(persister, self._spawn, checkpoint_policy)
        )
        # the owner of every task the runner starts (drivers, the pump, checkpoint writers):
        # native child tasks, much cheaper to start than an anyio task group's
        self._spawner: Spawner | None = None
        self._spawner_cm: AbstractAsyncContextManager[Spawner] | None = None
        self._processes: dict[str, Process] = {}
        # drives the queued processes, and counts the parked and inline ones
        self._pump = Pump(self._processes, self._require_spawner, self)

    def __repr__(self) -> str:
        status = "running" if self._spawner is not None else "not running"
        return f"<Runner {status}, {len(self._processes)} processes>"

    async def __aenter__(self) -> Runner:
        if self._spawner is not None:
            raise RuntimeError("runner is already running")
        cm = open_spawner()
        self._spawner = await cm.__aenter__()
        self._spawner_cm = cm
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        cm = self._spawner_cm
        assert cm is not None
        try:
            if exc_val is None:
                self._pump.hold_for_inline()
            return await cm.__aexit__(exc_type, exc_val, exc_tb)
        except BaseExceptionGroup as group:
            # Process drivers never raise, so a group holding only the block's own exception
            # is unwrapped: callers see what their code raised.
            if exc_val is not None and list(group.exceptions) == [exc_val]:
                raise exc_val from None
            raise
        finally:
            self._spawner = None
            self._spawner_cm = None

    @property
    def running(self) -> bool:
        """Whether the runner is inside its ``async with`` block."""
        return self._spawner is not None

    @property
    def processes(self) -> Mapping[str, Process]:
        """The processes launched here that have not terminated, by pid (a read-only live
        view)."""
        return MappingProxyType(self._processes)

    def get_process(self, pid: str) -> Process:
        """Return the process with ``pid`` launched here and not terminated.

        Raises:
            KeyError: no such process runs here.
        """
        try:
            return self._processes[pid]
        except KeyError:
            raise KeyError(f"no process {pid!r} in this runner") from None

    def _require_spawner(self) -> Spawner:
        if self._spawner is None:
            raise RunnerNotRunningError("runner is not running; use 'async with Runner()'")
        return self._spawner

    def _register(self, process: Process) -> Spawner:
        spawner = self._require_spawner()
        process._check_not_launched()
        if process.pid in self._processes:
            raise ProcessStateError(f"a process with pid {process.pid!r} already runs here")
        process._bind(self)
        self._processes[process.pid] = process
        for hook in self._launch_hooks:
            try:
                hook(process)
            except BaseException:  # a sync call: never the loop's cancellation
                logger.exception("launch hook %r failed for process %s", hook, process.pid)
        checkpointer = self._checkpointer
        if checkpointer is not None:
            process.add_process_listener(checkpointer)
            if checkpointer.policy is CheckpointPolicy.EVERY_TRANSITION:
                checkpointer.take(process)  # as launched: created, or as loaded
        return spawner

    def add_launch_hook(self, hook: Callable[[Process], object]) -> None:
        """Call ``hook(process)`` for every process launched here from now on, before its
        first step (e.g. to put it on a communicator). Whatever it raises (``SystemExit``
        included) is logged, and the launch goes on."""
        self._launch_hooks.append(hook)

    def remove_launch_hook(self, hook: Callable[[Process], object]) -> None:
        """Stop calling ``hook`` (no error if it was not added)."""
        with contextlib.suppress(ValueError):
            self._launch_hooks.remove(hook)

    @property
    def persister(self) -> Persister | None:
        """Where this runner's processes are checkpointed, if anywhere."""
        return self._persister

    @property
    def loader(self) -> ClassLoader | None:
        """What loads the classes of checkpoints continued here (``None``: the default)."""
        return self._loader

    @property
    def checkpointer(self) -> Checkpointer | None:
        """The listener that checkpoints this runner's processes (``None`` without a
        persister)."""
        return self._checkpointer

    async def continue_process(self, pid: str, *, tag: str | None = None) -> Process:
        """Load process ``pid`` from the persister and run it here from its checkpoint.

        A process already running here is returned as is; a terminal one is loaded (with its
        result) but not run again; a waiting WorkChain re-attaches to its children by pid.

        Raises:
            RunnerNotRunningError: outside the ``async with`` block.
            ProcessStateError: the runner has no persister.
            CheckpointNotFoundError: no checkpoint of ``pid``.
            ChildrenNotFoundError: a WorkChain waits for children of which the persister
                holds no checkpoint (and that don't run here).
        """
        self._require_spawner()
        if self._persister is None:
            raise ProcessStateError("runner has no persister to continue processes from")
        return await continue_process(self, self._persister, pid, tag=tag, loader=self._loader)

    async def flush_checkpoints(self) -> None:
        """Wait until every checkpoint taken so far is written."""
        if self._checkpointer is not None:
            await self._checkpointer.flush()

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
        self._require_spawner()
        return self.launch(process_class(inputs, pid=pid, listeners=listeners))

    def launch(self, process: _P) -> _P:
        """Start running an already created process; returns at once.

        A process rebuilt from a checkpoint (:func:`~corelib.load_process`) goes on from
        where it was: one that was waiting waits again, and a WorkChain that waited on
        children finds them by pid, running in this runner or else continued from this
        runner's persister (a child the persister holds no checkpoint of makes it except
        with :class:`~corelib.ChildrenNotFoundError`).

        Raises:
            RunnerNotRunningError: called outside the runner's ``async with`` block.
            ProcessStateError: the process was launched before, or its pid is taken.
            ChildrenNotFoundError: a rebuilt WorkChain waits for children that don't run
                here, and this runner has no persister to continue them from; nothing was
                launched.
        """
        restored = process._machine._state is not ProcessState.CREATED
        if restored:
            self._require_spawner()
            reattach_children(process, self)
        self._register(process)
        self._enqueue(process)
        if restored:
            process._rewait()
        return process

    async def start(
        self,
        process_class: type[_P],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> _P:
        """Like :meth:`submit`, but the process gets a driver task of its own, and this
        returns only once that task is running."""
        process = process_class(inputs, pid=pid, listeners=listeners)
        spawner = self._register(process)
        started = anyio.Event()
        spawner.start_soon(_drive_started, process, started, name=f"process {process.pid}")
        await started.wait()
        return process

    async def run(
        self,
        process_class: type[Process],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> AttributesFrozenDict:
        """Run a process to its end and return its outputs, as AiiDA's ``run`` does.

        The outputs of a finished process are returned whether it succeeded or not (an
        unsuccessful exit code is not an error; :meth:`run_get_process` gives the process, with
        its ``exit_code`` and ``result()``). A process that excepted or was killed raises, as
        ``process.result()`` does.

        The process is driven in the calling task, which owns it: no task is spawned for it
        unless it blocks (waits, or is paused), in which case the runner continues it once it
        can go on, and this call waits. Control requests work as for any process. If this
        call is cancelled, the process is killed (``"killed by cancellation"``).

        Raises:
            RunnerNotRunningError: called outside the runner's ``async with`` block.
            PortValidationError: the inputs do not match the spec.
            ProcessExceptedError: the process excepted (the original exception is chained).
            ProcessKilledError: the process was killed.
        """
        process = await self._run(process_class, inputs, pid=pid, listeners=listeners)
        return _outputs_of(process)

    async def run_get_process(
        self,
        process_class: type[_P],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> _P:
        """Run a process to its end, like :meth:`run`, and return the process itself.

        However it ended: it never raises for a process that excepted or was killed (call
        ``process.result()`` for that), so that how it ended can be looked at: ``state``,
        ``exit_code``, ``outputs``, ``exception``.

        Raises:
            RunnerNotRunningError: called outside the runner's ``async with`` block.
            PortValidationError: the inputs do not match the spec.
        """
        return await self._run(process_class, inputs, pid=pid, listeners=listeners)

    async def _run(
        self,
        process_class: type[_P],
        inputs: Mapping[str, Any] | None,
        *,
        pid: str | None,
        listeners: Iterable[ProcessListener],
    ) -> _P:
        self._require_spawner()
        process = process_class(inputs, pid=pid, listeners=listeners)
        self._register(process)
        self._pump.enter_inline()
        try:
            await process._drive()
        finally:
            self._pump.exit_inline()
        if not process.has_terminated():
            # Parked: the runner continues it when a request unblocks it.
            try:
                await process.wait()
            except anyio.get_cancelled_exc_class():
                process.kill(_CANCELLED, force=True)
                raise
        return process

    def kill_all(
        self,
        msg: str | None = None,
        *,
        force: bool | None = None,
        force_kill: bool | None = None,
    ) -> list[ControlHandle]:
        """Request a kill of every running process; returns the handles.

        ``force`` (or plumpy's ``force_kill``) as for :meth:`Process.kill`.

        Raises:
            ValueError: ``force`` and ``force_kill`` were both given, with different values.
        """
        forced = force_of(force, force_kill)
        return [p.kill(msg, force=forced) for p in tuple(self._processes.values())]

    # -- driving (called by processes) -----------------------------------------------------------

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None:
        self._require_spawner().start_soon(fn, *args, name=name)

    def _enqueue(self, process: Process) -> None:
        """Queue a process (whose driver the pump now is) for the pump."""
        self._pump.enqueue(process)

    def _park(self, process: Process) -> None:
        """A process was let go of while blocked; keep the runner open for it."""
        self._pump.park()

    def _unpark(self, process: Process) -> None:
        """A parked process can go on: the pump drives it again."""
        self._pump.unpark(process)

    def _terminated(self, process: Process) -> None:
        """A process of this runner reached a terminal state; it was parked unless driven."""
        self._forget(process)
        if not process._driving:
            self._pump.release()

    def _forget(self, process: Process) -> None:
        if self._processes.get(process.pid) is process:
            del self._processes[process.pid]


async def _drive_started(process: Process, started: anyio.Event) -> None:
    started.set()
    await process._drive()


async def run(
    process_class: type[Process],
    inputs: Mapping[str, Any] | None = None,
    *,
    pid: str | None = None,
    listeners: Iterable[ProcessListener] = (),
) -> AttributesFrozenDict:
    """Run one process in a fresh :class:`Runner` and return its outputs (AiiDA's ``run``).

    The process is driven in the calling task (see :meth:`Runner.run`); its children, if
    any, run in the runner, which is left once they all terminated. The outputs of a finished
    process are returned whether it succeeded or not; to see its exit code or what its last
    step returned, use :func:`run_get_process`.

    Raises:
        PortValidationError: the inputs do not match the spec.
        ProcessExceptedError: the process excepted (the original exception is chained).
        ProcessKilledError: the process was killed.
    """
    return _outputs_of(await run_get_process(process_class, inputs, pid=pid, listeners=listeners))


async def run_get_process(
    process_class: type[_P],
    inputs: Mapping[str, Any] | None = None,
    *,
    pid: str | None = None,
    listeners: Iterable[ProcessListener] = (),
) -> _P:
    """Run one process in a fresh :class:`Runner`, like :func:`run`, and return the process.

    It is returned however it ended (like AiiDA's ``run_get_node``, named after what it
    returns): ``process.outputs``, ``process.exit_code`` and ``process.state`` tell how, and
    ``process.result()`` returns what its last step returned or raises
    :class:`~corelib.ProcessExceptedError` / :class:`~corelib.ProcessKilledError`.

    Raises:
        PortValidationError: the inputs do not match the spec.
    """
    async with Runner() as runner:
        process = await runner._run(process_class, inputs, pid=pid, listeners=listeners)
    return process


def run_sync(
    process_class: type[Process],
    inputs: Mapping[str, Any] | None = None,
    *,
    pid: str | None = None,
    listeners: Iterable[ProcessListener] = (),
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
) -> AttributesFrozenDict:
    """Run one process to the end from synchronous code (a script), on a new event loop, and
    return its outputs.

    Same result and errors as :func:`run`. In async code (a thread that runs an event loop,
    e.g. a test or a step) ``await corelib.run(...)`` instead.

    Args:
        process_class: the process to run.
        inputs: its raw inputs.
        pid: its process id (by default a fresh one).
        listeners: listeners to attach from the start.
        backend: ``"asyncio"`` or ``"trio"``.
        backend_options: passed to :func:`anyio.run`.

    Raises:
        LoopRunningError: the calling thread already runs an event loop (nothing was run).
        PortValidationError: the inputs do not match the spec.
        ProcessExceptedError: the process excepted (the original exception is chained).
        ProcessKilledError: the process was killed.
    """
    process = run_get_process_sync(
        process_class,
        inputs,
        pid=pid,
        listeners=listeners,
        backend=backend,
        backend_options=backend_options,
    )
    return _outputs_of(process)


def run_get_process_sync(
    process_class: type[_P],
    inputs: Mapping[str, Any] | None = None,
    *,
    pid: str | None = None,
    listeners: Iterable[ProcessListener] = (),
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
) -> _P:
    """:func:`run_get_process` from synchronous code: run one process to the end on a new event
    loop and return it, however it ended.

    The process is terminal and its loop gone: read its state, outputs, exit code and
    ``result()``; don't await anything of it.

    Raises:
        LoopRunningError: the calling thread already runs an event loop (nothing was run).
        PortValidationError: the inputs do not match the spec.
    """
    library = _running_loop_library()
    if library is not None:
        raise LoopRunningError(library)
    return anyio.run(
        functools.partial(
            run_get_process, process_class, inputs, pid=pid, listeners=tuple(listeners)
        ),
        backend=backend,
        backend_options=backend_options,
    )


def _outputs_of(process: Process) -> AttributesFrozenDict:
    """The outputs of a finished process, successful or not; raises if it ended otherwise."""
    if process.state is not ProcessState.FINISHED:
        process.result()  # raises ProcessExceptedError / ProcessKilledError
    return process.outputs


def _running_loop_library() -> str | None:
    """The library of the event loop this thread runs (``"asyncio"``, ``"trio"``), if any."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")  # a trio loop runs only if trio was imported
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    return None
