"""plumio's messaging layer: kiwipy's RPC, broadcast and task-queue semantics on anyio.

This package is the core the backends build on, and it re-exports every public name: it owns
the :class:`Communicator` interface (``abc``), the errors, the codec, broadcast filters and
their routing index, where replies go (``_delivery``) and the loop machinery (``_wakeup``,
``_spawn``, and ``_endpoint``, the loop side every communicator shares). The backends are
subpackages above it, and the core never imports them: :mod:`broker.memory` (the in-process
:class:`MemoryBroker`, which carries messages between threads, and its
:class:`LoopCommunicator`, bound to the event loop that opened it), :mod:`broker.amqp`
(:class:`AmqpCommunicator`, on RabbitMQ) and :mod:`broker.blocking`
(:class:`BlockingCommunicator`, for threads with no loop, on top of the memory backend). The
layering is a contract checked by import-linter (``.importlinter``; run ``lint-imports``).
"""

from ._codec import Codec as Codec
from ._codec import JsonCodec as JsonCodec
from ._delivery import DEFAULT_QUEUE as DEFAULT_QUEUE
from ._errors import BrokerError as BrokerError
from ._errors import BrokerUnavailableError as BrokerUnavailableError
from ._errors import CodecError as CodecError
from ._errors import CommunicatorClosedError as CommunicatorClosedError
from ._errors import DeadLetteredError as DeadLetteredError
from ._errors import DeliveryFailed as DeliveryFailed
from ._errors import DuplicateSubscriberError as DuplicateSubscriberError
from ._errors import ErrorInfo as ErrorInfo
from ._errors import LoopThreadError as LoopThreadError
from ._errors import RemoteError as RemoteError
from ._errors import TaskRejected as TaskRejected
from ._errors import UnknownSubscriberError as UnknownSubscriberError
from ._errors import UnroutableError as UnroutableError
from ._filters import BroadcastFilter as BroadcastFilter
from ._wakeup import wait_future as wait_future
from .abc import Communicator as Communicator
from .amqp import AmqpCommunicator as AmqpCommunicator
from .amqp import amqp_problem as amqp_problem
from .blocking import BlockingCommunicator as BlockingCommunicator
from .memory import BrokerStatistics as BrokerStatistics
from .memory import ConsumerStatistics as ConsumerStatistics
from .memory import DeadLetter as DeadLetter
from .memory import LoopCommunicator as LoopCommunicator
from .memory import MemoryBroker as MemoryBroker
from .memory import QueueStatistics as QueueStatistics

__all__ = [
    "AmqpCommunicator",
    "amqp_problem",
    "BlockingCommunicator",
    "BroadcastFilter",
    "BrokerError",
    "BrokerStatistics",
    "BrokerUnavailableError",
    "Codec",
    "CodecError",
    "Communicator",
    "CommunicatorClosedError",
    "ConsumerStatistics",
    "DEFAULT_QUEUE",
    "DeadLetter",
    "DeadLetteredError",
    "DeliveryFailed",
    "DuplicateSubscriberError",
    "ErrorInfo",
    "JsonCodec",
    "LoopCommunicator",
    "LoopThreadError",
    "MemoryBroker",
    "QueueStatistics",
    "RemoteError",
    "TaskRejected",
    "UnknownSubscriberError",
    "UnroutableError",
    "wait_future",
]
