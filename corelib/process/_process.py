"""The Process base class: what users subclass, and what other layers ask of a process.

:class:`Process` is the top of a chain of three classes, each in its own module:

* :class:`Process` (here): the user-facing API: construction and inputs, observing (state,
  outputs, result, ``wait``), emitting outputs (:meth:`Process.out`), listeners, children
  (:meth:`Process.submit`) and the control requests (``pause``, ``play``, ``kill``,
  ``resume``);
* :class:`~corelib.process._driver.ProcessDriver`: the driver that advances a process step
  by step, parks and wakes it (its module docstring is the theory of operation of running a
  process);
* :class:`~corelib.process._core.ProcessCore`: the spec, the ``on_*`` hooks and ``run``, and
  the state moves that call the hooks.

Only :class:`Process` is public; the chain shares one set of slots, so a process is as small
and as fast to use as a single class.

Theory of operation: control requests
-------------------------------------

A process runs in a host, a :class:`~corelib.Runner`, which it knows only through the
:class:`ProcessHost` interface declared here (the process layer imports nothing from the
runner).

**Control requests** (``pause``/``play``/``kill``) are plain sync methods. Each asks
:func:`~corelib.process._states.decide` what to do and returns a :class:`ControlHandle`, an
awaitable that always resolves to a :class:`ControlOutcome`:

* acting *now* is done synchronously in the caller (e.g. ``kill()`` moves to KILLED before it
  returns): a parked process is released, a watcher or an async step being awaited is
  cancelled (an async step whose coroutine did not start yet is never started), and a queued
  process is dropped by the pump when its turn comes;
* acting *at step end* is recorded as a pending request and settled when the step returns.
  A graceful kill also cancels the step's scope, so an async step stops at its next
  ``await``; a sync step runs to its end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, TypeVar, cast

from ._driver import _CURRENT, ProcessDriver
from ._driver import MISSING_OUTPUTS_STATUS as MISSING_OUTPUTS_STATUS
from ._driver import ProcessStatistics as ProcessStatistics
from ._errors import (
    InvalidTransitionError,
    ProcessExceptedError,
    ProcessKilledError,
    ProcessNotFinishedError,
    ProcessStateError,
)
from ._exit_code import ExitCode
from ._frozen import AttributesFrozenDict
from ._handles import ControlHandle as ControlHandle
from ._handles import ControlOutcome as ControlOutcome
from ._handles import force_of as force_of
from ._handles import resolved
from ._listener import ProcessListener, notify_listeners
from ._states import (
    NO_VALUE,
    Action,
    Excepted,
    Finished,
    Killed,
    Play,
    ProcessState,
    ProcessStateMachine,
    Request,
    StateData,
    Transition,
    decide,
)

__all__ = [
    "Process",
    "ProcessHost",
    "ControlOutcome",
    "ControlHandle",
    "ProcessStatistics",
    "MISSING_OUTPUTS_STATUS",
]

_P = TypeVar("_P", bound="Process")

_WAITING = ProcessState.WAITING


class ProcessHost(Protocol):
    """What a process needs of whoever drives it: the interface a :class:`~corelib.Runner`
    implements (structurally; it does not inherit from this class).

    :attr:`Process.runner` is typed as this protocol, so the process layer never imports the
    runner. Besides :meth:`submit`, the methods are the driver's private handshake with its
    host: starting a task, and keeping count of the processes it let go of (see
    :mod:`corelib.process._driver`).
    """

    def submit(
        self,
        process_class: type[_P],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        listeners: Iterable[ProcessListener] = (),
    ) -> _P:
        """Create a process and start running it here; returns at once (not awaited)."""

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None:
        """Start ``fn(*args)`` in a task of the host's task group, named ``name``."""

    def _park(self, process: Process) -> None:
        """``process`` was let go of while blocked: keep the host open for it."""

    def _unpark(self, process: Process) -> None:
        """A parked ``process`` can go on: drive it again."""

    def _forget(self, process: Process) -> None:
        """``process`` was let go of in a terminal state: drop it."""

    def _terminated(self, process: Process) -> None:
        """``process`` reached a terminal state (it was parked unless driven)."""


class Process(ProcessDriver):
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

    Hooks (``on_*`` methods, declared on the base class
    :class:`~corelib.process._core.ProcessCore` next to the moves that call them) may be
    overridden; calling ``super()`` is good practice but not checked. An exception from a hook
    moves the process to EXCEPTED, except from the hooks of a terminal state (and from
    ``on_kill``/``on_except``), where it is logged so that the terminal state stands.

    The base classes declare ``__slots__`` to keep parked processes small; a subclass without
    ``__slots__`` gets a ``__dict__`` as usual, so subclasses may add any attributes.

    Args:
        inputs: raw inputs; validated against the spec (defaults applied). The mapping is not
            changed or kept.
        pid: the process id; by default 32 fresh random hex digits (like ``uuid4().hex``).
        listeners: listeners to attach from the start (they get ``on_process_created``).

    Raises:
        PortValidationError: the inputs do not match the spec; the message names the port path.
    """

    __slots__ = ()  # the fields are the base classes' slots

    # Set only by ``_bind``, to a ProcessHost (the base classes need only its driver half).
    _runner: ProcessHost | None

    @classmethod
    def current(cls) -> Process | None:
        """Return the process whose step is running in the current task, if any."""
        return cast("Process | None", _CURRENT.get())  # the driver sets only processes

    # -- construction -------------------------------------------------------------------------

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
    def runner(self) -> ProcessHost:
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

    # -- launching and children ------------------------------------------------------------------

    def _check_not_launched(self) -> None:
        if self._runner is not None:
            raise ProcessStateError(f"process {self._pid} was already launched")

    def _bind(self, runner: ProcessHost) -> None:
        """Launch the process in ``runner``; the caller is its first driver."""
        self._check_not_launched()
        self._runner = runner
        self._driving = True

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
                return resolved(Request.PAUSE, True, decision.reason)
            case Action.DEFER:
                if self._pending_pause is not None:
                    return self._pending_pause[0]
                handle = ControlHandle(Request.PAUSE)
                self._pending_pause = (handle, msg)
                return handle
            case action:
                return resolved(Request.PAUSE, action is Action.NOTHING, decision.reason)

    def play(self) -> ControlHandle:
        """Request a play (unpause); non-blocking and idempotent.

        Also cancels a pause that still waits for the running step to end.
        """
        decision = self._decide(Request.PLAY)
        match decision.action:
            case Action.NOW:
                self._apply_play()
                return resolved(Request.PLAY, True, decision.reason)
            case Action.CANCEL_PENDING_PAUSE:
                assert self._pending_pause is not None
                self._pending_pause[0]._resolve(False, "pause cancelled by play")
                self._pending_pause = None
                return resolved(Request.PLAY, True, decision.reason)
            case action:
                return resolved(Request.PLAY, action is Action.NOTHING, decision.reason)

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
                return resolved(request, True, decision.reason)
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
                return resolved(request, False, decision.reason)

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

    def _apply_play(self) -> None:
        self._machine.apply(Play())
        self._call_hook(self.on_played)
        self._notify("on_process_played")
        self._wakeup()
