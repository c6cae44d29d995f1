"""The in-process backend: :class:`MemoryBroker` and its endpoint, :class:`LoopCommunicator`.

It owns the thread-safe, sans-IO broker (routing, task queues with AMQP's acknowledgement
model, dead letters, statistics; ``_broker.py``) and the communicator that attaches to it from
one event loop (``_communicator.py``), built on the loop machinery every backend shares
(:mod:`broker._endpoint`, :mod:`broker._wakeup`). It imports only :mod:`broker`'s core, never
the AMQP adapter or the blocking facade.
"""

from ._broker import BrokerStatistics as BrokerStatistics
from ._broker import ConsumerStatistics as ConsumerStatistics
from ._broker import DeadLetter as DeadLetter
from ._broker import MemoryBroker as MemoryBroker
from ._broker import QueueStatistics as QueueStatistics
from ._communicator import LoopCommunicator as LoopCommunicator

__all__ = [
    "MemoryBroker",
    "LoopCommunicator",
    "BrokerStatistics",
    "ConsumerStatistics",
    "DeadLetter",
    "QueueStatistics",
]
