"""The broker's exception taxonomy.

Every error raised by :mod:`broker` derives from :class:`BrokerError`. The split follows trio's:
*closed* means you closed it, *unroutable* means nobody is there to take the message, *remote*
means the other side ran and failed. Remote failures cross the boundary as plain data
(:class:`ErrorInfo`) and become a :class:`RemoteError` exactly once, on the receiving side.
"""

from __future__ import annotations

import traceback
from typing import Any, final

import attrs

__all__ = [
    "BrokerError",
    "CommunicatorClosedError",
    "DeliveryFailed",
    "UnroutableError",
    "BrokerUnavailableError",
    "DuplicateSubscriberError",
    "UnknownSubscriberError",
    "TaskRejected",
    "DeadLetteredError",
    "RemoteError",
    "CodecError",
    "LoopThreadError",
    "ErrorInfo",
]


class BrokerError(Exception):
    """Base class of every error raised by the broker package."""


class CommunicatorClosedError(BrokerError):
    """Raised when a communicator is used before it was opened or after it was closed.

    This is the caller's fault: they closed it (or never opened it). It is also what a send
    raises when the *sender's* event loop has already finished.
    """


class DeliveryFailed(BrokerError):
    """Raised when a message could not be delivered. Base of the more specific failures."""


class UnroutableError(DeliveryFailed):
    """Raised when an RPC names a recipient that no communicator has subscribed.

    Raised at once by ``rpc_send``: nothing is queued for an unknown recipient. Also raised
    (into the reply) when the recipient closed before it handled the message.
    """


class BrokerUnavailableError(DeliveryFailed):
    """Raised when the broker can't be reached, so a message was not (or may not have been)
    delivered.

    Nobody's fault in particular: the network or the broker is down. Raised by the AMQP
    adapter (:class:`~broker.AmqpCommunicator`) for a send made while the connection is down
    and not back within ``publish_timeout``, for a publish the broker did not confirm in time,
    and into every reply still awaited when the connection dropped (the reply queue died with
    it; the RPC or task may still run). Retrying may duplicate a task.
    """


@final
class DeadLetteredError(DeliveryFailed):
    """Raised into a task's reply when the task was moved to the dead-letter list.

    That happens after the task was redelivered more than ``max_redeliveries`` times (its
    consumers kept dying while holding it). The task is kept in
    :meth:`MemoryBroker.dead_letters` for inspection; nothing is lost silently.
    """


@final
class DuplicateSubscriberError(BrokerError):
    """Raised when a subscriber is added under an identifier that is already taken."""


@final
class UnknownSubscriberError(BrokerError, KeyError, ValueError):
    """Raised when removing a subscriber under an identifier that is not registered.

    It is both a :class:`KeyError` and a :class:`ValueError`, so code written for kiwipy
    (which raised ``ValueError``) keeps working.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TaskRejected(BrokerError):
    """Raised *by a task subscriber* to decline a task.

    The broker then offers the task to another consumer of the same queue, never again to the
    one that rejected it; if every current consumer has rejected it, it waits in the queue
    until a new consumer subscribes.
    """


@final
class CodecError(BrokerError, TypeError):
    """Raised when a message cannot be encoded or decoded by the broker's codec.

    The message names the offending value and where it sits in the payload, for example
    ``can't encode msg['items'][2]: object of type Widget is not JSON-serializable``.
    """


@final
class LoopThreadError(BrokerError, RuntimeError):
    """Raised when a blocking call is made from a thread that runs an event loop.

    Blocking there would stall (asyncio) or be refused (trio); await the async API instead.
    """


@final
@attrs.frozen
class ErrorInfo:
    """A failure as plain data: what crosses the boundary when a subscriber raises.

    Attributes:
        type_name: the qualified name of the exception type (``module.QualName``).
        message: ``str(exc)``.
        traceback: the formatted traceback text, as seen where it was raised.
    """

    type_name: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture ``exc`` (type, message, formatted traceback). Never raises.

        ``str(exc)`` runs the exception's own code: should that fail, the message says so
        instead (a failure being reported must not become a second, unreported one).
        """
        exc_type = type(exc)
        module = exc_type.__module__
        name = exc_type.__qualname__
        if module != "builtins":
            name = f"{module}.{name}"
        try:
            message = str(exc)
        except BaseException as str_exc:  # user code; no checkpoint here, so no cancellation
            message = f"<str() of the exception raised {type(str_exc).__name__}>"
        try:
            text = "".join(traceback.format_exception(exc_type, exc, exc.__traceback__))
        except BaseException as tb_exc:  # same: a pathological exception object
            text = f"<the traceback could not be formatted: {type(tb_exc).__name__}>"
        return cls(type_name=name, message=message, traceback=text)

    def to_dict(self) -> dict[str, str]:
        """Plain-data form, for the wire."""
        return {"type": self.type_name, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        """Inverse of :meth:`to_dict`; raises :class:`CodecError` for a malformed dict."""
        try:
            return cls(str(data["type"]), str(data["message"]), str(data.get("traceback", "")))
        except (KeyError, TypeError) as exc:
            raise CodecError(f"malformed error info {data!r}: {exc}") from None


@final
class RemoteError(BrokerError):
    """Raised where a reply is awaited when the remote subscriber raised.

    Attributes:
        type_name: the qualified type name of the remote exception (``ValueError``,
            ``mypkg.MyError``).
        message: the remote exception's message.
        remote_traceback: the remote formatted traceback text.
    """

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(f"{info.type_name}: {info.message}")
        self.info = info

    @property
    def type_name(self) -> str:
        return self.info.type_name

    @property
    def message(self) -> str:
        return self.info.message

    @property
    def remote_traceback(self) -> str:
        return self.info.traceback
