"""``ProcessLauncher``: the task subscriber that runs launch, continue and execute tasks.

A worker registers it on its communicator (``await comm.add_task_subscriber(launcher)``); it
runs on the worker's loop and launches processes through the worker's
:class:`~corelib.ProcessControl`, so they answer RPCs before the launcher replies.

Task bodies (see :func:`~corelib.launch_body`):

- ``launch``: create ``process_class`` with ``inputs`` and pid ``pid``; with ``persist`` save a
  checkpoint before it runs and another once it is terminal (a persister is required, else
  :class:`InvalidTaskError`; a worker whose runner checkpoints to that persister leaves both
  to its runner's checkpoint policy). A redelivered persisted launch (its first worker died) finds
  the checkpoint and continues from it instead of starting again;
- ``continue``: load the checkpoint of ``pid`` (``tag``) and continue it (persister required);
  a terminal checkpoint returns its stored outcome; a pid already running here is awaited,
  not started twice; a WorkChain that waited on children finds them running here or
  continues them here from the persister first (:func:`~corelib.runner.continue_children`;
  a child the persister holds no checkpoint of fails the task with
  :class:`~corelib.ChildrenNotFoundError`);
- ``execute``: ``launch`` with ``persist`` and without ``nowait``.

The reply, and the acknowledgement, come once the process is terminal (and, when the
worker's runner checkpoints to the launcher's persister, once its terminal checkpoint is
written): its outcome dict (see :func:`~corelib.outcome_of`); with ``nowait`` at once: its
pid. Classes are resolved only by a :class:`~corelib.ClassLoader`, whose allowed prefixes
bound what a task may import.

A task no launcher could run is answered, never requeued (a requeued task would wait forever
for a worker that can run it): an unknown task type, a malformed body, or a task that needs a
persister on a worker without one raise :class:`InvalidTaskError` (the sender gets a
:class:`~broker.RemoteError` naming it). A draining worker rejects new tasks
(:class:`~broker.TaskRejected`, so they go to other workers); an abandoning one
(:meth:`ProcessLauncher.abandon`) also never answers the tasks it holds: they are requeued
when its communicator closes, and no stale outcome ("killed by cancellation") can be taken
for the task's reply.

Checkpoints are made and loaded by :func:`~corelib.persistence._save_load.checkpoint_of` and
:func:`~corelib.persistence._save_load.load_process`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, final

import anyio

from broker import Communicator, DuplicateSubscriberError, TaskRejected

from ..persistence._checkpoint import Checkpoint, CheckpointNotFoundError
from ..persistence._loader import ClassLoader
from ..persistence._persisters import Persister
from ..persistence._save_load import checkpoint_of, load_process
from ..process._errors import ProcessError
from ..process._process import Process
from ..runner import continue_children
from ._binding import ProcessControl
from ._messages import TASK_TYPES, TERMINAL_SUBJECT_STATES, outcome_of, outcome_of_checkpoint
from ._remote import RemoteProcess

__all__ = ["ProcessLauncher", "InvalidTaskError", "PID_RELEASE_WAIT"]

#: Seconds a launcher retries starting a process whose pid still answers RPCs elsewhere (the
#: worker that lost its task may take a moment to let go of it) before the task fails with
#: :class:`~broker.DuplicateSubscriberError`.
PID_RELEASE_WAIT = 5.0


class _PidTaken(Exception):
    """Starting a task's process met its pid answering RPCs elsewhere (retried)."""

    def __init__(self, error: DuplicateSubscriberError) -> None:
        super().__init__(str(error))
        self.error = error


class InvalidTaskError(ProcessError, ValueError):
    """A task no launcher can run: an unknown type, a malformed body, or one that needs a
    persister the worker lacks. The launcher answers it with this error instead of requeueing
    it."""


