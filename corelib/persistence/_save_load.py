"""Checkpointing live processes, and bringing them back.

Theory of operation
-------------------
:func:`checkpoint_of` turns a process at a step boundary into a plain
:class:`~corelib.Checkpoint`: its state record (already plain data: the next step's *name* and
arguments, the waiting continuation's name, the result...), paused flag, inputs, outputs, and
what its class saves of itself through the checkpoint protocol,
:meth:`~corelib.Process.save_instance_state` (a WorkChain: its context, outline cursor and the
children it awaits, by pid).

:func:`load_process` does the reverse without running any hook (``on_create`` ran when the
process was first created): the class comes from a :class:`~corelib.ClassLoader` (allowed
module prefixes only), step names are bound again (real steps only: they will be called), the
saved state goes back through :meth:`~corelib.Process.load_instance_state`, and the process is
ready to be launched. Whatever is wrong with a checkpoint raises a
:class:`~corelib.CheckpointError` naming the pid and the field, never an untyped error.

**The protocol.** A process class turns its own extra state into a dict of plain data and
back; this module maps that dict onto the record and knows no subclass's internals. The keys
``ctx`` (a mapping), ``cursor`` (a sequence of ints) and ``awaiting`` (a sequence of mappings)
go to the record's fields of those names, where WorkChain checkpoints have always kept them;
every other key goes to ``instance_state``. Loading rebuilds the same dict (a key whose field
is empty is left out) and hands the process its own copy of every dict and list in it.

:class:`Checkpointer` is what a :class:`~corelib.Runner` given a persister attaches to each
process: after every transition (and pause/play) it takes the checkpoint at once, in the
process's loop, and hands the encoded bytes to one saver task that writes them in order. A
crash can lose the last few checkpoints, never leave a torn one (the persisters write
atomically), and every checkpoint is a consistent step boundary, so continuing from it gives
the same results as an uninterrupted run whenever the steps themselves are deterministic.

Continuing a process (loading it and launching it in a runner, children first) is the runner
layer's job: :func:`~corelib.continue_process` and ``corelib.runner.continue_children``.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import time
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.lowlevel

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
from ._checkpoint import Checkpoint, CheckpointError, CorruptCheckpointError, _short
from ._loader import ClassLoader, class_identifier

if TYPE_CHECKING:
    from ._persisters import Persister

__all__ = [
    "CheckpointPolicy",
    "Checkpointer",
    "checkpoint_of",
    "load_process",
    "NotCheckpointableError",
    "ChildrenNotFoundError",
]

logger = logging.getLogger("corelib.persistence")


class NotCheckpointableError(CheckpointError):
    """Raised when a process can't be checkpointed now (mid-step, or waiting on something
    that is not a process), or can't be re-attached to what it was waiting for."""


