"""Controlling processes from anywhere: :class:`ProcessController` and its blocking twin.

Both speak plumpy's messages over any communicator:

- RPCs to ``str(pid)``: ``{"intent": "status"|"pause"|"play"|"kill", "message": text,
  "force_kill": bool}``. An unknown pid raises :class:`~broker.UnroutableError`; a handler
  that raised, :class:`~broker.RemoteError`;
- broadcasts with the subjects ``"pause"``, ``"play"``, ``"kill"`` to every process of every
  bound runner (the body is the same message dict);
- tasks for a :class:`~corelib.ProcessLauncher`: ``{"task": "launch"|"continue"|"execute",
  "process_class": "module:qualname", "inputs": {...}, "pid": ..., "tag": ..., "nowait": bool,
  "persist": bool}`` (see :func:`~corelib.launch_body`, :func:`~corelib.continue_body`).

Every message is made, and every reply read, by :mod:`._messages`.

Control replies become :class:`~corelib.ControlOutcome`; status replies and launch results stay
the JSON-safe dicts the process side made (see :func:`~corelib.status_of`,
:func:`~corelib.outcome_of`).

Failures. A launch, continue or execute task replies with the outcome dict of its process
however it ended. ``execute`` (and every launch or continue given ``raise_on_failure=True``)
raises instead when the process excepted or was killed, as plumpy's ``execute_process`` does:
:class:`~corelib.ProcessExceptedError` or :class:`~corelib.ProcessKilledError`, with the outcome
dict as the error's ``outcome`` attribute (see :func:`~corelib.outcome_error`). A process that
*finished* is never an error, whatever its exit status: in plumpy, exit codes are results. On
success the call still returns the outcome dict (its ``pid`` is what ``continue_`` takes, its
``outputs`` the results), so a flag changes how failures arrive, never the return value.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, final

from broker import BlockingCommunicator, Communicator

from ..process._process import ControlOutcome, Process
from ._messages import (
    continue_body,
    control_message,
    control_outcome,
    kill_message,
    launch_body,
    outcome_error,
)
from ._remote import RemoteProcess

__all__ = ["ProcessController", "BlockingProcessController"]

T = TypeVar("T")


def _checked(outcome: Any) -> dict[str, Any]:
    """``outcome`` if its process finished, else raise its :func:`outcome_error`."""
    error = outcome_error(outcome)
    if error is not None:
        raise error
    result: dict[str, Any] = outcome
    return result


def _check_wait(nowait: bool, raise_on_failure: bool) -> None:
    if nowait and raise_on_failure:
        raise ValueError(
            "raise_on_failure=True needs the outcome; nowait=True replies with the pid"
        )


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (math.isnan(timeout) or timeout < 0):
        raise ValueError(f"timeout must be None or seconds >= 0, got {timeout!r}")


def _then(
    source: concurrent.futures.Future[Any], convert: Callable[[Any], T]
) -> concurrent.futures.Future[T]:
    """A future of ``convert(source.result())`` (or of its exception); cancelling it cancels
    ``source``, as far as ``source`` can still be cancelled."""
    derived: concurrent.futures.Future[T] = concurrent.futures.Future()

    def forward(done: concurrent.futures.Future[Any]) -> None:
        # on whichever thread completed ``source``; must not raise
        if done.cancelled():
            derived.cancel()
            return
        try:
            value = convert(done.result())
        except Exception as exc:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled
                derived.set_exception(exc)
        else:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                derived.set_result(value)

    def backward(done: concurrent.futures.Future[T]) -> None:
        if done.cancelled():
            source.cancel()

    derived.add_done_callback(backward)
    source.add_done_callback(forward)
    return derived


@final
class ProcessController:
    """Sends control messages and launch tasks through a communicator (async API).

    Bound a call with anyio's ``with anyio.fail_after(seconds):``; cancelling a call stops the
    wait, not the process. There are no ``*_future`` twins here: to have a launch run while
    you do something else, start the call in your task group, or use :meth:`launch_remote`.

    Args:
        communicator: any communicator; replies are awaited on the caller's loop.
        queue: the task queue launch tasks go to (the default queue when ``None``).
    """

    __slots__ = ("_comm", "_queue")

    def __init__(self, communicator: Communicator, *, queue: str | None = None) -> None:
        self._comm = communicator
        self._queue = queue

    @property
    def communicator(self) -> Communicator:
        return self._comm

    # -- one process --------------------------------------------------------------------------

    async def status(self, pid: str) -> dict[str, Any]:
        """Return the status dict of a live process (see :func:`~corelib.status_of`).

        Raises:
            UnroutableError: no live process has this pid.
        """
        reply: dict[str, Any] = await self._comm.rpc_send(str(pid), control_message("status"))
        return reply

    async def pause(self, pid: str, msg: str | None = None) -> ControlOutcome:
        """Pause a process; returns once the pause took effect (or could not)."""
        return control_outcome(await self._comm.rpc_send(str(pid), control_message("pause", msg)))

    async def play(self, pid: str) -> ControlOutcome:
        """Play (unpause) a process."""
        return control_outcome(await self._comm.rpc_send(str(pid), control_message("play")))

    async def kill(
        self,
        pid: str,
        msg: str | None = None,
        *,
        force: bool | None = None,
        force_kill: bool | None = None,
    ) -> ControlOutcome:
        """Kill a process; returns once the kill took effect (or could not).

        Args:
            pid: the process id.
            msg: the kill message (plumpy's ``msg_text``).
            force: kill at once, even in the middle of a step (default ``False``).
            force_kill: plumpy's name for ``force`` (``kill_process(pid, msg_text,
                force_kill)``), accepted as is.

        Raises:
            ValueError: ``force`` and ``force_kill`` were both given, with different values
                (nothing is sent).
        """
        reply = await self._comm.rpc_send(str(pid), kill_message(msg, force, force_kill))
        return control_outcome(reply)

    # -- everyone -----------------------------------------------------------------------------

    async def pause_all(self, msg: str | None = None) -> None:
        """Ask every process of every bound runner to pause (fire-and-forget)."""
        await self._comm.broadcast_send(control_message("pause", msg), subject="pause")

    async def play_all(self) -> None:
        """Ask every process of every bound runner to play."""
        await self._comm.broadcast_send(control_message("play"), subject="play")

    async def kill_all(
        self,
        msg: str | None = None,
        *,
        force: bool | None = None,
        force_kill: bool | None = None,
    ) -> None:
        """Ask every process of every bound runner to die; ``force``/``force_kill`` as for
        :meth:`kill` (and the same ``ValueError``)."""
        await self._comm.broadcast_send(kill_message(msg, force, force_kill), subject="kill")

    # -- tasks --------------------------------------------------------------------------------

    async def launch(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        persist: bool = False,
        nowait: bool = False,
        pid: str | None = None,
        raise_on_failure: bool = False,
    ) -> Any:
        """Have a worker launch a process.

        Returns:
            With ``nowait``, the pid, once the process answers RPCs; otherwise its outcome
            dict (see :func:`~corelib.outcome_of`) once it is terminal.

        Raises:
            ProcessExceptedError: with ``raise_on_failure``, the process excepted.
            ProcessKilledError: with ``raise_on_failure``, the process was killed.
            RemoteError: the launcher failed (e.g. the class is not allowed there).
            ValueError: both ``nowait`` and ``raise_on_failure`` (a pid is no outcome).
        """
        _check_wait(nowait, raise_on_failure)
        body = launch_body(process_class, inputs, persist=persist, nowait=nowait, pid=pid)
        reply = await self._comm.task_send(body, queue=self._queue)
        return _checked(reply) if raise_on_failure else reply

    async def continue_(
        self,
        pid: str,
        tag: str | None = None,
        *,
        nowait: bool = False,
        raise_on_failure: bool = False,
    ) -> Any:
        """Have a worker continue process ``pid`` from its checkpoint; returns (and raises) as
        :meth:`launch` does (a terminal checkpoint returns its stored outcome)."""
        _check_wait(nowait, raise_on_failure)
        body = continue_body(pid, tag, nowait=nowait)
        reply = await self._comm.task_send(body, queue=self._queue)
        return _checked(reply) if raise_on_failure else reply

    async def execute(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        raise_on_failure: bool = True,
    ) -> dict[str, Any]:
        """Launch with a checkpoint saved first, run to the end, return the outcome dict.

        If the worker dies, another one continues the process from its checkpoint. Unlike
        :meth:`launch`, a process that excepted or was killed raises by default, as plumpy's
        ``execute_process`` does; ``raise_on_failure=False`` returns its outcome dict instead.

        Raises:
            ProcessExceptedError: the process excepted (its ``outcome`` attribute holds the
                outcome dict).
            ProcessKilledError: the process was killed (idem).
            RemoteError: the launcher failed.
        """
        body = launch_body(process_class, inputs, persist=True, task="execute")
        reply = await self._comm.task_send(body, queue=self._queue)
        return _checked(reply) if raise_on_failure else reply

    def launch_remote(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        persist: bool = False,
    ) -> RemoteProcess:
        """A :class:`~corelib.RemoteProcess` that launches the process when first awaited."""
        body = launch_body(process_class, inputs, persist=persist, nowait=True)
        comm, queue = self._comm, self._queue

        async def launch() -> None:
            await comm.task_send(body, queue=queue)

        return RemoteProcess(comm, body["pid"], launch=launch)


@final
class BlockingProcessController:
    """:class:`ProcessController` for threads without an event loop (scripts, CLIs).

    Every method that waits for a reply blocks for at most its ``timeout=`` seconds (by
    default the controller's ``timeout``), then raises ``TimeoutError`` naming the call and
    the pid; a timeout stops the wait, not the process (a launched process keeps running).
    ``timeout=None`` means the default, as on :class:`~broker.BlockingCommunicator`; to wait
    without a bound, call the ``*_future`` twin and ``.result()`` it. The broadcasts
    (``*_all``) never wait. Each blocking method has a ``*_future`` twin that returns a
    :class:`concurrent.futures.Future` at once (cancelling it stops the wait only).

    Calling a blocking method from a thread that runs an event loop raises
    :class:`~broker.LoopThreadError`: await :class:`ProcessController` there.

    Args:
        communicator: a :class:`~broker.BlockingCommunicator`.
        queue: the task queue launch tasks go to.
        timeout: default bound of the blocking calls (``None``: the communicator's).

    Raises:
        ValueError: ``timeout`` is negative or NaN.
    """

    __slots__ = ("_comm", "_queue", "_timeout")

    def __init__(
        self,
        communicator: BlockingCommunicator,
        *,
        queue: str | None = None,
        timeout: float | None = None,
    ) -> None:
        _check_timeout(timeout)
        self._comm = communicator
        self._queue = queue
        self._timeout = timeout

    @property
    def communicator(self) -> BlockingCommunicator:
        return self._comm

    @property
    def timeout(self) -> float | None:
        """The default bound of the blocking calls (``None``: the communicator's)."""
        return self._timeout

    def _limit(self, timeout: float | None) -> float | None:
        _check_timeout(timeout)
        return self._timeout if timeout is None else timeout

    @staticmethod
    def _timed_out(what: str, limit: float | None) -> TimeoutError:
        within = "the communicator's timeout" if limit is None else f"{limit} s"
        return TimeoutError(f"no reply to {what} within {within}")

    def _rpc(self, pid: str, msg: dict[str, Any], timeout: float | None) -> Any:
        limit = self._limit(timeout)
        try:
            return self._comm.rpc_send(str(pid), msg, timeout=limit)
        except TimeoutError:
            raise self._timed_out(f"{msg['intent']} of process {str(pid)!r}", limit) from None

    def _task(self, body: dict[str, Any], timeout: float | None) -> Any:
        limit = self._limit(timeout)
        try:
            return self._comm.task_send(body, queue=self._queue, timeout=limit)
        except TimeoutError:
            raise self._timed_out(f"{body['task']} of process {body['pid']!r}", limit) from None

    def _task_future(self, body: dict[str, Any]) -> concurrent.futures.Future[Any]:
        return self._comm.task_send_future(body, queue=self._queue)

    # -- one process --------------------------------------------------------------------------

    def rpc_future(self, pid: str, msg: Mapping[str, Any]) -> concurrent.futures.Future[Any]:
        """Send a control message and return a future of the raw reply at once."""
        return self._comm.rpc_send_future(str(pid), dict(msg))

    def status_future(self, pid: str) -> concurrent.futures.Future[Any]:
        """:meth:`status` without waiting."""
        return self._comm.rpc_send_future(str(pid), control_message("status"))

    def status(self, pid: str, *, timeout: float | None = None) -> dict[str, Any]:
        """See :meth:`ProcessController.status`."""
        reply: dict[str, Any] = self._rpc(pid, control_message("status"), timeout)
        return reply

    def pause_future(
        self, pid: str, msg: str | None = None
    ) -> concurrent.futures.Future[ControlOutcome]:
        """:meth:`pause` without waiting."""
        return _then(
            self._comm.rpc_send_future(str(pid), control_message("pause", msg)), control_outcome
        )

    def pause(
        self, pid: str, msg: str | None = None, *, timeout: float | None = None
    ) -> ControlOutcome:
        """See :meth:`ProcessController.pause`."""
        return control_outcome(self._rpc(pid, control_message("pause", msg), timeout))

    def play_future(self, pid: str) -> concurrent.futures.Future[ControlOutcome]:
        """:meth:`play` without waiting."""
        return _then(self._comm.rpc_send_future(str(pid), control_message("play")), control_outcome)

    def play(self, pid: str, *, timeout: float | None = None) -> ControlOutcome:
        """See :meth:`ProcessController.play`."""
        return control_outcome(self._rpc(pid, control_message("play"), timeout))

    def kill_future(
        self,
        pid: str,
        msg: str | None = None,
        *,
        force: bool | None = None,
        force_kill: bool | None = None,
    ) -> concurrent.futures.Future[ControlOutcome]:
        """:meth:`kill` without waiting (a ``ValueError`` is raised here, not by the future)."""
        message = kill_message(msg, force, force_kill)
        return _then(self._comm.rpc_send_future(str(pid), message), control_outcome)

    def kill(
        self,
        pid: str,
        msg: str | None = None,
        *,
        force: bool | None = None,
        force_kill: bool | None = None,
        timeout: float | None = None,
    ) -> ControlOutcome:
        """See :meth:`ProcessController.kill`."""
        return control_outcome(self._rpc(pid, kill_message(msg, force, force_kill), timeout))

    # -- everyone (broadcasts never wait) -----------------------------------------------------

    def pause_all(self, msg: str | None = None) -> None:
        """See :meth:`ProcessController.pause_all`."""
        self._comm.broadcast_send(control_message("pause", msg), subject="pause")

    def play_all(self) -> None:
        """See :meth:`ProcessController.play_all`."""
        self._comm.broadcast_send(control_message("play"), subject="play")

    def kill_all(
        self,
        msg: str | None = None,
        *,
        force: bool | None = None,
        force_kill: bool | None = None,
    ) -> None:
        """See :meth:`ProcessController.kill_all`."""
        self._comm.broadcast_send(kill_message(msg, force, force_kill), subject="kill")

    # -- tasks --------------------------------------------------------------------------------

    def launch_future(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        persist: bool = False,
        nowait: bool = False,
        pid: str | None = None,
        raise_on_failure: bool = False,
    ) -> concurrent.futures.Future[Any]:
        """:meth:`launch` without waiting (the future raises what :meth:`launch` raises)."""
        _check_wait(nowait, raise_on_failure)
        body = launch_body(process_class, inputs, persist=persist, nowait=nowait, pid=pid)
        future = self._task_future(body)
        return _then(future, _checked) if raise_on_failure else future

    def launch(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        persist: bool = False,
        nowait: bool = False,
        pid: str | None = None,
        raise_on_failure: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """See :meth:`ProcessController.launch`."""
        _check_wait(nowait, raise_on_failure)
        body = launch_body(process_class, inputs, persist=persist, nowait=nowait, pid=pid)
        reply = self._task(body, timeout)
        return _checked(reply) if raise_on_failure else reply

    def continue_future(
        self,
        pid: str,
        tag: str | None = None,
        *,
        nowait: bool = False,
        raise_on_failure: bool = False,
    ) -> concurrent.futures.Future[Any]:
        """:meth:`continue_` without waiting."""
        _check_wait(nowait, raise_on_failure)
        future = self._task_future(continue_body(pid, tag, nowait=nowait))
        return _then(future, _checked) if raise_on_failure else future

    def continue_(
        self,
        pid: str,
        tag: str | None = None,
        *,
        nowait: bool = False,
        raise_on_failure: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """See :meth:`ProcessController.continue_`."""
        _check_wait(nowait, raise_on_failure)
        reply = self._task(continue_body(pid, tag, nowait=nowait), timeout)
        return _checked(reply) if raise_on_failure else reply

    def execute_future(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        raise_on_failure: bool = True,
    ) -> concurrent.futures.Future[dict[str, Any]]:
        """:meth:`execute` without waiting."""
        body = launch_body(process_class, inputs, persist=True, task="execute")
        future = self._task_future(body)
        return _then(future, _checked) if raise_on_failure else future

    def execute(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        raise_on_failure: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """See :meth:`ProcessController.execute`."""
        body = launch_body(process_class, inputs, persist=True, task="execute")
        reply = self._task(body, timeout)
        return _checked(reply) if raise_on_failure else reply
