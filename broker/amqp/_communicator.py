"""``AmqpCommunicator``: the :class:`~broker.Communicator` interface on RabbitMQ (aio-pika).

Theory of operation
-------------------
Two sides, two threads:

- The *caller side* (this module) is bound to the loop (asyncio or trio) that opens the
  communicator with ``async with``, exactly like :class:`~broker.LoopCommunicator`: one
  dispatcher task fed by an :class:`~broker._wakeup.Inbox` runs every subscriber on that loop;
  async results are awaited in a handler task group. Replies a send awaits arrive in
  :class:`~broker._wakeup.ReplySlot` s (or thread-safe futures for the ``*_future`` variants),
  registered by correlation id in :class:`~broker.amqp._rpc.PendingReplies`.
- The *I/O side* (:class:`~broker.amqp._io.IoSide`) owns the aio-pika connection on a private
  thread running its own asyncio loop (:mod:`broker.amqp._connection`), so a blocking step on
  the caller's loop never delays heartbeats, and aio-pika (asyncio-only) never sees trio.
  Consumer callbacks decode and validate each message there and post it to the caller's inbox
  (:mod:`broker.amqp._consuming`, :mod:`broker.amqp._tasks`). The caller side talks to the I/O
  side only through ``call_soon_threadsafe``, never through a blocking call; RPC requests and
  replies go through an *outbox* (:mod:`broker.amqp._rpc`) that, like the inbox, costs one
  wake-up of the I/O loop per burst and is published by one task in order.

Speed: a sequential RPC crosses four threads (caller loop, our I/O loop, the recipient's I/O
loop, the recipient's loop, and back), and in one process they share the GIL, so what counts is
the Python work per message. The hot paths therefore use aiormq's channels directly (aio-pika's
``Exchange.publish`` with a timeout costs several tasks on Python 3.11, its consumers a second
task per delivery), RPC requests and replies are not confirmed (the reply proves delivery) and
the RPC, reply and broadcast queues are consumed without acknowledgements (they are exclusive
and acknowledged on arrival anyway). Tasks keep confirms and acks: they are the durable part.

Topology and envelope: see :mod:`broker.amqp._wire`. In short: RPC through a direct exchange
(routing key = identifier, literal) to an exclusive queue per identifier, published mandatory
(unconfirmed), so an unknown recipient comes back as a ``basic.return`` and raises
:class:`~broker.UnroutableError` at once; a second subscriber of the same identifier, on any
connection, hits ``RESOURCE_LOCKED`` on the exclusive queue: :class:`DuplicateSubscriberError`.
Replies go by correlation id to the sender's exclusive reply queue. Broadcasts go through a
fanout exchange to one exclusive queue per communicator; filters run on the receiving side,
before the caller's loop is woken. Tasks are persistent messages in durable quorum queues,
acknowledged only when the subscriber's result is complete; rejection, parking and dead
letters are described in :mod:`broker.amqp._tasks`, reconnection in
:mod:`broker.amqp._connection`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, final

import anyio
import anyio.lowlevel

from .._delivery import DEFAULT_QUEUE, resolve
from .._endpoint import CLOSED, CLOSING, NEW, OPEN, LoopEndpoint
from .._errors import (
    CodecError,
    CommunicatorClosedError,
    ErrorInfo,
    LoopThreadError,
)
from .._wakeup import LoopGone, wait_future
from ..abc import BroadcastSubscriber, RpcSubscriber, TaskSubscriber
from . import _wire as wire
from ._consuming import RpcItem
from ._io import IoSide
from ._rpc import PendingReplies
from ._settings import DEFAULT_URL, AmqpSettings, build_url, import_aio_pika
from ._tasks import TaskItem, TaskSub

__all__ = ["AmqpCommunicator"]

logger = logging.getLogger("broker.amqp")

_NEW, _OPEN, _CLOSING, _CLOSED = NEW, OPEN, CLOSING, CLOSED

#: how long a failed open waits for its I/O thread to close its loop and exit
_THREAD_EXIT_TIMEOUT: Final = 10.0


def _check_subscriber(subscriber: object) -> None:
    if not callable(subscriber):
        raise TypeError(f"subscriber must be callable, got {subscriber!r}")


def _error_data(exc: BaseException) -> bytes:
    return wire.encode_error(ErrorInfo.from_exception(exc))


@final
class AmqpCommunicator(LoopEndpoint):
    """A communicator on a RabbitMQ broker, bound to the loop that opens it.

    Use it as ``async with AmqpCommunicator(url, namespace="myapp") as comm:`` on asyncio or
    trio. Its subscribers run on that loop; sends may come from any loop or thread. All
    communicators with the same URL (virtual host) and ``namespace`` talk to each other.

    Differences from :class:`~broker.LoopCommunicator` on a :class:`~broker.MemoryBroker`
    (each one is asserted in ``tests/broker/test_amqp.py``):

    - Everything crosses the wire as JSON (like ``MemoryBroker(strict=True)``): a tuple arrives
      as a list, a payload JSON can't carry raises :class:`~broker.CodecError` at the send.
    - :meth:`rpc_send_future` reports an unknown recipient through the future (RabbitMQ
      returns the mandatory publish a round trip later); ``await rpc_send`` raises it at the
      call, as the memory broker does for both.
    - RPCs are at most once (consumed without acknowledgements), as in kiwipy. Tasks are at
      least once: a task whose consumer died after replying but before its ack landed runs
      again (the second reply is dropped).
    - Connection loss: awaited replies fail with :class:`BrokerUnavailableError`, running
      task handlers are cancelled (their tasks go back to the queue), sends wait up to
      ``publish_timeout`` for the reconnection. Broadcasts sent during an outage are lost.
    - Broadcast filters are evaluated by the receiving communicator (on its I/O thread, so a
      non-matching subscriber's loop is still never woken).
    - Round robin between competing consumers, and the position of a requeued task, are
      RabbitMQ's (quorum queues), not the memory broker's.
    - A task rejected by every live consumer is parked in ``{namespace}.parked.{queue}``
      until a consumer subscribes; there is no ``statistics()``/``dead_letters()`` here: use
      ``rabbitmqctl list_queues`` or read ``{namespace}.dead-letters``.
    - Messages from other clients are checked before anything is decoded: a foreign
      ``content_type`` (anything but ``application/json``; none at all is taken for JSON), a
      malformed envelope or ``plumio-rejected-by`` header sends the message to
      ``{namespace}.dead-letters`` with one log line (asserted in
      ``tests/broker/test_faults_amqp.py``).
    - Long tasks: RabbitMQ closes a channel whose delivery stays unacknowledged longer than
      its ``consumer_timeout`` (30 minutes by default in rabbitmq.conf). The task is then
      requeued (and counted as a redelivery), the running handler is cancelled and the
      consumer resubscribes. Raise the limit per queue with ``consumer_timeout=`` (the
      ``x-consumer-timeout`` queue argument, honoured by RabbitMQ >= 3.12; older servers
      ignore it, so raise ``consumer_timeout`` in rabbitmq.conf there).

    Args:
        url: ``amqp://user:password@host:port/vhost`` or ``amqps://...`` (TLS). The password
            never appears in reprs or logs.
        namespace: prefix of every exchange and queue name (letters, digits, ``_-:``).
        name: a label for reprs, logs and the connection name shown by RabbitMQ.
        ssl_context: an :class:`ssl.SSLContext` for ``amqps`` URLs.
        ssl_options: instead of a context, any of ``cafile``, ``capath``, ``cadata``,
            ``certfile``, ``keyfile``, ``no_verify_ssl`` (passed as URL parameters).
        heartbeat: AMQP heartbeat interval in seconds (unless the URL sets one).
        connect_timeout: seconds to wait for the first connection when opening.
        publish_timeout: seconds a send waits for a connection and (tasks, broadcasts) for
            the broker's confirm before raising :class:`BrokerUnavailableError`.
        max_reconnect_delay: cap of the exponential back-off between reconnection attempts.
        max_redeliveries: how many times a task may be redelivered after its consumer went
            away before it is dead-lettered. Must be the same for every communicator of a
            namespace (it is part of the queue's declaration).
        default_queue: the task queue used when ``queue=None``.
        consumer_timeout: per-queue delivery acknowledgement timeout in seconds
            (``x-consumer-timeout``); ``None`` keeps the server's setting.
        queue_expires: delete the namespace's durable queues after they have been unused
            for this many seconds (``x-expires``), *with their messages*. For tests and
            throw-away namespaces only; ``None`` (the default) never expires anything.

    Raises:
        ImportError: aio-pika is not installed.
        ValueError: a malformed URL, namespace or TLS option.
        BrokerUnavailableError: (when opening) no connection; the failed open leaves no
            thread, event loop or socket behind.

    (Why this class is over 400 lines: a fifth of it is this documentation, and the rest is
    what it must implement itself: the :class:`~broker.Communicator` interface, the
    communicator's lifetime and the dispatcher hooks of :class:`~broker._endpoint.LoopEndpoint`.
    Everything that touches the connection is in :class:`~broker.amqp._io.IoSide`.)
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        namespace: str = "plumio",
        name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ssl_options: Mapping[str, Any] | None = None,
        heartbeat: int = 60,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        max_reconnect_delay: float = 5.0,
        max_redeliveries: int = 10,
        default_queue: str = DEFAULT_QUEUE,
        consumer_timeout: float | None = None,
        queue_expires: float | None = None,
    ) -> None:
        import_aio_pika()
        if max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be >= 0, got {max_redeliveries!r}")
        super().__init__(name or f"amqp-{id(self):x}")
        names = wire.Names(namespace)
        self._settings = AmqpSettings(
            names=names,
            url=build_url(
                url, heartbeat=heartbeat, ssl_options=ssl_options, ssl_context=ssl_context
            ),
            name=self._name,
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
            publish_timeout=publish_timeout,
            max_reconnect_delay=max_reconnect_delay,
            max_redeliveries=max_redeliveries,
            consumer_timeout=consumer_timeout,
            queue_expires=queue_expires,
        )
        self.default_queue = default_queue
        self._closed_event: anyio.Event | None = None
        self._uid = uuid.uuid4().hex
        self._pending = PendingReplies(self._uid)
        self._io: IoSide | None = None

    def __repr__(self) -> str:
        return (
            f"<AmqpCommunicator {self._name!r} {self._settings.safe_url} "
            f"namespace={self.namespace!r} {self._state}>"
        )

    @property
    def namespace(self) -> str:
        return self._settings.names.namespace

    @property
    def url(self) -> str:
        """The broker URL, password masked."""
        return self._settings.safe_url

    @property
    def max_redeliveries(self) -> int:
        """See the constructor; read by the I/O side when it declares a queue or counts."""
        return self._settings.max_redeliveries

    @max_redeliveries.setter
    def max_redeliveries(self, value: int) -> None:
        self._settings.max_redeliveries = value

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up right now (it may drop at any time)."""
        io = self._io
        return io is not None and io.session is not None

    # -- lifetime -------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[AmqpCommunicator]:
        self._bind_loop()
        self._closed_event = anyio.Event()
        self._io = io = IoSide(self._settings, self._uid, self._pending, self)
        io.start()
        try:
            await wait_future(io.submit(io.open))
        except BaseException:
            # a failed open leaves nothing behind: no connection, no I/O thread, no loop
            self._state = _CLOSED
            self._closed_event.set()
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):  # the open's error is the one to raise
                    await wait_future(io.submit(io.close))
                io.stop()
                with anyio.move_on_after(_THREAD_EXIT_TIMEOUT):  # a wedged loop: don't hang
                    await io.stopped()
            raise
        async with self._serving():
            self._state = _OPEN
            try:
                yield self
            finally:
                await self._shutdown()

    async def aclose(self) -> None:
        """Stop consuming (held tasks are requeued), stop the handlers, close the connection.

        Idempotent. Must be called on the communicator's own loop.
        """
        if self._state == _OPEN and not self._on_own_thread():
            raise LoopThreadError(f"close communicator {self._name!r} from its own loop")
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._state in (_NEW, _CLOSED, _CLOSING):
            if self._state == _NEW:
                self._state = _CLOSED
            if self._closed_event is not None:
                await self._closed_event.wait()
            else:
                await anyio.lowlevel.checkpoint()
            return
        self._state = _CLOSING
        io = self._io
        assert io is not None
        assert self._inbox is not None
        assert self._closed_event is not None
        closed = f"communicator {self._name!r} closed"
        try:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(self._settings.publish_timeout + 5),
            ):
                # 1. no new deliveries; channels of task consumers close (RabbitMQ requeues)
                with contextlib.suppress(Exception):
                    await wait_future(io.submit(io.stop_consuming))
                # 2. RPCs delivered but not run: tell their senders; 3. cancel the handlers
                # (cancelled RPC handlers send their fault replies)
                for item in self._stop_serving():
                    self._abandon(item)
                assert self._stopped is not None
                await self._stopped.wait()
                # 4. flush replies, close the connection, stop the I/O thread
                self._pending.fail_all(CommunicatorClosedError(closed))
                with contextlib.suppress(Exception):
                    await wait_future(io.submit(io.close))
        finally:
            self._state = _CLOSED
            self._pending.fail_all(CommunicatorClosedError(closed))
            io.stop()
            self._closed_event.set()

    def _closed_text(self) -> str:
        return str(self._closed_while_handling())

    def _check_open(self) -> IoSide:
        self._check_state()
        assert self._io is not None
        return self._io

    async def wait_connected(self) -> None:
        """Wait until the connection is up and every subscription is restored.

        Returns at once when connected. Useful after an outage; sends wait by themselves.
        """
        io = self._check_open()
        await wait_future(io.submit(io.wait_connected))

    # -- delivery (called on the I/O thread) ----------------------------------------------

    def _deliver(self, item: Any) -> None:
        """Hand ``item`` to our loop; raises :class:`LoopGone` when it can't take it."""
        if self._state != _OPEN or self._inbox is None:
            raise LoopGone
        self._inbox.post(item)

    def _cancel_task_handlers_soon(self, sub: TaskSub, epoch: int | None) -> None:
        handle = self._handle
        if handle is not None:
            with contextlib.suppress(LoopGone):
                handle.post(self._cancel_handlers_of, sub, epoch)

    def _cancel_handlers_of(self, sub: TaskSub, epoch: int | None) -> None:
        # in our loop
        self._cancel_task_handlers(
            lambda item: item.sub is sub and (epoch is None or item.epoch == epoch)
        )

    # -- dispatcher (our loop; the shared part is in LoopEndpoint) ------------------------

    def _run_item(self, item: Any) -> None:
        kind = type(item)
        if kind is RpcItem:
            self._handle_rpc(item, item.subscriber, item.body)
        elif kind is TaskItem:
            if item.stale:  # requeued by RabbitMQ since: the next delivery carries it
                return
            self._handle_task(item, item.sub.subscriber, item.body)
        else:
            self._handle_broadcast(
                item.subscribers, item.body, item.sender, item.subject, item.correlation_id
            )

    def _task_live(self, item: TaskItem) -> bool:
        return not item.stale

    def _abandon(self, item: Any) -> None:
        if type(item) is RpcItem:
            self._reply(item, wire.encode_fault("unroutable", self._closed_text()))

    def _rpc_done(self, item: RpcItem, value: Any) -> None:
        try:
            data = wire.encode_reply(value)
        except CodecError as exc:
            self._unsendable("rpc", item.subscriber, exc)
            data = _error_data(exc)
        self._reply(item, data)

    def _rpc_failed(self, item: RpcItem, exc: BaseException) -> None:
        self._reply(item, _error_data(exc))

    def _unsendable(self, kind: str, subscriber: Any, exc: CodecError) -> None:
        logger.warning(
            "%s subscriber %r on %r returned a result that can't be sent (%s); "
            "answered with the CodecError",
            kind,
            subscriber,
            self._name,
            exc,
        )

    def _reply(self, item: RpcItem, data: bytes) -> None:
        if self._io is not None:
            self._io.outbox.post_reply(item.reply_to, item.correlation_id, data)

    def _task_done(self, item: TaskItem, value: Any) -> None:
        try:
            data = wire.encode_reply(value)
        except CodecError as exc:
            self._unsendable("task", item.sub.subscriber, exc)
            self._task_failed(item, exc)
            return
        self._settle_task(item, data)

    def _task_failed(self, item: TaskItem, exc: BaseException) -> None:
        if not item.message.reply_to:
            logger.error(
                "task subscriber %r on %r raised (no reply requested)",
                item.sub.subscriber,
                self._name,
                exc_info=exc,
            )
        self._settle_task(item, _error_data(exc))

    def _task_rejected(self, item: TaskItem) -> None:
        self._settle_task(item, None)

    def _settle_task(self, item: TaskItem, reply: bytes | None) -> None:
        """Reply ``reply`` and ack, or (``None``) hand the task on as rejected; once only:
        a second settlement of a delivery would close its channel."""
        if item.settling:
            return
        item.settling = True
        io = self._io
        assert io is not None
        if reply is None:
            io.post(io.tasks.reject, item)
        else:
            io.post(io.tasks.finish, item, reply)

    def _fail_item(self, item: Any, exc: BaseException) -> None:
        kind = type(item)
        if kind is RpcItem:
            self._rpc_failed(item, exc)  # a second reply would be dropped by its sender
        elif kind is TaskItem:
            self._task_failed(item, exc)  # nothing if it was settled already

    # -- subscriptions --------------------------------------------------------------------

    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> str:
        io = self._check_open()
        _check_subscriber(subscriber)
        key = uuid.uuid4().hex if identifier is None else str(identifier)
        self._settings.names.rpc_queue(key)  # ValueError if too long
        await _added(
            io, io.submit(io.rpc_consumers.add, key, subscriber), io.rpc_consumers.remove, key
        )
        return key

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        io = self._check_open()
        await wait_future(io.submit(io.rpc_consumers.remove, str(identifier)))

    async def add_task_subscriber(
        self,
        subscriber: TaskSubscriber,
        identifier: Any = None,
        *,
        queue: str | None = None,
        prefetch: int = 0,
    ) -> str:
        """Consume tasks from ``queue`` on a channel of its own with ``basic.qos(prefetch)``.

        See :meth:`broker.Communicator.add_task_subscriber`.
        """
        io = self._check_open()
        _check_subscriber(subscriber)
        if not isinstance(prefetch, int) or prefetch < 0 or prefetch > 65535:
            raise ValueError(f"prefetch must be an int in 0..65535, got {prefetch!r}")
        key = uuid.uuid4().hex if identifier is None else str(identifier)
        queue = self.default_queue if queue is None else queue
        self._settings.names.task_queue(queue)
        future = io.submit(io.tasks.add, key, subscriber, queue, prefetch)
        await _added(io, future, io.tasks.remove, key)
        return key

    async def remove_task_subscriber(self, identifier: Any) -> None:
        """Stop consuming; held tasks are requeued and their running handlers cancelled."""
        io = self._check_open()
        sub: TaskSub = await wait_future(io.submit(io.tasks.remove, str(identifier)))
        if self._on_own_thread():
            self._cancel_handlers_of(sub, None)
        else:
            self._cancel_task_handlers_soon(sub, None)

    async def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> str:
        io = self._check_open()
        _check_subscriber(subscriber)
        key = uuid.uuid4().hex if identifier is None else str(identifier)
        await _added(io, io.submit(io.broadcasts.add, key, subscriber), io.broadcasts.remove, key)
        return key

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        io = self._check_open()
        await wait_future(io.submit(io.broadcasts.remove, str(identifier)))

    # -- sending --------------------------------------------------------------------------

    async def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        io = self._check_open()
        data = wire.encode_request("rpc", msg, "msg")
        key = recipient_id if type(recipient_id) is str else str(recipient_id)
        slot = self._slot()
        correlation_id = self._pending.add(slot)
        try:
            # a failed publish (unroutable, no connection) fails the slot from the I/O
            # thread; a published one needs no wake-up of our loop (the reply follows)
            io.outbox.post_rpc(key, data, correlation_id)
            return await slot.wait()
        finally:
            self._pending.pop(correlation_id)

    def rpc_send_future(self, recipient_id: Any, msg: Any) -> concurrent.futures.Future[Any]:
        """Publish an RPC and return a thread-safe future of its reply; never blocks.

        Unlike the memory backend, an unknown recipient is only known once RabbitMQ returns
        the (mandatory) publish, so :class:`~broker.UnroutableError` arrives through the
        future, as does :class:`BrokerUnavailableError` when there is no connection within
        ``publish_timeout``. Await :meth:`rpc_send` to have it raised at the call.
        """
        io = self._check_open()
        if io.is_current():
            raise LoopThreadError("rpc_send_future can't be called on the I/O thread")
        data = wire.encode_request("rpc", msg, "msg")
        key = recipient_id if type(recipient_id) is str else str(recipient_id)
        future, correlation_id = self._pending.future()
        try:
            io.outbox.post_rpc(key, data, correlation_id)
        except CommunicatorClosedError as exc:
            resolve(self._pending.pop(correlation_id), False, exc)
        return future

    async def task_send(
        self, task: Any, *, no_reply: bool = False, queue: str | None = None
    ) -> Any:
        io = self._check_open()
        data = wire.encode_request("task", task, "task")
        queue = self.default_queue if queue is None else queue
        if no_reply:
            await wait_future(io.submit(io.tasks.publish, queue, data, None))
            return None
        slot = self._slot()
        correlation_id = self._pending.add(slot)
        try:
            await wait_future(io.submit(io.tasks.publish, queue, data, correlation_id))
            return await slot.wait()
        finally:
            self._pending.pop(correlation_id)

    def task_send_future(
        self, task: Any, *, queue: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """Publish a task (in the background) and return a thread-safe future of its reply.

        A failed publish (no connection within ``publish_timeout``) fails the future.
        """
        io = self._check_open()
        data = wire.encode_request("task", task, "task")
        queue = self.default_queue if queue is None else queue
        future, correlation_id = self._pending.future()

        def published(done: concurrent.futures.Future[None]) -> None:
            exc = done.exception()
            if exc is not None:
                resolve(self._pending.pop(correlation_id), False, exc)

        io.submit(io.tasks.publish, queue, data, correlation_id).add_done_callback(published)
        return future

    async def broadcast_send(
        self,
        body: Any,
        *,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
    ) -> None:
        """Publish a broadcast and wait for the broker's confirm (not for the subscribers)."""
        io = self._check_open()
        data = wire.encode_broadcast(body, sender, subject, correlation_id)
        await wait_future(io.submit(io.publisher.publish_broadcast, data))


async def _added(
    io: IoSide,
    future: concurrent.futures.Future[Any],
    remove: Callable[[str], Coroutine[Any, Any, Any]],
    key: str,
) -> None:
    """Await an add carried out on the I/O side. If the caller is cancelled meanwhile, the
    add still completes there: undo it then, so a cancelled add leaves nothing subscribed
    (a process's pid would otherwise stay taken with nobody answering for it)."""
    try:
        await wait_future(future)
    except BaseException:

        def undo(done: concurrent.futures.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                with contextlib.suppress(Exception):
                    io.post(remove, key)

        future.add_done_callback(undo)
        raise
