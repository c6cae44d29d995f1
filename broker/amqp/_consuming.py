"""Consuming RPCs and broadcasts on the I/O loop, and handing them to the caller's loop.

Consumer callbacks run on the I/O thread: they decode and validate each message there and post
it, as an *item*, to the communicator's inbox (:meth:`Caller._deliver`: one non-blocking
call-soon per burst); the communicator's dispatcher runs the subscribers on its own loop.
A malformed message (a foreign ``content_type`` included) is dead-lettered where it arrives,
with one log line, and never wakes the caller's loop; a callback never lets an exception escape
to aiormq (which would drop it silently).

- RPC: one exclusive queue per identifier (``{ns}.rpc.{identifier}``), bound to the direct
  RPC exchange and consumed without acknowledgements (RPCs are at most once, and the queue
  dies with the connection anyway). A second subscriber of the same identifier, on any
  connection, hits ``RESOURCE_LOCKED`` on the exclusive queue:
  :class:`~broker.DuplicateSubscriberError`.
- Broadcasts: one exclusive queue per communicator, bound to the fanout exchange; the
  filters run here, before the caller's loop is woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast, final

import attrs

from .._errors import DuplicateSubscriberError, UnknownSubscriberError
from .._filters import BroadcastFilter
from .._wakeup import LoopGone
from . import _wire as wire
from ._connection import Connection, Session, consume, raw
from ._publishing import Publisher
from ._rpc import Outbox

if TYPE_CHECKING:
    from aiormq import Channel as RawChannel
    from aiormq.abc import DeliveredMessage

__all__: list[str] = []

logger = logging.getLogger("broker.amqp")


class Caller(Protocol):
    """What the I/O side needs of the communicator's loop side (callable from any thread)."""

    def _deliver(self, item: Any) -> None:
        """Hand ``item`` to the caller's loop; raises :class:`LoopGone` when it can't."""

    def _cancel_task_handlers_soon(self, sub: Any, epoch: int | None) -> None:
        """Have the caller's loop cancel the handlers of ``sub``'s tasks (of ``epoch``)."""

    def _closed_text(self) -> str:
        """Why an RPC delivered now won't be answered (the communicator is closing)."""


# -- items handed to the caller's loop ---------------------------------------------------------


@final
class RpcItem:
    __slots__ = ("body", "correlation_id", "reply_to", "subscriber")

    def __init__(
        self, subscriber: Callable[..., Any], body: Any, reply_to: str, correlation_id: str
    ) -> None:
        self.subscriber = subscriber
        self.body = body
        self.reply_to = reply_to
        self.correlation_id = correlation_id


@final
class BroadcastItem:
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


# -- RPC subscriptions -------------------------------------------------------------------------


@attrs.define(eq=False)
class RpcSub:
    key: str
    subscriber: Callable[..., Any]
    queue_name: str
    channel: RawChannel | None = None  # the consume channel its consumer lives on
    tag: str | None = None


