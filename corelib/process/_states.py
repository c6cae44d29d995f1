"""The process state machine: states, events, the transition table and control decisions.

Theory of operation
-------------------

This module is sans-IO: it imports no async library, runs no user code and never waits. The
async driver (``_driver.py``) feeds it events and does whatever waiting and calling is needed.

Rule 1: every legal state move lives in :data:`TRANSITIONS`, in this file. Other modules ask
this file (through :class:`ProcessStateMachine`) and never decide a move on their own. That is
why the module stays whole at about 800 lines: it is the one table of rule 1 (moves, flags and
control decisions), and splitting it would split the table.

Rule 2: behaviour never lives on state classes. Per-state data are frozen records
(:class:`Created`, :class:`Running`, :class:`Waiting`, :class:`Finished`, :class:`Excepted`,
:class:`Killed`) made only of plain data, so that a process can be rebuilt from its class, pid,
state record, paused flag, inputs and outputs.

There are three machines, the main one and two orthogonal ones (as h11 keeps keep-alive beside
its connection state):

* the **state** machine, six states with plumpy's values. A move happens only through an event
  whose type has an entry in the current state's row of :data:`TRANSITIONS`. An illegal event
  raises :class:`InvalidTransitionError` naming event and state, and changes nothing. The three
  terminal states have empty rows: a terminal state is never left.
* the **paused** flag, set by :class:`Pause` and cleared by :class:`Play` in any non-terminal
  state. Entering a terminal state clears it (plumpy leaves it set, which makes a killed process
  look paused forever).
* the **control** decisions of :func:`decide`: what a pause, play, kill or force-kill request
  does given the state, the paused flag, and whether a step is running or a request is already
  pending. The driver acts on the returned :class:`Decision`; the table is pure so it can be
  tested exhaustively without an event loop.

The events that a step returns to drive the next move (:class:`Continue`, :class:`Wait`,
:class:`Kill`) are the same classes the machine consumes, so there is one vocabulary. They may
carry live objects (the next step's bound method, an awaitable); the machine only records the
*names* of steps in the state records.
"""

from __future__ import annotations

import enum
import inspect
import time
import traceback as _traceback
from collections.abc import Callable, Mapping
from types import FunctionType, MappingProxyType, MethodType
from typing import Any, Final, TypeAlias, final

import attrs

from ._errors import InvalidTransitionError, InvalidWaitError

__all__ = [
    # states and their data
    "ProcessState",
    "TERMINAL_STATES",
    "Created",
    "Running",
    "Waiting",
    "Finished",
    "Excepted",
    "Killed",
    "StateData",
    "state_of",
    # events
    "Event",
    "Start",
    "Continue",
    "Wait",
    "Resume",
    "Finish",
    "Fail",
    "Kill",
    "Pause",
    "Play",
    "NO_VALUE",
    "TRANSITIONS",
    "FLAG_EVENTS",
    "EVENT_TYPES",
    # the machine
    "Transition",
    "ProcessStateMachine",
    # control decisions
    "Request",
    "Action",
    "Decision",
    "decide",
]


# --------------------------------------------------------------------------------------------
# States


@final
class ProcessState(enum.Enum):
    """The six states of a process (the values are plumpy's)."""

    CREATED = "created"
    RUNNING = "running"
    WAITING = "waiting"
    FINISHED = "finished"
    EXCEPTED = "excepted"
    KILLED = "killed"

    # Members are singletons compared by identity, so identity hashing is consistent with
    # equality; it is a C-level hash, where Enum's default hashes the name in Python (states are
    # dictionary keys on every transition).
    __hash__ = object.__hash__

    @property
    def terminal(self) -> bool:
        """Whether the state is terminal (FINISHED, EXCEPTED or KILLED)."""
        return self in TERMINAL_STATES


TERMINAL_STATES: Final = frozenset(
    {ProcessState.FINISHED, ProcessState.EXCEPTED, ProcessState.KILLED}
)


_NO_KWARGS: Final[Mapping[str, Any]] = MappingProxyType({})


