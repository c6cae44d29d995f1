"""plumio's messaging layer: kiwipy's RPC, broadcast and task-queue semantics on anyio.

The in-process :class:`MemoryBroker` carries messages between threads; each
:class:`LoopCommunicator` is bound to the event loop (asyncio or trio) of the thread that opened
it and runs its subscribers there. :class:`BlockingCommunicator` serves threads with no loop.
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
