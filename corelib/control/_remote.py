"""Awaiting a process that runs elsewhere: :class:`RemoteProcess` and :func:`submit_remote`.

A remote process is known by its pid only. Its end is learnt from its terminal state
broadcast, whose body is the process's outcome (see :func:`~corelib.outcome_of`), or, for a
process that ended before anyone listened, from its ``status`` reply. The outcome becomes
outputs or plumpy's errors through :func:`~corelib.outcome_error`, as a controller's
``raise_on_failure`` does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

import anyio
import anyio.lowlevel

from broker import BroadcastFilter, Communicator, UnroutableError, wait_future

from ..persistence._checkpoint import CheckpointNotFoundError
from ..persistence._persisters import Persister
from ..process._errors import ProcessStateError
from ..process._process import Process
from ._binding import control_of
from ._messages import (
    TERMINAL_SUBJECT_STATES,
    launch_body,
    outcome_error,
    outcome_of_checkpoint,
)

__all__ = ["RemoteProcess", "submit_remote", "REMOTE_RECHECK_MAX"]

#: The longest interval (seconds) at which a :class:`RemoteProcess` given a persister looks
#: for its process's terminal checkpoint again while it waits for the end's broadcast.
REMOTE_RECHECK_MAX = 2.0


@final
class RemoteProcess:
    """A process that runs on another worker, awaited through its state broadcasts.

    ``await remote`` (or :meth:`wait`) returns its outputs once it finished, and raises
    :class:`~corelib.ProcessExceptedError` / :class:`~corelib.ProcessKilledError` if it ended
    otherwise; :meth:`outcome` returns the raw outcome dict (see :func:`~corelib.outcome_of`)
    whatever the end. Waiting subscribes a broadcast filter on the exact sender ``pid``
    (indexed by the broker) *before* it asks: either it launches the process itself (made by
    :meth:`~corelib.ProcessController.launch_remote` or :func:`submit_remote`, so no broadcast
    can be missed), or it sends a ``status`` RPC to catch a process that ended before the
    subscription.

    It must be awaited on the loop of its communicator. Awaiting twice returns the same
    outcome.

    Args:
        communicator: a communicator on the loop that awaits.
        pid: the process id.
        launch: an awaitable factory that launches the process (internal; prefer the
            constructors named above).
        persister: where the process is checkpointed, for a process that may not run right
            now (its task queued, or being continued after its worker died): after
            subscribing, a terminal checkpoint there gives the outcome; otherwise it waits
            for the end's broadcast (an end is announced only once its checkpoint is
            written, so none is missed). A WorkChain continued after its worker died
            waits on its remote children this way.
        dead_lettered: with ``persister``, tells whether the task of a pid was
            dead-lettered (the reason, or ``None``): then the process never runs, and it
            ends as EXCEPTED with a ``DeadLetteredError`` (a worker on the memory broker
            passes one; the dead letter itself went to whoever sent the task, perhaps a
            worker that died since).
    """

    __slots__ = ("_comm", "_dead_lettered", "_launch", "_outcome", "_persister", "_pid")

    def __init__(
        self,
        communicator: Communicator,
        pid: str,
        *,
        launch: Callable[[], Awaitable[Any]] | None = None,
        persister: Persister | None = None,
        dead_lettered: Callable[[str], str | None] | None = None,
    ) -> None:
        self._comm = communicator
        self._pid = str(pid)
        self._launch = launch
        self._persister = persister
        self._dead_lettered = dead_lettered
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
                await self._launched(launch, box, ended)
            elif self._persister is not None:
                await self._from_persister(self._persister, box, ended)
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

    async def _from_persister(
        self, persister: Persister, box: list[dict[str, Any]], ended: anyio.Event
    ) -> None:
        # Subscribed already: an end after now is broadcast to us. One before now is in the
        # persister (an end is announced only once checkpointed). And one whose broadcast
        # was lost with a dying worker (written, then not announced; the requeued task is
        # then answered from the checkpoint without a new broadcast) is found by looking
        # again, at growing intervals.
        delay = 0.05
        while not ended.is_set():
            try:
                saved = await persister.load_checkpoint(self._pid)
            except CheckpointNotFoundError:
                saved = None
            terminal = saved is not None and saved.state in TERMINAL_SUBJECT_STATES
            if terminal and saved is not None and not ended.is_set():
                box.append(outcome_of_checkpoint(saved))
                ended.set()
                return
            reason = None if self._dead_lettered is None else self._dead_lettered(self._pid)
            if reason is not None and not ended.is_set():
                box.append(
                    {
                        "pid": self._pid,
                        "state": "excepted",
                        "exception": f"DeadLetteredError: its task was dead-lettered: {reason}",
                    }
                )
                ended.set()
                return
            with anyio.move_on_after(delay):
                await ended.wait()
            delay = min(delay * 2, REMOTE_RECHECK_MAX)

    @staticmethod
    async def _launched(
        launch: Callable[[], Awaitable[Any]], box: list[dict[str, Any]], ended: anyio.Event
    ) -> None:
        # Launch, and wait for whichever comes first: the end's broadcast, or the launch
        # task's reply (an outcome, when the task is held until the process ends: if its
        # worker dies the task is requeued and the process continued, so the reply still
        # comes). A failed launch raises here, unless the end was seen already.
        errors: list[Exception] = []

        async def send() -> None:
            try:
                reply = await launch()
            except Exception as exc:
                errors.append(exc)
                ended.set()
                return
            state = reply.get("state") if isinstance(reply, dict) else None
            if state in TERMINAL_SUBJECT_STATES and not ended.is_set():
                box.append(reply)
                ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await ended.wait()
            tg.cancel_scope.cancel()
        if not box:
            raise errors[0]

    async def wait(self) -> Any:
        """Wait for the end and return the outputs of a finished process.

        Raises:
            ProcessExceptedError: the process excepted (its ``outcome`` attribute holds the
                outcome dict; see :func:`~corelib.outcome_error`).
            ProcessKilledError: the process was killed (idem).
            UnroutableError: see :meth:`outcome`.
        """
        outcome = await self.outcome()
        error = outcome_error(outcome)
        if error is not None:
            raise error
        return outcome.get("outputs", {})

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

    The launch task is sent at once, and held by the worker that runs the child until the
    child ends (requeued and continued elsewhere if that worker dies); awaiting the result
    waits for the task's reply or the end's broadcast, whichever comes first. In a WorkChain,
    ``return ToContext(child=submit_remote(Child, {...}))`` stores the child's outputs in
    ``ctx.child`` as for a local child (a failed child fails the step). While awaiting a
    remote child the WorkChain is WAITING: a pause or kill takes effect at once, and the
    task that launched the WorkChain on a worker holds no slot meanwhile (see
    :class:`~corelib.Worker`), so its children can always be delivered.

    Raises:
        ProcessStateError: not called from a step of a process whose runner is bound to a
            communicator.
    """
    current = Process.current()
    if current is None:
        raise ProcessStateError("submit_remote must be called from a process step")
    control = control_of(current.runner)
    if control is None:
        raise ProcessStateError(
            f"the runner of process {current.pid} is not bound to a communicator"
        )
    # Held until the child ends (not ``nowait``): if the child's worker dies, its task is
    # requeued and the child continued elsewhere. A parent waiting for it holds no slot.
    # Sent now, in the step, so that the checkpoint taken when the step ends (the parent
    # waiting for the child) never names a child whose task was not sent.
    body = launch_body(process_class, inputs, persist=persist)
    reply = control.communicator.task_send_future(body, queue=queue)

    async def launch() -> Any:
        return await wait_future(reply)

    return RemoteProcess(control.communicator, body["pid"], launch=launch)
