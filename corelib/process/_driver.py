"""The driver: what advances a process, step by step, around the sans-IO state machine.

:class:`ProcessDriver` sits between :class:`~corelib.Process` (the class users subclass) and
:class:`~corelib.process._core.ProcessCore` (state moves and hooks). It owns the fields of steps
and waits, and the methods a runner calls to drive a process.

Theory of operation
-------------------

A process owns a :class:`~corelib.process._states.ProcessStateMachine`. Everything here is
synchronous and may be called from any task of the process's loop (never from another thread),
except the two coroutines that await user code: :meth:`ProcessDriver._drive` and the watcher
of a wait.

**Advancing.** :meth:`ProcessDriver._advance` is the heart of the driver and it never awaits.
It moves the process as far as it can go without waiting, up to a step boundary:

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
  the pump hands the process to a new task of the runner that runs
  :meth:`ProcessDriver._drive`;
* :meth:`ProcessDriver._drive`, which awaits an async step inside a cancel scope (created only
  for async steps: a sync step can't be interrupted anyway) and keeps advancing in its task.
  It is also what :meth:`Runner.start` runs in a task, and what :meth:`Runner.run` runs inline
  in the calling task.

The runner reaches the process, and the process its runner, only through the methods named
here and in :class:`~corelib.process._process.ProcessHost` (the process layer imports nothing
from the runner).

**Letting go (parking).** When ``_advance`` says *let go* and the process is not terminal, it
is blocked on an external request (``play`` or ``resume``). The driver returns: a parked
process holds no task, cancel scope or coroutine frame, only its own small state. The
request that unblocks it (``resume(value)``, ``play()``) hands it back to the runner's pump
queue (:meth:`ProcessDriver._wakeup`); ``kill()`` simply ends it. The runner counts its parked
processes and keeps its pump task alive while there are any, so that leaving the runner
still waits for them and cancelling the runner kills them. Waiting on an awaitable uses one
watcher task of the runner, which awaits it in a cancel scope and calls ``resume`` with its
value (resuming by hand, or killing, cancels the watcher). The awaitable is awaited from the
moment the process enters WAITING, paused or not: a pause does not stop a wait, and a paused
process that gets resumed keeps the value and continues after ``play()``.

**Failures.** Whatever user code raises (a step, sync or async, the awaitable of a wait, a hook)
makes that process EXCEPTED with the exception recorded, ``BaseException`` included:
``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a ``BaseExceptionGroup``, even the
loop's cancellation class raised by the code itself. A process's failure is never its runner's:
it must not end the pump, the other processes or the worker the runner lives in. The one
exception is the *loop's cancellation*: the backend's cancellation exception delivered to an
``await`` because an enclosing cancel scope was cancelled (a kill cancels the step's scope;
cancelling the runner cancels them all; on asyncio also a native ``Task.cancel()``), which
:func:`_is_cancellation` tells from a stray one. That one propagates, as the loop expects: the
step's own scope absorbs a kill's, and the driver kills the process on the runner's. A sync call
can't receive the loop's cancellation at all, so what a sync step or hook raises is always its
failure.

**Control requests** (``pause``/``play``/``kill``, on :class:`~corelib.Process`) acting *at
step end* are settled here when the step returns (:meth:`ProcessDriver._after_step`); a
graceful kill also cancels the step's scope, so an async step stops at its next ``await``.

Invariants: a terminal state is never left (a force-killed step's result is discarded); every
handle is resolved at the latest when the process terminates; every task (pump, step driver,
watcher) belongs to the runner's task group, or is the caller's own (``Runner.run``), and
none outlives the process's need of it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
from collections.abc import Callable, Coroutine, Mapping
from types import CoroutineType, MappingProxyType, MethodType
from typing import Any, Final, final

import anyio
import anyio.lowlevel
import attrs

from ._core import DriverHost, ProcessCore
from ._errors import ProcessStateError
from ._exit_code import ExitCode
from ._frozen import AttributesFrozenDict
from ._states import (
    NO_VALUE,
    TERMINAL_STATES,
    Continue,
    Event,
    Finish,
    Kill,
    ProcessState,
    ProcessStateMachine,
    Resume,
    Start,
    Wait,
)

__all__ = ["ProcessStatistics", "MISSING_OUTPUTS_STATUS"]

logger = logging.getLogger("corelib.process")

MISSING_OUTPUTS_STATUS: Final = 11
"""Exit status of a process that returned success but left required outputs unset."""

_CURRENT: contextvars.ContextVar[ProcessCore | None] = contextvars.ContextVar(
    "corelib_current_process", default=None
)
"""The process whose step runs in the current task (``Process.current()``)."""

_Call = tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]]

_NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})

_CREATED, _RUNNING, _WAITING = ProcessState.CREATED, ProcessState.RUNNING, ProcessState.WAITING
_TERMINAL: Final = TERMINAL_STATES


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


class ProcessDriver(ProcessCore):
    """The driver half of a process: steps, waits, parking (see the module docstring).

    Not meant to be used on its own: :class:`~corelib.Process` is the class to subclass. The
    fields set here exist only while a process runs steps or waits; a terminal process drops
    what they hold.
    """

    __slots__ = (
        "_driving",
        "_next_call",
        "_resume_value",
        "_resumed",
        "_step_scope",
        "_stepping",
        "_wait_error",
        "_wait_next",
        "_wait_next_bound",
        "_watch_pending",
        "_watch_scope",
    )

    def _setup(self, inputs: AttributesFrozenDict, pid: str, machine: ProcessStateMachine) -> None:
        """Set every field, the core's and the driver's, in one call (a hot path); shared by
        ``__init__`` and ``_restore`` (which runs no hook)."""
        # the core's (declared, with their types, on ProcessCore)
        self._inputs = inputs
        self._pid = pid
        self._machine = machine
        self._outputs = None
        self._outputs_view = None
        self._listeners = None
        self._exception = None
        self._runner = None
        self._terminated_event = None
        self._pending_pause = None
        self._pending_kill = None
        # the driver's
        self._driving = False
        self._stepping = False
        self._next_call: _Call | None = None
        self._step_scope: anyio.CancelScope | None = None
        # The step to resume with. A method of this process is kept as its plain function
        # (``_wait_next_bound``) and bound again on resume: a bound method would be one more
        # object, and a reference cycle, for every waiting process.
        self._wait_next: Callable[..., Any] | None = None
        self._wait_next_bound = False
        self._watch_pending = False  # a watcher task was spawned and has not started yet
        self._watch_scope: anyio.CancelScope | None = None
        self._resumed = False
        self._resume_value: Any = NO_VALUE
        self._wait_error: BaseException | None = None

    def _host(self) -> DriverHost:
        """The host (runner) the process was launched in.

        Raises:
            ProcessStateError: the process was not launched.
        """
        if self._runner is None:
            raise ProcessStateError(f"process {self._pid} was not launched")
        return self._runner

    def _on_terminal(self) -> None:
        for scope in (self._step_scope, self._watch_scope):
            if scope is not None:
                scope.cancel()
        self._watch_pending = False
        # Drop what the process no longer needs (bound methods refer back to it).
        self._next_call = None
        self._wait_next = None
        self._wait_next_bound = False
        self._resume_value = NO_VALUE
        ProcessCore._on_terminal(self)  # not super(): once per process, on the hot path

    # -- observing ----------------------------------------------------------------------------

    def statistics(self) -> ProcessStatistics:
        """Return a snapshot of the driver's situation."""
        return ProcessStatistics(
            state=self._machine.state,
            paused=self._machine.paused,
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

    # -- restored processes -------------------------------------------------------------------

    def _rewait(self) -> None:
        """After a restored WAITING process was launched: wait again on what it awaited."""
        awaitable = self._restored_awaitable()
        machine = self._machine
        if awaitable is None or machine.state is not _WAITING or self._resumed:
            return
        self._host()._spawn(self._watch, awaitable, machine.moves, name=f"wait {self._pid}")
        self._watch_pending = True

    def _restored_awaitable(self) -> Any:
        """What a process loaded while WAITING waits on again; ``None``: a ``resume()``.

        Subclasses that can re-attach to what they waited for (WorkChains and their
        children) override it.
        """
        return None

    # -- resuming a wait ----------------------------------------------------------------------

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

    def _deliver_error(self, exc: BaseException) -> None:
        if not self._resumed:
            self._wait_error = exc
            self._deliver(NO_VALUE)

    # -- the driver ---------------------------------------------------------------------------

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
        except BaseException as exc:  # a sync call can't receive the loop's cancellation
            error = exc
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
        error: BaseException | None = None
        token = _CURRENT.set(self)
        try:
            if self._machine.state.terminal:
                # Force-killed before the coroutine started: don't start it.
                _close_unstarted(step)
            else:
                with anyio.CancelScope() as scope:
                    self._step_scope = scope
                    if self._pending_kill is not None:
                        scope.cancel()  # it stops at its first await
                    try:
                        result = await step
                    except BaseException as exc:
                        if _is_cancellation(exc):
                            raise  # a kill's (absorbed by the scope) or the runner's
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
        except BaseException as exc:
            if _is_cancellation(exc):
                # The runner (or an enclosing scope) was cancelled: the process cannot go on,
                # and leaving it non-terminal would hang everyone awaiting it.
                if not self._machine.state.terminal:
                    self._kill_now("killed by cancellation")
                raise
            # Not the loop's: a driver bug, or user code outside a step (a listener of a
            # pause). It ends this process, never the runner's task group.
            self._driver_failed(exc)
        finally:
            self._let_go()

    def _driver_failed(self, exc: BaseException) -> None:
        """What escaped a driver that is not the loop's cancellation: the process excepts."""
        logger.error("driver of process %s failed", self._pid, exc_info=exc)
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
        error: BaseException | None = None
        with anyio.CancelScope() as scope:
            self._watch_scope = scope
            try:
                value = await _await_any(awaitable)
            except BaseException as exc:
                if _is_cancellation(exc):
                    raise  # the wait ended (absorbed by the scope), or the runner's
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

    def _after_step(self, result: Any, error: BaseException | None) -> None:
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
                self._host()._spawn(self._watch, awaitable, machine.moves, name=f"wait {self._pid}")
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


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc``, caught around an ``await`` in the current task, is the loop's
    cancellation rather than something user code raised itself.

    It is when it is (or a group holds) the backend's cancellation exception *and* the task is
    being cancelled: an enclosing cancel scope was cancelled (the effective deadline is
    ``-inf``), or, on asyncio, a native ``Task.cancel()`` is pending (``cancelling()``; anyio
    takes back its own requests when a scope absorbs them). asyncio's ``CancelledError``
    raised by a step that nobody cancelled is then the step's failure, as any exception is.
    """
    cancelled = anyio.get_cancelled_exc_class()
    if not isinstance(exc, cancelled) and not (
        isinstance(exc, BaseExceptionGroup) and exc.subgroup(cancelled) is not None
    ):
        return False
    if anyio.current_effective_deadline() == -math.inf:
        return True
    if asyncio._get_running_loop() is None:  # trio: only a cancelled scope cancels
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _close_unstarted(awaitable: object) -> None:
    """Close a coroutine that was never started, so it is not reported as never awaited.

    The coroutines it was given as arguments (a WorkChain's outline step, handed to the
    wrapper that would have awaited it) are closed with it: nothing else ever will.
    """
    if inspect.iscoroutine(awaitable) and inspect.getcoroutinestate(awaitable) == "CORO_CREATED":
        frame = awaitable.cr_frame
        inner = [v for v in frame.f_locals.values() if inspect.iscoroutine(v)] if frame else []
        awaitable.close()
        for coroutine in inner:
            _close_unstarted(coroutine)


def _discard(result: Any) -> None:
    """Drop what a step returned after the process was killed (closing a ``Wait``'s coroutine)."""
    if type(result) is Wait:
        _close_unstarted(result.awaitable)


def _check_awaitable(awaitable: object) -> None:
    if awaitable is None or isinstance(awaitable, anyio.Event | ProcessCore | anyio.Future):
        return
    if inspect.isawaitable(awaitable) or callable(awaitable):
        return
    raise TypeError(f"can't wait on {awaitable!r}: not awaitable")


async def _await_any(awaitable: object) -> Any:
    """Await what a ``Wait`` names and return the resume value."""
    if isinstance(awaitable, anyio.Event):
        await awaitable.wait()
        return NO_VALUE
    if isinstance(awaitable, ProcessCore):
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
