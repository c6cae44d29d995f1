"""``AmqpCommunicator``: the :class:`~broker.Communicator` interface on RabbitMQ (aio-pika).

Theory of operation
-------------------
Two sides, two threads:

- The *caller side* is bound to the loop (asyncio or trio) that opens the communicator with
  ``async with``, exactly like :class:`~broker.LoopCommunicator`: one dispatcher task fed by an
  :class:`~broker._wakeup.Inbox` runs every subscriber on that loop; async results are awaited in
  a handler task group. Replies a send awaits arrive in :class:`~broker._wakeup.ReplySlot` s (or
  thread-safe futures for the ``*_future`` variants).
- The *I/O side* (:class:`_Io`) owns the aio-pika connection on a private thread running its own
  asyncio loop, so a blocking step on the caller's loop never delays heartbeats, and aio-pika
  (asyncio-only) never sees trio. Consumer callbacks decode and validate each message there and
  post it to the caller's inbox (one non-blocking call-soon per burst). The caller side talks to
  the I/O side only through ``call_soon_threadsafe``, never through a blocking call; RPC
  requests and replies go through an *outbox* that, like the inbox, costs one wake-up of the
  I/O loop per burst and is published by one task in order.

Speed: a sequential RPC crosses four threads (caller loop, our I/O loop, the recipient's I/O
loop, the recipient's loop, and back), and in one process they share the GIL, so what counts is
the Python work per message. The hot paths therefore use aiormq's channels directly (aio-pika's
``Exchange.publish`` with a timeout costs several tasks on Python 3.11, its consumers a second
task per delivery), RPC requests and replies are not confirmed (the reply proves delivery) and
the RPC, reply and broadcast queues are consumed without acknowledgements (they are exclusive
and acknowledged on arrival anyway). Tasks keep confirms and acks: they are the durable part.

Topology and envelope: see :mod:`broker._amqp_wire`. In short: RPC through a direct exchange
(routing key = identifier, literal) to an exclusive queue per identifier, published mandatory
(unconfirmed), so an unknown recipient comes back as a ``basic.return`` and raises
:class:`~broker.UnroutableError` at once; a second subscriber of the same identifier, on any
connection, hits ``RESOURCE_LOCKED`` on the exclusive queue: :class:`DuplicateSubscriberError`.
Replies go by correlation id to the sender's exclusive reply queue. Broadcasts go through a
fanout exchange to one exclusive queue per communicator; filters run on the receiving side,
before the caller's loop is woken. Tasks are persistent messages in durable quorum queues,
acknowledged only when the subscriber's result is complete (the reply is published and
confirmed first), and requeued by RabbitMQ when the consumer's channel or connection goes away.

Rejection (:class:`~broker.TaskRejected`): the consumer republishes the task to its queue with
its consumer id appended to the ``plumio-rejected-by`` header, then acks the original. A consumer
that receives a task it rejected before never runs it again; it asks the broker how many
consumers the queue has and which rejecters are still alive (each consumer holds an exclusive,
empty *presence* queue named after its id). If every live consumer has rejected the task, it is
*parked* in ``{ns}.parked.{queue}``; a consumer that subscribes later moves parked tasks back.
Otherwise it is republished after a growing back-off (20 ms doubling up to 2 s), so a task
bouncing between a rejecter and a busy acceptor costs a few messages per second, not a storm.

Dead letters: every redelivery after a consumer went away is counted (quorum queues keep
``x-delivery-count``; the count survives a rejection in ``plumio-redeliveries``). A consumer that
receives a task redelivered more than ``max_redeliveries`` times replies
:class:`~broker.DeadLetteredError` to the sender and rejects the message to the namespace's
dead-letter exchange, ``{ns}.dlx``, which feeds the durable queue ``{ns}.dead-letters``. The
queue's own ``x-delivery-limit`` (``max_redeliveries + 1``) is a backstop that dead-letters to the
same place. Malformed messages on any queue are rejected there too, with one log line (from
the queues consumed without acknowledgements, a copy is published to ``{ns}.dlx`` instead, so
it carries no ``x-death`` header).

Reconnection: when the connection drops, replies still awaited fail with
:class:`BrokerUnavailableError` (the reply queue died with the connection), handlers of tasks
held by this communicator are cancelled (RabbitMQ requeues those tasks), sends wait up to
``publish_timeout`` for a new connection and then raise :class:`BrokerUnavailableError`. A
supervisor reconnects with exponential back-off and restores every subscription.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import math
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, cast, final

import anyio
import anyio.lowlevel
import attrs

from . import _amqp_wire as wire
from ._delivery import DEFAULT_QUEUE, ReplySink, resolve
from ._endpoint import CLOSED, CLOSING, NEW, OPEN, LoopEndpoint
from ._errors import (
    CodecError,
    CommunicatorClosedError,
    DeliveryFailed,
    DuplicateSubscriberError,
    ErrorInfo,
    LoopThreadError,
    UnknownSubscriberError,
    UnroutableError,
)
from ._filters import BroadcastFilter
from ._wakeup import LoopGone, wait_future
from .abc import BroadcastSubscriber, RpcSubscriber, TaskSubscriber

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractChannel,
        AbstractConnection,
        AbstractIncomingMessage,
    )
    from aiormq import Channel as RawChannel
    from aiormq.abc import DeliveredMessage
    from yarl import URL

__all__ = ["AmqpCommunicator", "BrokerUnavailableError", "DEFAULT_URL"]

logger = logging.getLogger("broker.amqp")

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"

_REJECTED_BY: Final = "plumio-rejected-by"
_REDELIVERIES: Final = "plumio-redeliveries"
_BOUNCES: Final = "plumio-bounces"
_SSL_OPTIONS: Final = frozenset(
    {"cafile", "capath", "cadata", "keyfile", "certfile", "no_verify_ssl"}
)
_CONTENT_TYPE: Final = "application/json"

_NEW, _OPEN, _CLOSING, _CLOSED = NEW, OPEN, CLOSING, CLOSED
_get_ident = threading.get_ident


class BrokerUnavailableError(DeliveryFailed):
    """Raised when the broker can't be reached, so a message was not (or may not have been)
    delivered.

    Nobody's fault in particular: the network or the broker is down. Raised by a send made
    while the connection is down and not back within ``publish_timeout``, by a publish the
    broker did not confirm in time, and into every reply still awaited when the connection
    dropped (the reply queue died with it; the RPC or task may still run). Retrying may
    duplicate a task.
    """


def _import_aio_pika() -> Any:
    try:
        import aio_pika
    except ImportError as exc:
        raise ImportError(
            "the AMQP adapter needs aio-pika; install it with: pip install 'plumio[amqp]'"
        ) from exc
    return aio_pika


def _check_subscriber(subscriber: object) -> None:
    if not callable(subscriber):
        raise TypeError(f"subscriber must be callable, got {subscriber!r}")


def _safe_url(url: URL) -> str:
    return str(url.with_password("***") if url.password else url)


# -- items handed to the caller's loop ---------------------------------------------------------


@final
class _RpcItem:
    __slots__ = ("body", "correlation_id", "reply_to", "subscriber")

    def __init__(
        self, subscriber: Callable[..., Any], body: Any, reply_to: str, correlation_id: str
    ) -> None:
        self.subscriber = subscriber
        self.body = body
        self.reply_to = reply_to
        self.correlation_id = correlation_id


@final
class _TaskItem:
    __slots__ = ("body", "epoch", "message", "sub")

    def __init__(
        self, sub: _TaskSub, epoch: int, message: AbstractIncomingMessage, body: Any
    ) -> None:
        self.sub = sub
        self.epoch = epoch
        self.message = message
        self.body = body


@final
class _BroadcastItem:
    __slots__ = ("body", "correlation_id", "sender", "subject", "subscribers")

    def __init__(
        self,
        subscribers: tuple[Callable[..., Any], ...],
        body: Any,
        sender: Any,
        subject: Any,
        correlation_id: Any,
    ) -> None:
        self.subscribers = subscribers
        self.body = body
        self.sender = sender
        self.subject = subject
        self.correlation_id = correlation_id


# -- subscriptions (owned by the I/O loop) -----------------------------------------------------


@attrs.define(eq=False)
class _RpcSub:
    key: str
    subscriber: Callable[..., Any]
    queue_name: str
    channel: RawChannel | None = None  # the consume channel its consumer lives on
    tag: str | None = None


@attrs.define(eq=False)
class _TaskSub:
    key: str
    subscriber: Callable[..., Any]
    queue: str
    prefetch: int
    consumer_id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    epoch: int = 0
    channel: AbstractChannel | None = None
    removed: bool = False


@attrs.define(eq=False)
class _Session:
    """One live connection and its channels.

    The hot paths (publishing, consuming) talk to aiormq's channels directly: aio-pika's
    ``Exchange.publish`` with a timeout runs the channel lock and the write through
    ``asyncio.wait_for`` (a task each on Python 3.11), and its consumers add a second task
    per delivery. aio-pika's objects are kept for declarations and the task paths (the RPC
    subscriptions, added and removed per process, use aiormq's channels too).
    """

    connection: AbstractConnection
    publish: RawChannel  # publisher confirms, returns raise: tasks, task replies, broadcasts
    fast: RawChannel  # no confirms: RPC requests and replies, dead-letter copies
    control: AbstractChannel  # declares, binds, deletes; reopened after a channel error
    consume: RawChannel  # rpc, broadcast and reply consumers (no prefetch limit)
    lost: asyncio.Event
    owners: tuple[AbstractChannel, ...]  # aio-pika's channel objects of the raw channels
    task_queues: set[str] = attrs.field(factory=set)
    broadcast_tag: str | None = None
    #: the RPC queue declares and deletes that may fail (RESOURCE_LOCKED, PRECONDITION_FAILED),
    #: one at a time (``claim_lock``), so a channel error is always the current operation's and
    #: never fails an unrelated one; opened on first use, reopened after an error
    claim: AbstractChannel | None = None
    claim_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)


# -- the communicator --------------------------------------------------------------------------


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
        _import_aio_pika()
        if max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be >= 0, got {max_redeliveries!r}")
        super().__init__(name or f"amqp-{id(self):x}")
        self._names = wire.Names(namespace)
        self._url = _build_url(
            url, heartbeat=heartbeat, ssl_options=ssl_options, ssl_context=ssl_context
        )
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._max_reconnect_delay = max_reconnect_delay
        self.max_redeliveries = max_redeliveries
        self.default_queue = default_queue
        self._consumer_timeout = consumer_timeout
        self._queue_expires = queue_expires
        self._closed_event: anyio.Event | None = None
        self._pending: dict[str, ReplySink] = {}
        self._pending_lock = threading.Lock()
        self._uid = uuid.uuid4().hex
        # correlation ids: unique across communicators by the uid, within one by the counter
        self._ids = map(f"{self._uid[:12]}-{{}}".format, itertools.count(1))
        self._io: _Io | None = None

    def __repr__(self) -> str:
        return (
            f"<AmqpCommunicator {self._name!r} {_safe_url(self._url)} "
            f"namespace={self._names.namespace!r} {self._state}>"
        )

    @property
    def namespace(self) -> str:
        return self._names.namespace

    @property
    def url(self) -> str:
        """The broker URL, password masked."""
        return _safe_url(self._url)

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up right now (it may drop at any time)."""
        io = self._io
        return io is not None and io.session is not None

    def _connect_kwargs(self) -> dict[str, Any]:
        """What ``aio_pika.connect`` is called with (the URL carries heartbeat and TLS files)."""
        return {
            "url": self._url,
            "ssl_context": self._ssl_context,
            "timeout": self._connect_timeout,
            "client_properties": {"connection_name": self._name},
        }

    # -- lifetime -------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[AmqpCommunicator]:
        self._bind_loop()
        self._closed_event = anyio.Event()
        self._io = io = _Io(self)
        io.start()
        try:
            await wait_future(io.submit(io.open))
        except BaseException:
            self._state = _CLOSED
            self._closed_event.set()
            with anyio.CancelScope(shield=True):
                await wait_future(io.submit(io.close))
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
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._publish_timeout + 5):
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
                self._fail_pending(CommunicatorClosedError(f"communicator {self._name!r} closed"))
                with contextlib.suppress(Exception):
                    await wait_future(io.submit(io.close))
        finally:
            self._state = _CLOSED
            self._fail_pending(CommunicatorClosedError(f"communicator {self._name!r} closed"))
            io.stop()
            self._closed_event.set()

    def _closed_text(self) -> str:
        return str(self._closed_while_handling())

    def _check_open(self) -> _Io:
        self._check_state()
        assert self._io is not None
        return self._io

    async def wait_connected(self) -> None:
        """Wait until the connection is up and every subscription is restored.

        Returns at once when connected. Useful after an outage; sends wait by themselves.
        """
        io = self._check_open()
        await wait_future(io.submit(io.wait_connected))

    # -- pending replies (any thread) -----------------------------------------------------

    def _new_id(self) -> str:
        return next(self._ids)  # atomic under the GIL, like itertools.count itself

    def _add_pending(self, sink: ReplySink) -> str:
        correlation_id = next(self._ids)
        with self._pending_lock:
            self._pending[correlation_id] = sink
        return correlation_id

    def _pop_pending(self, correlation_id: str) -> ReplySink | None:
        with self._pending_lock:
            return self._pending.pop(correlation_id, None)

    def _fail_pending(self, exc: BaseException) -> None:
        with self._pending_lock:
            sinks = list(self._pending.values())
            self._pending.clear()
        for sink in sinks:
            resolve(sink, False, exc)

    # -- delivery (called on the I/O thread) ----------------------------------------------

    def _deliver(self, item: Any) -> None:
        """Hand ``item`` to our loop; raises :class:`LoopGone` when it can't take it."""
        if self._state != _OPEN or self._inbox is None:
            raise LoopGone
        self._inbox.post(item)

    def _cancel_task_handlers_soon(self, sub: _TaskSub, epoch: int | None) -> None:
        handle = self._handle
        if handle is not None:
            with contextlib.suppress(LoopGone):
                handle.post(self._cancel_handlers_of, sub, epoch)

    def _cancel_handlers_of(self, sub: _TaskSub, epoch: int | None) -> None:
        # in our loop
        self._cancel_task_handlers(
            lambda item: item.sub is sub and (epoch is None or item.epoch == epoch)
        )

    # -- dispatcher (our loop) ------------------------------------------------------------

    def _run_item(self, item: Any) -> None:
        kind = type(item)
        if kind is _RpcItem:
            self._run_rpc(item)
        elif kind is _TaskItem:
            self._run_task(item)
        else:
            self._run_broadcast(item)

    def _abandon(self, item: Any) -> None:
        if type(item) is _RpcItem:
            self._reply_fault(item, "unroutable", self._closed_text())

    # RPC (the shared part is in LoopEndpoint)

    def _run_rpc(self, item: _RpcItem) -> None:
        self._handle_rpc(item, item.subscriber, item.body)

    def _rpc_done(self, item: _RpcItem, value: Any) -> None:
        self._reply_data(item.reply_to, item.correlation_id, _value_data(value))

    def _rpc_failed(self, item: _RpcItem, exc: Exception) -> None:
        self._reply_data(item.reply_to, item.correlation_id, _error_data(exc))

    def _reply_fault(self, item: _RpcItem, kind: str, message: str) -> None:
        self._reply_data(item.reply_to, item.correlation_id, wire.encode_fault(kind, message))

    def _reply_data(self, reply_to: str, correlation_id: str, data: bytes) -> None:
        if self._io is not None:
            self._io.post_reply(reply_to, correlation_id, data)

    # tasks

    def _run_task(self, item: _TaskItem) -> None:
        self._handle_task(item, item.sub.subscriber, item.body)

    def _task_done(self, item: _TaskItem, value: Any) -> None:
        try:
            data = wire.encode_reply(value)
        except CodecError as exc:
            self._task_failed(item, exc)
            return
        assert self._io is not None
        self._io.post(self._io.finish_task, item, data)

    def _task_failed(self, item: _TaskItem, exc: Exception) -> None:
        if not item.message.reply_to:
            logger.error(
                "task subscriber %r on %r raised (no reply requested)",
                item.sub.subscriber,
                self._name,
                exc_info=exc,
            )
        assert self._io is not None
        self._io.post(self._io.finish_task, item, _error_data(exc))

    def _task_rejected(self, item: _TaskItem) -> None:
        assert self._io is not None
        self._io.post(self._io.reject_task, item)

    # broadcasts

    def _run_broadcast(self, item: _BroadcastItem) -> None:
        self._handle_broadcast(
            item.subscribers, item.body, item.sender, item.subject, item.correlation_id
        )

    # -- subscriptions --------------------------------------------------------------------

    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> str:
        io = self._check_open()
        _check_subscriber(subscriber)
        key = uuid.uuid4().hex if identifier is None else str(identifier)
        self._names.rpc_queue(key)  # ValueError if too long
        await wait_future(io.submit(io.add_rpc, key, subscriber))
        return key

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        io = self._check_open()
        await wait_future(io.submit(io.remove_rpc, str(identifier)))

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
        self._names.task_queue(queue)
        await wait_future(io.submit(io.add_task, key, subscriber, queue, prefetch))
        return key

    async def remove_task_subscriber(self, identifier: Any) -> None:
        """Stop consuming; held tasks are requeued and their running handlers cancelled."""
        io = self._check_open()
        sub: _TaskSub = await wait_future(io.submit(io.remove_task, str(identifier)))
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
        await wait_future(io.submit(io.add_broadcast, key, subscriber))
        return key

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        io = self._check_open()
        await wait_future(io.submit(io.remove_broadcast, str(identifier)))

    # -- sending --------------------------------------------------------------------------

    async def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        io = self._check_open()
        data = wire.encode_request("rpc", msg, "msg")
        key = recipient_id if type(recipient_id) is str else str(recipient_id)
        slot = self._slot()
        correlation_id = self._add_pending(slot)
        try:
            # a failed publish (unroutable, no connection) fails the slot from the I/O
            # thread; a published one needs no wake-up of our loop (the reply follows)
            io.post_rpc(key, data, correlation_id)
            return await slot.wait()
        finally:
            self._pop_pending(correlation_id)

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
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        correlation_id = self._add_pending(future)
        future.add_done_callback(lambda _: self._pop_pending(correlation_id))
        try:
            io.post_rpc(key, data, correlation_id)
        except CommunicatorClosedError as exc:
            resolve(self._pop_pending(correlation_id), False, exc)
        return future

    async def task_send(
        self, task: Any, *, no_reply: bool = False, queue: str | None = None
    ) -> Any:
        io = self._check_open()
        data = wire.encode_request("task", task, "task")
        queue = self.default_queue if queue is None else queue
        if no_reply:
            await wait_future(io.submit(io.publish_task, queue, data, None))
            return None
        slot = self._slot()
        correlation_id = self._add_pending(slot)
        try:
            await wait_future(io.submit(io.publish_task, queue, data, correlation_id))
            return await slot.wait()
        finally:
            self._pop_pending(correlation_id)

    def task_send_future(
        self, task: Any, *, queue: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """Publish a task (in the background) and return a thread-safe future of its reply.

        A failed publish (no connection within ``publish_timeout``) fails the future.
        """
        io = self._check_open()
        data = wire.encode_request("task", task, "task")
        queue = self.default_queue if queue is None else queue
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        correlation_id = self._add_pending(future)
        future.add_done_callback(lambda _: self._pop_pending(correlation_id))

        def published(done: concurrent.futures.Future[None]) -> None:
            exc = done.exception()
            if exc is not None:
                resolve(self._pop_pending(correlation_id), False, exc)

        io.submit(io.publish_task, queue, data, correlation_id).add_done_callback(published)
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
        await wait_future(io.submit(io.publish_broadcast, data))


def _value_data(value: Any) -> bytes:
    try:
        return wire.encode_reply(value)
    except CodecError as exc:
        return _error_data(exc)


def _error_data(exc: BaseException) -> bytes:
    return wire.encode_error(ErrorInfo.from_exception(exc))


def _build_url(
    url: str,
    *,
    heartbeat: int,
    ssl_options: Mapping[str, Any] | None,
    ssl_context: ssl.SSLContext | None,
) -> URL:
    from yarl import URL

    parsed = URL(url)
    if parsed.scheme not in ("amqp", "amqps") or not parsed.host:
        raise ValueError(f"not an amqp:// or amqps:// URL: {_safe_url(parsed)!r}")
    tls = parsed.scheme == "amqps"
    if (ssl_options or ssl_context is not None) and not tls:
        raise ValueError("ssl_context and ssl_options need an amqps:// URL")
    query: dict[str, str] = dict(parsed.query)
    query.setdefault("heartbeat", str(int(heartbeat)))
    for key, value in (ssl_options or {}).items():
        if key not in _SSL_OPTIONS:
            raise ValueError(
                f"unknown ssl option {key!r}; expected one of {', '.join(sorted(_SSL_OPTIONS))}"
            )
        if key == "no_verify_ssl":
            value = "1" if value and value != "0" else "0"
        query[key] = str(value)
    return parsed.with_query(query)


# -- the I/O side ------------------------------------------------------------------------------


def _header_int(headers: Mapping[str, Any], key: str) -> int:
    value = headers.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _header_ids(headers: Mapping[str, Any]) -> list[str]:
    value = headers.get(_REJECTED_BY)
    if isinstance(value, list | tuple):
        return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
    return []


_connection_classes: dict[Any, Any] = {}


def _connection_class(aio_pika: Any) -> Any:
    """aio-pika's Connection, minus its ``__del__``: that one schedules ``close()`` on the
    thread that happens to collect it (often one without a loop) when a connect failed. We
    close every connection explicitly instead."""
    cls = _connection_classes.get(aio_pika)
    if cls is None:

        class _Connection(aio_pika.Connection):  # type: ignore[misc]
            def __del__(self) -> None:
                pass

        cls = _connection_classes[aio_pika] = _Connection
    return cls


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError)
#: an outbox entry: (is_request, routing key, data, correlation id)
_OutItem = tuple[bool, str, bytes, str]
#: sweep the table of unanswered RPC requests when it reaches this size
_RETURNABLE_SWEEP: Final = 4096


