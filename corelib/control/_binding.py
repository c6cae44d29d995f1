"""Processes on a communicator: RPC control, broadcast control and state broadcasts.

Theory of operation
-------------------
:class:`ProcessControl` binds one :class:`~corelib.Runner` to one
:class:`~broker.Communicator` opened on the runner's loop (``async with ProcessControl(runner,
comm):``). While the binding is open, every process the runner runs is *attached*:

- an RPC subscriber under ``str(pid)`` answers plumpy's intents
  ``{"intent": "status"|"pause"|"play"|"kill", "message": ..., "force_kill": bool}`` with
  JSON-safe dicts (``{"done": true, "reason": "paused"}``, or the status of
  :func:`status_of`), so replies cross a strict broker or RabbitMQ unchanged;
- every state move is broadcast as ``state_changed.<from>.<to>`` with ``sender=pid``, the first
  one ``state_changed.None.<state>`` (``created`` unless the process had moved before it was
  attached). A terminal broadcast carries the process's outcome (:func:`outcome_of`) as its body,
  so a remote waiter learns how it ended without asking; every other body is ``None``, as in
  plumpy;
- the RPC subscriber is removed once the process is terminal.

Broadcast control (``pause``/``play``/``kill`` sent to everyone) costs one broker subscription
per *binding*, not per process: a :class:`~broker.BroadcastFilter` on the literal subjects
``"pause"``, ``"play"`` and ``"kill"`` (so the broker indexes it by subject head and a
``state_changed`` broadcast never looks at it) that applies the request to every process of the
runner. For a remote observer this is the same as plumpy's per-process subscription, at a
fraction of the broker cost when thousands of processes wait.

Everything runs on the runner's loop: handlers are called there by the communicator, whatever
thread sent the message, and listener events fire there. Subscribing is ``async`` on a generic
communicator, so attaching queues the subscription for the binding's *serve* task, which carries
out queued operations one at a time, in order; :meth:`ProcessControl.subscribed` waits for a
process's RPC subscription. :meth:`ProcessControl.start` (what the launcher uses) subscribes
*before* launching, so a process is reachable even while its first step blocks the thread, and
a launch with ``nowait`` replies with a pid that already answers RPCs. Broadcasts use
the communicator's ``broadcast_send_nowait`` when it has one (the memory broker's
:class:`~broker.LoopCommunicator`) and otherwise go through the same ordered queue.

Finding the processes to attach: the binding registers a launch hook with the runner
(:meth:`~corelib.Runner.add_launch_hook`), so every process launched there (by the binding, by
``runner.submit``, or as a WorkChain's child) is attached before its first step. Processes the
runner already ran when the binding opened are found by a scan of the tail of
``runner.processes`` (insertion ordered), which stops at the first attached process, so it
costs O(1 + newcomers); later scans only ever find nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Reversible
from types import TracebackType
from typing import Any, Final, cast, final

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup

from broker import BroadcastFilter, Communicator, UnknownSubscriberError, UnroutableError

from ..persistence._loader import class_identifier
from ..process._errors import ProcessExceptedError, ProcessKilledError, ProcessStateError
from ..process._exit_code import ExitCode
from ..process._listener import ProcessListener
from ..process._process import ControlHandle, ControlOutcome, Process
from ..process._states import Excepted, Finished, Killed, ProcessState
from ..runner._runner import Runner

__all__ = [
    "ProcessControl",
    "ControlStatistics",
    "RemoteProcess",
    "control_of",
    "submit_remote",
    "status_of",
    "outcome_of",
    "to_plain",
    "INTENTS",
    "BROADCAST_SUBJECTS",
    "TERMINAL_SUBJECT_STATES",
]

logger = logging.getLogger("corelib.control")

#: The RPC intents a process answers.
INTENTS: Final = frozenset({"status", "pause", "play", "kill"})

#: The broadcast subjects that control every process of every bound runner.
BROADCAST_SUBJECTS: Final = ("pause", "play", "kill")

#: The state values that end a process (the last word of a terminal ``state_changed`` subject).
TERMINAL_SUBJECT_STATES: Final = frozenset({"finished", "excepted", "killed"})

# The bindings by runner, for code that only knows its process (``submit_remote``). Runners
# have no __weakref__ slot: entries are removed when a binding closes.
_BINDINGS: dict[int, ProcessControl] = {}


# --------------------------------------------------------------------------------------------
# JSON-safe views of a process


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


def _outcome_dict(outcome: ControlOutcome) -> dict[str, Any]:
    return {"done": outcome.done, "reason": outcome.reason}


async def _await_handle(handle: ControlHandle) -> dict[str, Any]:
    return _outcome_dict(await handle)


def _message_of(body: Any) -> str | None:
    if isinstance(body, Mapping):
        message = body.get("message")
        return message if isinstance(message, str) else None
    return body if isinstance(body, str) else None


# --------------------------------------------------------------------------------------------
# The binding


@final
@attrs.frozen
class ControlStatistics:
    """A snapshot of a :class:`ProcessControl`.

    Attributes:
        attached: processes attached and not yet terminal.
        subscribed: of those, how many have their RPC subscription in place.
        pending_operations: communicator operations queued for the serve task.
        broadcasts_sent: state broadcasts sent so far.
        rpc_handled: control RPCs answered so far (or being answered).
        broadcast_requests: pause/play/kill broadcasts received so far.
    """

    attached: int
    subscribed: int
    pending_operations: int
    broadcasts_sent: int
    rpc_handled: int
    broadcast_requests: int


@final
class _Attached:
    """What the binding keeps for an attached process; also the process's RPC subscriber.

    Kept to one small object: one lives as long as its process, and a worker may hold
    10,000 of them (the cyclic garbage collector walks every one on each full pass).
    """

    __slots__ = ("control", "is_ready", "last", "process", "ready", "subscribed", "terminal")

    def __init__(self, control: ProcessControl, process: Process) -> None:
        self.control = control
        self.process = process
        self.last: str | None = None
        self.subscribed = False
        self.terminal = False
        self.is_ready = False  # subscribed, or given up on (terminal, failed, closed)
        self.ready: anyio.Event | None = None  # only while someone waits for readiness

    def mark_ready(self) -> None:
        self.is_ready = True
        if self.ready is not None:
            self.ready.set()  # its waiters hold it; we needn't
            self.ready = None

    def __call__(self, comm: Any, msg: Any) -> Any:
        """The process's RPC subscriber (not a partial of a bound method: one object)."""
        return self.control._on_rpc(self.process, comm, msg)

    def __repr__(self) -> str:
        return f"<attached {self.process.pid}>"


