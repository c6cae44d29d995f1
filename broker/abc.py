"""The :class:`Communicator` interface every backend implements.

It keeps kiwipy's names and calling conventions so the API stays familiar, with one concurrency
model: anything that may wait is ``async``. Semantics are pinned down by one conformance suite
(``tests/broker/conformance.py``) that every backend must pass on asyncio and trio.

Subscribers are called positionally, as kiwipy's RabbitMQ backend does:

- RPC: ``subscriber(comm, msg)``
- task: ``subscriber(comm, task)``
- broadcast: ``subscriber(comm, body, sender, subject, correlation_id)``

They may be plain functions or ``async def``; a subscriber that returns an awaitable has it
awaited on its own loop, and the reply is what that awaitable produced (one level deep).
"""

from __future__ import annotations

import abc
import concurrent.futures
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

__all__ = ["Communicator", "RpcSubscriber", "TaskSubscriber", "BroadcastSubscriber"]

RpcSubscriber = Callable[["Communicator", Any], Any]
TaskSubscriber = Callable[["Communicator", Any], Any]
BroadcastSubscriber = Callable[["Communicator", Any, Any, Any, Any], Any]


class Communicator(abc.ABC):
    """Messaging endpoint: RPC, broadcast (with subject/sender filters) and task queues.

    Use it as an async context manager; after :meth:`aclose` every method raises
    :class:`~broker.CommunicatorClosedError`.

    Failures are contained where they happen. A payload the codec can't carry raises
    :class:`~broker.CodecError` at the send (backends that encode: strict memory, AMQP); a
    subscriber that raises anything (``SystemExit`` and ``KeyboardInterrupt`` included), or
    whose result can't be encoded, answers its RPC or task with a :class:`~broker.RemoteError`
    (acknowledging the task) and the communicator goes on serving; only cancelling the
    communicator itself (closing it) stops its subscribers.
    """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None

    @property
    @abc.abstractmethod
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` has been called (or the communicator was never opened)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Unsubscribe everything and forbid further use. Idempotent.

        Tasks this communicator's consumers held unacknowledged go back to their queue, marked
        redelivered, and another consumer completes them.
        """

    # -- RPC -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> str:
        """Receive RPCs sent to ``identifier`` (generated when ``None``); returns it as a string.

        Identifiers are compared as strings and taken literally (no wildcards).

        Raises:
            DuplicateSubscriberError: the identifier is taken.
        """

    @abc.abstractmethod
    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        """Stop receiving RPCs for ``identifier``.

        Raises:
            UnknownSubscriberError: no such subscriber on this communicator.
        """

    @abc.abstractmethod
    async def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        """Call the RPC subscriber registered as ``str(recipient_id)`` and return its reply.

        Raises:
            CodecError: ``msg`` can't be carried (a backend that encodes says what and where).
            UnroutableError: nobody subscribed ``recipient_id`` (raised at once).
            RemoteError: the subscriber raised, or its result can't be carried
                (``type_name`` names :class:`~broker.CodecError` then).
        """

    @abc.abstractmethod
    def rpc_send_future(self, recipient_id: Any, msg: Any) -> concurrent.futures.Future[Any]:
        """Like :meth:`rpc_send` but return at once with a thread-safe future of the reply.

        Callable from any thread; never blocks. For callers that keep many requests in
        flight; await it with :func:`broker.wait_future` or block on ``.result(timeout)`` from
        a plain thread.

        Raises:
            UnroutableError: nobody subscribed ``recipient_id`` (at once from the memory
                broker; through the future from a backend that must ask a remote broker).
        """

    # -- tasks -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_task_subscriber(
        self,
        subscriber: TaskSubscriber,
        identifier: Any = None,
        *,
        queue: str | None = None,
        prefetch: int = 0,
    ) -> str:
        """Consume tasks from ``queue`` (the default queue when ``None``).

        Args:
            subscriber: called as ``subscriber(comm, task)``; its result (awaited if awaitable)
                is the reply, and the task is acknowledged only once that result is complete.
                Raising :class:`~broker.TaskRejected` hands the task to another consumer.
            identifier: unique per communicator; generated when ``None``.
            queue: the task queue's name.
            prefetch: at most this many unacknowledged tasks at once (0 = unlimited).
        """

    @abc.abstractmethod
    async def remove_task_subscriber(self, identifier: Any) -> None:
        """Stop consuming; the subscriber's unacknowledged tasks are requeued."""

    @abc.abstractmethod
    async def task_send(
        self, task: Any, *, no_reply: bool = False, queue: str | None = None
    ) -> Any:
        """Queue ``task`` for exactly one consumer and return its reply (``None`` if no_reply).

        A task sent while nobody consumes waits in the queue.

        Raises:
            CodecError: ``task`` can't be carried (a backend that encodes says what and where).
            RemoteError: the consumer raised, or its result can't be carried (the task is
                acknowledged all the same: it is not run again).
            DeadLetteredError: the task exhausted its redeliveries.
        """

    @abc.abstractmethod
    def task_send_future(
        self, task: Any, *, queue: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """Like :meth:`task_send` but return at once with a thread-safe future of the reply."""

    # -- broadcast -------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> str:
        """Receive every broadcast (wrap in :class:`~broker.BroadcastFilter` to filter)."""

    @abc.abstractmethod
    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        """Stop receiving broadcasts for ``identifier``."""

    @abc.abstractmethod
    async def broadcast_send(
        self,
        body: Any,
        *,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
    ) -> None:
        """Send ``body`` to every broadcast subscriber of every communicator, this one included.

        Fire-and-forget: a subscriber that raises is logged and does not affect the others.

        Raises:
            CodecError: a part can't be carried (a backend that encodes says what and where).
        """
