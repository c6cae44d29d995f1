"""Communicator backends for the conformance suite.

Each ``comm_kind`` opens communicators that can talk to each other (same broker). Every test in
``test_conformance.py`` runs against each of them: the in-memory broker (plain and strict) and,
when aio-pika is installed (the ``amqp`` extra) and RabbitMQ answers on 127.0.0.1 (or
``$PLUMIO_AMQP_URL``), the AMQP adapter. Otherwise the AMQP cases skip, and the reason says which
of the two is missing (``broker.amqp_problem``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from broker import AmqpCommunicator, Communicator, LoopCommunicator, MemoryBroker, amqp_problem

CommFactory = Callable[[], Communicator]

AMQP_URL = os.environ.get("PLUMIO_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
_amqp_problem: list[str] = []  # filled once per session: "" (answers) or why not


def amqp_unavailable() -> str:
    """Why no AMQP broker can be used ("" if one can): aio-pika missing, no server answering, or
    both. Checked once per session."""
    if not _amqp_problem:
        _amqp_problem.append(_probe_amqp())
    return _amqp_problem[0]


def _probe_amqp() -> str:
    return amqp_problem(AMQP_URL)


def require_amqp() -> None:
    """Skip the calling test, saying what is missing, unless aio-pika and RabbitMQ are there."""
    problem = amqp_unavailable()
    if problem:
        pytest.skip(problem)


def amqp_namespace() -> str:
    """A fresh namespace, so tests never see each other's queues."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "memory-strict", pytest.param("amqp", marks=pytest.mark.amqp)])
def comm_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def open_comm(comm_kind: str) -> CommFactory:
    """A factory of unopened communicators sharing one broker; open each with ``async with``."""
    if comm_kind == "amqp":
        require_amqp()
        namespace = amqp_namespace()
        # queue_expires: the test's durable queues vanish a while after the test
        return lambda: AmqpCommunicator(
            AMQP_URL, namespace=namespace, queue_expires=60, publish_timeout=5
        )
    broker = MemoryBroker(strict=comm_kind == "memory-strict")
    return lambda: LoopCommunicator(broker)


def make_amqp(namespace: str, **kwargs: Any) -> AmqpCommunicator:
    """An ``AmqpCommunicator`` on the test broker, in ``namespace``, with the tests' defaults
    (queues expire after a minute; a publish gives up after 5 s)."""
    kwargs.setdefault("queue_expires", 60)
    kwargs.setdefault("publish_timeout", 5)
    return AmqpCommunicator(AMQP_URL, namespace=namespace, **kwargs)


@pytest.fixture
def namespace() -> str:
    """A fresh AMQP namespace; skips the test (see ``require_amqp``) when AMQP can't be used."""
    require_amqp()
    return amqp_namespace()