_SUB, _UNSUB, _BCAST = "subscribe", "unsubscribe", "broadcast"


@final
class _Listener(ProcessListener):
    """Forwards every state move of an attached process to its binding."""

    __slots__ = ("_control",)

    def __init__(self, control: ProcessControl) -> None:
        self._control = control

    def on_process_running(self, process: Process) -> None:
        self._control._moved(process)

    def on_process_waiting(self, process: Process) -> None:
        self._control._moved(process)

    def on_process_finished(self, process: Process, outputs: Mapping[str, Any]) -> None:
        self._control._moved(process)

    def on_process_excepted(self, process: Process, reason: str) -> None:
        self._control._moved(process)

    def on_process_killed(self, process: Process, message: str | None) -> None:
        self._control._moved(process)


@final
class ProcessControl:
    """Puts the processes of a runner on a communicator (see the module docstring).

    Use it as ``async with ProcessControl(runner, comm) as control:`` inside the runner's
    block, with ``comm`` opened on the same loop. Leaving the block detaches every process
    (their RPC subscriptions are removed; they keep running, uncontrolled), so leave it after
    the processes you want to control have ended.

    Args:
        runner: a running :class:`~corelib.Runner`.
        communicator: a communicator whose subscribers run on the runner's loop.
        broadcast_control: whether to subscribe to the ``pause``/``play``/``kill``
            broadcasts (one subscription for the whole runner).
    """

    __slots__ = (
        "_bcast_id",
        "_broadcast_control",
        "_broadcasts",
        "_comm",
        "_listener",
        "_muted",
        "_nowait_send",
        "_ops",
        "_records",
        "_requests",
        "_rpcs",
        "_runner",
        "_state",
        "_tg",
        "_wake",
    )

    def __init__(
        self, runner: Runner, communicator: Communicator, *, broadcast_control: bool = True
    ) -> None:
        self._runner = runner
        self._comm = communicator
        self._broadcast_control = broadcast_control
        self._records: dict[Process, _Attached] = {}
        self._listener = _Listener(self)
        self._ops: deque[tuple[str, Any]] = deque()
        self._wake: anyio.Event | None = None
        self._tg: TaskGroup | None = None
        self._bcast_id: str | None = None
        self._state = "new"
        self._muted = False
        self._broadcasts = 0
        self._rpcs = 0
        self._requests = 0
        send = getattr(communicator, "broadcast_send_nowait", None)
        self._nowait_send: Callable[..., None] | None = send if callable(send) else None

    def __repr__(self) -> str:
        return f"<ProcessControl {self._state}, {len(self._records)} processes attached>"

    @property
    def runner(self) -> Runner:
        """The bound runner."""
        return self._runner

    @property
    def communicator(self) -> Communicator:
        """The communicator the processes are controlled through."""
        return self._comm

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> ProcessControl:
        if self._state != "new":
            raise RuntimeError("a ProcessControl can be entered only once")
        if not self._runner.running:
            raise ProcessStateError("the runner is not running; enter its block first")
        if id(self._runner) in _BINDINGS:
            raise ProcessStateError("this runner is already bound to a communicator")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._state = "open"
        _BINDINGS[id(self._runner)] = self
        try:
            if self._broadcast_control:
                flt = BroadcastFilter(self._on_broadcast, subject=BROADCAST_SUBJECTS[0])
                for subject in BROADCAST_SUBJECTS[1:]:
                    flt.add_subject_filter(subject)
                self._bcast_id = await self._comm.add_broadcast_subscriber(flt)
            tg.start_soon(self._serve, name=f"serve {self!r}")
            self._runner.add_launch_hook(self._on_launch)
            self._scan()
        except BaseException:
            await self._close(tg)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        await self._close(self._tg)
        return None

    async def _close(self, tg: TaskGroup) -> None:
        self._state = "closed"
        self._runner.remove_launch_hook(self._on_launch)
        _BINDINGS.pop(id(self._runner), None)
        records = list(self._records.values())
        self._records.clear()
        self._ops.clear()
        for record in records:
            record.process.remove_process_listener(self._listener)
            record.mark_ready()
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._unsubscribe_all(records)

    async def _unsubscribe_all(self, records: list[_Attached]) -> None:
        if self._comm.is_closed:
            return
        try:
            if self._bcast_id is not None:
                await self._comm.remove_broadcast_subscriber(self._bcast_id)
            for record in records:
                if record.subscribed:
                    record.subscribed = False
                    await self._comm.remove_rpc_subscriber(record.process.pid)
        except Exception:  # the communicator went away meanwhile: nothing left to remove
            logger.debug("control %r: unsubscribing failed", self, exc_info=True)

    def mute(self) -> None:
        """Stop sending anything: no more state broadcasts or subscriptions.

        For a worker that abandons its processes (they will be continued elsewhere): the
        ``killed`` moves they make while the worker shuts down are not announced.
        """
        self._muted = True
        self._ops.clear()

    # -- attaching --------------------------------------------------------------------------

    def submit(
        self,
        process_class: type[Process],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
    ) -> Process:
        """Create a process, launch it in the runner and attach it; returns at once."""
        return self.launch(process_class(inputs, pid=pid))

    def launch(self, process: Process) -> Process:
        """Launch an already created process in the runner and attach it; returns at once.

        Raises:
            ProcessStateError: the binding is not open, the process was launched before, or
                its pid is taken in this runner.
        """
        self._check_open()
        self._runner.launch(process)  # attached by the launch hook
        return process

    async def start(self, process: Process) -> Process:
        """Attach a created process, wait until it answers RPCs, then launch it.

        Unlike :meth:`launch`, the process is reachable before its first step runs, even if
        that step blocks the thread. A process killed meanwhile (through its RPC) is not
        launched.

        Raises:
            ProcessStateError: the binding is not open, or the process was launched before.
            DuplicateSubscriberError: a process with this pid answers RPCs already (on
                this broker); the process is not launched.
        """
        self._check_open()
        if process in self._records:
            raise ProcessStateError(f"process {process.pid} is already attached")
        record = self._attach(process, subscribe=False)
        try:
            await self._carry_out(_SUB, record)
        except BaseException:
            # e.g. DuplicateSubscriberError: this pid runs elsewhere. Not launched here.
            if self._records.get(process) is record:
                del self._records[process]
            process.remove_process_listener(self._listener)
            record.mark_ready()
            raise
        if not process.has_terminated():
            self._runner.launch(process)
        return process

    async def subscribed(self, process: Process) -> None:
        """Wait until ``process`` answers RPCs (or is terminal, or the binding closed).

        Every process the runner launches is attached by the launch hook.
        """
        record = self._records.get(process)
        if record is None or record.is_ready:
            await anyio.lowlevel.checkpoint()
            return
        if record.ready is None:
            record.ready = anyio.Event()
        await record.ready.wait()

    def is_attached(self, process: Process) -> bool:
        """Whether ``process`` is attached (and not terminal)."""
        return process in self._records

    def spawn(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
    ) -> None:
        """Run ``fn(*args)`` in the binding's task group (cancelled when it closes)."""
        self._check_open()
        assert self._tg is not None
        self._tg.start_soon(fn, *args, name=name)

    def _check_open(self) -> None:
        if self._state != "open":
            raise ProcessStateError(f"the process control is {self._state}")

    def _scan(self) -> None:
        """Attach the processes the runner already ran when the binding opened (later ones
        come through the launch hook)."""
        if self._state != "open":
            return
        records = self._records
        newcomers = []
        # a live view of the runner's insertion-ordered dict: reversing it costs nothing
        tail_first = reversed(cast(Reversible[Process], self._runner.processes.values()))
        for process in tail_first:
            if process in records:
                break
            if not process.has_terminated():
                newcomers.append(process)
        for process in reversed(newcomers):
            self._attach(process)

    def _on_launch(self, process: Process) -> None:
        """The runner's launch hook: attach a process before its first step."""
        if self._state == "open" and process not in self._records:
            self._attach(process)

    def _attach(self, process: Process, *, subscribe: bool = True) -> _Attached:
        record = _Attached(self, process)
        self._records[process] = record
        process.add_process_listener(self._listener)
        state = process.state.value
        record.last = state
        self._broadcast(process.pid, f"state_changed.None.{state}", None)
        if subscribe:
            self._queue(_SUB, record)
        return record

    def _moved(self, process: Process) -> None:
        """A listener event: ``process`` made a state move."""
        record = self._records.get(process)
        if record is None or record.terminal:
            return
        state = process.state
        new = state.value
        subject = f"state_changed.{record.last}.{new}"
        record.last = new
        if state.terminal:
            record.terminal = True
            del self._records[process]
            process.remove_process_listener(self._listener)
            self._broadcast(process.pid, subject, outcome_of(process))
            record.mark_ready()
            if record.subscribed:
                self._queue(_UNSUB, record)
        else:
            self._broadcast(process.pid, subject, None)

    def _broadcast(self, pid: str, subject: str, body: Any) -> None:
        if self._muted:
            return
        self._broadcasts += 1
        send = self._nowait_send
        if send is not None:
            try:
                send(body, sender=pid, subject=subject)
            except Exception:
                logger.exception("control %r: broadcast %s of %s failed", self, subject, pid)
        else:
            self._queue(_BCAST, (pid, subject, body))

    def _queue(self, kind: str, item: Any) -> None:
        if self._muted:
            return
        self._ops.append((kind, item))
        if self._wake is not None:
            self._wake.set()

    async def _serve(self) -> None:
        ops = self._ops
        while True:
            while ops:
                kind, item = ops.popleft()
                try:
                    await self._carry_out(kind, item)
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception:
                    logger.exception("control %r: %s failed", self, kind)
                    if kind == _SUB:
                        item.mark_ready()
            self._wake = anyio.Event()
            await self._wake.wait()
            self._wake = None

    async def _carry_out(self, kind: str, item: Any) -> None:
        comm = self._comm
        if kind == _SUB:
            record: _Attached = item
            if not record.terminal and self._records.get(record.process) is record:
                await comm.add_rpc_subscriber(record, record.process.pid)
                record.subscribed = True
                if record.terminal:  # it ended while we subscribed
                    record.subscribed = False
                    await comm.remove_rpc_subscriber(record.process.pid)
            record.mark_ready()
        elif kind == _UNSUB:
            record = item
            if record.subscribed:
                record.subscribed = False
                with contextlib.suppress(UnknownSubscriberError):
                    await comm.remove_rpc_subscriber(record.process.pid)
        else:
            pid, subject, body = item
            await comm.broadcast_send(body, sender=pid, subject=subject)

    # -- handlers (on the runner's loop) ----------------------------------------------------

    def _on_rpc(self, process: Process, _comm: Any, msg: Any) -> Any:
        self._rpcs += 1
        intent = msg.get("intent") if isinstance(msg, Mapping) else None
        if intent == "status":
            return status_of(process)
        if intent == "pause":
            handle = process.pause(_message_of(msg))
        elif intent == "play":
            handle = process.play()
        elif intent == "kill":
            handle = process.kill(_message_of(msg), force=bool(msg.get("force_kill", False)))
        else:
            raise ValueError(f"unknown intent {intent!r}; expected one of {sorted(INTENTS)}")
        outcome = handle.outcome
        if outcome is not None:
            return _outcome_dict(outcome)
        return _await_handle(handle)

    def _on_broadcast(
        self, _comm: Any, body: Any, _sender: Any, subject: Any, _correlation_id: Any
    ) -> None:
        self._requests += 1
        processes = tuple(self._runner.processes.values())
        message = _message_of(body)
        if subject == "pause":
            for process in processes:
                process.pause(message)
        elif subject == "play":
            for process in processes:
                process.play()
        elif subject == "kill":
            force = isinstance(body, Mapping) and bool(body.get("force_kill", False))
            for process in processes:
                process.kill(message, force=force)

    def statistics(self) -> ControlStatistics:
        """Return a snapshot of the binding.

        Safe to call from another thread (the figures are then approximate).
        """
        records = list(self._records.values())  # one C-level copy: safe against a writer
        return ControlStatistics(
            attached=len(records),
            subscribed=sum(1 for r in records if r.subscribed),
            pending_operations=len(self._ops),
            broadcasts_sent=self._broadcasts,
            rpc_handled=self._rpcs,
            broadcast_requests=self._requests,
        )


