"""The process layer's exception taxonomy.

Every error raised by the process machinery derives from :class:`ProcessError`. Port and spec
validation errors (``PortValidationError``) live with the ports and are not part of this tree:
they describe bad *data*, these describe a process used in the wrong *state*.

Messages are short, lower-case and name the offending value and state, e.g.
``"can't handle Kill in state FINISHED"``.
"""

from __future__ import annotations

from typing import Any, final

__all__ = [
    "ProcessError",
    "InvalidTransitionError",
    "ProcessStateError",
    "ProcessNotFinishedError",
    "ProcessExceptedError",
    "ProcessKilledError",
    "RunnerNotRunningError",
    "LoopRunningError",
    "InvalidWaitError",
]


class ProcessError(Exception):
    """Base class of every error raised by the process machinery."""


@final
class InvalidTransitionError(ProcessError):
    """Raised when an event is not allowed in the machine's current state.

    The state machine is left unchanged. This is the caller's fault: the event was fed to the
    machine (or, for ``resume``, requested of a process) in a state whose row of the transition
    table has no entry for it.

    Args:
        event: the name of the rejected event type, e.g. ``"Kill"``.
        state: the name of the state that rejected it, e.g. ``"FINISHED"``.
    """

    def __init__(self, event: str, state: str) -> None:
        super().__init__(f"can't handle {event} in state {state}")
        self.event = event
        self.state = state


@final
class ProcessStateError(ProcessError):
    """Raised when an operation is not valid for the process in its current state.

    Examples: emitting an output from a terminated process, launching a process that was
    already launched.
    """


@final
class ProcessNotFinishedError(ProcessError):
    """Raised by ``Process.result()`` when the process has not terminated yet."""


@final
class ProcessExceptedError(ProcessError):
    """Raised by ``Process.result()`` (and ``run``/``run_sync``) when the process excepted.

    The failure is carried as plain data so it can cross process and checkpoint boundaries;
    when raised in the process's own interpreter the original exception is chained as
    ``__cause__``.

    Args:
        pid: the process id.
        type_name: the name of the exception type that ended the process.
        message: ``str()`` of that exception.
        traceback: the formatted traceback text.
        outcome: the outcome dict it was made from, when it comes from another worker (see
            :func:`~corelib.outcome_of`); ``None`` otherwise.
    """

    def __init__(
        self,
        pid: str,
        type_name: str,
        message: str,
        traceback: str,
        *,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"process {pid} excepted: {type_name}: {message}")
        self.pid = pid
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.outcome = outcome


@final
class ProcessKilledError(ProcessError):
    """Raised by ``Process.result()`` (and ``run``/``run_sync``) when the process was killed.

    Args:
        pid: the process id.
        message: the kill message, or ``None`` when none was given.
        outcome: the outcome dict it was made from, when it comes from another worker (see
            :func:`~corelib.outcome_of`); ``None`` otherwise.
    """

    def __init__(
        self, pid: str, message: str | None, *, outcome: dict[str, Any] | None = None
    ) -> None:
        text = f"process {pid} was killed"
        super().__init__(text if message is None else f"{text}: {message}")
        self.pid = pid
        self.message = message
        self.outcome = outcome


@final
class ProcessNotFoundError(ProcessError, KeyError):
    """Raised when a worker (or a cluster) runs no live process with the requested pid.

    The process was never submitted there, or it has terminated (a worker keeps only the
    processes it runs). It is a :class:`KeyError` too, as a missed lookup in
    :attr:`~corelib.Runner.processes` is.

    Args:
        pid: the requested pid.
        where: what was searched, e.g. ``"worker 'w1'"``.
    """

    def __init__(self, pid: str, where: str) -> None:
        super().__init__(f"no process {pid!r} runs on {where}")
        self.pid = pid
        self.where = where

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@final
class RunnerNotRunningError(ProcessError):
    """Raised when a process is submitted to a runner outside its ``async with`` block."""


@final
class LoopRunningError(ProcessError, RuntimeError):
    """Raised by ``run_sync`` when the calling thread already runs an event loop.

    ``run_sync`` starts an event loop of its own, and a thread can't run two: the caller is in
    async code and must ``await corelib.run(...)`` (or ``runner.run(...)``) instead. It is a
    ``RuntimeError`` too, as anyio's own refusal is.

    Args:
        library: the name of the running event loop's library (``"asyncio"`` or ``"trio"``).
    """

    def __init__(self, library: str) -> None:
        super().__init__(
            f"run_sync can't be called from a thread that runs an event loop ({library});"
            " in async code, use 'await corelib.run(...)' instead"
        )
        self.library = library


@final
class InvalidWaitError(ProcessError, TypeError):
    """Raised when a :class:`~corelib.Wait` is built with arguments that can't make a wait.

    It is the caller's fault, and it is raised where the ``Wait(...)`` is built (inside a step,
    the process excepts with it): a callable where the awaitable belongs (typically the next
    step, in plumpy's order) or an awaitable where the next step belongs, a plain (not async)
    function as the awaitable, or an async function that needs arguments (not called). It is a
    ``TypeError`` too, as Python's own complaints about wrong arguments are.

    Args:
        message: what is wrong, naming both arguments.
        awaitable: the ``awaitable`` argument given.
        next_step: the ``next_step`` argument given.
    """

    def __init__(self, message: str, awaitable: object, next_step: object) -> None:
        super().__init__(message)
        self.awaitable = awaitable
        self.next_step = next_step