def _read_only(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    if not mapping:
        return _NO_KWARGS
    return MappingProxyType(dict(mapping))


@final
@attrs.frozen
class Created:
    """State data of a process that has not started yet."""


@final
@attrs.frozen
class Running:
    """State data of a running process.

    Attributes:
        step: the name of the step function being (or about to be) called.
        args: positional arguments for the step.
        kwargs: keyword arguments for the step.
    """

    step: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(default=_NO_KWARGS, converter=_read_only)


@final
@attrs.frozen
class Waiting:
    """State data of a process waiting to be resumed.

    Attributes:
        next_step: the name of the step called (with the resume value, if any) on resume.
        message: an optional human-readable description of what is awaited.
    """

    next_step: str
    message: str | None = None


@final
@attrs.frozen
class Finished:
    """State data of a finished process.

    Attributes:
        result: what ``run()`` or the last step returned (an ``ExitCode`` or any value).
        successful: ``False`` for a non-zero exit code or missing required outputs.
    """

    result: Any
    successful: bool = True


@final
@attrs.frozen
class Excepted:
    """State data of a process that ended with an exception.

    The exception itself is not kept here (it is not plain data); its type name, message and
    formatted traceback are.

    Attributes:
        type_name: the exception type's name, e.g. ``"ValueError"``.
        message: ``str()`` of the exception.
        traceback: the formatted traceback text.
    """

    type_name: str
    message: str
    traceback: str = ""


@final
@attrs.frozen
class Killed:
    """State data of a killed process.

    Attributes:
        message: the kill message, or ``None``.
    """

    message: str | None = None


StateData: TypeAlias = Created | Running | Waiting | Finished | Excepted | Killed

_STATE_OF_DATA: Final[Mapping[type[Any], ProcessState]] = MappingProxyType(
    {
        Created: ProcessState.CREATED,
        Running: ProcessState.RUNNING,
        Waiting: ProcessState.WAITING,
        Finished: ProcessState.FINISHED,
        Excepted: ProcessState.EXCEPTED,
        Killed: ProcessState.KILLED,
    }
)


def state_of(data: StateData) -> ProcessState:
    """Return the state that a state record describes."""
    return _STATE_OF_DATA[type(data)]


# Records are immutable values, so the common ones are shared.
_CREATED: Final = Created()
_RUNNING_RUN: Final = Running("run")


# --------------------------------------------------------------------------------------------
# Events


@final
class _NoValue(enum.Enum):
    NO_VALUE = "NO_VALUE"

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Final = _NoValue.NO_VALUE
"""Marks a resume without a value: the next step is then called without arguments."""


class Event:
    """Base class of the events the state machine consumes."""

    __slots__ = ()


def _step_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)


@final
@attrs.frozen
class Start(Event):
    """Start a created process: CREATED -> RUNNING (the ``run`` step)."""


