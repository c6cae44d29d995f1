"""The I/O side of one communicator: its thread, its connection, and what runs on them.

:class:`IoSide` wires the parts together and owns their common lifetime (open, restore after a
reconnection, stop consuming, close); the communicator reaches each part through it, always on
the I/O loop (:meth:`IoSide.submit`, :meth:`IoSide.post`) except for the outbox, which any
thread may use. Every ``async`` method of the parts runs on that loop and owns their
registries, so no lock guards them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, final

from .._errors import BrokerUnavailableError
from .._wakeup import wait_future
from ._connection import Connection, IoThread, OnMessage, Session
from ._consuming import BroadcastConsumer, Caller, RpcConsumers
from ._publishing import Publisher
from ._rpc import Outbox, PendingReplies, Rpc
from ._settings import AmqpSettings, import_aio_pika
from ._tasks import TaskQueues

__all__: list[str] = []


@final
class IoSide:
    """A communicator's AMQP connection, on a private thread running an asyncio loop.

    Args:
        settings: the communicator's settings.
        uid: the communicator's unique id (its reply and broadcast queues are named after it).
        pending: the replies the communicator awaits.
        caller: the communicator's loop side, where deliveries go.
    """

    def __init__(
        self, settings: AmqpSettings, uid: str, pending: PendingReplies, caller: Caller
    ) -> None:
        aio_pika = import_aio_pika()
        self.settings = settings
        self.pending = pending
        self.connection = connection = Connection(settings, aio_pika, uid, self)
        self.thread = thread = IoThread(settings.name)
        self.publisher = publisher = Publisher(connection)
        self.rpc = Rpc(thread, connection, publisher, pending)
        self.on_reply: OnMessage = self.rpc.on_reply
        self.outbox = Outbox(thread, self.rpc)
        self.rpc_consumers = RpcConsumers(connection, publisher, self.outbox, caller)
        self.broadcasts = BroadcastConsumer(connection, publisher, caller, uid)
        self.tasks = TaskQueues(thread, connection, publisher, pending, caller)

    @property
    def session(self) -> Session | None:
        """The live session, if connected."""
        return self.connection.session

    # -- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop the loop (from any thread); its thread then closes it and exits."""
        self.thread.stop()

    async def stopped(self) -> None:
        """From the caller's loop: wait until the I/O thread has closed its loop and exited,
        so nothing of it (thread, selector, self-pipe) is left. Call :meth:`stop` first."""
        await wait_future(self.thread.finished)
        self.thread.join()  # it has set its last future: this only waits for it to return

    def is_current(self) -> bool:
        return self.thread.is_current()

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` on the I/O loop; returns a thread-safe future of its result.

        A lost connection fails the future with :class:`~broker.BrokerUnavailableError`
        (never with aio-pika's own errors, which callers can't be expected to know).
        """
        return self.thread.submit(self._mapped, fn, *args)

    async def _mapped(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        connection = self.connection
        try:
            return await fn(*args)
        except connection.connection_errors as exc:
            raise connection.unavailable(exc) from None

    def post(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O loop, fire and forget (failures are logged)."""
        self.thread.post(fn, *args)

    # -- lifetime (on the I/O loop) -------------------------------------------------------

    async def open(self) -> None:
        """First connection: raise :class:`BrokerUnavailableError` if it fails."""
        await self.connection.open()

    async def wait_connected(self) -> None:
        await self.connection.wait_connected()

    async def restore(self, session: Session) -> None:
        """Re-create every subscription on a new connection."""
        await self.rpc_consumers.restore(session)
        await self.broadcasts.restore(session)
        await self.tasks.restore(session)

    def lost(self) -> None:
        """The connection dropped: fail the replies awaited, stop the task handlers."""
        self.rpc.lost()  # the requests' channel is gone, and their replies with it
        self.pending.fail_all(
            BrokerUnavailableError(
                f"connection to {self.settings.safe_url} lost while waiting for the reply "
                "(the message may still be processed)"
            )
        )
        self.tasks.lost()

    async def stop_consuming(self) -> None:
        """Stop every consumer: task channels close (RabbitMQ requeues their tasks)."""
        connection = self.connection
        connection.closing = True
        session = connection.session
        await self.tasks.stop()
        if session is not None and not session.consume.is_closed:
            with contextlib.suppress(*connection.io_errors):
                await session.consume.close()

    async def close(self) -> None:
        """Flush outstanding replies and acks, close the connection."""
        self.connection.closing = True
        posted = self.thread.posted
        if posted:
            await asyncio.wait(set(posted), timeout=self.settings.publish_timeout)
        await self.connection.close()
