"""The AMQP adapter: :class:`AmqpCommunicator`, the :class:`~broker.Communicator` interface on
RabbitMQ (aio-pika), and :func:`amqp_problem`, which says whether one can be used.

It owns the communicator's caller side (``_communicator.py``) and its I/O side, a private
thread with its own asyncio loop (``_io.py``), split by concern: the thread and the connection
(``_connection.py``), publishing (``_publishing.py``), RPC by correlation id (``_rpc.py``), RPC
and broadcast consumers (``_consuming.py``), task queues (``_tasks.py``), the settings
(``_settings.py``), the wire format and object names (``_wire.py``) and the probe
(``_probe.py``). It builds on :mod:`broker`'s core (the shared loop endpoint, errors, codec)
and never imports the in-memory backend. aio-pika is optional: it is imported when a
communicator is created, never when this package is.
"""

from .._errors import BrokerUnavailableError as BrokerUnavailableError
from ._communicator import AmqpCommunicator as AmqpCommunicator
from ._probe import amqp_problem as amqp_problem
from ._settings import DEFAULT_URL as DEFAULT_URL

__all__ = ["AmqpCommunicator", "BrokerUnavailableError", "DEFAULT_URL", "amqp_problem"]
