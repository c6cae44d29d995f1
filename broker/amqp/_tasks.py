"""Task queues on the I/O loop: publishing, consuming, rejection, parking and dead letters.

Tasks are the durable part. They are persistent messages in durable quorum queues
(``{ns}.task.{queue}``), published with confirms, consumed with acknowledgements on a channel
per subscriber (``basic.qos(prefetch)``), and acknowledged only when the subscriber's result
is complete (the reply is published and confirmed first). RabbitMQ requeues the tasks a
consumer held when its channel or connection goes away.

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
same place. A malformed task (a foreign ``content_type``, not a valid envelope, a
``plumio-rejected-by`` header that is not a list of consumer ids) is rejected there too, with
one log line saying why. No task is ever left unsettled by a failure in the consumer callback:
should one raise anyway (a bug), the task is requeued with a log line, and the queue's delivery
limit dead-letters it if that keeps happening.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from .._errors import DeliveryFailed, DuplicateSubscriberError, UnknownSubscriberError
from .._wakeup import LoopGone
from . import _wire as wire
from ._connection import Connection, IoThread, Session, consume, raw
from ._consuming import Caller
from ._publishing import CONTENT_TYPE, Publisher
from ._rpc import PendingReplies

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
    from aiormq.abc import DeliveredMessage

__all__: list[str] = []

logger = logging.getLogger("broker.amqp")

_REJECTED_BY: Final = "plumio-rejected-by"
_REDELIVERIES: Final = "plumio-redeliveries"
_BOUNCES: Final = "plumio-bounces"


def _header_int(headers: Mapping[str, Any], key: str) -> int:
    value = headers.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _header_ids(headers: Mapping[str, Any]) -> list[str]:
    """The consumer ids in the ``plumio-rejected-by`` header; raises :class:`wire.Malformed`
    when it is not a list of ids (text, or UTF-8 bytes)."""
    value = headers.get(_REJECTED_BY)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise wire.Malformed(f"header {_REJECTED_BY!r} is not a list: {value!r:.80}")
    try:
        return [v.decode() if isinstance(v, bytes) else _text(v) for v in value]
    except (UnicodeDecodeError, TypeError):
        raise wire.Malformed(
            f"header {_REJECTED_BY!r} holds something other than consumer ids: {value!r:.80}"
        ) from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


@attrs.define(eq=False)
class TaskSub:
    key: str
    subscriber: Callable[..., Any]
    queue: str
    prefetch: int
    consumer_id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    epoch: int = 0
    channel: AbstractChannel | None = None
    removed: bool = False
    # the newest epoch whose channel is known gone (its deliveries were requeued by
    # RabbitMQ); set on the I/O thread, read on the caller's loop (one int)
    dead_epoch: int = -1


@final
class TaskItem:
    """A task delivery handed to the caller's loop."""

    __slots__ = ("body", "epoch", "message", "settling", "sub")

    def __init__(
        self, sub: TaskSub, epoch: int, message: AbstractIncomingMessage, body: Any
    ) -> None:
        self.sub = sub
        self.epoch = epoch
        self.message = message
        self.body = body
        self.settling = False  # its ack or rejection is on its way (the caller's loop sets it)

    @property
    def stale(self) -> bool:
        """Whether this delivery is gone: its channel closed (RabbitMQ requeued the task,
        which another delivery will carry) or its subscriber was removed. A stale delivery
        is not run, and what a handler of it gives never answers the task."""
        sub = self.sub
        return sub.removed or self.epoch <= sub.dead_epoch