async def _raw(channel: AbstractChannel) -> RawChannel:
    """aiormq's channel under an aio-pika one (the hot paths use it directly)."""
    return cast("RawChannel", await channel.get_underlay_channel())


@final
class _Io:
    """The communicator's AMQP connection, on a private thread running an asyncio loop.

    Every ``async`` method runs on that loop (via :meth:`submit` or :meth:`post`) and owns the
    subscription registry, so no lock guards it.
    """

    def __init__(self, comm: AmqpCommunicator) -> None:
        self.aio_pika = _import_aio_pika()
        import aiormq.exceptions
        from aiormq import spec

        self.errors = aiormq.exceptions
        self.spec = spec
        self.comm = comm
        self.names = comm._names
        self.uid = comm._uid
        self.reply_to = self.names.reply_queue(self.uid)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._run, name=f"plumio-amqp {comm.name}", daemon=True
        )
        self.session: _Session | None = None
        self.connected = asyncio.Event()
        self.closing = False
        self.rpc: dict[str, _RpcSub] = {}
        self.broadcast: dict[str, Callable[..., Any]] = {}
        self.tasks: dict[str, _TaskSub] = {}
        self._broadcast_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()  # submitted operations
        self._posted: set[asyncio.Task[Any]] = set()  # replies, acks, rejections
        self._out: collections.deque[_OutItem] = collections.deque()
        self._out_lock = threading.Lock()
        self._out_scheduled = False
        # RPC requests published but not yet answered: correlation id -> (channel, key),
        # so that a basic.return can be told apart (see _track_return)
        self._returnable: dict[str, tuple[RawChannel, int]] = {}
        self._return_keys = itertools.count(1)
        self._sweep_at = _RETURNABLE_SWEEP
        self._supervisor: asyncio.Task[None] | None = None
        self._reconnects = itertools.count(1)
        self._connection_errors: tuple[type[BaseException], ...] = (
            *_CONNECTION_ERRORS,
            self.errors.AMQPConnectionError,
            self.errors.ChannelInvalidStateError,
            asyncio.TimeoutError,
        )
        self._io_errors: tuple[type[BaseException], ...] = (
            *self._connection_errors,
            self.errors.AMQPError,
        )
        self._handoff_errors: tuple[type[BaseException], ...] = (DeliveryFailed, *self._io_errors)

    # -- thread and loop ------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def is_current(self) -> bool:
        return _get_ident() == self.thread.ident

    def stop(self) -> None:
        """Stop the loop (from any thread); its thread then closes it and exits."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` on the I/O loop; returns a thread-safe future of its result."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            if not future.set_running_or_notify_cancel():
                return
            task = self.loop.create_task(fn(*args))
            self._tasks.add(task)

            def done(task: asyncio.Task[Any]) -> None:
                self._tasks.discard(task)
                if task.cancelled():
                    future.set_exception(
                        CommunicatorClosedError(f"communicator {self.comm.name!r} is closed")
                    )
                elif (exc := task.exception()) is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(task.result())

            task.add_done_callback(done)

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed
            raise CommunicatorClosedError(f"communicator {self.comm.name!r} is closed") from None
        return future

    # The outbox: RPC requests and replies, from any thread. They are published without
    # confirms, so a publish only suspends under back-pressure (or while reconnecting): one
    # task per burst publishes them in order, and a burst costs one wake-up of the I/O loop.

    def post_rpc(self, key: str, data: bytes, correlation_id: str) -> None:
        """Publish an RPC request (from any thread); a failure resolves its pending reply.

        Raises:
            CommunicatorClosedError: the I/O loop is gone.
        """
        self._post_out((True, key, data, correlation_id))

    def post_reply(self, reply_to: str, correlation_id: str, data: bytes) -> None:
        """Publish an RPC reply (from any thread), fire and forget."""
        with contextlib.suppress(CommunicatorClosedError):
            self._post_out((False, reply_to, data, correlation_id))

    def _post_out(self, item: _OutItem) -> None:
        with self._out_lock:
            self._out.append(item)
            if self._out_scheduled:
                return
            self._out_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._start_out)
        except RuntimeError:  # the loop is closed
            with self._out_lock:
                self._out.clear()
                self._out_scheduled = False
            raise CommunicatorClosedError(f"communicator {self.comm.name!r} is closed") from None

    def _start_out(self) -> None:
        task = self.loop.create_task(self._drain_out())
        self._posted.add(task)
        task.add_done_callback(self._spawned_done)

    async def _drain_out(self) -> None:
        lock = self._out_lock
        batch: collections.deque[_OutItem] = collections.deque()
        try:
            while True:
                with lock:
                    if not self._out:
                        self._out_scheduled = False
                        return
                    batch, self._out = self._out, batch
                while batch:
                    session = self.session
                    if session is None or session.lost.is_set():
                        try:
                            session = await self.ready()
                        except Exception as exc:
                            # everything queued has waited long enough: fail it all at once
                            with lock:
                                batch.extend(self._out)
                                self._out.clear()
                            self._fail_out(batch, exc)
                            continue
                    await self._publish_out(session, batch.popleft())
        except BaseException:  # cancelled: the I/O loop is closing
            with lock:
                batch.extend(self._out)
                self._out.clear()
                self._out_scheduled = False
            self._fail_out(
                batch, CommunicatorClosedError(f"communicator {self.comm.name!r} is closed")
            )
            raise

    async def _publish_out(self, session: _Session, item: _OutItem) -> None:
        is_request, routing_key, data, correlation_id = item
        try:
            if is_request:
                await self.publish_rpc(routing_key, data, correlation_id, session)
            else:
                await self.publish_reply(routing_key, correlation_id, data, session)
        except Exception as exc:
            self._fail_out((item,), exc)

    def _fail_out(self, items: Iterable[_OutItem], exc: BaseException) -> None:
        for is_request, _routing_key, _data, correlation_id in items:
            if is_request:
                resolve(self.comm._pop_pending(correlation_id), False, exc)
            else:
                logger.error("amqp %r: can't send an rpc reply: %s", self.comm.name, exc)
        if isinstance(items, collections.deque):
            items.clear()

    def post(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O loop, fire and forget (failures are logged)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._spawn, fn, args)

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]) -> None:
        task = self.loop.create_task(fn(*args))
        self._posted.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._posted.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("amqp %r: background operation failed: %s", self.comm.name, exc)

    # -- connection -----------------------------------------------------------------------

    def _unavailable(self, exc: BaseException | None = None) -> BrokerUnavailableError:
        detail = f": {type(exc).__name__}" if exc is not None else ""
        text = str(exc).replace(self.comm._url.password or "\0", "***") if exc else ""
        if text:
            detail += f": {text}"
        return BrokerUnavailableError(f"no connection to the broker at {self.comm.url}{detail}")

    async def open(self) -> None:
        """First connection: raise :class:`BrokerUnavailableError` if it fails."""
        try:
            self.session = await self._connect()
        except self._io_errors as exc:
            raise self._unavailable(exc) from None
        self.connected.set()
        self._supervisor = self.loop.create_task(self._supervise())

    async def _connect(self) -> _Session:
        kwargs = self.comm._connect_kwargs()
        connection: AbstractConnection = await self.aio_pika.connect(
            kwargs.pop("url"), connection_class=_connection_class(self.aio_pika), **kwargs
        )
        try:
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_: lost.set())
            publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
            fast = await connection.channel(publisher_confirms=False)
            control = await connection.channel()
            consume = await connection.channel()
            ExchangeType = self.aio_pika.ExchangeType
            names = self.names
            await control.declare_exchange(names.rpc_exchange, ExchangeType.DIRECT, durable=True)
            await control.declare_exchange(
                names.broadcast_exchange, ExchangeType.FANOUT, durable=True
            )
            await control.declare_exchange(
                names.dead_letter_exchange, ExchangeType.FANOUT, durable=True
            )
            dead = await control.declare_queue(
                names.dead_letter_queue, durable=True, arguments=self._durable_args()
            )
            await dead.bind(names.dead_letter_exchange)
            reply = await control.declare_queue(
                names.reply_queue(self.uid), exclusive=True, arguments=self._transient_args()
            )
            raw_consume = await _raw(consume)
            # exclusive: the queue dies with the connection, so acks would buy nothing
            await raw_consume.basic_consume(reply.name, self._on_reply, no_ack=True)
            session = _Session(
                connection,
                await _raw(publish),
                await _raw(fast),
                control,
                raw_consume,
                lost,
                (publish, fast, consume),
            )
            await self._restore(session)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return session

    def _durable_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": "quorum"}
        if self.comm._queue_expires is not None:
            args["x-expires"] = max(1, math.ceil(self.comm._queue_expires * 1000))
        return args

    def _transient_args(self) -> dict[str, Any]:
        return {"x-dead-letter-exchange": self.names.dead_letter_exchange}

    def _task_args(self) -> dict[str, Any]:
        args = self._durable_args()
        args["x-dead-letter-exchange"] = self.names.dead_letter_exchange
        args["x-delivery-limit"] = self.comm.max_redeliveries + 1
        if self.comm._consumer_timeout is not None:
            args["x-consumer-timeout"] = max(1, math.ceil(self.comm._consumer_timeout * 1000))
        return args

    async def _supervise(self) -> None:
        while not self.closing:
            session = self.session
            assert session is not None
            await session.lost.wait()
            if self.closing:
                return
            self.session = None
            self.connected.clear()
            self._returnable.clear()  # their channel is gone, and their replies with it
            logger.warning(
                "amqp %r: connection to %s lost; reconnecting", self.comm.name, self.comm.url
            )
            self.comm._fail_pending(
                BrokerUnavailableError(
                    f"connection to {self.comm.url} lost while waiting for the reply "
                    "(the message may still be processed)"
                )
            )
            for sub in self.tasks.values():
                sub.channel = None
                self.comm._cancel_task_handlers_soon(sub, None)
            delay = 0.05
            while not self.closing:
                try:
                    new = await self._connect()
                except self._io_errors as exc:
                    logger.debug(
                        "amqp %r: reconnection failed (%s); retrying in %.2f s",
                        self.comm.name,
                        type(exc).__name__,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.comm._max_reconnect_delay)
                    continue
                if self.closing:
                    with contextlib.suppress(Exception):
                        await new.connection.close()
                    return
                self.session = new
                self.connected.set()
                logger.info("amqp %r: reconnected to %s", self.comm.name, self.comm.url)
                break

    async def _restore(self, session: _Session) -> None:
        """Re-create every subscription on a new connection."""
        for key, rpc_sub in list(self.rpc.items()):
            if rpc_sub.tag is None:
                continue  # being added right now: add_rpc finishes it
            try:
                await self._start_rpc(session, rpc_sub)
            except DuplicateSubscriberError:
                logger.error(
                    "amqp %r: rpc subscriber %r was taken by another communicator while "
                    "the connection was down; dropped",
                    self.comm.name,
                    key,
                )
                del self.rpc[key]
        if self.broadcast:
            await self._start_broadcast(session)
        for sub in list(self.tasks.values()):
            if sub.channel is None and not sub.removed:
                await self._start_task(session, sub)

    async def wait_connected(self) -> None:
        await self.connected.wait()

    async def ready(self) -> _Session:
        """The live session; waits up to ``publish_timeout`` for one."""
        session = self.session
        if session is not None and not session.lost.is_set():
            return session
        if self.closing:
            raise CommunicatorClosedError(f"communicator {self.comm.name!r} is closed")
        try:
            await asyncio.wait_for(self.connected.wait(), self.comm._publish_timeout)
        except TimeoutError:
            raise BrokerUnavailableError(
                f"no connection to the broker at {self.comm.url} "
                f"(waited {self.comm._publish_timeout} s)"
            ) from None
        assert self.session is not None
        return self.session

    async def _control(self, session: _Session) -> AbstractChannel:
        """The control channel, reopened if a channel error closed it."""
        if session.control.is_closed:
            session.control = await session.connection.channel()
        return session.control

    # -- RPC ------------------------------------------------------------------------------

    async def add_rpc(self, key: str, subscriber: Callable[..., Any]) -> None:
        if key in self.rpc:
            raise DuplicateSubscriberError(f"rpc subscriber {key!r} already exists")
        sub = _RpcSub(key, subscriber, self.names.rpc_queue(key))
        self.rpc[key] = sub  # reserved while we declare
        try:
            session = await self.ready()
            await self._start_rpc(session, sub)
        except BaseException:
            if self.rpc.get(key) is sub:
                del self.rpc[key]
            raise

    @asynccontextmanager
    async def _claiming(self, session: _Session) -> AsyncIterator[RawChannel]:
        """The claim channel (see :class:`_Session`), held for one operation."""
        async with session.claim_lock:
            if session.claim is None or session.claim.is_closed:
                session.claim = await session.connection.channel()
            yield await _raw(session.claim)

    async def _start_rpc(self, session: _Session, sub: _RpcSub) -> None:
        """Declare, bind and consume ``sub``'s queue: two round trips.

        The declare of the exclusive queue is the duplicate check, so it is awaited first (on
        the claim channel: a ``RESOURCE_LOCKED`` closes that channel and fails nothing else).
        The bind (control channel) and the consumer (consume channel) then only need the queue
        to exist, so they go out together and are awaited together.
        """
        name = sub.queue_name
        async with self._claiming(session) as claim:
            try:
                await claim.queue_declare(name, exclusive=True, arguments=self._transient_args())
            except self.errors.ChannelLockedResource:
                raise DuplicateSubscriberError(
                    f"rpc subscriber {sub.key!r} already exists"
                ) from None
        control = await _raw(await self._control(session))
        # no_ack: RPCs are at most once and the queue is exclusive (it dies with the
        # connection), so an ack would only cost a frame per call
        bound, consumed = await asyncio.gather(
            control.queue_bind(name, self.names.rpc_exchange, routing_key=sub.key),
            self._consume(session.consume, name, functools.partial(self._on_rpc, sub), no_ack=True),
            return_exceptions=True,
        )
        failure = next((r for r in (bound, consumed) if isinstance(r, BaseException)), None)
        if failure is not None:
            # deleting the queue takes its binding and consumer with it
            with contextlib.suppress(*self._io_errors, RuntimeError):
                async with self._claiming(session) as claim:
                    await claim.queue_delete(name)
            raise failure
        sub.channel = session.consume
        sub.tag = cast("str", consumed)

    async def _consume(
        self,
        channel: RawChannel,
        queue: str,
        callback: Callable[[DeliveredMessage], Coroutine[Any, Any, None]],
        *,
        no_ack: bool,
    ) -> str:
        ok = await channel.basic_consume(queue, callback, no_ack=no_ack)
        assert ok.consumer_tag is not None
        return str(ok.consumer_tag)

    async def remove_rpc(self, key: str) -> None:
        """Unbind, then delete the queue if empty: two round trips.

        Unbinding first makes a later send unroutable at once instead of lost. Deleting the
        queue also cancels its consumer: RabbitMQ sends the ``basic.cancel`` after every
        message the queue pushed to it (its deliveries and its exit are ordered), so aiormq
        keeps dispatching those to :meth:`_on_rpc` until then. A queue that still holds
        messages (RabbitMQ stops pushing to a channel with too many unsent) refuses the
        ``if_empty`` delete; then the consumer is cancelled and the rest is drained first.
        """
        sub = self.rpc.get(key)
        if sub is None or sub.tag is None:
            raise UnknownSubscriberError(f"no rpc subscriber {key!r} on this communicator")
        del self.rpc[key]
        session = self.session
        if session is None:
            return  # the exclusive queue died with the connection
        control = await _raw(await self._control(session))
        await control.queue_unbind(sub.queue_name, self.names.rpc_exchange, routing_key=key)
        try:
            async with self._claiming(session) as claim:
                await claim.queue_delete(sub.queue_name, if_empty=True)
            return
        except self.errors.ChannelPreconditionFailed:
            logger.debug(
                "amqp %r: rpc queue of %r not empty at removal; draining it", self.comm.name, key
            )
        assert sub.channel is not None
        await sub.channel.basic_cancel(sub.tag)
        # what was routed before the unbind still reaches the subscriber
        control = await _raw(await self._control(session))
        while True:
            message = await control.basic_get(sub.queue_name, no_ack=True)
            if not isinstance(message.delivery, self.spec.Basic.GetOk):
                break
            await self._on_rpc(sub, message)
        await control.queue_delete(sub.queue_name)

    async def _on_rpc(self, sub: _RpcSub, message: DeliveredMessage) -> None:
        properties = message.header.properties
        reply_to = properties.reply_to
        correlation_id = properties.correlation_id
        try:
            body = wire.decode_request(message.body, "rpc")
            if not reply_to or not correlation_id:
                raise wire.Malformed("rpc without reply_to or correlation_id")
        except wire.Malformed as exc:
            await self._dead_letter_copy(message, sub.queue_name, str(exc))
            return
        try:
            self.comm._deliver(_RpcItem(sub.subscriber, body, reply_to, correlation_id))
        except LoopGone:
            self.post_reply(
                reply_to, correlation_id, wire.encode_fault("unroutable", self.comm._closed_text())
            )

    async def _settle(self, op: Awaitable[Any]) -> None:
        # ack/reject on a channel that died is moot: RabbitMQ requeued the delivery
        with contextlib.suppress(*self._io_errors, RuntimeError):
            await op

    def _log_malformed(self, queue: str, reason: str) -> None:
        logger.warning(
            "amqp %r: rejected a malformed message from %r to %r: %s",
            self.comm.name,
            queue,
            self.names.dead_letter_queue,
            reason,
        )

    async def _dead_letter(self, message: AbstractIncomingMessage, queue: str, reason: str) -> None:
        self._log_malformed(queue, reason)
        await self._settle(message.reject(requeue=False))

    async def _dead_letter_copy(self, message: DeliveredMessage, queue: str, reason: str) -> None:
        """Dead-letter a message consumed without acks: publish a copy to the dead-letter
        exchange (RabbitMQ's own dead-lettering needs a reject, so no ``x-death`` here)."""
        self._log_malformed(queue, reason)
        session = self.session
        if session is None:
            return
        with contextlib.suppress(DeliveryFailed, self.errors.PublishError):
            await self._publish(
                session.fast,
                self.names.dead_letter_exchange,
                queue,
                message.body,
                message.header.properties,
                mandatory=False,
                confirm=False,
            )

    async def publish_rpc(
        self, key: str, data: bytes, correlation_id: str, session: _Session | None = None
    ) -> None:
        """Publish an RPC request, mandatory.

        Not confirmed: the reply proves delivery, and awaiting a confirm per call costs
        about a tenth of a millisecond of a round trip. An unroutable request still comes
        back as a ``basic.return``, which :meth:`_track_return` turns into
        :class:`UnroutableError` for the sender. Should aiormq's bookkeeping not be what
        this expects, requests go through the confirming channel instead.
        """
        if session is None:
            session = await self.ready()
        properties = self._properties(correlation_id=correlation_id, reply_to=self.reply_to)
        if self._track_return(session.fast, key, correlation_id):
            channel, confirm = session.fast, False
        else:  # another aiormq (tested by patching _track_return)
            channel, confirm = session.publish, True
        try:
            await self._publish(
                channel,
                self.names.rpc_exchange,
                key,
                data,
                properties,
                mandatory=True,
                confirm=confirm,
            )
        except self.errors.PublishError:
            raise UnroutableError(f"unknown rpc recipient {key!r}") from None
        except BaseException:
            self._untrack_return(correlation_id)
            raise

    def _track_return(self, channel: RawChannel, key: str, correlation_id: str) -> bool:
        """Have a ``basic.return`` of this request fail its pending reply; False if unable.

        aiormq hands a returned message to the future it keeps under the delivery tag that
        ``message_id_delivery_tag`` maps the message id to; on a channel without confirms
        nothing else uses either table. We register a future under a key no delivery tag
        takes (negative), and remove it again when the reply arrives (or, for requests that
        never get one, in a sweep once the table has grown).
        """
        by_message_id = getattr(channel, "message_id_delivery_tag", None)
        confirmations = getattr(channel, "confirmations", None)
        if not isinstance(by_message_id, dict) or not isinstance(confirmations, dict):
            return False  # pragma: no cover - another aiormq
        if len(self._returnable) >= self._sweep_at:
            self._sweep_returnable()
            self._sweep_at = max(_RETURNABLE_SWEEP, 2 * len(self._returnable))
        tag = -next(self._return_keys)
        returned = self.loop.create_future()
        by_message_id[correlation_id] = tag
        confirmations[tag] = returned
        self._returnable[correlation_id] = (channel, tag)

        def on_return(future: asyncio.Future[Any]) -> None:
            self._untrack_return(correlation_id)
            if not future.cancelled() and future.exception() is None:
                resolve(
                    self.comm._pop_pending(correlation_id),
                    False,
                    UnroutableError(f"unknown rpc recipient {key!r}"),
                )

        returned.add_done_callback(on_return)
        return True

    def _untrack_return(self, correlation_id: str) -> None:
        entry = self._returnable.pop(correlation_id, None)
        if entry is not None:
            channel, tag = entry
            channel.message_id_delivery_tag.pop(correlation_id, None)
            channel.confirmations.pop(tag, None)  # our future, or aiormq's Returning marker

    def _sweep_returnable(self) -> None:
        """Forget requests nobody waits for any more (their callers gave up)."""
        pending = self.comm._pending
        for correlation_id in [c for c in self._returnable if c not in pending]:
            self._untrack_return(correlation_id)

    def _properties(
        self,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        persistent: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Any:
        return self.spec.Basic.Properties(
            content_type=_CONTENT_TYPE,
            delivery_mode=2 if persistent else 1,
            correlation_id=correlation_id,
            reply_to=reply_to,
            headers=headers,
            # aiormq maps basic.return to the publish by message id: keep it unique here
            message_id=correlation_id,
        )

    async def _publish(
        self,
        channel: RawChannel,
        exchange: str,
        routing_key: str,
        data: bytes,
        properties: Any,
        *,
        mandatory: bool,
        confirm: bool = True,
    ) -> None:
        """Publish ``data``; with ``confirm``, wait up to ``publish_timeout`` for the broker.

        ``confirm`` must say whether ``channel`` has publisher confirms. ``wait=False``: the
        frames go to the connection's write queue and the confirm (which comes after they
        were written) is what is awaited, without holding the channel lock meanwhile.

        Raises:
            aiormq.exceptions.PublishError: a mandatory message was returned (unroutable).
            DeliveryFailed: the broker refused it (nack).
            BrokerUnavailableError: no connection, or no confirm within ``publish_timeout``.
        """
        publish = channel.basic_publish(
            data,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
            wait=False,
        )
        try:
            if confirm:
                async with asyncio.timeout(self.comm._publish_timeout):
                    await publish
            else:  # no timeout to arm: nothing waits past the write
                await publish
        except self.errors.PublishError:
            raise
        except self.errors.DeliveryError:
            raise DeliveryFailed(
                f"the broker refused the message (routing key {routing_key!r})"
            ) from None
        except self._io_errors as exc:
            raise self._unavailable(exc) from None

    async def publish_reply(
        self, reply_to: str, correlation_id: str, data: bytes, session: _Session | None = None
    ) -> None:
        """Send an RPC reply: not confirmed (nobody here would act on the confirm; a lost
        reply shows at the sender, whose reply queue is gone or who stops waiting)."""
        if session is None:
            session = await self.ready()
        await self._publish(
            session.fast,
            "",
            reply_to,
            data,
            self._properties(correlation_id=correlation_id),
            mandatory=False,
            confirm=False,
        )

    async def publish_task_reply(self, reply_to: str, correlation_id: str, data: bytes) -> None:
        """Send a task's reply, confirmed: the task is acked only once its reply is safe."""
        session = await self.ready()
        await self._publish(
            session.publish,
            "",
            reply_to,
            data,
            self._properties(correlation_id=correlation_id),
            mandatory=False,
        )

    async def _on_reply(self, message: DeliveredMessage) -> None:
        correlation_id = message.header.properties.correlation_id
        try:
            ok, value = wire.decode_reply(message.body)
            if not correlation_id:
                raise wire.Malformed("reply without correlation_id")
        except wire.Malformed as exc:
            await self._dead_letter_copy(message, self.reply_to, str(exc))
            return
        self._untrack_return(correlation_id)
        sink = self.comm._pop_pending(correlation_id)
        if sink is None:
            logger.debug(
                "amqp %r: reply for unknown correlation id %r dropped (already answered, "
                "or the sender stopped waiting)",
                self.comm.name,
                correlation_id,
            )
        else:
            resolve(sink, ok, value)

    # -- broadcasts -----------------------------------------------------------------------

    async def add_broadcast(self, key: str, subscriber: Callable[..., Any]) -> None:
        if key in self.broadcast:
            raise DuplicateSubscriberError(f"broadcast subscriber {key!r} already exists")
        self.broadcast[key] = subscriber
        try:
            session = await self.ready()
            await self._start_broadcast(session)
        except BaseException:
            if self.broadcast.get(key) is subscriber:
                del self.broadcast[key]
            raise

    async def _start_broadcast(self, session: _Session) -> None:
        async with self._broadcast_lock:
            if session.broadcast_tag is not None:
                return
            name = self.names.broadcast_queue(self.uid)
            control = await self._control(session)
            queue = await control.declare_queue(
                name, exclusive=True, arguments=self._transient_args()
            )
            await queue.bind(self.names.broadcast_exchange)
            # acknowledged on arrival: no_ack is the same, minus a frame per broadcast
            session.broadcast_tag = await self._consume(
                session.consume, name, self._on_broadcast, no_ack=True
            )

    async def remove_broadcast(self, key: str) -> None:
        # the queue stays (bound and consumed) until close; with no subscriber, broadcasts
        # are dropped on arrival
        if self.broadcast.pop(key, None) is None:
            raise UnknownSubscriberError(f"no broadcast subscriber {key!r} on this communicator")

    async def _on_broadcast(self, message: DeliveredMessage) -> None:
        try:
            body, sender, subject, correlation_id = wire.decode_broadcast(message.body)
        except wire.Malformed as exc:
            await self._dead_letter_copy(message, self.names.broadcast_queue(self.uid), str(exc))
            return
        matching = tuple(
            s.subscriber if isinstance(s, BroadcastFilter) else s
            for s in self.broadcast.values()
            if not isinstance(s, BroadcastFilter) or s.matches(sender, subject)
        )
        if matching:
            with contextlib.suppress(LoopGone):
                self.comm._deliver(_BroadcastItem(matching, body, sender, subject, correlation_id))

    async def publish_broadcast(self, data: bytes) -> None:
        session = await self.ready()
        await self._publish(
            session.publish,
            self.names.broadcast_exchange,
            "",
            data,
            self._properties(),
            mandatory=False,
        )

    # -- tasks ----------------------------------------------------------------------------

    async def _ensure_task_queue(self, session: _Session, queue: str) -> None:
        if queue in session.task_queues:
            return
        control = await self._control(session)
        try:
            await control.declare_queue(
                self.names.task_queue(queue), durable=True, arguments=self._task_args()
            )
            await control.declare_queue(
                self.names.parked_queue(queue), durable=True, arguments=self._parked_args()
            )
        except self.errors.ChannelPreconditionFailed as exc:
            raise DeliveryFailed(
                f"task queue {queue!r} exists with other arguments (max_redeliveries, "
                f"consumer_timeout and queue_expires must match across the namespace): {exc}"
            ) from None
        session.task_queues.add(queue)

    def _parked_args(self) -> dict[str, Any]:
        args = self._durable_args()
        args["x-dead-letter-exchange"] = self.names.dead_letter_exchange
        return args

    async def add_task(
        self, key: str, subscriber: Callable[..., Any], queue: str, prefetch: int
    ) -> None:
        if key in self.tasks:
            raise DuplicateSubscriberError(f"task subscriber {key!r} already exists")
        sub = _TaskSub(key, subscriber, queue, prefetch)
        self.tasks[key] = sub
        try:
            session = await self.ready()
            await self._start_task(session, sub)
        except BaseException:
            if self.tasks.get(key) is sub:
                del self.tasks[key]
            raise

    async def _start_task(self, session: _Session, sub: _TaskSub) -> None:
        await self._ensure_task_queue(session, sub.queue)
        control = await self._control(session)
        await control.declare_queue(self.names.presence_queue(sub.consumer_id), exclusive=True)
        channel = await session.connection.channel()
        await channel.set_qos(prefetch_count=sub.prefetch)
        sub.epoch += 1
        epoch = sub.epoch
        await self._consume(
            await _raw(channel),
            self.names.task_queue(sub.queue),
            functools.partial(self._on_task_delivery, sub, epoch),
            no_ack=False,
        )
        sub.channel = channel
        channel.close_callbacks.add(lambda *_: self._task_channel_closed(sub, epoch, session))
        await self._unpark(session, sub.queue)

    def _task_channel_closed(self, sub: _TaskSub, epoch: int, session: _Session) -> None:
        # the broker requeues what this channel held: stop the handlers working on it
        self.comm._cancel_task_handlers_soon(sub, epoch)
        if sub.removed or self.closing or sub.epoch != epoch:
            return
        sub.channel = None
        self.post(self._resume_task, sub, epoch, session)

    async def _resume_task(self, sub: _TaskSub, epoch: int, session: _Session) -> None:
        # a channel error (e.g. consumer_timeout) on a live connection: consume again
        await asyncio.sleep(0)  # let a connection-loss callback run first
        if sub.removed or self.closing or sub.epoch != epoch or session.lost.is_set():
            return
        if self.session is not session or session.connection.is_closed:
            return  # the supervisor restores it on the new connection
        logger.warning(
            "amqp %r: the channel of task subscriber %r closed; its tasks were requeued, "
            "resubscribing",
            self.comm.name,
            sub.key,
        )
        try:
            await self._start_task(session, sub)
        except self._io_errors as exc:
            logger.error(
                "amqp %r: can't resubscribe task subscriber %r: %s", self.comm.name, sub.key, exc
            )

    async def remove_task(self, key: str) -> _TaskSub:
        sub = self.tasks.get(key)
        if sub is None:
            raise UnknownSubscriberError(f"no task subscriber {key!r} on this communicator")
        del self.tasks[key]
        sub.removed = True
        channel, sub.channel = sub.channel, None
        if channel is not None and not channel.is_closed:
            # closing the channel cancels the consumer and requeues what it held
            with contextlib.suppress(*self._io_errors):
                await channel.close()
        session = self.session
        if session is not None:
            with contextlib.suppress(*self._io_errors):
                control = await self._control(session)
                await control.queue_delete(self.names.presence_queue(sub.consumer_id))
        return sub

    def _redeliveries(self, message: AbstractIncomingMessage) -> int:
        headers = message.headers or {}
        return _header_int(headers, _REDELIVERIES) + _header_int(headers, "x-delivery-count")

    async def _on_task_delivery(self, sub: _TaskSub, epoch: int, message: DeliveredMessage) -> None:
        await self._on_task(sub, epoch, self.aio_pika.IncomingMessage(message, no_ack=False))

    async def _on_task(self, sub: _TaskSub, epoch: int, message: AbstractIncomingMessage) -> None:
        queue_name = self.names.task_queue(sub.queue)
        headers = message.headers or {}
        try:
            body = wire.decode_request(message.body, "task")
        except wire.Malformed as exc:
            await self._dead_letter(message, queue_name, str(exc))
            return
        if sub.consumer_id in _header_ids(headers):
            await self._bounce(sub, message)
            return
        deliveries = self._redeliveries(message) + 1
        if deliveries > self.comm.max_redeliveries + 1:
            reason = (
                f"delivered {deliveries} times; its consumers went away each time "
                f"(max_redeliveries={self.comm.max_redeliveries})"
            )
            logger.warning(
                "amqp %r: task dead-lettered from queue %r: %s", self.comm.name, sub.queue, reason
            )
            if message.reply_to and message.correlation_id:
                with contextlib.suppress(DeliveryFailed):
                    await self.publish_task_reply(
                        message.reply_to,
                        message.correlation_id,
                        wire.encode_fault("dead_lettered", f"task in queue {sub.queue!r} {reason}"),
                    )
            await self._settle(message.reject(requeue=False))
            return
        try:
            self.comm._deliver(_TaskItem(sub, epoch, message, body))
        except LoopGone:
            # our loop is gone: give the task back and let the connection go
            await self._settle(message.nack(requeue=True))

    async def finish_task(self, item: _TaskItem, data: bytes) -> None:
        message = item.message
        if message.reply_to and message.correlation_id:
            try:
                await self.publish_task_reply(message.reply_to, message.correlation_id, data)
            except DeliveryFailed as exc:
                logger.error(
                    "amqp %r: can't send the reply of a task (%s); it stays unacknowledged "
                    "and will be redelivered",
                    self.comm.name,
                    exc,
                )
                return
        await self._settle(message.ack())

    def _republished(self, message: AbstractIncomingMessage, headers: dict[str, Any]) -> Any:
        """The properties of a copy of ``message`` with ``headers`` (aio-pika formats them)."""
        return self.aio_pika.Message(
            b"",
            content_type=_CONTENT_TYPE,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            headers=headers,
            delivery_mode=self.aio_pika.DeliveryMode.PERSISTENT,
        ).properties

    async def _move(
        self,
        session: _Session,
        message: AbstractIncomingMessage,
        queue_name: str,
        headers: dict[str, Any],
    ) -> None:
        """Publish a copy of ``message`` to ``queue_name`` (confirmed), then ack the original."""
        await self._publish(
            session.publish,
            "",
            queue_name,
            message.body,
            self._republished(message, headers),
            mandatory=True,
        )
        await self._settle(message.ack())

    async def reject_task(self, item: _TaskItem) -> None:
        message = item.message
        headers = dict(message.headers or {})
        headers[_REJECTED_BY] = [*_header_ids(headers), item.sub.consumer_id]
        headers[_REDELIVERIES] = self._redeliveries(message)
        headers.pop("x-delivery-count", None)
        headers[_BOUNCES] = 0
        try:
            session = await self.ready()
            await self._move(session, message, self.names.task_queue(item.sub.queue), headers)
        except self._handoff_errors as exc:
            logger.error("amqp %r: can't hand a rejected task on: %s", self.comm.name, exc)
            await self._settle(message.nack(requeue=True))

    async def _consumer_alive(self, session: _Session, consumer_id: str) -> bool:
        """Whether a task consumer still holds its exclusive presence queue."""
        channel = await session.connection.channel()
        try:
            await channel.declare_queue(self.names.presence_queue(consumer_id), passive=True)
        except self.errors.ChannelLockedResource:
            return True  # exists, held by another connection
        except self.errors.ChannelNotFoundEntity:
            return False
        else:
            return True  # exists, ours
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _consumer_count(self, session: _Session, queue: str) -> int:
        control = await self._control(session)
        declared = await control.declare_queue(self.names.task_queue(queue), passive=True)
        result = declared.declaration_result
        return int(result.consumer_count or 0)

    async def _bounce(self, sub: _TaskSub, message: AbstractIncomingMessage) -> None:
        """``message`` came back to a consumer that rejected it: park it or pass it on."""
        headers = dict(message.headers or {})
        headers[_REDELIVERIES] = self._redeliveries(message)
        headers.pop("x-delivery-count", None)
        try:
            session = await self.ready()
            consumers = await self._consumer_count(session, sub.queue)
            live = 0
            for consumer_id in set(_header_ids(headers)):
                if consumer_id == sub.consumer_id or await self._consumer_alive(
                    session, consumer_id
                ):
                    live += 1
            if live >= consumers:
                headers[_BOUNCES] = 0
                await self._move(session, message, self.names.parked_queue(sub.queue), headers)
                logger.info(
                    "amqp %r: every consumer of %r rejected a task; parked until a new "
                    "consumer subscribes",
                    self.comm.name,
                    sub.queue,
                )
                if await self._consumer_count(session, sub.queue) > consumers:
                    await self._unpark(session, sub.queue)  # one joined meanwhile
                return
            bounces = _header_int(headers, _BOUNCES)
            headers[_BOUNCES] = bounces + 1
            await asyncio.sleep(min(2.0, 0.02 * 2 ** min(bounces, 10)))
            await self._move(session, message, self.names.task_queue(sub.queue), headers)
        except self._handoff_errors as exc:
            logger.error("amqp %r: can't pass a rejected task on: %s", self.comm.name, exc)
            await self._settle(message.nack(requeue=True))

    async def _unpark(self, session: _Session, queue: str) -> None:
        """Move every parked task of ``queue`` back to it (a consumer joined)."""
        channel = await session.connection.channel()
        try:
            parked = await channel.get_queue(self.names.parked_queue(queue), ensure=False)
            while (message := await parked.get(no_ack=False, fail=False)) is not None:
                headers = dict(message.headers or {})
                headers[_REDELIVERIES] = self._redeliveries(message)
                headers.pop("x-delivery-count", None)
                headers[_BOUNCES] = 0
                await self._move(session, message, self.names.task_queue(queue), headers)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def publish_task(self, queue: str, data: bytes, correlation_id: str | None) -> None:
        session = await self.ready()
        try:
            await self._ensure_task_queue(session, queue)
        except self._io_errors as exc:
            raise self._unavailable(exc) from None
        properties = self._properties(
            correlation_id=correlation_id or self.comm._new_id(),
            reply_to=self.reply_to if correlation_id is not None else None,
            persistent=True,
        )
        try:
            await self._publish(
                session.publish,
                "",
                self.names.task_queue(queue),
                data,
                properties,
                mandatory=True,
            )
        except self.errors.PublishError:
            session.task_queues.discard(queue)  # deleted behind our back?
            raise DeliveryFailed(f"task queue {queue!r} does not exist on the broker") from None

    # -- closing --------------------------------------------------------------------------

    async def stop_consuming(self) -> None:
        """Stop every consumer: task channels close (RabbitMQ requeues their tasks)."""
        self.closing = True
        session = self.session
        for sub in self.tasks.values():
            sub.removed = True
            channel, sub.channel = sub.channel, None
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(*self._io_errors):
                    await channel.close()
        if session is not None and not session.consume.is_closed:
            with contextlib.suppress(*self._io_errors):
                await session.consume.close()

    async def close(self) -> None:
        """Flush outstanding replies and acks, close the connection."""
        self.closing = True
        if self._posted:
            await asyncio.wait(set(self._posted), timeout=self.comm._publish_timeout)
        if self._supervisor is not None:
            self._supervisor.cancel()
        session, self.session = self.session, None
        self.connected.clear()
        if session is not None:
            with contextlib.suppress(Exception):
                await session.connection.close()
