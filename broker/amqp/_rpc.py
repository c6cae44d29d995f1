"""RPC by correlation id (after aio-pika's ``patterns/rpc.py``): requests out, replies back.

Every send that expects a reply registers a sink in :class:`PendingReplies` under a fresh
correlation id, and publishes with ``reply_to`` = the communicator's exclusive reply queue;
:meth:`Rpc.on_reply` resolves the sink when the reply arrives. RPC requests go through a
direct exchange (routing key = the identifier, literal) to the recipient's exclusive queue,
published *mandatory* and *unconfirmed*: the reply proves delivery, and an unknown recipient
comes back as a ``basic.return`` that fails the pending reply with
:class:`~broker.UnroutableError` (:meth:`Rpc._track_return`).

RPC requests and replies, from any thread, go through the :class:`Outbox`: like the caller's
inbox, it costs one wake-up of the I/O loop per burst, and one task publishes a burst in order.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, final

from .._delivery import ReplySink, resolve
from .._errors import CommunicatorClosedError, UnroutableError
from . import _wire as wire
from ._connection import Connection, IoThread, Session
from ._publishing import Publisher

if TYPE_CHECKING:
    from aiormq import Channel as RawChannel
    from aiormq.abc import DeliveredMessage

__all__: list[str] = []

logger = logging.getLogger("broker.amqp")

#: sweep the table of unanswered RPC requests when it reaches this size
_RETURNABLE_SWEEP: Final = 4096
#: an outbox entry: (is_request, routing key, data, correlation id)
_OutItem = tuple[bool, str, bytes, str]


@final
class PendingReplies:
    """The replies a communicator awaits, by correlation id; used from any thread.

    Correlation ids are unique across communicators by the communicator's ``uid``, and within
    one by a counter.
    """

    def __init__(self, uid: str) -> None:
        self._sinks: dict[str, ReplySink] = {}
        self._lock = threading.Lock()
        self._ids = map(f"{uid[:12]}-{{}}".format, itertools.count(1))

    def __contains__(self, correlation_id: str) -> bool:
        return correlation_id in self._sinks  # a dict read is atomic; writers hold the lock

    def new_id(self) -> str:
        return next(self._ids)  # atomic under the GIL, like itertools.count itself

    def add(self, sink: ReplySink) -> str:
        """Register ``sink`` under a new correlation id, which is returned."""
        correlation_id = next(self._ids)
        with self._lock:
            self._sinks[correlation_id] = sink
        return correlation_id

    def pop(self, correlation_id: str) -> ReplySink | None:
        with self._lock:
            return self._sinks.pop(correlation_id, None)

    def future(self) -> tuple[concurrent.futures.Future[Any], str]:
        """A future of a reply, pending until it is done (by any means), and its id."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        correlation_id = self.add(future)
        future.add_done_callback(lambda _: self.pop(correlation_id))
        return future, correlation_id

    def fail_all(self, exc: BaseException) -> None:
        """Fail every awaited reply with ``exc``."""
        with self._lock:
            sinks = list(self._sinks.values())
            self._sinks.clear()
        for sink in sinks:
            resolve(sink, False, exc)


