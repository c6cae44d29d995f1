"""The blocking facade: :class:`BlockingCommunicator`, for threads that run no event loop.

It owns the facade and its guard against being called from a loop thread
(``_communicator.py``): a thread of its own runs an event loop with a
:class:`~broker.memory.LoopCommunicator` on it, and the facade's methods block the caller (or
return :class:`concurrent.futures.Future`). It sits on top of :mod:`broker.memory`; nothing
below it imports it.
"""

from ._communicator import BlockingCommunicator as BlockingCommunicator

__all__ = ["BlockingCommunicator"]