@final
@attrs.frozen(init=False)
class Continue(Event):
    """Returned by a step to run another step next: RUNNING -> RUNNING.

    ``Continue(self.next_step, 1, flag=True)`` calls ``self.next_step(1, flag=True)``; unlike
    plumpy, keyword arguments are kept.

    Args:
        fn: the next step, normally a (sync or async) method of the process.
        *args: positional arguments for ``fn``.
        **kwargs: keyword arguments for ``fn``.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    def __init__(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self.__attrs_init__(fn, args, MappingProxyType(kwargs) if kwargs else _NO_KWARGS)


@final
@attrs.frozen(init=False)
class Wait(Event):
    """Returned by a step to wait: RUNNING -> WAITING; later ``Resume`` calls ``next_step``.

    ``Wait(awaitable_or_None, next_step, message=None)``: what to wait *for* comes first, then
    the step to go on with. plumpy's command is ``Wait(continue_fn=None, msg=None, data=None)``
    and has no awaitable (a plumpy process waits until someone calls ``resume``), so
    ``plumpy.Wait(self.next_step, "msg")`` is ``Wait(None, self.next_step, "msg")`` here;
    plumpy's ``data`` (handed to ``on_wait``) has no counterpart.

    The arguments are checked when the ``Wait`` is built, so a mix-up fails at the line that
    made it (inside a step, the process excepts with the error) rather than later, in the task
    that awaits: see :class:`~corelib.InvalidWaitError`. That a non-callable awaitable is
    something the driver can await is checked when the step returns it.

    Args:
        awaitable: what to wait for, or ``None`` to wait for ``process.resume(value)``. The
            driver understands an ``anyio.Event`` (resumes without a value), a ``Process``
            (resumes with the process once it terminated), an ``anyio.Future`` or any other
            awaitable (resumes with its result), or an async callable that takes no arguments
            (called, awaited, resumes with its result). If it raises, the process excepts.
        next_step: the step to call on resume, with the resume value as its single argument
            unless there is no value.
        message: an optional human-readable description of what is awaited.

    Raises:
        InvalidWaitError: ``next_step`` is not callable (e.g. the arguments are swapped, or in
            plumpy's order), or ``awaitable`` is a plain (not async) callable, or an async
            function that needs arguments (did you mean to call it?).
    """

    awaitable: object
    next_step: Callable[..., Any]
    message: str | None = None

    def __init__(
        self,
        awaitable: object,
        next_step: Callable[..., Any] | None = None,
        message: str | None = None,
    ) -> None:
        # the common cases, cheaply: nothing to wait for or an awaitable object, then a step
        # (``next_step`` defaults to ``None`` only so that plumpy's ``Wait(self.step)`` gets
        # the error below, not Python's "missing argument")
        if not callable(next_step) or (awaitable is not None and callable(awaitable)):
            next_step = _checked_wait(awaitable, next_step)
        self.__attrs_init__(awaitable, next_step, message)


_CO_COROUTINE: Final = inspect.CO_COROUTINE

_PLUMPY_ORDER: Final = (
    "the order is Wait(awaitable_or_None, next_step, message); plumpy's "
    "Wait(continue_fn, msg, data) is Wait(None, continue_fn, msg) here"
)


def _checked_wait(awaitable: object, next_step: object) -> Callable[..., Any]:
    """Return ``next_step``, or raise :class:`InvalidWaitError` if ``Wait(awaitable,
    next_step)`` can't be a wait."""
    if _async_method_of_self_only(awaitable) and callable(next_step):
        return next_step  # the common case, cheaply (a WorkChain's wait for its children)
    if inspect.isawaitable(awaitable):
        problem = None  # awaitable, even if callable too
    elif callable(awaitable):
        problem = _callable_awaitable_problem(awaitable)
    else:
        problem = None  # checked by the driver (it knows what it can await)
    if not callable(next_step):
        if callable(awaitable) and _awaitable_like(next_step):
            problem = "they are swapped: the awaitable comes first, then the step"
        elif next_step is None and callable(awaitable):
            problem = f"the step to go on with is missing; {_PLUMPY_ORDER}"
        else:
            problem = f"next_step is not callable; {_PLUMPY_ORDER}"
    if problem is None:
        assert callable(next_step)
        return next_step
    message = (
        f"Wait got awaitable={_describe(awaitable)} and next_step={_describe(next_step)}: {problem}"
    )
    # An unstarted coroutine in the arguments would be reported as never awaited.
    _close_unstarted(awaitable)
    _close_unstarted(next_step)
    raise InvalidWaitError(message, awaitable, next_step)


def _async_method_of_self_only(fn: object) -> bool:
    """Whether ``fn`` is a bound ``async def`` method that takes only ``self``."""
    if type(fn) is not MethodType:
        return False
    func = fn.__func__
    if type(func) is not FunctionType:
        return False
    code = func.__code__
    return (
        bool(code.co_flags & _CO_COROUTINE)
        and code.co_argcount == 1
        and not (code.co_kwonlyargcount)
    )


def _callable_awaitable_problem(fn: Callable[..., Any]) -> str | None:
    """What is wrong with ``fn`` as the thing to wait for, or ``None``."""
    if not _is_async_callable(fn):
        return (
            "awaitable is a plain (not async) callable; pass an awaitable, an async function "
            f"that takes no arguments, or None to wait for resume(); {_PLUMPY_ORDER}"
        )
    missing = _missing_arguments(fn)
    if missing:
        name = getattr(fn, "__name__", "awaitable")
        return (
            f"awaitable is an async function that needs arguments ({', '.join(missing)}), "
            f"not an awaitable: did you mean to call it, Wait({name}(...), next_step)?"
        )
    return None


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):  # functions, methods, partials of them
        return True
    # an object whose class defines ``async def __call__``
    return inspect.iscoroutinefunction(type(fn).__call__)