@final
class Rpc:
    """The I/O side of RPC: publishing requests, telling returned ones apart, taking replies."""

    def __init__(
        self,
        thread: IoThread,
        connection: Connection,
        publisher: Publisher,
        pending: PendingReplies,
    ) -> None:
        self.thread = thread
        self.connection = connection
        self.publisher = publisher
        self.pending = pending
        self.names = connection.names
        self.reply_to = connection.reply_to
        # RPC requests published but not yet answered: correlation id -> (channel, key),
        # so that a basic.return can be told apart (see _track_return)
        self._returnable: dict[str, tuple[RawChannel, int]] = {}
        self._return_keys = itertools.count(1)
        self._sweep_at = _RETURNABLE_SWEEP

    def lost(self) -> None:
        """The connection dropped: the requests' channel is gone, and their replies with it."""
        self._returnable.clear()

    async def publish_rpc(
        self, key: str, data: bytes, correlation_id: str, session: Session | None = None
    ) -> None:
        """Publish an RPC request, mandatory.

        Not confirmed: the reply proves delivery, and awaiting a confirm per call costs
        about a tenth of a millisecond of a round trip. An unroutable request still comes
        back as a ``basic.return``, which :meth:`_track_return` turns into
        :class:`UnroutableError` for the sender. Should aiormq's bookkeeping not be what
        this expects, requests go through the confirming channel instead.
        """
        if session is None:
            session = await self.connection.ready()
        properties = self.publisher.properties(
            correlation_id=correlation_id, reply_to=self.reply_to
        )
        if self._track_return(session.fast, key, correlation_id):
            channel, confirm = session.fast, False
        else:  # another aiormq (tested by patching _track_return)
            channel, confirm = session.publish, True
        try:
            await self.publisher.publish(
                channel,
                self.names.rpc_exchange,
                key,
                data,
                properties,
                mandatory=True,
                confirm=confirm,
            )
        except self.connection.errors.PublishError:
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
        returned = self.thread.loop.create_future()
        by_message_id[correlation_id] = tag
        confirmations[tag] = returned
        self._returnable[correlation_id] = (channel, tag)

        def on_return(future: asyncio.Future[Any]) -> None:
            self._untrack_return(correlation_id)
            if not future.cancelled() and future.exception() is None:
                resolve(
                    self.pending.pop(correlation_id),
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
        pending = self.pending
        for correlation_id in [c for c in self._returnable if c not in pending]:
            self._untrack_return(correlation_id)

    async def on_reply(self, message: DeliveredMessage) -> None:
        """The consumer of the reply queue: resolve the pending reply it answers."""
        properties = message.header.properties
        correlation_id = properties.correlation_id
        try:
            wire.check_content_type(properties.content_type)
            ok, value = wire.decode_reply(message.body)
            if not correlation_id:
                raise wire.Malformed("reply without correlation_id")
        except wire.Malformed as exc:
            await self.publisher.dead_letter_copy(message, self.reply_to, str(exc))
            return
        self._untrack_return(correlation_id)
        sink = self.pending.pop(correlation_id)
        if sink is None:
            logger.debug(
                "amqp %r: reply for unknown correlation id %r dropped (already answered, "
                "or the sender stopped waiting)",
                self.connection.settings.name,
                correlation_id,
            )
        else:
            resolve(sink, ok, value)


@final
class Outbox:
    """RPC requests and replies on their way to the I/O loop, from any thread.

    They are published without confirms, so a publish only suspends under back-pressure (or
    while reconnecting): one task per burst publishes them in order, and a burst costs one
    wake-up of the I/O loop.
    """

    def __init__(self, thread: IoThread, rpc: Rpc) -> None:
        self.thread = thread
        self.rpc = rpc
        self.connection = rpc.connection
        self.publisher = rpc.publisher
        self._out: collections.deque[_OutItem] = collections.deque()
        self._out_lock = threading.Lock()
        self._out_scheduled = False

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
            self.thread.loop.call_soon_threadsafe(self._start_out)
        except RuntimeError:  # the loop is closed
            with self._out_lock:
                self._out.clear()
                self._out_scheduled = False
            raise self.thread.closed() from None

    def _start_out(self) -> None:
        self.thread.spawn(self._drain_out())

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
                    session = self.connection.session
                    if session is None or session.lost.is_set():
                        try:
                            session = await self.connection.ready()
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
            self._fail_out(batch, self.thread.closed())
            raise

    async def _publish_out(self, session: Session, item: _OutItem) -> None:
        is_request, routing_key, data, correlation_id = item
        try:
            if is_request:
                await self.rpc.publish_rpc(routing_key, data, correlation_id, session)
            else:
                await self.publisher.publish_reply(routing_key, correlation_id, data, session)
        except Exception as exc:
            self._fail_out((item,), exc)

    def _fail_out(self, items: Iterable[_OutItem], exc: BaseException) -> None:
        for is_request, _routing_key, _data, correlation_id in items:
            if is_request:
                resolve(self.rpc.pending.pop(correlation_id), False, exc)
            else:
                logger.error(
                    "amqp %r: can't send an rpc reply: %s", self.connection.settings.name, exc
                )
        if isinstance(items, collections.deque):
            items.clear()
