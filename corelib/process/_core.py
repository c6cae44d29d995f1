"""The core of a process: its declaration, its hooks and the state moves that call them.

:class:`ProcessCore` is the bottom of the chain of classes that make up
:class:`~corelib.Process` (``Process`` -> :class:`~corelib.process._driver.ProcessDriver` ->
``ProcessCore``). It knows what a process *is* and how it changes state; it knows nothing of
steps, waits or tasks (the driver above it does).

Theory of operation
-------------------

**Moves.** Every state move goes through :meth:`ProcessCore._transition`, which asks the
sans-IO machine (:mod:`~corelib.process._states`, rule 1) for the new state and runs the hooks
around the move in plumpy's order: the exit hook of the old state, the entering hook of the new
one, the state installed, the listeners, the entered hook, and for a terminal state
``on_terminated``. A hook that raises moves the process to EXCEPTED
(:meth:`ProcessCore._fail`), except around a terminal state, where it is logged so that the
terminal state stands. That holds for any ``BaseException`` (``SystemExit``...): hooks are sync
calls, so it can't be the loop's cancellation. A listener's ``Exception`` is logged and ignored
(:func:`~corelib.process._listener.notify_listeners`); anything else it raises counts as a
failing hook. A hook (or a listener) that itself moved the process ends the move it
interrupted: the remaining hooks of that move are skipped.

**Hooks** are the ``on_*`` methods and ``run``, the first step; they are declared here, next to
the moves that call them, and subclasses of ``Process`` override them.

**Terminal states.** Entering one resolves the pending control requests, wakes everyone in
:meth:`ProcessCore.wait`, and tells the process's host (its runner) through the small
:class:`DriverHost` interface, the part of :class:`~corelib.process._process.ProcessHost` the
core and the driver use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

import anyio
import anyio.lowlevel

from ._frozen import AttributesFrozenDict
from ._listener import ProcessListener, notify_listeners
from ._spec import ProcessSpec
from ._states import (
    TERMINAL_STATES,
    Continue,
    Event,
    Excepted,
    Fail,
    Finish,
    Kill,
    Killed,
    Pause,
    ProcessState,
    ProcessStateMachine,
    Resume,
    Start,
    Wait,
)

if TYPE_CHECKING:
    from ._handles import ControlHandle

__all__: list[str] = []  # nothing public: Process (in _process) is what users subclass

logger = logging.getLogger("corelib.process")

_NO_OUTPUTS: Final = AttributesFrozenDict()

_RUNNING, _WAITING = ProcessState.RUNNING, ProcessState.WAITING
_FINISHED, _EXCEPTED, _KILLED = ProcessState.FINISHED, ProcessState.EXCEPTED, ProcessState.KILLED
_TERMINAL: Final = TERMINAL_STATES


class DriverHost(Protocol):
    """What the core and the driver ask of the host that drives a process (its runner).

    The part of :class:`~corelib.process._process.ProcessHost` used below the ``Process``
    class. The process arguments are typed ``Any`` only because this module sits below
    ``Process``, the class a host's methods take; ``ProcessHost`` declares them as
    ``Process``, and a runner is checked against that.
    """

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None:
        """Start ``fn(*args)`` in a task of the host's task group, named ``name``."""

    def _park(self, process: Any) -> None:
        """``process`` was let go of while blocked: keep the host open for it."""

    def _unpark(self, process: Any) -> None:
        """A parked ``process`` can go on: drive it again."""

    def _forget(self, process: Any) -> None:
        """``process`` was let go of in a terminal state: drop it."""

    def _terminated(self, process: Any) -> None:
        """``process`` reached a terminal state (it was parked unless driven)."""


