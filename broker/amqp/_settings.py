"""What an AMQP communicator is configured with: its URL (TLS options folded in), its timeouts,
and the arguments its queues are declared with. Plain data, no I/O.

aio-pika is optional: nothing here imports it (or yarl, which comes with it) at import time;
:func:`import_aio_pika` names the extra to install when it is missing.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from . import _wire as wire

if TYPE_CHECKING:
    from yarl import URL

__all__ = ["DEFAULT_URL"]

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"

_SSL_OPTIONS: Final = frozenset(
    {"cafile", "capath", "cadata", "keyfile", "certfile", "no_verify_ssl"}
)


def import_aio_pika() -> Any:
    """The ``aio_pika`` module; raises an :class:`ImportError` naming the ``amqp`` extra."""
    try:
        import aio_pika
    except ImportError as exc:
        raise ImportError(
            "the AMQP adapter needs aio-pika; install it with: pip install 'plumio[amqp]'"
        ) from exc
    return aio_pika


def safe_url(url: URL) -> str:
    """``url`` with its password masked, for reprs, logs and error messages."""
    return str(url.with_password("***") if url.password else url)


def build_url(
    url: str,
    *,
    heartbeat: int,
    ssl_options: Mapping[str, Any] | None,
    ssl_context: ssl.SSLContext | None,
) -> URL:
    """Parse and check ``url``; the heartbeat and TLS options become URL parameters.

    Raises:
        ValueError: not an ``amqp://``/``amqps://`` URL, TLS options without ``amqps``, or an
            unknown TLS option.
    """
    from yarl import URL

    parsed = URL(url)
    if parsed.scheme not in ("amqp", "amqps") or not parsed.host:
        raise ValueError(f"not an amqp:// or amqps:// URL: {safe_url(parsed)!r}")
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


@final
@attrs.define(eq=False)
class AmqpSettings:
    """One communicator's settings, shared by its loop side and its I/O side.

    Not frozen for one reason: :attr:`AmqpCommunicator.max_redeliveries
    <broker.AmqpCommunicator.max_redeliveries>` is a settable attribute, and the I/O side reads
    the current value when it declares a task queue or counts a task's deliveries.

    Attributes:
        names: every broker object name of the namespace.
        url: the parsed URL, heartbeat and TLS files included (the password unmasked).
        name: the communicator's name (logs, and the connection name RabbitMQ shows).
        ssl_context: for ``amqps`` URLs, or ``None``.
        connect_timeout: seconds to wait for the first connection.
        publish_timeout: seconds a send waits for a connection and for a confirm.
        max_reconnect_delay: cap of the back-off between reconnection attempts.
        max_redeliveries: redeliveries after a consumer went away before dead-lettering.
        consumer_timeout: the task queues' ``x-consumer-timeout`` in seconds, or ``None``.
        queue_expires: the durable queues' ``x-expires`` in seconds, or ``None``.
    """

    names: wire.Names
    url: URL
    name: str
    ssl_context: ssl.SSLContext | None
    connect_timeout: float
    publish_timeout: float
    max_reconnect_delay: float
    max_redeliveries: int
    consumer_timeout: float | None
    queue_expires: float | None

    @property
    def safe_url(self) -> str:
        """The broker URL, password masked."""
        return safe_url(self.url)

    def connect_kwargs(self) -> dict[str, Any]:
        """What ``aio_pika.connect`` is called with (the URL carries heartbeat and TLS files)."""
        return {
            "url": self.url,
            "ssl_context": self.ssl_context,
            "timeout": self.connect_timeout,
            "client_properties": {"connection_name": self.name},
        }

    # -- queue arguments ------------------------------------------------------------------

    def durable_args(self) -> dict[str, Any]:
        """The dead-letter queue's arguments, and the base of the task queues'."""
        args: dict[str, Any] = {"x-queue-type": "quorum"}
        if self.queue_expires is not None:
            args["x-expires"] = max(1, math.ceil(self.queue_expires * 1000))
        return args

    def transient_args(self) -> dict[str, Any]:
        """The exclusive queues' (RPC, reply, broadcast): malformed messages dead-letter."""
        return {"x-dead-letter-exchange": self.names.dead_letter_exchange}

    def task_args(self) -> dict[str, Any]:
        args = self.durable_args()
        args["x-dead-letter-exchange"] = self.names.dead_letter_exchange
        args["x-delivery-limit"] = self.max_redeliveries + 1
        if self.consumer_timeout is not None:
            args["x-consumer-timeout"] = max(1, math.ceil(self.consumer_timeout * 1000))
        return args

    def parked_args(self) -> dict[str, Any]:
        args = self.durable_args()
        args["x-dead-letter-exchange"] = self.names.dead_letter_exchange
        return args
