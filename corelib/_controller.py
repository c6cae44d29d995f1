"""Controlling processes from anywhere: :class:`ProcessController` and its blocking twin.

Both speak plumpy's messages over any communicator:

- RPCs to ``str(pid)``: ``{"intent": "status"|"pause"|"play"|"kill", "message": text,
  "force_kill": bool}``. An unknown pid raises :class:`~broker.UnroutableError`; a handler
  that raised, :class:`~broker.RemoteError`;
- broadcasts with the subjects ``"pause"``, ``"play"``, ``"kill"`` to every process of every
  bound runner (the body is the same message dict);
- tasks for a :class:`~corelib.ProcessLauncher`: ``{"task": "launch"|"continue"|"execute",
  "process_class": "module:qualname", "inputs": {...}, "pid": ..., "tag": ..., "nowait": bool,
  "persist": bool}`` (see :func:`launch_body`, :func:`continue_body`).

Control replies become :class:`~corelib.ControlOutcome`; status replies and launch results stay
the JSON-safe dicts the process side made (see :func:`~corelib.status_of`,
:func:`~corelib.outcome_of`).
"""

from __future__ import annotations

import concurrent.futures
import os
import random
from collections.abc import Mapping
from typing import Any, Final, final

from broker import BlockingCommunicator, Communicator

from ._control import RemoteProcess, to_plain
from ._loader import class_identifier
from ._process import ControlOutcome, Process

__all__ = [
    "ProcessController",
    "BlockingProcessController",
    "launch_body",
    "continue_body",
    "TASK_TYPES",
]

#: The task types a :class:`~corelib.ProcessLauncher` understands.
TASK_TYPES: Final = frozenset({"launch", "continue", "execute"})


def _identifier(process_class: type[Process] | str) -> str:
    return process_class if isinstance(process_class, str) else class_identifier(process_class)


# Pids need to be unique, not secret: a generator seeded once from the OS is enough, and much
# cheaper than a system call per pid.
_pid_bits = random.Random(os.urandom(32)).getrandbits


def _new_pid() -> str:
    return f"{_pid_bits(128):032x}"


def launch_body(
    process_class: type[Process] | str,
    inputs: Mapping[str, Any] | None = None,
    *,
    persist: bool = False,
    nowait: bool = False,
    pid: str | None = None,
    task: str = "launch",
) -> dict[str, Any]:
    """The task body that launches ``process_class`` (a class or ``"module:qualname"``).

    A pid is chosen here unless given, so the sender knows it before any worker does and a
    redelivered task (its worker died) continues the same process from its checkpoint.

    Raises:
        TypeError: ``inputs`` hold something JSON can't carry.
    """
    return {
        "task": task,
        "process_class": _identifier(process_class),
        "inputs": to_plain(dict(inputs or {})),
        "pid": _new_pid() if pid is None else str(pid),
        "persist": persist,
        "nowait": nowait,
    }


def continue_body(pid: str, tag: str | None = None, *, nowait: bool = False) -> dict[str, Any]:
    """The task body that continues process ``pid`` from its checkpoint (``tag``)."""
    return {"task": "continue", "pid": str(pid), "tag": tag, "nowait": nowait}


def _message(intent: str, msg: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"intent": intent, "message": msg, **extra}


def _outcome(reply: Any) -> ControlOutcome:
    return ControlOutcome(bool(reply["done"]), str(reply["reason"]))