def _missing_arguments(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The parameters a call of ``fn`` without arguments lacks (``()`` if unknown)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - some builtins have none
        return ()
    empty = inspect.Parameter.empty
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return tuple(
        p.name
        for p in signature.parameters.values()
        if p.default is empty and p.kind not in variadic
    )


def _awaitable_like(value: object) -> bool:
    """Whether ``value`` looks like what a ``Wait`` awaits (an awaitable, or an object with an
    async ``wait()``: an event, a process, a future)."""
    if inspect.isawaitable(value):
        return True
    return inspect.iscoroutinefunction(getattr(value, "wait", None))


def _describe(value: object) -> str:
    if isinstance(value, FunctionType | MethodType):
        return value.__qualname__
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _close_unstarted(value: object) -> None:
    if inspect.iscoroutine(value) and inspect.getcoroutinestate(value) == "CORO_CREATED":
        value.close()


@final
@attrs.frozen
class Resume(Event):
    """Resume a waiting process: WAITING -> RUNNING (the waiting record's ``next_step``).

    Attributes:
        value: passed as the single argument of the next step, unless it is ``NO_VALUE``.
    """

    value: Any = NO_VALUE


@final
@attrs.frozen
class Finish(Event):
    """Finish the process: RUNNING or WAITING -> FINISHED."""

    result: Any = None
    successful: bool = True


@final
@attrs.frozen
class Fail(Event):
    """The process failed: any non-terminal state -> EXCEPTED."""

    type_name: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> Fail:
        """Describe ``exc`` as plain data (type name, message, formatted traceback)."""
        return cls(type(exc).__name__, str(exc), "".join(_traceback.format_exception(exc)))


@final
@attrs.frozen
class Kill(Event):
    """Kill the process: any non-terminal state -> KILLED. A step may return it too."""

    message: str | None = None


@final
@attrs.frozen
class Pause(Event):
    """Set the orthogonal paused flag (any non-terminal state; idempotent)."""

    message: str | None = None


@final
@attrs.frozen
class Play(Event):
    """Clear the orthogonal paused flag (any non-terminal state; idempotent)."""


_C, _R, _W = ProcessState.CREATED, ProcessState.RUNNING, ProcessState.WAITING
_F, _E, _K = ProcessState.FINISHED, ProcessState.EXCEPTED, ProcessState.KILLED

TRANSITIONS: Final[Mapping[ProcessState, Mapping[type[Event], ProcessState]]] = MappingProxyType(
    {
        _C: MappingProxyType({Start: _R, Kill: _K, Fail: _E}),
        _R: MappingProxyType({Continue: _R, Wait: _W, Finish: _F, Kill: _K, Fail: _E}),
        _W: MappingProxyType({Resume: _R, Finish: _F, Kill: _K, Fail: _E}),
        _F: MappingProxyType({}),
        _E: MappingProxyType({}),
        _K: MappingProxyType({}),
    }
)
"""Every legal state move: ``TRANSITIONS[state][type(event)] -> new state``."""

# The same table as plain dicts, for the machine's hot path (no proxy indirection).
_TRANSITIONS: Final = {state: dict(row) for state, row in TRANSITIONS.items()}

FLAG_EVENTS: Final = frozenset({Pause, Play})
"""Events that change the paused flag, not the state; legal in every non-terminal state."""

EVENT_TYPES: Final[Mapping[str, type[Event]]] = MappingProxyType(
    {t.__name__: t for t in (Start, Continue, Wait, Resume, Finish, Fail, Kill, Pause, Play)}
)
"""Every event type by name (the names recorded in :class:`Transition`)."""


# --------------------------------------------------------------------------------------------
# The machine


@final
@attrs.frozen
class Transition:
    """One recorded state move.

    Attributes:
        from_state: the state before the move.
        to_state: the state after it.
        event: the name of the event type that caused it (a key of :data:`EVENT_TYPES`).
        time: wall-clock time of the move (``time.time()``, seconds since the epoch), so that
            it is meaningful in a checkpoint or a status reply outside the process's loop.
    """

    from_state: ProcessState
    to_state: ProcessState
    event: str
    time: float


_STATE_OF_VALUE: Final = {state.value: state for state in ProcessState}


def _transition(move: tuple[str, str, str, float]) -> Transition:
    old, new, event, time = move
    return Transition(_STATE_OF_VALUE[old], _STATE_OF_VALUE[new], event, time)


@final
class ProcessStateMachine:
    """The state of one process plus its orthogonal paused flag, and their history.

    Feed it events with :meth:`process` (or :meth:`apply`, which does not build the
    :class:`Transition` record). It never runs user code.

    Args:
        data: the initial state record (``Created()`` for a new process; another record when
            rebuilding a process from a checkpoint).
        paused: the initial paused flag (ignored for a terminal ``data``).
        clock: returns the time stamped on each :class:`Transition`.
    """

    # The history is kept as plain tuples (cheap to make on every move); the
    # :class:`Transition` records are built when it is read.
    __slots__ = ("_clock", "_data", "_history", "_paused", "_state")

    def __init__(
        self,
        data: StateData | None = None,
        *,
        paused: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._data: StateData = _CREATED if data is None else data
        self._state: ProcessState = state_of(self._data)
        self._paused = paused and not self._state.terminal
        self._clock = clock
        # (from value, to value, cause, time): only atomic values, so CPython stops tracking
        # the tuples for the cyclic collector (a waiting process costs it less)
        self._history: list[tuple[str, str, str, float]] = []

    def __repr__(self) -> str:
        paused = ", paused" if self._paused else ""
        return f"<ProcessStateMachine {self._state.name}{paused}>"

    @property
    def state(self) -> ProcessState:
        """The current state."""
        return self._state

    @property
    def data(self) -> StateData:
        """The current state's record."""
        return self._data

    @property
    def paused(self) -> bool:
        """The orthogonal paused flag; always ``False`` in a terminal state."""
        return self._paused

    @property
    def history(self) -> tuple[Transition, ...]:
        """Every move made so far, oldest first."""
        return tuple(_transition(move) for move in self._history)

    @property
    def first_move_time(self) -> float | None:
        """The wall-clock time of the first move (``None`` before any)."""
        return self._history[0][3] if self._history else None

    @property
    def moves(self) -> int:
        """The number of moves made so far (``len(history)``, without building it)."""
        return len(self._history)

    def next_state(self, event: Event) -> ProcessState:
        """Return the state ``event`` would move to, without moving.

        Raises:
            InvalidTransitionError: the event is not legal in the current state.
        """
        state = self._state
        if type(event) in FLAG_EVENTS:
            if state in TERMINAL_STATES:
                raise InvalidTransitionError(type(event).__name__, state.name)
            return state
        try:
            return _TRANSITIONS[state][type(event)]
        except KeyError:
            raise InvalidTransitionError(type(event).__name__, state.name) from None

    def process(self, event: Event) -> Transition | None:
        """Apply ``event``.

        Returns:
            The recorded :class:`Transition`, or ``None`` for a flag event (pause/play).

        Raises:
            InvalidTransitionError: the event is not legal in the current state; nothing
                changed.
        """
        moves = len(self._history)
        self.apply(event)
        if len(self._history) == moves:
            return None
        return _transition(self._history[-1])

    def apply(self, event: Event) -> ProcessState:
        """Apply ``event`` like :meth:`process`, but return only the new state.

        Raises:
            InvalidTransitionError: the event is not legal in the current state; nothing
                changed.
        """
        new_state = self.next_state(event)
        event_type = type(event)
        if event_type is Pause:
            self._paused = True
            return new_state
        if event_type is Play:
            self._paused = False
            return new_state
        old_state = self._state
        self._data = self._record_for(event)
        self._state = new_state
        if new_state in TERMINAL_STATES:
            # State-triggered rule: a terminal state is never paused.
            self._paused = False
        self._history.append(
            (old_state._value_, new_state._value_, event_type.__name__, self._clock())
        )
        return new_state

    def _record_for(self, event: Event) -> StateData:
        if type(event) is Continue:  # the common move, without the match below
            return Running(_step_name(event.fn), event.args, event.kwargs)
        match event:
            case Start():
                return _RUNNING_RUN
            case Continue(fn=fn, args=args, kwargs=kwargs):
                return Running(_step_name(fn), args, kwargs)
            case Wait(next_step=next_step, message=message):
                return Waiting(_step_name(next_step), message)
            case Resume(value=value):
                assert isinstance(self._data, Waiting)
                args = () if value is NO_VALUE else (value,)
                return Running(self._data.next_step, args)
            case Finish(result=result, successful=successful):
                return Finished(result, successful)
            case Fail(type_name=type_name, message=message, traceback=traceback):
                return Excepted(type_name, message, traceback)
            case Kill(message=message):
                return Killed(message)
        raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Control decisions


@final
class Request(enum.Enum):
    """A control request made of a process."""

    PAUSE = "pause"
    PLAY = "play"
    KILL = "kill"
    FORCE_KILL = "force kill"


@final
class Action(enum.Enum):
    """What the driver does with a control request."""

    REFUSE = "refuse"
    """Nothing can be done; the outcome is *not done*."""
    NOTHING = "nothing"
    """The process is already as requested; the outcome is *done* at once."""
    NOW = "now"
    """Act at once; the outcome is *done* at once."""
    DEFER = "defer"
    """A step is running: act when it ends (a kill also cancels the step at its next await)."""
    CANCEL_PENDING_PAUSE = "cancel pending pause"
    """Play while a pause waits for the step to end: drop that pause; the outcome is *done*."""


@final
@attrs.frozen
class Decision:
    """The driver's instructions for one control request.

    Attributes:
        action: what to do.
        reason: the outcome's reason if the request is settled at once; for ``DEFER`` a
            description of what is awaited.
    """

    action: Action
    reason: str


def decide(
    request: Request,
    state: ProcessState,
    *,
    paused: bool,
    stepping: bool,
    pause_pending: bool = False,
    kill_pending: bool = False,
) -> Decision:
    """Decide what a control request does. Pure; the driver carries out the decision.

    ``stepping`` means a step (user code) is running right now; that is only ever the case in
    RUNNING and never while paused. The table, by request:

    ========== =================== ========================================================
    request    condition           decision
    ========== =================== ========================================================
    any        terminal            REFUSE ("process already <state>")
    pause      kill pending        REFUSE ("kill pending")
    pause      paused              NOTHING ("already paused")
    pause      stepping            DEFER until the step ends
    pause      otherwise           NOW (WAITING keeps waiting, paused; see the driver)
    play       paused              NOW ("played")
    play       pause pending       CANCEL_PENDING_PAUSE ("pause cancelled")
    play       otherwise           NOTHING ("not paused")
    kill       stepping            DEFER: cancel the step at its next await, KILLED at its end
    kill       otherwise           NOW ("killed"; interrupts WAITING and a paused process)
    force kill any non-terminal    NOW ("killed"; a running step is cancelled and ignored)
    ========== =================== ========================================================
    """
    if state.terminal:
        return Decision(Action.REFUSE, f"process already {state.value}")
    match request:
        case Request.PAUSE:
            if kill_pending:
                return Decision(Action.REFUSE, "kill pending")
            if paused:
                return Decision(Action.NOTHING, "already paused")
            if stepping:
                return Decision(Action.DEFER, "pause at step end")
            return Decision(Action.NOW, "paused")
        case Request.PLAY:
            if paused:
                return Decision(Action.NOW, "played")
            if pause_pending:
                return Decision(Action.CANCEL_PENDING_PAUSE, "pause cancelled")
            return Decision(Action.NOTHING, "not paused")
        case Request.KILL:
            if stepping:
                return Decision(Action.DEFER, "kill at step end")
            return Decision(Action.NOW, "killed")
        case Request.FORCE_KILL:
            return Decision(Action.NOW, "killed")