@final
class TaskQueues:
    """The communicator's task queues and task subscriptions (owned by the I/O loop)."""

    def __init__(
        self,
        thread: IoThread,
        connection: Connection,
        publisher: Publisher,
        pending: PendingReplies,
        caller: Caller,
    ) -> None:
        self.thread = thread
        self.connection = connection
        self.publisher = publisher
        self.pending = pending
        self.caller = caller
        self.settings = connection.settings
        self.names = connection.names
        self.aio_pika = connection.aio_pika
        self.subs: dict[str, TaskSub] = {}

    # -- publishing -----------------------------------------------------------------------

    async def _ensure_queue(self, session: Session, queue: str) -> None:
        if queue in session.task_queues:
            return
        control = await self.connection.control(session)
        try:
            await control.declare_queue(
                self.names.task_queue(queue), durable=True, arguments=self.settings.task_args()
            )
            await control.declare_queue(
                self.names.parked_queue(queue), durable=True, arguments=self.settings.parked_args()
            )
        except self.connection.errors.ChannelPreconditionFailed as exc:
            raise DeliveryFailed(
                f"task queue {queue!r} exists with other arguments (max_redeliveries, "
                f"consumer_timeout and queue_expires must match across the namespace): {exc}"
            ) from None
        session.task_queues.add(queue)

    async def publish(self, queue: str, data: bytes, correlation_id: str | None) -> None:
        """Publish a task (confirmed); with a ``correlation_id``, its reply comes back to us."""
        connection = self.connection
        session = await connection.ready()
        try:
            await self._ensure_queue(session, queue)
        except connection.io_errors as exc:
            raise connection.unavailable(exc) from None
        properties = self.publisher.properties(
            correlation_id=correlation_id or self.pending.new_id(),
            reply_to=connection.reply_to if correlation_id is not None else None,
            persistent=True,
        )
        try:
            await self.publisher.publish(
                session.publish,
                "",
                self.names.task_queue(queue),
                data,
                properties,
                mandatory=True,
            )
        except connection.errors.PublishError:
            session.task_queues.discard(queue)  # deleted behind our back?
            raise DeliveryFailed(f"task queue {queue!r} does not exist on the broker") from None

    # -- subscriptions --------------------------------------------------------------------

    async def add(
        self, key: str, subscriber: Callable[..., Any], queue: str, prefetch: int
    ) -> None:
        if key in self.subs:
            raise DuplicateSubscriberError(f"task subscriber {key!r} already exists")
        sub = TaskSub(key, subscriber, queue, prefetch)
        self.subs[key] = sub
        try:
            session = await self.connection.ready()
            await self._start(session, sub)
        except BaseException:
            if self.subs.get(key) is sub:
                del self.subs[key]
            raise

    async def restore(self, session: Session) -> None:
        """Consume again on a new connection."""
        for sub in list(self.subs.values()):
            if sub.channel is None and not sub.removed:
                await self._start(session, sub)

    def lost(self) -> None:
        """The connection dropped: RabbitMQ requeues what we held; stop the handlers."""
        for sub in self.subs.values():
            sub.channel = None
            sub.dead_epoch = sub.epoch
            self.caller._cancel_task_handlers_soon(sub, None)

    async def _start(self, session: Session, sub: TaskSub) -> None:
        await self._ensure_queue(session, sub.queue)
        control = await self.connection.control(session)
        await control.declare_queue(self.names.presence_queue(sub.consumer_id), exclusive=True)
        channel = await session.connection.channel()
        await channel.set_qos(prefetch_count=sub.prefetch)
        sub.epoch += 1
        epoch = sub.epoch
        await consume(
            await raw(channel),
            self.names.task_queue(sub.queue),
            functools.partial(self._on_delivery, sub, epoch),
            no_ack=False,
        )
        sub.channel = channel
        channel.close_callbacks.add(lambda *_: self._channel_closed(sub, epoch, session))
        await self._unpark(session, sub.queue)

    def _channel_closed(self, sub: TaskSub, epoch: int, session: Session) -> None:
        # the broker requeues what this channel held: stop the handlers working on it
        sub.dead_epoch = max(sub.dead_epoch, epoch)
        self.caller._cancel_task_handlers_soon(sub, epoch)
        if sub.removed or self.connection.closing or sub.epoch != epoch:
            return
        sub.channel = None
        self.thread.post(self._resume, sub, epoch, session)

    async def _resume(self, sub: TaskSub, epoch: int, session: Session) -> None:
        # a channel error (e.g. consumer_timeout) on a live connection: consume again
        await asyncio.sleep(0)  # let a connection-loss callback run first
        connection = self.connection
        if sub.removed or connection.closing or sub.epoch != epoch or session.lost.is_set():
            return
        if connection.session is not session or session.connection.is_closed:
            return  # the supervisor restores it on the new connection
        logger.warning(
            "amqp %r: the channel of task subscriber %r closed; its tasks were requeued, "
            "resubscribing",
            self.settings.name,
            sub.key,
        )
        try:
            await self._start(session, sub)
        except connection.io_errors as exc:
            logger.error(
                "amqp %r: can't resubscribe task subscriber %r: %s",
                self.settings.name,
                sub.key,
                exc,
            )

    async def remove(self, key: str) -> TaskSub:
        sub = self.subs.get(key)
        if sub is None:
            raise UnknownSubscriberError(f"no task subscriber {key!r} on this communicator")
        del self.subs[key]
        sub.removed = True
        channel, sub.channel = sub.channel, None
        io_errors = self.connection.io_errors
        if channel is not None and not channel.is_closed:
            # closing the channel cancels the consumer and requeues what it held
            with contextlib.suppress(*io_errors):
                await channel.close()
        session = self.connection.session
        if session is not None:
            with contextlib.suppress(*io_errors):
                control = await self.connection.control(session)
                await control.queue_delete(self.names.presence_queue(sub.consumer_id))
        return sub

    async def stop(self) -> None:
        """Close every consumer's channel (RabbitMQ requeues their tasks)."""
        for sub in self.subs.values():
            sub.removed = True
            channel, sub.channel = sub.channel, None
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(*self.connection.io_errors):
                    await channel.close()

    # -- deliveries -----------------------------------------------------------------------

    async def _settle(self, op: Awaitable[Any]) -> None:
        # ack/reject on a channel that died is moot: RabbitMQ requeued the delivery
        with contextlib.suppress(*self.connection.io_errors, RuntimeError):
            await op

    def _redeliveries(self, message: AbstractIncomingMessage) -> int:
        headers = message.headers or {}
        return _header_int(headers, _REDELIVERIES) + _header_int(headers, "x-delivery-count")

    async def _on_delivery(self, sub: TaskSub, epoch: int, message: DeliveredMessage) -> None:
        incoming: AbstractIncomingMessage | None = None
        try:
            incoming = self.aio_pika.IncomingMessage(message, no_ack=False)
            await self._on_task(sub, epoch, incoming)
        except Exception:
            # A bug: unsettled, the task would hold a prefetch slot for the channel's
            # lifetime. Give it back (the queue's delivery limit dead-letters a task that
            # keeps failing here), and say so once.
            logger.exception(
                "amqp %r: a task from %r could not be handled (a bug); requeued",
                self.settings.name,
                self.names.task_queue(sub.queue),
            )
            # aio-pika's nack refuses a message that was settled already (a second
            # settlement would close the channel); without one, nothing was settled
            with contextlib.suppress(Exception):
                if incoming is not None:
                    await incoming.nack(requeue=True)
                elif message.delivery_tag is not None:
                    await message.channel.basic_nack(message.delivery_tag, requeue=True)

    async def _on_task(self, sub: TaskSub, epoch: int, message: AbstractIncomingMessage) -> None:
        queue_name = self.names.task_queue(sub.queue)
        headers = message.headers or {}
        try:
            wire.check_content_type(message.content_type)
            body = wire.decode_request(message.body, "task")
            rejected_by = _header_ids(headers)
        except wire.Malformed as exc:
            self.publisher.log_malformed(queue_name, str(exc))
            await self._settle(message.reject(requeue=False))
            return
        if sub.consumer_id in rejected_by:
            await self._bounce(sub, message)
            return
        deliveries = self._redeliveries(message) + 1
        max_redeliveries = self.settings.max_redeliveries
        if deliveries > max_redeliveries + 1:
            reason = (
                f"delivered {deliveries} times; its consumers went away each time "
                f"(max_redeliveries={max_redeliveries})"
            )
            logger.warning(
                "amqp %r: task dead-lettered from queue %r: %s",
                self.settings.name,
                sub.queue,
                reason,
            )
            if message.reply_to and message.correlation_id:
                with contextlib.suppress(DeliveryFailed):
                    await self.publisher.publish_task_reply(
                        message.reply_to,
                        message.correlation_id,
                        wire.encode_fault("dead_lettered", f"task in queue {sub.queue!r} {reason}"),
                    )
            await self._settle(message.reject(requeue=False))
            return
        try:
            self.caller._deliver(TaskItem(sub, epoch, message, body))
        except LoopGone:
            # our loop is gone: give the task back and let the connection go
            await self._settle(message.nack(requeue=True))

    async def finish(self, item: TaskItem, data: bytes) -> None:
        """The subscriber's result is ``data``: reply (confirmed), then ack.

        Unless the delivery is stale (:meth:`_stale`): then the task was requeued and the
        result (often an error the lost connection caused) must not be taken for its reply.
        """
        message = item.message
        if _stale(item, self.connection.errors.ChannelInvalidStateError):
            logger.info(
                "amqp %r: the result of a task whose delivery was lost is dropped (the task "
                "was requeued)",
                self.settings.name,
            )
            return
        if message.reply_to and message.correlation_id:
            try:
                await self.publisher.publish_task_reply(
                    message.reply_to, message.correlation_id, data
                )
            except DeliveryFailed as exc:
                logger.error(
                    "amqp %r: can't send the reply of a task (%s); it stays unacknowledged "
                    "and will be redelivered",
                    self.settings.name,
                    exc,
                )
                return
        await self._settle(message.ack())

    # -- rejection and parking ------------------------------------------------------------

    def _republished(self, message: AbstractIncomingMessage, headers: dict[str, Any]) -> Any:
        """The properties of a copy of ``message`` with ``headers`` (aio-pika formats them)."""
        return self.aio_pika.Message(
            b"",
            content_type=CONTENT_TYPE,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            headers=headers,
            delivery_mode=self.aio_pika.DeliveryMode.PERSISTENT,
        ).properties

    async def _move(
        self,
        session: Session,
        message: AbstractIncomingMessage,
        queue_name: str,
        headers: dict[str, Any],
    ) -> None:
        """Publish a copy of ``message`` to ``queue_name`` (confirmed), then ack the original."""
        await self.publisher.publish(
            session.publish,
            "",
            queue_name,
            message.body,
            self._republished(message, headers),
            mandatory=True,
        )
        await self._settle(message.ack())

    async def reject(self, item: TaskItem) -> None:
        """The subscriber raised TaskRejected: pass the task on, marked as rejected by us."""
        message = item.message
        headers = dict(message.headers or {})
        headers[_REJECTED_BY] = [*_header_ids(headers), item.sub.consumer_id]
        headers[_REDELIVERIES] = self._redeliveries(message)
        headers.pop("x-delivery-count", None)
        headers[_BOUNCES] = 0
        try:
            session = await self.connection.ready()
            await self._move(session, message, self.names.task_queue(item.sub.queue), headers)
        except self.connection.handoff_errors as exc:
            logger.error("amqp %r: can't hand a rejected task on: %s", self.settings.name, exc)
            await self._settle(message.nack(requeue=True))

    async def _consumer_alive(self, session: Session, consumer_id: str) -> bool:
        """Whether a task consumer still holds its exclusive presence queue."""
        errors = self.connection.errors
        channel = await session.connection.channel()
        try:
            await channel.declare_queue(self.names.presence_queue(consumer_id), passive=True)
        except errors.ChannelLockedResource:
            return True  # exists, held by another connection
        except errors.ChannelNotFoundEntity:
            return False
        else:
            return True  # exists, ours
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _consumer_count(self, session: Session, queue: str) -> int:
        control = await self.connection.control(session)
        declared = await control.declare_queue(self.names.task_queue(queue), passive=True)
        result = declared.declaration_result
        return int(result.consumer_count or 0)

    async def _bounce(self, sub: TaskSub, message: AbstractIncomingMessage) -> None:
        """``message`` came back to a consumer that rejected it: park it or pass it on."""
        headers = dict(message.headers or {})
        headers[_REDELIVERIES] = self._redeliveries(message)
        headers.pop("x-delivery-count", None)
        try:
            session = await self.connection.ready()
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
                    self.settings.name,
                    sub.queue,
                )
                if await self._consumer_count(session, sub.queue) > consumers:
                    await self._unpark(session, sub.queue)  # one joined meanwhile
                return
            bounces = _header_int(headers, _BOUNCES)
            headers[_BOUNCES] = bounces + 1
            await asyncio.sleep(min(2.0, 0.02 * 2 ** min(bounces, 10)))
            await self._move(session, message, self.names.task_queue(sub.queue), headers)
        except self.connection.handoff_errors as exc:
            logger.error("amqp %r: can't pass a rejected task on: %s", self.settings.name, exc)
            await self._settle(message.nack(requeue=True))

    async def _unpark(self, session: Session, queue: str) -> None:
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


def _stale(item: TaskItem, closed: type[Exception]) -> bool:
    """Whether ``item``'s delivery is gone (see :attr:`TaskItem.stale`), also when its
    channel closed before we heard of it (reading the channel raises ``closed``)."""
    if item.stale:
        return True
    try:
        item.message.channel  # noqa: B018 - raises once the channel is closed
    except closed:
        return True
    return False
