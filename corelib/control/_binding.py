"""Processes on a communicator: RPC control, broadcast control and state broadcasts.

Theory of operation
-------------------
:class:`ProcessControl` binds one :class:`~corelib.Runner` to one
:class:`~broker.Communicator` opened on the runner's loop (``async with ProcessControl(runner,
comm):``). While the binding is open, every process the runner runs is *attached*:

- an RPC subscriber under ``str(pid)`` answers plumpy's intents
  ``{"intent": "status"|"pause"|"play"|"kill", "message": ..., "force_kill": bool}`` with
  JSON-safe dicts (``{"done": true, "reason": "paused"}``, or the status of
  :func:`status_of`; every dict that travels is made in :mod:`._messages`), so replies cross
  a strict broker or RabbitMQ unchanged;
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
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Reversible
from types import TracebackType
from typing import Any, cast, final

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup

from broker import BroadcastFilter, Communicator, UnknownSubscriberError

from ..process._errors import ProcessStateError
from ..process._listener import ProcessListener
from ..process._process import ControlHandle, Process, ProcessHost
from ..runner._runner import Runner
from ._messages import (
    BROADCAST_SUBJECTS,
    INTENTS,
    message_of,
    outcome_of,
    reply_of,
    status_of,
)

__all__ = ["ProcessControl", "ControlStatistics", "control_of"]

logger = logging.getLogger("corelib.control")

# The bindings by runner, for code that only knows its process (``submit_remote``). Runners
# have no __weakref__ slot: entries are removed when a binding closes.
_BINDINGS: dict[int, ProcessControl] = {}


def _answer(process: Process, msg: Any) -> Any:
    """Apply the RPC ``msg`` to ``process``: its reply, or an awaitable of it."""
    intent = msg.get("intent") if isinstance(msg, Mapping) else None
    if intent == "status":
        return status_of(process)
    if intent == "pause":
        handle = process.pause(message_of(msg))
    elif intent == "play":
        handle = process.play()
    elif intent == "kill":
        handle = process.kill(message_of(msg), force=bool(msg.get("force_kill", False)))
    else:
        raise ValueError(f"unknown intent {intent!r}; expected one of {sorted(INTENTS)}")
    outcome = handle.outcome
    if outcome is not None:
        return reply_of(outcome)
    return _await_handle(handle)


async def _await_handle(handle: ControlHandle) -> dict[str, Any]:
    return reply_of(await handle)


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
_BCAST_DURABLE = "broadcast once checkpointed"


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
        if self._comm.is_closed or self._muted:
            # muted: the worker abandons everything and closes the communicator next, which
            # releases every subscription at once (one by one, on a broker that just dropped
            # the connection, could take a publish timeout each)
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

    def abandon(self, process: Process) -> None:
        """Detach ``process`` without announcing anything more about it; never blocks.

        For a worker whose task for ``process`` was taken back (its delivery was lost and the
        broker requeued it, so it will be continued elsewhere): its later moves (the kill
        that ends it here) are not broadcast, and its RPC subscription is removed, so that
        its pid is free for the worker that continues it. Does nothing for a process that is
        not attached.
        """
        record = self._records.pop(process, None)
        if record is None:
            return
        process.remove_process_listener(self._listener)
        record.terminal = True
        record.mark_ready()
        if record.subscribed and self._state == "open":
            self._queue(_UNSUB, record)

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
        launched. If it can't be subscribed or launched, it is detached again (its RPC
        subscription removed) and the error propagates.

        Raises:
            ProcessStateError: the binding is not open, or the process was launched before.
            DuplicateSubscriberError: a process with this pid answers RPCs already (on
                this broker); the process is not launched.
            ChildrenNotFoundError: see :meth:`~corelib.Runner.launch` (and any other error
                of the launch).
        """
        self._check_open()
        if process in self._records:
            raise ProcessStateError(f"process {process.pid} is already attached")
        record = self._attach(process, subscribe=False)
        try:
            await self._carry_out(_SUB, record)
            if not process.has_terminated():
                self._runner.launch(process)
        except BaseException:
            # e.g. DuplicateSubscriberError (this pid runs elsewhere) or the runner refused
            # it: not launched here, so it must not answer RPCs here either
            with anyio.CancelScope(shield=True):
                await self._detach_unlaunched(record)
            raise
        return process

    async def _detach_unlaunched(self, record: _Attached) -> None:
        process = record.process
        if self._records.get(process) is record:
            del self._records[process]
        process.remove_process_listener(self._listener)
        record.mark_ready()
        if record.subscribed:  # never after a failed subscription: the pid isn't ours
            record.subscribed = False
            try:
                await self._comm.remove_rpc_subscriber(process.pid)
            except Exception:  # already gone, or the communicator closed meanwhile
                logger.debug("control %r: unsubscribing failed", self, exc_info=True)

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
            self._announce_end(process.pid, subject, outcome_of(process))
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

    def _announce_end(self, pid: str, subject: str, body: Any) -> None:
        # The end is announced once the runner's checkpoint of it is written: announced and
        # then lost with its worker, it would be run and announced again by the next one.
        if self._runner.checkpointer is None:
            self._broadcast(pid, subject, body)
        elif not self._muted:
            self._broadcasts += 1
            self._queue(_BCAST_DURABLE, (pid, subject, body))

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
            if kind == _BCAST_DURABLE:
                await self._runner.flush_checkpoints()
            pid, subject, body = item
            await comm.broadcast_send(body, sender=pid, subject=subject)

    # -- handlers (on the runner's loop) ----------------------------------------------------

    def _on_rpc(self, process: Process, _comm: Any, msg: Any) -> Any:
        self._rpcs += 1
        return _answer(process, msg)

    def _on_broadcast(
        self, _comm: Any, body: Any, _sender: Any, subject: Any, _correlation_id: Any
    ) -> None:
        self._requests += 1
        processes = tuple(self._runner.processes.values())
        message = message_of(body)
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


def control_of(runner: ProcessHost) -> ProcessControl | None:
    """The open :class:`ProcessControl` bound to ``runner`` (a :class:`~corelib.Runner`, or the
    :attr:`~corelib.Process.runner` of a process), if any."""
    return _BINDINGS.get(id(runner))