@final
class RpcConsumers:
    """The communicator's RPC subscriptions (owned by the I/O loop: no lock guards them)."""

    def __init__(
        self, connection: Connection, publisher: Publisher, outbox: Outbox, caller: Caller
    ) -> None:
        self.connection = connection
        self.publisher = publisher
        self.outbox = outbox
        self.caller = caller
        self.names = connection.names
        self.subs: dict[str, RpcSub] = {}
        # identifiers whose queue is being deleted: an add of one waits for the delete (the
        # exclusive queue would otherwise be re-declared, then deleted under the new consumer)
        self._removing: dict[str, asyncio.Event] = {}

    async def add(self, key: str, subscriber: Callable[..., Any]) -> None:
        if key in self.subs:
            raise DuplicateSubscriberError(f"rpc subscriber {key!r} already exists")
        sub = RpcSub(key, subscriber, self.names.rpc_queue(key))
        self.subs[key] = sub  # reserved while we declare
        try:
            removing = self._removing.get(key)
            if removing is not None:
                await removing.wait()
            session = await self.connection.ready()
            await self._start(session, sub)
        except BaseException:
            if self.subs.get(key) is sub:
                del self.subs[key]
            raise

    async def restore(self, session: Session) -> None:
        """Re-create the subscriptions on a new connection."""
        for key, sub in list(self.subs.items()):
            if sub.tag is None or self.subs.get(key) is not sub:
                continue  # being added right now (add() finishes it), or removed meanwhile
            try:
                await self._start(session, sub)
                if self.subs.get(key) is not sub:
                    # removed while we re-created it: its remove() found no queue to
                    # delete yet, so delete it now, or it would hold the identifier forever
                    with contextlib.suppress(*self.connection.io_errors, RuntimeError):
                        async with self.connection.claiming(session) as claim:
                            await claim.queue_delete(sub.queue_name)
            except DuplicateSubscriberError:
                logger.error(
                    "amqp %r: rpc subscriber %r was taken by another communicator while "
                    "the connection was down; dropped",
                    self.connection.settings.name,
                    key,
                )
                del self.subs[key]

    async def _start(self, session: Session, sub: RpcSub) -> None:
        """Declare, bind and consume ``sub``'s queue: two round trips.

        The declare of the exclusive queue is the duplicate check, so it is awaited first (on
        the claim channel: a ``RESOURCE_LOCKED`` closes that channel and fails nothing else).
        The bind (control channel) and the consumer (consume channel) then only need the queue
        to exist, so they go out together and are awaited together.
        """
        connection = self.connection
        name = sub.queue_name
        async with connection.claiming(session) as claim:
            try:
                await claim.queue_declare(
                    name, exclusive=True, arguments=connection.settings.transient_args()
                )
            except connection.errors.ChannelLockedResource:
                raise DuplicateSubscriberError(
                    f"rpc subscriber {sub.key!r} already exists"
                ) from None
        control = await _raw_control(connection, session)
        # no_ack: RPCs are at most once and the queue is exclusive (it dies with the
        # connection), so an ack would only cost a frame per call
        bound, consumed = await asyncio.gather(
            control.queue_bind(name, self.names.rpc_exchange, routing_key=sub.key),
            consume(session.consume, name, functools.partial(self._on_rpc, sub), no_ack=True),
            return_exceptions=True,
        )
        failure = next((r for r in (bound, consumed) if isinstance(r, BaseException)), None)
        if failure is not None:
            # deleting the queue takes its binding and consumer with it
            with contextlib.suppress(*connection.io_errors, RuntimeError):
                async with connection.claiming(session) as claim:
                    await claim.queue_delete(name)
            raise failure
        sub.channel = session.consume
        sub.tag = cast("str", consumed)

    async def remove(self, key: str) -> None:
        """Unbind, then delete the queue if empty: two round trips.

        Unbinding first makes a later send unroutable at once instead of lost. Deleting the
        queue also cancels its consumer: RabbitMQ sends the ``basic.cancel`` after every
        message the queue pushed to it (its deliveries and its exit are ordered), so aiormq
        keeps dispatching those to :meth:`_on_rpc` until then. A queue that still holds
        messages (RabbitMQ stops pushing to a channel with too many unsent) refuses the
        ``if_empty`` delete; then the consumer is cancelled and the rest is drained first.
        """
        connection = self.connection
        sub = self.subs.get(key)
        if sub is None or sub.tag is None:
            raise UnknownSubscriberError(f"no rpc subscriber {key!r} on this communicator")
        del self.subs[key]
        session = connection.session
        if session is None:
            return  # the exclusive queue died with the connection
        done = self._removing[key] = asyncio.Event()
        try:
            await self._delete(session, sub)
        finally:
            if self._removing.get(key) is done:
                del self._removing[key]
            done.set()

    async def _delete(self, session: Session, sub: RpcSub) -> None:
        connection = self.connection
        key = sub.key
        control = await _raw_control(connection, session)
        await control.queue_unbind(sub.queue_name, self.names.rpc_exchange, routing_key=key)
        try:
            async with connection.claiming(session) as claim:
                await claim.queue_delete(sub.queue_name, if_empty=True)
            return
        except connection.errors.ChannelPreconditionFailed:
            logger.debug(
                "amqp %r: rpc queue of %r not empty at removal; draining it",
                connection.settings.name,
                key,
            )
        assert sub.channel is not None
        assert sub.tag is not None
        await sub.channel.basic_cancel(sub.tag)
        # what was routed before the unbind still reaches the subscriber
        control = await _raw_control(connection, session)
        while True:
            message = await control.basic_get(sub.queue_name, no_ack=True)
            if not isinstance(message.delivery, connection.spec.Basic.GetOk):
                break
            await self._on_rpc(sub, message)
        await control.queue_delete(sub.queue_name)

    async def _on_rpc(self, sub: RpcSub, message: DeliveredMessage) -> None:
        try:
            properties = message.header.properties
            reply_to = properties.reply_to
            correlation_id = properties.correlation_id
            try:
                wire.check_content_type(properties.content_type)
                body = wire.decode_request(message.body, "rpc")
                if not reply_to or not correlation_id:
                    raise wire.Malformed("rpc without reply_to or correlation_id")
            except wire.Malformed as exc:
                await self.publisher.dead_letter_copy(message, sub.queue_name, str(exc))
                return
            try:
                self.caller._deliver(RpcItem(sub.subscriber, body, reply_to, correlation_id))
            except LoopGone:
                self.outbox.post_reply(
                    reply_to,
                    correlation_id,
                    wire.encode_fault("unroutable", self.caller._closed_text()),
                )
        except Exception:  # a bug: aiormq would drop it silently; say it, once
            _consumer_failed(self.connection, sub.queue_name)


