"""``ProcessLauncher``: the task subscriber that runs launch, continue and execute tasks.

A worker registers it on its communicator (``await comm.add_task_subscriber(launcher)``); it
runs on the worker's loop and launches processes through the worker's
:class:`~corelib.ProcessControl`, so they answer RPCs before the launcher replies.

Task bodies (see :func:`~corelib.launch_body`):

- ``launch``: create ``process_class`` with ``inputs`` and pid ``pid``; with ``persist`` save a
  checkpoint before it runs and another once it is terminal (a persister is required, else
  :class:`~broker.TaskRejected`). A redelivered persisted launch (its first worker died) finds
  the checkpoint and continues from it instead of starting again;
- ``continue``: load the checkpoint of ``pid`` (``tag``) and continue it (persister required);
  a terminal checkpoint returns its stored outcome; a pid already running here is awaited,
  not started twice; a WorkChain that waited on children finds them running here or
  continues them here from the persister first (:func:`~corelib.runner.continue_children`;
  a child the persister holds no checkpoint of fails the task with
  :class:`~corelib.ChildrenNotFoundError`);
- ``execute``: ``launch`` with ``persist`` and without ``nowait``.

The reply, and the acknowledgement, come once the process is terminal: its outcome dict (see
:func:`~corelib.outcome_of`); with ``nowait`` at once: its pid. An unknown task type is
rejected (:class:`~broker.TaskRejected`). Classes are resolved only by a
:class:`~corelib.ClassLoader`, whose allowed prefixes bound what a task may import.

Checkpoints are made and loaded by :func:`~corelib.persistence._save_load.checkpoint_of` and
:func:`~corelib.persistence._save_load.load_process`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

from broker import Communicator, TaskRejected

from ..persistence._checkpoint import Checkpoint, CheckpointNotFoundError
from ..persistence._loader import ClassLoader
from ..persistence._persisters import Persister
from ..persistence._save_load import checkpoint_of, load_process
from ..process._process import Process
from ..runner import continue_children
from ._binding import ProcessControl
from ._messages import TASK_TYPES, TERMINAL_SUBJECT_STATES, outcome_of, outcome_of_checkpoint

__all__ = ["ProcessLauncher"]


@final
class ProcessLauncher:
    """Runs launch/continue/execute tasks on a worker (see the module docstring).

    Args:
        control: the worker's open binding; processes are launched through it.
        persister: where checkpoints go; without one, ``persist`` and ``continue`` tasks are
            rejected.
        loader: resolves ``process_class``; the default allows what
            :class:`~corelib.ClassLoader` allows by default.
    """

    __slots__ = ("_accepting", "_classes", "_control", "_launched", "_loader", "_persister")

    def __init__(
        self,
        control: ProcessControl,
        *,
        persister: Persister | None = None,
        loader: ClassLoader | None = None,
    ) -> None:
        self._control = control
        self._persister = persister
        self._loader = ClassLoader() if loader is None else loader
        self._accepting = True
        self._launched = 0
        # resolved classes by identifier: the loader's checks ran once for each
        self._classes: dict[str, type[Process]] = {}

    @property
    def launched(self) -> int:
        """How many processes this launcher started (continued ones included)."""
        return self._launched

    def stop_accepting(self) -> None:
        """Reject every task from now on (they go to other workers); for draining workers."""
        self._accepting = False

    async def __call__(self, _comm: Communicator, task: Any) -> Any:
        if not self._accepting:
            raise TaskRejected("this worker is stopping")
        if not isinstance(task, Mapping) or task.get("task") not in TASK_TYPES:
            kind = task.get("task") if isinstance(task, Mapping) else type(task).__name__
            raise TaskRejected(f"unknown task type {kind!r}")
        kind = task["task"]
        if kind == "continue":
            return await self._continue(
                str(task["pid"]), task.get("tag"), bool(task.get("nowait", False))
            )
        persist = kind == "execute" or bool(task.get("persist", False))
        nowait = kind != "execute" and bool(task.get("nowait", False))
        return await self._launch(task, persist, nowait)

    async def _launch(self, task: Mapping[str, Any], persist: bool, nowait: bool) -> Any:
        identifier = str(task["process_class"])
        process_class = self._classes.get(identifier)
        if process_class is None:
            process_class = self._loader.load(identifier, base=Process)
            self._classes[identifier] = process_class
        pid = task.get("pid")
        pid = None if pid is None else str(pid)
        if persist:
            persister = self._require_persister()
            if pid is not None:
                try:
                    checkpoint = await persister.load_checkpoint(pid)
                except CheckpointNotFoundError:
                    pass
                else:  # a redelivered launch: its first worker saved it, then died
                    return await self._resume(checkpoint, nowait)
            process = process_class(task.get("inputs") or {}, pid=pid)
            await persister.save_checkpoint(checkpoint_of(process))
        else:
            process = process_class(task.get("inputs") or {}, pid=pid)
        return await self._run(process, persist, nowait)

    async def _continue(self, pid: str, tag: Any, nowait: bool) -> Any:
        persister = self._require_persister()
        checkpoint = await persister.load_checkpoint(pid, None if tag is None else str(tag))
        return await self._resume(checkpoint, nowait)

    async def _resume(self, checkpoint: Checkpoint, nowait: bool) -> Any:
        if checkpoint.state in TERMINAL_SUBJECT_STATES:
            return checkpoint.pid if nowait else outcome_of_checkpoint(checkpoint)
        running = self._control.runner.processes.get(checkpoint.pid)
        if running is not None:  # a duplicate delivery of a process running here
            if nowait:
                return running.pid
            await running.wait()
            return outcome_of(running)
        process = load_process(checkpoint, loader=self._loader)
        # A WorkChain waiting on children knows them by pid: continue them here too, from the
        # launcher's persister (the worker's runner has none to do it on launch).
        await continue_children(
            process, self._control.runner, self._require_persister(), loader=self._loader
        )
        return await self._run(process, True, nowait)

    async def _run(self, process: Process, persist: bool, nowait: bool) -> Any:
        control = self._control
        await control.start(process)
        self._launched += 1
        if nowait:
            if persist:
                control.spawn(self._save_at_end, process, name=f"checkpoint {process.pid}")
            return process.pid
        await process.wait()
        if persist:
            await self._save_terminal(process)
        return outcome_of(process)

    async def _save_at_end(self, process: Process) -> None:
        await process.wait()
        await self._save_terminal(process)

    async def _save_terminal(self, process: Process) -> None:
        persister = self._require_persister()
        await persister.save_checkpoint(checkpoint_of(process))

    def _require_persister(self) -> Persister:
        if self._persister is None:
            raise TaskRejected("this worker has no persister")
        return self._persister
