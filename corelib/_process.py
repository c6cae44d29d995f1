"""The Process base class: user hooks plus the async driver around the sans-IO state machine.

Theory of operation
-------------------

A process owns a :class:`~corelib._states.ProcessStateMachine` and is driven by exactly one
task, :meth:`Process._drive`, started by a :class:`~corelib._runner.Runner` in its task group.
The driver is the only code that awaits; everything else here is synchronous and may be called
from any task of the process's loop (never from another thread).

The driver's loop, until the state is terminal:

* **paused** -> park until played (or killed).
* **CREATED** -> apply ``Start``; the next step is ``run``.
* **WAITING** -> wait (inside a cancel scope) until resumed, by ``resume(value)`` or by the
  awaitable given to ``Wait`` finishing; then apply ``Resume``. A pause does not stop the wait:
  a paused process that gets resumed keeps the value and continues after ``play()``.
* **RUNNING** -> run the next step (sync or async) inside its own cancel scope, map what it
  returned to an event, apply it, then apply a pending pause; then yield to the loop
  (``checkpoint``) so that long chains of sync steps share the loop fairly.

Control requests (``pause``/``play``/``kill``) are plain sync methods. Each asks
:func:`~corelib._states.decide` what to do and returns a :class:`ControlHandle`, an awaitable
that always resolves to a :class:`ControlOutcome`:

* acting *now* is done synchronously in the caller (e.g. ``kill()`` moves to KILLED before it
  returns) and the driver is woken by cancelling whatever scope it sits in;
* acting *at step end* is recorded as a pending request and settled by the driver when the
  step returns. A graceful kill also cancels the step's scope, so an async step stops at its
  next ``await``; a sync step runs to its end.

Invariants: a terminal state is never left (a force-killed step's result is discarded); every
handle is resolved at the latest when the process terminates; the driver leaves no task
behind (the wait on an awaitable runs in a task group inside the wait's cancel scope).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, final

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskStatus

from ._errors import (
    InvalidTransitionError,
    ProcessExceptedError,
    ProcessKilledError,
    ProcessNotFinishedError,
    ProcessStateError,
)
from ._exit_code import ExitCode
from ._frozen import AttributesFrozenDict
from ._listener import ProcessListener, fire_listeners
from ._spec import ProcessSpec
from ._states import (
    NO_VALUE,
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
    from ._runner import Runner

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


# --------------------------------------------------------------------------------------------
# Control outcomes


@final
@attrs.frozen
class ControlOutcome:
    """How a control request (pause, play, kill) ended.

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
        driving: whether its driver task is running.
        stepping: whether a step (user code) is running right now.
        blocked: whether the driver can only go on after an external request: parked while
            paused (needs ``play``) or waiting and not yet resumed (needs ``resume`` or the
            awaitable).
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
      is called with the resume value (see :class:`~corelib._states.Wait`);
    * ``Kill(message)``: the process is killed.

    An exception escaping a step ends the process in EXCEPTED. Outputs are emitted with
    :meth:`out`; required outputs missing at a successful finish make it unsuccessful with exit
    status :data:`MISSING_OUTPUTS_STATUS`.

    Hooks (``on_*`` methods) may be overridden; calling ``super()`` is good practice but not
    checked. An exception from a hook moves the process to EXCEPTED, except from the hooks of
    a terminal state (and from ``on_kill``/``on_except``), where it is logged so that the
    terminal state stands.

    Args:
        inputs: raw inputs; validated against the spec (defaults applied). The mapping is not
            changed or kept.
        pid: the process id; a fresh ``uuid4().hex`` by default.
        listeners: listeners to attach from the start (they get ``on_process_created``).

    Raises:
        PortValidationError: the inputs do not match the spec; the message names the port path.
    """

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

    def __init__(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> None:
        spec = type(self).spec()
        self._inputs: AttributesFrozenDict = spec.validate_inputs(inputs)
        self._pid: str = uuid.uuid4().hex if pid is None else pid
        self._machine = ProcessStateMachine()
        self._outputs: dict[str, Any] = {}
        self._outputs_view: AttributesFrozenDict | None = None
        self._listeners: list[ProcessListener] = list(listeners)
        self._exception: BaseException | None = None

        # driver
        self._runner: Runner | None = None
        self._driving = False
        self._stepping = False
        self._next_call: _Call | None = None
        self._step_scope: anyio.CancelScope | None = None
        self._block_scope: anyio.CancelScope | None = None
        self._blocked_on: str | None = None
        self._wake: anyio.Event | None = None
        self._terminated_event: anyio.Event | None = None

        # waiting
        self._awaitable: object = None
        self._wait_next: Callable[..., Any] | None = None
        self._resumed = False
        self._resume_value: Any = NO_VALUE
        self._wait_error: Exception | None = None

        # pending control requests (only while a step runs)
        self._pending_pause: tuple[ControlHandle, str | None] | None = None
        self._pending_kill: tuple[ControlHandle, str | None] | None = None

        self.on_create()
        fire_listeners(self._listeners, lambda listener: listener.on_process_created(self))

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
        """Wait until the process is in a terminal state."""
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
            blocked=self._is_blocked(),
            pause_pending=self._pending_pause is not None,
            kill_pending=self._pending_kill is not None,
        )

    def _is_blocked(self) -> bool:
        if self._block_scope is None:
            return False
        if self._blocked_on == "play":
            return self._machine.paused
        if self._blocked_on == "resume":
            return not self._resumed and self._machine.state is ProcessState.WAITING
        return False

    # -- listeners ----------------------------------------------------------------------------

    def add_process_listener(self, listener: ProcessListener) -> None:
        """Attach ``listener``; events from now on are reported to it."""
        self._listeners.append(listener)

    def remove_process_listener(self, listener: ProcessListener) -> None:
        """Detach ``listener`` (no error if it was not attached)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

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
        target = self._outputs
        for name in parents:
            child = target.get(name)
            if not isinstance(child, dict):
                child = target[name] = {}
            target = child
        target[leaf] = value
        self._outputs_view = None
        self.on_output_emitted(output_port, value)
        fire_listeners(
            self._listeners, lambda listener: listener.on_output_emitted(self, output_port, value)
        )

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

    def kill(self, msg: str | None = None, *, force: bool = False) -> ControlHandle:
        """Request a kill; non-blocking.

        A process that is not running a step (created, waiting, paused, between steps) is
        killed at once. While a step runs, a graceful kill cancels the step at its next
        ``await`` (a sync step runs to its end) and the process is KILLED when the step
        returns, whatever it returned. ``force=True`` kills at once even mid-step: the step is
        cancelled and its result ignored. A later kill supersedes a pending one (its message
        wins).
        """
        request = Request.FORCE_KILL if force else Request.KILL
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
        process is paused is kept until it is played).

        Returns:
            ``True`` if this call resumed the wait, ``False`` if it was already resumed.

        Raises:
            InvalidTransitionError: the process is not WAITING.
        """
        state = self._machine.state
        if state is not ProcessState.WAITING:
            raise InvalidTransitionError("Resume", state.name)
        return self._deliver(value)

    def _apply_pause(self, msg: str | None) -> None:
        self._machine.process(Pause(msg))
        self._call_hook(self.on_paused, msg)
        fire_listeners(self._listeners, lambda listener: listener.on_process_paused(self))

    def _apply_play(self) -> None:
        self._machine.process(Play())
        self._call_hook(self.on_played)
        fire_listeners(self._listeners, lambda listener: listener.on_process_played(self))
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

    def _wakeup(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _deliver(self, value: Any) -> bool:
        if self._resumed:
            return False
        self._resumed = True
        self._resume_value = value
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
        old = machine.state
        new = machine.next_state(event)
        moves = len(machine.history)
        try:
            if old is ProcessState.RUNNING:
                self.on_exit_running()
            elif old is ProcessState.WAITING:
                self.on_exit_waiting()
            if moves != len(machine.history):
                return
            self._entering_hook(event)
        except Exception as exc:
            if new in (ProcessState.EXCEPTED, ProcessState.KILLED):
                logger.exception("hook of process %s raised entering %s", self._pid, new.value)
            else:
                self._fail(exc)
                return
        if moves != len(machine.history):
            return
        machine.process(event)
        moves += 1
        try:
            self._entered_hooks(new)
        except Exception as exc:
            if new.terminal:
                logger.exception("hook of process %s raised in %s; ignored", self._pid, new.value)
            else:
                self._fail(exc)
                return
        if new.terminal and moves == len(machine.history):
            self._call_hook(self.on_terminated)
            self._on_terminal()

    def _fail(self, exc: Exception) -> None:
        if self._machine.state.terminal:
            # Already ended (e.g. a hook killed the process, then raised): the end stands.
            logger.error("process %s: error after termination ignored: %r", self._pid, exc)
            return
        self._exception = exc
        self._transition(Fail.from_exception(exc))

    def _entering_hook(self, event: Event) -> None:
        match event:
            case Start() | Continue() | Resume():
                self.on_run()
            case Wait():
                self.on_wait()
            case Finish(result=result, successful=successful):
                self.on_finish(result, successful)
            case Fail(type_name=type_name, message=message):
                self.on_except(type_name, message)
            case Kill(message=message):
                self.on_kill(message)

    def _entered_hooks(self, new: ProcessState) -> None:
        moves = len(self._machine.history)

        def fire(call: Callable[[ProcessListener], object]) -> None:
            fire_listeners(self._listeners, call)

        data = self._machine.data
        match new:
            case ProcessState.RUNNING:
                fire(lambda listener: listener.on_process_running(self))
                hook: Callable[[], None] = self.on_running
            case ProcessState.WAITING:
                fire(lambda listener: listener.on_process_waiting(self))
                hook = self.on_waiting
            case ProcessState.FINISHED:
                fire(lambda listener: listener.on_process_finished(self, self.outputs))
                hook = self.on_finished
            case ProcessState.EXCEPTED:
                assert isinstance(data, Excepted)
                reason = f"{data.type_name}: {data.message}"
                fire(lambda listener: listener.on_process_excepted(self, reason))
                hook = self.on_excepted
            case ProcessState.KILLED:
                assert isinstance(data, Killed)
                message = data.message
                fire(lambda listener: listener.on_process_killed(self, message))
                hook = self.on_killed
            case _:  # pragma: no cover - CREATED is never entered by a move
                return
        if moves == len(self._machine.history):
            hook()

    def _on_terminal(self) -> None:
        state = self._machine.state
        if self._pending_pause is not None:
            self._pending_pause[0]._resolve(False, f"process already {state.value}")
            self._pending_pause = None
        if self._pending_kill is not None:
            self._pending_kill[0]._resolve(False, f"process already {state.value}")
            self._pending_kill = None
        for scope in (self._step_scope, self._block_scope):
            if scope is not None:
                scope.cancel()
        self._discard_awaitable()
        self._next_call = None
        if self._terminated_event is not None:
            self._terminated_event.set()

    def _discard_awaitable(self) -> None:
        awaitable, self._awaitable = self._awaitable, None
        _close_unstarted(awaitable)

    # -- the driver ---------------------------------------------------------------------------

    def _check_not_launched(self) -> None:
        if self._runner is not None:
            raise ProcessStateError(f"process {self._pid} was already launched")

    def _bind(self, runner: Runner) -> None:
        self._check_not_launched()
        self._runner = runner

    async def _drive(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the process until it is terminal. Started once, by the runner."""
        self._driving = True
        task_status.started()
        try:
            await self._step_until_terminated()
        except anyio.get_cancelled_exc_class():
            # The runner (or an enclosing scope) was cancelled: the process cannot go on, and
            # leaving it non-terminal would hang everyone awaiting it.
            if not self._machine.state.terminal:
                self._kill_now("killed by cancellation")
            raise
        except Exception as exc:  # pragma: no cover - a driver bug; never leave it hanging
            logger.exception("driver of process %s failed", self._pid)
            if not self._machine.state.terminal:
                self._fail(exc)
        finally:
            self._driving = False
            if self._runner is not None:
                self._runner._forget(self)

    async def _step_until_terminated(self) -> None:
        machine = self._machine
        while not machine.state.terminal:
            if machine.paused:
                await self._block("play", lambda: not machine.paused)
                continue
            match machine.state:
                case ProcessState.CREATED:
                    self._next_call = (self.run, (), {})
                    self._transition(Start())
                case ProcessState.WAITING:
                    if not self._resumed:
                        await self._wait_for_resume()
                    elif self._wait_error is not None:
                        self._fail(self._wait_error)
                    else:
                        assert self._wait_next is not None
                        value = self._resume_value
                        args = () if value is NO_VALUE else (value,)
                        self._next_call = (self._wait_next, args, {})
                        self._discard_awaitable()
                        self._transition(Resume(value))
                case ProcessState.RUNNING:
                    await self._run_step()
                    # Let other tasks run between steps, so that many processes made of sync
                    # steps share the loop fairly.
                    await anyio.lowlevel.checkpoint()

    async def _block(self, on: str, until: Callable[[], bool]) -> None:
        """Sleep until ``until()`` holds; woken by ``_wakeup``, ended early by a kill."""
        with anyio.CancelScope() as scope:
            self._block_scope = scope
            self._blocked_on = on
            try:
                while not until():
                    wake = self._wake = anyio.Event()
                    await wake.wait()
            finally:
                self._block_scope = None
                self._blocked_on = None
                self._wake = None

    async def _wait_for_resume(self) -> None:
        awaitable, self._awaitable = self._awaitable, None
        with anyio.CancelScope() as scope:
            self._block_scope = scope
            try:
                async with anyio.create_task_group() as tg:
                    if awaitable is not None:
                        tg.start_soon(self._await_awaitable, awaitable)
                    self._blocked_on = "resume"
                    while not self._resumed:
                        wake = self._wake = anyio.Event()
                        await wake.wait()
                    # Resumed (by resume() or the awaitable): stop awaiting the awaitable.
                    tg.cancel_scope.cancel()
            finally:
                self._block_scope = None
                self._blocked_on = None
                self._wake = None
                # A coroutine whose task was cancelled before it started must still be closed.
                _close_unstarted(awaitable)

    async def _await_awaitable(self, awaitable: object) -> None:
        try:
            value = await _await_any(awaitable)
        except Exception as exc:
            self._deliver_error(exc)
        else:
            self._deliver(value)

    async def _run_step(self) -> None:
        call, self._next_call = self._next_call, None
        assert call is not None
        fn, args, kwargs = call
        result: Any = None
        error: Exception | None = None
        token = _CURRENT.set(self)
        self._stepping = True
        try:
            with anyio.CancelScope() as scope:
                self._step_scope = scope
                try:
                    result = fn(*args, **kwargs)
                    if inspect.iscoroutine(result):
                        result = await result
                except Exception as exc:
                    error = exc
        finally:
            self._step_scope = None
            self._stepping = False
            _CURRENT.reset(token)
        self._after_step(result, error)

    def _after_step(self, result: Any, error: Exception | None) -> None:
        machine = self._machine
        if machine.state.terminal:
            # Force-killed (or killed by a hook) while the step ran: its outcome is ignored.
            if error is not None:
                logger.debug("process %s: step error after kill ignored: %r", self._pid, error)
            return
        if self._pending_kill is not None:
            handle, msg = self._pending_kill
            self._pending_kill = None
            self._kill_now(msg)
            handle._resolve(True, "killed")
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
        match result:
            case Continue(fn=fn, args=args, kwargs=kwargs):
                self._next_call = (fn, args, kwargs)
                self._transition(result)
            case Wait(awaitable=awaitable, next_step=next_step):
                _check_awaitable(awaitable)
                self._awaitable = awaitable
                self._wait_next = next_step
                self._resumed = False
                self._resume_value = NO_VALUE
                self._wait_error = None
                self._transition(result)
            case Kill():
                self._transition(result)
            case Event():
                raise TypeError(f"a step can't return {type(result).__name__}")
            case ExitCode():
                self._finish(result, result.successful)
            case _:
                self._finish(result, True)

    def _finish(self, result: Any, successful: bool) -> None:
        if successful:
            missing = type(self).spec().missing_required_outputs(self._outputs)
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


def _close_unstarted(awaitable: object) -> None:
    """Close a coroutine that was never started, so it is not reported as never awaited."""
    if inspect.iscoroutine(awaitable) and inspect.getcoroutinestate(awaitable) == "CORO_CREATED":
        awaitable.close()


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
