"""Communicator backends for the conformance suite.

Each entry of ``BACKENDS`` opens communicators that can talk to each other (same broker). The
AMQP adapter adds its own entry when it exists; every test in ``test_conformance.py`` then runs
against it too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker import Communicator, LoopCommunicator, MemoryBroker

CommFactory = Callable[[], Communicator]


@pytest.fixture(params=["memory", "memory-strict"])
def comm_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def open_comm(comm_kind: str) -> CommFactory:
    """A factory of unopened communicators sharing one broker; open each with ``async with``."""
    broker = MemoryBroker(strict=comm_kind == "memory-strict")
    return lambda: LoopCommunicator(broker)