def control_of(runner: Runner) -> ProcessControl | None:
    """The open :class:`ProcessControl` bound to ``runner``, if any."""
    return _BINDINGS.get(id(runner))


# --------------------------------------------------------------------------------------------
# Awaiting a process that runs elsewhere


@final
class RemoteProcess:
    """A process that runs on another worker, awaited through its state broadcasts.

    ``await remote`` (or :meth:`wait`) returns its outputs once it finished, and raises
    :class:`~corelib.ProcessExceptedError` / :class:`~corelib.ProcessKilledError` if it ended
    otherwise; :meth:`outcome` returns the raw outcome dict (see :func:`outcome_of`) whatever
    the end. Waiting subscribes a broadcast filter on the exact sender ``pid`` (indexed by the
    broker) *before* it asks: either it launches the process itself (made by
    :meth:`ProcessController.launch_remote` or :func:`submit_remote`, so no broadcast can be
    missed), or it sends a ``status`` RPC to catch a process that ended before the
    subscription.

    It must be awaited on the loop of its communicator. Awaiting twice returns the same
    outcome.

    Args:
        communicator: a communicator on the loop that awaits.
        pid: the process id.
        launch: an awaitable factory that launches the process (internal; prefer the
            constructors named above).
    """

    __slots__ = ("_comm", "_launch", "_outcome", "_pid")

    def __init__(
        self,
        communicator: Communicator,
        pid: str,
        *,
        launch: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._comm = communicator
        self._pid = str(pid)
        self._launch = launch
        self._outcome: dict[str, Any] | None = None

    def __repr__(self) -> str:
        state = self._outcome["state"] if self._outcome else "pending"
        return f"<RemoteProcess {self._pid} {state}>"

    @property
    def pid(self) -> str:
        """The process id."""
        return self._pid

    def done(self) -> bool:
        """Whether the outcome is known."""
        return self._outcome is not None

    async def outcome(self) -> dict[str, Any]:
        """Wait until the process is terminal and return its outcome dict.

        Raises:
            UnroutableError: no worker runs the process (never launched, or it ended before
                this waited for it, so its end was missed).
        """
        if self._outcome is not None:
            await anyio.lowlevel.checkpoint()
            return self._outcome
        ended = anyio.Event()
        box: list[dict[str, Any]] = []

        def on_state(_comm: Any, body: Any, _sender: Any, subject: Any, _cid: Any) -> None:
            if not isinstance(subject, str) or ended.is_set():
                return
            to = subject.rsplit(".", 1)[-1]
            if to in TERMINAL_SUBJECT_STATES:
                box.append(body if isinstance(body, dict) else {"pid": self._pid, "state": to})
                ended.set()

        flt = BroadcastFilter(on_state, subject="state_changed.*", sender=self._pid)
        identifier = await self._comm.add_broadcast_subscriber(flt)
        try:
            launch, self._launch = self._launch, None
            if launch is not None:
                await launch()
            else:
                try:
                    status = await self._comm.rpc_send(self._pid, {"intent": "status"})
                except UnroutableError:
                    if not ended.is_set():
                        raise
                else:
                    outcome = status.get("outcome") if isinstance(status, dict) else None
                    if outcome is not None and not ended.is_set():
                        box.append(outcome)
                        ended.set()
            await ended.wait()
        finally:
            with anyio.CancelScope(shield=True):
                if not self._comm.is_closed:
                    await self._comm.remove_broadcast_subscriber(identifier)
        self._outcome = box[0]
        return self._outcome

    async def wait(self) -> Any:
        """Wait for the end and return the outputs of a finished process.

        Raises:
            ProcessExceptedError: the process excepted.
            ProcessKilledError: the process was killed.
            UnroutableError: see :meth:`outcome`.
        """
        outcome = await self.outcome()
        state = outcome.get("state")
        if state == ProcessState.FINISHED.value:
            return outcome.get("outputs", {})
        if state == ProcessState.EXCEPTED.value:
            type_name, _, message = str(outcome.get("exception", "")).partition(": ")
            raise ProcessExceptedError(self._pid, type_name, message, "")
        raise ProcessKilledError(self._pid, outcome.get("message"))

    def __await__(self) -> Any:
        return self.wait().__await__()


def submit_remote(
    process_class: type[Process] | str,
    inputs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    persist: bool = False,
) -> RemoteProcess:
    """From inside a step, have *some* worker run a process, and return a :class:`RemoteProcess`.

    The launch task is sent (``nowait``) when the result is first awaited, after subscribing
    to the child's broadcasts, so nothing is missed; in a WorkChain,
    ``return ToContext(child=submit_remote(Child, {...}))`` stores the child's outputs in
    ``ctx.child`` as for a local child (a failed child fails the step). While awaiting a
    remote child the WorkChain runs an ``async`` step: a pause takes effect when the child
    ended, a kill at once.

    Raises:
        ProcessStateError: not called from a step of a process whose runner is bound to a
            communicator.
    """
    from ._controller import launch_body  # the controller module imports this one

    current = Process.current()
    if current is None:
        raise ProcessStateError("submit_remote must be called from a process step")
    control = control_of(current.runner)
    if control is None:
        raise ProcessStateError(
            f"the runner of process {current.pid} is not bound to a communicator"
        )
    body = launch_body(process_class, inputs, persist=persist, nowait=True)
    comm = control.communicator

    async def launch() -> None:
        await comm.task_send(body, queue=queue)

    return RemoteProcess(comm, body["pid"], launch=launch)
