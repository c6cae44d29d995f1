"""``LoopCommunicator``: a :class:`~broker.Communicator` endpoint bound to one event loop.

Theory of operation
-------------------
Opening the communicator (``async with``) binds it to the running loop (asyncio or trio) and
starts one *dispatcher* task. Everything addressed to it (RPCs, task deliveries, broadcasts),
from whatever thread, reaches the dispatcher through an :class:`~broker._wakeup.Inbox`: one
call-soon per burst, never a blocking call. A sender on the same thread skips the inbox and
appends to the dispatcher's local deque directly.

The dispatcher calls each subscriber inline. A plain function's result is the reply at once;
an awaitable result (an ``async def`` subscriber, or a function that returns a coroutine or
future) is awaited in its own task of the communicator's handler task group, so a subscriber
that sends and awaits a reply, even to itself, never blocks the dispatcher and cannot deadlock.
Whatever a subscriber raises (any :class:`BaseException` but the communicator's own
cancellation) becomes a reply (``RemoteError``) or a log line; it never reaches the dispatcher
or the task group (see :mod:`broker._endpoint`). In strict mode a result the codec can't encode
is answered with a ``RemoteError`` for the :class:`~broker.CodecError` (and logged once), and a
broadcast the receiver can't decode is logged and dropped.

Closing unsubscribes everything from the broker first (so routing stops and held tasks are
requeued for other consumers), then fails the RPCs that were delivered but not yet run, then
cancels the dispatcher and handler tasks.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, final

import anyio
import anyio.lowlevel

from .._delivery import resolve
from .._endpoint import CLOSED, NEW, OPEN, LoopEndpoint
from .._errors import (
    CodecError,
    CommunicatorClosedError,
    ErrorInfo,
    LoopThreadError,
    RemoteError,
)
from .._wakeup import LoopGone
from ..abc import BroadcastSubscriber, RpcSubscriber, TaskSubscriber
from ._broker import (
    Attempt,
    BroadcastDelivery,
    EndpointGone,
    MemoryBroker,
    RpcCall,
)

__all__ = ["LoopCommunicator"]

logger = logging.getLogger("broker")

_get_ident = threading.get_ident

_NEW, _OPEN, _CLOSED = NEW, OPEN, CLOSED


def _check_subscriber(subscriber: object) -> None:
    if not callable(subscriber):
        raise TypeError(f"subscriber must be callable, got {subscriber!r}")


@final
class LoopCommunicator(LoopEndpoint):
    """An endpoint on a :class:`~broker.MemoryBroker`, bound to the loop that opens it.

    Its subscribers always run on that loop, whichever thread or loop sent the message;
    sends may come from any loop or thread. Use it as
    ``async with LoopCommunicator(broker) as comm:``; it can't be reopened after closing.

    Args:
        broker: the broker to attach to.
        name: a label for reprs and logs.
    """

    def __init__(self, broker: MemoryBroker, *, name: str | None = None) -> None:
        super().__init__(name or f"comm-{id(self):x}")
        self._broker = broker

    def __repr__(self) -> str:
        return f"<LoopCommunicator {self._name!r} {self._state}>"

    @property
    def broker(self) -> MemoryBroker:
        """The broker this communicator is attached to."""
        return self._broker

    # -- lifetime -------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[LoopCommunicator]:
        if self._state != _NEW:
            raise CommunicatorClosedError(f"communicator {self._name!r} can't be reopened")
        self._bind_loop()
        async with self._serving():
            self._broker.attach(self)
            self._state = _OPEN
            try:
                yield self
            finally:
                self._close()

    async def aclose(self) -> None:
        """Unsubscribe everything, requeue held tasks, stop the handlers. Idempotent.

        Must be called on the communicator's own loop.
        """
        if self._state == _OPEN and not self._on_own_thread():
            raise LoopThreadError(f"close communicator {self._name!r} from its own loop")
        self._close()
        if self._stopped is not None:
            await self._stopped.wait()
        else:
            await anyio.lowlevel.checkpoint()

    def _close(self) -> None:
        if self._state == _CLOSED:
            return
        was_open = self._state == _OPEN
        self._state = _CLOSED
        if not was_open:
            return
        self._broker.detach(self)  # task attempts are requeued there
        for item in self._stop_serving():
            self._abandon(item)

    def _abandon(self, item: Any) -> None:
        if type(item) is RpcCall:
            resolve(item.sink, False, self._closed_while_handling())
        # task attempts were requeued by detach(); broadcasts are fire-and-forget

    def _check_open(self) -> None:
        self._check_state()

    # -- delivery (called by the broker, any thread) --------------------------------------

    def _deliver(self, item: Any) -> None:
        if self._state != _OPEN:
            raise EndpointGone
        if _get_ident() == self._thread_id:
            self._local.append(item)
            self._wake.set()  # type: ignore[union-attr]
            return
        try:
            self._inbox.post(item)  # type: ignore[union-attr]
        except LoopGone:
            raise EndpointGone from None

    def _run_item(self, item: Any) -> None:
        kind = type(item)
        if kind is RpcCall:
            self._run_rpc(item)
        elif kind is Attempt:
            self._run_task(item)
        elif kind is BroadcastDelivery:
            self._run_broadcast(item)
        else:  # pragma: no cover - the broker only sends these three
            logger.error("communicator %r got an unknown item %r", self._name, item)

    # -- running subscribers (the shared part is in LoopEndpoint) -------------------------

    def _run_rpc(self, call: RpcCall) -> None:
        try:
            msg = self._broker._decode(call.payload)
        except Exception as exc:  # CodecError: not something our codec wrote
            self._undecodable("an rpc request", exc)
            self._rpc_failed(call, exc)
            return
        self._handle_rpc(call, call.subscriber, msg)

    def _rpc_done(self, call: RpcCall, value: Any) -> None:
        try:
            value = self._broker.round_trip(value, "reply")
        except CodecError as exc:
            self._unsendable("rpc", call.subscriber, exc)
            self._rpc_failed(call, exc)
        else:
            resolve(call.sink, True, value)

    def _rpc_failed(self, call: RpcCall, exc: BaseException) -> None:
        resolve(call.sink, False, RemoteError(ErrorInfo.from_exception(exc)))

    def _undecodable(self, what: str, exc: Exception) -> None:
        logger.error(
            "communicator %r can't decode %s (%s); answered with the error", self._name, what, exc
        )

    def _unsendable(self, kind: str, subscriber: Any, exc: CodecError) -> None:
        logger.warning(
            "%s subscriber %r on %r returned a result that can't be sent (%s); "
            "answered with the CodecError",
            kind,
            subscriber,
            self._name,
            exc,
        )

    def _run_task(self, attempt: Attempt) -> None:
        if not attempt.live:
            # its consumer was removed before we got to it: the broker requeued the task
            return
        try:
            body = self._broker._decode(attempt.payload)
        except Exception as exc:  # CodecError: not something our codec wrote
            self._undecodable("a task", exc)
            self._task_failed(attempt, exc)
            return
        self._handle_task(attempt, attempt.subscriber, body)

    def _task_live(self, attempt: Attempt) -> bool:
        return attempt.live

    def _cancel_handlers_of(self, identifier: str) -> None:
        # in our loop: stop the handlers still working on a removed consumer's tasks
        self._cancel_task_handlers(lambda attempt: attempt.consumer.identifier == identifier)

    def _task_done(self, attempt: Attempt, value: Any) -> None:
        try:
            value = self._broker.round_trip(value, "reply")
        except CodecError as exc:
            self._unsendable("task", attempt.subscriber, exc)
            self._task_failed(attempt, exc)
        else:
            self._broker.complete(attempt, True, value)

    def _task_failed(self, attempt: Attempt, exc: BaseException) -> None:
        if attempt.task.sink is None:
            logger.error(
                "task subscriber %r on %r raised (no reply requested)",
                attempt.subscriber,
                self._name,
                exc_info=exc,
            )
        self._broker.complete(attempt, False, ErrorInfo.from_exception(exc))

    def _task_rejected(self, attempt: Attempt) -> None:
        self._broker.reject(attempt)

    def _run_broadcast(self, delivery: BroadcastDelivery) -> None:
        broker = self._broker
        if broker.codec is None:
            body, sender, subject, correlation_id = (
                delivery.payload,
                delivery.sender,
                delivery.subject,
                delivery.correlation_id,
            )
        else:
            try:  # strict mode: the four parts, each encoded on its own
                body, sender, subject, correlation_id = map(broker._decode, delivery.payload)
            except Exception as exc:  # CodecError, or a payload that isn't four parts
                logger.error(
                    "communicator %r dropped a broadcast it can't decode: %s", self._name, exc
                )
                return
        self._handle_broadcast(delivery.subscribers, body, sender, subject, correlation_id)

    def _fail_item(self, item: Any, exc: BaseException) -> None:
        # resolving and completing are idempotent: a sender answered already stays answered
        if type(item) is RpcCall:
            self._rpc_failed(item, exc)
        elif type(item) is Attempt:
            self._broker.complete(item, False, ErrorInfo.from_exception(exc))

    # -- subscriptions --------------------------------------------------------------------

    def _broker_call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(self, *args)
        except EndpointGone:
            raise CommunicatorClosedError(f"communicator {self._name!r} is closed") from None

    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> str:
        self._check_open()
        # cancelled before it registers, or not at all: a cancelled add leaves nothing
        await anyio.lowlevel.checkpoint_if_cancelled()
        _check_subscriber(subscriber)
        key: str = self._broker_call(self._broker.add_rpc, subscriber, identifier)
        await anyio.lowlevel.cancel_shielded_checkpoint()
        return key

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._check_open()
        self._broker_call(self._broker.remove_rpc, identifier)
        await anyio.lowlevel.checkpoint()

    async def add_task_subscriber(
        self,
        subscriber: TaskSubscriber,
        identifier: Any = None,
        *,
        queue: str | None = None,
        prefetch: int = 0,
    ) -> str:
        self._check_open()
        # cancelled before it registers, or not at all: a cancelled add leaves nothing
        await anyio.lowlevel.checkpoint_if_cancelled()
        _check_subscriber(subscriber)
        key: str = self._broker_call(
            self._broker.add_consumer, subscriber, identifier, queue, prefetch
        )
        await anyio.lowlevel.cancel_shielded_checkpoint()
        return key

    def set_task_prefetch(self, identifier: Any, prefetch: int) -> None:
        """Change the prefetch of task subscriber ``identifier`` (0 = no limit); never blocks.

        Raising it lets the broker deliver more at once; lowering it keeps what the
        subscriber holds and delays the next delivery until it holds fewer than ``prefetch``.
        A worker uses it so that tasks whose processes wait (on children, on a resume) don't
        hold its slots.

        Raises:
            UnknownSubscriberError: no task subscriber ``identifier`` on this communicator.
            ValueError: ``prefetch`` is not an int >= 0.
        """
        self._check_open()
        self._broker_call(self._broker.set_prefetch, identifier, prefetch)

    async def remove_task_subscriber(self, identifier: Any) -> None:
        """Stop consuming; tasks the subscriber still holds are requeued and its running
        handlers for them are cancelled, so a task is not worked on twice."""
        self._check_open()
        self._broker_call(self._broker.remove_consumer, identifier)
        if self._on_own_thread():
            self._cancel_handlers_of(str(identifier))
        else:
            assert self._handle is not None
            with contextlib.suppress(LoopGone):
                self._handle.post(self._cancel_handlers_of, str(identifier))
        await anyio.lowlevel.checkpoint()

    async def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> str:
        self._check_open()
        # cancelled before it registers, or not at all: a cancelled add leaves nothing
        await anyio.lowlevel.checkpoint_if_cancelled()
        _check_subscriber(subscriber)
        key: str = self._broker_call(self._broker.add_broadcast, subscriber, identifier)
        await anyio.lowlevel.cancel_shielded_checkpoint()
        return key

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._check_open()
        self._broker_call(self._broker.remove_broadcast, identifier)
        await anyio.lowlevel.checkpoint()

    # -- sending --------------------------------------------------------------------------

    async def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        self._check_open()
        payload = self._broker.encode(msg, "msg")
        slot = self._slot()
        self._broker.rpc(recipient_id, payload, slot)
        return await slot.wait()

    def rpc_send_future(self, recipient_id: Any, msg: Any) -> concurrent.futures.Future[Any]:
        self._check_open()
        payload = self._broker.encode(msg, "msg")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._broker.rpc(recipient_id, payload, future)
        return future

    async def task_send(
        self, task: Any, *, no_reply: bool = False, queue: str | None = None
    ) -> Any:
        self._check_open()
        payload = self._broker.encode(task, "task")
        if no_reply:
            self._broker.send_task(payload, None, queue)
            await anyio.lowlevel.checkpoint()
            return None
        slot = self._slot()
        self._broker.send_task(payload, slot, queue)
        return await slot.wait()

    def task_send_future(
        self, task: Any, *, queue: str | None = None
    ) -> concurrent.futures.Future[Any]:
        self._check_open()
        payload = self._broker.encode(task, "task")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._broker.send_task(payload, future, queue)
        return future

    def broadcast_send_nowait(
        self,
        body: Any,
        *,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
    ) -> None:
        """:meth:`broadcast_send` without the checkpoint; callable from any thread."""
        self._check_open()
        broker = self._broker
        if broker.codec is None:
            payload = body
        else:
            # each part on its own, as on the wire: the depth limit applies to the body
            payload = (
                broker.encode(body, "broadcast[0]"),
                broker.encode(sender, "broadcast[1]"),
                broker.encode(subject, "broadcast[2]"),
                broker.encode(correlation_id, "broadcast[3]"),
            )
        broker.broadcast(payload, sender, subject, correlation_id)

    async def broadcast_send(
        self,
        body: Any,
        *,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
    ) -> None:
        self.broadcast_send_nowait(
            body, sender=sender, subject=subject, correlation_id=correlation_id
        )
        await anyio.lowlevel.checkpoint()
