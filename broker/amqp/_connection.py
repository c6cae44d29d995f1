"""The I/O thread and the AMQP connection it owns: connecting, channels, reconnecting.

Every communicator has one :class:`IoThread`, a private thread running its own asyncio loop,
so a blocking step on the caller's loop never delays heartbeats and aio-pika (asyncio-only)
never sees trio. Other threads reach it only through ``call_soon_threadsafe``
(:meth:`IoThread.submit`, :meth:`IoThread.post`), never through a blocking call.

:class:`Connection` holds the live :class:`Session` (the connection and its channels) and
supervises it. Reconnection: when the connection drops, the I/O side is told (its
:meth:`Hooks.lost` fails the replies still awaited with :class:`BrokerUnavailableError`, since
the reply queue died with the connection, and cancels the handlers of tasks this communicator
held, which RabbitMQ requeues); sends wait up to ``publish_timeout`` for a new connection
(:meth:`Connection.ready`) and then raise :class:`BrokerUnavailableError`; the supervisor
reconnects with exponential back-off and the I/O side restores every subscription
(:meth:`Hooks.restore`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, cast, final

import attrs

from .._errors import BrokerUnavailableError, CommunicatorClosedError, DeliveryFailed
from ._settings import AmqpSettings

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection
    from aiormq import Channel as RawChannel
    from aiormq.abc import DeliveredMessage

__all__: list[str] = []

logger = logging.getLogger("broker.amqp")

_get_ident = threading.get_ident

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError)

#: a consumer callback of aiormq's
OnMessage = Callable[["DeliveredMessage"], Coroutine[Any, Any, None]]


# -- the thread --------------------------------------------------------------------------------


@final
class IoThread:
    """A private thread running an asyncio loop, and the tasks started on it.

    ``name`` is the communicator's, for the thread's name and for messages.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=f"plumio-amqp {name}", daemon=True)
        self._tasks: set[asyncio.Task[Any]] = set()  # submitted operations
        self.posted: set[asyncio.Task[Any]] = set()  # replies, acks, rejections
        #: done when the loop is closed (its selector and self-pipe with it) and the thread
        #: is about to return
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(self.loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()
                # a waiter that gave up cancelled it (see wait_future): nobody to tell
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    self.finished.set_result(None)

    def join(self) -> None:
        """Wait for the thread to exit; call it once :attr:`finished` is done (or never
        started), so it blocks only while the thread returns."""
        if self.thread.ident is not None:
            self.thread.join()

    def is_current(self) -> bool:
        return _get_ident() == self.thread.ident

    def stop(self) -> None:
        """Stop the loop (from any thread); its thread then closes it and exits."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)

    def closed(self) -> CommunicatorClosedError:
        return CommunicatorClosedError(f"communicator {self.name!r} is closed")

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
                    future.set_exception(self.closed())
                elif (exc := task.exception()) is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(task.result())

            task.add_done_callback(done)

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed
            raise self.closed() from None
        return future

    def post(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O loop, fire and forget (failures are logged)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._spawn, fn, args)

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]) -> None:
        self.spawn(fn(*args))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """On the I/O loop: run ``coro`` as a posted task (closing waits for those)."""
        task = self.loop.create_task(coro)
        self.posted.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self.posted.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("amqp %r: background operation failed: %s", self.name, exc)


# -- the connection ----------------------------------------------------------------------------


async def raw(channel: AbstractChannel) -> RawChannel:
    """aiormq's channel under an aio-pika one (the hot paths use it directly)."""
    return cast("RawChannel", await channel.get_underlay_channel())


async def consume(channel: RawChannel, queue: str, callback: OnMessage, *, no_ack: bool) -> str:
    """Start a consumer of ``queue`` on ``channel``; returns its consumer tag."""
    ok = await channel.basic_consume(queue, callback, no_ack=no_ack)
    assert ok.consumer_tag is not None
    return str(ok.consumer_tag)


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


@attrs.define(eq=False)
class Session:
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


class Hooks(Protocol):
    """What the connection needs of the I/O side it serves."""

    #: the consumer of the communicator's reply queue
    on_reply: OnMessage

    async def restore(self, session: Session) -> None:
        """Re-create every subscription on a new connection."""

    def lost(self) -> None:
        """The connection dropped: fail what depended on it."""


@final
class Connection:
    """The communicator's AMQP connection: the live :class:`Session`, and its supervisor.

    Runs on the I/O loop. ``errors`` is ``aiormq.exceptions``; the ``*_errors`` tuples are
    what the I/O side catches: ``io_errors`` any failure of the connection or a channel,
    ``handoff_errors`` those plus a refused or unconfirmed publish.
    """

    def __init__(self, settings: AmqpSettings, aio_pika: Any, uid: str, hooks: Hooks) -> None:
        import aiormq.exceptions
        from aiormq import spec

        self.aio_pika = aio_pika
        self.errors = aiormq.exceptions
        self.spec = spec
        self.settings = settings
        self.names = settings.names
        self.uid = uid
        self.reply_to = self.names.reply_queue(uid)
        self._hooks = hooks
        self.session: Session | None = None
        self.connected = asyncio.Event()
        self.closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._reconnecting = False  # the supervisor is inside _connect (not backing off)
        self.connection_errors: tuple[type[BaseException], ...] = (
            *_CONNECTION_ERRORS,
            self.errors.AMQPConnectionError,
            self.errors.ChannelInvalidStateError,
            asyncio.TimeoutError,
        )
        self.io_errors: tuple[type[BaseException], ...] = (
            *self.connection_errors,
            self.errors.AMQPError,
        )
        self.handoff_errors: tuple[type[BaseException], ...] = (DeliveryFailed, *self.io_errors)

    def unavailable(self, exc: BaseException | None = None) -> BrokerUnavailableError:
        """The error for a failure to reach the broker (``exc``'s text, password masked)."""
        detail = f": {type(exc).__name__}" if exc is not None else ""
        text = str(exc).replace(self.settings.url.password or "\0", "***") if exc else ""
        if text:
            detail += f": {text}"
        return BrokerUnavailableError(
            f"no connection to the broker at {self.settings.safe_url}{detail}"
        )

    async def open(self) -> None:
        """First connection: raise :class:`BrokerUnavailableError` if it fails."""
        try:
            self.session = await self._connect()
        except self.io_errors as exc:
            raise self.unavailable(exc) from None
        self.connected.set()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _connect(self) -> Session:
        kwargs = self.settings.connect_kwargs()
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
            settings = self.settings
            await control.declare_exchange(names.rpc_exchange, ExchangeType.DIRECT, durable=True)
            await control.declare_exchange(
                names.broadcast_exchange, ExchangeType.FANOUT, durable=True
            )
            await control.declare_exchange(
                names.dead_letter_exchange, ExchangeType.FANOUT, durable=True
            )
            dead = await control.declare_queue(
                names.dead_letter_queue, durable=True, arguments=settings.durable_args()
            )
            await dead.bind(names.dead_letter_exchange)
            reply = await control.declare_queue(
                self.reply_to, exclusive=True, arguments=settings.transient_args()
            )
            raw_consume = await raw(consume)
            # exclusive: the queue dies with the connection, so acks would buy nothing
            await raw_consume.basic_consume(reply.name, self._hooks.on_reply, no_ack=True)
            session = Session(
                connection,
                await raw(publish),
                await raw(fast),
                control,
                raw_consume,
                lost,
                (publish, fast, consume),
            )
            await self._hooks.restore(session)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return session

    async def _supervise(self) -> None:
        settings = self.settings
        while not self.closing:
            session = self.session
            assert session is not None
            await session.lost.wait()
            if self.closing:
                return
            self.session = None
            self.connected.clear()
            logger.warning(
                "amqp %r: connection to %s lost; reconnecting", settings.name, settings.safe_url
            )
            self._hooks.lost()
            delay = 0.05
            while not self.closing:
                self._reconnecting = True
                try:
                    new = await self._connect()
                except self.io_errors as exc:
                    self._reconnecting = False
                    logger.debug(
                        "amqp %r: reconnection failed (%s); retrying in %.2f s",
                        settings.name,
                        type(exc).__name__,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, settings.max_reconnect_delay)
                    continue
                self._reconnecting = False
                if self.closing:
                    with contextlib.suppress(Exception):
                        await new.connection.close()
                    return
                self.session = new
                self.connected.set()
                logger.info("amqp %r: reconnected to %s", settings.name, settings.safe_url)
                break

    async def wait_connected(self) -> None:
        await self.connected.wait()

    async def ready(self) -> Session:
        """The live session; waits up to ``publish_timeout`` for one."""
        session = self.session
        if session is not None and not session.lost.is_set():
            return session
        if self.closing:
            raise CommunicatorClosedError(f"communicator {self.settings.name!r} is closed")
        timeout = self.settings.publish_timeout
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except TimeoutError:
            raise BrokerUnavailableError(
                f"no connection to the broker at {self.settings.safe_url} (waited {timeout} s)"
            ) from None
        assert self.session is not None
        return self.session

    async def control(self, session: Session) -> AbstractChannel:
        """The control channel, reopened if a channel error closed it."""
        if session.control.is_closed:
            session.control = await session.connection.channel()
        return session.control

    @asynccontextmanager
    async def claiming(self, session: Session) -> AsyncIterator[RawChannel]:
        """The claim channel (see :class:`Session`), held for one operation."""
        async with session.claim_lock:
            if session.claim is None or session.claim.is_closed:
                session.claim = await session.connection.channel()
            yield await raw(session.claim)

    async def close(self) -> None:
        """Stop the supervisor, close the connection."""
        self.closing = True
        supervisor = self._supervisor
        if supervisor is not None and self._reconnecting:
            # Cancelling aio-pika in the middle of a connect leaks the socket it was opening:
            # let the attempt end (it closes what it made once it sees ``closing``).
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(
                    asyncio.shield(supervisor), self.settings.connect_timeout + 1
                )
        if supervisor is not None:
            supervisor.cancel()
        session, self.session = self.session, None
        self.connected.clear()
        if session is not None:
            with contextlib.suppress(Exception):
                await session.connection.close()