class ProcessCore:
    """A process's declaration, hooks and state moves (see the module docstring).

    Not meant to be used on its own: :class:`~corelib.Process` is the class to subclass. Its
    fields are the process's identity, data and state; the pending control requests live here
    too, since a terminal move resolves them. They are declared here and set, with the
    driver's, by ``ProcessDriver._setup`` in one call (creating a process is a hot path).
    """

    __slots__ = (
        "__weakref__",
        "_exception",
        "_inputs",
        "_listeners",
        "_machine",
        "_outputs",
        "_outputs_view",
        "_pending_kill",
        "_pending_pause",
        "_pid",
        "_runner",
        "_terminated_event",
    )

    _inputs: AttributesFrozenDict
    _pid: str
    _machine: ProcessStateMachine
    # Made on first use: most processes have no listeners, and many no outputs.
    _outputs: dict[str, Any] | None
    _outputs_view: AttributesFrozenDict | None
    _listeners: list[ProcessListener] | None
    _exception: BaseException | None
    _runner: DriverHost | None
    _terminated_event: anyio.Event | None
    # pending control requests (only while a step runs)
    _pending_pause: tuple[ControlHandle, str | None] | None
    _pending_kill: tuple[ControlHandle, str | None] | None

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

    @property
    def outputs(self) -> AttributesFrozenDict:
        """The outputs emitted so far, nested by namespace; an immutable snapshot."""
        if self._outputs_view is None:
            if self._outputs is None:
                return _NO_OUTPUTS  # immutable, so shared (``run`` reads every process's)
            self._outputs_view = AttributesFrozenDict(self._outputs)
        return self._outputs_view

    async def wait(self) -> None:
        """Wait until the process is in a terminal state, however it ended; never raises.

        A process that finished, excepted or was killed all end the wait alike (killing a
        process and waiting for it to be gone is the common use). To get the outcome, call
        :meth:`~corelib.Process.result` after it: it returns the result, or raises
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

    # -- listeners and hooks --------------------------------------------------------------

    def _notify(self, method: str, *args: Any) -> None:
        if self._listeners:
            notify_listeners(self._listeners, method, self, *args)

    def _call_hook(self, hook: Callable[..., object], *args: Any) -> None:
        try:
            hook(*args)
        except BaseException:  # a hook is sync: whatever it raises is its own failure
            logger.exception("hook %s of process %s raised; ignored", hook.__name__, self._pid)

    # -- moves --------------------------------------------------------------------------------

    def _apply_pause(self, msg: str | None) -> None:
        self._machine.apply(Pause(msg))
        self._call_hook(self.on_paused, msg)
        self._notify("on_process_paused")

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
        except BaseException as exc:  # hooks are sync: never the loop's cancellation
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
        except BaseException as exc:
            if terminal:
                logger.exception("hook of process %s raised in %s; ignored", self._pid, new.value)
            else:
                self._fail(exc)
                return
        if terminal and moves == len(history):
            self._call_hook(self.on_terminated)
            self._on_terminal()

    def _fail(self, exc: BaseException) -> None:
        """Move to EXCEPTED because of ``exc``, which :attr:`exception` keeps.

        Any ``BaseException`` user code raised (``SystemExit``, ``KeyboardInterrupt``...) is
        recorded like an ``Exception``: it ends this process, never its runner or worker.
        """
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
        """The process just entered a terminal state (after ``on_terminated``).

        Resolves the pending control requests, ends :meth:`wait` and tells the host. The
        driver extends it to drop what it holds for steps and waits.
        """
        state = self._machine.state
        if self._pending_pause is not None:
            self._pending_pause[0]._resolve(False, f"process already {state.value}")
            self._pending_pause = None
        if self._pending_kill is not None:
            self._pending_kill[0]._resolve(False, f"process already {state.value}")
            self._pending_kill = None
        if self._terminated_event is not None:
            self._terminated_event.set()
        if self._runner is not None:
            self._runner._terminated(self)

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

    @classmethod
    def _checkpoint_steps(cls) -> frozenset[str] | None:
        """The step names a checkpoint of this class may name, or ``None`` for the default rule.

        A checkpoint names the step a running process calls next (with arguments from the
        checkpoint) and the one a waiting process resumes with; the process calls that method
        when it goes on, so :func:`~corelib.load_process` accepts only the names this
        returns. ``None`` (here) means its default rule: ``run``, or a plain function defined
        by the process's own classes, never a method of ``Process`` itself. A class that knows
        its steps (a WorkChain) returns them.
        """
        return None