async def _raw_control(connection: Connection, session: Session) -> RawChannel:
    """aiormq's channel under the control channel (reopened if a channel error closed it)."""
    return await raw(await connection.control(session))


# -- broadcasts --------------------------------------------------------------------------------


@final
class BroadcastConsumer:
    """The communicator's broadcast subscribers, behind one queue (owned by the I/O loop)."""

    def __init__(
        self, connection: Connection, publisher: Publisher, caller: Caller, uid: str
    ) -> None:
        self.connection = connection
        self.publisher = publisher
        self.caller = caller
        self.names = connection.names
        self.queue_name = self.names.broadcast_queue(uid)
        self.subscribers: dict[str, Callable[..., Any]] = {}
        self._lock = asyncio.Lock()

    async def add(self, key: str, subscriber: Callable[..., Any]) -> None:
        if key in self.subscribers:
            raise DuplicateSubscriberError(f"broadcast subscriber {key!r} already exists")
        self.subscribers[key] = subscriber
        try:
            session = await self.connection.ready()
            await self._start(session)
        except BaseException:
            if self.subscribers.get(key) is subscriber:
                del self.subscribers[key]
            raise

    async def restore(self, session: Session) -> None:
        """Re-create the queue and its consumer on a new connection, if anyone listens."""
        if self.subscribers:
            await self._start(session)

    async def _start(self, session: Session) -> None:
        async with self._lock:
            if session.broadcast_tag is not None:
                return
            control = await self.connection.control(session)
            queue = await control.declare_queue(
                self.queue_name,
                exclusive=True,
                arguments=self.connection.settings.transient_args(),
            )
            await queue.bind(self.names.broadcast_exchange)
            # acknowledged on arrival: no_ack is the same, minus a frame per broadcast
            session.broadcast_tag = await consume(
                session.consume, self.queue_name, self._on_broadcast, no_ack=True
            )

    async def remove(self, key: str) -> None:
        # the queue stays (bound and consumed) until close; with no subscriber, broadcasts
        # are dropped on arrival
        if self.subscribers.pop(key, None) is None:
            raise UnknownSubscriberError(f"no broadcast subscriber {key!r} on this communicator")

    async def _on_broadcast(self, message: DeliveredMessage) -> None:
        try:
            try:
                wire.check_content_type(message.header.properties.content_type)
                body, sender, subject, correlation_id = wire.decode_broadcast(message.body)
            except wire.Malformed as exc:
                await self.publisher.dead_letter_copy(message, self.queue_name, str(exc))
                return
            matching = tuple(
                s.subscriber if isinstance(s, BroadcastFilter) else s
                for s in self.subscribers.values()
                if not isinstance(s, BroadcastFilter) or s.matches(sender, subject)
            )
            if matching:
                with contextlib.suppress(LoopGone):
                    self.caller._deliver(
                        BroadcastItem(matching, body, sender, subject, correlation_id)
                    )
        except Exception:  # a bug: aiormq would drop it silently; say it, once
            _consumer_failed(self.connection, self.queue_name)


def _consumer_failed(connection: Connection, queue: str) -> None:
    logger.exception(
        "amqp %r: a message from %r could not be handled (a bug); dropped",
        connection.settings.name,
        queue,
    )