@final
class ChildrenNotFoundError(NotCheckpointableError):
    """Raised when a WorkChain rebuilt from a checkpoint while it waited on children can't find
    them: they don't run in the runner it is launched in, and they can't be continued from a
    persister (the runner has none, or it holds no checkpoint of them).

    Raised at once by :meth:`~corelib.Runner.launch` when the runner has no persister (nothing
    is launched), by :func:`~corelib.continue_process` before anything is launched, and
    otherwise (the runner's persister turns out to lack a checkpoint) it is what the WorkChain
    excepts with.

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


#: The keys of ``save_instance_state`` that have record fields of their own.
_FIELD_KEYS: Final = frozenset({"ctx", "cursor", "awaiting"})


def checkpoint_of(process: Process) -> Checkpoint:
    """A checkpoint of ``process`` as it is now (between steps).

    What the process's class keeps beyond every process's fields comes from its
    :meth:`~corelib.Process.save_instance_state` (see the module docstring for where each key
    goes). The record may share values nested in it (a list in a WorkChain's context) with
    the live process: encode it, or copy it with :meth:`~corelib.CheckpointCodec.copy`,
    before the process takes its next step (the runner's checkpointer encodes at once).

    Raises:
        NotCheckpointableError: a step is running, or the process can't save its state now
            (a WorkChain waiting on something other than child processes).
        CheckpointEncodeError: its class can't be reloaded (defined inside a function).
    """
    if process._stepping:
        raise NotCheckpointableError(f"process {process.pid} is in the middle of a step")
    machine = process._machine
    state = process.save_instance_state()
    if state:
        ctx = state.get("ctx")
        cursor = state.get("cursor")
        awaiting = state.get("awaiting", ())
        extra = (
            {}
            if _FIELD_KEYS.issuperset(state)
            else {key: value for key, value in state.items() if key not in _FIELD_KEYS}
        )
    else:
        ctx = cursor = None
        awaiting = ()
        extra = {}
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
        cursor=cursor,
        awaiting=awaiting,
        instance_state=extra,
        exit_code=process.exit_code,
        saved_at=time.time(),
    )


# -- checkpoint -> process ---------------------------------------------------------------------


def _record(checkpoint: Checkpoint) -> StateData:
    """The state record a checkpoint's ``state`` and ``state_data`` describe.

    Raises:
        CorruptCheckpointError: a field the state needs is missing or of the wrong type.
    """
    data = checkpoint.state_data
    state = checkpoint.state
    get = data.get
    match state:
        case "created":
            return Created()
        case "running":
            step, args, kwargs = get("step"), get("args", ()), get("kwargs", _EMPTY)
            if (
                type(step) is str
                and type(args) in _SEQUENCES
                and type(kwargs) is dict
                and (not kwargs or set(map(type, kwargs)) == _STR)
            ):
                return Running(step, tuple(args), kwargs.copy())
        case "waiting":
            next_step, message = get("next_step"), get("message")
            if type(next_step) is str and type(message) in _STR_OR_NONE:
                return Waiting(next_step, message)
        case "finished":
            successful = get("successful", True)
            if type(successful) is bool:
                return Finished(get("result"), successful)
        case "excepted":
            type_name, message, traceback = get("type_name"), get("message"), get("traceback", "")
            if type(type_name) is str and type(message) is str and type(traceback) is str:
                return Excepted(type_name, message, traceback)
        case "killed":
            message = get("message")
            if type(message) in _STR_OR_NONE:
                return Killed(message)
    problem = _state_data_problem(state, data)
    if problem is not None:
        raise CorruptCheckpointError(problem, pid=checkpoint.pid)
    # not the exact types above, but fitting ones (a str subclass, a read-only mapping...)
    values = {key: data.get(key, default) for key, (_, _, default) in _STATE_DATA[state].items()}
    match state:
        case "running":
            return Running(str(values["step"]), tuple(values["args"]), dict(values["kwargs"]))
        case "waiting":
            message = values["message"]
            return Waiting(str(values["next_step"]), None if message is None else str(message))
        case "finished":
            return Finished(data.get("result"), bool(values["successful"]))
        case "excepted":
            return Excepted(
                str(values["type_name"]), str(values["message"]), str(values["traceback"])
            )
    message = values["message"]
    return Killed(None if message is None else str(message))


_EMPTY: Final[Mapping[str, Any]] = {}
_SEQUENCES: Final = frozenset({list, tuple})
_STR: Final = frozenset({str})
_STR_OR_NONE: Final = frozenset({str, type(None)})
# What each state needs of ``state_data``: key -> (allowed types, their description, default).
_REQUIRED: Final = object()
_STATE_DATA: Final[Mapping[str, Mapping[str, tuple[tuple[type, ...], str, Any]]]] = {
    "running": {
        "step": ((str,), "a string", _REQUIRED),
        "args": ((list, tuple), "a list", ()),
        "kwargs": ((Mapping,), "an object with string keys", _EMPTY),
    },
    "waiting": {
        "next_step": ((str,), "a string", _REQUIRED),
        "message": ((str, type(None)), "a string or null", None),
    },
    "finished": {"successful": ((bool,), "a boolean", True)},
    "excepted": {
        "type_name": ((str,), "a string", _REQUIRED),
        "message": ((str,), "a string", _REQUIRED),
        "traceback": ((str,), "a string", ""),
    },
    "killed": {"message": ((str, type(None)), "a string or null", None)},
}


def _state_data_problem(state: str, data: Mapping[str, Any]) -> str | None:
    """What is wrong with ``state_data`` for ``state``, or ``None``."""
    if state not in _STATE_DATA:  # pragma: no cover - Checkpoint checks the state
        return f"state {state!r} is not a process state"
    for key, (kinds, description, default) in _STATE_DATA[state].items():
        value = data.get(key, default)
        if value is _REQUIRED:
            return f"{state} state_data has no {key!r}"
        if not isinstance(value, kinds) or (
            isinstance(value, Mapping) and not all(type(name) is str for name in value)
        ):
            return f"{state} state_data {key!r} must be {description}, got {_short(value)}"
    return None


def _step(process: Process, name: str, field: str, pid: str) -> Any:
    """The bound method a checkpoint's ``field`` (``step``, ``next_step``) names.

    The process calls it when it goes on (a running step with arguments from the
    checkpoint), so only real steps are accepted: the names the class's ``_checkpoint_steps``
    returns (a WorkChain: ``run``, its outline's steps and the internal ``_step`` and
    ``_children_done``), or, for a class that declares none, the default rule: ``run``, or a
    plain function (sync or ``async``) defined by the process's own classes. Anything
    ``Process`` itself has (``kill``, ``pause``, ``_fail``, the hooks, dunder names) is
    refused, and so are properties, static and class methods, and attributes that are not
    functions.

    Raises:
        CorruptCheckpointError: naming the pid, the field and the step.
    """
    cls = type(process)
    if (cls, name) not in _known_steps:
        problem = _step_problem(cls, name)
        if problem is not None:
            raise CorruptCheckpointError(f"state_data {field} names {name!r}, {problem}", pid=pid)
        _known_steps.add((cls, name))
    return getattr(process, name)


# (class, name) of the steps found so far (a few per class; refused names are not kept)
_known_steps: set[tuple[type[Process], str]] = set()


def _step_problem(cls: type[Process], name: str) -> str | None:
    """Why ``name`` is not a step of ``cls`` (see :func:`_step`), or ``None``."""
    if name.startswith("__"):
        return "which is not a method a checkpoint may call"
    steps = cls._checkpoint_steps()
    if steps is not None:
        return None if name in steps else f"which is not a step of {cls.__qualname__}"
    if name == "run":
        return None
    if hasattr(Process, name):
        return "which is a method of Process itself, not a step"
    if not isinstance(_class_attribute(cls, name), types.FunctionType):
        return f"which is not a method of {cls.__qualname__}"
    return None


def _arguments_problem(step: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """Why ``step(*args, **kwargs)`` can't be called, by its signature; else ``None``."""
    function = getattr(step, "__func__", None)  # (a step a class lists may be any callable)
    if function is None:
        return None
    return _call_problem(function, len(args), tuple(kwargs) if kwargs else ())


@functools.lru_cache(maxsize=1024)
def _call_problem(
    function: Callable[..., Any], positional: int, names: tuple[str, ...]
) -> str | None:
    """Why the method ``function`` can't take ``positional`` arguments and keyword arguments
    ``names``; binding depends on nothing else, so each answer is worked out once."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # no signature to check against
        return None
    try:
        signature.bind(None, *range(positional), **dict.fromkeys(names))
    except TypeError as exc:
        return str(exc)
    return None


def _class_attribute(cls: type, name: str) -> Any:
    """``name`` as the first class in ``cls``'s MRO defines it (no descriptor is run)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def load_process(checkpoint: Checkpoint, *, loader: ClassLoader | None = None) -> Process:
    """Rebuild the process a checkpoint describes (not launched; no hook runs).

    The process's own state goes back through its
    :meth:`~corelib.Process.load_instance_state`. A WorkChain that waited on children knows
    them by pid only; launching it (``runner.launch(process)``) finds them again: those
    running in that runner are re-attached, the others are continued from the runner's
    persister, and without one the launch raises :class:`ChildrenNotFoundError` at once.
    :func:`~corelib.continue_process` does all of it from any persister.

    The step a checkpoint names (``state_data`` ``step`` or ``next_step``) is called when the
    process goes on, so it must be a real step: ``run``, or a plain function the process's
    own classes define, never a method of ``Process`` itself (``kill``, ``_fail``, hooks); a
    WorkChain's must be ``run``, one of its outline's steps, ``_step`` or ``_children_done``.
    A running step's arguments must fit its signature.

    Args:
        checkpoint: what :func:`checkpoint_of` took.
        loader: resolves ``process_class``; only allowed module prefixes are imported.

    Raises:
        ForbiddenClassError: the class's module is not allowed by the loader.
        UnknownClassError: the class can't be found.
        CorruptCheckpointError: the checkpoint doesn't fit the class: its spec can't be built,
            a state field is missing or of the wrong type, a step it names is not a step of
            the class (see :func:`_step`: loading calls it), inputs that no longer validate,
            values nested too deeply, saved state its ``load_instance_state`` refuses (with
            this error, or a ``KeyError``, ``TypeError`` or ``ValueError``).
    """
    loader = loader if loader is not None else ClassLoader()
    pid = checkpoint.pid
    cls = loader.load(checkpoint.process_class, pid=pid, base=Process)
    try:
        spec = cls.spec()
    except Exception as exc:  # e.g. WorkChain itself: no outline
        raise CorruptCheckpointError(
            f"process_class {checkpoint.process_class!r} can't be loaded, its spec fails:"
            f" {type(exc).__name__}: {exc}",
            pid=pid,
        ) from exc
    try:
        inputs = spec.validate_inputs(_nested(_plain, checkpoint.inputs, "inputs", pid))
    except PortValidationError as exc:
        raise CorruptCheckpointError(
            f"checkpoint of pid {pid!r}: inputs don't fit {cls.__qualname__}: {exc}"
        ) from None
    record = _record(checkpoint)
    machine = ProcessStateMachine(record, paused=checkpoint.paused)
    process = cls._restore(inputs=inputs, pid=pid, machine=machine)
    outputs = _nested(_plain, checkpoint.outputs, "outputs", pid)
    if outputs:
        process._outputs = dict(outputs)
    if isinstance(record, Running):
        step = _step(process, record.step, "step", pid)
        problem = _arguments_problem(step, record.args, record.kwargs)
        if problem is not None:
            raise CorruptCheckpointError(
                f"state_data args don't fit step {record.step!r}: {problem}", pid=pid
            )
        process._next_call = (step, record.args, record.kwargs)
    elif isinstance(record, Waiting):
        process._wait_next = _step(process, record.next_step, "next_step", pid)
    state = _nested(_instance_state, checkpoint, "saved state", pid)
    try:
        process.load_instance_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint of pid {checkpoint.pid!r}: its saved state doesn't fit "
            f"{cls.__qualname__}: {exc!r}"
        ) from None
    return process


def _nested(copy: Callable[[Any], Any], value: Any, what: str, pid: str) -> Any:
    """``copy(value)``; a value nested too deeply for that recursion can't be loaded, and
    says so with a typed error instead of a ``RecursionError``."""
    try:
        return copy(value)
    except RecursionError:
        raise CorruptCheckpointError(f"{what} nested too deeply to load", pid=pid) from None


def _instance_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """What the process's ``save_instance_state`` returned, for ``load_instance_state``.

    Its dicts and lists are copies: the process may change them (a WorkChain's ctx grows),
    and a checkpoint is a value (two processes loaded from one share nothing they change).
    """
    state: dict[str, Any] = {}
    if checkpoint.ctx is not None:
        state["ctx"] = checkpoint.ctx
    if checkpoint.cursor is not None:
        state["cursor"] = checkpoint.cursor
    if checkpoint.awaiting:
        state["awaiting"] = checkpoint.awaiting
    if checkpoint.instance_state:
        state.update(checkpoint.instance_state)
    return _containers_copied(state) if state else state


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
        # Only the newest checkpoint of a process waiting to be written matters. Its place:
        # a checkpoint that waits for children goes last, after theirs (each child's first
        # checkpoint was taken when the parent's step launched it); any other keeps the place
        # of the one it replaces, so a child never moves behind a parent waiting for it. So a
        # parent's waiting checkpoint is never written before its children's first ones.
        queue, pid = self._queue, process.pid
        if pid in queue and getattr(process, "awaiting", None):
            del queue[pid]
        queue[pid] = data
        if not self._saving:
            self._saving = True
            self._spawn(self._save_all, name="checkpoints")

    def discard(self, pid: str) -> None:
        """Drop the checkpoint of ``pid`` taken but not written yet (a write under way
        finishes); for a process given up here because it goes on elsewhere, whose
        checkpoints written late could overwrite newer ones."""
        self._queue.pop(pid, None)

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
        # A group commit: everything queued since the last write goes in one
        # ``save_many`` (one transaction or append where the persister can), and
        # whatever is queued meanwhile goes in the next.
        try:
            while self._queue:
                batch = list(self._queue.items())
                self._queue.clear()
                try:
                    await self.persister.save_many([(pid, None, data) for pid, data in batch])
                    self.saved += len(batch)
                except Exception:
                    await self._save_each(batch)  # find the saves that fail; keep the rest
        finally:
            self._saving = False
            idle, self._idle = self._idle, None
            if idle is not None:
                idle.set()

    async def _save_each(self, batch: list[tuple[str, bytes]]) -> None:
        for pid, data in batch:
            if pid in self._queue:
                continue  # a newer checkpoint of it is queued already
            try:
                await self.persister.save_encoded(pid, None, data)
                self.saved += 1
            except Exception as exc:
                logger.error("saving checkpoint of process %s failed: %s", pid, exc)
                self.errors.append((pid, exc))
