"""The wire format of control: every dict that crosses a communicator, and nothing else.

Everything here is plain data in, plain data out: no communicator, no runner, no task. The
binding (:mod:`._binding`) answers with these dicts, the controllers (:mod:`._controller`) and
remote waiters (:mod:`._remote`) send and read them, the launcher (:mod:`._launcher`) reads
tasks and replies with outcomes. Keeping them in one module keeps both ends in step.

- RPC messages to ``str(pid)``: ``{"intent": "status"|"pause"|"play"|"kill", "message": text,
  "force_kill": bool}`` (:func:`control_message`, :data:`INTENTS`); control replies are
  ``{"done": bool, "reason": str}`` (:func:`reply_of`, :func:`control_outcome`); status
  replies, :func:`status_of`.
- Broadcast control: the subjects :data:`BROADCAST_SUBJECTS`, with the same message dict as
  body. State broadcasts: ``state_changed.<from>.<to>``; a terminal one (``<to>`` in
  :data:`TERMINAL_SUBJECT_STATES`) carries the process's outcome.
- Outcomes, how a terminal process ended: :func:`outcome_of` (a live process),
  :func:`outcome_of_checkpoint` (a terminal checkpoint) and back to plumpy's errors,
  :func:`outcome_error`.
- Tasks for a launcher (:data:`TASK_TYPES`): :func:`launch_body`, :func:`continue_body`, with
  pids from :func:`new_pid`.
- :func:`to_plain`: anything that travels is JSON-native, so replies cross a strict broker or
  RabbitMQ unchanged.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Mapping
from typing import Any, Final

from ..persistence._checkpoint import Checkpoint
from ..persistence._loader import class_identifier
from ..process._errors import ProcessExceptedError, ProcessKilledError
from ..process._exit_code import ExitCode
from ..process._process import ControlOutcome, Process, force_of
from ..process._states import Excepted, Finished, Killed

__all__ = [
    "INTENTS",
    "BROADCAST_SUBJECTS",
    "TERMINAL_SUBJECT_STATES",
    "TASK_TYPES",
    "to_plain",
    "status_of",
    "outcome_of",
    "outcome_of_checkpoint",
    "outcome_error",
    "control_message",
    "kill_message",
    "message_of",
    "reply_of",
    "control_outcome",
    "new_pid",
    "launch_body",
    "continue_body",
]

#: The RPC intents a process answers.
INTENTS: Final = frozenset({"status", "pause", "play", "kill"})

#: The broadcast subjects that control every process of every bound runner.
BROADCAST_SUBJECTS: Final = ("pause", "play", "kill")

#: The state values that end a process (the last word of a terminal ``state_changed`` subject).
TERMINAL_SUBJECT_STATES: Final = frozenset({"finished", "excepted", "killed"})

#: The task types a :class:`~corelib.ProcessLauncher` understands.
TASK_TYPES: Final = frozenset({"launch", "continue", "execute"})


# --------------------------------------------------------------------------------------------
# JSON-native data


class _NotPlain(Exception):
    pass


def to_plain(value: Any) -> Any:
    """Return ``value`` as JSON-native data (dicts with str keys, lists, str, numbers, bools,
    None), converting mappings and tuples.

    Raises:
        TypeError: ``value`` holds something JSON can't carry (the message says where).
    """
    try:
        return _plain(value, "value")
    except _NotPlain as exc:
        raise TypeError(str(exc)) from None


def _plain(value: Any, path: str) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is int:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise _NotPlain(f"{path} is {value!r}, which JSON can't carry")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain(f"{path} has a non-string key {key!r}")
            out[key] = _plain(item, f"{path}[{key!r}]")
        return out
    if kind is list or kind is tuple:
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, ExitCode):
        return {"status": value.status, "message": value.message, "label": value.label}
    raise _NotPlain(f"{path} is a {kind.__name__}, which JSON can't carry")


def _try_plain(value: Any) -> tuple[bool, Any]:
    try:
        return True, _plain(value, "value")
    except _NotPlain:
        return False, None


# --------------------------------------------------------------------------------------------
# Views of a process: status and outcome


def status_of(process: Process) -> dict[str, Any]:
    """The JSON-safe status of a process, as its ``status`` RPC returns it.

    Keys: ``pid``, ``process_class`` (``"module:qualname"``, or the bare qualname of a class
    defined in a function), ``state`` (the state's value), ``paused``, ``stepping``,
    ``process_string`` (plumpy's ``"<Cls> (ProcessState.X)"``), ``ctime`` (time of the first
    transition, if any) and, once terminal, ``outcome`` (see :func:`outcome_of`).
    """
    cls = type(process)
    try:
        identifier = class_identifier(cls)
    except Exception:
        identifier = cls.__qualname__
    state = process.state
    status: dict[str, Any] = {
        "pid": process.pid,
        "process_class": identifier,
        "state": state.value,
        "paused": process.paused,
        "stepping": process._stepping,
        "process_string": f"<{cls.__name__}> (ProcessState.{state.name})",
        "ctime": process.ctime,
    }
    if state.terminal:
        status["outcome"] = outcome_of(process)
    return status


def outcome_of(process: Process) -> dict[str, Any]:
    """A JSON-safe summary of how a terminal process ended (the launch tasks' reply).

    Keys: ``pid``, ``state``; for FINISHED also ``successful``, ``exit_status``,
    ``exit_message``, ``outputs`` (omitted, with ``outputs_omitted: true``, when they are not
    JSON-safe) and ``result`` (only when it is JSON-safe and not an exit code); for EXCEPTED
    ``exception`` (``"<Type>: <message>"``); for KILLED ``message``.
    """
    data = process.state_data
    summary: dict[str, Any] = {"pid": process.pid, "state": process.state.value}
    if isinstance(data, Finished):
        code = process.exit_code
        assert code is not None
        summary["successful"] = data.successful
        summary["exit_status"] = code.status
        summary["exit_message"] = code.message
        ok, outputs = _try_plain(process.outputs)
        if ok:
            summary["outputs"] = outputs
        else:
            summary["outputs_omitted"] = True
        if not isinstance(data.result, ExitCode) and data.result is not None:
            ok, result = _try_plain(data.result)
            if ok:
                summary["result"] = result
    elif isinstance(data, Excepted):
        summary["exception"] = f"{data.type_name}: {data.message}"
    elif isinstance(data, Killed):
        summary["message"] = data.message
    return summary


def outcome_of_checkpoint(checkpoint: Checkpoint) -> dict[str, Any]:
    """The outcome dict (as :func:`outcome_of` makes it) of a terminal checkpoint."""
    summary: dict[str, Any] = {"pid": checkpoint.pid, "state": checkpoint.state}
    data = checkpoint.state_data
    if checkpoint.state == "finished":
        code = checkpoint.exit_code
        summary["successful"] = bool(data.get("successful", code is None or code.status == 0))
        summary["exit_status"] = 0 if code is None else code.status
        summary["exit_message"] = None if code is None else code.message
        try:
            summary["outputs"] = to_plain(checkpoint.outputs)
        except TypeError:
            summary["outputs_omitted"] = True
        result = data.get("result")
        if result is not None and not isinstance(result, ExitCode):
            with contextlib.suppress(TypeError):
                summary["result"] = to_plain(result)
    elif checkpoint.state == "excepted":
        type_name = data.get("type_name", "Exception")
        summary["exception"] = f"{type_name}: {data.get('message', '')}"
    elif checkpoint.state == "killed":
        summary["message"] = data.get("message")
    return summary


def outcome_error(
    outcome: Mapping[str, Any],
) -> ProcessExceptedError | ProcessKilledError | None:
    """The error plumpy raises for a process that ended as ``outcome`` says, or ``None``.

    ``None`` for a FINISHED process, successful or not (a non-zero exit status is a result,
    not a failure); :class:`~corelib.ProcessExceptedError` for an EXCEPTED one (the traceback
    stays on the worker: its ``traceback`` is empty) and :class:`~corelib.ProcessKilledError`
    for a KILLED one. The error carries ``outcome`` (a copy) as its ``outcome`` attribute.
    This is the one conversion: the controllers' ``raise_on_failure`` and
    :meth:`~corelib.RemoteProcess.wait` both raise what it returns.

    Args:
        outcome: an outcome dict, as :func:`outcome_of` makes it.

    Raises:
        ValueError: ``outcome`` is not the outcome of a terminal process.
    """
    if not isinstance(outcome, Mapping):
        raise ValueError(f"{outcome!r} is not the outcome of a terminal process")
    state = outcome.get("state")
    if state == "finished":
        return None
    pid = str(outcome.get("pid"))
    error: ProcessExceptedError | ProcessKilledError
    if state == "excepted":
        type_name, _, message = str(outcome.get("exception", "")).partition(": ")
        error = ProcessExceptedError(pid, type_name, message, "", outcome=dict(outcome))
    elif state == "killed":
        text = outcome.get("message")
        error = ProcessKilledError(pid, None if text is None else str(text), outcome=dict(outcome))
    else:
        raise ValueError(f"{outcome!r} is not the outcome of a terminal process")
    return error


# --------------------------------------------------------------------------------------------
# Control messages and their replies


def control_message(intent: str, msg: str | None = None, **extra: Any) -> dict[str, Any]:
    """The RPC (or broadcast) body asking for ``intent``, plumpy's shape."""
    return {"intent": intent, "message": msg, **extra}


def kill_message(
    msg: str | None = None, force: bool | None = None, force_kill: bool | None = None
) -> dict[str, Any]:
    """The body asking for a kill; ``force_kill`` is plumpy's name for ``force`` (the message
    carries it under that name).

    Raises:
        ValueError: ``force`` and ``force_kill`` were both given, with different values.
    """
    return control_message("kill", msg, force_kill=force_of(force, force_kill))


def message_of(body: Any) -> str | None:
    """The text message of a control body (a message dict, or a bare string)."""
    if isinstance(body, Mapping):
        message = body.get("message")
        return message if isinstance(message, str) else None
    return body if isinstance(body, str) else None


def reply_of(outcome: ControlOutcome) -> dict[str, Any]:
    """The JSON reply to a control RPC."""
    return {"done": outcome.done, "reason": outcome.reason}


def control_outcome(reply: Any) -> ControlOutcome:
    """The :class:`~corelib.ControlOutcome` a control reply stands for."""
    return ControlOutcome(bool(reply["done"]), str(reply["reason"]))


# --------------------------------------------------------------------------------------------
# Tasks


def _identifier(process_class: type[Process] | str) -> str:
    return process_class if isinstance(process_class, str) else class_identifier(process_class)


# Pids need to be unique, not secret: a generator seeded once from the OS is enough, and much
# cheaper than a system call per pid.
_pid_bits = random.Random(os.urandom(32)).getrandbits


def new_pid() -> str:
    """A fresh process id (128 random bits, hex), unique across workers."""
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
        "pid": new_pid() if pid is None else str(pid),
        "persist": persist,
        "nowait": nowait,
    }


def continue_body(pid: str, tag: str | None = None, *, nowait: bool = False) -> dict[str, Any]:
    """The task body that continues process ``pid`` from its checkpoint (``tag``)."""
    return {"task": "continue", "pid": str(pid), "tag": tag, "nowait": nowait}
