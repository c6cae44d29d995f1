"""WorkChains: processes whose steps follow a declared outline, with a context and children.

A WorkChain declares ``spec.outline(...)`` in ``define``. Each outline step is one process step:
between two of them the process can be paused, killed or checkpointed. The position in the
outline is a plain-data cursor (see :mod:`corelib.workchain._outline`), so a WorkChain can be
saved and
continued anywhere, including while it waits on children.

What a step returns decides what happens next:

- ``None``: go on with the outline;
- :class:`ToContext` (or earlier calls of :meth:`WorkChain.to_context`): wait until every
  awaited child has terminated, store its outputs in ``self.ctx``, then go on;
- an :class:`~corelib.ExitCode` or any other value: end the WorkChain with it (non-zero exit
  codes are unsuccessful), as plumpy does.

A child that excepts or is killed makes the step that awaited it fail with
:class:`ChildProcessFailedError`, so the WorkChain excepts too (plumpy propagates child
exceptions the same way).

Checkpoints: the WorkChain saves its context, cursor and the children it awaits (by pid)
through the process's checkpoint protocol (:meth:`WorkChain.save_instance_state` /
:meth:`WorkChain.load_instance_state`). One rebuilt from a checkpoint while it waited knows
its children by pid only (:attr:`WorkChain.pending_children`) until the runner that launches it
re-attaches them (:meth:`WorkChain.attach_children`); that is the runner layer's job
(``corelib.runner``), which this layer does not import.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Any, ClassVar, Final, final

import anyio
import attrs

from ..persistence._checkpoint import CorruptCheckpointError
from ..persistence._save_load import ChildrenNotFoundError, NotCheckpointableError
from ..process._errors import ProcessError
from ..process._process import Process
from ..process._spec import ProcessSpec
from ..process._states import Continue, ProcessState, Wait
from ._outline import (
    DONE,
    Block,
    CompiledOutline,
    Cursor,
    Evaluate,
    InvalidCursorError,
    OutlineError,
    Returned,
    RunStep,
    condition_names,
    if_,
    return_,
    step_names,
    to_node,
    while_,
)

__all__ = [
    "WorkChain",
    "WorkChainSpec",
    "ToContext",
    "append_",
    "AttributesDict",
    "ChildProcessFailedError",
    "if_",
    "while_",
    "return_",
]


class ChildProcessFailedError(ProcessError):
    """Raised in a WorkChain step when a child it awaited excepted or was killed."""

    def __init__(self, key: str, pid: str, state: ProcessState, reason: str) -> None:
        super().__init__(f"child {key!r} (pid {pid}) {state.value}: {reason}")
        self.key = key
        self.pid = pid
        self.state = state
        self.reason = reason


@final
class AttributesDict(MutableMapping[str, Any]):
    """A dict whose keys are also attributes: ``ctx.total`` is ``ctx['total']``."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"ctx has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._data[name]
        except KeyError:
            raise AttributeError(f"ctx has no key {name!r}") from None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"AttributesDict({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        """A shallow plain-dict copy."""
        return dict(self._data)


@final
@attrs.frozen
class _Append:
    value: Any


def append_(awaitable: Any) -> _Append:
    """In :class:`ToContext`, append the result to a list in ``ctx`` instead of setting it."""
    return _Append(awaitable)


@final
@attrs.frozen(init=False)
class ToContext:
    """Returned by a step: wait for the given children, then store their outputs in ``ctx``.

    ``ToContext(child=proc)`` sets ``ctx.child``; ``ToContext(runs=append_(proc))`` appends to
    the list ``ctx.runs`` (created if missing). Values are processes (launched with
    ``self.submit``) or, for waits that need not survive a checkpoint, other awaitables.
    """

    entries: Mapping[str, Any]

    def __init__(self, **entries: Any) -> None:
        self.__attrs_init__(dict(entries))


@final
@attrs.frozen
class _Awaited:
    key: str
    target: Any
    append: bool


@final
@attrs.frozen
class _PendingChild:
    """A child known only by pid, in a WorkChain just loaded from a checkpoint; replaced by
    the child process itself when the WorkChain is continued."""

    pid: str
    # launched through the task queue (``submit_remote``): its own task carries it on,
    # so whoever continues the WorkChain waits for it there instead of continuing it
    remote: bool = False


_NOT_ATTACHED = (
    "which nothing re-attached: launch it with Runner.launch, or continue it with "
    "continue_process(runner, persister, pid)"
)


class WorkChainSpec(ProcessSpec):
    """A process spec with an outline."""

    def __init__(self) -> None:
        super().__init__()
        self._outline: Block | None = None
        self._compiled: CompiledOutline | None = None

    def outline(self, *instructions: Any) -> None:
        """Declare the outline: methods, ``if_``, ``while_``, ``return_``, in order."""
        if self.sealed:
            raise OutlineError("spec is sealed, can't set the outline")
        self._outline = Block(tuple(to_node(i) for i in instructions))

    def get_outline(self) -> Block | None:
        """The outline, or ``None`` if none was declared."""
        return self._outline

    @property
    def compiled_outline(self) -> CompiledOutline:
        """The outline with memoized navigation (built on first use)."""
        compiled = self._compiled
        if compiled is None:
            if self._outline is None:
                raise OutlineError("no outline was declared")
            compiled = self._compiled = CompiledOutline(self._outline)
        return compiled


class WorkChain(Process):
    """A process that runs the steps of its outline, with a context (``self.ctx``).

    Declare the outline in ``define``::

        class Sum(WorkChain):
            @classmethod
            def define(cls, spec):
                super().define(spec)
                spec.input("n", valid_type=int)
                spec.output("total", valid_type=int)
                spec.outline(cls.setup, while_(cls.more)(cls.add), cls.finalize)

    Steps and conditions may be sync or ``async`` methods taking only ``self``.
    """

    _SPEC_ATTRIBUTE: ClassVar[str] = "_corelib_workchain_spec"
    # Set on each class by ``_navigator`` (read from the class's own ``__dict__`` only).
    _corelib_compiled_outline: ClassVar[CompiledOutline | None] = None
    # Set on each class by ``_checkpoint_steps`` (likewise).
    _corelib_checkpoint_steps: ClassVar[frozenset[str] | None] = None

    @classmethod
    def spec(cls) -> WorkChainSpec:
        """Return this class's sealed :class:`WorkChainSpec`, built once on first use.

        Raises:
            OutlineError: no outline was declared, or it names a method the class lacks.
        """
        cached = cls.__dict__.get(cls._SPEC_ATTRIBUTE)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        spec = WorkChainSpec()
        cls.define(spec)
        outline = spec.get_outline()
        if outline is None:
            raise OutlineError(f"{cls.__qualname__} declares no outline")
        for name in sorted(step_names(outline) | condition_names(outline)):
            if hasattr(WorkChain, name):
                raise OutlineError(
                    f"{cls.__qualname__} can't use {name!r} in its outline: "
                    "the name is taken by WorkChain itself"
                )
            if not callable(getattr(cls, name, None)):
                raise OutlineError(
                    f"{cls.__qualname__} has no method {name!r} named in its outline"
                )
        spec.seal()
        setattr(cls, cls._SPEC_ATTRIBUTE, spec)
        return spec

    def _setup(self, *args: Any) -> None:
        self.ctx = AttributesDict()
        self._cursor: Cursor = ()
        self._awaiting: list[_Awaited] = []
        # what the awaitables in _awaiting gave, by id(_Awaited): awaited while WAITING (so a
        # parent awaiting a remote child holds no worker slot), handed over by _children_done
        self._resolved: dict[int, tuple[bool, Any]] = {}
        # finds the children still pending when they are needed (set by the launching runner)
        self._find_rest: Callable[[WorkChain], Awaitable[None]] | None = None
        super()._setup(*args)

    @property
    def cursor(self) -> Cursor:
        """The position of the next outline instruction (plain data)."""
        return self._cursor

    @property
    def awaiting(self) -> tuple[tuple[str, Any, bool], ...]:
        """What the WorkChain waits for: ``(ctx key, process or awaitable, append)``."""
        return tuple((a.key, a.target, a.append) for a in self._awaiting)

    # -- the checkpoint protocol --------------------------------------------------------------

    def save_instance_state(self) -> dict[str, Any]:
        """The context, the outline cursor and the children awaited, as plain data.

        ``{"ctx": dict, "cursor": tuple of ints, "awaiting": [{"kind": "process", "pid": ...,
        "key": ctx key, "append": bool}, ...]}``, plus what the base class saves. The children
        are awaited while the WorkChain waits, and after the wait until their results are in
        ``ctx``; a terminal WorkChain awaits nothing.

        Raises:
            NotCheckpointableError: it awaits something that is not a process (an event, a
                coroutine), which could not be re-attached after a reload.
        """
        state = super().save_instance_state()
        ctx = self.ctx
        state["ctx"] = ctx._data.copy() if type(ctx) is AttributesDict else dict(ctx)
        state["cursor"] = self._cursor
        state["awaiting"] = self._saved_awaiting() if self._awaiting else []
        return state

    def _saved_awaiting(self) -> list[dict[str, Any]]:
        awaited = self._awaiting
        if self.state.terminal:
            return []
        out = []
        for a in awaited:
            target = a.target
            pid = target.pid if isinstance(target, Process) else getattr(target, "pid", None)
            if not isinstance(pid, str):
                raise NotCheckpointableError(
                    f"process {self.pid} waits for {target!r} in ctx key {a.key!r}, which is not "
                    "a process: only children can be re-attached after a reload"
                )
            kind = "remote" if _is_remote(target) else "process"
            out.append({"kind": kind, "pid": pid, "key": a.key, "append": a.append})
        return out

    def load_instance_state(self, state: Mapping[str, Any]) -> None:
        """Take back the context, cursor and awaited children :meth:`save_instance_state`
        saved (on a WorkChain rebuilt from a checkpoint, before it is launched).

        Awaited children come back as pids (:attr:`pending_children`) until the runner that
        launches the WorkChain re-attaches them (:meth:`attach_children`).

        Raises:
            CorruptCheckpointError: the cursor does not point at an instruction of the
                outline (it may be empty only before ``run``), or an awaited child's record
                is not ``{"kind": "process", "pid": str, "key": str, "append": bool}``.
        """
        super().load_instance_state(state)
        ctx = state.get("ctx")
        if ctx is not None and type(ctx) is not dict and not isinstance(ctx, Mapping):
            raise CorruptCheckpointError(
                f"ctx must be an object, got {type(ctx).__name__}", pid=self.pid
            )
        cursor = state.get("cursor")
        cursor = tuple(cursor) if cursor else ()
        if cursor:
            try:
                self._navigator().locate(cursor)
            except InvalidCursorError as exc:
                raise CorruptCheckpointError(str(exc), pid=self.pid) from None
        else:
            data = self._machine.data
            next_step = getattr(data, "step", None) or getattr(data, "next_step", None)
            if next_step is not None and next_step != "run":  # not before run, nor terminal
                raise CorruptCheckpointError(
                    f"cursor is empty, but the next step is {next_step!r}", pid=self.pid
                )
        awaiting = state.get("awaiting")
        self.ctx = AttributesDict(ctx or {})
        self._cursor = cursor
        self._awaiting = (
            [_loaded_awaited(i, record, self.pid) for i, record in enumerate(awaiting)]
            if awaiting
            else []
        )

    @classmethod
    def _checkpoint_steps(cls) -> frozenset[str]:
        """``run``, the internal steps (``_step``: the next outline instruction,
        ``_children_done``: after a wait) and the outline's steps: what a checkpoint of a
        WorkChain may name as its next step (see :meth:`Process._checkpoint_steps`)."""
        steps: frozenset[str] | None = cls.__dict__.get("_corelib_checkpoint_steps")
        if steps is None:
            outline = cls.spec().compiled_outline.outline
            steps = cls._corelib_checkpoint_steps = _INTERNAL_STEPS | step_names(outline)
        return steps

    @property
    def pending_children(self) -> tuple[tuple[str, str], ...]:
        """``(ctx key, pid)`` of every awaited child known by pid only: the WorkChain was
        rebuilt from a checkpoint, and its runner has not re-attached that child yet."""
        return tuple(
            (a.key, a.target.pid)
            for a in self._awaiting
            if type(a.target) is _PendingChild and not a.target.remote
        )

    @property
    def pending_remote_children(self) -> tuple[tuple[str, str], ...]:
        """``(ctx key, pid)`` of every awaited child launched through the task queue and
        known by pid only: its own task carries it on (on whatever worker), so whoever
        continues the WorkChain re-attaches it as a remote process (the launcher does),
        never continues it itself."""
        return tuple(
            (a.key, a.target.pid)
            for a in self._awaiting
            if type(a.target) is _PendingChild and a.target.remote
        )

    def attach_children(
        self,
        children: Mapping[str, Process],
        *,
        find_rest: Callable[[WorkChain], Awaitable[None]] | None = None,
    ) -> None:
        """Re-attach pending children (see :attr:`pending_children`) to their processes.

        For runners: ``Runner.launch`` and ``continue_process`` call it. A pending child whose
        pid is not in ``children`` stays pending; ``find_rest`` is then awaited, with the
        WorkChain, once the WorkChain needs its children (it must attach them, or raise).
        Without ``find_rest``, a WorkChain that still has pending children when it needs them
        excepts with :class:`~corelib.ChildrenNotFoundError`.

        Args:
            children: processes by pid (others than those pending are ignored).
            find_rest: what finds the children still pending.
        """
        self._find_rest = find_rest
        if not children:
            return
        self._awaiting = [
            attrs.evolve(entry, target=children[entry.target.pid])
            if type(entry.target) is _PendingChild and entry.target.pid in children
            else entry
            for entry in self._awaiting
        ]

    # -- helpers for steps --------------------------------------------------------------------

    def to_context(self, **entries: Any) -> None:
        """Wait for these children once the current step ends (like returning ToContext)."""
        for key, value in entries.items():
            if isinstance(value, _Append):
                self._awaiting.append(_Awaited(key, value.value, True))
            else:
                self._awaiting.append(_Awaited(key, value, False))

    def exposed_inputs(
        self, process_class: type[Process], namespace: str | None = None
    ) -> dict[str, Any]:
        """The inputs that were exposed from ``process_class`` (under ``namespace``)."""
        return type(self).spec().exposed_inputs(self.inputs, process_class, namespace)

    def exposed_outputs(
        self,
        outputs: Mapping[str, Any],
        process_class: type[Process],
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """The subset of ``outputs`` (e.g. a child's) exposed from ``process_class``."""
        return type(self).spec().exposed_outputs(outputs, process_class, namespace)

    def _restored_awaitable(self) -> Any:
        """What a WorkChain loaded while waiting on children waits for again."""
        return self._wait_for_children if self._awaiting else None

    # -- the outline driver -------------------------------------------------------------------

    def _navigator(self) -> CompiledOutline:
        # The compiled outline is cached on the class itself (each class has its own spec,
        # hence its own entry in its own ``__dict__``), so a step costs one dict lookup.
        cls = type(self)
        nav: CompiledOutline | None = cls.__dict__.get("_corelib_compiled_outline")
        if nav is None:
            nav = cls._corelib_compiled_outline = cls.spec().compiled_outline
        return nav

    def run(self) -> Any:
        """Start the outline (the first process step)."""
        self._cursor = self._navigator().start
        return self._step()

    def _step(self) -> Any:
        """Carry out outline instructions up to and including one step; return its command.

        Sync as long as the steps and conditions are; the first awaitable one hands over to
        :meth:`_step_async` (the driver awaits the coroutine this then returns).
        """
        nav = self._navigator()
        while True:
            instruction = nav.locate(self._cursor)
            if type(instruction) is Evaluate:
                answer = getattr(self, instruction.name)()
                if type(answer) is not bool:
                    if inspect.isawaitable(answer):
                        return self._step_async(nav, answer)
                    answer = _truth(instruction.name, answer)
                self._cursor = nav.advance(self._cursor, answer)
                continue
            if type(instruction) is RunStep:
                result = getattr(self, instruction.name)()
                if result is None:
                    self._cursor = nav.advance(self._cursor)
                    if self._awaiting:
                        return self._after_outline_step(None)
                    return Continue(self._step)
                if inspect.isawaitable(result):
                    return self._step_async(nav, result)
                self._cursor = nav.advance(self._cursor)
                return self._after_outline_step(result)
            if type(instruction) is Returned:
                return instruction.exit_code
            assert instruction is DONE
            return None

    async def _step_async(self, nav: CompiledOutline, pending: Any) -> Any:
        """Like :meth:`_step`, after ``pending`` (what the instruction at the cursor returned)."""
        while True:
            instruction = nav.locate(self._cursor)
            if pending is None:
                if isinstance(instruction, Evaluate | RunStep):
                    pending = getattr(self, instruction.name)()
                elif type(instruction) is Returned:
                    return instruction.exit_code
                else:
                    return None
            value = await pending if inspect.isawaitable(pending) else pending
            pending = None
            if type(instruction) is Evaluate:
                self._cursor = nav.advance(self._cursor, _truth(instruction.name, value))
                continue
            self._cursor = nav.advance(self._cursor)
            return self._after_outline_step(value)

    def _after_outline_step(self, result: Any) -> Any:
        if isinstance(result, ToContext):
            self.to_context(**result.entries)
        elif result is not None:
            self._awaiting.clear()
            return result  # ends the WorkChain with it
        if self._awaiting:
            return Wait(self._wait_for_children, self._children_done, message=self._waiting_for())
        return Continue(self._step)

    def _waiting_for(self) -> str:
        keys = ", ".join(sorted({a.key for a in self._awaiting}))
        return f"waiting for {keys}"

    async def _find_children(self) -> None:
        """Find the children still known only by pid (the WorkChain was rebuilt from a
        checkpoint; those running in its runner were re-attached when it was launched), with
        what the runner gave :meth:`attach_children`."""
        if not any(type(a.target) is _PendingChild for a in self._awaiting):
            return
        find_rest = self._find_rest
        if find_rest is None:
            raise ChildrenNotFoundError(self.pid, list(self.pending_children), _NOT_ATTACHED)
        self._find_rest = None
        await find_rest(self)

    async def _wait_for_children(self) -> None:
        await self._find_children()
        for awaited in tuple(self._awaiting):
            target = awaited.target
            if isinstance(target, Process):
                await target.wait()
            elif inspect.isawaitable(target):
                # awaited here, in WAITING (a remote child may take long); what it gives or
                # raises is handed to _children_done, so a failure still fails that step
                try:
                    self._resolved[id(awaited)] = (True, await target)
                except Exception as exc:
                    self._resolved[id(awaited)] = (False, exc)
            elif isinstance(target, anyio.Event):
                await target.wait()

    async def _children_done(self, _value: Any = None) -> Any:
        await self._find_children()
        for awaited in tuple(self._awaiting):
            value = await self._result_of(awaited)
            if awaited.append:
                existing = self.ctx.get(awaited.key)
                if existing is None:
                    self.ctx[awaited.key] = [value]
                else:
                    existing.append(value)
            else:
                self.ctx[awaited.key] = value
        self._awaiting.clear()
        self._resolved.clear()
        return Continue(self._step)

    async def _result_of(self, awaited: _Awaited) -> Any:
        target = awaited.target
        if isinstance(target, Process):
            await target.wait()
            state = target.state
            if state is ProcessState.FINISHED:
                return target.outputs
            data = target.state_data
            reason = getattr(data, "message", None) or state.value
            type_name = getattr(data, "type_name", None)
            if type_name:
                reason = f"{type_name}: {reason}"
            raise ChildProcessFailedError(awaited.key, target.pid, state, str(reason))
        if isinstance(target, anyio.Event):
            await target.wait()
            return None
        resolved = self._resolved.pop(id(awaited), None)
        if resolved is not None:
            ok, value = resolved
            if ok:
                return value
            raise value
        if inspect.isawaitable(target):
            return await target
        raise TypeError(f"can't wait for {target!r} in context key {awaited.key!r}")


#: The steps of every WorkChain besides its outline's: ``run`` starts the outline, ``_step``
#: carries out the next outline instructions, ``_children_done`` collects awaited children.
_INTERNAL_STEPS: Final = frozenset({"run", "_step", "_children_done"})


def _loaded_awaited(index: int, record: Any, pid: str) -> _Awaited:
    """An awaited child from a checkpoint's ``awaiting[index]``, known by pid only."""
    if (
        isinstance(record, Mapping)
        and record.get("kind", "process") in ("process", "remote")
        and isinstance(record.get("pid"), str)
        and record["pid"]
        and isinstance(record.get("key"), str)
        and isinstance(record.get("append", False), bool)
    ):
        child = _PendingChild(record["pid"], remote=record.get("kind") == "remote")
        return _Awaited(record["key"], child, record.get("append", False))
    text = repr(record)
    text = text if len(text) <= 60 else text[:57] + "..."
    raise CorruptCheckpointError(
        f"awaiting[{index}] must be a child process record, got {text}", pid=pid
    )


def _is_remote(target: Any) -> bool:
    """A child launched through the task queue: awaitable, known by pid, not a local
    process (a ``RemoteProcess``; this layer can't import it), or one still pending."""
    if type(target) is _PendingChild:
        return target.remote
    return not isinstance(target, Process)


def _truth(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    try:
        return bool(value)
    except Exception as exc:
        raise TypeError(f"condition {name!r} returned {value!r}, which has no truth value") from exc