@final
class ProcessController:
    """Sends control messages and launch tasks through a communicator (async API).

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
        reply: dict[str, Any] = await self._comm.rpc_send(str(pid), _message("status"))
        return reply

    async def pause(self, pid: str, msg: str | None = None) -> ControlOutcome:
        """Pause a process; returns once the pause took effect (or could not)."""
        return _outcome(await self._comm.rpc_send(str(pid), _message("pause", msg)))

    async def play(self, pid: str) -> ControlOutcome:
        """Play (unpause) a process."""
        return _outcome(await self._comm.rpc_send(str(pid), _message("play")))

    async def kill(
        self, pid: str, msg: str | None = None, *, force: bool = False
    ) -> ControlOutcome:
        """Kill a process; ``force`` kills even in the middle of a step."""
        reply = await self._comm.rpc_send(str(pid), _message("kill", msg, force_kill=force))
        return _outcome(reply)

    # -- everyone -----------------------------------------------------------------------------

    async def pause_all(self, msg: str | None = None) -> None:
        """Ask every process of every bound runner to pause (fire-and-forget)."""
        await self._comm.broadcast_send(_message("pause", msg), subject="pause")

    async def play_all(self) -> None:
        """Ask every process of every bound runner to play."""
        await self._comm.broadcast_send(_message("play"), subject="play")

    async def kill_all(self, msg: str | None = None, *, force: bool = False) -> None:
        """Ask every process of every bound runner to die."""
        await self._comm.broadcast_send(_message("kill", msg, force_kill=force), subject="kill")

    # -- tasks --------------------------------------------------------------------------------

    async def launch(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        persist: bool = False,
        nowait: bool = False,
        pid: str | None = None,
    ) -> Any:
        """Have a worker launch a process.

        Returns:
            With ``nowait``, the pid, once the process answers RPCs; otherwise its outcome
            dict (see :func:`~corelib.outcome_of`) once it is terminal.

        Raises:
            RemoteError: the launcher failed (e.g. the class is not allowed there).
        """
        body = launch_body(process_class, inputs, persist=persist, nowait=nowait, pid=pid)
        return await self._comm.task_send(body, queue=self._queue)

    async def continue_(self, pid: str, tag: str | None = None, *, nowait: bool = False) -> Any:
        """Have a worker continue process ``pid`` from its checkpoint; returns as
        :meth:`launch` does (a terminal checkpoint returns its stored outcome)."""
        body = continue_body(pid, tag, nowait=nowait)
        return await self._comm.task_send(body, queue=self._queue)

    async def execute(
        self, process_class: type[Process] | str, inputs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Launch with a checkpoint saved first, run to the end, return the outcome dict.

        If the worker dies, another one continues the process from its checkpoint.
        """
        body = launch_body(process_class, inputs, persist=True, task="execute")
        result: dict[str, Any] = await self._comm.task_send(body, queue=self._queue)
        return result

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

    Every method blocks until the reply (at most ``timeout`` seconds, then ``TimeoutError``);
    the ``*_future`` methods return a :class:`concurrent.futures.Future` at once.

    Args:
        communicator: a :class:`~broker.BlockingCommunicator`.
        queue: the task queue launch tasks go to.
        timeout: default bound of the blocking calls (``None``: the communicator's).
    """

    __slots__ = ("_comm", "_queue", "_timeout")

    def __init__(
        self,
        communicator: BlockingCommunicator,
        *,
        queue: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._comm = communicator
        self._queue = queue
        self._timeout = timeout

    @property
    def communicator(self) -> BlockingCommunicator:
        return self._comm

    def _rpc(self, pid: str, msg: dict[str, Any]) -> Any:
        return self._comm.rpc_send(str(pid), msg, timeout=self._timeout)

    def rpc_future(self, pid: str, msg: Mapping[str, Any]) -> concurrent.futures.Future[Any]:
        """Send a control message and return a future of the raw reply at once."""
        return self._comm.rpc_send_future(str(pid), dict(msg))

    def status_future(self, pid: str) -> concurrent.futures.Future[Any]:
        """:meth:`status` without waiting."""
        return self._comm.rpc_send_future(str(pid), _message("status"))

    def status(self, pid: str) -> dict[str, Any]:
        """See :meth:`ProcessController.status`."""
        reply: dict[str, Any] = self._rpc(pid, _message("status"))
        return reply

    def pause(self, pid: str, msg: str | None = None) -> ControlOutcome:
        """See :meth:`ProcessController.pause`."""
        return _outcome(self._rpc(pid, _message("pause", msg)))

    def play(self, pid: str) -> ControlOutcome:
        """See :meth:`ProcessController.play`."""
        return _outcome(self._rpc(pid, _message("play")))

    def kill(self, pid: str, msg: str | None = None, *, force: bool = False) -> ControlOutcome:
        """See :meth:`ProcessController.kill`."""
        return _outcome(self._rpc(pid, _message("kill", msg, force_kill=force)))

    def pause_all(self, msg: str | None = None) -> None:
        """See :meth:`ProcessController.pause_all`."""
        self._comm.broadcast_send(_message("pause", msg), subject="pause")

    def play_all(self) -> None:
        """See :meth:`ProcessController.play_all`."""
        self._comm.broadcast_send(_message("play"), subject="play")

    def kill_all(self, msg: str | None = None, *, force: bool = False) -> None:
        """See :meth:`ProcessController.kill_all`."""
        self._comm.broadcast_send(_message("kill", msg, force_kill=force), subject="kill")

    def launch_future(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        persist: bool = False,
        nowait: bool = False,
        pid: str | None = None,
    ) -> concurrent.futures.Future[Any]:
        """:meth:`launch` without waiting."""
        body = launch_body(process_class, inputs, persist=persist, nowait=nowait, pid=pid)
        return self._comm.task_send_future(body, queue=self._queue)

    def launch(
        self,
        process_class: type[Process] | str,
        inputs: Mapping[str, Any] | None = None,
        *,
        persist: bool = False,
        nowait: bool = False,
        pid: str | None = None,
    ) -> Any:
        """See :meth:`ProcessController.launch`."""
        body = launch_body(process_class, inputs, persist=persist, nowait=nowait, pid=pid)
        return self._comm.task_send(body, queue=self._queue, timeout=self._timeout)

    def continue_(self, pid: str, tag: str | None = None, *, nowait: bool = False) -> Any:
        """See :meth:`ProcessController.continue_`."""
        body = continue_body(pid, tag, nowait=nowait)
        return self._comm.task_send(body, queue=self._queue, timeout=self._timeout)

    def execute(
        self, process_class: type[Process] | str, inputs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """See :meth:`ProcessController.execute`."""
        body = launch_body(process_class, inputs, persist=True, task="execute")
        result: dict[str, Any] = self._comm.task_send(
            body, queue=self._queue, timeout=self._timeout
        )
        return result
