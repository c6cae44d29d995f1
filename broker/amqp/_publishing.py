"""Publishing on the I/O loop: message properties, confirms and their timeout, replies.

The hot paths publish on aiormq's channels directly (see :class:`~broker.amqp._connection.Session`).
Confirms are what makes a publish safe, and waiting for one costs a round trip, so only what
must survive is confirmed: tasks, task replies and broadcasts. RPC requests and replies are not
(the reply proves delivery; see :mod:`broker.amqp._rpc`), nor are dead-letter copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, final

from .._errors import DeliveryFailed
from ._connection import Connection, Session
from ._wire import CONTENT_TYPE

if TYPE_CHECKING:
    from aiormq import Channel as RawChannel
    from aiormq.abc import DeliveredMessage

__all__ = ["CONTENT_TYPE", "Publisher"]

logger = logging.getLogger("broker.amqp")


@final
class Publisher:
    """Publishes on the connection's channels (on the I/O loop)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.settings = connection.settings
        self.names = connection.names
        self._spec = connection.spec
        self._errors = connection.errors

    def properties(
        self,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        persistent: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Any:
        return self._spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=2 if persistent else 1,
            correlation_id=correlation_id,
            reply_to=reply_to,
            headers=headers,
            # aiormq maps basic.return to the publish by message id: keep it unique here
            message_id=correlation_id,
        )

    async def publish(
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
                async with asyncio.timeout(self.settings.publish_timeout):
                    await publish
            else:  # no timeout to arm: nothing waits past the write
                await publish
        except self._errors.PublishError:
            raise
        except self._errors.DeliveryError:
            raise DeliveryFailed(
                f"the broker refused the message (routing key {routing_key!r})"
            ) from None
        except self.connection.io_errors as exc:
            raise self.connection.unavailable(exc) from None

    async def publish_reply(
        self, reply_to: str, correlation_id: str, data: bytes, session: Session | None = None
    ) -> None:
        """Send an RPC reply: not confirmed (nobody here would act on the confirm; a lost
        reply shows at the sender, whose reply queue is gone or who stops waiting)."""
        if session is None:
            session = await self.connection.ready()
        await self.publish(
            session.fast,
            "",
            reply_to,
            data,
            self.properties(correlation_id=correlation_id),
            mandatory=False,
            confirm=False,
        )

    async def publish_task_reply(self, reply_to: str, correlation_id: str, data: bytes) -> None:
        """Send a task's reply, confirmed: the task is acked only once its reply is safe."""
        session = await self.connection.ready()
        await self.publish(
            session.publish,
            "",
            reply_to,
            data,
            self.properties(correlation_id=correlation_id),
            mandatory=False,
        )

    async def publish_broadcast(self, data: bytes) -> None:
        session = await self.connection.ready()
        await self.publish(
            session.publish,
            self.names.broadcast_exchange,
            "",
            data,
            self.properties(),
            mandatory=False,
        )

    # -- malformed messages ---------------------------------------------------------------

    def log_malformed(self, queue: str, reason: str) -> None:
        logger.warning(
            "amqp %r: rejected a malformed message from %r to %r: %s",
            self.settings.name,
            queue,
            self.names.dead_letter_queue,
            reason,
        )

    async def dead_letter_copy(self, message: DeliveredMessage, queue: str, reason: str) -> None:
        """Dead-letter a message consumed without acks: publish a copy to the dead-letter
        exchange (RabbitMQ's own dead-lettering needs a reject, so no ``x-death`` here)."""
        self.log_malformed(queue, reason)
        session = self.connection.session
        if session is None:
            return
        with contextlib.suppress(DeliveryFailed, self._errors.PublishError):
            await self.publish(
                session.fast,
                self.names.dead_letter_exchange,
                queue,
                message.body,
                message.header.properties,
                mandatory=False,
                confirm=False,
            )
