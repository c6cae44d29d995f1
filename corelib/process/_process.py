"""The Process base class: user hooks plus the driver around the sans-IO state machine.

Theory of operation
-------------------

A process owns a :class:`~corelib.process._states.ProcessStateMachine`. Everything here is
synchronous
and may be called from any task of the process's loop (never from another thread), except the
two coroutines that await user code: :meth:`Process._drive` and the watcher of a wait.

**Advancing.** :meth:`Process._advance` is the heart of the driver and it never awaits. It moves
the process as far as it can go without waiting, up to a step boundary:

* **paused**, or **WAITING** and not yet resumed, or **terminal** -> nothing to do: it says
  *let go* (``False``);
* **CREATED** -> apply ``Start``; the next step is ``run``;
* **WAITING**, resumed -> apply ``Resume`` (or ``Fail`` if the awaited thing raised);
* **RUNNING** -> call the next step. A sync step runs to its end here; what it returned is
  mapped to an event and applied, then a pending pause. The answer is *go on after a yield*
  (``True``) unless the process can't go on. An ``async`` step is not run: its coroutine is
  returned, for a driver that can await it.

**Drivers.** Whoever advances a process is its driver (``statistics().driving``); there is at
most one at a time. A driver calls ``_advance`` again after a yield (``checkpoint``), so that
long chains of sync steps share the loop fairly, but not after the last step of a process
that has terminated. The drivers are:

* the runner's **pump**, one task per :class:`~corelib.Runner` that advances the queued
  processes round-robin, one step boundary per turn, and yields after each round (so every
  process still yields between two of its steps). It drives every submitted process, so a
  process made of sync steps costs no task of its own. When ``_advance`` returns a coroutine,
  the pump hands the process to a new task of the runner that runs :meth:`Process._drive`;
* :meth:`Process._drive`, which awaits an async step inside a cancel scope (created only for
  async steps: a sync step can't be interrupted anyway) and keeps advancing in its task. It
  is also what :meth:`Runner.start` runs in a task, and what :meth:`Runner.run` runs inline in
  the calling task.

**Letting go (parking).** When ``_advance`` says *let go* and the process is not terminal, it
is blocked on an external request (``play`` or ``resume``). The driver returns: a parked
process holds no task, cancel scope or coroutine frame, only its own small state. The
request that unblocks it (``resume(value)``, ``play()``) hands it back to the runner's pump
queue (:meth:`Process._wakeup`); ``kill()`` simply ends it. The runner counts its parked
processes and keeps its pump task alive while there are any, so that leaving the runner
still waits for them and cancelling the runner kills them. Waiting on an awaitable uses one
watcher task of the runner, which awaits it in a cancel scope and calls ``resume`` with its
value (resuming by hand, or killing, cancels the watcher). The awaitable is awaited from the
moment the process enters WAITING, paused or not: a pause does not stop a wait, and a paused
process that gets resumed keeps the value and continues after ``play()``.

**Control requests** (``pause``/``play``/``kill``) are plain sync methods. Each asks
:func:`~corelib.process._states.decide` what to do and returns a :class:`ControlHandle`, an
awaitable
that always resolves to a :class:`ControlOutcome`:

* acting *now* is done synchronously in the caller (e.g. ``kill()`` moves to KILLED before it
  returns): a parked process is released, a watcher or an async step being awaited is
  cancelled (an async step whose coroutine did not start yet is never started), and a queued
  process is dropped by the pump when its turn comes;
* acting *at step end* is recorded as a pending request and settled when the step returns.
  A graceful kill also cancels the step's scope, so an async step stops at its next
  ``await``; a sync step runs to its end.

Invariants: a terminal state is never left (a force-killed step's result is discarded); every
handle is resolved at the latest when the process terminates; every task (pump, step driver,
watcher) belongs to the runner's task group, or is the caller's own (``Runner.run``), and
none outlives the process's need of it.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import CoroutineType, MappingProxyType, MethodType
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, final

import anyio
import anyio.lowlevel
import attrs

from ._errors import (
    InvalidTransitionError,
    ProcessExceptedError,
    ProcessKilledError,
    ProcessNotFinishedError,
    ProcessStateError,
)
from ._exit_code import ExitCode
from ._frozen import AttributesFrozenDict
from ._listener import ProcessListener, notify_listeners
from ._spec import ProcessSpec
from ._states import (
    NO_VALUE,
    TERMINAL_STATES,
    Action,
    Continue,
    Event,
    Excepted,
    Fail,
    Finish,
    Finished,
    Kill,
    Killed,
    Pause,
    Play,
    ProcessState,
    ProcessStateMachine,
    Request,
    Resume,
    Start,
    StateData,
    Transition,
    Wait,
    decide,
)

if TYPE_CHECKING:
    from ..runner._runner import Runner

__all__ = [
    "Process",
    "ControlOutcome",
    "ControlHandle",
    "ProcessStatistics",
    "MISSING_OUTPUTS_STATUS",
]

logger = logging.getLogger("corelib.process")

_P = TypeVar("_P", bound="Process")

MISSING_OUTPUTS_STATUS: Final = 11
"""Exit status of a process that returned success but left required outputs unset."""

_CURRENT: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "corelib_current_process", default=None
)

_Call = tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]]

_NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})
_NO_OUTPUTS: Final = AttributesFrozenDict()

_CREATED, _RUNNING, _WAITING = ProcessState.CREATED, ProcessState.RUNNING, ProcessState.WAITING
_FINISHED, _EXCEPTED, _KILLED = ProcessState.FINISHED, ProcessState.EXCEPTED, ProcessState.KILLED
_TERMINAL: Final = TERMINAL_STATES


# --------------------------------------------------------------------------------------------
# Control outcomes


@final
@attrs.frozen
class ControlOutcome:
    """How a control request (pause, play, kill) ended; true if and only if it is ``done``.

    So ``if await proc.pause():`` is true when the process is paused (or already was), and
    false when the pause was refused (the process terminated), superseded by a kill or
    cancelled by a play.

    Attributes:
        done: whether the process now is as requested *because of* this request or already
            was (``"already paused"``, ``"not paused"``). ``False`` when the request could
            not act or was superseded.
        reason: a short lower-case explanation, one of ``"paused"``, ``"already paused"``,
            ``"played"``, ``"not paused"``, ``"pause cancelled"``, ``"killed"``,
            ``"kill pending"``, ``"pause cancelled by play"``, ``"superseded by kill"``,
            ``"superseded by a later kill"``, ``"process already <state>"``.
    """

    done: bool
    reason: str

    def __bool__(self) -> bool:
        """``done``: ``if await proc.pause():`` holds only if the process is paused now.

        A request that was refused (``"process already finished"``), superseded (``"superseded
        by kill"``) or cancelled (``"pause cancelled by play"``) is falsy.
        """
        return self.done


@final
class ControlHandle:
    """The awaitable result of a control request; it always resolves.

    ``await handle`` (or ``await handle.wait()``) returns the :class:`ControlOutcome`. Requests
    that act at once return an already resolved handle; deferred ones resolve when the running
    step ends, when a later request supersedes them, or when the process terminates, whichever
    comes first.
    """

    __slots__ = ("_event", "_outcome", "_request")

    def __init__(self, request: Request) -> None:
        self._request = request
        self._outcome: ControlOutcome | None = None
        self._event: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<ControlHandle {self._request.value}: {self._outcome!r}>"

    @property
    def request(self) -> Request:
        """The request this handle answers."""
        return self._request

    @property
    def outcome(self) -> ControlOutcome | None:
        """The outcome, or ``None`` while the request is still pending."""
        return self._outcome

    def done(self) -> bool:
        """Whether the outcome is known."""
        return self._outcome is not None

    async def wait(self) -> ControlOutcome:
        """Wait for and return the outcome."""
        if self._outcome is None:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        else:
            await anyio.lowlevel.checkpoint()
        assert self._outcome is not None
        return self._outcome

    def __await__(self) -> Any:
        return self.wait().__await__()

    def _resolve(self, done: bool, reason: str) -> None:
        if self._outcome is not None:
            return
        self._outcome = ControlOutcome(done, reason)
        if self._event is not None:
            self._event.set()


def _resolved(request: Request, done: bool, reason: str) -> ControlHandle:
    handle = ControlHandle(request)
    handle._resolve(done, reason)
    return handle


@final
@attrs.frozen
class ProcessStatistics:
    """A snapshot of a process's driver, for tests, benchmarks and status reports.

    Attributes:
        state: the current state.
        paused: the paused flag.
        launched: whether the process was handed to a runner.
        driving: whether something advances it: it is queued in its runner's pump, or a task
            (a task of its runner, or the caller of ``Runner.run``) runs it. ``False`` once
            its driver let go of it: it terminated, or it is blocked.
        stepping: whether a step (user code) is running right now.
        blocked: whether it can only go on after an external request: parked while paused
            (needs ``play``) or waiting and not yet resumed (needs ``resume`` or the
            awaitable). A blocked process holds no task.
        pause_pending: a pause waits for the running step to end.
        kill_pending: a graceful kill waits for the running step to end.
    """

    state: ProcessState
    paused: bool
    launched: bool
    driving: bool
    stepping: bool
    blocked: bool
    pause_pending: bool
    kill_pending: bool


# --------------------------------------------------------------------------------------------
# Process


class Process:
    """Base class of processes. Subclass it, declare ports in :meth:`define`, implement ``run``.

    ``run()`` and every later step may be a sync or an ``async`` method. What a step returns
    decides what happens next:

    * ``None`` or any plain value: the process finishes successfully with it as result;
    * an :class:`~corelib.ExitCode`: it finishes with that code (non-zero is unsuccessful);
    * ``Continue(self.step, *args, **kwargs)``: ``step`` runs next;
    * ``Wait(awaitable_or_None, self.step, message=None)``: the process waits, then ``step``
      is called with the resume value (see :class:`~corelib.process._states.Wait`);
    * ``Kill(message)``: the process is killed.

    An exception escaping a step ends the process in EXCEPTED (logged once, with its traceback,
    at WARNING on the ``corelib.process`` logger); :meth:`wait` returns however the process
    ended, and :meth:`result` then raises :class:`~corelib.ProcessExceptedError` or
    :class:`~corelib.ProcessKilledError`. Outputs are emitted with :meth:`out`; required
    outputs missing at a successful finish make it unsuccessful with exit status
    :data:`MISSING_OUTPUTS_STATUS`.

    Hooks (``on_*`` methods) may be overridden; calling ``super()`` is good practice but not
    checked. An exception from a hook moves the process to EXCEPTED, except from the hooks of
    a terminal state (and from ``on_kill``/``on_except``), where it is logged so that the
    terminal state stands.

    The base class declares ``__slots__`` to keep parked processes small; a subclass without
    ``__slots__`` gets a ``__dict__`` as usual, so subclasses may add any attributes.

    Args:
        inputs: raw inputs; validated against the spec (defaults applied). The mapping is not
            changed or kept.
        pid: the process id; by default 32 fresh random hex digits (like ``uuid4().hex``).
        listeners: listeners to attach from the start (they get ``on_process_created``).

    Raises:
        PortValidationError: the inputs do not match the spec; the message names the port path.
    """

    __slots__ = (
        "__weakref__",
        "_driving",
        "_exception",
        "_inputs",
        "_listeners",
        "_machine",
        "_next_call",
        "_outputs",
        "_outputs_view",
        "_pending_kill",
        "_pending_pause",
        "_pid",
        "_resume_value",
        "_resumed",
        "_runner",
        "_step_scope",
        "_stepping",
        "_terminated_event",
        "_wait_error",
        "_wait_next",
        "_wait_next_bound",
        "_watch_pending",
        "_watch_scope",
    )

    _SPEC_ATTRIBUTE: ClassVar[str] = "_corelib_process_spec"

    # -- spec ---------------------------------------------------------------------------------

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        """Declare the ports and exit codes of this process class.

        Override it as a classmethod, call ``super().define(spec)`` first, then extend.
        """

    @classmethod
    def spec(cls) -> ProcessSpec:
        """Return this class's sealed spec, building it once on first use.

        The spec is cached per class (never inherited from a base class). If ``define``
        raises, nothing is cached and the next call raises again.
        """
        cached = cls.__dict__.get(cls._SPEC_ATTRIBUTE)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        spec = ProcessSpec()
        cls.define(spec)
        spec.seal()
        setattr(cls, cls._SPEC_ATTRIBUTE, spec)
        return spec

    @classmethod
    def current(cls) -> Process | None:
        """Return the process whose step is running in the current task, if any."""
        return _CURRENT.get()

    # -- construction -------------------------------------------------------------------------

    def _setup(
        self, inputs: AttributesFrozenDict, pid: str, machine: ProcessStateMachine
    ) -> None:
        """Set every field; shared by ``__init__`` and :meth:`_restore` (which runs no hook)."""
        self._inputs: AttributesFrozenDict = inputs
        self._pid: str = pid
        self._machine = machine
        # Made on first use: most processes have no listeners, and many no outputs.
        self._outputs: dict[str, Any] | None = None
        self._outputs_view: AttributesFrozenDict | None = None
        self._listeners: list[ProcessListener] | None = None
        self._exception: BaseException | None = None

        # driver
        self._runner: Runner | None = None
        self._driving = False
        self._stepping = False
        self._next_call: _Call | None = None
        self._step_scope: anyio.CancelScope | None = None
        self._terminated_event: anyio.Event | None = None

        # waiting
        # The step to resume with. A method of this process is kept as its plain function
        # (``_wait_next_bound``) and bound again on resume: a bound method would be one more
        # object, and a reference cycle, for every waiting process.
        self._wait_next: Callable[..., Any] | None = None
        self._wait_next_bound = False
        self._watch_pending = False  # a watcher task was spawned and has not started yet
        self._watch_scope: anyio.CancelScope | None = None
        self._resumed = False
        self._resume_value: Any = NO_VALUE
        self._wait_error: Exception | None = None

        # pending control requests (only while a step runs)
        self._pending_pause: tuple[ControlHandle, str | None] | None = None
        self._pending_kill: tuple[ControlHandle, str | None] | None = None


    def __init__(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> None:
        spec = type(self).spec()
        self._setup(
            spec.validate_inputs(inputs),
            os.urandom(16).hex() if pid is None else pid,
            ProcessStateMachine(),
        )
        if listeners:
            self._listeners = [*listeners]
        self.on_create()
        if self._listeners:
            notify_listeners(self._listeners, "on_process_created", self)

    @classmethod
    def _restore(
        cls: type[_P], *, inputs: AttributesFrozenDict, pid: str, machine: ProcessStateMachine
    ) -> _P:
        """A process rebuilt from a checkpoint: fields set, no hook run, not launched."""
        process = cls.__new__(cls)
        process._setup(inputs, pid, machine)
        return process

    def _rewait(self) -> None:
        """After a restored WAITING process was launched: wait again on what it awaited."""
        awaitable = self._restored_awaitable()
        machine = self._machine
        if awaitable is None or machine.state is not _WAITING or self._resumed:
            return
        self.runner._spawn(self._watch, awaitable, machine.moves, name=f"wait {self._pid}")
        self._watch_pending = True

    def _restored_awaitable(self) -> Any:
        """What a process loaded while WAITING waits on again; ``None``: a ``resume()``.

        Subclasses that can re-attach to what they waited for (WorkChains and their
        children) override it.
        """
        return None

    def __repr__(self) -> str:
        paused = " paused" if self.paused else ""
        return f"<{type(self).__name__} {self._pid} {self.state.value}{paused}>"

    # -- observing ----------------------------------------------------------------------------

    @property
    def pid(self) -> str:
        """The process id (a string)."""
        return self._pid

    @property
    def inputs(self) -> AttributesFrozenDict:
        """The validated inputs, defaults applied; immutable."""
        return self._inputs

    @property
    def outputs(self) -> AttributesFrozenDict:
        """The outputs emitted so far, nested by namespace; an immutable snapshot."""
        if self._outputs_view is None:
            if self._outputs is None:
                return _NO_OUTPUTS  # immutable, so shared (``run`` reads every process's)
            self._outputs_view = AttributesFrozenDict(self._outputs)
        return self._outputs_view

    @property
    def state(self) -> ProcessState:
        """The current state."""
        return self._machine.state

    @property
    def state_data(self) -> StateData:
        """The current state's record (``Running``, ``Waiting``, ``Finished``, ...)."""
        return self._machine.data

    @property
    def paused(self) -> bool:
        """Whether the process is paused (never true in a terminal state)."""
        return self._machine.paused

    @property
    def history(self) -> tuple[Transition, ...]:
        """Every state move so far, oldest first (wall-clock stamped)."""
        return self._machine.history

    @property
    def ctime(self) -> float | None:
        """When the process made its first state move (``time.time()``), or ``None``."""
        return self._machine.first_move_time

    @property
    def exit_code(self) -> ExitCode | None:
        """The exit code of a finished process; ``None`` in any other state.

        A returned ``ExitCode`` is reported as is; any other successful result as
        ``ExitCode(0)``.
        """
        data = self._machine.data
        if not isinstance(data, Finished):
            return None
        if isinstance(data.result, ExitCode):
            return data.result
        return ExitCode(0) if data.successful else ExitCode(1)

    @property
    def exit_codes(self) -> AttributesFrozenDict:
        """The exit codes declared in the spec, by label (``self.exit_codes.LABEL`` works)."""
        return type(self).spec().exit_codes

    @property
    def exception(self) -> BaseException | None:
        """The exception that ended the process (in this interpreter only), or ``None``."""
        return self._exception

    @property
    def runner(self) -> Runner:
        """The runner the process was launched in.

        Raises:
            ProcessStateError: the process was not launched.
        """
        if self._runner is None:
            raise ProcessStateError(f"process {self._pid} was not launched")
        return self._runner

    def has_terminated(self) -> bool:
        """Whether the process is in a terminal state."""
        return self._machine.state.terminal

    def successful(self) -> bool:
        """Whether the process finished successfully.

        Raises:
            ProcessNotFinishedError: the process is not FINISHED.
        """
        data = self._machine.data
        if not isinstance(data, Finished):
            raise ProcessNotFinishedError(
                f"process {self._pid} is {self.state.value}, not finished"
            )
        return data.successful

    def result(self) -> Any:
        """Return the result of a finished process (what its last step returned).

        An unsuccessful finish (non-zero exit code) is still a result and is returned.

        Raises:
            ProcessNotFinishedError: the process has not terminated yet.
            ProcessExceptedError: the process excepted (the original exception is chained).
            ProcessKilledError: the process was killed.
        """
        data = self._machine.data
        if isinstance(data, Finished):
            return data.result
        if isinstance(data, Excepted):
            raise ProcessExceptedError(
                self._pid, data.type_name, data.message, data.traceback
            ) from self._exception
        if isinstance(data, Killed):
            raise ProcessKilledError(self._pid, data.message)
        raise ProcessNotFinishedError(f"process {self._pid} is {self.state.value}, not finished")

    async def wait(self) -> None:
        """Wait until the process is in a terminal state, however it ended; never raises.

        A process that finished, excepted or was killed all end the wait alike (killing a
        process and waiting for it to be gone is the common use). To get the outcome, call
        :meth:`result` after it: it returns the result, or raises
        :class:`~corelib.ProcessExceptedError` / :class:`~corelib.ProcessKilledError` (as
        plumpy's ``future().result()`` raises). A process that excepts is also logged once,
        with its traceback, at WARNING on the ``corelib.process`` logger.
        """
        if self._machine.state.terminal:
            await anyio.lowlevel.checkpoint()
            return
        if self._terminated_event is None:
            self._terminated_event = anyio.Event()
        await self._terminated_event.wait()

    def statistics(self) -> ProcessStatistics:
        """Return a snapshot of the driver's situation."""
        return ProcessStatistics(
            state=self.state,
            paused=self.paused,
            launched=self._runner is not None,
            driving=self._driving,
            stepping=self._stepping,
            blocked=self._is_parked(),
            pause_pending=self._pending_pause is not None,
            kill_pending=self._pending_kill is not None,
        )

    def _is_parked(self) -> bool:
        # A launched process that no driver holds is parked until a request unblocks it (and
        # once its watcher, if it waits on an awaitable, is awaiting it).
        return (
            self._runner is not None
            and not self._driving
            and not self._watch_pending
            and not self._machine.state.terminal
        )

    # -- listeners ----------------------------------------------------------------------------

    def add_process_listener(self, listener: ProcessListener) -> None:
        """Attach ``listener``; events from now on are reported to it."""
        if self._listeners is None:
            self._listeners = []
        self._listeners.append(listener)

    def remove_process_listener(self, listener: ProcessListener) -> None:
        """Detach ``listener`` (no error if it was not attached)."""
        if self._listeners is not None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

    def _notify(self, method: str, *args: Any) -> None:
        if self._listeners:
            notify_listeners(self._listeners, method, self, *args)

    # -- outputs ------------------------------------------------------------------------------

    def out(self, output_port: str, value: Any) -> None:
        """Emit ``value`` on ``output_port`` (a dotted path for nested namespaces).

        The value is validated against the spec at once; listeners and the
        ``on_output_emitted`` hook are told exactly once.

        Raises:
            PortValidationError: the value does not match the port (inside a step this ends
                the process in EXCEPTED with that message).
            ProcessStateError: the process already terminated.
        """
        state = self._machine.state
        if state.terminal:
            raise ProcessStateError(f"can't emit output {output_port!r} in state {state.name}")
        type(self).spec().validate_output(output_port, value)
        *parents, leaf = output_port.split(".")
        if self._outputs is None:
            self._outputs = {}
        target = self._outputs
        for name in parents:
            child = target.get(name)
            if not isinstance(child, dict):
                child = target[name] = {}
            target = child
        target[leaf] = value
        self._outputs_view = None
        self.on_output_emitted(output_port, value)
        self._notify("on_output_emitted", output_port, value)

    # -- children -----------------------------------------------------------------------------

    def submit(
        self,
        process_class: type[_P],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> _P:
        """Create and launch a process in this process's runner and return it (not awaited)."""
        return self.runner.submit(process_class, inputs, pid=pid, listeners=listeners)

    # -- control ------------------------------------------------------------------------------

    def _decide(self, request: Request) -> Any:
        return decide(
            request,
            self._machine.state,
            paused=self._machine.paused,
            stepping=self._stepping,
            pause_pending=self._pending_pause is not None,
            kill_pending=self._pending_kill is not None,
        )

    def pause(self, msg: str | None = None) -> ControlHandle:
        """Request a pause; non-blocking and idempotent.

        A process that is not running a step is paused at once (a waiting one keeps waiting
        and, once resumed, continues only after :meth:`play`). While a step runs, the pause
        takes effect when it ends; a second pause meanwhile returns the same handle.
        """
        decision = self._decide(Request.PAUSE)
        match decision.action:
            case Action.NOW:
                self._apply_pause(msg)
                return _resolved(Request.PAUSE, True, decision.reason)
            case Action.DEFER:
                if self._pending_pause is not None:
                    return self._pending_pause[0]
                handle = ControlHandle(Request.PAUSE)
                self._pending_pause = (handle, msg)
                return handle
            case action:
                return _resolved(Request.PAUSE, action is Action.NOTHING, decision.reason)

    def play(self) -> ControlHandle:
        """Request a play (unpause); non-blocking and idempotent.

        Also cancels a pause that still waits for the running step to end.
        """
        decision = self._decide(Request.PLAY)
        match decision.action:
            case Action.NOW:
                self._apply_play()
                return _resolved(Request.PLAY, True, decision.reason)
            case Action.CANCEL_PENDING_PAUSE:
                assert self._pending_pause is not None
                self._pending_pause[0]._resolve(False, "pause cancelled by play")
                self._pending_pause = None
                return _resolved(Request.PLAY, True, decision.reason)
            case action:
                return _resolved(Request.PLAY, action is Action.NOTHING, decision.reason)

    def kill(
        self,
        msg: str | None = None,
        *,
        force: bool | None = None,
        force_kill: bool | None = None,
    ) -> ControlHandle:
        """Request a kill; non-blocking.

        A process that is not running a step (created, waiting, paused, between steps) is
        killed at once. While a step runs, a graceful kill cancels the step at its next
        ``await`` (a sync step runs to its end) and the process is KILLED when the step
        returns, whatever it returned. ``force=True`` kills at once even mid-step: the step is
        cancelled and its result ignored. A later kill supersedes a pending one (its message
        wins).

        Args:
            msg: the kill message (``Killed.message``; plumpy's ``msg_text``).
            force: kill at once, even in the middle of a step (default ``False``).
            force_kill: plumpy's name for ``force``, accepted as is.

        Raises:
            ValueError: ``force`` and ``force_kill`` were both given, with different values.
        """
        request = Request.FORCE_KILL if force_of(force, force_kill) else Request.KILL
        decision = self._decide(request)
        match decision.action:
            case Action.NOW:
                self._kill_now(msg)
                return _resolved(request, True, decision.reason)
            case Action.DEFER:
                handle = ControlHandle(request)
                self._supersede_pending_kill()
                if self._pending_pause is not None:
                    self._pending_pause[0]._resolve(False, "superseded by kill")
                    self._pending_pause = None
                self._pending_kill = (handle, msg)
                if self._step_scope is not None:
                    self._step_scope.cancel()
                return handle
            case _:
                return _resolved(request, False, decision.reason)

    def resume(self, value: Any = NO_VALUE) -> bool:
        """Resume a waiting process; ``value`` becomes the argument of its next step.

        Idempotent: only the first resume of a wait counts (a value that arrives while the
        process is paused is kept until it is played). Resuming a process that waits on an
        awaitable stops awaiting it.

        Returns:
            ``True`` if this call resumed the wait, ``False`` if it was already resumed.

        Raises:
            InvalidTransitionError: the process is not WAITING.
        """
        state = self._machine.state
        if state is not _WAITING:
            raise InvalidTransitionError("Resume", state.name)
        return self._deliver(value)

    def _apply_pause(self, msg: str | None) -> None:
        self._machine.apply(Pause(msg))
        self._call_hook(self.on_paused, msg)
        self._notify("on_process_paused")

    def _apply_play(self) -> None:
        self._machine.apply(Play())
        self._call_hook(self.on_played)
        self._notify("on_process_played")
        self._wakeup()

    def _supersede_pending_kill(self) -> None:
        if self._pending_kill is not None:
            self._pending_kill[0]._resolve(False, "superseded by a later kill")
            self._pending_kill = None

    def _kill_now(self, msg: str | None) -> None:
        if self._pending_pause is not None:
            self._pending_pause[0]._resolve(False, "superseded by kill")
            self._pending_pause = None
        self._supersede_pending_kill()
        self._transition(Kill(msg))

    def _call_hook(self, hook: Callable[..., object], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            logger.exception("hook %s of process %s raised; ignored", hook.__name__, self._pid)

    def _deliver(self, value: Any) -> bool:
        if self._resumed:
            return False
        self._resumed = True
        self._resume_value = value
        # The wait is over: a watcher still awaiting the awaitable stops.
        self._watch_pending = False
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        self._wakeup()
        return True

    def _deliver_error(self, exc: Exception) -> None:
        if not self._resumed:
            self._wait_error = exc
            self._deliver(NO_VALUE)

    # -- transitions --------------------------------------------------------------------------

    def _transition(self, event: Event) -> None:
        """Apply ``event`` with the hooks around it, plumpy's order.

        exit hook of the old state -> entering hook of the new one -> state installed ->
        listeners -> entered hook -> (terminal) ``on_terminated``. A failing hook moves the
        process to EXCEPTED unless the move goes to EXCEPTED/KILLED or the new state is
        terminal, in which case it is logged. If a hook itself moved the process (e.g. a
        listener killed it), the rest of this move's hooks are skipped.
        """
        machine = self._machine
        old = machine._state
        new = machine.next_state(event)
        # ``len(history)`` is ``machine.moves`` without the property call (hot path).
        history = machine._history
        moves = len(history)
        try:
            if old is _RUNNING:
                self.on_exit_running()
            elif old is _WAITING:
                self.on_exit_waiting()
            if moves != len(history):
                return
            self._entering_hook(event)
        except Exception as exc:
            if new is _EXCEPTED or new is _KILLED:
                logger.exception("hook of process %s raised entering %s", self._pid, new.value)
            else:
                self._fail(exc)
                return
        if moves != len(history):
            return
        machine.apply(event)
        moves += 1
        terminal = new in _TERMINAL
        try:
            self._entered_hooks(new)
        except Exception as exc:
            if terminal:
                logger.exception("hook of process %s raised in %s; ignored", self._pid, new.value)
            else:
                self._fail(exc)
                return
        if terminal and moves == len(history):
            self._call_hook(self.on_terminated)
            self._on_terminal()

    def _fail(self, exc: Exception) -> None:
        if self._machine.state.terminal:
            # Already ended (e.g. a hook killed the process, then raised): the end stands.
            logger.error("process %s: error after termination ignored: %r", self._pid, exc)
            return
        self._exception = exc
        self._transition(Fail.from_exception(exc))
        if self._machine._state is _EXCEPTED and self._exception is exc:
            # Once per excepted process (a hook may have ended it otherwise meanwhile), with
            # the traceback: nobody may ever call result(), and wait() does not raise.
            logger.warning(
                "process %s (%s) excepted: %s: %s",
                self._pid,
                type(self).__qualname__,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )

    def _entering_hook(self, event: Event) -> None:
        # The event classes are final, so comparing types is an isinstance check.
        kind = type(event)
        if kind is Start or kind is Continue or kind is Resume:
            self.on_run()
        elif kind is Finish:
            assert isinstance(event, Finish)
            self.on_finish(event.result, event.successful)
        elif kind is Wait:
            self.on_wait()
        elif kind is Fail:
            assert isinstance(event, Fail)
            self.on_except(event.type_name, event.message)
        elif kind is Kill:
            assert isinstance(event, Kill)
            self.on_kill(event.message)

    def _entered_hooks(self, new: ProcessState) -> None:
        machine = self._machine
        if new is _RUNNING:
            if not self._listeners:  # the common case, without the bookkeeping below
                self.on_running()
                return
            moves = machine.moves
            self._notify("on_process_running")
            if moves == machine.moves:
                self.on_running()
            return
        moves = machine.moves
        if new is _FINISHED:
            if self._listeners:
                self._notify("on_process_finished", self.outputs)
            hook = self.on_finished
        elif new is _WAITING:
            self._notify("on_process_waiting")
            hook = self.on_waiting
        elif new is _EXCEPTED:
            data = machine.data
            assert isinstance(data, Excepted)
            self._notify("on_process_excepted", f"{data.type_name}: {data.message}")
            hook = self.on_excepted
        elif new is _KILLED:
            data = machine.data
            assert isinstance(data, Killed)
            self._notify("on_process_killed", data.message)
            hook = self.on_killed
        else:  # pragma: no cover - CREATED is never entered by a move
            return
        if moves == machine.moves:
            hook()

    def _on_terminal(self) -> None:
        state = self._machine.state
        if self._pending_pause is not None:
            self._pending_pause[0]._resolve(False, f"process already {state.value}")
            self._pending_pause = None
        if self._pending_kill is not None:
            self._pending_kill[0]._resolve(False, f"process already {state.value}")
            self._pending_kill = None
        for scope in (self._step_scope, self._watch_scope):
            if scope is not None:
                scope.cancel()
        self._watch_pending = False
        # Drop what the process no longer needs (bound methods refer back to it).
        self._next_call = None
        self._wait_next = None
        self._wait_next_bound = False
        self._resume_value = NO_VALUE
        if self._terminated_event is not None:
            self._terminated_event.set()
        if self._runner is not None:
            self._runner._terminated(self)

    # -- the driver ---------------------------------------------------------------------------

    def _check_not_launched(self) -> None:
        if self._runner is not None:
            raise ProcessStateError(f"process {self._pid} was already launched")

    def _bind(self, runner: Runner) -> None:
        """Launch the process in ``runner``; the caller is its first driver."""
        self._check_not_launched()
        self._runner = runner
        self._driving = True

    def _can_go_on(self) -> bool:
        """Whether a driver can advance the process now (not terminal, paused or waiting)."""
        machine = self._machine
        if machine._paused:
            return False
        state = machine._state
        if state is _WAITING:
            return self._resumed
        return state not in _TERMINAL

    def _wakeup(self) -> None:
        """Hand a parked process back to its runner if it can go on now."""
        if not self._driving and self._runner is not None and self._can_go_on():
            self._driving = True
            self._runner._unpark(self)

    def _let_go(self) -> None:
        """Called by a driver that stops driving: the process is terminal or parks."""
        self._driving = False
        runner = self._runner
        assert runner is not None
        if self._machine.state.terminal:
            runner._forget(self)
        else:
            runner._park(self)

    def _advance(self) -> Coroutine[Any, Any, Any] | bool:
        """Advance without awaiting, up to the next step boundary (see the module docstring).

        Returns:
            ``True``: a step ended and the process can go on (after a yield); ``False``: it
            can't go on (terminal, paused, or waiting); or the coroutine of an async step,
            which the caller must await with :meth:`_await_step`.
        """
        machine = self._machine
        while True:
            if machine._paused:  # the machine's fields, read directly on this hot path
                return False
            state = machine._state
            if state is _RUNNING:
                break
            if state is _CREATED:
                self._next_call = (self.run, (), _NOTHING)
                self._transition(Start())
            elif state is _WAITING and self._resumed:
                error, self._wait_error = self._wait_error, None
                if error is not None:
                    self._fail(error)
                    continue
                value, self._resume_value = self._resume_value, NO_VALUE
                next_step, self._wait_next = self._wait_next, None
                assert next_step is not None
                if self._wait_next_bound:
                    next_step = MethodType(next_step, self)
                    self._wait_next_bound = False
                self._next_call = (next_step, () if value is NO_VALUE else (value,), _NOTHING)
                self._transition(Resume(value))
            else:
                return False
        call, self._next_call = self._next_call, None
        assert call is not None
        fn, args, kwargs = call
        result: Any = None
        error = None
        token = _CURRENT.set(self)
        self._stepping = True
        try:
            result = fn(*args, **kwargs) if kwargs else fn(*args)
        except Exception as exc:
            error = exc
        except BaseException:
            self._stepping = False
            raise
        finally:
            _CURRENT.reset(token)
        if error is None and isinstance(result, CoroutineType):  # inspect.iscoroutine
            return result  # still stepping
        self._stepping = False
        self._after_step(result, error)
        return self._can_go_on()

    async def _await_step(self, step: Coroutine[Any, Any, Any]) -> None:
        """Await an async step's coroutine (from :meth:`_advance`) in a scope kills cancel."""
        result: Any = None
        error: Exception | None = None
        token = _CURRENT.set(self)
        try:
            if self._machine.state.terminal:
                # Force-killed before the coroutine started: don't start it.
                step.close()
            else:
                with anyio.CancelScope() as scope:
                    self._step_scope = scope
                    if self._pending_kill is not None:
                        scope.cancel()  # it stops at its first await
                    try:
                        result = await step
                    except Exception as exc:
                        error = exc
        finally:
            self._step_scope = None
            self._stepping = False
            _CURRENT.reset(token)
            _close_unstarted(step)
        self._after_step(result, error)

    async def _drive(self, step: Coroutine[Any, Any, Any] | None = None) -> None:
        """Drive the process in the current task until it is terminal or parks.

        ``step`` is the coroutine of an async step to await first (handed over by the
        runner's pump). The caller must be the process's driver (``_driving`` is set).
        """
        try:
            while True:
                if step is not None:
                    await self._await_step(step)
                    step = None
                    if not self._can_go_on():
                        break
                    await anyio.lowlevel.checkpoint()
                advanced = self._advance()
                if advanced is False:
                    break
                if advanced is True:
                    await anyio.lowlevel.checkpoint()
                else:
                    step = advanced
        except anyio.get_cancelled_exc_class():
            # The runner (or an enclosing scope) was cancelled: the process cannot go on, and
            # leaving it non-terminal would hang everyone awaiting it.
            if not self._machine.state.terminal:
                self._kill_now("killed by cancellation")
            raise
        except Exception as exc:  # pragma: no cover - a driver bug; never leave it hanging
            self._driver_failed(exc)
        finally:
            self._let_go()

    def _driver_failed(self, exc: Exception) -> None:  # pragma: no cover - a driver bug
        logger.exception("driver of process %s failed", self._pid, exc_info=exc)
        if not self._machine.state.terminal:
            self._fail(exc)

    async def _watch(self, awaitable: object, wait: int) -> None:
        """Await what wait number ``wait`` names and resume with its value (a runner task).

        ``wait`` is the machine's move count when the process entered WAITING; it changes
        when the wait ends, so a watcher that outlived its wait does nothing.
        """
        if self._machine.moves != wait or self._resumed:
            _close_unstarted(awaitable)  # the wait ended before this task started
            return
        self._watch_pending = False
        value: Any = NO_VALUE
        error: Exception | None = None
        with anyio.CancelScope() as scope:
            self._watch_scope = scope
            try:
                value = await _await_any(awaitable)
            except Exception as exc:
                error = exc
            finally:
                if self._watch_scope is scope:
                    self._watch_scope = None
                _close_unstarted(awaitable)
        if scope.cancel_called or self._machine.moves != wait:
            return  # resumed by hand, or killed
        if error is not None:
            self._deliver_error(error)
        else:
            self._deliver(value)

    def _after_step(self, result: Any, error: Exception | None) -> None:
        machine = self._machine
        if machine._state in _TERMINAL:
            # Force-killed (or killed by a hook) while the step ran: its outcome is ignored.
            if error is not None:
                logger.debug("process %s: step error after kill ignored: %r", self._pid, error)
            _discard(result)
            return
        if self._pending_kill is not None:
            handle, msg = self._pending_kill
            self._pending_kill = None
            self._kill_now(msg)
            handle._resolve(True, "killed")
            _discard(result)
            return
        if error is not None:
            self._fail(error)
        else:
            try:
                self._apply_result(result)
            except Exception as exc:
                self._fail(exc)
        if self._pending_pause is not None:
            handle, msg = self._pending_pause
            self._pending_pause = None
            self._apply_pause(msg)
            handle._resolve(True, "paused")

    def _apply_result(self, result: Any) -> None:
        kind = type(result)
        if kind is Continue:
            self._next_call = (result.fn, result.args, result.kwargs)
            self._transition(result)
        elif kind is Wait:
            awaitable = result.awaitable
            _check_awaitable(awaitable)
            next_step = result.next_step
            if getattr(next_step, "__self__", None) is self and type(next_step) is MethodType:
                self._wait_next = next_step.__func__
                self._wait_next_bound = True
            else:
                self._wait_next = next_step
                self._wait_next_bound = False
            self._resumed = False
            self._resume_value = NO_VALUE
            self._wait_error = None
            self._transition(result)
            if awaitable is None:
                return
            machine = self._machine
            if machine.state is _WAITING and not self._resumed:
                self.runner._spawn(self._watch, awaitable, machine.moves, name=f"wait {self._pid}")
                self._watch_pending = True
            else:
                _close_unstarted(awaitable)  # the wait ended at once (e.g. a hook killed it)
        elif kind is Kill:
            self._transition(result)
        elif isinstance(result, Event):
            raise TypeError(f"a step can't return {kind.__name__}")
        elif isinstance(result, ExitCode):
            self._finish(result, result.successful)
        else:
            self._finish(result, True)

    def _finish(self, result: Any, successful: bool) -> None:
        if successful:
            missing = type(self).spec().missing_required_outputs(self._outputs or _NOTHING)
            if missing:
                result = ExitCode(
                    MISSING_OUTPUTS_STATUS,
                    f"required outputs missing: {', '.join(missing)}",
                    "ERROR_MISSING_OUTPUT",
                )
                successful = False
        self._transition(Finish(result, successful))

    # -- the step users write -----------------------------------------------------------------

    def run(self) -> Any:
        """The first step. Override it (sync or ``async``); the base returns ``None``."""
        return None

    # -- hooks --------------------------------------------------------------------------------

    def on_create(self) -> None:
        """Called at the end of construction, inputs validated."""

    def on_run(self) -> None:
        """Called entering RUNNING (before the state is installed), on every step."""

    def on_running(self) -> None:
        """Called once RUNNING is installed, after the listeners."""

    def on_exit_running(self) -> None:
        """Called leaving RUNNING."""

    def on_wait(self) -> None:
        """Called entering WAITING."""

    def on_waiting(self) -> None:
        """Called once WAITING is installed, after the listeners."""

    def on_exit_waiting(self) -> None:
        """Called leaving WAITING."""

    def on_paused(self, msg: str | None) -> None:
        """Called when the process has been paused."""

    def on_played(self) -> None:
        """Called when the process has been played."""

    def on_output_emitted(self, output_port: str, value: Any) -> None:
        """Called once per validated output, before the listeners hear of it."""

    def on_finish(self, result: Any, successful: bool) -> None:
        """Called entering FINISHED. Raising here makes the process EXCEPTED instead."""

    def on_finished(self) -> None:
        """Called once FINISHED is installed, after the listeners."""

    def on_except(self, type_name: str, message: str) -> None:
        """Called entering EXCEPTED."""

    def on_excepted(self) -> None:
        """Called once EXCEPTED is installed, after the listeners."""

    def on_kill(self, msg: str | None) -> None:
        """Called entering KILLED."""

    def on_killed(self) -> None:
        """Called once KILLED is installed, after the listeners."""

    def on_terminated(self) -> None:
        """Called last, after any terminal state was installed."""

    # -- the checkpoint protocol ----------------------------------------------------------------

    def save_instance_state(self) -> dict[str, Any]:
        """The state a subclass keeps beyond what every process has, as plain data.

        Checkpoints store every process's pid, state, inputs, outputs and exit code
        themselves; a subclass with more state (a WorkChain: its context, outline cursor and
        the children it awaits) returns it here, as JSON-friendly data, and takes it back in
        :meth:`load_instance_state`. Called between steps, in the process's loop. The base
        class has none.
        """
        return {}

    def load_instance_state(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`save_instance_state` returned (on a process rebuilt from a
        checkpoint, before it is launched). The base class has nothing to take."""


def force_of(force: bool | None, force_kill: bool | None) -> bool:
    """Whether a kill is forced, given ``force=`` and plumpy's ``force_kill=`` (either may be
    omitted, as ``None``).

    Raises:
        ValueError: both were given, with different values.
    """
    if force_kill is None:
        return bool(force)
    if force is None or bool(force) == bool(force_kill):
        return bool(force_kill)
    raise ValueError(
        f"kill got force={force!r} and force_kill={force_kill!r}; pass one of them "
        "(force_kill is plumpy's name for force)"
    )


def _close_unstarted(awaitable: object) -> None:
    """Close a coroutine that was never started, so it is not reported as never awaited."""
    if inspect.iscoroutine(awaitable) and inspect.getcoroutinestate(awaitable) == "CORO_CREATED":
        awaitable.close()


def _discard(result: Any) -> None:
    """Drop what a step returned after the process was killed (closing a ``Wait``'s coroutine)."""
    if type(result) is Wait:
        _close_unstarted(result.awaitable)


def _check_awaitable(awaitable: object) -> None:
    if awaitable is None or isinstance(awaitable, anyio.Event | Process | anyio.Future):
        return
    if inspect.isawaitable(awaitable) or callable(awaitable):
        return
    raise TypeError(f"can't wait on {awaitable!r}: not awaitable")


async def _await_any(awaitable: object) -> Any:
    """Await what a ``Wait`` names and return the resume value."""
    if isinstance(awaitable, anyio.Event):
        await awaitable.wait()
        return NO_VALUE
    if isinstance(awaitable, Process):
        await awaitable.wait()
        return awaitable
    if isinstance(awaitable, anyio.Future):
        await awaitable.wait()
        if awaitable.status is anyio.Future.Status.FAILED:
            exc = awaitable.exception
            assert exc is not None
            raise exc
        return awaitable.return_value
    if inspect.isawaitable(awaitable):
        return await awaitable
    assert callable(awaitable)
    return await awaitable()