@final
class ProcessLauncher:
    """Runs launch/continue/execute tasks on a worker (see the module docstring).

    Args:
        control: the worker's open binding; processes are launched through it.
        persister: where checkpoints go; without one, ``persist`` and ``continue`` tasks are
            rejected.
        loader: resolves ``process_class``; the default allows what
            :class:`~corelib.ClassLoader` allows by default.
        dead_lettered: tells whether the task of a pid was dead-lettered (its reason, or
            ``None``); a WorkChain continued here waits for such a remote child no longer
            (see :class:`RemoteProcess`). A worker on the memory broker passes one.
        holding: called as ``holding(process, True)`` when a task starts waiting for its
            process to end (the task is held, unacknowledged, meanwhile) and
            ``holding(process, False)`` when it stops; a worker counts its slots with it.
            Exceptions are not caught: it must not raise.
    """

    __slots__ = (
        "_abandoned",
        "_accepting",
        "_classes",
        "_control",
        "_dead_lettered",
        "_holding",
        "_launched",
        "_loader",
        "_persister",
    )

    def __init__(
        self,
        control: ProcessControl,
        *,
        persister: Persister | None = None,
        loader: ClassLoader | None = None,
        holding: Callable[[Process, bool], None] | None = None,
        dead_lettered: Callable[[str], str | None] | None = None,
    ) -> None:
        self._control = control
        self._holding = holding
        self._dead_lettered = dead_lettered
        self._persister = persister
        self._loader = ClassLoader() if loader is None else loader
        self._accepting = True
        self._abandoned = False
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

    def abandon(self) -> None:
        """Answer nothing from now on; for a worker that abandons its processes.

        New tasks are rejected, and the tasks held now are never answered (their processes
        end "killed by cancellation" while the worker shuts down, and no checkpoint is
        written for them here): closing the worker's communicator requeues them, to be
        continued elsewhere from their last checkpoint.
        """
        self._accepting = False
        self._abandoned = True

    @property
    def abandoned(self) -> bool:
        """Whether :meth:`abandon` was called."""
        return self._abandoned

    async def __call__(self, _comm: Communicator, task: Any) -> Any:
        if not self._accepting:
            raise TaskRejected("this worker is stopping")
        try:
            result = await self._dispatch_retrying(task)
        except Exception:
            if not self._abandoned:
                raise
            result = None
        if self._abandoned:
            # held until the communicator closes, which requeues the task unanswered
            await anyio.sleep_forever()
        return result

    async def _dispatch_retrying(self, task: Any) -> Any:
        # A redelivered task may find its pid still taken for a moment by the worker that
        # lost it (on RabbitMQ, that worker runs on until it notices its lost connection, and
        # its RPC queue goes with it). Try the whole task again, with back-off, for up to
        # PID_RELEASE_WAIT seconds: reloading the checkpoint each time, since the other
        # worker may have moved the process on (or ended it) meanwhile.
        # (The deadline bounds the waiting for the pid only, never the task's own run.)
        delay = 0.01
        deadline = anyio.current_time() + PID_RELEASE_WAIT
        while True:
            try:
                return await self._dispatch(task)
            except _PidTaken as taken:
                if anyio.current_time() >= deadline:
                    raise taken.error from None
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _dispatch(self, task: Any) -> Any:
        if not isinstance(task, Mapping):
            raise InvalidTaskError(f"a task must be a dict, got {type(task).__name__}")
        kind = task.get("task")
        if kind not in TASK_TYPES:
            raise InvalidTaskError(
                f"unknown task type {kind!r}; a launcher runs {sorted(TASK_TYPES)}"
            )
        if kind == "continue":
            return await self._continue(
                _field(task, "pid", str), task.get("tag"), bool(task.get("nowait", False))
            )
        persist = kind == "execute" or bool(task.get("persist", False))
        nowait = kind != "execute" and bool(task.get("nowait", False))
        return await self._launch(task, persist, nowait)

    async def _launch(self, task: Mapping[str, Any], persist: bool, nowait: bool) -> Any:
        identifier = _field(task, "process_class", str)
        process_class = self._classes.get(identifier)
        if process_class is None:
            process_class = self._loader.load(identifier, base=Process)
            self._classes[identifier] = process_class
        pid = task.get("pid")
        pid = None if pid is None else str(pid)
        if persist or self._runner_checkpoints():
            # (a launch without ``persist`` on a worker whose runner checkpoints everything
            # is continued from its checkpoint too when redelivered)
            persister = self._require_persister()
            if pid is not None:
                try:
                    checkpoint = await persister.load_checkpoint(pid)
                except CheckpointNotFoundError:
                    pass
                else:  # a redelivered launch: its first worker saved it, then died
                    return await self._resume(checkpoint, nowait)
        if persist:
            process = process_class(_inputs(task), pid=pid)
            if not self._runner_checkpoints():
                await persister.save_checkpoint(checkpoint_of(process))
        else:
            process = process_class(_inputs(task), pid=pid)
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
            await self._hold(running)
            return outcome_of(running)
        process = load_process(checkpoint, loader=self._loader)
        # A WorkChain waiting on children knows them by pid. Those launched through the task
        # queue go on with their own tasks: wait for them where they run (or once they run:
        # their tasks may still be queued). The local ones are continued here, from the
        # launcher's persister.
        remote = getattr(process, "pending_remote_children", ())
        if remote:
            comm, persister = self._control.communicator, self._require_persister()
            process.attach_children(  # type: ignore[attr-defined]
                {
                    pid: RemoteProcess(
                        comm, pid, persister=persister, dead_lettered=self._dead_lettered
                    )
                    for _key, pid in remote
                }
            )
        await continue_children(
            process, self._control.runner, self._require_persister(), loader=self._loader
        )
        return await self._run(process, True, nowait)

    async def _run(self, process: Process, persist: bool, nowait: bool) -> Any:
        control = self._control
        await self._start(process)
        self._launched += 1
        if nowait:
            if persist:
                control.spawn(self._save_at_end, process, name=f"checkpoint {process.pid}")
            return process.pid
        await self._hold(process)
        if persist or self._runner_checkpoints():
            # the end is written before the task is answered (and so acknowledged): lost
            # with this worker after the answer, it would be lost for good
            await self._save_terminal(process)
        return outcome_of(process)

    async def _hold(self, process: Process) -> None:
        # wait for the process to end while holding its task
        holding = self._holding
        if holding is not None:
            holding(process, True)
        try:
            await process.wait()
        except anyio.get_cancelled_exc_class():
            # The task was taken back (its communicator lost the delivery, or the subscriber
            # was removed): the broker has requeued it, so the process goes on elsewhere.
            if not process.has_terminated():
                self._give_up(process)
            raise
        finally:
            if holding is not None:
                holding(process, False)

    def _give_up(self, process: Process) -> None:
        # Silently end ``process`` here (and the local children it waits for): nothing is
        # checkpointed, announced or answered for it from now on.
        checkpointer = self._control.runner.checkpointer
        todo = [process]
        while todo:
            p = todo.pop()
            if p.has_terminated():
                continue
            if checkpointer is not None:
                p.remove_process_listener(checkpointer)
                checkpointer.discard(p.pid)
            self._control.abandon(p)
            awaiting = getattr(p, "awaiting", ())
            todo.extend(t for _key, t, _append in awaiting if isinstance(t, Process))
            p.kill("abandoned: its task went back to the queue", force=True)

    async def _start(self, process: Process) -> None:
        try:
            await self._control.start(process)
        except DuplicateSubscriberError as exc:
            raise _PidTaken(exc) from None
        if self._abandoned:
            # the worker gave its processes up while this one was being started: it must
            # not run (nor be checkpointed) here; its task goes back to the queue
            self._give_up(process)
            await anyio.sleep_forever()

    async def _save_at_end(self, process: Process) -> None:
        await process.wait()
        await self._save_terminal(process)

    def _runner_checkpoints(self) -> bool:
        # the worker's runner checkpoints every process to our persister (its policy)
        checkpointer = self._control.runner.checkpointer
        return checkpointer is not None and checkpointer.persister is self._persister

    async def _save_terminal(self, process: Process) -> None:
        if self._abandoned:
            return  # "killed by cancellation" is not where it stands: it goes on elsewhere
        if self._runner_checkpoints():
            await self._control.runner.flush_checkpoints()
            return
        persister = self._require_persister()
        await persister.save_checkpoint(checkpoint_of(process))

    def _require_persister(self) -> Persister:
        if self._persister is None:
            raise InvalidTaskError(
                "this task needs a persister (persist, continue or execute) and this worker"
                " has none; give the worker one"
            )
        return self._persister


def _field(task: Mapping[str, Any], name: str, kind: type[str]) -> str:
    value = task.get(name)
    if value is None:
        raise InvalidTaskError(f"task {task.get('task')!r} has no {name!r}")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InvalidTaskError(
            f"task {task.get('task')!r}: {name!r} must be a string, got {value!r:.80}"
        )
    return kind(value)


def _inputs(task: Mapping[str, Any]) -> Mapping[str, Any]:
    inputs = task.get("inputs")
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise InvalidTaskError(
            f"task {task.get('task')!r}: 'inputs' must be a dict, got {type(inputs).__name__}"
        )
    return inputs
