"""Checkpointing live processes, and bringing them back.

Theory of operation
-------------------
:func:`checkpoint_of` turns a process at a step boundary into a plain
:class:`~corelib.Checkpoint`: its state record (already plain data: the next step's *name* and
arguments, the waiting continuation's name, the result...), paused flag, inputs, outputs, and
for a WorkChain its context, outline cursor and the children it awaits (by pid).

:func:`load_process` does the reverse without running any hook (``on_create`` ran when the
process was first created): the class comes from a :class:`~corelib.ClassLoader` (allowed
module prefixes only), method names are bound again, and the process is ready to be launched.

:class:`Checkpointer` is what a :class:`~corelib.Runner` given a persister attaches to each
process: after every transition (and pause/play) it takes the checkpoint at once, in the
process's loop, and hands the encoded bytes to one saver task that writes them in order. A
crash can lose the last few checkpoints, never leave a torn one (the persisters write
atomically), and every checkpoint is a consistent step boundary, so continuing from it gives
the same results as an uninterrupted run whenever the steps themselves are deterministic.

:func:`continue_process` loads a process by pid and launches it in a runner; a waiting
WorkChain re-attaches to its children by pid, continuing those too when they are not running
yet (a child that already terminated is loaded, not run again).

A WorkChain rebuilt by :func:`load_process` and launched by hand (``runner.launch``) finds its
children the same way: :func:`reattach_children` (called by the launch) takes those running in
that runner, the others are continued from the runner's persister when it next runs
(:func:`continue_children`), and without a persister the launch raises
:class:`ChildrenNotFoundError` at once, so that it never waits for children nobody runs.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.lowlevel
import attrs

from ..process._frozen import _NOT_MAPPINGS, AttributesFrozenDict
from ..process._listener import ProcessListener
from ..process._ports import PortValidationError
from ..process._process import Process
from ..process._states import (
    Created,
    Excepted,
    Finished,
    Killed,
    ProcessStateMachine,
    Running,
    StateData,
    Waiting,
)
from ..workchain._workchain import AttributesDict
from ._checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
)
from ._loader import ClassLoader, class_identifier

if TYPE_CHECKING:
    from ..runner._runner import Runner
    from ._persisters import Persister

__all__ = [
    "CheckpointPolicy",
    "Checkpointer",
    "checkpoint_of",
    "load_process",
    "continue_process",
    "continue_children",
    "NotCheckpointableError",
    "ChildrenNotFoundError",
]

logger = logging.getLogger("corelib.persistence")


class NotCheckpointableError(CheckpointError):
    """Raised when a process can't be checkpointed now (mid-step), or can't be re-attached to
    what it was waiting for."""


_NO_PERSISTER: Final = (
    "which don't run in this runner, and the runner has no persister to continue them from: "
    "launch them in this runner first, or launch it in a runner with a persister that holds "
    "their checkpoints (or use continue_process(runner, persister, pid))"
)
_NOT_PERSISTED: Final = (
    "which don't run in this runner, and its persister holds no checkpoint of them"
)


@final
class ChildrenNotFoundError(NotCheckpointableError):
    """Raised when a WorkChain rebuilt from a checkpoint while it waited on children can't find
    them: they don't run in the runner it is launched in, and they can't be continued from a
    persister (the runner has none, or it holds no checkpoint of them).

    Raised at once by :meth:`Runner.launch` when the runner has no persister (nothing is
    launched), by :func:`continue_process` before anything is launched, and otherwise (the
    runner's persister turns out to lack a checkpoint) it is what the WorkChain excepts with.

    Args:
        pid: the WorkChain's pid.
        children: ``(ctx key, child pid)`` of every child not found.
        reason: what is missing, and what to do.
    """

    def __init__(self, pid: str, children: list[tuple[str, str]], reason: str) -> None:
        listed = ", ".join(f"{child} (ctx key {key!r})" for key, child in children)
        super().__init__(f"workchain {pid} waits for children {listed}, {reason}")
        self.pid = pid
        self.children = tuple(children)


class CheckpointPolicy(enum.Enum):
    """When a runner with a persister takes checkpoints.

    - ``EVERY_TRANSITION`` (the default): on every state move (so after every step) and on
      pause/play;
    - ``WAITING_AND_TERMINAL``: when a process starts waiting, is paused, or terminates;
    - ``TERMINAL``: only when it terminates;
    - ``NEVER``.
    """

    EVERY_TRANSITION = "every transition"
    WAITING_AND_TERMINAL = "waiting and terminal"
    TERMINAL = "terminal"
    NEVER = "never"


# -- process -> checkpoint ---------------------------------------------------------------------


def _state_data(data: StateData) -> dict[str, Any]:
    match data:
        case Running(step=step, args=args, kwargs=kwargs):
            return {"step": step, "args": list(args), "kwargs": dict(kwargs)}
        case Waiting(next_step=next_step, message=message):
            return {"next_step": next_step, "message": message}
        case Finished(result=result, successful=successful):
            return {"result": result, "successful": successful}
        case Excepted(type_name=type_name, message=message, traceback=traceback):
            return {"type_name": type_name, "message": message, "traceback": traceback}
        case Killed(message=message):
            return {"message": message}
        case _:
            return {}


def _awaiting(process: Process) -> list[dict[str, Any]]:
    # while waiting, and after the wait until the results are in ctx (``_children_done``)
    awaited = getattr(process, "_awaiting", None)
    if not awaited or process.state.terminal:
        return []
    out = []
    for a in awaited:
        target = a.target
        pid = target.pid if isinstance(target, Process) else getattr(target, "pid", None)
        if not isinstance(pid, str):
            raise NotCheckpointableError(
                f"process {process.pid} waits for {target!r} in ctx key {a.key!r}, which is not "
                "a process: only children can be re-attached after a reload"
            )
        out.append({"kind": "process", "pid": pid, "key": a.key, "append": a.append})
    return out


def checkpoint_of(process: Process) -> Checkpoint:
    """A checkpoint of ``process`` as it is now (between steps).

    Raises:
        NotCheckpointableError: a step is running, or the process waits on something other
            than child processes.
        CheckpointEncodeError: its class can't be reloaded (defined inside a function).
    """
    if process._stepping:
        raise NotCheckpointableError(f"process {process.pid} is in the middle of a step")
    machine = process._machine
    ctx = getattr(process, "ctx", None)
    if ctx is not None:
        ctx = ctx._data.copy() if type(ctx) is AttributesDict else dict(ctx)
    cursor = getattr(process, "_cursor", None)
    return Checkpoint(
        pid=process.pid,
        process_class=class_identifier(type(process)),
        state=machine.state.value,
        state_data=_state_data(machine.data),
        paused=machine.paused,
        # plain: load_process validates (and freezes) again
        inputs=process.inputs.to_dict(),
        outputs=process.outputs.to_dict(),
        ctx=ctx,
        cursor=None if cursor is None else tuple(cursor),
        awaiting=tuple(_awaiting(process)),
        exit_code=process.exit_code,
        saved_at=time.time(),
    )


# -- checkpoint -> process ---------------------------------------------------------------------


def _record(checkpoint: Checkpoint) -> StateData:
    data = checkpoint.state_data
    try:
        match checkpoint.state:
            case "created":
                return Created()
            case "running":
                return Running(
                    str(data["step"]), tuple(data.get("args", ())), dict(data.get("kwargs", {}))
                )
            case "waiting":
                return Waiting(str(data["next_step"]), data.get("message"))
            case "finished":
                return Finished(data.get("result"), bool(data.get("successful", True)))
            case "excepted":
                return Excepted(
                    str(data["type_name"]), str(data["message"]), str(data.get("traceback", ""))
                )
            case "killed":
                return Killed(data.get("message"))
    except (KeyError, TypeError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint of pid {checkpoint.pid!r} has bad {checkpoint.state} state data: {exc!r}"
        ) from None
    raise CorruptCheckpointError(  # pragma: no cover - Checkpoint checks the state
        f"checkpoint of pid {checkpoint.pid!r} has unknown state {checkpoint.state!r}"
    )


def _method(process: Process, name: str, pid: str) -> Any:
    if name.startswith("__") or not callable(getattr(type(process), name, None)):
        raise CorruptCheckpointError(
            f"checkpoint of pid {pid!r} names {name!r}, which is not a method of "
            f"{type(process).__qualname__}"
        )
    return getattr(process, name)


def load_process(checkpoint: Checkpoint, *, loader: ClassLoader | None = None) -> Process:
    """Rebuild the process a checkpoint describes (not launched; no hook runs).

    A WorkChain that waited on children knows them by pid only; launching it
    (``runner.launch(process)``) finds them again: those running in that runner are
    re-attached, the others are continued from the runner's persister, and without one the
    launch raises :class:`ChildrenNotFoundError` at once. :func:`continue_process` does all of
    it from any persister.

    Args:
        checkpoint: what :func:`checkpoint_of` took.
        loader: resolves ``process_class``; only allowed module prefixes are imported.

    Raises:
        ForbiddenClassError: the class's module is not allowed by the loader.
        UnknownClassError: the class can't be found.
        CorruptCheckpointError: the checkpoint doesn't fit the class (a step name it lacks, inputs
            that no longer validate).
    """
    loader = loader if loader is not None else ClassLoader()
    cls = loader.load(checkpoint.process_class, pid=checkpoint.pid, base=Process)
    try:
        inputs = cls.spec().validate_inputs(_plain(checkpoint.inputs))
    except PortValidationError as exc:
        raise CorruptCheckpointError(
            f"checkpoint of pid {checkpoint.pid!r}: inputs don't fit {cls.__qualname__}: {exc}"
        ) from None
    record = _record(checkpoint)
    machine = ProcessStateMachine(record, paused=checkpoint.paused)
    process = cls._restore(inputs=inputs, pid=checkpoint.pid, machine=machine)
    outputs = _plain(checkpoint.outputs)
    if outputs:
        process._outputs = dict(outputs)
    if isinstance(record, Running):
        process._next_call = (
            _method(process, record.step, checkpoint.pid),
            record.args,
            record.kwargs,
        )
    elif isinstance(record, Waiting):
        process._wait_next = _method(process, record.next_step, checkpoint.pid)
    _restore_workchain(process, checkpoint)
    return process


def _plain(value: Any) -> Any:
    """``value`` with every mapping in it (not inside lists) turned into a new plain dict."""
    kind = type(value)
    if kind is dict and set(map(type, value.values())) <= _NOT_MAPPINGS:
        return value.copy()  # the common case, in one C call
    if kind is AttributesFrozenDict:
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


_ATOMS: Final = frozenset({str, int, float, bool, type(None), AttributesFrozenDict, tuple})


def _containers_copied(value: Any) -> Any:
    """``value`` with every ``dict`` and ``list`` in it copied (other values are shared)."""
    kind = type(value)
    if kind is dict:
        copied = value.copy()
        for key, item in copied.items():
            item_kind = type(item)
            if item_kind is list or item_kind is dict:
                copied[key] = _containers_copied(item)  # same keys: iterating stays valid
        return copied
    if kind is list:
        if set(map(type, value)) <= _ATOMS:
            return value.copy()  # the common case, in one C call
        return [_containers_copied(item) for item in value]
    return value


def _restore_workchain(process: Process, checkpoint: Checkpoint) -> None:
    from ..workchain._workchain import AttributesDict, WorkChain, _Awaited, _PendingChild

    if not isinstance(process, WorkChain):
        return
    # copied: the process changes its ctx (appends to lists), and a checkpoint is a value
    process.ctx = AttributesDict(_containers_copied(checkpoint.ctx) if checkpoint.ctx else {})
    if checkpoint.cursor is not None:
        process._cursor = tuple(checkpoint.cursor)
    process._awaiting = [
        _Awaited(str(d["key"]), _PendingChild(str(d["pid"])), bool(d.get("append", False)))
        for d in checkpoint.awaiting
    ]


# -- the checkpointer --------------------------------------------------------------------------

_WAITING_AND_TERMINAL: Final = frozenset(
    {
        "on_process_waiting",
        "on_process_paused",
        "on_process_finished",
        "on_process_excepted",
        "on_process_killed",
    }
)
_TERMINAL: Final = frozenset({"on_process_finished", "on_process_excepted", "on_process_killed"})


@final
class Checkpointer(ProcessListener):
    """Takes checkpoints of the processes it listens to and saves them, in order.

    A runner given a persister makes one and attaches it to every process it launches. The
    checkpoint is taken synchronously, in the process's loop, at the moment of the transition;
    a saver task (spawned through ``spawn`` when there is work, gone when there is none)
    writes them. Errors (an output that can't be encoded, a full disk) are logged with the pid
    and kept in :attr:`errors`; the process goes on.

    Args:
        persister: where checkpoints go.
        spawn: starts the saver task (the runner's task group).
        policy: when to take checkpoints.
    """

    def __init__(
        self,
        persister: Persister,
        spawn: Any,
        policy: CheckpointPolicy = CheckpointPolicy.EVERY_TRANSITION,
    ) -> None:
        self.persister = persister
        self.policy = policy
        self.errors: list[tuple[str, Exception]] = []
        self.saved = 0
        self._spawn = spawn
        self._queue: dict[str, bytes] = {}
        self._saving = False
        self._idle: anyio.Event | None = None

    def _wants(self, event: str) -> bool:
        policy = self.policy
        if policy is CheckpointPolicy.EVERY_TRANSITION:
            return True
        if policy is CheckpointPolicy.WAITING_AND_TERMINAL:
            return event in _WAITING_AND_TERMINAL
        if policy is CheckpointPolicy.TERMINAL:
            return event in _TERMINAL
        return False

    def take(self, process: Process) -> None:
        """Take a checkpoint of ``process`` now and queue it for saving."""
        try:
            # encoding is the snapshot: later changes (a ctx list growing) can't leak into it
            data = self.persister.codec.encode(checkpoint_of(process))
        except Exception as exc:
            logger.error("can't checkpoint process %s: %s", process.pid, exc)
            self.errors.append((process.pid, exc))
            return
        # only the newest checkpoint of a process waiting to be written matters
        self._queue.pop(process.pid, None)
        self._queue[process.pid] = data
        if not self._saving:
            self._saving = True
            self._spawn(self._save_all, name="checkpoints")

    def _event(self, event: str, process: Process) -> None:
        if self._wants(event):
            self.take(process)

    def on_process_running(self, process: Process) -> None:
        self._event("on_process_running", process)

    def on_process_waiting(self, process: Process) -> None:
        self._event("on_process_waiting", process)

    def on_process_paused(self, process: Process) -> None:
        self._event("on_process_paused", process)

    def on_process_played(self, process: Process) -> None:
        self._event("on_process_played", process)

    def on_process_finished(self, process: Process, outputs: Mapping[str, Any]) -> None:
        self._event("on_process_finished", process)

    def on_process_excepted(self, process: Process, reason: str) -> None:
        self._event("on_process_excepted", process)

    def on_process_killed(self, process: Process, message: str | None) -> None:
        self._event("on_process_killed", process)

    async def flush(self) -> None:
        """Wait until every checkpoint taken so far is written."""
        if self._saving:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
        else:
            await anyio.lowlevel.checkpoint()

    async def _save_all(self) -> None:
        try:
            while self._queue:
                pid = next(iter(self._queue))
                data = self._queue.pop(pid)
                try:
                    await self.persister.save_encoded(pid, None, data)
                    self.saved += 1
                except Exception as exc:
                    logger.error("saving checkpoint of process %s failed: %s", pid, exc)
                    self.errors.append((pid, exc))
        finally:
            self._saving = False
            idle, self._idle = self._idle, None
            if idle is not None:
                idle.set()


# -- continuing --------------------------------------------------------------------------------


async def continue_process(
    runner: Runner,
    persister: Persister,
    pid: str,
    *,
    tag: str | None = None,
    loader: ClassLoader | None = None,
) -> Process:
    """Load process ``pid`` from ``persister`` and launch it in ``runner``.

    A process already running in ``runner`` is returned as is. A terminal one is loaded (its
    result and outputs are there) but not launched. A waiting WorkChain re-attaches to its
    children by pid, continuing each child the same way first.

    Raises:
        CheckpointNotFoundError: no checkpoint of ``pid`` (and ``tag``).
        ChildrenNotFoundError: a WorkChain waits for children that don't run in ``runner``
            and of which ``persister`` holds no checkpoint; nothing of it was launched.
        CheckpointError: the checkpoint can't be loaded (see :func:`load_process`).
    """
    running = runner.processes.get(pid)
    if running is not None:
        return running
    checkpoint = await persister.load_checkpoint(pid, tag)
    process = load_process(checkpoint, loader=loader)
    if process.has_terminated():
        return process
    await continue_children(process, runner, persister, loader=loader)
    runner.launch(process)  # waits again on what it waited for
    return process


async def continue_children(
    process: Process,
    runner: Runner,
    persister: Persister | None,
    *,
    loader: ClassLoader | None = None,
) -> None:
    """Find the children a WorkChain rebuilt from a checkpoint knows only by pid: each is the
    process of that pid running in ``runner``, or is continued there from ``persister`` (see
    :func:`continue_process`). Anything else is left alone.

    Raises:
        ChildrenNotFoundError: some children don't run in ``runner``, and ``persister`` is
            ``None`` or holds no checkpoint of them.
    """
    from ..workchain._workchain import _PendingChild

    awaited = getattr(process, "_awaiting", None)
    if not awaited or not any(type(a.target) is _PendingChild for a in awaited):
        return
    found: dict[str, Process] = {}
    missing: list[tuple[str, str]] = []
    for entry in awaited:
        target = entry.target
        if type(target) is not _PendingChild or target.pid in found:
            continue
        child = runner.processes.get(target.pid)
        if child is None and persister is not None:
            try:
                child = await continue_process(runner, persister, target.pid, loader=loader)
            except CheckpointNotFoundError:
                child = None
        if child is None:
            missing.append((entry.key, target.pid))
        else:
            found[target.pid] = child
    if missing:
        reason = _NO_PERSISTER if persister is None else _NOT_PERSISTED
        raise ChildrenNotFoundError(process.pid, missing, reason)
    process._awaiting = [  # type: ignore[attr-defined]
        attrs.evolve(entry, target=found[entry.target.pid])
        if type(entry.target) is _PendingChild
        else entry
        for entry in awaited
    ]


def reattach_children(process: Process, runner: Runner) -> None:
    """Before ``runner`` launches a process rebuilt from a checkpoint: re-attach a WorkChain
    to the children it knows by pid that run in ``runner``; those that don't are continued
    from the runner's persister once it runs (:func:`continue_children`).

    Raises:
        ChildrenNotFoundError: some children don't run in ``runner``, which has no persister.
    """
    from ..workchain._workchain import _PendingChild

    awaited = getattr(process, "_awaiting", None)
    if not awaited or not any(type(a.target) is _PendingChild for a in awaited):
        return
    running = runner.processes
    resolved = []
    missing: list[tuple[str, str]] = []
    for entry in awaited:
        target = entry.target
        if type(target) is _PendingChild:
            child = running.get(target.pid)
            if child is not None:
                entry = attrs.evolve(entry, target=child)
            elif (entry.key, target.pid) not in missing:
                missing.append((entry.key, target.pid))
        resolved.append(entry)
    if missing and runner.persister is None:
        raise ChildrenNotFoundError(process.pid, missing, _NO_PERSISTER)
    process._awaiting = resolved  # type: ignore[attr-defined]
